//! Golden test: SmolLM2-135M-Instruct (llama architecture, Q4_1 matrices, Q8_0 token embedding,
//! byte-level BPE with the `smollm` pre-tokenizer) against llama.cpp's token ids and its mean- and
//! last-pooled embeddings (fixtures/smollm2-llamacpp.json). The 98 MB model is not committed:
//! `scripts/fetch_smollm2.sh` puts it in target/models/; without it the test says so and passes.

use quiver::backend::cpu::Cpu;
use quiver::embed::{normalize, Pooling};
use quiver::gguf::GgufFile;
use quiver::model::Model;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/models/SmolLM2-135M-Instruct.Q4_1.gguf");
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/smollm2-llamacpp.json");

struct Golden {
    inputs: Vec<String>,
    token_ids: Vec<Vec<u32>>,
    mean: Vec<Vec<f32>>,
    last: Vec<Vec<f32>>,
}

fn golden() -> Golden {
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(GOLDEN).unwrap()).unwrap();
    let list = |k: &str| j[k].as_array().unwrap().clone();
    let floats = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    Golden {
        inputs: list("inputs").iter().map(|v| v.as_str().unwrap().to_string()).collect(),
        token_ids: list("token_ids")
            .iter()
            .map(|v| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
            .collect(),
        mean: list("mean").iter().map(floats).collect(),
        last: list("last").iter().map(floats).collect(),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    (dot / (n(a) * n(b))) as f32
}

fn load() -> Option<Model> {
    if !Path::new(MODEL).exists() {
        println!("skipped: {MODEL} not found (run scripts/fetch_smollm2.sh)");
        return None;
    }
    let file = GgufFile::open(Path::new(MODEL)).expect("open SmolLM2");
    Some(Model::load(file, Arc::new(Cpu)).expect("load SmolLM2"))
}

#[test]
fn smollm2_model_info() {
    let Some(model) = load() else { return };
    assert_eq!(model.info.family, "llama");
    assert_eq!(model.info.embedding_length, 576);
    assert_eq!(model.info.context_length, 8192);
    // No pooling_type key: a decoder is embedded with its last token, as Ollama does.
    assert_eq!(model.info.pooling, Pooling::Last);
}

#[test]
fn smollm2_token_ids_match_llama_cpp() {
    let Some(model) = load() else { return };
    let g = golden();
    for (text, want) in g.inputs.iter().zip(&g.token_ids) {
        assert_eq!(&model.tokenize(text), want, "token ids of {text:?}");
    }
}

#[test]
fn smollm2_embeddings_match_llama_cpp() {
    let Some(model) = load() else { return };
    let g = golden();
    for (pooling, want) in [(Pooling::Mean, &g.mean), (Pooling::Last, &g.last)] {
        // All 21 inputs in one packed batch: one forward pass.
        let t = Instant::now();
        let mut got = model.embed_tokens_with(&g.token_ids, pooling).unwrap();
        let took = t.elapsed();
        let mut min = (f32::INFINITY, 0);
        for (i, (v, w)) in got.iter_mut().zip(want).enumerate() {
            normalize(v);
            let c = cosine(v, w);
            if c < min.0 {
                min = (c, i);
            }
        }
        println!(
            "SmolLM2 {}: min cosine {:.6} (input {}), one forward of {} inputs / {} tokens in {:.2?}",
            pooling.name(),
            min.0,
            min.1,
            g.inputs.len(),
            g.token_ids.iter().map(Vec::len).sum::<usize>(),
            took
        );
        let all: Vec<String> = got.iter().zip(want).map(|(v, w)| format!("{:.5}", cosine(v, w))).collect();
        println!("  per input: {}", all.join(" "));
        for (i, (v, w)) in got.iter().zip(want).enumerate() {
            let c = cosine(v, w);
            assert!(c >= 0.999, "{} pooling, input {i} {:?}: cosine {c}", pooling.name(), g.inputs[i]);
        }
    }
}
