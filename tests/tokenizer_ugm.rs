//! The SentencePiece Unigram tokenizer (`t5`) on the real XLM-R vocabulary (250048 tokens and
//! its precompiled charsmap, in fixtures/tiny-xlmr-bert.gguf) against llama.cpp's ids:
//! the 21 reference inputs (fixtures/new-archs-llamacpp.json) and a battery of normalisation,
//! whitespace, script, unknown-character and special-token cases
//! (fixtures/ugm-battery-llamacpp.json, which says how it was made).

mod common;

use common::{fixture, read_json, u32s};
use quiver::gguf::GgufFile;
use quiver::tokenizer::{self, Tokenizer};
use std::sync::OnceLock;

fn xlmr() -> &'static dyn Tokenizer {
    static T: OnceLock<Box<dyn Tokenizer>> = OnceLock::new();
    T.get_or_init(|| {
        let file = GgufFile::open(&fixture("tiny-xlmr-bert.gguf")).expect("fixture");
        tokenizer::from_gguf(&file.header).expect("t5 tokenizer")
    })
    .as_ref()
}

/// Compares every case, reporting all mismatches at once.
fn check(cases: &[serde_json::Value], what: &str) {
    assert!(!cases.is_empty(), "{what}: no cases");
    let t = xlmr();
    let mut bad = Vec::new();
    for c in cases {
        let input = c["input"].as_str().expect("input");
        let want = u32s(&c["ids"]);
        let got = t.encode(input);
        if got != want {
            bad.push(format!("{input:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} of {} differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

#[test]
fn reference_inputs_match_llama_cpp() {
    let j = read_json("new-archs-llamacpp.json");
    check(
        j["tokenizers"]["xlmr"]["results"].as_array().unwrap(),
        "tokenizers.xlmr",
    );
    let model = j["models"]["tiny-xlmr-bert"]["results"].as_array().unwrap();
    assert_eq!(model.len(), 21);
    check(model, "tiny-xlmr-bert");
}

#[test]
fn vocabulary_and_special_ends() {
    let t = xlmr();
    assert_eq!(t.vocab_size(), 250048);
    assert_eq!(t.prefix(), [0]); // <s>
    assert_eq!(t.suffix(), [2]); // </s>
    assert_eq!(t.encode(""), [0, 2]);
}

#[test]
fn battery_matches_llama_cpp() {
    let j = read_json("ugm-battery-llamacpp.json");
    assert_eq!(j["model"]["file"], "tiny-xlmr-bert.gguf");
    check(j["cases"].as_array().unwrap(), "ugm battery");
}

/// Random mixtures of the pieces that stress each stage (special-token text and fragments of
/// it, whitespace, characters the charsmap rewrites or deletes, unknown characters): every id
/// is in the vocabulary, bos/eos are in place, and nothing panics.
#[test]
fn random_text_gives_valid_ids() {
    const PIECES: &[&str] = &[
        "a",
        "Z",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "<s>",
        "</s>",
        "<mask>",
        "<unk>",
        "<",
        "s>",
        "▁",
        "ﬁ",
        "①",
        "ｶﾞ",
        "\u{301}",
        "é",
        "中",
        "😀",
        "\u{200d}",
        "\u{fffd}",
        "\u{e000}",
        "𓀀",
        "\u{7}",
        "ß",
        "İ",
        "\u{3000}",
        "١",
        "[PAD250001]",
    ];
    let t = xlmr();
    let mut rng = common::Rng(7);
    for _ in 0..2000 {
        let n = ((rng.next() + 1.0) * 12.0) as usize;
        let text: String = (0..n)
            .map(|_| {
                PIECES[((rng.next() + 1.0) * 0.5 * PIECES.len() as f32) as usize % PIECES.len()]
            })
            .collect();
        let ids = t.encode(&text);
        assert!(ids.len() >= 2, "{text:?}");
        assert_eq!((ids[0], ids[ids.len() - 1]), (0, 2), "{text:?}");
        assert!(
            ids.iter().all(|&id| (id as usize) < t.vocab_size()),
            "{text:?}"
        );
    }
}
