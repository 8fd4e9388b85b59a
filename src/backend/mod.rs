//! The seam between a model's forward pass and the hardware it runs on.
//!
//! An architecture (src/arch) calls these operations on activations that live in host memory;
//! the CPU backend runs them through `quiver_kernels`.

pub mod cpu;
pub mod gpu;

pub use quiver_kernels::attention::AttnShape;

use crate::tensor::TensorView;
use std::ops::Range;

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;

    /// Bytes of model weights this backend holds in device memory (`/api/ps` `size_vram`);
    /// 0 for backends that read weights from host memory.
    fn vram_bytes(&self) -> u64 {
        0
    }

    /// y[m×n] = x[m×k] · Wᵀ (+ bias): W is `n` rows of `k` values in any GGML dtype.
    fn linear(&self, x: &[f32], m: usize, w: &TensorView, bias: Option<&[f32]>, y: &mut [f32]);

    /// LayerNorm of each row of `w.len()` values, in place.
    fn layer_norm(&self, x: &mut [f32], w: &[f32], b: &[f32], eps: f32);

    /// RMSNorm of each row of `w.len()` values, in place.
    fn rms_norm(&self, x: &mut [f32], w: &[f32], eps: f32);

    /// GELU (erf form), in place.
    fn gelu(&self, x: &mut [f32]);

    /// gate = silu(gate) · up, in place.
    fn silu_mul(&self, gate: &mut [f32], up: &[f32]);

    /// Softmax attention over packed sequences (`seqs` are token ranges); see
    /// `quiver_kernels::attention::attention` for the layout.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        seqs: &[Range<usize>],
        shape: AttnShape,
        causal: bool,
        out: &mut [f32],
    );
}
