//! Shared helpers for integration tests: fixture paths, reference JSON, vector maths.
#![allow(dead_code)]

use std::path::PathBuf;

/// A file in `fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A file in `../shared/` (beside the clone, in CI too), or None where it is absent.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join(rel);
    p.exists().then_some(p)
}

pub fn read_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name)).expect("reference JSON in fixtures/");
    serde_json::from_str(&text).expect("valid JSON")
}

pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("integer") as u32)
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "vectors of different lengths");
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

pub fn norm(a: &[f32]) -> f64 {
    a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// Deterministic random numbers (an LCG): tests need no dependency and repeat exactly.
pub struct Rng(pub u64);
impl Rng {
    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// Q8_0 blocks of `x` (a multiple of 32 values), by an encoder of the tests' own: per block
/// d = max|x| / 127 as f16, q = round(x / d) clamped to ±127.
pub fn q8_0_encode(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for block in x.chunks(32) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = half::f16::from_f32(amax / 127.0);
        let inv = if d.to_f32() == 0.0 {
            0.0
        } else {
            1.0 / d.to_f32()
        };
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(
            block
                .iter()
                .map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8 as u8),
        );
    }
    out
}

/// Every GGML block type in fixtures/quant-zoo.gguf, which holds `<TYPE>.q` (a 4×512 tensor of
/// random valid blocks) and `<TYPE>.f32` (those blocks dequantised by gguf-py) for each.
pub const ZOO_TYPES: [&str; 12] = [
    "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
];

/// A GGUF file parsed from bytes in memory.
pub fn gguf_from_bytes(bytes: &[u8]) -> quiver::gguf::GgufFile {
    use quiver::gguf::{AlignedBytes, GgufFile, ModelBytes};
    GgufFile::from_bytes(ModelBytes::Owned(AlignedBytes::copy_from(bytes))).expect("GGUF parses")
}

/// fixtures/quant-zoo.gguf.
pub fn quant_zoo() -> quiver::gguf::GgufFile {
    gguf_from_bytes(&std::fs::read(fixture("quant-zoo.gguf")).expect("fixtures/quant-zoo.gguf"))
}

/// A two-layer llama (256 wide, 4 query heads sharing 2 KV heads, SwiGLU of 512) whose layer
/// matrices are random valid blocks of `dtype`, with a WordPiece vocabulary of single letters
/// (so a text is as many tokens as letters, and long texts make long sequences).
/// `extra` metadata is appended (tests of `quiver show`). The GGUF file's bytes.
pub fn tiny_llama_gguf(
    dtype: quiver::tensor::DType,
    extra: &[(&str, quiver::gguf::Value)],
) -> Vec<u8> {
    use quiver::gguf::writer::GgufWriter;
    use quiver::gguf::{Value, ValueType};
    const E: usize = 256;
    const FF: usize = 512;
    const HEADS: usize = 4;
    const KV_HEADS: usize = 2;
    const HD: usize = E / HEADS;
    let mut vocab: Vec<String> = ["[UNK]", "[CLS]", "[SEP]"].map(String::from).to_vec();
    for c in 'a'..='z' {
        vocab.push(format!("\u{2581}{c}"));
        vocab.push(c.to_string());
    }
    let n_vocab = vocab.len();
    let mut w = GgufWriter::new()
        .meta("general.architecture", Value::String("llama".into()))
        .meta("tokenizer.ggml.model", Value::String("bert".into()))
        .meta(
            "tokenizer.ggml.tokens",
            Value::Array(
                ValueType::String,
                vocab.into_iter().map(Value::String).collect(),
            ),
        )
        .meta("tokenizer.ggml.bos_token_id", Value::U32(1))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(2));
    for (k, v) in [
        ("block_count", 2),
        ("context_length", 1024),
        ("embedding_length", E),
        ("feed_forward_length", FF),
        ("attention.head_count", HEADS),
        ("attention.head_count_kv", KV_HEADS),
    ] {
        w = w.meta(&format!("llama.{k}"), Value::U32(v as u32));
    }
    let mut r = Rng(7);
    w = w.tensor_f32("token_embd.weight", &[E, n_vocab], &r.vec(E * n_vocab, 1.0));
    let norm = |w: GgufWriter, name: &str, r: &mut Rng| {
        let v: Vec<f32> = r.vec(E, 0.2).iter().map(|x| 1.0 + x).collect();
        w.tensor_f32(name, &[E], &v)
    };
    for l in 0..2 {
        w = norm(w, &format!("blk.{l}.attn_norm.weight"), &mut r);
        w = norm(w, &format!("blk.{l}.ffn_norm.weight"), &mut r);
        for (t, n_in, n_out) in [
            ("attn_q", E, E),
            ("attn_k", E, KV_HEADS * HD),
            ("attn_v", E, KV_HEADS * HD),
            ("attn_output", E, E),
            ("ffn_gate", E, FF),
            ("ffn_up", E, FF),
            ("ffn_down", FF, E),
        ] {
            let data = random_blocks(dtype, n_in * n_out, &mut r);
            w = w.tensor(&format!("blk.{l}.{t}.weight"), dtype, &[n_in, n_out], data);
        }
    }
    w = norm(w, "output_norm.weight", &mut r);
    for (k, v) in extra {
        w = w.meta(k, v.clone());
    }
    w.to_bytes()
}

/// `n` weights of `dtype` as random valid blocks: random quants, with each block's f16 scale
/// (and minimum) set to a small random value so that rows have a norm near 1.
pub fn random_blocks(dtype: quiver::tensor::DType, n: usize, r: &mut Rng) -> Vec<u8> {
    use half::f16;
    use quiver::tensor::DType;
    let scale = 1.0 / (n as f32).sqrt().sqrt();
    let f16s = |count: usize, size: f32, r: &mut Rng| -> Vec<u8> {
        (0..count)
            .flat_map(|_| f16::from_f32(size * (0.5 + 0.5 * r.next().abs())).to_le_bytes())
            .collect()
    };
    let (block, bytes) = dtype.block();
    let mut out = Vec::with_capacity(n / block * bytes);
    let raw = |len: usize, r: &mut Rng| -> Vec<u8> {
        (0..len).map(|_| (r.next() * 128.0 + 128.0) as u8).collect()
    };
    for _ in 0..n / block {
        let start = out.len();
        match dtype {
            DType::F32 => {
                out.extend(r.vec(1, scale * 0.1).iter().flat_map(|v| v.to_le_bytes()));
                continue;
            }
            DType::F16 => {
                out.extend(f16::from_f32(r.next() * scale * 0.1).to_le_bytes());
                continue;
            }
            _ => out.extend(raw(bytes, r)),
        }
        let blk = &mut out[start..];
        // Where each format keeps its f16 scale(s): d first (and Q4_1's / Q4_K's minimum
        // next), Q6_K's d last.
        match dtype {
            DType::Q8_0 => blk[..2].copy_from_slice(&f16s(1, 0.002, r)),
            DType::Q4_0 => blk[..2].copy_from_slice(&f16s(1, 0.02, r)),
            DType::Q4_1 => blk[..4].copy_from_slice(&f16s(2, 0.01, r)),
            DType::Q4_K => blk[..4].copy_from_slice(&f16s(2, 0.0003, r)),
            DType::Q6_K => blk[208..].copy_from_slice(&f16s(1, 0.0001, r)),
            other => panic!("no random blocks for {other:?}"),
        }
    }
    out
}

/// Every file under `dir`, as paths relative to it, sorted.
pub fn files(dir: &std::path::Path) -> Vec<String> {
    fn walk(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `model` against llama.cpp's results for `key` in fixtures/new-archs-llamacpp.json: every
/// input's token ids identical, and cosine ≥ `bound` with its raw pooled vector, the inputs
/// run as one packed batch (as the scheduler would). Returns the worst cosine.
pub fn matches_reference(model: &quiver::model::Model, key: &str, bound: f64) -> f64 {
    let j = read_json("new-archs-llamacpp.json");
    let results = j["models"][key]["results"].as_array().expect("results");
    assert_eq!(results.len(), 21);
    let mut seqs = Vec::new();
    for r in results {
        let input = r["input"].as_str().unwrap();
        let ids = model.tokenize(input);
        assert_eq!(ids, u32s(&r["ids"]), "token ids of {input:?}");
        seqs.push(ids);
    }
    let pooled = model.embed_tokens(&seqs).unwrap();
    let mut worst = f64::MAX;
    for (r, v) in results.iter().zip(&pooled) {
        let cos = cosine(v, &f32s(&r["embedding_raw"]));
        worst = worst.min(cos);
        assert!(
            cos >= bound,
            "{:?}: cosine {cos} with llama.cpp",
            r["input"].as_str().unwrap()
        );
    }
    worst
}
