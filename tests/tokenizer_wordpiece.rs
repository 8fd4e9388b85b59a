//! WordPiece against reference token ids (HuggingFace via sentence-transformers, and
//! llama.cpp), plus edge cases and malformed metadata.

use proptest::prelude::*;
use quiver::gguf::{Gguf, GgufFile};
use quiver::tokenizer::{self, Tokenizer, TokenizerError};
use std::path::Path;
use std::sync::OnceLock;

const CLS: u32 = 101;
const SEP: u32 = 102;
const UNK: u32 = 100;

fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn minilm() -> &'static dyn Tokenizer {
    static TOK: OnceLock<Box<dyn Tokenizer>> = OnceLock::new();
    TOK.get_or_init(|| {
        let file =
            GgufFile::open(Path::new(&fixture("all-minilm-f16.gguf"))).expect("open fixture");
        tokenizer::from_gguf(&file.header).expect("build tokenizer")
    })
    .as_ref()
}

fn read_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name)).expect("read reference json");
    serde_json::from_str(&text).expect("parse reference json")
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn check_all(cases: Vec<(String, Vec<u32>)>, source: &str) {
    assert!(cases.len() >= 20, "{source}: only {} cases", cases.len());
    let tok = minilm();
    let mut failures = Vec::new();
    for (input, want) in &cases {
        let got = tok.encode(input);
        if &got != want {
            failures.push(format!("{input:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{source}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn matches_pytorch_reference() {
    let j = read_json("all-minilm-pytorch.json");
    let cases = j["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            (
                c["input"].as_str().expect("input").to_string(),
                ids(&c["token_ids"]),
            )
        })
        .collect();
    check_all(cases, "pytorch");
}

#[test]
fn matches_llamacpp_reference() {
    let j = read_json("all-minilm-llamacpp.json");
    let inputs = j["inputs"].as_array().expect("inputs");
    let token_ids = j["token_ids"].as_array().expect("token_ids");
    assert_eq!(inputs.len(), token_ids.len());
    let cases = inputs
        .iter()
        .zip(token_ids)
        .map(|(i, t)| (i.as_str().expect("input").to_string(), ids(t)))
        .collect();
    check_all(cases, "llama.cpp");
}

#[test]
fn empty_and_blank_input_is_just_cls_sep() {
    let tok = minilm();
    assert_eq!(tok.encode(""), [CLS, SEP]);
    assert_eq!(tok.encode(" \t\n\r\u{3000}\u{a0} "), [CLS, SEP]);
    assert_eq!(tok.encode("\0\u{fffd}\u{200b}\u{7}"), [CLS, SEP]);
    assert_eq!(tok.prefix(), [CLS]);
    assert_eq!(tok.suffix(), [SEP]);
    assert_eq!(tok.vocab_size(), 30522);
}

#[test]
fn control_characters_are_dropped_not_split() {
    let tok = minilm();
    // NUL, BEL, zero-width joiner and U+FFFD vanish, gluing the word back together.
    assert_eq!(
        tok.encode("he\0l\u{7}l\u{200d}o\u{fffd}"),
        tok.encode("hello")
    );
    // Tab, newline, CR and unicode spaces separate words like a space.
    assert_eq!(tok.encode("hello\tworld"), tok.encode("hello world"));
    assert_eq!(tok.encode("hello\u{2003}world"), tok.encode("hello world"));
}

#[test]
fn overlong_word_is_one_unk() {
    let tok = minilm();
    let word = "a".repeat(1000);
    assert_eq!(tok.encode(&word), [CLS, UNK, SEP]);
    assert_eq!(
        tok.encode(&format!("hello {word} hello")),
        [CLS, 7592, UNK, 7592, SEP]
    );
    // 100 chars is still split into pieces; 101 is not.
    assert_ne!(tok.tokenize(&"a".repeat(100)), [UNK]);
    assert_eq!(tok.tokenize(&"a".repeat(101)), [UNK]);
}

#[test]
fn unmatchable_word_is_a_single_unk() {
    let tok = minilm();
    // "首" is absent from the vocab; as a CJK ideograph it is a word of its own.
    assert_eq!(tok.tokenize("首"), [UNK]);
    // An emoji glued to letters makes the whole word unknown, not just the emoji.
    assert_eq!(tok.tokenize("ab😀cd"), [UNK]);
}

#[test]
fn special_token_text_is_matched_case_sensitively() {
    let tok = minilm();
    assert_eq!(tok.tokenize("[CLS]x[SEP]"), [CLS, 1060, SEP]);
    assert_eq!(tok.tokenize("[MASK]"), [103]);
    assert_eq!(tok.tokenize("[UNK][PAD]"), [UNK, 0]);
    // Lowercase is ordinary text: brackets are punctuation.
    let lower = tok.tokenize("[cls]");
    assert_eq!(lower.first(), Some(&1031));
    assert_eq!(lower.last(), Some(&1033));
    // A truncated special token is ordinary text.
    assert_eq!(tok.tokenize("[CLS").first(), Some(&1031));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn never_panics_and_ids_are_in_range(s in "\\PC*|[\\x00-\\x{2fff}\\[\\]A-Z]{0,64}") {
        let tok = minilm();
        let ids = tok.encode(&s);
        prop_assert_eq!(ids.first(), Some(&CLS));
        prop_assert_eq!(ids.last(), Some(&SEP));
        prop_assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
    }

    #[test]
    fn any_char_sequence_does_not_panic(chars in proptest::collection::vec(any::<char>(), 0..80)) {
        let s: String = chars.into_iter().collect();
        let ids = minilm().encode(&s);
        prop_assert!(ids.len() >= 2);
    }
}

// ---- malformed metadata ----

/// A minimal GGUF v3 header with the given metadata and no tensors.
struct GgufBuilder {
    kv: Vec<u8>,
    n: u64,
}

impl GgufBuilder {
    fn new() -> Self {
        GgufBuilder {
            kv: Vec::new(),
            n: 0,
        }
    }
    fn key(&mut self, k: &str, ty: u32) {
        self.kv.extend((k.len() as u64).to_le_bytes());
        self.kv.extend(k.as_bytes());
        self.kv.extend(ty.to_le_bytes());
        self.n += 1;
    }
    fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k, 8);
        self.kv.extend((v.len() as u64).to_le_bytes());
        self.kv.extend(v.as_bytes());
        self
    }
    fn u32(mut self, k: &str, v: u32) -> Self {
        self.key(k, 4);
        self.kv.extend(v.to_le_bytes());
        self
    }
    fn str_array(mut self, k: &str, vs: &[&str]) -> Self {
        self.key(k, 9);
        self.kv.extend(8u32.to_le_bytes());
        self.kv.extend((vs.len() as u64).to_le_bytes());
        for v in vs {
            self.kv.extend((v.len() as u64).to_le_bytes());
            self.kv.extend(v.as_bytes());
        }
        self
    }
    fn u32_array(mut self, k: &str, vs: &[u32]) -> Self {
        self.key(k, 9);
        self.kv.extend(4u32.to_le_bytes());
        self.kv.extend((vs.len() as u64).to_le_bytes());
        for v in vs {
            self.kv.extend(v.to_le_bytes());
        }
        self
    }
    fn parse(self) -> Gguf {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(self.n.to_le_bytes());
        b.extend(self.kv);
        b.resize(b.len().next_multiple_of(32), 0);
        Gguf::parse(&b).expect("test gguf parses")
    }
}

fn bert() -> GgufBuilder {
    GgufBuilder::new().str("tokenizer.ggml.model", "bert")
}

fn build_err(g: &Gguf) -> TokenizerError {
    match tokenizer::from_gguf(g) {
        Ok(_) => panic!("tokenizer built from bad metadata"),
        Err(e) => e,
    }
}

#[test]
fn missing_tokens_is_an_error() {
    assert_eq!(
        build_err(&bert().parse()),
        TokenizerError::Missing("tokenizer.ggml.tokens")
    );
}

#[test]
fn non_string_tokens_is_an_error() {
    let g = bert()
        .u32_array("tokenizer.ggml.tokens", &[1, 2, 3])
        .parse();
    assert!(matches!(build_err(&g), TokenizerError::Invalid(_)));
}

#[test]
fn out_of_range_special_id_is_an_error() {
    let g = bert()
        .str_array("tokenizer.ggml.tokens", &["[UNK]", "▁a"])
        .u32("tokenizer.ggml.bos_token_id", 7)
        .parse();
    assert!(matches!(build_err(&g), TokenizerError::Invalid(_)));
}

#[test]
fn no_unknown_token_is_an_error() {
    let g = bert()
        .str_array("tokenizer.ggml.tokens", &["▁a", "b"])
        .parse();
    assert_eq!(
        build_err(&g),
        TokenizerError::Missing("tokenizer.ggml.unknown_token_id")
    );
}

#[test]
fn mismatched_token_type_length_is_an_error() {
    let g = bert()
        .str_array("tokenizer.ggml.tokens", &["[UNK]", "▁a"])
        .u32_array("tokenizer.ggml.token_type", &[2])
        .parse();
    assert!(matches!(build_err(&g), TokenizerError::Invalid(_)));
}

#[test]
fn tiny_vocab_without_optional_keys() {
    // No cls/sep ids, no token types, no lowercase key (defaults to lowercasing).
    let g = bert()
        .str_array(
            "tokenizer.ggml.tokens",
            &["[UNK]", "▁un", "▁aff", "able", "aff", "▁,"],
        )
        .parse();
    let tok = tokenizer::from_gguf(&g).expect("tiny vocab builds");
    assert_eq!(tok.encode("UnAffable, affx"), [1, 4, 3, 5, 0]);
    assert!(tok.prefix().is_empty() && tok.suffix().is_empty());
    // "[UNK]" is found by its text and is special.
    assert_eq!(tok.tokenize("un[UNK]"), [1, 0]);
}
