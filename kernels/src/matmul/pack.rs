//! Weight packing for the float path: a block of weight rows (output columns) is converted to
//! f32 and laid out as panels of `NR` columns, so the micro-kernel reads `NR` consecutive floats
//! per step of k. Converting f16/bf16 here (once per block, reused over every activation row)
//! keeps the weights in their file dtype everywhere else.

use super::isa::Isa;
use super::FloatFormat;

/// Columns per packed panel: two AVX-512 vectors, four AVX2 vectors.
pub const NR: usize = 32;

/// Converts one weight row segment (`out.len()` values starting at element `p0`) to f32.
pub fn convert_row(isa: Isa, fmt: FloatFormat, row: &[u8], p0: usize, out: &mut [f32]) {
    let n = out.len();
    match fmt {
        FloatFormat::F32 => {
            let src = &row[p0 * 4..(p0 + n) * 4];
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        FloatFormat::F16 => {
            let src = &row[p0 * 2..(p0 + n) * 2];
            #[cfg(target_arch = "x86_64")]
            if isa >= Isa::Avx2 {
                // SAFETY: Avx2 implies F16C (see Isa::available); src holds 2·n bytes.
                unsafe { f16_to_f32_f16c(src, out) };
                return;
            }
            #[cfg(target_arch = "aarch64")]
            if isa.is_neon() {
                // SAFETY: NEON detected; src holds 2·n bytes.
                unsafe { f16_to_f32_neon(src, out) };
                return;
            }
            let _ = isa;
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        FloatFormat::BF16 => {
            let src = &row[p0 * 2..(p0 + n) * 2];
            // bf16 is the top half of an f32: a shift, which the compiler vectorises.
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_to_f32_f16c(src: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = out.len();
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm_loadu_si128(src.as_ptr().add(i * 2) as *const __m128i);
        _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        i += 8;
    }
    for j in i..n {
        out[j] = half::f16::from_le_bytes([src[2 * j], src[2 * j + 1]]).to_f32();
    }
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn f16_to_f32_neon(src: &[u8], out: &mut [f32]) {
    use std::arch::aarch64::*;
    let n = out.len();
    let mut i = 0;
    while i + 8 <= n {
        let (lo, hi) = cvt_f16x8(vld1q_u16(src.as_ptr().add(i * 2) as *const u16));
        vst1q_f32(out.as_mut_ptr().add(i), lo);
        vst1q_f32(out.as_mut_ptr().add(i + 4), hi);
        i += 8;
    }
    for j in i..n {
        out[j] = half::f16::from_le_bytes([src[2 * j], src[2 * j + 1]]).to_f32();
    }
}

/// Eight f16 (as bits) to two vectors of four f32: FCVTL / FCVTL2, part of baseline AArch64
/// Advanced SIMD. Inline assembly because the intrinsic (`vcvt_f32_f16`) takes the
/// `float16x4_t` type, newer than the Rust versions this crate builds with elsewhere.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn cvt_f16x8(
    h: std::arch::aarch64::uint16x8_t,
) -> (
    std::arch::aarch64::float32x4_t,
    std::arch::aarch64::float32x4_t,
) {
    let (lo, hi);
    std::arch::asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        lo = lateout(vreg) lo,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    std::arch::asm!(
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        hi = lateout(vreg) hi,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    (lo, hi)
}

/// Packs weight rows `j0..j0+nb` (each `row_bytes` long in `data`), elements `p0..p0+kc`, into
/// `ceil(nb/NR)` panels of `kc × NR` f32 each (column c of a panel at offset `p·NR + c`).
/// Columns past `nb` in the last panel are zero.
#[allow(clippy::too_many_arguments)]
pub fn pack_panels(
    isa: Isa,
    fmt: FloatFormat,
    data: &[u8],
    row_bytes: usize,
    j0: usize,
    nb: usize,
    p0: usize,
    kc: usize,
    tmp: &mut [f32],
    out: &mut [f32],
) {
    let panels = nb.div_ceil(NR);
    let tmp = &mut tmp[..kc];
    for s in 0..panels {
        let panel = &mut out[s * kc * NR..(s + 1) * kc * NR];
        for c in 0..NR {
            let j = s * NR + c;
            if j >= nb {
                for p in 0..kc {
                    panel[p * NR + c] = 0.0;
                }
                continue;
            }
            let row = &data[(j0 + j) * row_bytes..(j0 + j + 1) * row_bytes];
            convert_row(isa, fmt, row, p0, tmp);
            for (p, &v) in tmp.iter().enumerate() {
                panel[p * NR + c] = v;
            }
        }
    }
}
