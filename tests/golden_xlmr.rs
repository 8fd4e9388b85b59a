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
    let worst = matches_reference(&model, "tiny-xlmr-bert", 0.999);
    println!("tiny-xlmr-bert: worst cosine {worst:.7} over 21 inputs");
}
