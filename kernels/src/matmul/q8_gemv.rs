//! The few-rows integer path (m ≤ GEMV_MAX_ROWS): packing weights would cost more than the
//! product, so each output is a dot product of a quantised activation row with a weight row
//! read straight from the file's Q8_0 / Q4_0 / Q4_1 blocks (AVX2: the maddubs sign trick, with
//! the same -128 → -127 clamp as packing; NEON: SDOT where the core has it, else SMULL; Q4_1's
//! minimum adds m_w · s_x per block). Parallel over output columns.

use super::isa::Isa;
use super::q8::{QuantRows, QB};
use super::{SendPtr, WeightFormat};
use rayon::prelude::*;

/// Output columns per parallel task.
const COLS_PER_TASK: usize = 64;

/// Whether [`gemv_quant`] has a kernel for `isa` (AVX2 and up, or NEON).
pub fn supports(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    return isa >= Isa::Avx2;
    #[cfg(target_arch = "aarch64")]
    return isa.is_neon();
    #[allow(unreachable_code)]
    {
        let _ = isa;
        false
    }
}

/// y[m×n] = x · Wᵀ from activations already quantised into `qx`. Needs [`supports`]`(isa)`.
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
    assert!(supports(isa), "gemv_quant: no kernel for {isa:?}");
    assert!(
        format != WeightFormat::Q4_1 || qx.s.len() == qx.d.len(),
        "gemv_quant: Q4_1 weights need the block sums"
    );
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
                    let (d, s) = (&qx.d[blocks.clone()], qx.s.get(blocks).unwrap_or(&[]));
                    // SAFETY: the ISA is supported (asserted above); q/d/s/w hold nblk blocks.
                    let v = unsafe { dot(isa, format, q, d, s, w) };
                    // SAFETY: column j belongs to this task; i < m.
                    unsafe { *yp.get().add(i * n + j) = v };
                }
            }
        });
}

/// One quantised activation row times one weight row.
///
/// # Safety
/// `supports(isa)`; q holds d.len() blocks of 32, s as many sums (Q4_1), w as many blocks.
#[allow(unused_variables)]
unsafe fn dot(isa: Isa, format: WeightFormat, q: &[u8], d: &[f32], s: &[f32], w: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    return dot_avx2(format, q, d, s, w);
    #[cfg(target_arch = "aarch64")]
    return if isa == Isa::NeonDot {
        dot_neon_sdot(format, q, d, s, w)
    } else {
        dot_neon_smull(format, q, d, s, w)
    };
    #[allow(unreachable_code)]
    {
        unreachable!("gemv_quant has no kernel on this architecture")
    }
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

/// One f16 (its bits) to f32 by FCVT (baseline AArch64): `half`'s conversion is a call with a
/// run-time feature check, once per block in the loop below.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn f16_to_f32_neon(bits: u16) -> f32 {
    let out: f32;
    // The half sits in the low 16 bits of the register FCVT reads as `h`.
    std::arch::asm!(
        "fcvt {o:s}, {i:h}",
        o = lateout(vreg) out,
        i = in(vreg) f32::from_bits(bits as u32),
        options(pure, nomem, nostack, preserves_flags)
    );
    out
}

/// acc + lane-wise Σ of four i8 · i8 products (SDOT, FEAT_DotProd; inline assembly because
/// `vdotq_s32` is not stable Rust).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot(
    mut acc: std::arch::aarch64::int32x4_t,
    a: std::arch::aarch64::int8x16_t,
    b: std::arch::aarch64::int8x16_t,
) -> std::arch::aarch64::int32x4_t {
    std::arch::asm!(
        "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// acc + Σ of the sixteen i8 · i8 products, spread over the four lanes, on baseline NEON:
/// SMULL / SMULL2 to i16 (|q·w| ≤ 127²), SADALP to i32.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
#[inline]
unsafe fn smull(
    acc: std::arch::aarch64::int32x4_t,
    a: std::arch::aarch64::int8x16_t,
    b: std::arch::aarch64::int8x16_t,
) -> std::arch::aarch64::int32x4_t {
    use std::arch::aarch64::*;
    let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    vpadalq_s16(acc, vmull_high_s8(a, b))
}

/// NEON: per block, the 32 weights to i8 in registers (Q8_0 clamped to ≥ -127 as packing
/// does; nibbles masked and shifted), the activations back from `q + 128` to signed q (the
/// top bit flipped), the signed products summed by `$dot`, converted and scaled into one of
/// two float accumulators (alternate blocks, so two FMA chains run at once). Defined twice:
/// with SDOT and with SMULL, each compiled for its own features.
macro_rules! dot_neon {
    ($name:ident, $features:literal, $dot:ident) => {
        #[cfg(target_arch = "aarch64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(format: WeightFormat, q: &[u8], d: &[f32], s: &[f32], w: &[u8]) -> f32 {
            use std::arch::aarch64::*;
            let flip = vdupq_n_u8(0x80);
            let lowmask = vdupq_n_u8(0x0f);
            let minw = vdupq_n_s8(-127);
            let f16 = |p: *const u8| f16_to_f32_neon(u16::from_le_bytes([*p, *p.add(1)]));
            // Low nibbles are elements 0..16, high nibbles 16..32.
            let nibbles = |p: *const u8| {
                let v = vld1q_u8(p);
                (
                    vreinterpretq_s8_u8(vandq_u8(v, lowmask)),
                    vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)),
                )
            };
            let mut acc = [vdupq_n_f32(0.0); 2];
            // Σ_b m_w · s_x (Q4_1 only).
            let mut min_acc = 0.0f32;
            for (b, &dx) in d.iter().enumerate() {
                let (dw, w0, w1) = match format {
                    WeightFormat::Q8_0 => {
                        let blk = w.as_ptr().add(b * 34);
                        let (w0, w1) = (
                            vld1q_s8(blk.add(2) as *const i8),
                            vld1q_s8(blk.add(18) as *const i8),
                        );
                        (f16(blk), vmaxq_s8(w0, minw), vmaxq_s8(w1, minw))
                    }
                    WeightFormat::Q4_0 => {
                        let blk = w.as_ptr().add(b * 18);
                        let (lo, hi) = nibbles(blk.add(2));
                        let eight = vdupq_n_s8(8);
                        (f16(blk), vsubq_s8(lo, eight), vsubq_s8(hi, eight))
                    }
                    WeightFormat::Q4_1 => {
                        let blk = w.as_ptr().add(b * 20);
                        min_acc = f16(blk.add(2)).mul_add(*s.get_unchecked(b), min_acc);
                        let (lo, hi) = nibbles(blk.add(4));
                        (f16(blk), lo, hi)
                    }
                    WeightFormat::Float(_) => unreachable!("float weights take the float path"),
                };
                let xp = q.as_ptr().add(b * QB);
                let x0 = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(xp), flip));
                let x1 = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(xp.add(16)), flip));
                let isum = $dot($dot(vdupq_n_s32(0), w0, x0), w1, x1);
                acc[b % 2] = vfmaq_f32(acc[b % 2], vcvtq_f32_s32(isum), vdupq_n_f32(dw * dx));
            }
            vaddvq_f32(vaddq_f32(acc[0], acc[1])) + min_acc
        }
    };
}
dot_neon!(dot_neon_sdot, "neon,dotprod", sdot);
dot_neon!(dot_neon_smull, "neon", smull);

#[cfg(all(test, target_arch = "aarch64"))]
mod tests {
    /// FCVT of every f16 bit pattern agrees with `half`.
    #[test]
    fn scalar_f16_conversion_matches_half() {
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f32();
            // SAFETY: FCVT is baseline AArch64.
            let got = unsafe { super::f16_to_f32_neon(bits) };
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} vs {want}"
            );
        }
    }
}
