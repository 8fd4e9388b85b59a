//! The CPU backend: every operation is a call into `quiver_kernels`.
//!
//! The layer matrices of a prepared model are packed once: f16 / bf16 into the 13-bit integer
//! layout of `matmul::int16` (twice the multiply-adds per instruction of f32 FMA, no per-call
//! conversion), Q8_0 / Q4_0 / Q4_1 into the panels of `matmul::q8`, formats without a kernel
//! (K-quants, Q5_x) dequantised once and packed like f16, f32 into the f32 panels of
//! `matmul::float` (exact, as read). The embedding tables are read from the file on each call. Products of one input (`linears`: Q/K/V,
//! gate/up) quantise it once per packed path and share one parallel region.

use super::{AttnShape, Backend, LinearOut, Mask};
use crate::gguf::GgufFile;
use crate::tensor::DType;
use crate::tensor::TensorView;
use quiver_kernels::matmul::float::{matmul_float_packed, PackedF32};
use quiver_kernels::matmul::int16::{matmul_i16, matmul_i16_many, PackedI16};
use quiver_kernels::matmul::q8::{matmul_quant_packed, matmul_quant_packed_many, PackedQuant};
use quiver_kernels::matmul::{self, FloatFormat, Isa, Product, WeightFormat, Weights};
use quiver_kernels::{attention_fast, ops, ops_fast};
use rayon::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

thread_local! {
    /// f32 copy of a weight whose dtype has no kernel (reused between calls on this thread).
    static DEQUANTISED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The kernel format for a GGML dtype, or None where `linear` dequantises first.
fn weight_format(dtype: DType) -> Option<WeightFormat> {
    match dtype {
        DType::F32 => Some(WeightFormat::Float(FloatFormat::F32)),
        DType::F16 => Some(WeightFormat::Float(FloatFormat::F16)),
        DType::BF16 => Some(WeightFormat::Float(FloatFormat::BF16)),
        DType::Q8_0 => Some(WeightFormat::Q8_0),
        DType::Q4_0 => Some(WeightFormat::Q4_0),
        DType::Q4_1 => Some(WeightFormat::Q4_1),
        _ => None,
    }
}

/// One packed matrix.
enum PackedWeight {
    F32(PackedF32),
    Int16(PackedI16),
    Quant(PackedQuant),
}

impl PackedWeight {
    fn shape(&self) -> (usize, usize) {
        match self {
            PackedWeight::F32(p) => (p.n, p.k),
            PackedWeight::Int16(p) => (p.n, p.k),
            PackedWeight::Quant(p) => (p.n, p.k),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            PackedWeight::F32(p) => p.bytes(),
            PackedWeight::Int16(p) => p.bytes(),
            PackedWeight::Quant(p) => p.bytes(),
        }
    }
}

/// The packed copies of one model file's layer matrices, found by the address of the file
/// bytes a `TensorView` borrows. The file is held, so no address is reused while this lives.
struct Packed {
    _file: Arc<GgufFile>,
    by_addr: HashMap<usize, PackedWeight>,
}

impl Packed {
    /// Some layer weights are 16-bit or quantised (packed as such): attention may then
    /// run in 16-bit arithmetic too (`attention_low_precision`: bf16 scores, int16 P·V). An
    /// F32 model keeps exact f32 attention, as it keeps exact f32 matmuls.
    fn low_precision(&self) -> bool {
        self.by_addr
            .values()
            .any(|p| !matches!(p, PackedWeight::F32(_)))
    }
}

/// Packs the matrices of the repeating layers (`blk.N.*.weight`: 2-D, and 3-D stacks of
/// experts matrix by matrix): the embedding tables are only read a row at a time and stay in
/// the file.
fn pack_layers(file: &Arc<GgufFile>) -> Packed {
    let mut by_addr = HashMap::new();
    // Widening K-quants to 16 bits costs ~3.5× their file size: beyond this budget (a
    // multi-GB model) the rest stay in the file and are dequantised per call instead.
    let mut widen_budget: usize = WIDEN_BUDGET_BYTES;
    for t in &file.header.tensors {
        if !t.name.starts_with("blk.")
            || !t.name.ends_with(".weight")
            || !(2..=3).contains(&t.n_dims)
        {
            continue;
        }
        // A 3-D tensor is a stack of matrices (a mixture's experts): each packed on its own,
        // keyed by its slab's address, as the architecture slices it.
        let (k, n, n_mat) = (t.shape[0], t.shape[1], t.shape[2].max(1));
        let data = &file.bytes()[t.offset..t.offset + t.len];
        if !data.len().is_multiple_of(n_mat) {
            continue;
        }
        let mut packed_any = false;
        for slab in data.chunks_exact(data.len() / n_mat) {
            let Some(packed) = pack_matrix(t.dtype, slab, n, k, &mut widen_budget) else {
                continue;
            };
            by_addr.insert(slab.as_ptr() as usize, packed);
            packed_any = true;
        }
        if packed_any {
            // The file's copy is not read again on this backend: let its pages go.
            file.release_pages(t.offset..t.offset + t.len);
        }
    }
    Packed {
        _file: file.clone(),
        by_addr,
    }
}

/// One matrix of `n` rows of `k` values in `dtype`, packed for its kernel; None where it stays
/// in the file (no packed path, a size that does not match, or past the widening budget).
fn pack_matrix(
    dtype: DType,
    data: &[u8],
    n: usize,
    k: usize,
    widen_budget: &mut usize,
) -> Option<PackedWeight> {
    Some(match weight_format(dtype) {
        Some(format) if format.row_bytes(k).map(|r| r * n) != Some(data.len()) => return None,
        // Exact f32, in the panels its tiles read: packing them on every call cost 5× a
        // one-row product.
        Some(WeightFormat::Float(FloatFormat::F32)) => {
            PackedWeight::F32(PackedF32::pack(FloatFormat::F32, data, n, k))
        }
        Some(WeightFormat::Float(f)) if k >= 2 => {
            PackedWeight::Int16(PackedI16::pack(f, data, n, k))
        }
        Some(WeightFormat::Float(_)) => return None,
        Some(quant) => PackedWeight::Quant(PackedQuant::pack(quant, data, n, k)),
        // No kernel of its own (K-quants, Q5_x): dequantised once here and packed as
        // 13-bit integers, instead of dequantising the whole matrix on every call.
        None => {
            let widened = n * k * 2;
            if k < 2
                || dtype.bytes_for((n * k) as u64) != Some(data.len() as u64)
                || widened > *widen_budget
            {
                return None;
            }
            *widen_budget -= widened;
            let mut wf = vec![0.0f32; n * k];
            crate::tensor::dequantize(dtype, data, &mut wf);
            let bytes: &[u8] = bytemuck::cast_slice(&wf);
            PackedWeight::Int16(PackedI16::pack(FloatFormat::F32, bytes, n, k))
        }
    })
}

/// Heap bytes that widening kernel-less formats to 16 bits may take per model.
const WIDEN_BUDGET_BYTES: usize = 2 << 30;

#[derive(Default)]
pub struct Cpu {
    /// Filled by [`Backend::prepare`] (once: a backend serves one model load).
    packed: OnceLock<Packed>,
}

impl Cpu {
    pub fn new() -> Cpu {
        Cpu::default()
    }

    /// The packed form of `w`, if `prepare` packed it.
    fn packed(&self, w: &TensorView) -> Option<&PackedWeight> {
        let p = self
            .packed
            .get()?
            .by_addr
            .get(&(w.data.as_ptr() as usize))?;
        (p.shape() == (w.n_rows(), w.row_len())).then_some(p)
    }

    /// y = x · Wᵀ reading W from the file in its own dtype (what `prepare` did not pack).
    fn linear_from_file(&self, x: &[f32], m: usize, w: &TensorView, y: &mut [f32]) {
        let (k, n) = (w.row_len(), w.n_rows());
        match weight_format(w.dtype) {
            Some(format) => matmul::matmul(
                x,
                m,
                &Weights {
                    format,
                    data: w.data,
                    n,
                    k,
                },
                y,
            ),
            None => DEQUANTISED.with(|cell| {
                // Formats without a kernel of their own: dequantise once into a reused buffer,
                // then take the f32 path.
                let mut wf = std::mem::take(&mut *cell.borrow_mut());
                wf.resize(n * k, 0.0);
                crate::tensor::dequantize(w.dtype, w.data, &mut wf);
                let data: &[u8] = bytemuck::cast_slice(&wf);
                matmul::matmul(
                    x,
                    m,
                    &Weights {
                        format: WeightFormat::Float(FloatFormat::F32),
                        data,
                        n,
                        k,
                    },
                    y,
                );
                *cell.borrow_mut() = wf;
            }),
        }
    }

    /// Heap bytes of packed weights.
    pub fn packed_bytes(&self) -> usize {
        self.packed
            .get()
            .map_or(0, |p| p.by_addr.values().map(PackedWeight::bytes).sum())
    }
}

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn prepare(&self, file: &Arc<GgufFile>) {
        self.packed.get_or_init(|| pack_layers(file));
    }

    fn linear(&self, x: &[f32], m: usize, w: &TensorView, bias: Option<&[f32]>, y: &mut [f32]) {
        let k = w.row_len();
        let n = w.n_rows();
        assert_eq!(x.len(), m * k, "linear: input is not m×k");
        assert_eq!(y.len(), m * n, "linear: output is not m×n");
        match self.packed(w) {
            Some(PackedWeight::F32(p)) => matmul_float_packed(Isa::detect(), x, m, p, y),
            // The packed paths add the bias to each output tile while it is in cache.
            Some(PackedWeight::Int16(p)) => return matmul_i16(Isa::detect(), x, m, p, bias, y),
            // Every m, a single query too: one summation order for a row whatever its batch
            // (and the tiles are 3–9× faster than dot products over the file at m ≤ 4).
            Some(PackedWeight::Quant(p)) => {
                return matmul_quant_packed(Isa::detect(), x, m, p, bias, y)
            }
            _ => self.linear_from_file(x, m, w, y),
        }
        if let Some(b) = bias {
            y.par_chunks_mut(n * 64)
                .for_each(|rows| ops::add_bias(rows, b));
        }
    }

    /// The products whose weights take the same packed path (13-bit integers, or 8-bit
    /// blocks) quantise x once and run their tiles in one parallel
    /// region; any others go through `linear` one at a time. Bit for bit `linear`'s results:
    /// the same quantised x and the same tiles.
    fn linears(&self, x: &[f32], m: usize, outs: &mut [LinearOut<'_>]) {
        let mut int16 = Vec::new();
        let mut quant = Vec::new();
        let mut rest = Vec::new();
        for o in outs.iter_mut() {
            let (k, n) = (o.w.row_len(), o.w.n_rows());
            assert_eq!(x.len(), m * k, "linear: input is not m×k");
            assert_eq!(o.y.len(), m * n, "linear: output is not m×n");
            let (bias, y) = (o.bias, &mut *o.y);
            match self.packed(&o.w) {
                Some(PackedWeight::Int16(w)) => int16.push(Product { w, bias, y }),
                Some(PackedWeight::Quant(w)) => quant.push(Product { w, bias, y }),
                _ => rest.push((o.w, bias, y)),
            }
        }
        matmul_i16_many(Isa::detect(), x, m, &mut int16);
        matmul_quant_packed_many(Isa::detect(), x, m, &mut quant);
        for (w, bias, y) in rest {
            self.linear(x, m, &w, bias, y);
        }
    }

    fn layer_norm(&self, x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        let dim = w.len();
        let isa = Isa::detect();
        x.par_chunks_mut(dim * 64)
            .for_each(|c| ops_fast::layer_norm(isa, c, dim, w, b, eps));
    }

    fn add_layer_norm(&self, x: &mut [f32], residual: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let dim = w.len();
        let isa = Isa::detect();
        // One pass per block of rows while they are in cache: the sum, then its norm.
        x.par_chunks_mut(dim * 64)
            .zip(residual.par_chunks(dim * 64))
            .for_each(|(c, r)| ops_fast::add_layer_norm(isa, c, r, dim, w, b, eps));
    }

    fn rms_norm(&self, x: &mut [f32], w: &[f32], eps: f32) {
        let dim = w.len();
        let isa = Isa::detect();
        x.par_chunks_mut(dim * 16)
            .for_each(|c| ops_fast::rms_norm(isa, c, dim, w, eps));
    }

    fn gelu(&self, x: &mut [f32]) {
        let isa = Isa::detect();
        x.par_chunks_mut(16384).for_each(|c| ops_fast::gelu(isa, c));
    }

    fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        let isa = Isa::detect();
        gate.par_chunks_mut(4096)
            .zip(up.par_chunks(4096))
            .for_each(|(g, u)| ops_fast::silu_mul(isa, g, u));
    }

    fn attention(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        seqs: &[Range<usize>],
        shape: AttnShape,
        mask: Mask,
        out: &mut [f32],
    ) {
        let low_precision = self.packed.get().is_some_and(Packed::low_precision);
        if low_precision {
            attention_fast::attention_low_precision(Isa::detect(), q, k, v, seqs, shape, mask, out);
        } else {
            attention_fast::attention(Isa::detect(), q, k, v, seqs, shape, mask, out);
        }
    }
}
