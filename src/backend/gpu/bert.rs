//! A whole BERT forward pass on the GPU: every weight uploaded at load, activations kept in GPU
//! buffers, all layers (and pooling) recorded into one command buffer, one read-back at the end.
//! The embedding lookup (a gather of a few rows) stays on the CPU.

use super::context::{Gpu, GpuError};
use super::kernels::{self, PoolMode};
use super::weights::{upload_weight, GpuWeight};
use crate::arch::bert::{Bert, Config};
use crate::arch::Batch;
use crate::backend::{AttnShape, WholeForward, WholeForwardError};
use crate::embed::Pooling;
use crate::gguf::GgufFile;
use crate::tensor::TensorView;
use std::sync::Arc;

struct Linear {
    w: GpuWeight,
    b: wgpu::Buffer,
}

struct Norm {
    w: wgpu::Buffer,
    b: wgpu::Buffer,
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

pub struct GpuBert {
    gpu: Arc<Gpu>,
    file: Arc<GgufFile>,
    pub config: Config,
    token_type0: Vec<f32>,
    embd_norm: Norm,
    layers: Vec<Layer>,
    vram: u64,
}

fn tensor<'a>(file: &'a GgufFile, name: &str) -> Result<TensorView<'a>, GpuError> {
    file.tensor(name)
        .ok_or_else(|| GpuError::Unsupported(format!("model tensor {name} is missing")))
}

fn vector(gpu: &Gpu, file: &GgufFile, name: &str) -> Result<wgpu::Buffer, GpuError> {
    gpu.upload_f32(name, &tensor(file, name)?.to_f32())
}

impl GpuBert {
    /// Validates the model as the CPU path does (`Bert::load`), then uploads every weight.
    pub fn load(gpu: Arc<Gpu>, file: Arc<GgufFile>) -> Result<GpuBert, GpuError> {
        let config = Bert::load(file.clone())
            .map_err(|e| GpuError::Unsupported(e.to_string()))?
            .config;
        let f = &*file;
        let mut vram = 0;
        let mut linear = |name: String| -> Result<Linear, GpuError> {
            let w = upload_weight(&gpu, &name, &tensor(f, &format!("{name}.weight"))?)?;
            let b = vector(&gpu, f, &format!("{name}.bias"))?;
            vram += w.bytes + b.size();
            Ok(Linear { w, b })
        };
        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let blk = |n: &str| format!("blk.{i}.{n}");
            layers.push(Layer {
                q: linear(blk("attn_q"))?,
                k: linear(blk("attn_k"))?,
                v: linear(blk("attn_v"))?,
                o: linear(blk("attn_output"))?,
                attn_norm: Norm {
                    w: vector(&gpu, f, &blk("attn_output_norm.weight"))?,
                    b: vector(&gpu, f, &blk("attn_output_norm.bias"))?,
                },
                up: linear(blk("ffn_up"))?,
                down: linear(blk("ffn_down"))?,
                out_norm: Norm {
                    w: vector(&gpu, f, &blk("layer_output_norm.weight"))?,
                    b: vector(&gpu, f, &blk("layer_output_norm.bias"))?,
                },
            });
        }
        let embd_norm = Norm {
            w: vector(&gpu, f, "token_embd_norm.weight")?,
            b: vector(&gpu, f, "token_embd_norm.bias")?,
        };
        let mut token_type0 = vec![0.0; config.n_embd];
        tensor(f, "token_types.weight")?.dequantize_row(0, &mut token_type0);
        gpu.check()?;
        Ok(GpuBert {
            gpu,
            file,
            config,
            token_type0,
            embd_norm,
            layers,
            vram,
        })
    }

    /// Bytes of weights this model holds on the GPU.
    pub fn vram_bytes(&self) -> u64 {
        self.vram
    }

    /// Word + position + type-0 embeddings of every token (on the CPU: a gather).
    fn embeddings(&self, batch: &Batch) -> Result<Vec<f32>, GpuError> {
        let c = &self.config;
        let d = c.n_embd;
        let (tok, pos) = (
            tensor(&self.file, "token_embd.weight")?,
            tensor(&self.file, "position_embd.weight")?,
        );
        let mut x = vec![0.0f32; batch.tokens.len() * d];
        let mut row = vec![0.0f32; d];
        for seq in &batch.seqs {
            if seq.len() > c.n_ctx {
                return Err(GpuError::Unsupported(format!(
                    "sequence of {} tokens exceeds the context of {}",
                    seq.len(),
                    c.n_ctx
                )));
            }
            for (p, t) in seq.clone().enumerate() {
                let id = batch.tokens[t] as usize;
                if id >= c.n_vocab {
                    return Err(GpuError::Unsupported(format!(
                        "token id {id} is outside the vocabulary"
                    )));
                }
                let xr = &mut x[t * d..(t + 1) * d];
                tok.dequantize_row(id, xr);
                pos.dequantize_row(p, &mut row);
                for ((x, &p), &ty) in xr.iter_mut().zip(&row).zip(&self.token_type0) {
                    *x += p + ty;
                }
            }
        }
        Ok(x)
    }

    /// Records the encoder over `batch` into `enc`; returns the hidden-state buffer (n × d)
    /// and the sequence-offsets buffer.
    fn record(
        &self,
        enc: &mut wgpu::CommandEncoder,
        batch: &Batch,
    ) -> Result<(wgpu::Buffer, wgpu::Buffer), GpuError> {
        let g = &*self.gpu;
        let c = &self.config;
        let (n, d) = (batch.tokens.len(), c.n_embd);
        let offsets = kernels::seq_offsets(&batch.seqs, n)?;
        let offsets = g.upload("offsets", bytemuck::cast_slice(&offsets))?;
        let x = g.upload_f32("hidden", &self.embeddings(batch)?)?;
        let act = |what: &str, len: usize| {
            g.storage(what, (len * 4) as u64, wgpu::BufferUsages::COPY_SRC)
        };
        let (q, k, v) = (act("q", n * d)?, act("k", n * d)?, act("v", n * d)?);
        let (attn, proj, ff) = (
            act("attn", n * d)?,
            act("proj", n * d)?,
            act("ff", n * c.n_ff)?,
        );
        let shape = AttnShape {
            n_head: c.n_head,
            n_head_kv: c.n_head,
            head_dim: d / c.n_head,
        };

        kernels::layer_norm(
            g,
            enc,
            &x,
            None,
            &self.embd_norm.w,
            &self.embd_norm.b,
            n,
            d,
            c.eps,
        )?;
        for l in &self.layers {
            kernels::matmul(g, enc, &x, n, &l.q.w, Some(&l.q.b), &q)?;
            kernels::matmul(g, enc, &x, n, &l.k.w, Some(&l.k.b), &k)?;
            kernels::matmul(g, enc, &x, n, &l.v.w, Some(&l.v.b), &v)?;
            kernels::attention(
                g,
                enc,
                &q,
                &k,
                &v,
                &offsets,
                n,
                batch.seqs.len(),
                shape,
                false,
                &attn,
            )?;
            kernels::matmul(g, enc, &attn, n, &l.o.w, Some(&l.o.b), &proj)?;
            kernels::layer_norm(
                g,
                enc,
                &x,
                Some(&proj),
                &l.attn_norm.w,
                &l.attn_norm.b,
                n,
                d,
                c.eps,
            )?;
            kernels::matmul(g, enc, &x, n, &l.up.w, Some(&l.up.b), &ff)?;
            kernels::gelu(g, enc, &ff, n * c.n_ff)?;
            kernels::matmul(g, enc, &ff, n, &l.down.w, Some(&l.down.b), &proj)?;
            kernels::layer_norm(
                g,
                enc,
                &x,
                Some(&proj),
                &l.out_norm.w,
                &l.out_norm.b,
                n,
                d,
                c.eps,
            )?;
        }
        Ok((x, offsets))
    }

    /// Hidden states of every token (`tokens × n_embd`), as `Architecture::forward` returns.
    pub fn forward(&self, batch: &Batch) -> Result<Vec<f32>, GpuError> {
        if batch.tokens.is_empty() {
            return Ok(Vec::new());
        }
        let mut enc = self.gpu.encoder();
        let (x, _) = self.record(&mut enc, batch)?;
        let mut out = vec![0.0; batch.tokens.len() * self.config.n_embd];
        self.gpu.finish_and_read(enc, &x, &mut out)?;
        Ok(out)
    }

    /// One pooled vector per sequence (L2-normalised if `normalize`), pooling on the GPU too.
    pub fn embed(
        &self,
        batch: &Batch,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, GpuError> {
        let d = self.config.n_embd;
        if batch.tokens.is_empty() {
            return Ok(vec![vec![0.0; d]; batch.seqs.len()]);
        }
        let mode = match pooling {
            Pooling::Mean => PoolMode::Mean,
            Pooling::Cls => PoolMode::Cls,
            Pooling::Last | Pooling::None => PoolMode::Last,
        };
        let g = &*self.gpu;
        let mut enc = g.encoder();
        let (x, offsets) = self.record(&mut enc, batch)?;
        let ns = batch.seqs.len();
        let pooled = g.storage("pooled", (ns * d * 4) as u64, wgpu::BufferUsages::COPY_SRC)?;
        kernels::pool(g, &mut enc, &x, &offsets, ns, d, mode, &pooled)?;
        if normalize {
            kernels::l2_normalize(g, &mut enc, &pooled, ns, d)?;
        }
        let mut flat = vec![0.0; ns * d];
        g.finish_and_read(enc, &pooled, &mut flat)?;
        Ok(flat.chunks_exact(d).map(<[f32]>::to_vec).collect())
    }
}

/// `Model`'s seam: pooled, unnormalised vectors (the model normalises), one submission a batch.
impl WholeForward for GpuBert {
    fn pooled(&self, batch: &Batch, pooling: Pooling) -> Result<Vec<Vec<f32>>, WholeForwardError> {
        self.embed(batch, pooling, false).map_err(|e| match e {
            GpuError::TooLarge { .. } | GpuError::Unsupported(_) => {
                WholeForwardError::Batch(e.to_string())
            }
            GpuError::Device(_) | GpuError::NoAdapter(_) => {
                WholeForwardError::Device(e.to_string())
            }
        })
    }

    fn vram_bytes(&self) -> u64 {
        self.vram
    }
}

/// The whole forward pass of `model` over `batch` on its GPU: hidden states, `tokens × n_embd`.
pub fn forward_bert(model: &GpuBert, batch: &Batch) -> Result<Vec<f32>, GpuError> {
    model.forward(batch)
}
