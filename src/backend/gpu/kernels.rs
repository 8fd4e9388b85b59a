//! Recording one dispatch of each shader onto a command encoder. Buffers are the caller's; the
//! parameter block and bind group are made here. Shared by the per-op backend and the
//! whole-forward path.

use super::context::{Gpu, GpuError};
use super::pipelines::Pipe;
use crate::backend::AttnShape;

pub use super::matmul::matmul;
pub use super::rope::rope;

/// Marks parameter blocks as plain old data for upload.
macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: #[repr(C)] structs of u32/f32 fields only, no padding.
        unsafe impl bytemuck::Zeroable for $t {}
        unsafe impl bytemuck::Pod for $t {}
    )*};
}
pub(super) use pod;
pod!(NormParams, LenParams, AttnParams, PoolParams);

/// Most workgroups in one dispatch dimension (WebGPU's default limit).
pub(super) const MAX_GROUPS: u32 = 65535;

pub(super) fn dispatch(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    pipe: &Pipe,
    buffers: &[&wgpu::Buffer],
    groups: [u32; 3],
) {
    let bind = pipe.bind(&gpu.device, buffers);
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: None,
        timestamp_writes: None,
    });
    pass.set_pipeline(&pipe.pipeline);
    pass.set_bind_group(0, &bind, &[]);
    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
}

/// `count` workgroups folded into x·y (shaders recover the index as x + y·num_workgroups.x).
pub(super) fn fold(count: usize) -> Result<[u32; 3], GpuError> {
    let count =
        u32::try_from(count).map_err(|_| GpuError::Unsupported(format!("{count} workgroups")))?;
    let x = count.clamp(1, MAX_GROUPS);
    let y = count.div_ceil(x).max(1);
    if y > MAX_GROUPS {
        return Err(GpuError::Unsupported(format!(
            "{count} workgroups in one dispatch"
        )));
    }
    Ok([x, y, 1])
}

pub(crate) fn u32_of(what: &str, v: usize) -> Result<u32, GpuError> {
    u32::try_from(v)
        .map_err(|_| GpuError::Unsupported(format!("{what} = {v} does not fit 32 bits")))
}

#[repr(C)]
#[derive(Clone, Copy)]
struct NormParams {
    rows: u32,
    dim: u32,
    eps: f32,
    flag: u32,
}

/// x = LayerNorm(x (+ res)) row by row, in place.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    res: Option<&wgpu::Buffer>,
    w: &wgpu::Buffer,
    b: &wgpu::Buffer,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<(), GpuError> {
    if rows == 0 {
        return Ok(());
    }
    let p = NormParams {
        rows: u32_of("rows", rows)?,
        dim: u32_of("dim", dim)?,
        eps,
        flag: res.is_some() as u32,
    };
    let params = gpu.uniform(&p);
    dispatch(
        gpu,
        enc,
        &gpu.pipes.layer_norm,
        &[&params, x, res.unwrap_or(&gpu.dummy), w, b],
        fold(rows)?,
    );
    Ok(())
}

pub fn rms_norm(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<(), GpuError> {
    if rows == 0 {
        return Ok(());
    }
    let p = NormParams {
        rows: u32_of("rows", rows)?,
        dim: u32_of("dim", dim)?,
        eps,
        flag: 0,
    };
    let params = gpu.uniform(&p);
    dispatch(gpu, enc, &gpu.pipes.rms_norm, &[&params, x, w], fold(rows)?);
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy)]
struct LenParams {
    len: u32,
    pad: [u32; 3],
}

pub fn gelu(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    len: usize,
) -> Result<(), GpuError> {
    elementwise(gpu, enc, &gpu.pipes.gelu, &[x], len)
}

pub fn silu_mul(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    gate: &wgpu::Buffer,
    up: &wgpu::Buffer,
    len: usize,
) -> Result<(), GpuError> {
    elementwise(gpu, enc, &gpu.pipes.silu_mul, &[gate, up], len)
}

/// One thread per element over `len` elements: `pipe` takes a `LenParams` uniform, then
/// `buffers`.
fn elementwise(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    pipe: &Pipe,
    buffers: &[&wgpu::Buffer],
    len: usize,
) -> Result<(), GpuError> {
    if len == 0 {
        return Ok(());
    }
    let params = gpu.uniform(&LenParams {
        len: u32_of("len", len)?,
        pad: [0; 3],
    });
    let mut bindings = vec![&params];
    bindings.extend_from_slice(buffers);
    dispatch(gpu, enc, pipe, &bindings, fold(len.div_ceil(256))?);
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy)]
struct AttnParams {
    n_tokens: u32,
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    n_seqs: u32,
    causal: u32,
    scale: f32,
    pad: u32,
}

/// Largest head the attention shader handles (4 values per thread of 64).
pub const MAX_HEAD_DIM: usize = 256;

/// Softmax attention over packed sequences; `offsets` holds n_seqs + 1 token offsets (u32).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    offsets: &wgpu::Buffer,
    n_tokens: usize,
    n_seqs: usize,
    s: AttnShape,
    causal: bool,
    out: &wgpu::Buffer,
) -> Result<(), GpuError> {
    if s.head_dim == 0 || s.head_dim > MAX_HEAD_DIM {
        return Err(GpuError::Unsupported(format!(
            "attention head size {} (at most {MAX_HEAD_DIM})",
            s.head_dim
        )));
    }
    if s.n_head_kv == 0 || !s.n_head.is_multiple_of(s.n_head_kv) {
        return Err(GpuError::Unsupported(format!(
            "{} query heads over {} KV heads",
            s.n_head, s.n_head_kv
        )));
    }
    if n_tokens == 0 {
        return Ok(());
    }
    let p = AttnParams {
        n_tokens: u32_of("tokens", n_tokens)?,
        n_head: u32_of("heads", s.n_head)?,
        n_head_kv: s.n_head_kv as u32,
        head_dim: s.head_dim as u32,
        n_seqs: u32_of("sequences", n_seqs)?,
        causal: causal as u32,
        scale: 1.0 / (s.head_dim as f32).sqrt(),
        pad: 0,
    };
    let params = gpu.uniform(&p);
    let t = fold(n_tokens)?;
    if p.n_head > MAX_GROUPS {
        return Err(GpuError::Unsupported(format!(
            "{} attention heads",
            s.n_head
        )));
    }
    dispatch(
        gpu,
        enc,
        &gpu.pipes.attention,
        &[&params, q, k, v, offsets, out],
        [p.n_head, t[0], t[1]],
    );
    Ok(())
}

/// Pooling modes of pool.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    Mean = 0,
    Cls = 1,
    Last = 2,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct PoolParams {
    n_seqs: u32,
    dim: u32,
    mode: u32,
    pad: u32,
}

/// out[n_seqs×dim] = pooled rows of `hidden` per sequence.
#[allow(clippy::too_many_arguments)]
pub fn pool(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    hidden: &wgpu::Buffer,
    offsets: &wgpu::Buffer,
    n_seqs: usize,
    dim: usize,
    mode: PoolMode,
    out: &wgpu::Buffer,
) -> Result<(), GpuError> {
    if n_seqs == 0 {
        return Ok(());
    }
    if n_seqs > MAX_GROUPS as usize {
        return Err(GpuError::Unsupported(format!(
            "{n_seqs} sequences in one batch"
        )));
    }
    let params = gpu.uniform(&PoolParams {
        n_seqs: n_seqs as u32,
        dim: u32_of("dim", dim)?,
        mode: mode as u32,
        pad: 0,
    });
    dispatch(
        gpu,
        enc,
        &gpu.pipes.pool,
        &[&params, hidden, offsets, out],
        [n_seqs as u32, 1, 1],
    );
    Ok(())
}

/// Each of `rows` rows of `dim` values scaled to unit L2 norm, in place.
pub fn l2_normalize(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    rows: usize,
    dim: usize,
) -> Result<(), GpuError> {
    if rows == 0 {
        return Ok(());
    }
    if rows > MAX_GROUPS as usize {
        return Err(GpuError::Unsupported(format!("{rows} rows to normalise")));
    }
    let params = gpu.uniform(&PoolParams {
        n_seqs: rows as u32,
        dim: u32_of("dim", dim)?,
        mode: 0,
        pad: 0,
    });
    dispatch(
        gpu,
        enc,
        &gpu.pipes.l2_normalize,
        &[&params, x],
        [rows as u32, 1, 1],
    );
    Ok(())
}

/// Token offsets of packed sequences (n_seqs + 1 values) as the shaders read them.
pub fn seq_offsets(seqs: &[std::ops::Range<usize>], n_tokens: usize) -> Result<Vec<u32>, GpuError> {
    let mut off = Vec::with_capacity(seqs.len() + 1);
    let mut expect = 0;
    for s in seqs {
        if s.start != expect || s.end < s.start {
            return Err(GpuError::Unsupported(
                "sequences must be packed back to back".into(),
            ));
        }
        off.push(u32_of("offset", s.start)?);
        expect = s.end;
    }
    if expect != n_tokens {
        return Err(GpuError::Unsupported(format!(
            "sequences cover {expect} of {n_tokens} tokens"
        )));
    }
    off.push(u32_of("offset", n_tokens)?);
    Ok(off)
}
