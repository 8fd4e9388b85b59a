//! Recording a matmul y = x · Wᵀ (+ bias): the shader for W's dtype (and, for Q8_0 on devices
//! with `dot4I8Packed`, the activation quantisation it needs first), one dispatch per row block
//! of W.

use super::context::{Gpu, GpuError};
use super::kernels::{dispatch, fold, pod, u32_of, MAX_GROUPS};
use super::pipelines::{Pipe, SMALL_M_TILE};
use super::weights::{GpuWeight, WeightKind};

pod!(MatmulParams, QuantParams);

#[repr(C)]
#[derive(Clone, Copy)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
    ldy: u32,
    col_off: u32,
    pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct QuantParams {
    blocks: u32,
    pad: [u32; 3],
}

/// Values per Q8 block (weights and quantised activations alike).
const QK: usize = 32;

/// y[m×n] = x[m×k] · Wᵀ (+ bias).
pub fn matmul(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    m: usize,
    w: &GpuWeight,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
) -> Result<(), GpuError> {
    if u32_of("m·k", m * w.k).is_err() || u32_of("m·n", m * w.n).is_err() {
        return Err(GpuError::Unsupported(format!(
            "matmul of {m}×{} by {}×{} overflows 32-bit indexing",
            w.k, w.n, w.k
        )));
    }
    // Short batches take the 16-row tiles: 64-row tiles would be mostly padding.
    let (variant, bm) = if m <= 2 * SMALL_M_TILE {
        (1, SMALL_M_TILE)
    } else {
        (0, 64)
    };
    if m == 0 {
        return Ok(());
    }
    let row_tiles = u32_of("tiles", m.div_ceil(bm))?;
    if row_tiles > MAX_GROUPS {
        return Err(GpuError::Unsupported(format!(
            "matmul with {m} rows has too many tiles"
        )));
    }
    let dot4 = match (&gpu.pipes.q8_dot4, w.kind) {
        (Some(d), WeightKind::Q8_0) if w.k.is_multiple_of(QK) => Some(d),
        _ => None,
    };
    // The packed-dot path reads int8 activations: x quantised once for every row block of W.
    let quantised = match dot4 {
        Some(d) => Some(quantise(gpu, enc, &d.quantize, x, m * w.k)?),
        None => None,
    };
    let pipe = match (dot4, w.kind) {
        (Some(d), _) => &d.matmul[variant],
        (None, WeightKind::F32) => &gpu.pipes.matmul_f32[variant],
        (None, WeightKind::F16) => &gpu.pipes.matmul_f16[variant],
        (None, WeightKind::Q8_0) => &gpu.pipes.matmul_q8_0[variant],
    };
    // One dispatch per row block of W, each filling its own columns of y.
    for part in &w.parts {
        let p = MatmulParams {
            m: m as u32,
            n: part.rows as u32,
            k: w.k as u32,
            has_bias: bias.is_some() as u32,
            ldy: w.n as u32,
            col_off: part.row0 as u32,
            pad: [0; 2],
        };
        let col_tiles = u32_of("tiles", part.rows.div_ceil(64))?;
        if col_tiles > MAX_GROUPS {
            return Err(GpuError::Unsupported(format!(
                "matmul with {} outputs has too many tiles",
                part.rows
            )));
        }
        let params = gpu.uniform(&p);
        let scales = part.scales.as_ref().unwrap_or(&gpu.dummy);
        let bias = bias.unwrap_or(&gpu.dummy);
        let groups = [col_tiles, row_tiles, 1];
        match &quantised {
            Some((xq, xd)) => dispatch(
                gpu,
                enc,
                pipe,
                &[&params, xq, &part.w, scales, bias, y, xd],
                groups,
            ),
            None => dispatch(
                gpu,
                enc,
                pipe,
                &[&params, x, &part.w, scales, bias, y],
                groups,
            ),
        }
    }
    Ok(())
}

/// Records the int8 quantisation of `len` activations (whole blocks of 32): returns the packed
/// quants (`len` bytes) and the per-block f32 scales.
fn quantise(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    pipe: &Pipe,
    x: &wgpu::Buffer,
    len: usize,
) -> Result<(wgpu::Buffer, wgpu::Buffer), GpuError> {
    let blocks = len / QK;
    let xq = gpu.storage("x.q8", len as u64, wgpu::BufferUsages::empty())?;
    let xd = gpu.storage("x.d", (blocks * 4) as u64, wgpu::BufferUsages::empty())?;
    let params = gpu.uniform(&QuantParams {
        blocks: u32_of("blocks", blocks)?,
        pad: [0; 3],
    });
    dispatch(
        gpu,
        enc,
        pipe,
        &[&params, x, &xq, &xd],
        fold(blocks.div_ceil(64))?,
    );
    Ok((xq, xd))
}
