//! The fast CPU kernels give the same vectors: "why is the sky blue?" through the F16 and Q8_0
//! fixtures against PyTorch's embedding (cosine after normalising).

use quiver::backend::cpu::Cpu;
use quiver::gguf::GgufFile;
use quiver::model::Model;
use std::path::Path;
use std::sync::Arc;

fn reference() -> (Vec<u32>, Vec<f32>) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/all-minilm-pytorch.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = &v["cases"][0];
    let ids = case["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let emb = case["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap() as f32)
        .collect();
    (ids, emb)
}

fn cosine_with_reference(model_file: &str) -> f64 {
    let (ids, want) = reference();
    assert_eq!(ids, [101, 2339, 2003, 1996, 3712, 2630, 1029, 102]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(model_file);
    let model = Model::load(GgufFile::open(&path).unwrap(), Arc::new(Cpu::new())).unwrap();
    let got = &model.embed_tokens(&[ids]).unwrap().remove(0);
    let norm = got.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    got.iter()
        .zip(&want)
        .map(|(&g, &w)| g as f64 / norm * w as f64)
        .sum()
}

#[test]
fn f16_embedding_matches_pytorch() {
    let cos = cosine_with_reference("all-minilm-f16.gguf");
    eprintln!("F16 cosine with PyTorch: {cos:.7}");
    assert!(cos >= 0.9999, "cosine {cos}");
}

#[test]
fn q8_0_embedding_matches_pytorch() {
    let cos = cosine_with_reference("all-minilm-q8_0.gguf");
    eprintln!("Q8_0 cosine with PyTorch: {cos:.7}");
    assert!(cos >= 0.999, "cosine {cos}");
}
