//! The few-rows integer path (m ≤ GEMV_MAX_ROWS): packing weights would cost more than the
//! product, so each output is a dot product of a quantised activation row with a weight row
//! read straight from the file's Q8_0 / Q4_0 / Q4_1 blocks (AVX2: the maddubs sign trick, with
//! the same -128 → -127 clamp as packing; Q4_1's minimum adds m_w · s_x per block). Parallel
//! over output columns.

use super::isa::Isa;
use super::q8::{QuantRows, QB};
use super::{SendPtr, WeightFormat};
use rayon::prelude::*;

/// Output columns per parallel task.
const COLS_PER_TASK: usize = 64;

/// y[m×n] = x · Wᵀ from activations already quantised into `qx`. Needs `isa >= Avx2`.
#[allow(clippy::too_many_arguments)]
pub fn gemv_quant(
    isa: Isa,
    format: WeightFormat,
    qx: &QuantRows,
    m: usize,
    data: &[u8],
    n: usize,
    k: usize,
    y: &mut [f32],
) {
    assert!(isa >= Isa::Avx2, "gemv_quant needs AVX2");
    let row_bytes = format.row_bytes(k).expect("k is a multiple of 32");
    let nblk = k / QB;
    let yp = SendPtr(y.as_mut_ptr());
    (0..n.div_ceil(COLS_PER_TASK))
        .into_par_iter()
        .for_each(|t| {
            for j in t * COLS_PER_TASK..((t + 1) * COLS_PER_TASK).min(n) {
                let w = &data[j * row_bytes..(j + 1) * row_bytes];
                for i in 0..m {
                    let blocks = i * nblk..(i + 1) * nblk;
                    let q = &qx.q[i * k..(i + 1) * k];
                    let (d, s) = (&qx.d[blocks.clone()], &qx.s[blocks]);
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: AVX2 checked above; q/d/s/w hold nblk blocks.
                    let v = unsafe { dot_avx2(format, q, d, s, w) };
                    #[cfg(not(target_arch = "x86_64"))]
                    let v = unreachable!("{q:?}{d:?}{s:?}{w:?}");
                    // SAFETY: column j belongs to this task; i < m.
                    unsafe { *yp.get().add(i * n + j) = v };
                }
            }
        });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(format: WeightFormat, q: &[u8], d: &[f32], s: &[f32], w: &[u8]) -> f32 {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let flip = _mm256_set1_epi8(-128);
    let lowmask = _mm256_set1_epi8(0x0f);
    let eight = _mm256_set1_epi8(8);
    let minw = _mm256_set1_epi8(-127);
    let mut acc = _mm256_setzero_ps();
    // Σ_b m_w · s_x (Q4_1 only).
    let mut min_acc = 0.0f32;
    for (b, &dx) in d.iter().enumerate() {
        let (dw, wv) = match format {
            WeightFormat::Q8_0 => {
                let blk = w.as_ptr().add(b * 34);
                let dw = half::f16::from_le_bytes([*blk, *blk.add(1)]).to_f32();
                (
                    dw,
                    _mm256_max_epi8(_mm256_loadu_si256(blk.add(2) as *const __m256i), minw),
                )
            }
            WeightFormat::Q4_0 => {
                let blk = w.as_ptr().add(b * 18);
                let dw = half::f16::from_le_bytes([*blk, *blk.add(1)]).to_f32();
                let v = _mm_loadu_si128(blk.add(2) as *const __m128i);
                // Low nibbles are elements 0..16, high nibbles 16..32.
                let both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
                (dw, _mm256_sub_epi8(_mm256_and_si256(both, lowmask), eight))
            }
            WeightFormat::Q4_1 => {
                let blk = w.as_ptr().add(b * 20);
                let dw = half::f16::from_le_bytes([*blk, *blk.add(1)]).to_f32();
                let mw = half::f16::from_le_bytes([*blk.add(2), *blk.add(3)]).to_f32();
                min_acc = mw.mul_add(*s.get_unchecked(b), min_acc);
                let v = _mm_loadu_si128(blk.add(4) as *const __m128i);
                let both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
                (dw, _mm256_and_si256(both, lowmask))
            }
            WeightFormat::Float(_) => unreachable!("float weights take the float path"),
        };
        let xs = _mm256_xor_si256(
            _mm256_loadu_si256(q.as_ptr().add(b * QB) as *const __m256i),
            flip,
        );
        let prod = _mm256_maddubs_epi16(_mm256_abs_epi8(xs), _mm256_sign_epi8(wv, xs));
        let isum = _mm256_madd_epi16(prod, ones);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dw * dx), acc);
    }
    let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    _mm_cvtss_f32(h) + min_acc
}
