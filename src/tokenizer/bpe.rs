//! Byte-level BPE (`tokenizer.ggml.model = gpt2`: GPT-2, SmolLM, Qwen, Llama 3).
//!
//! 1. User-defined tokens are cut out of the text first (as llama.cpp does even when it does
//!    not parse special tokens); control tokens in the text stay plain text.
//! 2. The pre-tokenizer named by `tokenizer.ggml.pre` splits the rest into words with a list of
//!    regexes, each applied to the pieces the previous one left (matches and gaps both kept).
//! 3. Each word's UTF-8 bytes are mapped to printable characters (GPT-2's byte↔unicode map),
//!    then adjacent symbols are merged, lowest merge rank first, until no listed pair is left.

use super::{Tokenizer, TokenizerError};
use crate::gguf::Gguf;
use fancy_regex::Regex;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// GGUF `tokenizer.ggml.token_type` codes used here.
pub(crate) const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// GPT-2's map from a byte to the character that stands for it in the vocabulary: printable
/// Latin-1 bytes stand for themselves, the other 68 are moved to U+0100 onwards, in byte order.
pub fn byte_to_char() -> [char; 256] {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        map[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('\0')
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\0')
        };
    }
    map
}

// The word-splitting regexes of llama.cpp's pre-tokenizer types, in the order they are applied.
// GPT-2's original: contractions, letters, digits, other symbols, each with one optional leading
// space; runs of spaces leave their last space to the next word.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
// Llama 3: case-insensitive contractions, a letter run may take one leading non-letter, digits in
// groups of up to three, newlines kept together.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
// Qwen 2: Llama 3's, but every digit is a word of its own.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A pre-tokenizer: regexes applied one after the other, and whether a word that is already a
/// token skips the merges (Llama 3).
struct PreTokenizer {
    regexes: Vec<Regex>,
    ignore_merges: bool,
}

/// Regexes and flags for a `tokenizer.ggml.pre` name.
fn pre_tokenizer_spec(pre: &str) -> Option<(&'static [&'static str], bool)> {
    Some(match pre {
        // llama.cpp's fallback for an unnamed pre-tokenizer: punctuation runs, GPT-2, digit
        // runs, then digit runs cut into threes.
        "default" => (
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            false,
        ),
        // Falcon: as default, with backticks among the punctuation and no digit-run stage.
        "falcon" => (&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"], false),
        "gpt2" | "gpt-2" | "phi-2" | "mpt" | "olmo" | "jina-es" | "jina-de" => (&[GPT2], false),
        // StarCoder-style: every digit alone, then GPT-2's split.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            (&[r"\p{N}", GPT2], false)
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => (&[LLAMA3], true),
        "qwen2" | "qwen2.5" | "qwen-2.5" | "deepseek-r1-qwen" | "stablelm2" => (&[QWEN2], false),
        _ => return None,
    })
}

impl PreTokenizer {
    fn new(pre: &str) -> Result<PreTokenizer, TokenizerError> {
        let (exprs, ignore_merges) = pre_tokenizer_spec(pre).ok_or_else(|| {
            TokenizerError::Unsupported(format!("gpt2 with pre-tokenizer {pre:?}"))
        })?;
        let regexes = exprs
            .iter()
            .map(|e| {
                Regex::new(e)
                    .map_err(|err| TokenizerError::Invalid(format!("pre-tokenizer regex: {err}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(PreTokenizer {
            regexes,
            ignore_merges,
        })
    }

    /// Splits `text` into words: each regex splits every piece so far into its matches and the
    /// gaps between them.
    fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = vec![text];
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                let mut at = 0;
                for m in re.find_iter(piece) {
                    // A regex error here is backtracking running out of its limit; the rest of
                    // the piece then stays one word rather than being lost.
                    let Ok(m) = m else { break };
                    if m.start() > at {
                        next.push(&piece[at..m.start()]);
                    }
                    if m.end() > m.start() {
                        next.push(m.as_str());
                    }
                    at = m.end();
                }
                if at < piece.len() {
                    next.push(&piece[at..]);
                }
            }
            pieces = next;
        }
        pieces
    }
}

/// Cuts the user-defined tokens out of `text`: `Ok(id)` for such a token, `Err(text)` for the
/// plain text between them. Longer tokens are cut first.
pub(crate) fn split_user_defined<'t>(
    text: &'t str,
    user: &[(String, u32)],
) -> Vec<Result<u32, &'t str>> {
    let mut parts: Vec<Result<u32, &'t str>> = vec![Err(text)];
    for (tok, id) in user {
        let mut next = Vec::with_capacity(parts.len());
        for part in parts {
            match part {
                Err(s) if s.contains(tok.as_str()) => {
                    let mut rest = s;
                    while let Some(i) = rest.find(tok.as_str()) {
                        if i > 0 {
                            next.push(Err(&rest[..i]));
                        }
                        next.push(Ok(*id));
                        rest = &rest[i + tok.len()..];
                    }
                    if !rest.is_empty() {
                        next.push(Err(rest));
                    }
                }
                other => next.push(other),
            }
        }
        parts = next;
    }
    parts
}

/// User-defined tokens of the vocabulary (`token_type` 4), longest first.
pub(crate) fn user_defined(g: &Gguf, vocab: &[String]) -> Vec<(String, u32)> {
    let types = g.get_array("tokenizer.ggml.token_type").unwrap_or(&[]);
    let mut user: Vec<(String, u32)> = types
        .iter()
        .zip(vocab)
        .enumerate()
        .filter(|(_, (t, s))| t.as_i64() == Some(TOKEN_TYPE_USER_DEFINED) && !s.is_empty())
        .map(|(i, (_, s))| (s.clone(), i as u32))
        .collect();
    user.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
    user
}

/// `tokenizer.ggml.add_bos_token` / `add_eos_token` → prefix and suffix ids.
pub(crate) fn special_ends(
    g: &Gguf,
    vocab_len: usize,
    default_bos: bool,
) -> Result<(Vec<u32>, Vec<u32>), TokenizerError> {
    let bos = super::token_id(g, "tokenizer.ggml.bos_token_id", vocab_len)?;
    let eos = super::token_id(g, "tokenizer.ggml.eos_token_id", vocab_len)?;
    let add_bos = g
        .get_bool("tokenizer.ggml.add_bos_token")
        .unwrap_or(default_bos);
    let add_eos = g.get_bool("tokenizer.ggml.add_eos_token").unwrap_or(false);
    let pick = |add: bool, id: Option<u32>, what: &str| match (add, id) {
        (false, _) => Ok(vec![]),
        (true, Some(id)) => Ok(vec![id]),
        (true, None) => Err(TokenizerError::Invalid(format!(
            "add_{what}_token is set but {what}_token_id is missing"
        ))),
    };
    Ok((pick(add_bos, bos, "bos")?, pick(add_eos, eos, "eos")?))
}

pub struct BytePairEncoding {
    vocab_len: usize,
    ids: HashMap<String, u32>,
    /// (left id, right id) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Token id of each byte's stand-in character, if the vocabulary has it.
    byte_ids: [Option<u32>; 256],
    byte_chars: [char; 256],
    pre: PreTokenizer,
    user: Vec<(String, u32)>,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
}

impl BytePairEncoding {
    pub fn from_gguf(g: &Gguf) -> Result<BytePairEncoding, TokenizerError> {
        let vocab = super::vocab(g)?;
        let ids: HashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        let merge_list = g
            .get_array("tokenizer.ggml.merges")
            .ok_or(TokenizerError::Missing("tokenizer.ggml.merges"))?;
        let mut merges = HashMap::with_capacity(merge_list.len());
        for (rank, m) in merge_list.iter().enumerate() {
            let m = m.as_str().ok_or(TokenizerError::Invalid(
                "tokenizer.ggml.merges holds a non-string".into(),
            ))?;
            // The separator is the first space after the first character (a merge's left part
            // is never empty).
            let first_len = m.chars().next().map_or(0, char::len_utf8);
            let Some(sp) = m[first_len..].find(' ').map(|i| i + first_len) else {
                return Err(TokenizerError::Invalid(format!("merge {m:?} has no space")));
            };
            let (a, b) = (&m[..sp], &m[sp + 1..]);
            // A merge whose parts or result are not tokens can never fire on token symbols.
            if let (Some(&ia), Some(&ib), Some(&iab)) =
                (ids.get(a), ids.get(b), ids.get(&format!("{a}{b}")))
            {
                merges.entry((ia, ib)).or_insert((rank as u32, iab));
            }
        }
        let byte_chars = byte_to_char();
        let mut byte_ids = [None; 256];
        for (id, c) in byte_ids.iter_mut().zip(byte_chars) {
            *id = ids.get(c.encode_utf8(&mut [0; 4]) as &str).copied();
        }
        let pre = PreTokenizer::new(g.get_str("tokenizer.ggml.pre").unwrap_or("default"))?;
        let default_bos = matches!(
            g.get_str("tokenizer.ggml.pre"),
            Some("llama3" | "llama-v3" | "llama-bpe")
        );
        let (prefix, suffix) = special_ends(g, vocab.len(), default_bos)?;
        Ok(BytePairEncoding {
            vocab_len: vocab.len(),
            user: user_defined(g, &vocab),
            ids,
            merges,
            byte_ids,
            byte_chars,
            pre,
            prefix,
            suffix,
        })
    }

    /// BPE over one pre-tokenized word, appending its ids to `out`.
    fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        let mapped: String = word.bytes().map(|b| self.byte_chars[b as usize]).collect();
        if self.pre.ignore_merges {
            if let Some(&id) = self.ids.get(&mapped) {
                out.push(id);
                return;
            }
        }
        // One symbol per byte; a byte whose character is missing from the vocabulary is dropped
        // (as llama.cpp does), since no token can stand for it.
        let mut sym: Vec<u32> = word
            .bytes()
            .filter_map(|b| self.byte_ids[b as usize])
            .collect();
        const DEAD: u32 = u32::MAX;
        let n = sym.len();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        // Candidate merges: (rank, left position), smallest first; stale entries are skipped.
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, sym: &[u32], l: usize, r: usize| {
            if let Some(&(rank, _)) = self.merges.get(&(sym[l], sym[r])) {
                heap.push(Reverse((rank, l, sym[l], sym[r])));
            }
        };
        for i in 1..n {
            push(&mut heap, &sym, i - 1, i);
        }
        while let Some(Reverse((_, l, a, b))) = heap.pop() {
            let r = next[l];
            if sym[l] != a || r >= n || sym[r] != b {
                continue; // one side has merged since this candidate was pushed
            }
            sym[l] = self.merges[&(a, b)].1;
            sym[r] = DEAD;
            next[l] = next[r];
            if next[l] < n {
                prev[next[l]] = l;
            }
            if prev[l] < n {
                push(&mut heap, &sym, prev[l], l);
            }
            if next[l] < n {
                push(&mut heap, &sym, l, next[l]);
            }
        }
        out.extend(sym.into_iter().filter(|&s| s != DEAD));
    }
}

impl Tokenizer for BytePairEncoding {
    fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for part in split_user_defined(text, &self.user) {
            match part {
                Ok(id) => out.push(id),
                Err(plain) => {
                    for word in self.pre.split(plain) {
                        self.encode_word(word, &mut out);
                    }
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
        self.vocab_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection_onto_printables() {
        let m = byte_to_char();
        let mut seen = std::collections::HashSet::new();
        for (b, c) in m.iter().enumerate() {
            assert!(seen.insert(*c), "byte {b} shares a character");
            assert!(
                !c.is_whitespace() && !c.is_control(),
                "byte {b} maps to {c:?}"
            );
        }
        assert_eq!(m[b'A' as usize], 'A');
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[0], 'Ā');
    }

    fn words(pre: &str, text: &str) -> Vec<String> {
        PreTokenizer::new(pre)
            .unwrap()
            .split(text)
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn gpt2_split_keeps_one_space_with_the_next_word() {
        assert_eq!(
            words("gpt2", "Hello  world's 42!"),
            ["Hello", " ", " world", "'s", " 42", "!"]
        );
        assert_eq!(words("gpt2", "a \n b  "), ["a", " \n", " b", "  "]);
    }

    #[test]
    fn smollm_split_isolates_digits() {
        assert_eq!(words("smollm", "pi 3.14"), ["pi", " ", "3", ".", "1", "4"]);
    }

    #[test]
    fn llama3_split_groups_digits_by_three() {
        assert_eq!(
            words("llama3", "12345 I'M ok\n\n"),
            ["123", "45", " I", "'M", " ok", "\n\n"]
        );
        assert_eq!(words("qwen2", "x 123"), ["x", " ", "1", "2", "3"]);
    }

    #[test]
    fn user_defined_tokens_are_cut_longest_first() {
        let user = vec![("<ab>".to_string(), 7), ("<a".to_string(), 8)];
        let got = split_user_defined("x<ab>y<az", &user);
        assert_eq!(got, vec![Err("x"), Ok(7), Err("y"), Ok(8), Err("z")]);
    }

    #[test]
    fn default_split_runs_every_stage() {
        assert_eq!(
            words("default", "a,b 1234"),
            ["a", ",", "b", " ", "123", "4"]
        );
    }

    #[test]
    fn unknown_pre_tokenizer_is_an_error() {
        assert!(matches!(
            PreTokenizer::new("no-such"),
            Err(TokenizerError::Unsupported(_))
        ));
    }
}
