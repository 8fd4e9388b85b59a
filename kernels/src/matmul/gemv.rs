//! The few-rows float path (m ≤ GEMV_MAX_ROWS, e.g. one query): packing would cost as much
//! as the product, so each output is a direct dot product of an activation row with a weight
//! row, converting f16/bf16 in registers. Parallel over output columns.

use super::isa::Isa;
use super::pack::convert_row;
use super::{FloatFormat, SendPtr};
use rayon::prelude::*;

/// Up to this many activation rows take the dot-product path.
pub const GEMV_MAX_ROWS: usize = 4;

/// Output columns per parallel task.
const COLS_PER_TASK: usize = 64;

/// y[m×n] = x[m×k] · Wᵀ by dot products (m ≤ GEMV_MAX_ROWS).
#[allow(clippy::too_many_arguments)]
pub fn gemv_float(
    isa: Isa,
    fmt: FloatFormat,
    x: &[f32],
    m: usize,
    data: &[u8],
    n: usize,
    k: usize,
    y: &mut [f32],
) {
    let row_bytes = k * fmt.bytes();
    let yp = SendPtr(y.as_mut_ptr());
    (0..n.div_ceil(COLS_PER_TASK))
        .into_par_iter()
        .for_each(|t| {
            let mut tmp = Vec::new();
            for j in t * COLS_PER_TASK..((t + 1) * COLS_PER_TASK).min(n) {
                let w = &data[j * row_bytes..(j + 1) * row_bytes];
                for i in 0..m {
                    let d = dot(isa, fmt, &x[i * k..(i + 1) * k], w, &mut tmp);
                    // SAFETY: column j belongs to this task; i < m, j < n.
                    unsafe { *yp.get().add(i * n + j) = d };
                }
            }
        });
}

/// x · w for one weight row `w` (k elements of `fmt`).
fn dot(isa: Isa, fmt: FloatFormat, x: &[f32], w: &[u8], tmp: &mut Vec<f32>) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512 {
        // SAFETY: AVX-512 detected; w holds k elements of fmt.
        return unsafe { dot_avx512(fmt, x, w) };
    }
    #[cfg(target_arch = "aarch64")]
    if isa.is_neon() {
        // SAFETY: NEON detected; w holds k elements of fmt.
        return unsafe { dot_neon(fmt, x, w) };
    }
    // Other ISAs: convert the row, then a plain dot product.
    tmp.resize(x.len(), 0.0);
    convert_row(isa, fmt, w, 0, tmp);
    x.iter().zip(tmp.iter()).map(|(a, b)| a * b).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn dot_avx512(fmt: FloatFormat, x: &[f32], w: &[u8]) -> f32 {
    use std::arch::x86_64::*;
    let k = x.len();
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let load = |p: usize| -> __m512 {
        match fmt {
            FloatFormat::F32 => _mm512_loadu_ps(wp.add(p * 4) as *const f32),
            FloatFormat::F16 => {
                _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(p * 2) as *const __m256i))
            }
            FloatFormat::BF16 => {
                let h = _mm256_loadu_si256(wp.add(p * 2) as *const __m256i);
                _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
            }
        }
    };
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut p = 0;
    while p + 64 <= k {
        for (u, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(_mm512_loadu_ps(xp.add(p + 16 * u)), load(p + 16 * u), *a);
        }
        p += 64;
    }
    while p + 16 <= k {
        acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(xp.add(p)), load(p), acc[0]);
        p += 16;
    }
    let mut s = _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ));
    if p < k {
        let mut tail = [0.0f32; 16];
        convert_row(Isa::Avx2, fmt, w, p, &mut tail[..k - p]);
        for (i, t) in tail.iter().enumerate().take(k - p) {
            s += *xp.add(p + i) * t;
        }
    }
    s
}

/// NEON: eight elements a step converted in registers (f16 by FCVTL, bf16 by a 16-bit
/// widening shift), eight independent accumulators over 32 elements: with two loads per FMA
/// the loads bound the loop, and 8 chains cover the FMA latency at that rate.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn dot_neon(fmt: FloatFormat, x: &[f32], w: &[u8]) -> f32 {
    use super::pack::cvt_f16x8;
    use std::arch::aarch64::*;
    let k = x.len();
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    // Weights p..p+8 as two vectors of four f32.
    let load = |p: usize| -> (float32x4_t, float32x4_t) {
        match fmt {
            FloatFormat::F32 => {
                let q = wp.add(p * 4) as *const f32;
                (vld1q_f32(q), vld1q_f32(q.add(4)))
            }
            FloatFormat::F16 => cvt_f16x8(vld1q_u16(wp.add(p * 2) as *const u16)),
            FloatFormat::BF16 => {
                let h = vld1q_u16(wp.add(p * 2) as *const u16);
                (
                    vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
                    vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
                )
            }
        }
    };
    let mut acc = [vdupq_n_f32(0.0); 8];
    let mut p = 0;
    while p + 32 <= k {
        for u in 0..4 {
            let (w0, w1) = load(p + 8 * u);
            acc[2 * u] = vfmaq_f32(acc[2 * u], vld1q_f32(xp.add(p + 8 * u)), w0);
            acc[2 * u + 1] = vfmaq_f32(acc[2 * u + 1], vld1q_f32(xp.add(p + 8 * u + 4)), w1);
        }
        p += 32;
    }
    while p + 8 <= k {
        let (w0, w1) = load(p);
        acc[0] = vfmaq_f32(acc[0], vld1q_f32(xp.add(p)), w0);
        acc[1] = vfmaq_f32(acc[1], vld1q_f32(xp.add(p + 4)), w1);
        p += 8;
    }
    let sum4 = |a: [float32x4_t; 4]| vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3]));
    let mut s = vaddvq_f32(vaddq_f32(
        sum4([acc[0], acc[1], acc[2], acc[3]]),
        sum4([acc[4], acc[5], acc[6], acc[7]]),
    ));
    if p < k {
        let mut tail = [0.0f32; 8];
        convert_row(Isa::Scalar, fmt, w, p, &mut tail[..k - p]);
        for (i, t) in tail.iter().enumerate().take(k - p) {
            s += *xp.add(p + i) * t;
        }
    }
    s
}
