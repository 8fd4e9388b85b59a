//! The CPU backend: every operation is a call into `quiver_kernels`.

use super::{AttnShape, Backend};
use crate::tensor::TensorView;
use quiver_kernels::{attention, ops};
use rayon::prelude::*;
use std::ops::Range;

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
        // Baseline path: dequantise a panel of weight rows, then dot every input row with it.
        const PANEL: usize = 16;
        let mut yt = vec![0.0f32; n * m]; // n × m, transposed so each panel writes its own rows
        yt.par_chunks_mut(PANEL * m)
            .enumerate()
            .for_each(|(p, out)| {
                let rows = out.len() / m;
                let mut wf = vec![0.0f32; rows * k];
                for r in 0..rows {
                    w.dequantize_row(p * PANEL + r, &mut wf[r * k..(r + 1) * k]);
                }
                for r in 0..rows {
                    let wr = &wf[r * k..(r + 1) * k];
                    for i in 0..m {
                        let xr = &x[i * k..(i + 1) * k];
                        out[r * m + i] = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
                    }
                }
            });
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = yt[j * m + i];
            }
        }
        if let Some(b) = bias {
            ops::add_bias(y, b);
        }
    }

    fn layer_norm(&self, x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        let dim = w.len();
        x.par_chunks_mut(dim * 16)
            .for_each(|c| ops::layer_norm(c, dim, w, b, eps));
    }

    fn rms_norm(&self, x: &mut [f32], w: &[f32], eps: f32) {
        let dim = w.len();
        x.par_chunks_mut(dim * 16)
            .for_each(|c| ops::rms_norm(c, dim, w, eps));
    }

    fn gelu(&self, x: &mut [f32]) {
        x.par_chunks_mut(4096).for_each(ops::gelu);
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
        attention::attention(q, k, v, seqs, shape, causal, out);
    }
}
