//! Attention of one (sequence, head) pair fused per block of 8 query rows, with AVX-512:
//! the block's scores, its softmax while they are in L1, then its share of P·V. Two
//! precisions ([`Precision`]):
//!
//! [`Precision::F32`]: f32 products and sums throughout, the scalar reference's result up to
//! rounding (AVX-512 F/BW/VL).
//!
//! [`Precision::Low`], for models whose weights are themselves 16-bit or quantised (the
//! backend decides; AVX-512 BF16 and VNNI):
//! - scores Q·Kᵀ with bf16 products (VDPBF16PS: pairs of bf16 multiplied and added into f32
//!   lanes, twice the multiply-adds of an f32 FMA);
//! - the softmax in f32;
//! - bidirectional (encoder) attention: out = P·V with int16 products summed exactly in
//!   int32 (VPDPWSSD, again twice an f32 FMA): each probability, already divided by its
//!   row's sum, as a multiple of 1/32767, and each value as a multiple of its column's
//!   largest |v| / 32767;
//! - causal (decoder) attention: P·V in f32.
//!
//! Why those roundings, measured against the golden vectors:
//! - all-minilm F16, pooled norm off PyTorch's (bound 0.1 %): f32 attention 0.086 %; bf16
//!   scores 0.064 %; bf16 scores and int16 P·V 0.063 % (cosine 0.999992); bf16 scores, V and
//!   P 0.11 %, out of bounds (8-bit mantissas; int16 V is 128× finer).
//! - SmolLM2 (30 causal layers, last-token pooling, cosine bound 0.999): bf16 scores 0.99950;
//!   int16 P·V 0.99867, out of bounds. A decoder's rows put most of their weight on a few
//!   keys (the first token above all), and the many small probabilities left keep only a
//!   few bits at a step of 1/32767; the error then grows through the layers. So causal
//!   attention keeps f32 probabilities and values.
//!
//! Overflow: a row's quantised probabilities sum to at most 32767 + ½ per visible key (each
//! rounds by ≤ ½), and |v| ≤ 32767, so |Σ p·v| ≤ (32767 + len/2)·32767 < 2³¹ for
//! len ≤ [`MAX_LEN`].
//!
//! `Low` packs a sequence's operands for all its heads at once (`pack`, into a `Packed`), in
//! one pass over the rows of q, k and v: a head's 32–256 bytes of a row hundreds of bytes
//! long is a stride the hardware prefetchers follow late. Head by head, 8 passages of 256
//! tokens ran at 195 GFLOP/s where one sequence, whose rows stayed in L2, ran at 244.
//! Measured with `benches/attention.rs`, old and new alternated (medians, 2 threads): a
//! 2048-token pass of 170 queries of 12 tokens went from 40 to 47 GFLOP/s, one of 8
//! passages from 198 to 204.
//! Then (same bench): the keys transposed 16 at a time in registers instead of scattered
//! pair by pair, and the softmax run step by step over a block's rows (`blocks`): passages
//! 209 → 238 GFLOP/s, queries 51 → 60.
//!
//! Layouts, with a "pair" = one u32 holding two 16-bit values (element 2t low, 2t+1 high),
//! the unit both dot-product instructions work on (`F32` reads q and v where they are and
//! keeps its keys in `kf`: panels of 32 keys, per head dimension d the 32 keys' value d):
//! - `qb`: per query head, per query row, its head_dim/2 bf16 pairs.
//! - `kp`: per KV head, keys in panels of 32; per panel, per pair index t, 32 keys' pair t
//!   (two vectors).
//! - `vp`: per KV head, per key pair t (keys 2t, 2t+1), per column c, the two keys' int16
//!   values of c.
//! - `pq`: per query row of the block, its int16 probabilities, so adjacent keys are a pair.

use crate::attention::AttnShape;
use crate::matmul::Isa;
use std::ops::Range;

/// Keys per score panel, and head dimensions per conversion or output chunk: two 16-lane
/// vectors. Score rows are padded to a multiple of it.
const W: usize = 32;
// The F32 scores run on the matmul's float micro-kernel, one of its panels per W keys.
const _: () = assert!(W == crate::matmul::pack::NR);
/// Query rows per block: 8 rows × 2 vectors = 16 accumulators.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the kernel is x86-64 only
const MR: usize = 8;
/// The arithmetic of a fused (sequence, head) pair (see the module note).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Precision {
    /// f32 throughout.
    F32,
    /// bf16 scores; int16 P·V for bidirectional attention.
    Low,
}

/// Longest sequence this path takes (see the overflow note above); longer ones take the
/// unfused path.
pub const MAX_LEN: usize = 1 << 15;
/// The int16 scale of probabilities and of each value column's largest magnitude.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const Q15: f32 = 32767.0;

/// Per-thread buffers of this path.
#[derive(Default)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the kernel is x86-64 only
pub(crate) struct Scratch {
    /// `F32`: the keys in f32 panels.
    kf: Vec<f32>,
    /// The block's scores, then probabilities: MR rows of `lp` floats.
    s: Vec<f32>,
    /// The block's int16 probabilities: MR rows of `lp` values.
    pq: Vec<i16>,
}

/// One sequence's operands of every head for [`Precision::Low`] (layouts in the module
/// note); left empty for `F32`, which packs its keys per head.
#[derive(Default)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the kernel is x86-64 only
pub(crate) struct Packed {
    qb: Vec<u32>,
    kp: Vec<u32>,
    /// Bidirectional attention only (causal attention reads v in f32 where it is).
    vp: Vec<u32>,
    /// Per value column: 32767 / its largest |v|, the multiplier that quantises it.
    vmult: Vec<f32>,
    /// Per value column: its largest |v| / 32767², what an int32 sum of P·V is worth.
    vscale: Vec<f32>,
}

/// Whether this machine and head width can take this path at `precision` (else: the
/// unfused f32 one).
pub fn supported(isa: Isa, head_dim: usize, precision: Precision) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let cpu = match precision {
            Precision::F32 => isa >= Isa::Avx512,
            Precision::Low => isa >= Isa::Avx512Vnni && is_x86_feature_detected!("avx512bf16"),
        };
        cpu && head_dim > 0 && head_dim.is_multiple_of(W)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, head_dim, precision);
        false
    }
}

/// Packs the operands of every head of `seq` for `precision` into `packed` (nothing for
/// `F32`); inputs laid out as in [`crate::attention::attention`]. With `parallel` (a long
/// sequence), q, k and v are packed on three rayon tasks.
///
/// # Safety
/// [`supported`] must hold for this machine and `precision`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack(
    precision: Precision,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seq: Range<usize>,
    s: AttnShape,
    causal: bool,
    parallel: bool,
    packed: &mut Packed,
) {
    assert!(seq.len() <= MAX_LEN && s.head_dim.is_multiple_of(W));
    assert!(q.len() >= seq.end * s.q_dim() && k.len() >= seq.end * s.kv_dim());
    assert!(v.len() >= seq.end * s.kv_dim());
    if precision == Precision::F32 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let Packed {
            qb,
            kp,
            vp,
            vmult,
            vscale,
        } = packed;
        let (hd, base, len) = (s.head_dim, seq.start, seq.len());
        // SAFETY (all three): `supported` checked the CPU features, the asserts above bound
        // every read.
        let mut queries = || unsafe { x86::pack_queries(q, base, len, s.n_head, hd, qb) };
        let mut keys = || unsafe { x86::pack_keys(k, base, len, s.n_head_kv, hd, kp) };
        // Causal (decoder) attention keeps P·V in f32: see the module note.
        let mut values = || {
            if !causal {
                unsafe { x86::pack_values(v, base, len, s.n_head_kv, hd, vp, vmult, vscale) }
            }
        };
        if parallel {
            rayon::join(queries, || rayon::join(keys, values));
        } else {
            queries();
            keys();
            values();
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (q, k, v, causal, parallel, packed);
        unreachable!("attention_fused::supported is false off x86-64");
    }
}

/// Attention of query head `h` over `seq`, written into the head's columns of `out` (rows of
/// stride `s.q_dim()`); inputs laid out as in [`crate::attention::attention`], and `packed`
/// by [`pack`] from them. The caller checked [`supported`], `seq.len() ≤ MAX_LEN`, and that
/// `out` holds the sequence's rows.
///
/// # Safety
/// [`supported`] must hold for this machine and `precision` (the kernels use AVX-512, and
/// for `Low` its BF16 and VNNI extensions); `packed` must come from [`pack`] with the same
/// arguments; `out` must be valid for writes of the rows `seq` × columns
/// `h·head_dim..+head_dim`, and no other thread may touch those while this runs.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn one_head(
    precision: Precision,
    packed: &Packed,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seq: Range<usize>,
    h: usize,
    s: AttnShape,
    causal: bool,
    out: *mut f32,
    sc: &mut Scratch,
) {
    let end = seq.end;
    assert!(seq.len() <= MAX_LEN && s.head_dim.is_multiple_of(W) && h < s.n_head);
    assert!(q.len() >= end * s.q_dim() && k.len() >= end * s.kv_dim());
    assert!(v.len() >= end * s.kv_dim());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `supported` checked the CPU features; the asserts above bound every read of q,
    // k and v, `one_head_low` those of `packed`, the caller every write.
    unsafe {
        match precision {
            Precision::F32 => x86::one_head_f32(q, k, v, seq, h, s, causal, out, sc),
            Precision::Low => x86::one_head_low(packed, v, seq, h, s, causal, out, sc),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (precision, packed, q, k, v, seq, h, s, causal, out, sc);
        unreachable!("attention_fused::supported is false off x86-64");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The tiles and the per-row softmax are kept out of line: each call is a loop of
    //! hundreds to thousands of instructions, and they show as their own symbols in profiles.
    use super::*;
    use crate::attention_fast::pack_key_panels;
    use crate::matmul::float;
    use std::arch::x86_64::*;

    /// 32 floats → 16 bf16 pairs, rounded to nearest even.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn pairs32(src: *const f32) -> __m512i {
        let lo = _mm512_loadu_ps(src);
        let hi = _mm512_loadu_ps(src.add(16));
        std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn dp_bf16(acc: __m512, a: __m512i, b: __m512i) -> __m512 {
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

    /// [`Precision::Low`]: the blocks with bf16 scores, on the operands [`pack`] put in
    /// `packed`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx512vnni,avx2,fma")]
    pub(super) unsafe fn one_head_low(
        packed: &Packed,
        v: &[f32],
        seq: Range<usize>,
        h: usize,
        s: AttnShape,
        causal: bool,
        out: *mut f32,
        sc: &mut Scratch,
    ) {
        let (hd, len, kh) = (s.head_dim, seq.len(), s.kv_head(h));
        let hp = hd / 2;
        let lp = len.next_multiple_of(W);
        let qb = &packed.qb[h * len * hp..][..len * hp];
        let kp = &packed.kp[kh * lp * hp..][..lp * hp];
        // Causal (decoder) attention keeps P·V in f32: see the module note.
        let values = (!causal).then(|| {
            let pairs = len.div_ceil(2);
            (
                &packed.vp[kh * pairs * hd..][..pairs * hd],
                &packed.vscale[kh * hd..][..hd],
            )
        });
        blocks(v, seq, h, s, causal, out, sc, values, |sc, i, r, seen| {
            for panel in 0..seen.div_ceil(W) {
                let a = qb.as_ptr().add(i * hp);
                let b = kp.as_ptr().add(panel * hp * W);
                let c = sc.s.as_mut_ptr().add(panel * W);
                by_rows!(r, scores_tile(a, hp, b, hp, c, lp));
            }
        });
    }

    /// [`Precision::F32`]: keys in the panels of the matmul's float micro-kernel (packed as
    /// the unfused path packs them), then the blocks with f32 scores on that micro-kernel
    /// (queries read in place) and f32 P·V.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) unsafe fn one_head_f32(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        seq: Range<usize>,
        h: usize,
        s: AttnShape,
        causal: bool,
        out: *mut f32,
        sc: &mut Scratch,
    ) {
        let hd = s.head_dim;
        let (qd, kd, kh) = (s.q_dim(), s.kv_dim(), s.kv_head(h));
        let (base, len) = (seq.start, seq.len());
        let lp = len.next_multiple_of(W);
        pack_key_panels(k, seq.clone(), kd, kh * hd, hd, &mut sc.kf);
        blocks(v, seq, h, s, causal, out, sc, None, |sc, i, r, seen| {
            let a = q.as_ptr().add((base + i) * qd + h * hd);
            for panel in 0..seen.div_ceil(W) {
                let b = sc.kf.as_ptr().add(panel * hd * W);
                let c = sc.s.as_mut_ptr().add(panel * W);
                // The matmul's f32 micro-kernel: r ≤ 8 rows × one panel of NR = W keys.
                float::tile(Isa::Avx512, r, a, qd, b, hd, c, lp, W, false);
            }
        });
    }

    /// The block loop of both precisions, per block of MR query rows (from row `i`, `r`
    /// rows): `scores(sc, i, r, seen)` fills their score rows in `sc.s` for the `seen` keys
    /// any of them sees; then each row's softmax, and the block's P·V into `out` (in int16
    /// where `values` holds the head's packed values and their column scales, else in f32
    /// from `v` in place).
    /// Inlined into each caller, so it runs with the caller's CPU features.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn blocks(
        v: &[f32],
        seq: Range<usize>,
        h: usize,
        s: AttnShape,
        causal: bool,
        out: *mut f32,
        sc: &mut Scratch,
        values: Option<(&[u32], &[f32])>,
        mut scores: impl FnMut(&mut Scratch, usize, usize, usize),
    ) {
        let hd = s.head_dim;
        let (qd, kd, kh) = (s.q_dim(), s.kv_dim(), s.kv_head(h));
        let (base, len) = (seq.start, seq.len());
        let lp = len.next_multiple_of(W);
        sc.s.resize(MR * lp, 0.0);
        if values.is_some() {
            sc.pq.resize(MR * lp, 0);
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let mut i = 0;
        while i < len {
            let r = MR.min(len - i);
            // Keys any row of the block sees (causal: up to its last row).
            let seen = if causal { i + r } else { len };
            prefetch_block_out(out.add((base + i) * qd + h * hd), r, qd, hd);
            scores(sc, i, r, seen);
            // The softmax one step at a time over all the block's rows: within a row each
            // step waits on the last (its maximum, then its sum, each reduced across lanes),
            // across rows nothing does, so the core overlaps one row's reductions with the
            // next row's loop.
            let visible = |row: usize| if causal { i + row + 1 } else { len };
            let mut max = [0.0f32; MR];
            for (row, max) in max.iter_mut().enumerate().take(r) {
                *max = row_max(&sc.s[row * lp..(row + 1) * lp], visible(row));
            }
            let mut sum = [0.0f32; MR];
            for (row, sum) in sum.iter_mut().enumerate().take(r) {
                let scores = &mut sc.s[row * lp..(row + 1) * lp];
                *sum = exponentials(scores, visible(row), scale, max[row]);
            }
            for (row, &sum) in sum.iter().enumerate().take(r) {
                let scores = &mut sc.s[row * lp..(row + 1) * lp];
                if values.is_some() {
                    let probs = &mut sc.pq[row * lp..(row + 1) * lp];
                    to_q15(scores, visible(row), seen.next_multiple_of(2), sum, probs);
                } else {
                    normalise(scores, visible(row), seen, sum);
                }
            }
            for chunk in (0..hd).step_by(W) {
                let c = out.add((base + i) * qd + h * hd + chunk);
                if let Some((vp, vscale)) = values {
                    let (pq, pairs) = (sc.pq.as_ptr(), seen.div_ceil(2));
                    by_rows!(r, values_tile(pq, lp, vp, vscale, chunk, pairs, c, qd));
                } else {
                    let v = v.as_ptr().add(base * kd + kh * hd + chunk);
                    by_rows!(r, values_tile_f32(sc.s.as_ptr(), lp, v, kd, seen, c, qd));
                }
            }
            i += r;
        }
    }

    /// Asks for the output lines of a block of `r` rows (stride `ld`, `hd` wide) for writing:
    /// they arrive while its scores and softmax run instead of stalling the last stores.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn prefetch_block_out(first: *mut f32, r: usize, ld: usize, hd: usize) {
        for row in 0..r {
            for c in (0..hd).step_by(16) {
                _mm_prefetch::<_MM_HINT_ET0>(first.add(row * ld + c).cast());
            }
        }
    }

    /// Queries of every head → their bf16 pairs, per head its rows contiguous.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn pack_queries(
        q: &[f32],
        base: usize,
        len: usize,
        n_head: usize,
        hd: usize,
        qb: &mut Vec<u32>,
    ) {
        let (hp, stride) = (hd / 2, n_head * hd);
        qb.resize(n_head * len * hp, 0);
        for i in 0..len {
            let src = q.as_ptr().add((base + i) * stride);
            for h in 0..n_head {
                for c in (0..hd).step_by(W) {
                    let dst = qb.as_mut_ptr().add((h * len + i) * hp + c / 2);
                    _mm512_storeu_si512(dst.cast(), pairs32(src.add(h * hd + c)));
                }
            }
        }
    }

    /// Keys of every KV head → bf16 pairs in their panels: 16 keys at a time, their pairs
    /// transposed in registers so that each pair index is one 16-key store (scattering each
    /// pair on its own took 16 stores per key and 32 dims, ~9 % of the attention's time). The
    /// last panel's keys past `len` are zero.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn pack_keys(
        k: &[f32],
        base: usize,
        len: usize,
        n_kv: usize,
        hd: usize,
        kp: &mut Vec<u32>,
    ) {
        let (hp, stride) = (hd / 2, n_kv * hd);
        let per_head = len.next_multiple_of(W) * hp;
        // Every key's pairs are written below, a group's missing keys as zeros; only the
        // last panel's other half, when no key reaches it, is zeroed here (not the whole
        // buffer, which is hundreds of kilobytes a sequence).
        kp.resize(n_kv * per_head, 0);
        if !len.is_multiple_of(W) && len % W <= 16 {
            for kh in 0..n_kv {
                let last = &mut kp[kh * per_head + (len / W) * hp * W..][..hp * W];
                for t in 0..hp {
                    last[t * W + 16..(t + 1) * W].fill(0);
                }
            }
        }
        for j0 in (0..len).step_by(16) {
            let n = 16.min(len - j0);
            // Where key j0's pair 0 goes in its head's panels: j0 % W is 0 or 16.
            let at = (j0 / W) * hp * W + j0 % W;
            for kh in 0..n_kv {
                for c in (0..hd).step_by(W) {
                    let src = k.as_ptr().add((base + j0) * stride + kh * hd + c);
                    let keys: [__m512i; 16] = std::array::from_fn(|r| {
                        if r < n {
                            pairs32(src.add(r * stride))
                        } else {
                            _mm512_setzero_si512()
                        }
                    });
                    let dst = kp.as_mut_ptr().add(kh * per_head + at + c / 2 * W);
                    for (t, pairs) in transpose16(keys).iter().enumerate() {
                        _mm512_storeu_si512(dst.add(t * W).cast(), *pairs);
                    }
                }
            }
        }
    }

    /// The 16 × 16 transpose of 32-bit lanes: lane i of output t is lane t of input i.
    /// Interleaves of 32 then 64 bits transpose each 4 × 4 block within 128-bit lanes; two
    /// rounds of 128-bit shuffles then move the blocks. 64 shuffles.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
        let a: [__m512i; 16] = std::array::from_fn(|i| {
            let (x, y) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_epi32(x, y)
            } else {
                _mm512_unpackhi_epi32(x, y)
            }
        });
        // b[4q + s], 128-bit lane L: inputs 4q..4q+3 at lane 4L + s.
        let b: [__m512i; 16] = std::array::from_fn(|i| {
            let (q, s) = (i / 4, i % 4);
            let (x, y) = (a[4 * q + s / 2], a[4 * q + 2 + s / 2]);
            if s % 2 == 0 {
                _mm512_unpacklo_epi64(x, y)
            } else {
                _mm512_unpackhi_epi64(x, y)
            }
        });
        // Output 4L + s: 128-bit lane Q from lane L of b[4Q + s].
        let mut out = [_mm512_setzero_si512(); 16];
        for s in 0..4 {
            let e0 = _mm512_shuffle_i32x4::<0x44>(b[s], b[4 + s]);
            let e1 = _mm512_shuffle_i32x4::<0xEE>(b[s], b[4 + s]);
            let e2 = _mm512_shuffle_i32x4::<0x44>(b[8 + s], b[12 + s]);
            let e3 = _mm512_shuffle_i32x4::<0xEE>(b[8 + s], b[12 + s]);
            out[s] = _mm512_shuffle_i32x4::<0x88>(e0, e2);
            out[4 + s] = _mm512_shuffle_i32x4::<0xDD>(e0, e2);
            out[8 + s] = _mm512_shuffle_i32x4::<0x88>(e1, e3);
            out[12 + s] = _mm512_shuffle_i32x4::<0xDD>(e1, e3);
        }
        out
    }

    /// Values of every KV head → int16, each column scaled by 32767 / its largest |v| (one
    /// pass for the maxima, one for the pairs), two keys per u32 (a missing last key of an
    /// odd length is zero); `vscale` gets what a unit of the P·V sum is worth per column.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn pack_values(
        v: &[f32],
        base: usize,
        len: usize,
        n_kv: usize,
        hd: usize,
        vp: &mut Vec<u32>,
        vmult: &mut Vec<f32>,
        vscale: &mut Vec<f32>,
    ) {
        let kd = n_kv * hd;
        let row = |j: usize| v.as_ptr().add((base + j) * kd);
        // The maxima, gathered in `vmult` first.
        vmult.clear();
        vmult.resize(kd, 0.0);
        vscale.clear();
        vscale.resize(kd, 0.0);
        let m = vmult.as_mut_ptr();
        for j in 0..len {
            for c in (0..kd).step_by(16) {
                let x = _mm512_abs_ps(_mm512_loadu_ps(row(j).add(c)));
                _mm512_storeu_ps(m.add(c), _mm512_max_ps(_mm512_loadu_ps(m.add(c)), x));
            }
        }
        for c in (0..kd).step_by(16) {
            let max = _mm512_loadu_ps(m.add(c));
            // A zero column stays zero: its multiplier 0, not ∞.
            let nonzero = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(max, _mm512_setzero_ps());
            let mult = _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(Q15), max);
            _mm512_storeu_ps(m.add(c), mult);
            let worth = _mm512_mul_ps(max, _mm512_set1_ps(1.0 / (Q15 * Q15)));
            _mm512_storeu_ps(vscale.as_mut_ptr().add(c), worth);
        }
        let pairs = len.div_ceil(2);
        vp.resize(n_kv * pairs * hd, 0);
        let low16 = _mm512_set1_epi32(0xFFFF);
        for t in 0..pairs {
            for c in (0..kd).step_by(16) {
                let mult = _mm512_loadu_ps(m.add(c));
                let a = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(row(2 * t).add(c)), mult));
                let b = if 2 * t + 1 < len {
                    let x = _mm512_loadu_ps(row(2 * t + 1).add(c));
                    _mm512_cvtps_epi32(_mm512_mul_ps(x, mult))
                } else {
                    _mm512_setzero_si512()
                };
                let pair = _mm512_or_si512(_mm512_and_si512(a, low16), _mm512_slli_epi32::<16>(b));
                let (kh, col) = (c / hd, c % hd);
                let dst = vp.as_mut_ptr().add((kh * pairs + t) * hd + col);
                _mm512_storeu_si512(dst.cast(), pair);
            }
        }
    }

    /// 2^t for t ≤ 0 (or a little above), 16 lanes: t = k + f with k an integer and
    /// |f| ≤ ½, 2^f from its Taylor series to f⁶ (relative error < 2e-7), then ×2^k by
    /// VSCALEFPS, which goes gracefully to 0 for very negative t: no clamping needed.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp2(t: __m512) -> __m512 {
        const LN2: f32 = std::f32::consts::LN_2;
        let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let f = _mm512_sub_ps(t, k);
        // c_n = ln2^n / n!, highest first.
        let c = [
            LN2 * LN2 * LN2 * LN2 * LN2 * LN2 / 720.0,
            LN2 * LN2 * LN2 * LN2 * LN2 / 120.0,
            LN2 * LN2 * LN2 * LN2 / 24.0,
            LN2 * LN2 * LN2 / 6.0,
            LN2 * LN2 / 2.0,
            LN2,
            1.0,
        ];
        let mut p = _mm512_set1_ps(c[0]);
        for &cn in &c[1..] {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(cn));
        }
        _mm512_scalef_ps(p, k)
    }

    /// Lanes 0..n of a 16-lane mask (n ≤ 16).
    #[inline]
    fn first(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// The largest of `x[..visible]` (`visible` > 0).
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn row_max(x: &[f32], visible: usize) -> f32 {
        assert!(visible > 0 && visible <= x.len());
        let x = x.as_ptr();
        let (full, tail) = (visible / 16 * 16, first(visible % 16));
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for j in (0..full).step_by(16) {
            m = _mm512_max_ps(m, _mm512_loadu_ps(x.add(j)));
        }
        m = _mm512_mask_max_ps(m, tail, m, _mm512_maskz_loadu_ps(tail, x.add(full)));
        _mm512_reduce_max_ps(m)
    }

    /// `x[..visible]` ← e^{(x − max)·scale} for the row's maximum `max`, in place; returns
    /// their sum (≥ 1: the maximum contributes e⁰).
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn exponentials(x: &mut [f32], visible: usize, scale: f32, max: f32) -> f32 {
        assert!(visible > 0 && visible <= x.len());
        let x = x.as_mut_ptr();
        let (full, tail) = (visible / 16 * 16, first(visible % 16));
        // e^{(s − max)·scale} = 2^{s·a − max·a}, a = scale·log2 e.
        let a = _mm512_set1_ps(scale * std::f32::consts::LOG2_E);
        let b = _mm512_set1_ps(-max * scale * std::f32::consts::LOG2_E);
        let mut sum = _mm512_setzero_ps();
        for j in (0..full).step_by(16) {
            let e = exp2(_mm512_fmadd_ps(_mm512_loadu_ps(x.add(j)), a, b));
            _mm512_storeu_ps(x.add(j), e);
            sum = _mm512_add_ps(sum, e);
        }
        let e = exp2(_mm512_fmadd_ps(
            _mm512_maskz_loadu_ps(tail, x.add(full)),
            a,
            b,
        ));
        _mm512_mask_storeu_ps(x.add(full), tail, e);
        _mm512_reduce_add_ps(_mm512_mask_add_ps(sum, tail, sum, e))
    }

    /// A row's exponentials `e[..visible]` (summing to `sum`) → e / sum as multiples of
    /// 1/32767 in `probs[..visible]`; `probs[visible..width]` = 0 (keys the row does not
    /// see, and the pad of an odd count).
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn to_q15(e: &[f32], visible: usize, width: usize, sum: f32, probs: &mut [i16]) {
        assert!(visible <= width && width <= e.len().min(probs.len()));
        // Rounded to nearest (the MXCSR default) by the conversion; ≤ 32767 as e ≤ Σ.
        let mult = _mm512_set1_ps(Q15 / sum);
        let (x, pq) = (e.as_ptr(), probs.as_mut_ptr());
        let (full, tail) = (visible / 16 * 16, first(visible % 16));
        for j in (0..full).step_by(16) {
            let p = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x.add(j)), mult));
            _mm256_storeu_si256(pq.add(j).cast(), _mm512_cvtepi32_epi16(p));
        }
        let e = _mm512_maskz_loadu_ps(tail, x.add(full));
        let p = _mm512_cvtps_epi32(_mm512_mul_ps(e, mult));
        _mm512_mask_cvtepi32_storeu_epi16(pq.add(full).cast(), tail, p);
        probs[visible..width].fill(0);
    }

    /// A row's exponentials `e[..visible]` (summing to `sum`) → e / sum in place;
    /// `e[visible..width]` = 0.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn normalise(e: &mut [f32], visible: usize, width: usize, sum: f32) {
        assert!(visible <= width && width <= e.len());
        let inv = _mm512_set1_ps(1.0 / sum);
        let x = e.as_mut_ptr();
        for j in (0..visible).step_by(16) {
            let lanes = first((visible - j).min(16));
            let p = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, x.add(j)), inv);
            _mm512_mask_storeu_ps(x.add(j), lanes, p);
        }
        e[visible..width].fill(0.0);
    }

    /// c[R × 32] = P·V in f32 for one 32-column chunk: R rows of probabilities (stride `lp`)
    /// against `keys` rows of values (stride `ldv`), stored with row stride `ldc`.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn values_tile_f32<const R: usize>(
        p: *const f32,
        lp: usize,
        v: *const f32,
        ldv: usize,
        keys: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for j in 0..keys {
            let b0 = _mm512_loadu_ps(v.add(j * ldv));
            let b1 = _mm512_loadu_ps(v.add(j * ldv + 16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*p.add(r * lp + j));
                acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.add(r * ldc), acc[0]);
            _mm512_storeu_ps(c.add(r * ldc + 16), acc[1]);
        }
    }

    /// c[R × 32] = P·V for one 32-column chunk of the head (scaled back to floats): R rows
    /// of int16 probabilities `pq` (stride `lp`) against `pairs` key pairs of the head's
    /// packed values `vp` (column scales `vscale`).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn values_tile<const R: usize>(
        pq: *const i16,
        lp: usize,
        vp: &[u32],
        vscale: &[f32],
        chunk: usize,
        pairs: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        let hd = vscale.len();
        assert!(chunk + W <= hd && pairs * hd <= vp.len());
        let a = pq.cast::<u8>();
        let b = vp.as_ptr().add(chunk);
        let mut acc = [[_mm512_setzero_si512(); 2]; R];
        for t in 0..pairs {
            let b0 = _mm512_loadu_si512(b.add(t * hd).cast());
            let b1 = _mm512_loadu_si512(b.add(t * hd + 16).cast());
            for (r, acc) in acc.iter_mut().enumerate() {
                // Keys 2t and 2t+1 of row r: one u32, read unaligned from the i16 row.
                let x =
                    _mm512_set1_epi32(a.add((r * lp + 2 * t) * 2).cast::<i32>().read_unaligned());
                acc[0] = _mm512_dpwssd_epi32(acc[0], x, b0);
                acc[1] = _mm512_dpwssd_epi32(acc[1], x, b1);
            }
        }
        let s0 = _mm512_loadu_ps(vscale.as_ptr().add(chunk));
        let s1 = _mm512_loadu_ps(vscale.as_ptr().add(chunk + 16));
        for (r, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(
                c.add(r * ldc),
                _mm512_mul_ps(_mm512_cvtepi32_ps(acc[0]), s0),
            );
            _mm512_storeu_ps(
                c.add(r * ldc + 16),
                _mm512_mul_ps(_mm512_cvtepi32_ps(acc[1]), s1),
            );
        }
    }

    /// c[R × 32] = Σ_t a[r][t] · b[t][0..32]: R query rows (stride `lda` pairs) against one
    /// panel of 32 keys (`tn` pairs deep), stored with row stride `ldc`.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn scores_tile<const R: usize>(
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
                acc[0] = dp_bf16(acc[0], x, b0);
                acc[1] = dp_bf16(acc[1], x, b1);
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

    fn bf16(x: f32) -> f64 {
        half::bf16::from_f32(x).to_f32() as f64
    }

    /// What this path computes, written out in scalar f64: scores of bf16-rounded q and k,
    /// the softmax, then (not causal) probabilities and values rounded to their int16 steps.
    fn emulated(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        seqs: &[Range<usize>],
        s: AttnShape,
        causal: bool,
    ) -> Vec<f32> {
        let (hd, qd, kd) = (s.head_dim, s.q_dim(), s.kv_dim());
        let mut out = vec![0.0; q.len()];
        for seq in seqs {
            for h in 0..s.n_head {
                let (qc, kc) = (h * hd, s.kv_head(h) * hd);
                let vmax: Vec<f64> = (0..hd)
                    .map(|c| {
                        seq.clone()
                            .map(|j| v[j * kd + kc + c].abs() as f64)
                            .fold(0.0, f64::max)
                    })
                    .collect();
                for i in seq.clone() {
                    let keys = seq.start..if causal { i + 1 } else { seq.end };
                    let scores: Vec<f64> = keys
                        .clone()
                        .map(|j| {
                            (0..hd)
                                .map(|c| bf16(q[i * qd + qc + c]) * bf16(k[j * kd + kc + c]))
                                .sum::<f64>()
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores
                        .iter()
                        .map(|x| ((x - max) / (hd as f64).sqrt()).exp())
                        .collect();
                    let sum: f64 = e.iter().sum();
                    for c in 0..hd {
                        let dot: f64 = keys
                            .clone()
                            .zip(&e)
                            .map(|(j, e)| {
                                if causal {
                                    return e / sum * v[j * kd + kc + c] as f64;
                                }
                                let vq = if vmax[c] > 0.0 {
                                    (v[j * kd + kc + c] as f64 * 32767.0 / vmax[c]).round()
                                } else {
                                    0.0
                                };
                                (e / sum * 32767.0).round() * vq
                            })
                            .sum();
                        let unit = if causal {
                            1.0
                        } else {
                            vmax[c] / (32767.0 * 32767.0)
                        };
                        out[i * qd + qc + c] = (dot * unit) as f32;
                    }
                }
            }
        }
        out
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transpose16_transposes() {
        if !is_x86_feature_detected!("avx512f") {
            println!("skipped: no AVX-512 on this machine");
            return;
        }
        let m: [[u32; 16]; 16] =
            std::array::from_fn(|i| std::array::from_fn(|t| 100 * i as u32 + t as u32));
        // SAFETY: AVX-512 F detected; [u32; 16] and __m512i have the same size.
        let t: [[u32; 16]; 16] = unsafe {
            use std::arch::x86_64::__m512i;
            let rows = std::mem::transmute::<[[u32; 16]; 16], [__m512i; 16]>(m);
            std::mem::transmute::<[__m512i; 16], [[u32; 16]; 16]>(x86::transpose16(rows))
        };
        for (i, row) in m.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(t[j][i], v, "lane {i} of output {j}");
            }
        }
    }

    #[test]
    fn matches_its_emulation_and_stays_close_to_f32() {
        if !supported(Isa::detect(), 32, Precision::Low) {
            println!("skipped: no AVX-512 BF16 + VNNI on this machine");
            return;
        }
        let mut rng = Rng::new(5);
        // Lengths around the panel width and the row block, a one-token sequence, odd ones;
        // the last two long enough for q, k and v to be packed on parallel tasks.
        let seqs = vec![0..1, 1..34, 34..97, 97..104, 104..113, 113..177, 177..276];
        let tokens = 276;
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
                let want = emulated(&q, &k, &v, &seqs, s, causal);
                let mut exact = vec![0.0; q.len()];
                crate::attention::attention(&q, &k, &v, &seqs, s, causal, &mut exact);
                let mut got = vec![f32::NAN; q.len()];
                attention_low_precision(
                    Isa::detect(),
                    &q,
                    &k,
                    &v,
                    &seqs,
                    s,
                    crate::attention::Mask::from_causal(causal),
                    &mut got,
                );
                // Not causal: a probability may round to the other int16 step (the
                // exponentials differ in their last bits), each such flip moving the sum by
                // one step of a value column, ≤ 1/32767 of |v|'s maximum (here < 1). Causal:
                // f32 products, only the summation order differs.
                let bound = if causal { 1e-5 } else { 3.0 / 32767.0 };
                for ((g, w), e) in got.iter().zip(&want).zip(&exact) {
                    assert!((g - w).abs() <= bound, "{s:?} causal={causal}: {g} vs {w}");
                    assert!(
                        (g - e).abs() <= 3e-2,
                        "{s:?} causal={causal}: {g} vs exact {e}"
                    );
                }
            }
        }
    }
}
