//! `gemma-embedding` (EmbeddingGemma): Gemma-3's decoder blocks run bidirectionally, pooled by
//! mean, then two dense projections. Read it top to bottom: config, weights, forward pass.
//!
//! What sets it apart from the llama family (`llama.rs`), and why it has its own forward pass
//! rather than a row of `llama_table`: the input is scaled by √n_embd; every block has an RMSNorm
//! after attention and after the FFN as well as before them (four per block); the FFN is GeGLU
//! with the tanh GELU; most layers attend only within a symmetric sliding window, with their
//! own RoPE base; and the pooled vector goes through `dense_2` then `dense_3`.

use super::decoder::{gqa_heads, DecoderState, Widths};
use super::{view, Architecture, Batch, LoadError, Loader};
use crate::backend::{AttnShape, Backend, LinearOut, Mask};
use crate::embed::Pooling;
use crate::gguf::{GgufFile, TensorInfo};
use quiver_kernels::rope::{Rope, RopeLayout};
use std::sync::{Arc, Mutex};

/// `general.architecture` and the prefix of its metadata keys.
pub const ARCH: &str = "gemma-embedding";

/// Ollama's embeddinggemma labels the same graph `gemma3` and tells it from the generative
/// Gemma-3 by a `gemma3.pooling_type` key (see [`is_ollama_embedding`]).
pub const OLLAMA_ARCH: &str = "gemma3";

/// A `gemma3` file that is an embedding model (Ollama's embeddinggemma): it has a pooling type.
/// A generative Gemma-3 has none and stays unsupported.
pub fn is_ollama_embedding(file: &GgufFile) -> bool {
    file.header
        .get_u64(&format!("{OLLAMA_ARCH}.pooling_type"))
        .is_some()
}

/// Gemma-3 makes every sixth layer global when the file has no `sliding_window_pattern`
/// (llama.cpp's `set_swa_pattern(6)`): layers 5, 11, 17, … see the whole sequence.
const DEFAULT_SWA_PERIOD: usize = 6;

/// Hyper-parameters, from the `gemma-embedding.*` (or `gemma3.*`) keys.
#[derive(Clone, Debug)]
pub struct Config {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub eps: f32,
    /// RoPE base of the global layers (`rope.freq_base`) and of the local ones
    /// (`rope.freq_base_swa`).
    pub freq_base: f32,
    pub freq_base_swa: f32,
    /// How far a local layer's query looks either way: half of `attention.sliding_window`, as
    /// llama.cpp's symmetric window (a window of 4 sees |i−j| ≤ 2).
    pub swa_radius: usize,
    pub pooling: Pooling,
}

/// One block. Matrices stay in the file (any dtype); norm weights are read into f32 (Gemma's
/// `1 + w` is already folded in by the converter).
pub struct Layer {
    /// Attends within the sliding window (else to the whole sequence).
    pub local: bool,
    pub attn_norm: Vec<f32>,
    pub q: TensorInfo,
    pub k: TensorInfo,
    pub v: TensorInfo,
    /// Per-head RMSNorm of q and k, `head_dim` long.
    pub q_norm: Vec<f32>,
    pub k_norm: Vec<f32>,
    pub o: TensorInfo,
    pub post_attn_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub gate: TensorInfo,
    pub up: TensorInfo,
    pub down: TensorInfo,
    pub post_ffn_norm: Vec<f32>,
}

pub struct Gemma {
    pub config: Config,
    file: Arc<GgufFile>,
    token_embd: TensorInfo,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// The projections after pooling, applied in order (`dense_2` then `dense_3`); empty in a
    /// file without them.
    dense: Vec<TensorInfo>,
    /// Reused by one forward pass at a time; a concurrent pass makes its own.
    state: Mutex<DecoderState>,
}

/// The names the dense projections go by: llama.cpp's converter writes `dense_2`/`dense_3`
/// (after the sentence-transformers modules), Ollama's older one `dense.0`/`dense.1`.
const DENSE_NAMES: [[&str; 2]; 2] = [["dense_2", "dense_3"], ["dense.0", "dense.1"]];

impl Gemma {
    /// `arch` is the file's `general.architecture`: [`ARCH`], or [`OLLAMA_ARCH`] for Ollama's
    /// files, whose keys carry that prefix.
    pub fn load(file: Arc<GgufFile>, arch: &str) -> Result<Gemma, LoadError> {
        let l = Loader { file: &file, arch };
        let n_embd = l.usize("embedding_length")?;
        let (n_head, n_head_kv) = gqa_heads(&l)?;
        // Gemma's heads are not n_embd / n_head wide (256 × 4 heads over a width of 640).
        let head_dim = l.usize("attention.key_length")?;
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(LoadError::Invalid(format!(
                "attention.key_length {head_dim} is not a positive even number"
            )));
        }
        if l.usize_or("attention.value_length", head_dim) != head_dim {
            return Err(LoadError::Invalid(
                "attention.value_length differs from key_length".into(),
            ));
        }
        if l.usize_or("rope.dimension_count", head_dim) != head_dim {
            return Err(LoadError::Invalid(
                "rope.dimension_count other than the whole head is not supported".into(),
            ));
        }
        let n_layer = l.usize("block_count")?;
        let window = l.usize("attention.sliding_window")?;
        let local = swa_layers(&l, n_layer)?;
        let pooling = match file.header.get_u64(&format!("{arch}.pooling_type")) {
            None => Pooling::Mean,
            Some(code) => Pooling::from_gguf(code).ok_or_else(|| {
                LoadError::Invalid(format!("{arch}.pooling_type {code} is unknown"))
            })?,
        };
        let token_embd = file
            .header
            .tensor_info("token_embd.weight")
            .ok_or_else(|| LoadError::MissingTensor("token_embd.weight".into()))?
            .clone();
        let config = Config {
            n_layer,
            n_embd,
            n_ff: l.usize("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            n_ctx: l.usize("context_length")?,
            n_vocab: token_embd.shape[1],
            eps: l.f32_or("attention.layer_norm_rms_epsilon", 1e-6),
            freq_base: l.f32_or("rope.freq_base", 1_000_000.0),
            // llama.cpp's key, else the one Ollama's converter writes.
            freq_base_swa: l.f32_or(
                "rope.freq_base_swa",
                l.f32_or("rope.local.freq_base", 10_000.0),
            ),
            swa_radius: window / 2,
            pooling,
        };
        let (d, ff, hd) = (n_embd, config.n_ff, head_dim);
        let width = |a: usize, what: &str| {
            a.checked_mul(hd)
                .ok_or_else(|| LoadError::Invalid(format!("{what} overflows")))
        };
        let (qd, kvd) = (width(n_head, "query width")?, width(n_head_kv, "KV width")?);
        l.tensor("token_embd.weight", &[d, config.n_vocab])?;

        let mut layers = Vec::with_capacity(n_layer.min(1024));
        for (i, &local) in local.iter().enumerate() {
            let t =
                |name: &str, shape: &[usize]| l.tensor(&format!("blk.{i}.{name}.weight"), shape);
            let w = |name: &str, len: usize| l.vector(&format!("blk.{i}.{name}.weight"), len);
            layers.push(Layer {
                local,
                attn_norm: w("attn_norm", d)?,
                q: t("attn_q", &[d, qd])?,
                k: t("attn_k", &[d, kvd])?,
                v: t("attn_v", &[d, kvd])?,
                q_norm: w("attn_q_norm", hd)?,
                k_norm: w("attn_k_norm", hd)?,
                o: t("attn_output", &[qd, d])?,
                post_attn_norm: w("post_attention_norm", d)?,
                ffn_norm: w("ffn_norm", d)?,
                gate: t("ffn_gate", &[d, ff])?,
                up: t("ffn_up", &[d, ff])?,
                down: t("ffn_down", &[ff, d])?,
                post_ffn_norm: w("post_ffw_norm", d)?,
            });
        }
        Ok(Gemma {
            output_norm: l.vector("output_norm.weight", d)?,
            dense: dense_projections(&l, d)?,
            config,
            file,
            token_embd,
            layers,
            state: Mutex::default(),
        })
    }

    fn rope(&self, freq_base: f32) -> Rope<'static> {
        Rope {
            layout: RopeLayout::NeoX,
            head_dim: self.config.head_dim,
            n_rot: self.config.head_dim,
            freq_base,
            freq_scale: 1.0,
            freq_factors: None,
        }
    }
}

/// Which layers are local: `attention.sliding_window_pattern` (one bool per layer, true =
/// sliding window) when the file has it, else Gemma-3's five local layers to one global.
fn swa_layers(l: &Loader, n_layer: usize) -> Result<Vec<bool>, LoadError> {
    let key = format!("{}.attention.sliding_window_pattern", l.arch);
    match l.file.header.get(&key) {
        None => Ok((0..n_layer)
            .map(|i| i % DEFAULT_SWA_PERIOD < DEFAULT_SWA_PERIOD - 1)
            .collect()),
        Some(v) => match v.as_array() {
            Some(a) if a.len() == n_layer => a
                .iter()
                .map(|b| b.as_bool())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| LoadError::Invalid(format!("{key} holds a non-bool"))),
            // A single number is a period, as in older files.
            None => match v.as_u64() {
                Some(p) if p > 0 => {
                    let p = p as usize;
                    Ok((0..n_layer).map(|i| i % p < p - 1).collect())
                }
                _ => Err(LoadError::Invalid(format!("{key} = {v} is not a pattern"))),
            },
            Some(a) => Err(LoadError::Invalid(format!(
                "{key} has {} entries for {n_layer} layers",
                a.len()
            ))),
        },
    }
}

/// The dense projections after pooling, under either naming: both or none. Each maps the
/// vector to the next one's width, and the last back to `n_embd` (the embedding's width).
fn dense_projections(l: &Loader, n_embd: usize) -> Result<Vec<TensorInfo>, LoadError> {
    let header = &l.file.header;
    let Some([first, second]) = DENSE_NAMES.iter().find(|names| {
        header
            .tensor_info(&format!("{}.weight", names[0]))
            .is_some()
    }) else {
        return Ok(Vec::new());
    };
    let first = format!("{first}.weight");
    let second = format!("{second}.weight");
    let inner = header.tensor_info(&first).map_or(0, |t| t.shape[1]);
    Ok(vec![
        l.tensor(&first, &[n_embd, inner])?,
        l.tensor(&second, &[inner, n_embd])?,
    ])
}

impl Architecture for Gemma {
    fn hidden_size(&self) -> usize {
        self.config.n_embd
    }

    fn context_length(&self) -> usize {
        self.config.n_ctx
    }

    fn vocab_size(&self) -> usize {
        self.config.n_vocab
    }

    fn pooling(&self) -> Pooling {
        self.config.pooling
    }

    fn forward(&self, be: &dyn Backend, batch: &Batch) -> Vec<f32> {
        let c = &self.config;
        let (d, n, hd) = (c.n_embd, batch.tokens.len(), c.head_dim);
        let (qd, kvd) = (c.n_head * hd, c.n_head_kv * hd);
        let file = &*self.file;

        // Token embeddings, scaled by √n_embd (Gemma's embedding is shared with its output
        // head, so the input side carries the scale).
        let mut x = vec![0.0f32; n * d];
        let tok = view(file, &self.token_embd);
        let scale = (d as f32).sqrt();
        for (row, &t) in x.chunks_exact_mut(d).zip(&batch.tokens) {
            tok.dequantize_row(t as usize, row);
            row.iter_mut().for_each(|v| *v *= scale);
        }
        let positions = batch.positions();
        let (rope_global, rope_local) = (self.rope(c.freq_base), self.rope(c.freq_base_swa));
        let shape = AttnShape {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: hd,
        };

        let mut own = DecoderState::default();
        let mut shared = self.state.try_lock().ok();
        let st = shared.as_deref_mut().unwrap_or(&mut own);
        st.fit(
            n,
            Widths {
                n_embd: d,
                q: qd,
                kv: kvd,
                n_ff: c.n_ff,
            },
        );
        let DecoderState {
            h,
            q,
            k,
            v,
            attn,
            proj,
            gate,
            up,
        } = st;
        for l in &self.layers {
            let (rope, mask) = if l.local {
                let radius = c.swa_radius;
                (&rope_local, Mask::Window { radius })
            } else {
                (&rope_global, Mask::Full)
            };
            // Attention: norm, q/k/v, per-head q/k norms, RoPE, bidirectional GQA, norm, residual.
            h.copy_from_slice(&x);
            be.rms_norm(h, &l.attn_norm, c.eps);
            be.linears(
                h,
                n,
                &mut [
                    LinearOut::new(view(file, &l.q), None, q),
                    LinearOut::new(view(file, &l.k), None, k),
                    LinearOut::new(view(file, &l.v), None, v),
                ],
            );
            be.rms_norm(q, &l.q_norm, c.eps);
            be.rms_norm(k, &l.k_norm, c.eps);
            be.rope(rope, q, qd, &positions);
            be.rope(rope, k, kvd, &positions);
            // The kernel scales scores by 1/√head_dim, which is llama.cpp's scale for this
            // architecture (Gemma-3's query_pre_attn_scalar equals the head size).
            be.attention(q, k, v, &batch.seqs, shape, mask, attn);
            be.linear(attn, n, &view(file, &l.o), None, proj);
            be.rms_norm(proj, &l.post_attn_norm, c.eps);
            quiver_kernels::ops::add(&mut x, proj);

            // Feed-forward: norm, GeGLU (tanh GELU), norm, residual.
            h.copy_from_slice(&x);
            be.rms_norm(h, &l.ffn_norm, c.eps);
            be.linears(
                h,
                n,
                &mut [
                    LinearOut::new(view(file, &l.gate), None, gate),
                    LinearOut::new(view(file, &l.up), None, up),
                ],
            );
            be.gelu_tanh_mul(gate, up);
            be.linear(gate, n, &view(file, &l.down), None, proj);
            be.rms_norm(proj, &l.post_ffn_norm, c.eps);
            quiver_kernels::ops::add(&mut x, proj);
        }
        be.rms_norm(&mut x, &self.output_norm, c.eps);
        x
    }

    fn project(&self, be: &dyn Backend, pooled: &mut [Vec<f32>]) {
        if self.dense.is_empty() || pooled.is_empty() {
            return;
        }
        let file = &*self.file;
        let mut x: Vec<f32> = pooled.concat();
        let m = pooled.len();
        for w in &self.dense {
            let mut y = vec![0.0f32; m * w.shape[1]];
            be.linear(&x, m, &view(file, w), None, &mut y);
            x = y;
        }
        for (p, row) in pooled.iter_mut().zip(x.chunks_exact(self.config.n_embd)) {
            p.copy_from_slice(row);
        }
    }
}
