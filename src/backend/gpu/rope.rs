//! Recording RoPE (shaders/rope.wgsl) and the rotation table it reads: for each bit j of a
//! position and each rotated pair i, (cos, sin) of 2^j · ω_i, computed in f64 here with the
//! frequencies of `quiver_kernels::rope::Rope` (base, linear scale, optional per-pair factors).

use super::context::{Gpu, GpuError};
use super::kernels::{dispatch, fold, pod, u32_of};
use quiver_kernels::rope::{Rope, RopeLayout};

pod!(RopeParams);

#[repr(C)]
#[derive(Clone, Copy)]
struct RopeParams {
    n_tokens: u32,
    n_heads: u32,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
    bits: u32,
    pad: [u32; 2],
}

/// Checks what `Rope::apply` asserts, as an error rather than a panic.
pub fn check(rope: &Rope, x_len: usize, row_len: usize, n_tokens: usize) -> Result<(), GpuError> {
    let bad = |why: String| Err(GpuError::Unsupported(format!("rope: {why}")));
    if rope.head_dim == 0 || !rope.n_rot.is_multiple_of(2) || rope.n_rot > rope.head_dim {
        return bad(format!(
            "n_rot {} for heads of {}",
            rope.n_rot, rope.head_dim
        ));
    }
    if !row_len.is_multiple_of(rope.head_dim) || Some(x_len) != row_len.checked_mul(n_tokens) {
        return bad(format!(
            "{x_len} values are not {n_tokens} rows of whole heads of {}",
            rope.head_dim
        ));
    }
    if rope.freq_factors.is_some_and(|f| f.len() < rope.n_rot / 2) {
        return bad("too few frequency factors".into());
    }
    Ok(())
}

/// Bits needed for the largest position (at least 1).
pub fn position_bits(positions: &[u32]) -> u32 {
    let max = positions.iter().copied().max().unwrap_or(0);
    (u32::BITS - max.leading_zeros()).max(1)
}

/// `bits` × n_rot/2 (cos, sin) pairs: row j holds the rotations by 2^j · ω_i.
pub fn rotation_table(rope: &Rope, bits: u32) -> Vec<[f32; 2]> {
    let half = rope.n_rot / 2;
    let mut table = Vec::with_capacity(bits as usize * half);
    for j in 0..bits {
        for i in 0..half {
            // The same ω as Rope::apply: scale · base^(-2i/n_rot) / factor, in f64.
            let inv_freq = (rope.freq_base as f64).powf(-2.0 * i as f64 / rope.n_rot as f64);
            let factor = rope.freq_factors.map_or(1.0, |f| f[i] as f64);
            let theta = (1u64 << j) as f64 * rope.freq_scale as f64 * inv_freq / factor;
            table.push([theta.cos() as f32, theta.sin() as f32]);
        }
    }
    table
}

/// RoPE in place over `n_tokens` rows of `row_len` values in `x`; `positions` (u32, one per
/// token) and `table` (from `rotation_table` with `bits` rows) are on the GPU already.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    rope: &Rope,
    x: &wgpu::Buffer,
    row_len: usize,
    n_tokens: usize,
    positions: &wgpu::Buffer,
    table: &wgpu::Buffer,
    bits: u32,
) -> Result<(), GpuError> {
    check(rope, row_len * n_tokens, row_len, n_tokens)?;
    let half = rope.n_rot / 2;
    if n_tokens == 0 || half == 0 {
        return Ok(());
    }
    let p = RopeParams {
        n_tokens: u32_of("tokens", n_tokens)?,
        n_heads: u32_of("heads", row_len / rope.head_dim)?,
        head_dim: u32_of("head size", rope.head_dim)?,
        n_rot: u32_of("n_rot", rope.n_rot)?,
        neox: (rope.layout == RopeLayout::NeoX) as u32,
        bits,
        pad: [0; 2],
    };
    let threads = u32_of("rope threads", n_tokens * half)?;
    let params = gpu.uniform(&p);
    dispatch(
        gpu,
        enc,
        &gpu.pipes.rope,
        &[&params, x, positions, table],
        fold((threads as usize).div_ceil(64))?,
    );
    Ok(())
}
