//! Writes a `nomic-bert` GGUF of nomic-embed-text's shape (12 layers, width 768, 12 heads,
//! FFN 3072, context 2048, RoPE base 1000, F16 matrices) with seeded random weights and the
//! real WordPiece vocabulary copied from fixtures/tiny-nomic-bert.gguf, so that its speed can
//! be measured (`quiver bench --model OUT`) and compared with llama-server on the same file.
//! The vectors mean nothing; the work per token is the real model's.
//!
//! cargo run --release --example make_nomic [OUT.gguf]   (default /tmp/nomic-embed-text-shape.gguf)

use quiver::gguf::writer::GgufWriter;
use quiver::gguf::{GgufFile, Value};
use quiver::tensor::DType;
use std::path::{Path, PathBuf};

const N_LAYER: usize = 12;
const N_EMBD: usize = 768;
const N_HEAD: usize = 12;
const N_FF: usize = 3072;
const N_CTX: usize = 2048;

/// Deterministic uniform numbers in [-scale, scale) (an LCG: no dependency, same file each run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values as F16 bytes.
    fn f16(&mut self, n: usize, scale: f32) -> Vec<u8> {
        (0..n)
            .flat_map(|_| half::f16::from_f32(self.next() * scale).to_le_bytes())
            .collect()
    }
}

fn main() {
    let out = std::env::args().nth(1).map_or_else(
        || PathBuf::from("/tmp/nomic-embed-text-shape.gguf"),
        PathBuf::from,
    );
    let vocab_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-nomic-bert.gguf");
    let src = GgufFile::open(&vocab_file).expect("fixtures/tiny-nomic-bert.gguf");
    let n_vocab = src
        .header
        .get_array("tokenizer.ggml.tokens")
        .expect("a vocabulary")
        .len();

    let arch = "nomic-bert";
    let key = |k: &str| format!("{arch}.{k}");
    let mut w = GgufWriter::new()
        .meta("general.architecture", Value::String(arch.into()))
        .meta(
            "general.name",
            Value::String("random nomic-embed-text shape".into()),
        )
        .meta("general.file_type", Value::U32(1)) // mostly F16
        .meta(&key("context_length"), Value::U32(N_CTX as u32))
        .meta(&key("embedding_length"), Value::U32(N_EMBD as u32))
        .meta(&key("feed_forward_length"), Value::U32(N_FF as u32))
        .meta(&key("block_count"), Value::U32(N_LAYER as u32))
        .meta(&key("attention.head_count"), Value::U32(N_HEAD as u32))
        .meta(&key("attention.layer_norm_epsilon"), Value::F32(1e-12))
        .meta(&key("attention.causal"), Value::Bool(false))
        .meta(&key("pooling_type"), Value::U32(1))
        .meta(&key("rope.freq_base"), Value::F32(1000.0));
    for (k, v) in &src.header.metadata {
        if k.starts_with("tokenizer.") {
            w = w.meta(k, v.clone());
        }
    }

    // Matrices scaled by 1/√fan-in so that activations keep their size through the layers.
    let mut rng = Rng(0x6e6f6d6963);
    let (d, ff) = (N_EMBD, N_FF);
    let f16 = DType::F16;
    let ones = vec![1.0f32; d];
    let zeros = vec![0.0f32; d];
    w = w
        .tensor(
            "token_embd.weight",
            f16,
            &[d, n_vocab],
            rng.f16(d * n_vocab, 0.5),
        )
        .tensor_f32("token_types.weight", &[d, 2], &vec![0.01; 2 * d])
        .tensor_f32("token_embd_norm.weight", &[d], &ones)
        .tensor_f32("token_embd_norm.bias", &[d], &zeros);
    let s_d = 1.0 / (d as f32).sqrt();
    let s_ff = 1.0 / (ff as f32).sqrt();
    for i in 0..N_LAYER {
        let n = |t: &str| format!("blk.{i}.{t}");
        w = w
            .tensor(
                &n("attn_qkv.weight"),
                f16,
                &[d, 3 * d],
                rng.f16(3 * d * d, s_d),
            )
            .tensor(&n("attn_output.weight"), f16, &[d, d], rng.f16(d * d, s_d))
            .tensor_f32(&n("attn_output_norm.weight"), &[d], &ones)
            .tensor_f32(&n("attn_output_norm.bias"), &[d], &zeros)
            .tensor(&n("ffn_up.weight"), f16, &[d, ff], rng.f16(d * ff, s_d))
            .tensor(&n("ffn_gate.weight"), f16, &[d, ff], rng.f16(d * ff, s_d))
            .tensor(&n("ffn_down.weight"), f16, &[ff, d], rng.f16(ff * d, s_ff))
            .tensor_f32(&n("layer_output_norm.weight"), &[d], &ones)
            .tensor_f32(&n("layer_output_norm.bias"), &[d], &zeros);
    }
    let bytes = w.to_bytes();
    std::fs::write(&out, &bytes).expect("write the model");
    println!("wrote {} ({} bytes)", out.display(), bytes.len());
}
