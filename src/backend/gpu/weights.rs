//! Weight matrices on the GPU, kept in their file dtype where a shader reads it directly
//! (F32, F16, Q8_0) and dequantised to F32 otherwise.

use super::context::{Gpu, GpuError};
use crate::tensor::{DType, TensorView};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightKind {
    F32,
    F16,
    Q8_0,
}

/// `n` rows of `k` values.
pub struct GpuWeight {
    pub kind: WeightKind,
    pub n: usize,
    pub k: usize,
    pub w: wgpu::Buffer,
    /// Per-block scales (Q8_0 only).
    pub scales: Option<wgpu::Buffer>,
    /// GPU memory the weight takes.
    pub bytes: u64,
}

const Q8_0_BLOCK: usize = 32;
const Q8_0_BYTES: usize = 34;

/// Splits GGUF Q8_0 blocks (f16 scale + 32 int8) into aligned quants and f32 scales.
pub fn repack_q8_0(data: &[u8]) -> (Vec<u8>, Vec<f32>) {
    let blocks = data.len() / Q8_0_BYTES;
    let mut qs = Vec::with_capacity(blocks * Q8_0_BLOCK);
    let mut scales = Vec::with_capacity(blocks);
    for b in data.chunks_exact(Q8_0_BYTES) {
        scales.push(half::f16::from_le_bytes([b[0], b[1]]).to_f32());
        qs.extend_from_slice(&b[2..]);
    }
    (qs, scales)
}

pub fn upload_weight(gpu: &Gpu, what: &str, w: &TensorView) -> Result<GpuWeight, GpuError> {
    let (n, k) = (w.n_rows(), w.row_len());
    if n.checked_mul(k).is_none_or(|e| e > u32::MAX as usize) {
        return Err(GpuError::Unsupported(format!(
            "{what}: {n}×{k} elements overflow 32-bit indexing"
        )));
    }
    match w.dtype {
        DType::F32 | DType::F16 => {
            let kind = if w.dtype == DType::F32 {
                WeightKind::F32
            } else {
                WeightKind::F16
            };
            let buf = gpu.upload(what, w.data)?;
            Ok(GpuWeight {
                kind,
                n,
                k,
                bytes: buf.size(),
                w: buf,
                scales: None,
            })
        }
        DType::Q8_0 => {
            let (qs, scales) = repack_q8_0(w.data);
            let buf = gpu.upload(what, &qs)?;
            let sbuf = gpu.upload_f32(what, &scales)?;
            Ok(GpuWeight {
                kind: WeightKind::Q8_0,
                n,
                k,
                bytes: buf.size() + sbuf.size(),
                w: buf,
                scales: Some(sbuf),
            })
        }
        _ => {
            let buf = gpu.upload_f32(what, &w.to_f32())?;
            Ok(GpuWeight {
                kind: WeightKind::F32,
                n,
                k,
                bytes: buf.size(),
                w: buf,
                scales: None,
            })
        }
    }
}

/// Identifies a weight by where its bytes live plus a sample of the bytes themselves, so a
/// different model mapped at the same address after an unload is not mistaken for this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WeightKey {
    ptr: usize,
    len: usize,
    dtype: DType,
    rows: usize,
    sample: u64,
}

impl WeightKey {
    pub fn of(w: &TensorView) -> WeightKey {
        let d = w.data;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        };
        let s = d.len().min(64);
        eat(&d[..s]);
        eat(&d[d.len() / 2..(d.len() / 2 + s).min(d.len())]);
        eat(&d[d.len() - s..]);
        WeightKey {
            ptr: d.as_ptr() as usize,
            len: d.len(),
            dtype: w.dtype,
            rows: w.n_rows(),
            sample: h,
        }
    }
}
