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

/// `n` rows of `k` values, in one or more row blocks (a block per storage binding).
pub struct GpuWeight {
    pub kind: WeightKind,
    pub n: usize,
    pub k: usize,
    pub parts: Vec<WeightPart>,
    /// GPU memory the weight takes.
    pub bytes: u64,
}

/// Rows `row0 .. row0 + rows` of a weight.
pub struct WeightPart {
    pub row0: usize,
    pub rows: usize,
    pub w: wgpu::Buffer,
    /// Per-block scales (Q8_0 only).
    pub scales: Option<wgpu::Buffer>,
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
    // Bytes of one row as the shader reads it, and the file bytes of one row.
    let (kind, gpu_row, file_row) = match w.dtype {
        DType::F32 => (WeightKind::F32, k * 4, k * 4),
        DType::F16 => (WeightKind::F16, k * 2, k * 2),
        DType::Q8_0 => (WeightKind::Q8_0, k, k / Q8_0_BLOCK * Q8_0_BYTES),
        _ => (WeightKind::F32, k * 4, 0),
    };
    let limit = gpu.binding_limit() as usize;
    if gpu_row > limit {
        return Err(GpuError::TooLarge {
            what: format!("{what} (one row)"),
            bytes: gpu_row as u64,
            limit: limit as u64,
        });
    }
    let mut per_part = (limit / gpu_row.max(1)).clamp(1, n.max(1));
    // Two F16 values share a u32 word: a block must start on an even element.
    if kind == WeightKind::F16 && k % 2 == 1 && per_part < n {
        per_part = (per_part & !1).max(2);
        if per_part * gpu_row > limit {
            return Err(GpuError::Unsupported(format!(
                "{what}: odd F16 rows too long to split"
            )));
        }
    }
    let dequantised = (file_row == 0).then(|| w.to_f32());
    let mut parts = Vec::new();
    let mut bytes = 0;
    for row0 in (0..n.max(1)).step_by(per_part) {
        let rows = per_part.min(n - row0);
        let (buf, scales) = match (&dequantised, kind) {
            (Some(all), _) => (
                gpu.upload_f32(what, &all[row0 * k..(row0 + rows) * k])?,
                None,
            ),
            (None, WeightKind::Q8_0) => {
                let (qs, sc) = repack_q8_0(&w.data[row0 * file_row..(row0 + rows) * file_row]);
                (gpu.upload(what, &qs)?, Some(gpu.upload_f32(what, &sc)?))
            }
            (None, _) => (
                gpu.upload(what, &w.data[row0 * file_row..(row0 + rows) * file_row])?,
                None,
            ),
        };
        bytes += buf.size() + scales.as_ref().map_or(0, wgpu::Buffer::size);
        parts.push(WeightPart {
            row0,
            rows,
            w: buf,
            scales,
        });
    }
    Ok(GpuWeight {
        kind,
        n,
        k,
        parts,
        bytes,
    })
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
