//! `Model` on the GPU backend: BERT runs whole on the GPU (one submission per packed batch)
//! with the same vectors as the CPU model, its weights counted once in `vram_bytes`, and a GPU
//! fault at run time moves the model to the CPU instead of failing the request.
//! The GPU tests skip, saying why, without an adapter (CPU adapters such as lavapipe count).

use quiver::backend::cpu::Cpu;
use quiver::backend::Backend;
use quiver::gguf::GgufFile;
use quiver::model::{ForwardPath, Model};
use std::sync::Arc;

const F16: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-f16.gguf");

fn open() -> GgufFile {
    GgufFile::open(std::path::Path::new(F16)).unwrap()
}

/// Three sequences of different lengths (31 tokens), packed into one batch by `embed_tokens`.
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

#[test]
fn cpu_backend_has_no_whole_forward() {
    let file = Arc::new(open());
    assert!(Cpu::new().whole_forward(&file, "bert").is_none());
    let model = Model::load(open(), Arc::new(Cpu::new())).unwrap();
    assert_eq!(model.forward_path(), ForwardPath::Cpu);
    model.embed_tokens(&seqs()).unwrap();
    assert_eq!(model.forward_path(), ForwardPath::Cpu);
    assert_eq!(model.vram_bytes(), 0);
}

#[cfg(feature = "gpu")]
mod gpu {
    use super::*;
    use quiver::backend::gpu::GpuBackend;
    use quiver::embed::Pooling;

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    fn assert_same(what: &str, got: &[Vec<f32>], want: &[Vec<f32>], min_cos: f64) {
        assert_eq!(got.len(), want.len(), "{what}: vector count");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let c = cosine(g, w);
            eprintln!("{what} seq {i}: cosine {c:.7}");
            assert!(c >= min_cos, "{what} seq {i}: cosine {c} < {min_cos}");
            // Unnormalised, as the CPU path gives them: the norms agree too.
            let (ng, nw) = (quiver::embed::norm(g), quiver::embed::norm(w));
            assert!(
                (ng - nw).abs() <= 1e-3 * nw,
                "{what} seq {i}: norm {ng} vs {nw}"
            );
        }
    }

    /// Says why a test did nothing, straight to stderr: the harness captures `println!` of
    /// passing tests, and a skip must be visible.
    fn skip(why: &str) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: {why}");
    }

    /// A GPU backend on a device of its own (tests below break or limit it).
    fn backend() -> Option<Arc<GpuBackend>> {
        match GpuBackend::new(true) {
            Ok(g) => {
                eprintln!("GPU tests on {}", g.adapter());
                Some(Arc::new(g))
            }
            Err(e) => {
                skip(&format!("no GPU adapter ({e})"));
                None
            }
        }
    }

    #[test]
    fn bert_runs_whole_on_the_gpu_with_the_cpu_vectors() {
        let Some(gpu) = backend() else { return };
        let model = Model::load(open(), gpu.clone()).unwrap();
        assert_eq!(model.forward_path(), ForwardPath::GpuWhole);
        // The weights are on the GPU from the load, once: the per-op cache stays empty.
        let vram = model.vram_bytes();
        assert!(vram > 10_000_000, "F16 MiniLM weights on the GPU: {vram}");
        assert_eq!(gpu.vram_bytes(), 0, "a second copy in the per-op cache");

        let cpu = Model::load(open(), Arc::new(Cpu::new())).unwrap();
        let got = model.embed_tokens(&seqs()).unwrap();
        assert_eq!(model.forward_path(), ForwardPath::GpuWhole);
        assert_same(
            "whole-forward mean",
            &got,
            &cpu.embed_tokens(&seqs()).unwrap(),
            0.9999,
        );
        let got = model.embed_tokens_with(&seqs(), Pooling::Cls).unwrap();
        let want = cpu.embed_tokens_with(&seqs(), Pooling::Cls).unwrap();
        assert_same("whole-forward cls", &got, &want, 0.9999);
        assert_eq!(model.forward_path(), ForwardPath::GpuWhole);
        assert!(!gpu.fell_back());
        assert_eq!(gpu.vram_bytes(), 0);
        assert_eq!(model.vram_bytes(), vram);

        // Input checks stay the model's: typed errors, not GPU faults.
        assert!(model.embed_tokens(&[vec![101u32, 999_999, 102]]).is_err());
        let empty = model.embed_tokens(&[Vec::<u32>::new()]).unwrap();
        assert_eq!(empty, vec![vec![0.0; 384]]);
        assert_eq!(model.forward_path(), ForwardPath::GpuWhole);
    }

    #[test]
    fn other_architectures_are_not_offered_whole() {
        let Some(gpu) = backend() else { return };
        let file = Arc::new(open());
        assert!(gpu.whole_forward(&file, "llama").is_none());
        assert!(gpu.whole_forward(&file, "nomic-bert").is_none());
        assert!(gpu.whole_forward(&file, "nomic-bert-moe").is_none());
        assert!(gpu.whole_forward(&file, "jina-bert-v2").is_none());
    }

    /// The BERT-family encoders other than `bert` (RoPE, ALiBi, fused QKV, gated FFNs) are not
    /// offered the whole path: they run op by op, ops the GPU lacks on the CPU, with the CPU's
    /// vectors.
    #[test]
    fn new_bert_family_archs_run_op_by_op_with_the_cpu_vectors() {
        let Some(gpu) = backend() else { return };
        for name in ["tiny-nomic-bert.gguf", "tiny-jina-bert-v2.gguf"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures")
                .join(name);
            let model = Model::load(GgufFile::open(&path).unwrap(), gpu.clone()).unwrap();
            assert_eq!(model.forward_path(), ForwardPath::PerOp, "{name}");
            let cpu = Model::load(GgufFile::open(&path).unwrap(), Arc::new(Cpu::new())).unwrap();
            let got = model.embed_tokens(&seqs()).unwrap();
            assert_eq!(model.forward_path(), ForwardPath::PerOp, "{name}");
            assert_same(name, &got, &cpu.embed_tokens(&seqs()).unwrap(), 0.9999);
        }
    }

    #[test]
    fn a_batch_too_big_for_the_device_runs_on_the_cpu_alone() {
        let Some(gpu) = backend() else { return };
        let model = Model::load(open(), gpu.clone()).unwrap();
        let cpu = Model::load(open(), Arc::new(Cpu::new())).unwrap();
        // 31 tokens need a 31 × 1536 × 4 = 190 KB feed-forward buffer; 4 tokens need 24 KB.
        gpu.gpu().limit_bindings_to(64 * 1024);
        let got = model.embed_tokens(&seqs()).unwrap();
        assert_eq!(model.forward_path(), ForwardPath::Cpu);
        assert_same(
            "too big",
            &got,
            &cpu.embed_tokens(&seqs()).unwrap(),
            0.99999,
        );
        // The next batch that fits runs on the GPU again.
        let small = [seqs()[1].clone()];
        let got = model.embed_tokens(&small).unwrap();
        assert_eq!(model.forward_path(), ForwardPath::GpuWhole);
        assert_same("fits", &got, &cpu.embed_tokens(&small).unwrap(), 0.9999);
        assert!(model.vram_bytes() > 0);
    }

    #[test]
    fn a_gpu_fault_moves_the_model_to_the_cpu_for_good() {
        let Some(gpu) = backend() else { return };
        let model = Model::load(open(), gpu.clone()).unwrap();
        let cpu = Model::load(open(), Arc::new(Cpu::new())).unwrap();
        let want = cpu.embed_tokens(&seqs()).unwrap();
        model.embed_tokens(&seqs()).unwrap();
        assert_eq!(model.forward_path(), ForwardPath::GpuWhole);

        gpu.gpu().device.destroy();
        let got = model.embed_tokens(&seqs()).unwrap();
        assert_eq!(model.forward_path(), ForwardPath::Cpu);
        assert_same("after device loss", &got, &want, 0.99999);
        // The whole path was dropped with its weights; later batches stay on the CPU.
        assert_eq!(model.vram_bytes(), 0);
        let got = model.embed_tokens(&seqs()).unwrap();
        assert_eq!(model.forward_path(), ForwardPath::Cpu);
        assert_same("later batch", &got, &want, 0.99999);
    }
}
