//! The BERT family of encoders: `bert` (all-MiniLM, bge, e5, XLM-R models), `nomic-bert`,
//! `nomic-bert-moe` and `jina-bert-v2`. Post-norm layers of self-attention over the whole
//! sequence and a feed-forward block. What differs between them (positions, fused QKV, biases,
//! FFN kind, experts) is a row of `bert_table::ARCHS` plus the tensors the file holds. Read it
//! top to bottom: config, weights, then the forward pass.

use super::bert_table::{self, ArchSpec, Ffn, Positions, Qkv};
use super::llama_table::Presence;
use super::{view, Architecture, Batch, LoadError, Loader};
use crate::backend::{AttnShape, Backend, LinearOut, Mask};
use crate::embed::Pooling;
use crate::gguf::{GgufFile, TensorInfo};
use crate::tensor::TensorView;
use quiver_kernels::rope::{Rope, RopeLayout};
use std::sync::{Arc, Mutex};

/// Hyper-parameters, from the `<arch>.*` keys.
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
    /// RoPE: rotated values per head and base (nomic-bert).
    pub n_rot: usize,
    pub freq_base: f32,
    /// ALiBi's max bias (jina-bert-v2).
    pub max_alibi_bias: f32,
}

/// A LayerNorm's weight and bias.
pub struct Norm {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

/// A matrix in the file (any dtype) and its optional bias, read into f32.
pub struct Linear {
    pub w: TensorInfo,
    pub b: Option<Vec<f32>>,
}

/// The attention's input projections. (One per layer, made once at load: the size difference
/// between the variants costs nothing.)
#[allow(clippy::large_enum_variant)]
pub enum QkvWeights {
    Separate {
        q: Linear,
        k: Linear,
        v: Linear,
    },
    /// One product of 3 × width outputs per token: q, k, v side by side.
    Fused(Linear),
}

/// The mixture of experts of one layer: a router and `n_expert` GELU FFNs without biases.
pub struct Experts {
    /// `n_expert` rows of width values.
    pub router: TensorInfo,
    /// 3-D: expert e's matrix is the e-th slab of `n_ff` (up) or width (down) rows.
    pub up: TensorInfo,
    pub down: TensorInfo,
    pub n_expert: usize,
    pub n_used: usize,
}

/// A layer's feed-forward block.
pub enum FeedForward {
    Gelu {
        up: Linear,
        down: Linear,
    },
    SwiGlu {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
    /// `up` of 2 × n_ff rows: gelu(first half) × second half.
    GeGluFused {
        up: Linear,
        down: Linear,
    },
    GeGluGated {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
    Moe(Experts),
}

/// One encoder layer. Matrices stay in the file; vectors are read into f32.
pub struct Layer {
    pub qkv: QkvWeights,
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
    pub o: Linear,
    pub attn_norm: Norm,
    pub attn_norm_2: Option<Norm>,
    pub ffn: FeedForward,
    pub out_norm: Norm,
}

/// Activation buffers of one forward pass, kept between passes so that a batch reuses the
/// memory of the one before (fresh pages cost a fault and a zeroing each).
#[derive(Default)]
struct RunState {
    /// The layer's input, for a second attention norm.
    input: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// A fused GEGLU's up product, 2 × n_ff wide.
    up2: Vec<f32>,
}

impl RunState {
    /// Sizes every buffer for `n` tokens (contents are overwritten before they are read).
    fn fit(&mut self, n: usize, c: &Config, fused_qkv: bool, fused_up: bool) {
        for (b, width) in [
            (&mut self.q, c.n_embd),
            (&mut self.k, c.n_embd),
            (&mut self.v, c.n_embd),
            (&mut self.attn, c.n_embd),
            (&mut self.proj, c.n_embd),
            (&mut self.gate, c.n_ff),
            (&mut self.up, c.n_ff),
        ] {
            b.resize(n * width, 0.0);
        }
        if fused_qkv {
            self.qkv.resize(n * 3 * c.n_embd, 0.0);
        }
        if fused_up {
            self.up2.resize(n * 2 * c.n_ff, 0.0);
        }
    }
}

pub struct Bert {
    pub config: Config,
    pub spec: &'static ArchSpec,
    file: Arc<GgufFile>,
    token_embd: TensorInfo,
    position_embd: Option<TensorInfo>,
    /// Row 0 of `token_types.weight`: every token is of type 0.
    token_type0: Option<Vec<f32>>,
    embd_norm: Norm,
    layers: Vec<Layer>,
    /// Reused by one forward pass at a time; a concurrent pass makes its own.
    state: Mutex<RunState>,
}

impl Bert {
    /// Loads the encoder that `general.architecture` names.
    pub fn load(file: Arc<GgufFile>) -> Result<Bert, LoadError> {
        let arch = file
            .header
            .architecture()
            .ok_or(LoadError::MissingKey("general.architecture".into()))?;
        let spec =
            bert_table::spec(arch).ok_or_else(|| LoadError::UnknownArchitecture(arch.into()))?;
        let l = Loader {
            file: &file,
            arch: spec.name,
        };
        let n_embd = l.usize("embedding_length")?;
        let n_head = l.usize("attention.head_count")?;
        if n_head == 0 || n_embd % n_head != 0 {
            return Err(LoadError::Invalid(format!(
                "{n_head} heads do not divide width {n_embd}"
            )));
        }
        let head_dim = n_embd / n_head;
        let n_rot = l.usize_or("rope.dimension_count", head_dim);
        if spec.positions == Positions::RopeNeox && (!n_rot.is_multiple_of(2) || n_rot > head_dim) {
            return Err(LoadError::Invalid(format!(
                "rope.dimension_count {n_rot} does not fit head size {head_dim}"
            )));
        }
        let token_embd = file
            .header
            .tensor_info("token_embd.weight")
            .ok_or(LoadError::MissingTensor("token_embd.weight".into()))?
            .clone();
        let pooling = match file.header.get_u64(&format!("{}.pooling_type", spec.name)) {
            None => spec.default_pooling,
            Some(code) => Pooling::from_gguf(code).unwrap_or(spec.default_pooling),
        };
        let config = Config {
            n_layer: l.usize("block_count")?,
            n_embd,
            n_ff: l.usize("feed_forward_length")?,
            n_head,
            n_ctx: l.usize("context_length")?,
            n_vocab: token_embd.shape[1],
            eps: l.f32_or("attention.layer_norm_epsilon", spec.default_eps),
            pooling,
            n_rot,
            freq_base: l.f32_or("rope.freq_base", spec.default_freq_base),
            max_alibi_bias: l.f32_or("attention.max_alibi_bias", spec.default_max_alibi_bias),
        };
        let (d, ff) = (config.n_embd, config.n_ff);
        l.tensor("token_embd.weight", &[d, config.n_vocab])?;
        let position_embd = match spec.positions {
            Positions::Learned => Some(l.tensor("position_embd.weight", &[d, config.n_ctx])?),
            Positions::RopeNeox | Positions::Alibi => None,
        };
        // Any number of type rows (1 in XLM-R files, 2 in BERT's); only row 0 is used.
        let types = file.header.tensor_info("token_types.weight");
        let token_type0 = match (spec.token_types, types) {
            (Presence::Absent, _) | (Presence::Optional, None) => None,
            (_, None) => return Err(LoadError::MissingTensor("token_types.weight".into())),
            (_, Some(t)) => {
                let t = l.tensor("token_types.weight", &[d, t.shape[1].max(1)])?;
                let mut row0 = vec![0.0; d];
                view(&file, &t).dequantize_row(0, &mut row0);
                Some(row0)
            }
        };
        let experts = moe_params(&l, spec)?;

        // A tensor family the row marks Required must be there; Optional ones are read if present.
        let bias = |p: Presence, name: String, len: usize| -> Result<Option<Vec<f32>>, LoadError> {
            match p {
                Presence::Absent => Ok(None),
                Presence::Optional => l.optional_vector(&name, len),
                Presence::Required => l.vector(&name, len).map(Some),
            }
        };
        let norm = |name: String| -> Result<Norm, LoadError> {
            Ok(Norm {
                w: l.vector(&format!("{name}.weight"), d)?,
                b: l.vector(&format!("{name}.bias"), d)?,
            })
        };
        let optional_norm = |p: Presence, name: String| -> Result<Option<Norm>, LoadError> {
            let present = file.header.tensor_info(&format!("{name}.weight")).is_some();
            match p {
                Presence::Required => norm(name).map(Some),
                Presence::Optional if present => norm(name).map(Some),
                _ => Ok(None),
            }
        };
        let mut layers = Vec::with_capacity(config.n_layer.min(1024));
        for i in 0..config.n_layer {
            let blk = |name: &str| format!("blk.{i}.{name}");
            let linear = |name: &str, rows: usize, cols: usize, b: Presence| {
                Ok::<_, LoadError>(Linear {
                    w: l.tensor(&blk(&format!("{name}.weight")), &[cols, rows])?,
                    b: bias(b, blk(&format!("{name}.bias")), rows)?,
                })
            };
            let qkv = match spec.qkv {
                Qkv::Separate => QkvWeights::Separate {
                    q: linear("attn_q", d, d, spec.attn_bias)?,
                    k: linear("attn_k", d, d, spec.attn_bias)?,
                    v: linear("attn_v", d, d, spec.attn_bias)?,
                },
                Qkv::Fused => QkvWeights::Fused(linear("attn_qkv", 3 * d, d, spec.attn_bias)?),
            };
            // llama.cpp's rule: with experts every 2 layers, layers 1, 3, … hold them.
            let is_moe = experts.is_some_and(|(every, ..)| i % every == 1);
            let ffn = match (spec.ffn, experts) {
                (_, Some((_, n_expert, n_used))) if is_moe => FeedForward::Moe(Experts {
                    router: l.tensor(&blk("ffn_gate_inp.weight"), &[d, n_expert])?,
                    up: l.tensor(&blk("ffn_up_exps.weight"), &[d, ff, n_expert])?,
                    down: l.tensor(&blk("ffn_down_exps.weight"), &[ff, d, n_expert])?,
                    n_expert,
                    n_used,
                }),
                (Ffn::Gelu, _) => FeedForward::Gelu {
                    up: linear("ffn_up", ff, d, spec.ffn_bias)?,
                    down: linear("ffn_down", d, ff, spec.ffn_bias)?,
                },
                (Ffn::SwiGlu, _) => FeedForward::SwiGlu {
                    gate: linear("ffn_gate", ff, d, Presence::Absent)?,
                    up: linear("ffn_up", ff, d, spec.ffn_bias)?,
                    down: linear("ffn_down", d, ff, spec.ffn_bias)?,
                },
                // A separate gate, or an up of twice the width holding both halves.
                (Ffn::GeGlu, _) if file.header.tensor_info(&blk("ffn_gate.weight")).is_some() => {
                    FeedForward::GeGluGated {
                        gate: linear("ffn_gate", ff, d, Presence::Optional)?,
                        up: linear("ffn_up", ff, d, spec.ffn_bias)?,
                        down: linear("ffn_down", d, ff, spec.ffn_bias)?,
                    }
                }
                // An up of n_ff rows and no gate: a plain GELU FFN, as llama.cpp reads it.
                (Ffn::GeGlu, _) if l.tensor(&blk("ffn_up.weight"), &[d, ff]).is_ok() => {
                    FeedForward::Gelu {
                        up: linear("ffn_up", ff, d, spec.ffn_bias)?,
                        down: linear("ffn_down", d, ff, spec.ffn_bias)?,
                    }
                }
                (Ffn::GeGlu, _) => FeedForward::GeGluFused {
                    up: linear("ffn_up", 2 * ff, d, spec.ffn_bias)?,
                    down: linear("ffn_down", d, ff, spec.ffn_bias)?,
                },
            };
            layers.push(Layer {
                qkv,
                q_norm: optional_norm(spec.qk_norm, blk("attn_q_norm"))?,
                k_norm: optional_norm(spec.qk_norm, blk("attn_k_norm"))?,
                o: linear("attn_output", d, d, spec.attn_bias)?,
                attn_norm: norm(blk("attn_output_norm"))?,
                attn_norm_2: optional_norm(spec.attn_norm_2, blk("attn_norm_2"))?,
                ffn,
                out_norm: norm(blk("layer_output_norm"))?,
            });
        }
        Ok(Bert {
            embd_norm: norm("token_embd_norm".into())?,
            config,
            spec,
            token_embd,
            position_embd,
            token_type0,
            layers,
            file,
            state: Mutex::default(),
        })
    }
}

/// `(moe_every_n_layers, expert_count, expert_used_count)` where the row has experts and the
/// file puts them on some layer; checked so that routing can never index past the experts.
fn moe_params(l: &Loader, spec: &ArchSpec) -> Result<Option<(usize, usize, usize)>, LoadError> {
    let every = l.usize_or("moe_every_n_layers", 0);
    if !spec.moe || every == 0 {
        return Ok(None);
    }
    let (n_expert, n_used) = (l.usize("expert_count")?, l.usize("expert_used_count")?);
    if n_expert == 0 || n_used == 0 || n_used > n_expert {
        return Err(LoadError::Invalid(format!(
            "{n_used} experts used of {n_expert}: need 1 ≤ used ≤ count"
        )));
    }
    Ok(Some((every, n_expert, n_used)))
}

/// Matrix `e` of a 3-D tensor of `n_expert` stacked matrices.
fn expert<'a>(t: &TensorView<'a>, e: usize) -> TensorView<'a> {
    let rows = t.shape[1];
    let bytes = rows * t.row_bytes();
    TensorView {
        dtype: t.dtype,
        shape: [t.shape[0], rows, 1, 1],
        n_dims: 2,
        data: &t.data[e * bytes..(e + 1) * bytes],
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

        // Embeddings: word (+ learned position within its own sequence) (+ token type 0), then
        // LayerNorm. Positions restart at 0 in every sequence.
        let mut positions = vec![0usize; n];
        for seq in &batch.seqs {
            for (p, t) in seq.clone().enumerate() {
                positions[t] = p;
            }
        }
        let mut x = vec![0.0f32; n * d];
        let tok = view(file, &self.token_embd);
        let pos = self.position_embd.as_ref().map(|t| view(file, t));
        let mut row = vec![0.0f32; d];
        for (t, xr) in x.chunks_exact_mut(d).enumerate() {
            tok.dequantize_row(batch.tokens[t] as usize, xr);
            if let Some(pos) = &pos {
                pos.dequantize_row(positions[t], &mut row);
                quiver_kernels::ops::add(xr, &row);
            }
            if let Some(ty) = &self.token_type0 {
                quiver_kernels::ops::add(xr, ty);
            }
        }
        be.layer_norm(&mut x, &self.embd_norm.w, &self.embd_norm.b, c.eps);

        let shape = AttnShape {
            n_head: c.n_head,
            n_head_kv: c.n_head,
            head_dim: d / c.n_head,
        };
        let rope = Rope {
            layout: RopeLayout::NeoX,
            head_dim: d / c.n_head,
            n_rot: c.n_rot,
            freq_base: c.freq_base,
            freq_scale: 1.0,
            freq_factors: None,
        };
        let mask = match self.spec.positions {
            Positions::Alibi => Mask::Alibi {
                max_bias: c.max_alibi_bias,
            },
            Positions::Learned | Positions::RopeNeox => Mask::Full,
        };
        let fused_up = self
            .layers
            .iter()
            .any(|l| matches!(l.ffn, FeedForward::GeGluFused { .. }));
        let mut own = RunState::default();
        let mut shared = self.state.try_lock().ok();
        let st = shared.as_deref_mut().unwrap_or(&mut own);
        st.fit(n, c, self.spec.qkv == Qkv::Fused, fused_up);
        for l in &self.layers {
            // Self-attention: q, k, v (fused: one product, then split), optional LayerNorms of
            // q and k, RoPE, attention, output projection.
            if l.attn_norm_2.is_some() {
                st.input.clone_from(&x);
            }
            match &l.qkv {
                QkvWeights::Separate { q, k, v } => be.linears(
                    &x,
                    n,
                    &mut [
                        LinearOut::new(view(file, &q.w), q.b.as_deref(), &mut st.q),
                        LinearOut::new(view(file, &k.w), k.b.as_deref(), &mut st.k),
                        LinearOut::new(view(file, &v.w), v.b.as_deref(), &mut st.v),
                    ],
                ),
                QkvWeights::Fused(qkv) => {
                    let (w, b) = lin(file, qkv);
                    be.linear(&x, n, &w, b, &mut st.qkv);
                    split_qkv(&st.qkv, d, &mut st.q, &mut st.k, &mut st.v);
                }
            }
            if let Some(nq) = &l.q_norm {
                be.layer_norm(&mut st.q, &nq.w, &nq.b, c.eps);
            }
            if let Some(nk) = &l.k_norm {
                be.layer_norm(&mut st.k, &nk.w, &nk.b, c.eps);
            }
            if self.spec.positions == Positions::RopeNeox {
                be.rope(&rope, &mut st.q, d, &positions);
                be.rope(&rope, &mut st.k, d, &positions);
            }
            be.attention(&st.q, &st.k, &st.v, &batch.seqs, shape, mask, &mut st.attn);
            let (w, b) = lin(file, &l.o);
            be.linear(&st.attn, n, &w, b, &mut st.proj);

            // Residual + LayerNorm (post-norm); jina's optional second norm re-adds the input.
            be.add_layer_norm(&mut x, &st.proj, &l.attn_norm.w, &l.attn_norm.b, c.eps);
            if let Some(n2) = &l.attn_norm_2 {
                be.add_layer_norm(&mut x, &st.input, &n2.w, &n2.b, c.eps);
            }

            // Feed-forward, then residual + LayerNorm.
            match &l.ffn {
                FeedForward::Gelu { up, down } => {
                    let (w, b) = lin(file, up);
                    be.linear(&x, n, &w, b, &mut st.up);
                    be.gelu(&mut st.up);
                    let (w, b) = lin(file, down);
                    be.linear(&st.up, n, &w, b, &mut st.proj);
                }
                FeedForward::SwiGlu { gate, up, down }
                | FeedForward::GeGluGated { gate, up, down } => {
                    be.linears(
                        &x,
                        n,
                        &mut [
                            LinearOut::new(view(file, &gate.w), gate.b.as_deref(), &mut st.gate),
                            LinearOut::new(view(file, &up.w), up.b.as_deref(), &mut st.up),
                        ],
                    );
                    if matches!(l.ffn, FeedForward::SwiGlu { .. }) {
                        be.silu_mul(&mut st.gate, &st.up);
                    } else {
                        be.gelu_mul(&mut st.gate, &st.up);
                    }
                    let (w, b) = lin(file, down);
                    be.linear(&st.gate, n, &w, b, &mut st.proj);
                }
                FeedForward::GeGluFused { up, down } => {
                    let (w, b) = lin(file, up);
                    be.linear(&x, n, &w, b, &mut st.up2);
                    split_halves(&st.up2, c.n_ff, &mut st.gate, &mut st.up);
                    be.gelu_mul(&mut st.gate, &st.up);
                    let (w, b) = lin(file, down);
                    be.linear(&st.gate, n, &w, b, &mut st.proj);
                }
                FeedForward::Moe(e) => moe(be, file, e, &x, n, &mut st.proj),
            }
            be.add_layer_norm(&mut x, &st.proj, &l.out_norm.w, &l.out_norm.b, c.eps);
        }
        x
    }
}

/// A linear layer's matrix view and bias.
fn lin<'a>(file: &'a GgufFile, l: &'a Linear) -> (TensorView<'a>, Option<&'a [f32]>) {
    (view(file, &l.w), l.b.as_deref())
}

/// Splits rows of [q | k | v] (3 × `d` wide) into three buffers of `d`-wide rows.
fn split_qkv(qkv: &[f32], d: usize, q: &mut [f32], k: &mut [f32], v: &mut [f32]) {
    for (t, row) in qkv.chunks_exact(3 * d).enumerate() {
        q[t * d..(t + 1) * d].copy_from_slice(&row[..d]);
        k[t * d..(t + 1) * d].copy_from_slice(&row[d..2 * d]);
        v[t * d..(t + 1) * d].copy_from_slice(&row[2 * d..]);
    }
}

/// Splits every `2 × half`-wide row of `x` into its first half (into `a`) and second (`b`).
fn split_halves(x: &[f32], half: usize, a: &mut [f32], b: &mut [f32]) {
    let rows = x.chunks_exact(2 * half);
    for ((row, a), b) in rows
        .zip(a.chunks_exact_mut(half))
        .zip(b.chunks_exact_mut(half))
    {
        a.copy_from_slice(&row[..half]);
        b.copy_from_slice(&row[half..]);
    }
}

/// A mixture of GELU experts (nomic-bert-moe). Each token's router scores go through a softmax
/// over ALL experts; the `n_used` most probable experts run, each weighted by its probability
/// as it is (not renormalised over the chosen ones), as llama.cpp does. The tokens of one
/// expert are gathered into one matrix so that each expert is one product, then scattered back.
fn moe(be: &dyn Backend, file: &GgufFile, e: &Experts, x: &[f32], n: usize, out: &mut [f32]) {
    let (d, ff, ne) = (e.up.shape[0], e.up.shape[1], e.n_expert);
    let mut probs = vec![0.0f32; n * ne];
    be.linear(x, n, &view(file, &e.router), None, &mut probs);

    // Per expert, the tokens routed to it and their weights.
    let mut routed: Vec<Vec<(usize, f32)>> = vec![Vec::new(); ne];
    let mut order: Vec<usize> = Vec::with_capacity(ne);
    for (t, p) in probs.chunks_exact_mut(ne).enumerate() {
        quiver_kernels::ops::softmax(p);
        order.clear();
        order.extend(0..ne);
        // Highest probability first; ties keep the lower expert index.
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        for &ex in &order[..e.n_used] {
            routed[ex].push((t, p[ex]));
        }
    }

    out[..n * d].fill(0.0);
    let (up_all, down_all) = (view(file, &e.up), view(file, &e.down));
    let (mut xs, mut h, mut ys) = (Vec::new(), Vec::new(), Vec::new());
    for (ex, tokens) in routed.iter().enumerate() {
        if tokens.is_empty() {
            continue;
        }
        let m = tokens.len();
        xs.clear();
        for &(t, _) in tokens {
            xs.extend_from_slice(&x[t * d..(t + 1) * d]);
        }
        h.resize(m * ff, 0.0);
        ys.resize(m * d, 0.0);
        be.linear(&xs, m, &expert(&up_all, ex), None, &mut h);
        be.gelu(&mut h);
        be.linear(&h, m, &expert(&down_all, ex), None, &mut ys);
        for (&(t, w), y) in tokens.iter().zip(ys.chunks_exact(d)) {
            for (o, &v) in out[t * d..(t + 1) * d].iter_mut().zip(y) {
                *o += w * v;
            }
        }
    }
}
