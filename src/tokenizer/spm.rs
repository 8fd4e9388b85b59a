//! SentencePiece BPE (`tokenizer.ggml.model = llama`: Llama 1/2, Mistral, TinyLlama, Gemma-3).
//!
//! Spaces become `▁` (with one prepended when `add_space_prefix`, default true), the text starts
//! as one symbol per character, and the adjacent pair whose concatenation is the highest-scored
//! token is merged first, until no pair is a token. A character that is not a token falls back
//! to its UTF-8 bytes as `<0xNN>` tokens (or to the unknown token without them).

use super::bpe::{special_ends, split_user_defined, user_defined};
use super::{Tokenizer, TokenizerError};
use crate::gguf::Gguf;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

pub struct SentencePieceBpe {
    vocab: Vec<String>,
    scores: Vec<f32>,
    ids: HashMap<String, u32>,
    byte_ids: [Option<u32>; 256],
    unk: Option<u32>,
    add_space_prefix: bool,
    user: Vec<(String, u32)>,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
}

/// A candidate merge: higher score first, then the leftmost.
#[derive(PartialEq)]
struct Candidate {
    score: f32,
    left: usize,
    /// Byte lengths of both sides when pushed, to spot stale candidates.
    len: (usize, usize),
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl SentencePieceBpe {
    pub fn from_gguf(g: &Gguf) -> Result<SentencePieceBpe, TokenizerError> {
        let vocab = super::vocab(g)?;
        let scores: Vec<f32> = match g.get_array("tokenizer.ggml.scores") {
            None => vec![0.0; vocab.len()],
            Some(a) if a.len() == vocab.len() => a
                .iter()
                .map(|v| v.as_f64().map(|s| s as f32))
                .collect::<Option<_>>()
                .ok_or(TokenizerError::Invalid(
                    "tokenizer.ggml.scores holds a non-number".into(),
                ))?,
            Some(a) => {
                return Err(TokenizerError::Invalid(format!(
                    "{} scores for {} tokens",
                    a.len(),
                    vocab.len()
                )));
            }
        };
        let ids: HashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        let mut byte_ids = [None; 256];
        for (b, id) in byte_ids.iter_mut().enumerate() {
            *id = ids.get(&format!("<0x{b:02X}>")).copied();
        }
        let unk = super::token_id(g, "tokenizer.ggml.unknown_token_id", vocab.len())?;
        let (prefix, suffix) = special_ends(g, vocab.len(), true)?;
        Ok(SentencePieceBpe {
            add_space_prefix: g
                .get_bool("tokenizer.ggml.add_space_prefix")
                .unwrap_or(true),
            user: user_defined(g, &vocab),
            vocab,
            scores,
            ids,
            byte_ids,
            unk,
            prefix,
            suffix,
        })
    }

    /// Merges over one run of plain text (spaces already escaped), appending ids to `out`.
    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) {
        // Symbols are byte ranges of `text`, linked left to right; a merged-away symbol has len 0.
        let mut start: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let n = start.len();
        let mut len: Vec<usize> = (0..n)
            .map(|i| start.get(i + 1).copied().unwrap_or(text.len()) - start[i])
            .collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut heap = BinaryHeap::new();
        let try_pair = |heap: &mut BinaryHeap<Candidate>,
                        start: &[usize],
                        len: &[usize],
                        l: usize,
                        r: usize| {
            let s = &text[start[l]..start[r] + len[r]];
            if let Some(&id) = self.ids.get(s) {
                heap.push(Candidate {
                    score: self.scores[id as usize],
                    left: l,
                    len: (len[l], len[r]),
                });
            }
        };
        for i in 1..n {
            try_pair(&mut heap, &start, &len, i - 1, i);
        }
        while let Some(c) = heap.pop() {
            let (l, r) = (c.left, next[c.left]);
            if r >= n || len[l] != c.len.0 || len[r] != c.len.1 || len[l] == 0 {
                continue; // stale: a side has changed since this candidate was pushed
            }
            len[l] += len[r];
            len[r] = 0;
            start[r] = start[l];
            next[l] = next[r];
            if next[l] < n {
                prev[next[l]] = l;
            }
            if prev[l] < n {
                try_pair(&mut heap, &start, &len, prev[l], l);
            }
            if next[l] < n {
                try_pair(&mut heap, &start, &len, l, next[l]);
            }
        }
        let mut i = 0;
        while i < n {
            let s = &text[start[i]..start[i] + len[i]];
            match self.ids.get(s) {
                Some(&id) => out.push(id),
                None => self.byte_fallback(s, out),
            }
            i = next[i];
        }
    }

    fn byte_fallback(&self, s: &str, out: &mut Vec<u32>) {
        if s.bytes().all(|b| self.byte_ids[b as usize].is_some()) {
            out.extend(s.bytes().filter_map(|b| self.byte_ids[b as usize]));
        } else if let Some(unk) = self.unk {
            out.push(unk);
        }
    }
}

impl Tokenizer for SentencePieceBpe {
    fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        // The dummy prefix goes before the start of the text and after every user-defined
        // token, as SentencePiece sees each such run of text as a fresh start.
        let mut after_token = true;
        for part in split_user_defined(text, &self.user) {
            match part {
                Ok(id) => {
                    out.push(id);
                    after_token = true;
                }
                Err("") => {}
                Err(plain) => {
                    let mut escaped = String::with_capacity(plain.len() + 3);
                    if self.add_space_prefix && after_token {
                        escaped.push('▁');
                    }
                    for c in plain.chars() {
                        escaped.push(if c == ' ' { '▁' } else { c });
                    }
                    self.encode_piece(&escaped, &mut out);
                    after_token = false;
                }
            }
        }
        out
    }

    fn prefix(&self) -> &[u32] {
        &self.prefix
    }

    fn suffix(&self) -> &[u32] {
        &self.suffix
    }

    fn vocab_size(&self) -> usize {
        self.vocab.len()
    }
}
