//! Attention scores Q·Kᵀ of one (sequence, head) pair with bf16 products: VDPBF16PS
//! multiplies pairs of bf16 values and adds them into f32 lanes, twice the multiply-adds per
//! instruction of f32 FMA. Q and K are rounded to bf16 (8-bit mantissa); the sums stay f32.
//!
//! Only the scores: rounding V and the probabilities too was measured against the golden
//! vectors and moved all-minilm F16's pooled norm to 0.11 % off PyTorch's (the bound is
//! 0.1 %; the f32 path: 0.086 %). With bf16 scores alone the worst is 0.064 % and the cosine
//! 0.99999. Used only where the model's weights are themselves 16-bit or quantised (the
//! backend decides). Needs AVX-512 BF16 (Zen 4, Sapphire Rapids) and a head width that is a
//! multiple of 32; [`supported`] says when.
//!
//! Layouts, with a "pair" = one u32 holding two bf16 values (element 2t low, 2t+1 high), the
//! unit VDPBF16PS works on:
//! - `qb`: per query row, its head_dim/2 pairs.
//! - `kp`: keys in panels of 32; per panel, per pair index t, 32 keys' pair t (two vectors).

use crate::attention::AttnShape;
use crate::matmul::Isa;
use std::ops::Range;

/// Keys per score panel, and head dimensions per conversion: two 16-lane vectors. Score rows
/// are padded to a multiple of it.
pub(crate) const W: usize = 32;
/// Query rows per micro-kernel call: 8 rows × 2 vectors = 16 accumulators.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the kernel is x86-64 only
const MR: usize = 8;

/// Per-thread buffers of the bf16 path.
#[derive(Default)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the kernel is x86-64 only
pub(crate) struct Scratch {
    qb: Vec<u32>,
    kp: Vec<u32>,
}

/// Whether this machine and head width can take the bf16 path (else: the f32 one).
pub fn supported(isa: Isa, head_dim: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa >= Isa::Avx512
            && head_dim > 0
            && head_dim.is_multiple_of(W)
            && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, head_dim);
        false
    }
}

/// Scores of head `h` over `seq` into `p`: row i (stride `lp`, a multiple of [`W`]) holds
/// q_i·k_j for every key j < len, then zeros up to `len.next_multiple_of(W)` (keys of the
/// last panel that do not exist). Unscaled, like the f32 path's. The caller checked
/// [`supported`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn scores(
    q: &[f32],
    k: &[f32],
    seq: Range<usize>,
    h: usize,
    s: AttnShape,
    p: &mut [f32],
    lp: usize,
    sc: &mut Scratch,
) {
    let len = seq.len();
    assert!(lp.is_multiple_of(W) && lp >= len && p.len() >= len * lp);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `supported` checked AVX-512 F/BW/VL and BF16 and a head width of whole blocks;
    // the asserts above and in the caller bound every row read and written.
    unsafe {
        x86::scores(q, k, seq, h, s, p, lp, sc)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (q, k, seq, h, s, p, lp, sc);
        unreachable!("attention_bf16::supported is false off x86-64");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// 32 floats → 16 pairs, rounded to nearest even.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn pairs32(src: *const f32) -> __m512i {
        let lo = _mm512_loadu_ps(src);
        let hi = _mm512_loadu_ps(src.add(16));
        std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn dp(acc: __m512, a: __m512i, b: __m512i) -> __m512 {
        _mm512_dpbf16_ps(
            acc,
            std::mem::transmute::<__m512i, __m512bh>(a),
            std::mem::transmute::<__m512i, __m512bh>(b),
        )
    }

    /// Calls `$f::<R>(args)` for the run-time row count `$r` (1..=MR).
    macro_rules! by_rows {
        ($r:expr, $f:ident($($arg:expr),*)) => {
            match $r {
                1 => $f::<1>($($arg),*),
                2 => $f::<2>($($arg),*),
                3 => $f::<3>($($arg),*),
                4 => $f::<4>($($arg),*),
                5 => $f::<5>($($arg),*),
                6 => $f::<6>($($arg),*),
                7 => $f::<7>($($arg),*),
                _ => $f::<8>($($arg),*),
            }
        };
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn scores(
        q: &[f32],
        k: &[f32],
        seq: Range<usize>,
        h: usize,
        s: AttnShape,
        p: &mut [f32],
        lp: usize,
        sc: &mut Scratch,
    ) {
        let hd = s.head_dim;
        let hp = hd / 2;
        let (qd, kd, kh) = (s.q_dim(), s.kv_dim(), s.kv_head(h));
        let (base, len) = (seq.start, seq.len());
        let (kpanels, blocks) = (len.div_ceil(W), hd / W);
        sc.qb.resize(len * hp, 0);
        sc.kp.clear();
        sc.kp.resize(kpanels * hp * W, 0);

        // Queries: each row's pairs, contiguous.
        for i in 0..len {
            let src = q.as_ptr().add((base + i) * qd + h * hd);
            for c in 0..blocks {
                let dst = sc.qb.as_mut_ptr().add(i * hp + c * 16);
                _mm512_storeu_si512(dst.cast(), pairs32(src.add(c * W)));
            }
        }
        // Keys: each key's pairs, scattered into its panel's column (16 stores per 32 dims,
        // half what the f32 path's transposition does).
        let mut row = [0u32; 16];
        for j in 0..len {
            let src = k.as_ptr().add((base + j) * kd + kh * hd);
            let column = (j / W) * hp * W + j % W;
            for c in 0..blocks {
                _mm512_storeu_si512(row.as_mut_ptr().cast(), pairs32(src.add(c * W)));
                for (t, &pair) in row.iter().enumerate() {
                    sc.kp[column + (c * 16 + t) * W] = pair;
                }
            }
        }
        let mut i = 0;
        while i < len {
            let r = MR.min(len - i);
            for panel in 0..kpanels {
                let a = sc.qb.as_ptr().add(i * hp);
                let b = sc.kp.as_ptr().add(panel * hp * W);
                let c = p.as_mut_ptr().add(i * lp + panel * W);
                by_rows!(r, tile(a, hp, b, hp, c, lp));
            }
            i += r;
        }
    }

    /// c[R × 32] = Σ_t a[r][t] · b[t][0..32]: R query rows (stride `lda` pairs) against one
    /// panel of 32 keys (`tn` pairs deep), stored with row stride `ldc`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn tile<const R: usize>(
        a: *const u32,
        lda: usize,
        b: *const u32,
        tn: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for t in 0..tn {
            let b0 = _mm512_loadu_si512(b.add(t * W).cast());
            let b1 = _mm512_loadu_si512(b.add(t * W + 16).cast());
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(*a.add(r * lda + t) as i32);
                acc[0] = dp(acc[0], x, b0);
                acc[1] = dp(acc[1], x, b1);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.add(r * ldc), acc[0]);
            _mm512_storeu_ps(c.add(r * ldc + 16), acc[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention_fast::attention_low_precision;
    use crate::matmul::tests::Rng;

    fn bf16(x: &[f32]) -> Vec<f32> {
        x.iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect()
    }

    #[test]
    fn matches_its_reference_and_stays_close_to_f32() {
        if !supported(Isa::detect(), 32) {
            println!("skipped: no AVX-512 BF16 on this machine");
            return;
        }
        let mut rng = Rng::new(5);
        // Lengths around the panel width, a one-token sequence and an odd one.
        let seqs = vec![0..1, 1..34, 34..97, 97..104];
        let tokens = 104;
        for (n_head, n_head_kv, head_dim) in [(12, 12, 32), (4, 2, 64)] {
            let s = AttnShape {
                n_head,
                n_head_kv,
                head_dim,
            };
            let mut gen = |n: usize, amp: f32| (0..n).map(|_| rng.f32() * amp).collect::<Vec<_>>();
            let q = gen(tokens * n_head * head_dim, 3.0);
            let k = gen(tokens * n_head_kv * head_dim, 3.0);
            let v = gen(tokens * n_head_kv * head_dim, 1.0);
            for causal in [false, true] {
                // What the bf16 path computes: the scalar reference on q and k rounded to bf16.
                let mut want = vec![0.0; q.len()];
                crate::attention::attention(&bf16(&q), &bf16(&k), &v, &seqs, s, causal, &mut want);
                let mut exact = vec![0.0; q.len()];
                crate::attention::attention(&q, &k, &v, &seqs, s, causal, &mut exact);
                let mut got = vec![f32::NAN; q.len()];
                attention_low_precision(Isa::detect(), &q, &k, &v, &seqs, s, causal, &mut got);
                for ((g, w), e) in got.iter().zip(&want).zip(&exact) {
                    assert!((g - w).abs() <= 1e-5, "{s:?} causal={causal}: {g} vs {w}");
                    assert!(
                        (g - e).abs() <= 3e-2,
                        "{s:?} causal={causal}: {g} vs exact {e}"
                    );
                }
            }
        }
    }
}
