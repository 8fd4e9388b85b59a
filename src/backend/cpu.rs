//! The CPU backend: every operation is a call into `quiver_kernels`.

use super::{AttnShape, Backend};
use crate::tensor::DType;
use crate::tensor::TensorView;
use quiver_kernels::matmul::{self, FloatFormat, Isa, WeightFormat, Weights};
use quiver_kernels::{attention_fast, ops, ops_fast};
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

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

#[derive(Default)]
pub struct Cpu;

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn linear(&self, x: &[f32], m: usize, w: &TensorView, bias: Option<&[f32]>, y: &mut [f32]) {
        let k = w.row_len();
        let n = w.n_rows();
        assert_eq!(x.len(), m * k, "linear: input is not m×k");
        assert_eq!(y.len(), m * n, "linear: output is not m×n");
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
        if let Some(b) = bias {
            ops::add_bias(y, b);
        }
    }

    fn layer_norm(&self, x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        let dim = w.len();
        let isa = Isa::detect();
        x.par_chunks_mut(dim * 64)
            .for_each(|c| ops_fast::layer_norm(isa, c, dim, w, b, eps));
    }

    fn rms_norm(&self, x: &mut [f32], w: &[f32], eps: f32) {
        let dim = w.len();
        x.par_chunks_mut(dim * 16)
            .for_each(|c| ops::rms_norm(c, dim, w, eps));
    }

    fn gelu(&self, x: &mut [f32]) {
        let isa = Isa::detect();
        x.par_chunks_mut(16384).for_each(|c| ops_fast::gelu(isa, c));
    }

    fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        gate.par_chunks_mut(4096)
            .zip(up.par_chunks(4096))
            .for_each(|(g, u)| ops::silu_mul(g, u));
    }

    fn attention(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        seqs: &[Range<usize>],
        shape: AttnShape,
        causal: bool,
        out: &mut [f32],
    ) {
        attention_fast::attention(Isa::detect(), q, k, v, seqs, shape, causal, out);
    }
}
