//! The all-MiniLM forward pass on the GPU against the CPU backend: both the per-op
//! `GpuBackend` under `Model` and the whole-forward `GpuBert` (pooling on the GPU too).
//! Skips, saying why, without a GPU adapter (CPU adapters such as lavapipe count here).
#![cfg(feature = "gpu")]

use quiver::arch::Batch;
use quiver::backend::cpu::Cpu;
use quiver::backend::gpu::{forward_bert, GpuBackend, GpuBert};
use quiver::gguf::GgufFile;
use quiver::model::{ForwardPath, LoadOptions, Model};
use std::path::Path;
use std::sync::Arc;

/// Says why a test did nothing, straight to stderr: the harness captures `println!` of passing
/// tests, and a skip must be visible.
fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

fn seqs() -> Vec<Vec<u32>> {
    vec![
        vec![101, 2339, 2003, 1996, 3712, 2630, 1029, 102],
        vec![101, 7592, 2088, 102],
        vec![
            101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 2023, 2003, 1037,
            2936, 6251, 2000, 3231, 102,
        ],
    ]
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn open(path: &str) -> Option<GgufFile> {
    let p = Path::new(path);
    if !p.exists() {
        skip(&format!("{path} not found"));
        return None;
    }
    Some(GgufFile::open(p).unwrap())
}

fn compare(path: &str, min_cos: f64) {
    let gpu = match GpuBackend::new(true) {
        Ok(g) => Arc::new(g),
        Err(e) => {
            skip(&format!("no GPU adapter ({e})"));
            return;
        }
    };
    let Some(f_cpu) = open(path) else { return };
    let cpu_model = Model::load(f_cpu, Arc::new(Cpu::new())).unwrap();
    // The per-op path on purpose (`Model::load` would run BERT whole: tests/gpu_model.rs).
    let per_op = LoadOptions {
        whole_forward: false,
    };
    let gpu_model = Model::load_with(open(path).unwrap(), gpu.clone(), per_op).unwrap();
    let want = cpu_model.embed_tokens(&seqs()).unwrap();

    // Per-op backend, all sequences packed into one batch.
    let got = gpu_model.embed_tokens(&seqs()).unwrap();
    assert_eq!(gpu_model.forward_path(), ForwardPath::PerOp);
    assert!(!gpu.fell_back(), "the GPU backend fell back to the CPU");
    assert!(
        gpu.vram_bytes() > 1_000_000,
        "weights on the GPU: {}",
        gpu.vram_bytes()
    );
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let c = cosine(g, w);
        eprintln!("{path} per-op seq {i}: cosine {c:.7}");
        assert!(
            c >= min_cos,
            "{path} per-op seq {i}: cosine {c} < {min_cos}"
        );
    }

    // Whole forward on the GPU: hidden states, then pooled and normalised vectors.
    let bert = GpuBert::load(gpu.gpu().clone(), gpu_model.file.clone()).unwrap();
    let batch = Batch::new(&seqs());
    let hidden = forward_bert(&bert, &batch).unwrap();
    assert_eq!(hidden.len(), batch.tokens.len() * 384);
    let pooled = bert.embed(&batch, cpu_model.info.pooling, true).unwrap();
    for (i, (g, w)) in pooled.iter().zip(&want).enumerate() {
        let c = cosine(g, w);
        eprintln!("{path} whole-forward seq {i}: cosine {c:.7}");
        assert!(
            c >= min_cos,
            "{path} whole-forward seq {i}: cosine {c} < {min_cos}"
        );
        let norm: f32 = g.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
    }
}

#[test]
fn f16_model_matches_cpu() {
    compare(
        concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-f16.gguf"),
        0.9999,
    );
}

#[test]
fn q8_0_model_matches_cpu() {
    compare(
        concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-q8_0.gguf"),
        0.999,
    );
}

#[test]
fn f32_model_matches_cpu() {
    // The F32 model is not in fixtures/: it lives in the shared data beside the repository
    // (QUIVER_SHARED_DIR points elsewhere when the checkout is not laid out that way).
    let dir = std::env::var("QUIVER_SHARED_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared").to_string());
    compare(&format!("{dir}/models/all-minilm-f32.gguf"), 0.9999);
}

#[test]
fn whole_forward_rejects_bad_tokens_with_an_error() {
    let gpu = match GpuBackend::new(true) {
        Ok(g) => g,
        Err(e) => {
            skip(&format!("no GPU adapter ({e})"));
            return;
        }
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-f16.gguf");
    let bert = GpuBert::load(gpu.gpu().clone(), Arc::new(open(path).unwrap())).unwrap();
    let err = bert
        .forward(&Batch::new(&[vec![101u32, 999_999, 102]]))
        .unwrap_err();
    assert!(err.to_string().contains("999999"), "{err}");
    assert!(bert
        .forward(&Batch::new(&[Vec::<u32>::new()]))
        .unwrap()
        .is_empty());
}

/// The whole-forward path over every input of fixtures/all-minilm-llamacpp.json in one packed
/// batch against llama.cpp's normalised vectors (another implementation's numbers).
fn golden(file: &str, key: &str, min_cos: f64) {
    let gpu = match GpuBackend::new(true) {
        Ok(g) => g,
        Err(e) => {
            skip(&format!("no GPU adapter ({e})"));
            return;
        }
    };
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/all-minilm-llamacpp.json"
        ))
        .unwrap(),
    )
    .unwrap();
    // The first eight inputs (3 to 14 tokens): lavapipe on a shared CPU is slow, and these
    // already pack sequences of different lengths into one batch.
    let ids: Vec<Vec<u32>> = serde_json::from_value(json["token_ids"].clone()).unwrap();
    let want: Vec<Vec<f32>> =
        serde_json::from_value(json["models"][key]["normalized"].clone()).unwrap();
    let (ids, want) = (&ids[..8], &want[..8]);
    let path = format!("{}/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let bert = GpuBert::load(gpu.gpu().clone(), Arc::new(open(&path).unwrap())).unwrap();
    let got = bert
        .embed(&Batch::new(ids), bert.config.pooling, true)
        .unwrap();
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| cosine(g, w))
        .fold(1.0f64, f64::min);
    eprintln!(
        "{file} vs llama.cpp, {} inputs in one batch: worst cosine {worst:.7}",
        ids.len()
    );
    assert!(worst >= min_cos, "{file}: worst cosine {worst} < {min_cos}");
}

#[test]
fn f16_whole_forward_matches_llama_cpp_vectors() {
    golden("all-minilm-f16.gguf", "all-minilm-f16", 0.9999);
}

#[test]
fn q8_0_whole_forward_matches_llama_cpp_vectors() {
    golden("all-minilm-q8_0.gguf", "all-minilm-q8_0", 0.999);
}

/// The whole forward pass with only the portable shaders (no `f16` loads, no dot4I8Packed), as
/// on an adapter without those features: same tolerances against the CPU.
#[test]
fn portable_shader_variants_match_cpu() {
    use quiver::backend::gpu::{Gpu, Variants};
    let gpu = match Gpu::open_with(true, Variants::PORTABLE) {
        Ok(g) => Arc::new(g),
        Err(e) => {
            skip(&format!("no GPU adapter ({e})"));
            return;
        }
    };
    assert_eq!(gpu.variants, Variants::PORTABLE);
    for (file, min_cos) in [
        ("all-minilm-f16.gguf", 0.9999),
        ("all-minilm-q8_0.gguf", 0.999),
    ] {
        let path = format!("{}/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
        let cpu = Model::load(open(&path).unwrap(), Arc::new(Cpu::new())).unwrap();
        let want = cpu.embed_tokens(&seqs()).unwrap();
        let bert = GpuBert::load(gpu.clone(), Arc::new(open(&path).unwrap())).unwrap();
        let got = bert
            .embed(&Batch::new(&seqs()), cpu.info.pooling, false)
            .unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let c = cosine(g, w);
            eprintln!("{file} portable shaders seq {i}: cosine {c:.7}");
            assert!(
                c >= min_cos,
                "{file} portable seq {i}: cosine {c} < {min_cos}"
            );
        }
    }
}
