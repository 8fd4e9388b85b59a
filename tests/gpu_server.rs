//! The server with `QUIVER_BACKEND=gpu`: `/api/embed` answers with the CPU model's vectors
//! (BERT runs whole on the GPU) and `/api/ps` counts the weights on the GPU in `size_vram`.
//! Skips, saying why, without a GPU adapter (CPU adapters such as lavapipe count: `gpu` takes
//! them). One test in this process, so setting the environment races with nothing.
#![cfg(feature = "gpu")]

mod server_common;

use quiver::backend::cpu::Cpu;
use quiver::backend::gpu::GpuBackend;
use quiver::gguf::GgufFile;
use quiver::model::Model;
use serde_json::json;
use server_common::*;
use std::sync::Arc;

#[test]
fn embed_on_the_gpu_matches_the_cpu_and_ps_counts_vram() {
    if let Err(e) = GpuBackend::new(true) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: no GPU adapter ({e})");
        return;
    }
    std::env::set_var("QUIVER_BACKEND", "gpu");
    let s = server();
    let texts = [
        "why is the sky blue?",
        "hello world",
        "the quick brown fox jumps over the lazy dog, a longer sentence to test",
    ];
    let r = post(
        s.addr,
        "/api/embed",
        &json!({"model": "all-minilm", "input": texts, "keep_alive": "1h"}),
    );
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let got = r.json()["embeddings"].clone();

    let cpu = Model::load(GgufFile::open(F16.as_ref()).unwrap(), Arc::new(Cpu::new())).unwrap();
    let want = cpu.embed(&texts).unwrap();
    for (i, w) in want.iter().enumerate() {
        let g = vector(&got[i]);
        let c = cosine(&g, w);
        eprintln!("text {i}: cosine {c:.7}");
        assert!(c >= 0.9999, "text {i}: cosine {c}");
        assert!((norm(&g) - 1.0).abs() < 1e-4, "normalised");
    }

    let ps = get(s.addr, "/api/ps").json();
    let vram = ps["models"][0]["size_vram"].as_u64().unwrap();
    assert!(
        vram > 10_000_000,
        "size_vram of F16 MiniLM on the GPU: {vram}"
    );
}
