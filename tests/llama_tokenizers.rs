//! The llama-family tokenizers on tiny vocabularies written by the test: byte-level BPE
//! (`gpt2`) merge order, byte mapping, user-defined and control tokens; SentencePiece BPE
//! (`llama`) score order, dummy prefix, byte fallback; BOS/EOS flags.

use quiver::gguf::writer::GgufWriter;
use quiver::gguf::{Gguf, Value, ValueType};
use quiver::tokenizer::{self, bpe::byte_to_char, Tokenizer, TokenizerError};

fn strings(v: &[String]) -> Value {
    Value::Array(
        ValueType::String,
        v.iter().map(|s| Value::String(s.clone())).collect(),
    )
}

fn build(meta: Vec<(&str, Value)>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w = w.meta("general.architecture", Value::String("llama".into()));
    for (k, v) in meta {
        w = w.meta(k, v);
    }
    w.to_bytes()
}

fn load(bytes: &[u8]) -> Result<Box<dyn Tokenizer>, TokenizerError> {
    tokenizer::from_gguf(&Gguf::parse(bytes).unwrap())
}

// ---- byte-level BPE ------------------------------------------------------------------------

/// All 256 byte characters, then the merged tokens and two special ones.
fn bpe_vocab() -> (Vec<String>, Vec<i32>) {
    let mut v: Vec<String> = byte_to_char().iter().map(|c| c.to_string()).collect();
    v.extend(["he", "ll", "hell", "hello", "Ġhello", "<tag>", "<|end|>"].map(String::from));
    let mut types = vec![1; v.len()];
    types[v.len() - 2] = 4; // <tag>: user-defined
    types[v.len() - 1] = 3; // <|end|>: control
    (v, types)
}

fn bpe_model(merges: &[&str], extra: Vec<(&str, Value)>) -> Box<dyn Tokenizer> {
    let (v, types) = bpe_vocab();
    let mut meta = vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(&v)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
        ),
        (
            "tokenizer.ggml.merges",
            Value::Array(
                ValueType::String,
                merges
                    .iter()
                    .map(|m| Value::String(m.to_string()))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(256 + 6)),
        ("tokenizer.ggml.eos_token_id", Value::U32(256 + 6)),
    ];
    meta.extend(extra);
    load(&build(meta)).unwrap()
}

fn id(s: &str) -> u32 {
    bpe_vocab().0.iter().position(|t| t == s).unwrap() as u32
}

fn byte(b: u8) -> u32 {
    b as u32 // the first 256 tokens are the byte characters, in byte order
}

const MERGES: &[&str] = &["h e", "l l", "he ll", "hell o", "Ġ hello"];

#[test]
fn bpe_merges_in_rank_order() {
    let t = bpe_model(MERGES, vec![]);
    assert_eq!(t.tokenize("hello"), [id("hello")]);
    assert_eq!(t.tokenize("ello"), [byte(b'e'), id("ll"), byte(b'o')]);
    // "Ġ hello" can only fire once "hello" exists; the space is mapped to Ġ.
    assert_eq!(t.tokenize("hello hello"), [id("hello"), id("Ġhello")]);
    // Without the "l l" merge, "he ll" can never apply.
    let t = bpe_model(&["h e", "he ll", "hell o"], vec![]);
    assert_eq!(
        t.tokenize("hello"),
        [id("he"), byte(b'l'), byte(b'l'), byte(b'o')]
    );
}

#[test]
fn bpe_maps_non_ascii_bytes() {
    let t = bpe_model(MERGES, vec![]);
    assert_eq!(t.tokenize("é\n"), [byte(0xC3), byte(0xA9), byte(b'\n')]);
}

#[test]
fn bpe_user_defined_tokens_split_but_control_tokens_are_text() {
    let t = bpe_model(MERGES, vec![]);
    assert_eq!(t.tokenize("he<tag>he"), [id("he"), id("<tag>"), id("he")]);
    let ids = t.tokenize("<|end|>");
    assert!(
        !ids.contains(&id("<|end|>")),
        "control token parsed from text: {ids:?}"
    );
    assert_eq!(ids.len(), "<|end|>".len());
}

#[test]
fn bpe_bos_eos_follow_the_flags() {
    let t = bpe_model(MERGES, vec![]);
    assert!(t.prefix().is_empty() && t.suffix().is_empty());
    let t = bpe_model(
        MERGES,
        vec![
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
        ],
    );
    assert_eq!(
        t.encode("hello"),
        [id("<|end|>"), id("hello"), id("<|end|>")]
    );
}

#[test]
fn bpe_bad_metadata_is_an_error() {
    let (v, _) = bpe_vocab();
    let base = |pre: &str, merges: Value| {
        vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String(pre.into())),
            ("tokenizer.ggml.tokens", strings(&v)),
            ("tokenizer.ggml.merges", merges),
        ]
    };
    let ok_merges = Value::Array(ValueType::String, vec![Value::String("h e".into())]);
    assert!(matches!(
        load(&build(base("klingon", ok_merges.clone()))),
        Err(TokenizerError::Unsupported(_))
    ));
    let bad = Value::Array(ValueType::String, vec![Value::String("nospace".into())]);
    assert!(matches!(
        load(&build(base("gpt2", bad))),
        Err(TokenizerError::Invalid(_))
    ));
    let mut no_merges = base("gpt2", ok_merges);
    no_merges.pop();
    assert!(matches!(
        load(&build(no_merges)),
        Err(TokenizerError::Missing(_))
    ));
}

// ---- SentencePiece BPE ---------------------------------------------------------------------

fn spm_model(extra: Vec<(&str, Value)>) -> (Box<dyn Tokenizer>, Vec<String>) {
    let mut v: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    v.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let pieces = [
        ("▁", -1.0),
        ("h", -1.0),
        ("e", -1.0),
        ("l", -1.0),
        ("o", -1.0),
        ("he", -2.0),
        ("ll", -3.0),
        ("llo", -4.0),
        ("hello", -5.0),
        ("▁hello", -6.0),
        ("el", -10.0),
    ];
    let mut scores = vec![0.0f32; v.len()];
    for (p, s) in pieces {
        v.push(p.into());
        scores.push(s);
    }
    let mut types = vec![1i32; v.len()];
    types[0] = 2;
    types[1] = 3;
    types[2] = 3;
    for t in &mut types[3..259] {
        *t = 6;
    }
    let mut meta = vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&v)),
        (
            "tokenizer.ggml.scores",
            Value::Array(ValueType::F32, scores.into_iter().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ];
    meta.extend(extra);
    (load(&build(meta)).unwrap(), v)
}

#[test]
fn spm_merges_highest_score_first_with_dummy_prefix() {
    let (t, v) = spm_model(vec![]);
    let id = |s: &str| v.iter().position(|t| t == s).unwrap() as u32;
    // ▁ h e l l o: "he" (-2) beats "el" (-10), then ll, llo, hello, ▁hello.
    assert_eq!(t.tokenize("hello"), [id("▁hello")]);
    // Spaces become ▁; "é" is not a piece, so it falls back to its UTF-8 bytes.
    assert_eq!(
        t.tokenize("hello é"),
        [id("▁hello"), id("▁"), id("<0xC3>"), id("<0xA9>")]
    );
    // BOS by default for SentencePiece, no EOS; empty text is no tokens.
    assert_eq!(t.encode("hello"), [1, id("▁hello")]);
    assert!(t.tokenize("").is_empty());
}

#[test]
fn spm_flags_turn_off_prefix_and_bos() {
    let (t, v) = spm_model(vec![
        ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
    ]);
    let id = |s: &str| v.iter().position(|t| t == s).unwrap() as u32;
    assert_eq!(t.encode("hello"), [id("hello"), 2]);
}
