//! WordPiece (BERT) tokenizer over a vocabulary stored in llama.cpp's GGUF convention:
//! word-initial pieces carry a leading `▁` (U+2581) and continuation pieces are stored bare
//! (HuggingFace's `##ing` is `ing`, its `why` is `▁why`). Special tokens (`[CLS]`, `[SEP]`,
//! ...) are stored as they are.
//!
//! Semantics follow HuggingFace's `BertTokenizerFast`: special-token text in the input is
//! matched first, on the raw text; everything between goes through BERT normalisation, is
//! cut into words at whitespace and punctuation, and each word is split greedily, longest
//! piece first. A word longer than [`MAX_WORD_CHARS`] or with an unmatched remainder
//! becomes a single `[UNK]`.

use super::normalize::{for_each_word, normalize};
use super::{Tokenizer, TokenizerError};
use crate::gguf::Gguf;
use std::collections::HashMap;

/// Words longer than this many characters are not split but replaced by `[UNK]`.
pub const MAX_WORD_CHARS: usize = 100;

/// The marker llama.cpp puts before word-initial pieces.
const WORD_START: &str = "\u{2581}";

/// GGUF token types (llama.cpp's `llama_token_type`) that HF matches verbatim in input text.
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;

pub struct WordPiece {
    /// Token text as stored in the GGUF (with `▁` on word-initial pieces) → id.
    ids: HashMap<String, u32>,
    /// Longest key of `ids` in bytes: bounds the greedy search.
    max_piece_len: usize,
    vocab_size: usize,
    unk: u32,
    lowercase: bool,
    /// Special tokens matched verbatim in input text, longest first.
    specials: Vec<(String, u32)>,
    /// `special_first_byte[b]`: some special token starts with byte `b`.
    special_first_byte: [bool; 256],
    prefix: Vec<u32>,
    suffix: Vec<u32>,
}

impl WordPiece {
    pub fn from_gguf(g: &Gguf) -> Result<WordPiece, TokenizerError> {
        let vocab = super::vocab(g)?;
        if vocab.is_empty() {
            return Err(TokenizerError::Invalid(
                "tokenizer.ggml.tokens is empty".into(),
            ));
        }
        if vocab.len() > u32::MAX as usize {
            return Err(TokenizerError::Invalid(
                "tokenizer.ggml.tokens has too many entries".into(),
            ));
        }
        let n = vocab.len();
        let cls = super::token_id(g, "tokenizer.ggml.cls_token_id", n)?.or(super::token_id(
            g,
            "tokenizer.ggml.bos_token_id",
            n,
        )?);
        let sep = super::token_id(g, "tokenizer.ggml.seperator_token_id", n)?.or(super::token_id(
            g,
            "tokenizer.ggml.eos_token_id",
            n,
        )?);
        let lowercase = match g.get("tokenizer.ggml.normalizer.lowercase") {
            None => true, // BERT vocabularies converted without the key are the uncased ones.
            Some(v) => v.as_bool().ok_or_else(|| {
                TokenizerError::Invalid(format!(
                    "tokenizer.ggml.normalizer.lowercase = {v} is not a bool"
                ))
            })?,
        };

        let mut ids = HashMap::with_capacity(n);
        for (id, tok) in vocab.iter().enumerate() {
            // On duplicates the lowest id wins, as a vocab file read top-down would give.
            ids.entry(tok.clone()).or_insert(id as u32);
        }
        let unk = match super::token_id(g, "tokenizer.ggml.unknown_token_id", n)? {
            Some(id) => id,
            None => *ids
                .get("[UNK]")
                .ok_or(TokenizerError::Missing("tokenizer.ggml.unknown_token_id"))?,
        };
        let max_piece_len = vocab.iter().map(String::len).max().unwrap_or(0);

        let special_ids = special_token_ids(g, n, [cls, sep, Some(unk)])?;
        let mut specials: Vec<(String, u32)> = special_ids
            .into_iter()
            .filter(|&id| !vocab[id as usize].is_empty())
            .map(|id| (vocab[id as usize].clone(), id))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut special_first_byte = [false; 256];
        for (s, _) in &specials {
            special_first_byte[s.as_bytes()[0] as usize] = true;
        }

        Ok(WordPiece {
            ids,
            max_piece_len,
            vocab_size: n,
            unk,
            lowercase,
            specials,
            special_first_byte,
            prefix: cls.into_iter().collect(),
            suffix: sep.into_iter().collect(),
        })
    }

    /// The special token that `text` starts with, longest first.
    fn special_at(&self, text: &str) -> Option<(usize, u32)> {
        self.specials
            .iter()
            .find(|(s, _)| text.starts_with(s.as_str()))
            .map(|(s, id)| (s.len(), *id))
    }

    /// Tokenizes a stretch of text that holds no special token.
    fn tokenize_plain(&self, text: &str, scratch: &mut Scratch, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        normalize(
            text,
            self.lowercase,
            &mut scratch.tmp,
            &mut scratch.normalized,
        );
        let normalized = std::mem::take(&mut scratch.normalized);
        for_each_word(&normalized, |w| self.word_pieces(w, &mut scratch.key, out));
        scratch.normalized = normalized;
    }

    /// Greedy longest-match-first split of one word; `[UNK]` if any part cannot be matched.
    fn word_pieces(&self, word: &str, key: &mut String, out: &mut Vec<u32>) {
        // Cheap byte test first: a word of at most 100 bytes has at most 100 chars.
        if word.len() > MAX_WORD_CHARS && word.chars().count() > MAX_WORD_CHARS {
            out.push(self.unk);
            return;
        }
        // Word-initial pieces are looked up as "▁" + piece; the key buffer holds "▁" + word
        // so each candidate is a slice of it, with no allocation per try.
        key.clear();
        key.push_str(WORD_START);
        key.push_str(word);
        let mark = WORD_START.len();

        let first = out.len();
        let mut start = 0;
        while start < word.len() {
            let rest = &word[start..];
            // Longest candidate end that could be in the vocab, on a char boundary.
            let budget = if start == 0 {
                self.max_piece_len.saturating_sub(mark)
            } else {
                self.max_piece_len
            };
            let mut end = rest.len().min(budget);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let mut found = None;
            while end > 0 {
                let piece = if start == 0 {
                    &key[..mark + end]
                } else {
                    &rest[..end]
                };
                if let Some(&id) = self.ids.get(piece) {
                    found = Some(id);
                    break;
                }
                end -= 1;
                while !rest.is_char_boundary(end) {
                    end -= 1;
                }
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start += end;
                }
                None => {
                    out.truncate(first);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }
}

/// Buffers reused across the stretches of one `tokenize` call.
#[derive(Default)]
struct Scratch {
    tmp: String,
    normalized: String,
    key: String,
}

/// Ids of the tokens HF treats as special (matched verbatim in input): those typed unknown
/// or control in `tokenizer.ggml.token_type`, or, where that array is absent, the known
/// special ids.
fn special_token_ids(
    g: &Gguf,
    n: usize,
    known: [Option<u32>; 3],
) -> Result<Vec<u32>, TokenizerError> {
    let Some(types) = g.get_array("tokenizer.ggml.token_type") else {
        let mut ids: Vec<u32> = known.into_iter().flatten().collect();
        for key in [
            "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.mask_token_id",
        ] {
            ids.extend(super::token_id(g, key, n)?);
        }
        return Ok(ids);
    };
    if types.len() != n {
        return Err(TokenizerError::Invalid(format!(
            "tokenizer.ggml.token_type has {} entries for {n} tokens",
            types.len()
        )));
    }
    let mut ids = Vec::new();
    for (id, t) in types.iter().enumerate() {
        let t = t.as_i64().ok_or_else(|| {
            TokenizerError::Invalid(format!(
                "tokenizer.ggml.token_type[{id}] = {t} is not an integer"
            ))
        })?;
        if t == TYPE_UNKNOWN || t == TYPE_CONTROL {
            ids.push(id as u32);
        }
    }
    Ok(ids)
}

impl Tokenizer for WordPiece {
    fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        let mut scratch = Scratch::default();
        let bytes = text.as_bytes();
        let mut plain_start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if self.special_first_byte[bytes[i] as usize] {
                // A special token's first byte is a UTF-8 lead byte, so `i` is a char boundary.
                if let Some((len, id)) = self.special_at(&text[i..]) {
                    self.tokenize_plain(&text[plain_start..i], &mut scratch, &mut out);
                    out.push(id);
                    i += len;
                    plain_start = i;
                    continue;
                }
            }
            i += 1;
        }
        self.tokenize_plain(&text[plain_start..], &mut scratch, &mut out);
        out
    }
    fn prefix(&self) -> &[u32] {
        &self.prefix
    }
    fn suffix(&self) -> &[u32] {
        &self.suffix
    }
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}
