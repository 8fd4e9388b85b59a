//! The NEON (aarch64) kernels of the quantised path (`q8`): the activation quantiser and the
//! row loop over packed panels, with SDOT (FEAT_DotProd) and without (SMULL + SADALP).
//! Same layouts and the same integer sums as `q8`'s scalar reference, which the tests compare
//! them with bit for bit.

use super::q8::{row_group, Panel, BLOCK_BYTES, MRQ, NRQ, QB};
use super::Isa;

/// NEON: the reference's steps on eight vectors of four. FMAXNM ignores a NaN like `f32::max`
/// in the reference's fold; FMIN / FMAX keep one like `clamp`, and FCVTNS rounds ties to even
/// and sends NaN to 0, like `round_ties_even` then `as i32`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn quantize_block_neon(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    use std::arch::aarch64::*;
    assert!(x.len() >= QB && q.len() >= QB);
    let v: [float32x4_t; 8] = std::array::from_fn(|i| vld1q_f32(x.as_ptr().add(4 * i)));
    let mut m = vdupq_n_f32(0.0);
    for &vi in &v {
        m = vmaxnmq_f32(m, vabsq_f32(vi));
    }
    let d = vmaxnmvq_f32(m) / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let (lo, hi) = (vdupq_n_f32(-127.0), vdupq_n_f32(127.0));
    let mut sum = vdupq_n_s32(0);
    let qi: [int32x4_t; 8] = std::array::from_fn(|i| {
        let t = vminq_f32(vmaxq_f32(vmulq_n_f32(v[i], id), lo), hi);
        let r = vcvtnq_s32_f32(t);
        sum = vaddq_s32(sum, r);
        r
    });
    // To bytes; q + 128 is q with the top bit flipped (q ∈ [-127, 127]).
    let flip = vdupq_n_u8(0x80);
    for h in 0..2 {
        let w = |j: usize| vcombine_s16(vmovn_s32(qi[4 * h + j]), vmovn_s32(qi[4 * h + j + 1]));
        let bytes = vcombine_s8(vmovn_s16(w(0)), vmovn_s16(w(2)));
        vst1q_u8(
            q.as_mut_ptr().add(16 * h),
            veorq_u8(vreinterpretq_u8_s8(bytes), flip),
        );
    }
    (d, vaddvq_s32(sum))
}

/// The NEON row loop: MRQ rows at a time (fewer for the last group), each over the quarters
/// of 8 columns that hold valid columns, written straight into y (+ the bias, `nvalid` long).
///
/// # Safety
/// As `q8::tile_q` (SDOT is used for `Isa::NeonDot` only).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn rows_neon(
    isa: Isa,
    rows: usize,
    qx: &[u8],
    dx: &[f32],
    sx: &[f32],
    k: usize,
    p: &Panel,
    c: *mut f32,
    ldc: usize,
    nvalid: usize,
    bias: Option<&[f32]>,
) {
    let (dot, has_min) = (isa == Isa::NeonDot, !p.m.is_empty());
    for i in (0..rows).step_by(MRQ) {
        let (q, d, s) = row_group(qx, dx, sx, k, i);
        for col0 in (0..nvalid).step_by(8) {
            let (c, nv) = (c.add(i * ldc + col0), nvalid - col0);
            let bias = bias.map(|b| &b[col0..]);
            // Instantiated per row count, minimum term and dot-product flavour.
            macro_rules! go {
                ($kern:ident, $min:literal) => {
                    match MRQ.min(rows - i) {
                        4 => $kern::<4, $min>(q, d, s, k, p, col0, c, ldc, nv, bias),
                        3 => $kern::<3, $min>(q, d, s, k, p, col0, c, ldc, nv, bias),
                        2 => $kern::<2, $min>(q, d, s, k, p, col0, c, ldc, nv, bias),
                        1 => $kern::<1, $min>(q, d, s, k, p, col0, c, ldc, nv, bias),
                        _ => unreachable!(),
                    }
                };
            }
            match (dot, has_min) {
                (true, false) => go!(kernel_neon_sdot, false),
                (true, true) => go!(kernel_neon_sdot, true),
                (false, false) => go!(kernel_neon_smull, false),
                (false, true) => go!(kernel_neon_smull, true),
            }
        }
    }
}

/// acc + lane-wise Σ of four i8 · i8 products, the four bytes of `x` taken from its 32-bit
/// lane L (SDOT by element, FEAT_DotProd). Inline assembly: `vdotq_laneq_s32` is not stable
/// Rust.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_lane<const L: i32>(
    mut acc: std::arch::aarch64::int32x4_t,
    w: std::arch::aarch64::int8x16_t,
    x: std::arch::aarch64::int8x16_t,
) -> std::arch::aarch64::int32x4_t {
    std::arch::asm!(
        "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{l}]",
        acc = inout(vreg) acc,
        w = in(vreg) w,
        x = in(vreg) x,
        l = const L,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// [`sdot_lane`] on baseline NEON: SMULL / SMULL2 give the sixteen i16 products (each
/// |q·w| ≤ 127², so a sum of two fits i16), ADDP adds neighbours (the pairs of one column)
/// and SADALP adds neighbours again into the i32 lanes: the same sums, four instructions
/// instead of one.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn smull_lane<const L: i32>(
    acc: std::arch::aarch64::int32x4_t,
    w: std::arch::aarch64::int8x16_t,
    x: std::arch::aarch64::int8x16_t,
) -> std::arch::aarch64::int32x4_t {
    use std::arch::aarch64::*;
    let xb = vreinterpretq_s8_s32(vdupq_laneq_s32::<L>(vreinterpretq_s32_s8(x)));
    let lo = vmull_s8(vget_low_s8(w), vget_low_s8(xb));
    let hi = vmull_high_s8(w, xb);
    vpadalq_s16(acc, vpaddq_s16(lo, hi))
}

/// NEON: R ≤ 4 rows × 8 columns (the quarter of the panel from column `col0`; `bias`, if any,
/// starts at that column and holds at least `min(nvalid, 8)` values), defined twice
/// by this macro: with SDOT and with the baseline SMULL sequence, each compiled for its own
/// features so the plain one never contains an SDOT.
///
/// Per k block the rows' 32 activations are loaded once and turned back from `q + 128` to
/// signed q (a flip of the top bit): SDOT and SMULL are signed × signed, so the `-128 · Σw`
/// correction is not needed and the integer sums are those of the reference. A group of 4 k
/// is two 16-byte weight loads (4 columns × 4 k each) used by every row, the activations
/// taken by lane. Registers: 8 integer + 8 float accumulators, 8 activation vectors and 2
/// weight vectors (of 32); 8 SDOTs per 2 loads. The float steps are the reference's: the
/// i32 sum converted, times (d_w · d_x) fused into the row's sum, then m_w · s_x fused.
macro_rules! kernel_neon_q {
    ($name:ident, $features:literal, $dot:ident) => {
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<const R: usize, const MIN: bool>(
            qx: &[u8],
            dx: &[f32],
            sx: &[f32],
            k: usize,
            p: &Panel,
            col0: usize,
            c: *mut f32,
            ldc: usize,
            nvalid: usize,
            bias: Option<&[f32]>,
        ) {
            use std::arch::aarch64::*;
            let nblk = k / QB;
            let flip = vdupq_n_u8(0x80);
            let mut f0 = [vdupq_n_f32(0.0); R];
            let mut f1 = [vdupq_n_f32(0.0); R];
            let (qp, dp) = (p.q.as_ptr(), p.d.as_ptr());
            for b in 0..nblk {
                let mut xv = [[vdupq_n_s8(0); 2]; R];
                for (i, x) in xv.iter_mut().enumerate() {
                    let xp = qx.as_ptr().add(i * k + b * QB);
                    for (h, v) in x.iter_mut().enumerate() {
                        *v = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(xp.add(16 * h)), flip));
                    }
                }
                let mut s0 = [vdupq_n_s32(0); R];
                let mut s1 = [vdupq_n_s32(0); R];
                // Group g (k 4g..4g+4) of this quarter: 4 bytes per column.
                let wb = qp.add(b * BLOCK_BYTES + col0 * 4) as *const i8;
                let w = |g: usize| {
                    let gp = wb.add(g * NRQ * 4);
                    (vld1q_s8(gp), vld1q_s8(gp.add(16)))
                };
                for h in 0..2 {
                    let (w0, w1) = w(4 * h);
                    for i in 0..R {
                        s0[i] = $dot::<0>(s0[i], w0, xv[i][h]);
                        s1[i] = $dot::<0>(s1[i], w1, xv[i][h]);
                    }
                    let (w0, w1) = w(4 * h + 1);
                    for i in 0..R {
                        s0[i] = $dot::<1>(s0[i], w0, xv[i][h]);
                        s1[i] = $dot::<1>(s1[i], w1, xv[i][h]);
                    }
                    let (w0, w1) = w(4 * h + 2);
                    for i in 0..R {
                        s0[i] = $dot::<2>(s0[i], w0, xv[i][h]);
                        s1[i] = $dot::<2>(s1[i], w1, xv[i][h]);
                    }
                    let (w0, w1) = w(4 * h + 3);
                    for i in 0..R {
                        s0[i] = $dot::<3>(s0[i], w0, xv[i][h]);
                        s1[i] = $dot::<3>(s1[i], w1, xv[i][h]);
                    }
                }
                let d0 = vld1q_f32(dp.add(b * NRQ + col0));
                let d1 = vld1q_f32(dp.add(b * NRQ + col0 + 4));
                for i in 0..R {
                    let dxi = *dx.get_unchecked(i * nblk + b);
                    f0[i] = vfmaq_f32(f0[i], vcvtq_f32_s32(s0[i]), vmulq_n_f32(d0, dxi));
                    f1[i] = vfmaq_f32(f1[i], vcvtq_f32_s32(s1[i]), vmulq_n_f32(d1, dxi));
                }
                if MIN {
                    let mp = p.m.as_ptr().add(b * NRQ + col0);
                    let (mw0, mw1) = (vld1q_f32(mp), vld1q_f32(mp.add(4)));
                    for i in 0..R {
                        let sxi = *sx.get_unchecked(i * nblk + b);
                        f0[i] = vfmaq_n_f32(f0[i], mw0, sxi);
                        f1[i] = vfmaq_n_f32(f1[i], mw1, sxi);
                    }
                }
            }
            // The bias (`nvalid` values from this quarter's first column) in registers, added
            // after the sums as the reference does.
            for i in 0..R {
                let cp = c.add(i * ldc);
                if nvalid >= 8 {
                    let (mut v0, mut v1) = (f0[i], f1[i]);
                    if let Some(b) = bias {
                        v0 = vaddq_f32(v0, vld1q_f32(b.as_ptr()));
                        v1 = vaddq_f32(v1, vld1q_f32(b.as_ptr().add(4)));
                    }
                    vst1q_f32(cp, v0);
                    vst1q_f32(cp.add(4), v1);
                } else {
                    let mut t = [0.0f32; 8];
                    vst1q_f32(t.as_mut_ptr(), f0[i]);
                    vst1q_f32(t.as_mut_ptr().add(4), f1[i]);
                    if let Some(b) = bias {
                        for (v, &b) in t.iter_mut().zip(&b[..nvalid]) {
                            *v += b;
                        }
                    }
                    std::ptr::copy_nonoverlapping(t.as_ptr(), cp, nvalid);
                }
            }
        }
    };
}
kernel_neon_q!(kernel_neon_sdot, "neon,dotprod", sdot_lane);
kernel_neon_q!(kernel_neon_smull, "neon", smull_lane);
