//! BERT (all-MiniLM, bge, e5, …): an encoder with learned position embeddings, post-norm
//! layers and GELU. Read it top to bottom: config, weights, then the forward pass.

use super::{view, Architecture, Batch, LoadError, Loader};
use crate::backend::{AttnShape, Backend, LinearOut, Mask};
use crate::embed::Pooling;
use crate::gguf::{GgufFile, TensorInfo};
use std::sync::{Arc, Mutex};

/// Hyper-parameters, from the `bert.*` keys.
#[derive(Clone, Debug)]
pub struct Config {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub eps: f32,
    pub pooling: Pooling,
}

/// One encoder layer. Matrices stay in the file (any dtype); vectors are read into f32.
pub struct Layer {
    pub q: TensorInfo,
    pub q_b: Vec<f32>,
    pub k: TensorInfo,
    pub k_b: Vec<f32>,
    pub v: TensorInfo,
    pub v_b: Vec<f32>,
    pub o: TensorInfo,
    pub o_b: Vec<f32>,
    pub attn_norm_w: Vec<f32>,
    pub attn_norm_b: Vec<f32>,
    pub up: TensorInfo,
    pub up_b: Vec<f32>,
    pub down: TensorInfo,
    pub down_b: Vec<f32>,
    pub out_norm_w: Vec<f32>,
    pub out_norm_b: Vec<f32>,
}

/// Activation buffers of one forward pass, kept between passes so that a batch reuses the
/// memory of the one before (fresh pages cost a fault and a zeroing each).
#[derive(Default)]
struct RunState {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    ff: Vec<f32>,
}

impl RunState {
    /// Sizes every buffer for `n` tokens (contents are overwritten before they are read).
    fn fit(&mut self, n: usize, c: &Config) {
        for b in [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.attn,
            &mut self.proj,
        ] {
            b.resize(n * c.n_embd, 0.0);
        }
        self.ff.resize(n * c.n_ff, 0.0);
    }
}

pub struct Bert {
    pub config: Config,
    file: Arc<GgufFile>,
    token_embd: TensorInfo,
    position_embd: TensorInfo,
    /// Row 0 of `token_types.weight`: every token is of type 0.
    token_type0: Vec<f32>,
    embd_norm_w: Vec<f32>,
    embd_norm_b: Vec<f32>,
    layers: Vec<Layer>,
    /// Reused by one forward pass at a time; a concurrent pass makes its own.
    state: Mutex<RunState>,
}

impl Bert {
    pub fn load(file: Arc<GgufFile>) -> Result<Bert, LoadError> {
        let l = Loader {
            file: &file,
            arch: "bert",
        };
        let n_embd = l.usize("embedding_length")?;
        let n_head = l.usize("attention.head_count")?;
        if n_head == 0 || n_embd % n_head != 0 {
            return Err(LoadError::Invalid(format!(
                "{n_head} heads do not divide width {n_embd}"
            )));
        }
        let token_embd = file
            .header
            .tensor_info("token_embd.weight")
            .ok_or(LoadError::MissingTensor("token_embd.weight".into()))?
            .clone();
        let config = Config {
            n_layer: l.usize("block_count")?,
            n_embd,
            n_ff: l.usize("feed_forward_length")?,
            n_head,
            n_ctx: l.usize("context_length")?,
            n_vocab: token_embd.shape[1],
            eps: l.f32_or("attention.layer_norm_epsilon", 1e-12),
            pooling: Pooling::from_gguf(l.usize_or("pooling_type", 1) as u64)
                .unwrap_or(Pooling::Mean),
        };
        let (d, ff) = (config.n_embd, config.n_ff);
        l.tensor("token_embd.weight", &[d, config.n_vocab])?;
        let position_embd = l.tensor("position_embd.weight", &[d, config.n_ctx])?;
        let token_types = l
            .tensor("token_types.weight", &[d, 2])
            .or_else(|_| l.tensor("token_types.weight", &[d, 1]))?;
        let mut token_type0 = vec![0.0; d];
        view(&file, &token_types).dequantize_row(0, &mut token_type0);

        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let t =
                |name: &str, shape: &[usize]| l.tensor(&format!("blk.{i}.{name}.weight"), shape);
            let v = |name: &str, kind: &str, len: usize| {
                l.vector(&format!("blk.{i}.{name}.{kind}"), len)
            };
            layers.push(Layer {
                q: t("attn_q", &[d, d])?,
                q_b: v("attn_q", "bias", d)?,
                k: t("attn_k", &[d, d])?,
                k_b: v("attn_k", "bias", d)?,
                v: t("attn_v", &[d, d])?,
                v_b: v("attn_v", "bias", d)?,
                o: t("attn_output", &[d, d])?,
                o_b: v("attn_output", "bias", d)?,
                attn_norm_w: v("attn_output_norm", "weight", d)?,
                attn_norm_b: v("attn_output_norm", "bias", d)?,
                up: t("ffn_up", &[d, ff])?,
                up_b: v("ffn_up", "bias", ff)?,
                down: t("ffn_down", &[ff, d])?,
                down_b: v("ffn_down", "bias", d)?,
                out_norm_w: v("layer_output_norm", "weight", d)?,
                out_norm_b: v("layer_output_norm", "bias", d)?,
            });
        }
        Ok(Bert {
            embd_norm_w: l.vector("token_embd_norm.weight", d)?,
            embd_norm_b: l.vector("token_embd_norm.bias", d)?,
            config,
            token_embd,
            position_embd,
            token_type0,
            layers,
            file,
            state: Mutex::default(),
        })
    }
}

impl Architecture for Bert {
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
        let (d, n) = (c.n_embd, batch.tokens.len());
        let file = &*self.file;

        // Embeddings: word + position (within its own sequence) + token type 0, then LayerNorm.
        let mut x = vec![0.0f32; n * d];
        let (tok, pos) = (
            view(file, &self.token_embd),
            view(file, &self.position_embd),
        );
        let mut row = vec![0.0f32; d];
        for seq in &batch.seqs {
            for (p, t) in seq.clone().enumerate() {
                let xr = &mut x[t * d..(t + 1) * d];
                tok.dequantize_row(batch.tokens[t] as usize, xr);
                pos.dequantize_row(p, &mut row);
                for ((x, &p), &ty) in xr.iter_mut().zip(&row).zip(&self.token_type0) {
                    *x += p + ty;
                }
            }
        }
        be.layer_norm(&mut x, &self.embd_norm_w, &self.embd_norm_b, c.eps);

        let shape = AttnShape {
            n_head: c.n_head,
            n_head_kv: c.n_head,
            head_dim: d / c.n_head,
        };
        let mut own = RunState::default();
        let mut shared = self.state.try_lock().ok();
        let st = shared.as_deref_mut().unwrap_or(&mut own);
        st.fit(n, c);
        let RunState {
            q,
            k,
            v,
            attn,
            proj,
            ff,
        } = st;
        for l in &self.layers {
            // Self-attention, then residual + LayerNorm (post-norm).
            be.linears(
                &x,
                n,
                &mut [
                    LinearOut::new(view(file, &l.q), Some(&l.q_b), q),
                    LinearOut::new(view(file, &l.k), Some(&l.k_b), k),
                    LinearOut::new(view(file, &l.v), Some(&l.v_b), v),
                ],
            );
            be.attention(q, k, v, &batch.seqs, shape, Mask::Full, attn);
            be.linear(attn, n, &view(file, &l.o), Some(&l.o_b), proj);
            be.add_layer_norm(&mut x, proj, &l.attn_norm_w, &l.attn_norm_b, c.eps);

            // Feed-forward: up, GELU, down, then residual + LayerNorm.
            be.linear(&x, n, &view(file, &l.up), Some(&l.up_b), ff);
            be.gelu(ff);
            be.linear(ff, n, &view(file, &l.down), Some(&l.down_b), proj);
            be.add_layer_norm(&mut x, proj, &l.out_norm_w, &l.out_norm_b, c.eps);
        }
        x
    }
}
