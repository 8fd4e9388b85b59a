//! Golden tests: all-minilm through Quiver's BERT forward pass against vectors that PyTorch
//! (the original model) and llama.cpp (the same GGUF files) computed. Token ids come from the
//! reference files here, so these tests check the forward pass alone; the tokenizer has its own.

mod common;

use common::*;
use quiver::arch::Batch;
use quiver::backend::cpu::Cpu;
use quiver::backend::Backend;
use quiver::embed::{pool, Pooling};
use quiver::gguf::GgufFile;
use quiver::model::Model;
use std::path::Path;
use std::sync::Arc;

struct Case {
    input: String,
    ids: Vec<u32>,
    pytorch: Vec<f32>,
    pytorch_norm: f64,
}

fn cases() -> Vec<Case> {
    let pt = read_json("all-minilm-pytorch.json");
    pt["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            input: c["input"].as_str().unwrap().to_string(),
            ids: u32s(&c["token_ids"]),
            pytorch: f32s(&c["embedding"]),
            pytorch_norm: c["pooled_norm"].as_f64().unwrap(),
        })
        .collect()
}

/// llama.cpp's normalised vectors for `model` ("all-minilm-f16", …), in input order.
fn llamacpp(model: &str) -> Vec<Vec<f32>> {
    let lc = read_json("all-minilm-llamacpp.json");
    lc["models"][model]["normalized"]
        .as_array()
        .unwrap()
        .iter()
        .map(f32s)
        .collect()
}

/// Embeds every case in one packed batch and checks it against both references.
fn check_model(
    path: &Path,
    key: &str,
    min_cos_llamacpp: f64,
    min_cos_pytorch: f64,
    check_norm: bool,
) {
    let model = Model::load(GgufFile::open(path).unwrap(), Arc::new(Cpu::new())).unwrap();
    let cases = cases();
    let lc = llamacpp(key);
    let seqs: Vec<&[u32]> = cases.iter().map(|c| c.ids.as_slice()).collect();
    let pooled = model.embed_tokens(&seqs).unwrap();
    assert_eq!(pooled.len(), cases.len());
    let mut worst = (f64::MAX, f64::MAX);
    let mut worst_norm: f64 = 0.0;
    for (i, (c, v)) in cases.iter().zip(&pooled).enumerate() {
        assert_eq!(v.len(), 384);
        let (cp, cl) = (cosine(v, &c.pytorch), cosine(v, &lc[i]));
        worst = (worst.0.min(cp), worst.1.min(cl));
        assert!(
            cp >= min_cos_pytorch,
            "{key} case {i} {:?}: cosine {cp} vs PyTorch",
            c.input
        );
        assert!(
            cl >= min_cos_llamacpp,
            "{key} case {i} {:?}: cosine {cl} vs llama.cpp",
            c.input
        );
        let rel = (norm(v) - c.pytorch_norm).abs() / c.pytorch_norm;
        worst_norm = worst_norm.max(rel);
        assert!(
            !check_norm || rel <= 1e-3,
            "{key} case {i}: pooled norm {} vs {} ({rel})",
            norm(v),
            c.pytorch_norm
        );
    }
    println!(
        "{key}: worst cosine vs PyTorch {:.6}, vs llama.cpp {:.6}; worst pooled norm {:.3} % off \
         PyTorch's{}",
        worst.0,
        worst.1,
        worst_norm * 100.0,
        if check_norm { "" } else { " (no bound on it)" }
    );
}

#[test]
fn f16_matches_pytorch_and_llamacpp() {
    check_model(
        &fixture("all-minilm-f16.gguf"),
        "all-minilm-f16",
        0.9999,
        0.9999,
        true,
    );
}

/// The packed kernels' own error, apart from the F16 weights' rounding: the server's path
/// (13-bit integer matmuls, bf16/int16 attention) against exact f32 arithmetic on the same
/// file (the backend unprepared: f32 products of the F16 weights, f32 attention). The exact
/// run sits within 0.02 % of PyTorch's pooled norms, so this is most of what the golden
/// test's 0.1 % bound sees. Measured: worst 0.059 %, rms 0.030 %.
#[test]
fn f16_packed_kernels_stay_close_to_exact_math() {
    let file = Arc::new(GgufFile::open(&fixture("all-minilm-f16.gguf")).unwrap());
    let arch = quiver::arch::load(file.clone()).unwrap();
    let cases = cases();
    let batch = Batch::new(&cases.iter().map(|c| c.ids.clone()).collect::<Vec<_>>());
    let packed = Cpu::new();
    packed.prepare(&file);
    let pooled = |backend: &Cpu| {
        pool(
            &arch.forward(backend, &batch),
            384,
            &batch.seqs,
            Pooling::Mean,
        )
    };
    let (exact, fast) = (pooled(&Cpu::new()), pooled(&packed));
    let (mut worst, mut sum_sq, mut worst_cos) = (0.0f64, 0.0f64, 1.0f64);
    for (i, (e, f)) in exact.iter().zip(&fast).enumerate() {
        let rel = (norm(f) - norm(e)).abs() / norm(e);
        (worst, sum_sq) = (worst.max(rel), sum_sq + rel * rel);
        worst_cos = worst_cos.min(cosine(f, e));
        assert!(
            rel <= 8e-4,
            "case {i}: packed pooled norm {rel} off the exact one"
        );
        assert!(cosine(f, e) >= 0.99999, "case {i}: cosine {}", cosine(f, e));
    }
    println!(
        "packed vs exact f32 (all-minilm F16): pooled norm worst {:.3} %, rms {:.3} %; worst \
         cosine {worst_cos:.7}",
        worst * 100.0,
        (sum_sq / exact.len() as f64).sqrt() * 100.0
    );
}

#[test]
fn q8_0_matches_pytorch_and_llamacpp() {
    check_model(
        &fixture("all-minilm-q8_0.gguf"),
        "all-minilm-q8_0",
        0.999,
        0.998,
        false,
    );
}

#[test]
fn f32_matches_pytorch_and_llamacpp() {
    let Some(path) = shared("models/all-minilm-f32.gguf") else {
        println!("skipped: ../shared/models/all-minilm-f32.gguf not found");
        return;
    };
    check_model(&path, "all-minilm-f32", 0.9999, 0.9999, true);
}

#[test]
fn ollama_published_vector() {
    let model = Model::load(
        GgufFile::open(&fixture("all-minilm-f16.gguf")).unwrap(),
        Arc::new(Cpu::new()),
    )
    .unwrap();
    let ollama = read_json("ollama-all-minilm.json");
    let ids = &cases()[0].ids; // "why is the sky blue?"
    assert_eq!(ollama["embed_single"]["input"], "why is the sky blue?");
    let mut v = model.embed_tokens(&[ids]).unwrap().remove(0);
    let raw = f32s(&ollama["legacy_embeddings"]["embedding"]);
    assert!(
        cosine(&v, &raw) >= 0.9999,
        "raw cosine {}",
        cosine(&v, &raw)
    );
    assert!((norm(&v) - norm(&raw)).abs() / norm(&raw) < 1e-3);
    quiver::embed::normalize(&mut v);
    let want = f32s(&ollama["embed_single"]["embedding"]);
    assert!(cosine(&v, &want) >= 0.9999, "cosine {}", cosine(&v, &want));
}

#[test]
fn batching_does_not_change_vectors() {
    let model = Model::load(
        GgufFile::open(&fixture("all-minilm-f16.gguf")).unwrap(),
        Arc::new(Cpu::new()),
    )
    .unwrap();
    let cases = cases();
    let (a, b) = (&cases[2].ids, &cases[20].ids);
    let together = model.embed_tokens(&[a, b]).unwrap();
    let alone_a = model.embed_tokens(&[a]).unwrap();
    let alone_b = model.embed_tokens(&[b]).unwrap();
    assert!(cosine(&together[0], &alone_a[0]) > 0.999999);
    assert!(cosine(&together[1], &alone_b[0]) > 0.999999);
}

#[test]
fn text_to_vector_end_to_end() {
    // Tokenizer + forward + pooling + normalisation, from the raw input strings.
    let model = Model::load(
        GgufFile::open(&fixture("all-minilm-f16.gguf")).unwrap(),
        Arc::new(Cpu::new()),
    )
    .unwrap();
    let cases = cases();
    let texts: Vec<&str> = cases.iter().map(|c| c.input.as_str()).collect();
    let vectors = model.embed(&texts).unwrap();
    for (c, v) in cases.iter().zip(&vectors) {
        assert_eq!(
            model.tokenize(&c.input),
            c.ids,
            "token ids of {:?}",
            c.input
        );
        assert!((norm(v) - 1.0).abs() < 1e-5);
        assert!(
            cosine(v, &c.pytorch) >= 0.9999,
            "{:?}: cosine {}",
            c.input,
            cosine(v, &c.pytorch)
        );
    }
}
