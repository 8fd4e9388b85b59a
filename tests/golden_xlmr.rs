//! Golden test: tiny-xlmr-bert (the `bert` graph with XLM-R's Unigram tokenizer, CLS pooling,
//! learned positions, one token-type row; random weights, real vocabulary) against llama.cpp's
//! token ids and raw pooled vectors (fixtures/new-archs-llamacpp.json). The tokenizer runs
//! here too: text in, vector out, as a user of the family sees it.

mod common;

use common::*;
use quiver::backend::cpu::Cpu;
use quiver::embed::Pooling;
use quiver::gguf::GgufFile;
use quiver::model::Model;
use std::sync::Arc;

#[test]
fn tiny_xlmr_bert_matches_llama_cpp() {
    let model = Model::load(
        GgufFile::open(&fixture("tiny-xlmr-bert.gguf")).unwrap(),
        Arc::new(Cpu::new()),
    )
    .unwrap();
    assert_eq!(model.info.pooling, Pooling::Cls);
    let j = read_json("new-archs-llamacpp.json");
    let results = j["models"]["tiny-xlmr-bert"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 21);

    let mut seqs = Vec::new();
    for r in results {
        let input = r["input"].as_str().unwrap();
        let ids = model.tokenize(input);
        assert_eq!(ids, u32s(&r["ids"]), "token ids of {input:?}");
        seqs.push(ids);
    }
    // One packed batch of all 21, as the scheduler would run them.
    let pooled = model.embed_tokens(&seqs).unwrap();
    let mut worst = f64::MAX;
    for (r, v) in results.iter().zip(&pooled) {
        let want = f32s(&r["embedding_raw"]);
        let cos = cosine(v, &want);
        worst = worst.min(cos);
        assert!(
            cos >= 0.999,
            "{:?}: cosine {cos} with llama.cpp",
            r["input"].as_str().unwrap()
        );
    }
    println!("tiny-xlmr-bert: worst cosine {worst:.7} over 21 inputs");
}
