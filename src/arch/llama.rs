//! Llama-family decoders (llama, mistral, qwen2, qwen3) used as embedding models: pre-norm
//! blocks of RMSNorm → grouped-query causal attention with RoPE → RMSNorm → SwiGLU, then a final
//! RMSNorm. Read it top to bottom: config, weights, then the forward pass. What differs between
//! the architectures is a row of `llama_table::ARCHS`, not a branch here.

use super::decoder::{gqa_heads, DecoderState, Widths};
use super::llama_table::{self, ArchSpec, Presence};
use super::{view, Architecture, Batch, LoadError, Loader};
use crate::backend::{AttnShape, Backend, LinearOut, Mask};
use crate::embed::Pooling;
use crate::gguf::{GgufFile, TensorInfo};
use quiver_kernels::rope::Rope;
use std::sync::{Arc, Mutex};

/// Hyper-parameters, from the `<arch>.*` keys.
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
    /// Rotated values per head (`rope.dimension_count`, default the whole head).
    pub n_rot: usize,
    pub freq_base: f32,
    /// 1 / `rope.scaling.factor` for linear scaling, else 1.
    pub freq_scale: f32,
    pub pooling: Pooling,
}

/// One decoder block. Matrices stay in the file (any dtype); vectors are read into f32.
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub q: TensorInfo,
    pub k: TensorInfo,
    pub v: TensorInfo,
    pub q_b: Option<Vec<f32>>,
    pub k_b: Option<Vec<f32>>,
    pub v_b: Option<Vec<f32>>,
    /// Per-head RMSNorm weights of q and k (qwen3), `head_dim` long.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub o: TensorInfo,
    pub ffn_norm: Vec<f32>,
    pub gate: TensorInfo,
    pub up: TensorInfo,
    pub down: TensorInfo,
}

pub struct Llama {
    pub config: Config,
    pub spec: &'static ArchSpec,
    file: Arc<GgufFile>,
    token_embd: TensorInfo,
    rope_freqs: Option<Vec<f32>>,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// Reused by one forward pass at a time; a concurrent pass makes its own.
    state: Mutex<DecoderState>,
}

fn checked(a: usize, b: usize, what: &str) -> Result<usize, LoadError> {
    a.checked_mul(b)
        .ok_or_else(|| LoadError::Invalid(format!("{what} overflows")))
}

impl Llama {
    pub fn load(file: Arc<GgufFile>, arch: &str) -> Result<Llama, LoadError> {
        let spec =
            llama_table::spec(arch).ok_or_else(|| LoadError::UnknownArchitecture(arch.into()))?;
        let names = &spec.names;
        let l = Loader {
            file: &file,
            arch: spec.name,
        };
        let n_embd = l.usize("embedding_length")?;
        let (n_head, n_head_kv) = gqa_heads(&l)?;
        let head_dim = match l.usize_or("attention.key_length", 0) {
            0 if n_embd % n_head == 0 => n_embd / n_head,
            0 => {
                return Err(LoadError::Invalid(format!(
                    "{n_head} heads do not divide width {n_embd}"
                )))
            }
            k => k,
        };
        if l.usize_or("attention.value_length", head_dim) != head_dim {
            return Err(LoadError::Invalid(
                "attention.value_length differs from key_length".into(),
            ));
        }
        let n_rot = l.usize_or("rope.dimension_count", head_dim);
        if !n_rot.is_multiple_of(2) || n_rot > head_dim {
            return Err(LoadError::Invalid(format!(
                "rope.dimension_count {n_rot} does not fit head size {head_dim}"
            )));
        }
        let freq_scale = rope_freq_scale(&l)?;
        let embd_name = format!("{}.weight", names.token_embd);
        let token_embd = file
            .header
            .tensor_info(&embd_name)
            .ok_or_else(|| LoadError::MissingTensor(embd_name.clone()))?
            .clone();
        let pooling = match file.header.get_u64(&format!("{}.pooling_type", spec.name)) {
            // Decoders without a pooling type are embedded with their last token, as Ollama does.
            None => Pooling::Last,
            Some(code) => Pooling::from_gguf(code).ok_or_else(|| {
                LoadError::Invalid(format!("{}.pooling_type {code} is unknown", spec.name))
            })?,
        };
        let config = Config {
            n_layer: l.usize("block_count")?,
            n_embd,
            n_ff: l.usize("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            n_ctx: l.usize("context_length")?,
            n_vocab: token_embd.shape[1],
            eps: l.f32_or("attention.layer_norm_rms_epsilon", spec.default_rms_eps),
            n_rot,
            freq_base: l.f32_or("rope.freq_base", spec.default_freq_base),
            freq_scale,
            pooling,
        };
        let (d, ff, hd) = (config.n_embd, config.n_ff, config.head_dim);
        let (qd, kvd) = (
            checked(n_head, hd, "head_count × head size")?,
            checked(n_head_kv, hd, "KV width")?,
        );
        l.tensor(&embd_name, &[d, config.n_vocab])?;
        let rope_freqs = l.optional_vector(&format!("{}.weight", names.rope_freqs), n_rot / 2)?;

        // A tensor family the row marks Required must be there; Optional ones are read if present.
        let pick = |p: Presence, name: String, len: usize| -> Result<Option<Vec<f32>>, LoadError> {
            match p {
                Presence::Absent => Ok(None),
                Presence::Optional => l.optional_vector(&name, len),
                Presence::Required => l.vector(&name, len).map(Some),
            }
        };
        let mut layers = Vec::with_capacity(config.n_layer.min(1024));
        for i in 0..config.n_layer {
            let t =
                |name: &str, shape: &[usize]| l.tensor(&format!("blk.{i}.{name}.weight"), shape);
            let w = |name: &str, len: usize| l.vector(&format!("blk.{i}.{name}.weight"), len);
            let bias =
                |name: &str, len: usize| pick(spec.qkv_bias, format!("blk.{i}.{name}.bias"), len);
            let norm = |name: &str| pick(spec.qk_norm, format!("blk.{i}.{name}.weight"), hd);
            layers.push(Layer {
                attn_norm: w(names.attn_norm, d)?,
                q: t(names.attn_q, &[d, qd])?,
                k: t(names.attn_k, &[d, kvd])?,
                v: t(names.attn_v, &[d, kvd])?,
                q_b: bias(names.attn_q, qd)?,
                k_b: bias(names.attn_k, kvd)?,
                v_b: bias(names.attn_v, kvd)?,
                q_norm: norm(names.attn_q_norm)?,
                k_norm: norm(names.attn_k_norm)?,
                o: t(names.attn_output, &[qd, d])?,
                ffn_norm: w(names.ffn_norm, d)?,
                gate: t(names.ffn_gate, &[d, ff])?,
                up: t(names.ffn_up, &[d, ff])?,
                down: t(names.ffn_down, &[ff, d])?,
            });
        }
        Ok(Llama {
            output_norm: l.vector(&format!("{}.weight", names.output_norm), d)?,
            config,
            spec,
            file,
            token_embd,
            rope_freqs,
            layers,
            state: Mutex::default(),
        })
    }
}

/// `rope.scaling.type` = linear (or the older `rope.scale_linear`) → 1 / factor. Other kinds
/// (yarn, longrope) change the graph and are refused rather than run wrongly.
fn rope_freq_scale(l: &Loader) -> Result<f32, LoadError> {
    let key = |k: &str| format!("{}.{k}", l.arch);
    let factor = match l.file.header.get_str(&key("rope.scaling.type")) {
        None | Some("none") => l.f32_or("rope.scale_linear", 1.0),
        Some("linear") => l.f32_or("rope.scaling.factor", 1.0),
        Some(other) => {
            return Err(LoadError::Invalid(format!(
                "rope scaling {other:?} is not supported"
            )))
        }
    };
    if !(factor.is_finite() && factor > 0.0) {
        return Err(LoadError::Invalid(format!(
            "rope scaling factor {factor} is not positive"
        )));
    }
    Ok(1.0 / factor)
}

impl Architecture for Llama {
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

        // Token embeddings: only the rows this batch uses are dequantised.
        let mut x = vec![0.0f32; n * d];
        let tok = view(file, &self.token_embd);
        for (row, &t) in x.chunks_exact_mut(d).zip(&batch.tokens) {
            tok.dequantize_row(t as usize, row);
        }
        let positions = batch.positions();
        let rope = Rope {
            layout: self.spec.rope_layout,
            head_dim: hd,
            n_rot: c.n_rot,
            freq_base: c.freq_base,
            freq_scale: c.freq_scale,
            freq_factors: self.rope_freqs.as_deref(),
        };

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
            // Attention block: pre-norm, q/k/v, (qwen3: per-head norm), RoPE, causal GQA, residual.
            h.copy_from_slice(&x);
            be.rms_norm(h, &l.attn_norm, c.eps);
            be.linears(
                h,
                n,
                &mut [
                    LinearOut::new(view(file, &l.q), l.q_b.as_deref(), q),
                    LinearOut::new(view(file, &l.k), l.k_b.as_deref(), k),
                    LinearOut::new(view(file, &l.v), l.v_b.as_deref(), v),
                ],
            );
            if let Some(w) = &l.q_norm {
                be.rms_norm(q, w, c.eps);
            }
            if let Some(w) = &l.k_norm {
                be.rms_norm(k, w, c.eps);
            }
            be.rope(&rope, q, qd, &positions);
            be.rope(&rope, k, kvd, &positions);
            be.attention(q, k, v, &batch.seqs, shape, Mask::Causal, attn);
            be.linear(attn, n, &view(file, &l.o), None, proj);
            quiver_kernels::ops::add(&mut x, proj);

            // Feed-forward block: pre-norm, SwiGLU, residual.
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
            be.silu_mul(gate, up);
            be.linear(gate, n, &view(file, &l.down), None, proj);
            quiver_kernels::ops::add(&mut x, proj);
        }
        be.rms_norm(&mut x, &self.output_norm, c.eps);
        x
    }
}
