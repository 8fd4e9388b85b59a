//! SentencePiece Unigram (`tokenizer.ggml.model = t5`: XLM-R, so bge-m3, multilingual-e5,
//! paraphrase-multilingual, snowflake-arctic-embed2, granite-embedding:278m; and T5), with
//! llama.cpp's semantics so that ids match its `llm_tokenizer_ugm`:
//!
//! 1. Special-token text in the input (control, unknown and user-defined tokens, e.g. `<s>`,
//!    `</s>`, `<mask>`) is cut out first, longest token first, and becomes that token.
//! 2. Each remaining stretch is normalised: the longest prefix the precompiled charsmap knows is
//!    replaced (NFKC and clean-up), whitespace becomes `▁`, a `▁` goes before the first word
//!    (`add_space_prefix`) or, with `remove_extra_whitespaces`, before every word, with runs of
//!    spaces and leading and trailing spaces dropped.
//! 3. Viterbi over the normalised bytes: the segmentation into vocabulary tokens (normal, unused
//!    and user-defined ones; user-defined score 0) with the highest sum of scores. A character
//!    no token covers is the unknown token, scored `min(normal scores) - 10`; a run of unknowns
//!    is one `<unk>`.

use super::bpe::split_user_defined;
use super::charsmap::Charsmap;
use super::{Tokenizer, TokenizerError};
use crate::gguf::{Gguf, Value};

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_UNUSED: i64 = 5;

/// llama.cpp's penalty below the lowest normal score for a character no token covers.
const UNKNOWN_PENALTY: f32 = 10.0;

/// Architectures whose `<mask>` swallows the whitespace before it (llama.cpp sets LSTRIP on it
/// by architecture name, as HF's `AddedToken(lstrip=True)` does for these models).
const MASK_LSTRIP_ARCHS: &[&str] = &["nomic-bert-moe", "jina-bert-v3"];

const SPACE: &[u8] = "▁".as_bytes();

pub struct Unigram {
    trie: Trie,
    /// Score of each token in the lattice (user-defined tokens 0).
    scores: Vec<f32>,
    unk: u32,
    unk_score: f64,
    charsmap: Option<Charsmap>,
    add_space_prefix: bool,
    remove_extra_whitespaces: bool,
    /// Control, unknown and user-defined tokens, cut out of the input first; longest first.
    specials: Vec<(String, u32)>,
    /// A special token that takes the whitespace before it with it.
    lstrip: Option<u32>,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
}

/// The best segmentation found so far of the normalised text up to one byte offset.
#[derive(Clone, Copy)]
struct Best {
    id: u32,
    start: usize,
    score: f64,
}

impl Unigram {
    pub fn from_gguf(g: &Gguf) -> Result<Unigram, TokenizerError> {
        let vocab = super::vocab(g)?;
        let n = vocab.len();
        let scores = numbers(g, "tokenizer.ggml.scores", n)?;
        // Without token types llama.cpp takes every token as normal.
        let types = match g.get_array("tokenizer.ggml.token_type") {
            None => vec![TYPE_NORMAL; n],
            Some(a) if a.len() == n => a.iter().map(Value::as_i64).collect::<Option<_>>().ok_or(
                TokenizerError::Invalid("tokenizer.ggml.token_type holds a non-integer".into()),
            )?,
            Some(a) => {
                return Err(TokenizerError::Invalid(format!(
                    "{} token types for {n} tokens",
                    a.len()
                )))
            }
        };

        let mut min_score = f32::MAX;
        let mut lattice = Vec::new();
        let mut lattice_scores = scores.clone();
        let mut specials = Vec::new();
        for (id, (text, &t)) in vocab.iter().zip(&types).enumerate() {
            if t == TYPE_NORMAL {
                min_score = min_score.min(scores[id]);
            }
            if t == TYPE_USER_DEFINED {
                lattice_scores[id] = 0.0;
            }
            if matches!(t, TYPE_NORMAL | TYPE_USER_DEFINED | TYPE_UNUSED) && !text.is_empty() {
                lattice.push((text.as_bytes(), id as u32));
            }
            if matches!(t, TYPE_CONTROL | TYPE_UNKNOWN | TYPE_USER_DEFINED) && !text.is_empty() {
                specials.push((text.clone(), id as u32));
            }
        }
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));

        // llama.cpp's defaults for `t5` where a key is absent: no BOS, EOS 1, unknown 2.
        let id_or = |key, default: Option<u32>| {
            super::token_id(g, key, n).map(|id| id.or(default.filter(|&d| (d as usize) < n)))
        };
        let bos = id_or("tokenizer.ggml.bos_token_id", None)?;
        let eos = id_or("tokenizer.ggml.eos_token_id", Some(1))?;
        let unk = id_or("tokenizer.ggml.unknown_token_id", Some(2))?
            .ok_or(TokenizerError::Missing("tokenizer.ggml.unknown_token_id"))?;
        let end =
            |key, default, id: Option<u32>, what| match (g.get_bool(key).unwrap_or(default), id) {
                (false, _) => Ok(vec![]),
                (true, Some(id)) => Ok(vec![id]),
                (true, None) => Err(TokenizerError::Invalid(format!(
                    "{key} is set but the model has no {what} token"
                ))),
            };
        let prefix = end("tokenizer.ggml.add_bos_token", false, bos, "bos")?;
        let suffix = end("tokenizer.ggml.add_eos_token", true, eos, "eos")?;

        let charsmap = match g.get_array("tokenizer.ggml.precompiled_charsmap") {
            None => None,
            Some([]) => None,
            Some(a) => Some(Charsmap::parse(&bytes(a)?)?),
        };
        let lstrip = g
            .architecture()
            .filter(|a| MASK_LSTRIP_ARCHS.contains(a))
            .and_then(|_| vocab.iter().position(|t| t == "<mask>"))
            .map(|id| id as u32);

        Ok(Unigram {
            trie: Trie::build(lattice),
            scores: lattice_scores,
            unk,
            unk_score: (min_score - UNKNOWN_PENALTY) as f64,
            charsmap,
            add_space_prefix: g
                .get_bool("tokenizer.ggml.add_space_prefix")
                .unwrap_or(false),
            remove_extra_whitespaces: g
                .get_bool("tokenizer.ggml.remove_extra_whitespaces")
                .unwrap_or(false),
            specials,
            lstrip,
            prefix,
            suffix,
        })
    }

    /// The normalised form of one stretch of text without special tokens (step 2 above).
    fn normalize(&self, text: &str, out: &mut Vec<u8>) {
        out.clear();
        let input = text.as_bytes();
        let mut space_prepended = false;
        let mut in_word = false;
        let mut at = 0;
        while at < input.len() {
            let (replacement, consumed) = self.normalize_prefix(&input[at..]);
            for &c in replacement {
                if c != b' ' {
                    if !in_word {
                        in_word = true;
                        if (self.add_space_prefix && !space_prepended)
                            || self.remove_extra_whitespaces
                        {
                            out.extend_from_slice(SPACE);
                            space_prepended = true;
                        }
                    }
                    out.push(c);
                } else {
                    in_word = false;
                    if !self.remove_extra_whitespaces {
                        out.extend_from_slice(SPACE);
                    }
                }
            }
            at += consumed;
        }
    }

    /// The replacement of the longest prefix the charsmap knows, else the first character as
    /// it is (or U+FFFD for a byte that starts no valid character, which only a charsmap key
    /// ending inside a character can leave behind).
    fn normalize_prefix<'a>(&'a self, input: &'a [u8]) -> (&'a [u8], usize) {
        if let Some((len, replacement)) =
            self.charsmap.as_ref().and_then(|m| m.longest_match(input))
        {
            return (replacement, len);
        }
        let len = utf8_len(input[0]).min(input.len());
        match std::str::from_utf8(&input[..len]) {
            Ok(_) => (&input[..len], len),
            Err(_) => ("\u{fffd}".as_bytes(), 1),
        }
    }

    /// Viterbi segmentation of normalised bytes (step 3 above), appending ids to `out`.
    fn segment(&self, text: &[u8], out: &mut Vec<u32>) {
        let n = text.len();
        if n == 0 {
            return;
        }
        let unreached = Best {
            id: self.unk,
            start: 0,
            score: f64::MIN,
        };
        let mut best = vec![unreached; n + 1];
        best[0].score = 0.0;
        let mut at = 0;
        while at < n {
            let char_len = utf8_len(text[at]).min(n - at);
            let here = best[at].score;
            let mut char_covered = false;
            // Every token that starts here: one walk down the trie. Ties keep the earlier
            // candidate (shorter token, then an earlier start), as llama.cpp does.
            let mut node = Trie::ROOT;
            for (end, &c) in (at + 1..=n).zip(&text[at..]) {
                let Some(next) = self.trie.child(node, c) else {
                    break;
                };
                node = next;
                if let Some(id) = self.trie.value(node) {
                    char_covered |= end - at == char_len;
                    let score = here + self.scores[id as usize] as f64;
                    if score > best[end].score {
                        best[end] = Best {
                            id,
                            start: at,
                            score,
                        };
                    }
                }
            }
            if !char_covered {
                let score = here + self.unk_score;
                let end = at + char_len;
                if score > best[end].score {
                    best[end] = Best {
                        id: self.unk,
                        start: at,
                        score,
                    };
                }
            }
            at += char_len;
        }
        // Back from the end; consecutive unknowns collapse into one.
        let first = out.len();
        let mut pos = n;
        let mut prev_unknown = false;
        loop {
            let b = best[pos];
            let unknown = b.id == self.unk;
            if !(prev_unknown && unknown) {
                out.push(b.id);
            }
            if b.start == 0 {
                break;
            }
            prev_unknown = unknown;
            pos = b.start;
        }
        out[first..].reverse();
    }
}

impl Tokenizer for Unigram {
    fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut normalized = Vec::with_capacity(text.len() * 3 + 3);
        let mut parts = split_user_defined(text, &self.specials);
        if let Some(lstrip) = self.lstrip {
            strip_before(&mut parts, lstrip);
        }
        for part in parts {
            match part {
                Ok(id) => out.push(id),
                Err(plain) => {
                    self.normalize(plain, &mut normalized);
                    self.segment(&normalized, &mut out);
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
        self.scores.len()
    }
}

/// Drops the ASCII whitespace that ends the text before each `token` (a stretch left empty
/// goes). Cutting out the specials first and trimming afterwards gives what llama.cpp's
/// trimming during the cut gives: whitespace never holds a special token.
fn strip_before(parts: &mut Vec<Result<u32, &str>>, token: u32) {
    for i in 1..parts.len() {
        if parts[i] == Ok(token) {
            if let Err(s) = &mut parts[i - 1] {
                *s = s.trim_end_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
            }
        }
    }
    parts.retain(|p| *p != Err(""));
}

/// Bytes in the UTF-8 sequence that `lead` starts (1 for a stray continuation byte), by its
/// top four bits as llama.cpp reckons it.
fn utf8_len(lead: u8) -> usize {
    match lead >> 4 {
        0xc | 0xd => 2,
        0xe => 3,
        0xf => 4,
        _ => 1,
    }
}

/// A numeric array of one entry per token (zeros when absent).
fn numbers(g: &Gguf, key: &'static str, n: usize) -> Result<Vec<f32>, TokenizerError> {
    match g.get_array(key) {
        None => Ok(vec![0.0; n]),
        Some(a) if a.len() == n => a
            .iter()
            .map(|v| v.as_f64().map(|s| s as f32))
            .collect::<Option<_>>()
            .ok_or(TokenizerError::Invalid(format!("{key} holds a non-number"))),
        Some(a) => Err(TokenizerError::Invalid(format!(
            "{} entries in {key} for {n} tokens",
            a.len()
        ))),
    }
}

/// `precompiled_charsmap` as bytes (GGUF stores it as an array of u8 or i8).
fn bytes(a: &[Value]) -> Result<Vec<u8>, TokenizerError> {
    a.iter()
        .map(|v| match *v {
            Value::U8(b) => Some(b),
            Value::I8(b) => Some(b as u8),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or(TokenizerError::Invalid(
            "tokenizer.ggml.precompiled_charsmap is not an array of bytes".into(),
        ))
}

/// A byte trie over the vocabulary, laid out breadth first so that a node's children are
/// consecutive nodes: a node is its first child, its child count and its token, and the byte
/// leading into each node is in `labels`. About 9 bytes a node, no allocation per node.
struct Trie {
    first_child: Vec<u32>,
    n_children: Vec<u16>,
    token: Vec<u32>,
    labels: Vec<u8>,
}

impl Trie {
    const ROOT: u32 = 0;
    const NONE: u32 = u32::MAX;

    /// From (token bytes, id) pairs; where two tokens are the same string the later id wins,
    /// as in llama.cpp's trie.
    fn build(mut keys: Vec<(&[u8], u32)>) -> Trie {
        keys.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
        let mut t = Trie {
            first_child: vec![0],
            n_children: vec![0],
            token: vec![Self::NONE],
            labels: vec![0],
        };
        // Breadth first over (node, range of keys sharing its prefix, depth).
        let mut queue = std::collections::VecDeque::from([(0usize, 0usize, keys.len(), 0usize)]);
        while let Some((node, mut lo, hi, depth)) = queue.pop_front() {
            // Keys that end here sort first.
            while lo < hi && keys[lo].0.len() == depth {
                t.token[node] = keys[lo].1;
                lo += 1;
            }
            t.first_child[node] = t.token.len() as u32;
            while lo < hi {
                let c = keys[lo].0[depth];
                let mut end = lo + 1;
                while end < hi && keys[end].0[depth] == c {
                    end += 1;
                }
                let child = t.token.len();
                t.first_child.push(0);
                t.n_children.push(0);
                t.token.push(Self::NONE);
                t.labels.push(c);
                t.n_children[node] += 1;
                queue.push_back((child, lo, end, depth + 1));
                lo = end;
            }
        }
        t
    }

    fn child(&self, node: u32, c: u8) -> Option<u32> {
        let first = self.first_child[node as usize] as usize;
        let n = self.n_children[node as usize] as usize;
        let labels = &self.labels[first..first + n];
        let i = if n <= 8 {
            labels.iter().position(|&l| l == c)?
        } else {
            labels.binary_search(&c).ok()?
        };
        Some((first + i) as u32)
    }

    fn value(&self, node: u32) -> Option<u32> {
        let t = self.token[node as usize];
        (t != Self::NONE).then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::writer::GgufWriter;
    use crate::gguf::ValueType;

    fn strings(v: &[&str]) -> Value {
        Value::Array(
            ValueType::String,
            v.iter().map(|s| Value::String(s.to_string())).collect(),
        )
    }

    /// A small Unigram vocabulary without a charsmap; `extra` adds or replaces keys.
    fn tiny(tokens: &[(&str, f32, i32)], extra: &[(&str, Value)]) -> Unigram {
        let mut meta = vec![
            ("general.architecture", Value::String("bert".into())),
            ("tokenizer.ggml.model", Value::String("t5".into())),
            (
                "tokenizer.ggml.tokens",
                strings(&tokens.iter().map(|t| t.0).collect::<Vec<_>>()),
            ),
            (
                "tokenizer.ggml.scores",
                Value::Array(
                    ValueType::F32,
                    tokens.iter().map(|t| Value::F32(t.1)).collect(),
                ),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(
                    ValueType::I32,
                    tokens.iter().map(|t| Value::I32(t.2)).collect(),
                ),
            ),
            ("tokenizer.ggml.unknown_token_id", Value::U32(2)),
            ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
        ];
        meta.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        let mut w = GgufWriter::new();
        for (k, v) in meta.into_iter().chain(extra.iter().cloned()) {
            w = w.meta(k, v);
        }
        let bytes = w.to_bytes();
        Unigram::from_gguf(&Gguf::parse(&bytes).unwrap()).unwrap()
    }

    fn vocab() -> Vec<(&'static str, f32, i32)> {
        vec![
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("<unk>", 0.0, 2),
            ("▁", -2.0, 1),
            ("a", -3.0, 1),
            ("b", -3.0, 1),
            ("ab", -4.0, 1),
            ("▁ab", -5.0, 1),
            ("abc", -20.0, 1),
            ("c", -3.0, 1),
            ("<x>", -50.0, 4),
        ]
    }

    #[test]
    fn viterbi_takes_the_best_sum() {
        let t = tiny(&vocab(), &[]);
        // "ab" (-4) beats "a" + "b" (-6); "abc" (-20) loses to "ab" + "c" (-7).
        assert_eq!(t.tokenize("ab"), [6]);
        assert_eq!(t.tokenize("abc"), [6, 9]);
        // A space is `▁`; "▁ab" (-5) beats "▁" + "ab" (-6).
        assert_eq!(t.tokenize(" ab"), [7]);
    }

    #[test]
    fn unknown_characters_merge_into_one_unk() {
        let t = tiny(&vocab(), &[]);
        assert_eq!(t.tokenize("aéè中b"), [4, 2, 5]);
        assert_eq!(t.tokenize("é"), [2]);
    }

    #[test]
    fn space_prefix_and_extra_whitespace() {
        let plain = tiny(&vocab(), &[]);
        assert_eq!(plain.tokenize("a  b"), [4, 3, 3, 5]);
        let prefixed = tiny(
            &vocab(),
            &[("tokenizer.ggml.add_space_prefix", Value::Bool(true))],
        );
        assert_eq!(prefixed.tokenize("ab"), [7]);
        let merged = tiny(
            &vocab(),
            &[
                ("tokenizer.ggml.add_space_prefix", Value::Bool(true)),
                ("tokenizer.ggml.remove_extra_whitespaces", Value::Bool(true)),
            ],
        );
        assert_eq!(merged.tokenize("  ab   ab  "), [7, 7]);
        assert_eq!(merged.tokenize("   "), Vec::<u32>::new());
    }

    #[test]
    fn special_and_user_defined_text_becomes_the_token() {
        let t = tiny(&vocab(), &[]);
        // Control tokens in text, and a user-defined token with a score it would lose on.
        assert_eq!(t.tokenize("<s>ab</s>"), [0, 6, 1]);
        assert_eq!(t.tokenize("a<x>b<unk>"), [4, 10, 5, 2]);
        assert_eq!(t.tokenize(""), Vec::<u32>::new());
    }

    #[test]
    fn mask_lstrip_only_for_the_architectures_that_want_it() {
        let mut v = vocab();
        v.push(("<mask>", 0.0, 3));
        let bert = tiny(&v, &[]);
        assert_eq!(bert.tokenize("a <mask>"), [4, 3, 11]);
        let moe = tiny(
            &v,
            &[(
                "general.architecture",
                Value::String("nomic-bert-moe".into()),
            )],
        );
        assert_eq!(moe.tokenize("a \t<mask>"), [4, 11]);
        assert_eq!(moe.tokenize(" <mask> a"), [11, 3, 4]);
    }

    #[test]
    fn bos_and_eos_follow_the_flags() {
        let t = tiny(
            &vocab(),
            &[
                ("tokenizer.ggml.bos_token_id", Value::U32(0)),
                ("tokenizer.ggml.eos_token_id", Value::U32(1)),
                ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
                ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
            ],
        );
        assert_eq!(t.encode("ab"), [0, 6, 1]);
        assert_eq!(t.encode(""), [0, 1]);
    }

    #[test]
    fn trie_finds_every_key_and_nothing_else() {
        let keys: Vec<(&[u8], u32)> =
            vec![(b"ab", 0), (b"a", 1), (b"abc", 2), (b"b", 3), (b"ab", 4)];
        let t = Trie::build(keys);
        let find = |s: &[u8]| {
            let mut n = Trie::ROOT;
            for &c in s {
                n = t.child(n, c)?;
            }
            t.value(n)
        };
        assert_eq!(find(b"a"), Some(1));
        assert_eq!(find(b"ab"), Some(4)); // the later duplicate wins
        assert_eq!(find(b"abc"), Some(2));
        assert_eq!(find(b"b"), Some(3));
        assert_eq!(find(b"c"), None);
        assert_eq!(find(b"abcd"), None);
    }
}
