//! What the decoder-style graphs (`llama.rs`, `gemma.rs`) share besides the backend's ops: the
//! activation buffers of a forward pass, and the grouped-query head counts they both check.

use super::{LoadError, Loader};

/// Activation buffers of one forward pass, kept between passes (fresh pages cost a fault and
/// a zeroing each).
#[derive(Default)]
pub(crate) struct DecoderState {
    pub h: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub attn: Vec<f32>,
    pub proj: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
}

/// Widths of a decoder's activations, per token.
pub(crate) struct Widths {
    pub n_embd: usize,
    /// Query heads × head size (also the attention output's width).
    pub q: usize,
    /// KV heads × head size.
    pub kv: usize,
    pub n_ff: usize,
}

impl DecoderState {
    /// Sizes every buffer for `n` tokens (contents are overwritten before they are read).
    pub fn fit(&mut self, n: usize, w: Widths) {
        for (b, width) in [
            (&mut self.h, w.n_embd),
            (&mut self.q, w.q),
            (&mut self.k, w.kv),
            (&mut self.v, w.kv),
            (&mut self.attn, w.q),
            (&mut self.proj, w.n_embd),
            (&mut self.gate, w.n_ff),
            (&mut self.up, w.n_ff),
        ] {
            b.resize(n * width, 0.0);
        }
    }
}

/// `attention.head_count` and `attention.head_count_kv` (default: as many as query heads),
/// checked so that the query heads share the KV heads evenly.
pub(crate) fn gqa_heads(l: &Loader) -> Result<(usize, usize), LoadError> {
    let n_head = l.usize("attention.head_count")?;
    let n_head_kv = l.usize_or("attention.head_count_kv", n_head);
    if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(LoadError::Invalid(format!(
            "{n_head} query heads cannot share {n_head_kv} KV heads"
        )));
    }
    Ok((n_head, n_head_kv))
}
