//! The llama-family forward pass (src/arch/llama.rs) op by op on the GPU backend, RoPE
//! included, against the same model on the CPU backend: small random models written here in
//! F16 and Q8_0, one with NeoX RoPE, linear scaling and biases (qwen2), one with llama's
//! interleaved RoPE and per-pair frequency factors (`rope_freqs.weight`). Skips, saying why,
//! without a GPU adapter.
#![cfg(feature = "gpu")]

mod common;

use common::{cosine, gguf_from_bytes, q8_0_encode, Rng};
use half::f16;
use quiver::arch::{self, Batch};
use quiver::backend::cpu::Cpu;
use quiver::backend::gpu::GpuBackend;
use quiver::gguf::writer::GgufWriter;
use quiver::gguf::{GgufFile, Value};
use quiver::tensor::DType;
use std::sync::Arc;

const N_EMBD: usize = 128;
const N_HEAD: usize = 4;
const N_HEAD_KV: usize = 2;
const HEAD: usize = 32;
const N_FF: usize = 256;
const N_VOCAB: usize = 64;

/// A two-layer model of `arch` with matrices in `dtype`.
fn model(arch: &str, dtype: DType, seed: u64) -> Arc<GgufFile> {
    let mut r = Rng(seed);
    let key = |k: &str| format!("{arch}.{k}");
    let mut w = GgufWriter::new().meta("general.architecture", Value::String(arch.into()));
    for (k, v) in [
        ("block_count", 2),
        ("context_length", 256),
        ("embedding_length", N_EMBD),
        ("feed_forward_length", N_FF),
        ("attention.head_count", N_HEAD),
        ("attention.head_count_kv", N_HEAD_KV),
        ("rope.dimension_count", HEAD),
    ] {
        w = w.meta(&key(k), Value::U32(v as u32));
    }
    w = w.meta(&key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5));
    let neox = arch == "qwen2";
    if neox {
        w = w
            .meta(&key("rope.freq_base"), Value::F32(1e6))
            .meta(&key("rope.scaling.type"), Value::String("linear".into()))
            .meta(&key("rope.scaling.factor"), Value::F32(2.0));
    } else {
        let factors: Vec<f32> = (0..HEAD / 2).map(|i| 1.0 + 0.5 * i as f32).collect();
        w = w.tensor_f32("rope_freqs.weight", &[HEAD / 2], &factors);
    }
    let matrix = |w: GgufWriter, r: &mut Rng, name: &str, n_in: usize, n_out: usize| {
        // Large q/k weights make attention peaky, so RoPE errors show.
        let gain = if name.contains("attn_q") || name.contains("attn_k") {
            4.0
        } else {
            1.0
        };
        let v = r.vec(n_in * n_out, gain / (n_in as f32).sqrt());
        let bytes = match dtype {
            DType::F16 => v
                .iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect(),
            _ => q8_0_encode(&v),
        };
        w.tensor(name, dtype, &[n_in, n_out], bytes)
    };
    let norm = |w: GgufWriter, r: &mut Rng, name: &str| {
        let v: Vec<f32> = r.vec(N_EMBD, 0.2).iter().map(|x| 1.0 + x).collect();
        w.tensor_f32(name, &[N_EMBD], &v)
    };
    w = matrix(w, &mut r, "token_embd.weight", N_EMBD, N_VOCAB);
    let (qd, kvd) = (N_HEAD * HEAD, N_HEAD_KV * HEAD);
    for i in 0..2 {
        let n = |t: &str| format!("blk.{i}.{t}.weight");
        w = norm(w, &mut r, &n("attn_norm"));
        w = matrix(w, &mut r, &n("attn_q"), N_EMBD, qd);
        w = matrix(w, &mut r, &n("attn_k"), N_EMBD, kvd);
        w = matrix(w, &mut r, &n("attn_v"), N_EMBD, kvd);
        if neox {
            for (t, len) in [("attn_q", qd), ("attn_k", kvd), ("attn_v", kvd)] {
                let b = r.vec(len, 0.1);
                w = w.tensor_f32(&format!("blk.{i}.{t}.bias"), &[len], &b);
            }
        }
        w = matrix(w, &mut r, &n("attn_output"), qd, N_EMBD);
        w = norm(w, &mut r, &n("ffn_norm"));
        w = matrix(w, &mut r, &n("ffn_gate"), N_EMBD, N_FF);
        w = matrix(w, &mut r, &n("ffn_up"), N_EMBD, N_FF);
        w = matrix(w, &mut r, &n("ffn_down"), N_FF, N_EMBD);
    }
    w = norm(w, &mut r, "output_norm.weight");
    Arc::new(gguf_from_bytes(&w.to_bytes()))
}

fn compare(arch: &str, dtype: DType, min_cos: f64) {
    let gpu = match GpuBackend::new(true) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipped: no GPU adapter ({e})");
            return;
        }
    };
    let m = arch::load(model(arch, dtype, 7)).unwrap_or_else(|e| panic!("{arch}: {e}"));
    // Long enough that far positions rotate by many turns; packed, so positions restart.
    let long: Vec<u32> = (0..150).map(|i| (i * 7 % N_VOCAB) as u32).collect();
    let seqs: [&[u32]; 3] = [&[3, 17, 5, 9, 44, 0, 21], &long, &[49, 8, 8, 30]];
    let batch = Batch::new(&seqs);
    let want = m.forward(&Cpu::new(), &batch);
    let got = m.forward(&gpu, &batch);
    assert!(!gpu.fell_back(), "{arch}: the GPU backend fell back");
    assert!(gpu.vram_bytes() > 0, "{arch}: weights on the GPU");
    let worst = got
        .chunks(N_EMBD)
        .zip(want.chunks(N_EMBD))
        .map(|(g, w)| cosine(g, w))
        .fold(1.0f64, f64::min);
    eprintln!("{arch} {dtype:?}: worst token cosine GPU vs CPU {worst:.7}");
    assert!(
        worst >= min_cos,
        "{arch} {dtype:?}: cosine {worst} < {min_cos}"
    );
}

#[test]
fn llama_with_rope_freqs_matches_cpu() {
    compare("llama", DType::F16, 0.9999);
    compare("llama", DType::Q8_0, 0.999);
}

#[test]
fn qwen2_neox_scaled_rope_matches_cpu() {
    compare("qwen2", DType::F16, 0.9999);
    compare("qwen2", DType::Q8_0, 0.999);
}
