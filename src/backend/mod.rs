//! The seam between a model's forward pass and the hardware it runs on.
//!
//! An architecture (src/arch) calls these operations on activations that live in host memory;
//! the CPU backend runs them through `quiver_kernels`. A backend that can run a whole model
//! itself (the GPU for BERT: one submission per batch) offers it through
//! [`Backend::whole_forward`].

pub mod cpu;
pub mod gpu;

pub use quiver_kernels::attention::{AttnShape, Mask};
pub use quiver_kernels::rope::Rope;

use crate::arch::Batch;
use crate::embed::Pooling;
use crate::gguf::GgufFile;
use crate::tensor::TensorView;
use rayon::prelude::*;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;

    /// Bytes of model weights this backend holds in device memory (`/api/ps` `size_vram`);
    /// 0 for backends that read weights from host memory.
    fn vram_bytes(&self) -> u64 {
        0
    }

    /// The whole forward pass of a model of architecture `arch` (`general.architecture`), run
    /// by this backend in one go, with its own copy of the weights. `None` where the backend
    /// has no such path for `arch` (or it could not be built): the model then runs op by op.
    fn whole_forward(&self, _file: &Arc<GgufFile>, _arch: &str) -> Option<Box<dyn WholeForward>> {
        None
    }

    /// Called once when a model loads on this backend (and runs op by op): a chance to
    /// repack its weights. A backend serves one model load.
    fn prepare(&self, _file: &Arc<GgufFile>) {}

    /// y[m×n] = x[m×k] · Wᵀ (+ bias): W is `n` rows of `k` values in any GGML dtype.
    fn linear(&self, x: &[f32], m: usize, w: &TensorView, bias: Option<&[f32]>, y: &mut [f32]);

    /// Several products of the same input, `outs[i].y` = x · `outs[i].w`ᵀ (+ its bias): Q, K
    /// and V of a layer, or its gate and up. The results are those of [`Backend::linear`] on
    /// each; a backend may share work between them (the CPU quantises x once). By default,
    /// one `linear` after another.
    fn linears(&self, x: &[f32], m: usize, outs: &mut [LinearOut<'_>]) {
        for o in outs {
            self.linear(x, m, &o.w, o.bias, o.y);
        }
    }

    /// LayerNorm of each row of `w.len()` values, in place.
    fn layer_norm(&self, x: &mut [f32], w: &[f32], b: &[f32], eps: f32);

    /// x ← LayerNorm(x + residual): a post-norm block's residual connection and its norm.
    fn add_layer_norm(&self, x: &mut [f32], residual: &[f32], w: &[f32], b: &[f32], eps: f32) {
        quiver_kernels::ops::add(x, residual);
        self.layer_norm(x, w, b, eps);
    }

    /// RMSNorm of each row of `w.len()` values, in place.
    fn rms_norm(&self, x: &mut [f32], w: &[f32], eps: f32);

    /// GELU (erf form), in place.
    fn gelu(&self, x: &mut [f32]);

    /// gate = silu(gate) · up, in place.
    fn silu_mul(&self, gate: &mut [f32], up: &[f32]);

    /// gate = gelu(gate) · up, in place (GEGLU). By default [`Backend::gelu`], then a product
    /// on the host.
    fn gelu_mul(&self, gate: &mut [f32], up: &[f32]) {
        self.gelu(gate);
        const CHUNK: usize = 4096;
        gate.par_chunks_mut(CHUNK)
            .zip(up.par_chunks(CHUNK))
            .for_each(|(g, u)| quiver_kernels::ops::mul(g, u));
    }

    /// gate = gelu_tanh(gate) · up, in place (GeGLU). By default the scalar kernel on the
    /// CPU's threads: Gemma's FFN is its only user, and it is a small part of a layer.
    fn gelu_tanh_mul(&self, gate: &mut [f32], up: &[f32]) {
        gate.par_chunks_mut(4096)
            .zip(up.par_chunks(4096))
            .for_each(|(g, u)| quiver_kernels::ops::gelu_tanh_mul(g, u));
    }

    /// Softmax attention over packed sequences (`seqs` are token ranges) under `mask`; see
    /// `quiver_kernels::attention::attention_masked` for the layout.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        seqs: &[Range<usize>],
        shape: AttnShape,
        mask: Mask,
        out: &mut [f32],
    );

    /// RoPE in place over the rows of `x` (`row_len` values each, whole heads); row `t` is at
    /// position `positions[t]`. By default the CPU kernel ([`rope_on_cpu`]).
    fn rope(&self, rope: &Rope, x: &mut [f32], row_len: usize, positions: &[usize]) {
        rope_on_cpu(rope, x, row_len, positions);
    }
}

/// One product of [`Backend::linears`]: y = x · Wᵀ (+ bias).
pub struct LinearOut<'a> {
    pub w: TensorView<'a>,
    pub bias: Option<&'a [f32]>,
    pub y: &'a mut [f32],
}

impl<'a> LinearOut<'a> {
    pub fn new(w: TensorView<'a>, bias: Option<&'a [f32]>, y: &'a mut [f32]) -> LinearOut<'a> {
        LinearOut { w, bias, y }
    }
}

/// `quiver_kernels::rope` over the rows of `x`, split across threads in chunks of tokens.
pub fn rope_on_cpu(rope: &Rope, x: &mut [f32], row_len: usize, positions: &[usize]) {
    const CHUNK: usize = 32;
    x.par_chunks_mut(row_len * CHUNK)
        .zip(positions.par_chunks(CHUNK))
        .for_each(|(x, p)| rope.apply(x, row_len, p));
}

/// A model's forward pass and pooling run entirely by a backend: a packed batch in, one pooled
/// vector per sequence out, with no host round trip between layers.
pub trait WholeForward: Send + Sync {
    /// One pooled, unnormalised vector per sequence of `batch` (as `embed::pool` gives over
    /// the hidden states), in order. Token ids are checked by the caller.
    fn pooled(&self, batch: &Batch, pooling: Pooling) -> Result<Vec<Vec<f32>>, WholeForwardError>;

    /// Bytes of weights this path holds in device memory.
    fn vram_bytes(&self) -> u64;
}

/// Why a whole forward pass did not run.
#[derive(Clone, Debug, PartialEq)]
pub enum WholeForwardError {
    /// This batch only (too big for one device binding, a shape the device path lacks): the
    /// next batch may run.
    Batch(String),
    /// The device failed (lost, out of memory, a rejected command): do not use it again.
    Device(String),
}

impl fmt::Display for WholeForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WholeForwardError::Batch(why) | WholeForwardError::Device(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for WholeForwardError {}
