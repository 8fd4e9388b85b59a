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
