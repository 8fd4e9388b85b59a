//! Softmax attention, parallel over (sequence, head) pairs: the same result as the scalar
//! reference `attention::attention`, which the tests compare it with.
//!
//! With AVX-512 and a head width that is a multiple of 32, each pair runs fused, 8 query
//! rows at a time (the `attention_fused` module): in f32 for [`attention`], in bf16 and int16
//! for [`attention_low_precision`] where the CPU has AVX-512 BF16 and VNNI (models whose
//! weights are 16-bit or quantised).
//!
//! Elsewhere (AVX2, NEON, other head widths), per pair it is two small matrix products on the
//! float micro-kernel of the matmul: the head's keys are packed into panels (scores = Q·Kᵀ),
//! then its values (out = P·V), with a vectorised exponential between them and the softmax's
//! division applied to the output rows.

use crate::attention::{AttnShape, Mask};
use crate::attention_fused as fused;
use crate::matmul::float::{mr_for, tile};
use crate::matmul::pack::NR;
use crate::matmul::{Isa, SendPtr};
use crate::ops_fast::{exp_lane, max_lanes, multiversion, sum_lanes};
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::Mutex;

#[derive(Default)]
struct Scratch {
    /// Keys of the head, in panels of NR keys × head_dim.
    kp: Vec<f32>,
    /// Values of the head, in panels of NR dims × len.
    vp: Vec<f32>,
    /// Scores, then unnormalised probabilities: len × len (row stride `len`).
    p: Vec<f32>,
    /// Per query row, 1 / Σ of its probabilities.
    inv_sum: Vec<f32>,
    /// The fused path's buffers.
    fused: fused::Scratch,
    /// The fused path's operands of a short sequence.
    packed: fused::Packed,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The fused path's packed long sequences of a call (one entry per sequence, left empty for
/// short ones; ~5 MB for a 2048-token forward pass of all-minilm passages), lent to the call
/// and given back after it, so that they are not allocated again per layer: one set per
/// concurrent call, not one per thread that ever made one (the scheduler's forward passes
/// move between rayon's threads). Short sequences are packed in their thread's scratch, one
/// at a time: all the queries of a batch packed at once held ~11 MB, mostly key-panel
/// padding.
static PACKED: Mutex<Vec<Vec<fused::Packed>>> = Mutex::new(Vec::new());

/// Attention over packed sequences; layout as in [`crate::attention::attention`].
#[allow(clippy::too_many_arguments)]
pub fn attention(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &[Range<usize>],
    s: AttnShape,
    mask: Mask,
    out: &mut [f32],
) {
    let path = fused::Precision::F32;
    run(
        isa,
        fused::supported(isa, s.head_dim, path).then_some(path),
        q,
        k,
        v,
        seqs,
        s,
        mask,
        out,
    )
}

/// [`attention`] with its products in bf16 and int16 where the machine has AVX-512 BF16 and
/// VNNI and the head width suits ([`fused::supported`]), else exactly as [`attention`]: for
/// models whose weights are themselves 16-bit or quantised.
#[allow(clippy::too_many_arguments)]
pub fn attention_low_precision(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &[Range<usize>],
    s: AttnShape,
    mask: Mask,
    out: &mut [f32],
) {
    let path = [fused::Precision::Low, fused::Precision::F32]
        .into_iter()
        .find(|&p| fused::supported(isa, s.head_dim, p));
    run(isa, path, q, k, v, seqs, s, mask, out)
}

#[allow(clippy::too_many_arguments)]
/// `path`: the precision of the fused path, where the machine and head width have one. The
/// fused path knows only full and causal masks: a window or a bias runs on the float path.
fn run(
    isa: Isa,
    path: Option<fused::Precision>,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &[Range<usize>],
    s: AttnShape,
    mask: Mask,
    out: &mut [f32],
) {
    let causal = mask == Mask::Causal;
    let path = path.filter(|_| matches!(mask, Mask::Full | Mask::Causal));
    let (qd, kd) = (s.q_dim(), s.kv_dim());
    let tokens = seqs.iter().map(|r| r.end).max().unwrap_or(0);
    assert!(
        s.n_head_kv > 0 && s.n_head.is_multiple_of(s.n_head_kv),
        "attention: heads do not group"
    );
    assert!(
        q.len() >= tokens * qd && out.len() >= tokens * qd,
        "attention: q/out too short"
    );
    assert!(
        k.len() >= tokens * kd && v.len() >= tokens * kd,
        "attention: k/v too short"
    );
    if s.head_dim == 0 {
        return;
    }
    // One parallel region over the sequences. The fused path first packs a sequence's
    // operands for all its heads (see `fused::pack`): a long one into a buffer of this call,
    // then its heads run as parallel tasks, so that one passage still fills every thread; a
    // short one (a query) into its thread's scratch, then its heads run there in turn.
    let pool = || PACKED.lock().unwrap_or_else(|e| e.into_inner());
    let mut packed = pool().pop().unwrap_or_default();
    packed.resize_with(packed.len().max(seqs.len()), Default::default);
    let op = SendPtr(out.as_mut_ptr());
    // Head h of `seq`, on the fused path if `fused` (from `pk`, packed for it).
    let head = |seq: &Range<usize>,
                h: usize,
                fused: Option<(fused::Precision, &fused::Packed)>,
                sc: &mut Scratch| {
        let seq = seq.clone();
        match fused {
            Some((p, pk)) => {
                let out = op.get();
                // SAFETY: `fused::supported` held for p, and `pk` was packed from these
                // arguments; rows `seq` × the columns of head h of out belong to this pair
                // alone; the asserts above cover the sequence's rows.
                unsafe { fused::one_head(p, pk, q, k, v, seq, h, s, causal, out, &mut sc.fused) };
            }
            None => one_head(isa, q, k, v, seq, h, s, mask, op, sc),
        }
    };
    let sequence = |(seq, pk): (&Range<usize>, &mut fused::Packed)| {
        if seq.is_empty() {
            return;
        }
        let fused = path.filter(|_| seq.len() <= fused::MAX_LEN);
        if seq.len() >= PARALLEL_HEADS {
            if let Some(p) = fused {
                // SAFETY: `fused::supported` held for p.
                unsafe { fused::pack(p, q, k, v, seq.clone(), s, causal, true, pk) };
            }
            let pk = &*pk;
            (0..s.n_head)
                .into_par_iter()
                .for_each(|h| with_scratch(|sc| head(seq, h, fused.map(|p| (p, pk)), sc)));
        } else {
            with_scratch(|sc| {
                let mut own = std::mem::take(&mut sc.packed);
                if let Some(p) = fused {
                    // SAFETY: `fused::supported` held for p.
                    unsafe { fused::pack(p, q, k, v, seq.clone(), s, causal, false, &mut own) };
                }
                for h in 0..s.n_head {
                    head(seq, h, fused.map(|p| (p, &own)), sc);
                }
                sc.packed = own;
            });
        }
    };
    seqs.par_iter()
        .zip(packed[..seqs.len()].par_iter_mut())
        .for_each(sequence);
    pool().push(packed);
}

/// `f` with this thread's scratch, taken out of the thread-local so that a nested call (work
/// stealing) cannot find it borrowed.
fn with_scratch(f: impl FnOnce(&mut Scratch)) {
    let mut sc = SCRATCH.with(|c| std::mem::take(&mut *c.borrow_mut()));
    f(&mut sc);
    SCRATCH.with(|c| *c.borrow_mut() = sc);
}

/// Sequences at least this long are packed on parallel tasks and run their heads as parallel
/// tasks; shorter ones (queries) are too little work per head to be worth a task each, and
/// come many to a batch.
const PARALLEL_HEADS: usize = 64;

#[allow(clippy::too_many_arguments)]
fn one_head(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seq: Range<usize>,
    h: usize,
    s: AttnShape,
    mask: Mask,
    out: SendPtr,
    sc: &mut Scratch,
) {
    let hd = s.head_dim;
    let (qd, kd, kh) = (s.q_dim(), s.kv_dim(), s.kv_head(h));
    let (base, len) = (seq.start, seq.len());
    let vpanels = hd.div_ceil(NR);
    // Score rows padded to whole 16-lane vectors, so the exponential runs vectorised even
    // for a 10-token query (the padding holds -∞ before it, 0 after).
    let lp = len.next_multiple_of(16);
    sc.p.resize(len * lp, 0.0);
    scores_f32(isa, q, k, seq.clone(), h, s, lp, sc);
    // Values copied row by row into panels of NR dimensions.
    sc.vp.clear();
    sc.vp.resize(vpanels * len * NR, 0.0);
    for (j, row) in (base..base + len).enumerate() {
        let vj = &v[row * kd + kh * hd..][..hd];
        for (p, chunk) in vj.chunks(NR).enumerate() {
            sc.vp[p * len * NR + j * NR..][..chunk.len()].copy_from_slice(chunk);
        }
    }
    // Unnormalised probabilities e^{(s - max)·scale}; each output row is divided by its sum
    // after P·V (hd values per row instead of len).
    let scale = 1.0 / (hd as f32).sqrt();
    sc.inv_sum.resize(len, 0.0);
    for i in 0..len {
        let row = &mut sc.p[i * lp..(i + 1) * lp];
        let seen = mask.visible(i, len);
        row[..seen.start].fill(f32::NEG_INFINITY);
        row[seen.end..].fill(f32::NEG_INFINITY);
        if mask.has_bias() {
            // The bias is added to the scaled score: to s·scale + b, i.e. to s as b / scale.
            for j in seen.clone() {
                row[j] += mask.bias(h, s.n_head, i, j) / scale;
            }
        }
        let vis16 = seen.end.next_multiple_of(16).min(lp);
        // e^{-∞·scale − shift} underflows to (almost) 0: the padding adds < 1e-36 to the sum.
        sc.inv_sum[i] = 1.0 / multiversion!(isa, exp_shifted(&mut row[..vis16], scale));
        row[..seen.start].fill(0.0);
        row[seen.end..].fill(0.0);
    }
    // Out: len × hd = P · V_h, written into the head's columns of `out`.
    let mr = mr_for(isa);
    let mut i = 0;
    while i < len {
        let r = mr.min(len - i);
        for p in 0..vpanels {
            // SAFETY: rows base+i..+r, columns h·hd+p·NR..+nvalid of out belong to this pair.
            unsafe {
                let c = out.get().add((base + i) * qd + h * hd + p * NR);
                let a = sc.p.as_ptr().add(i * lp);
                tile(
                    isa,
                    r,
                    a,
                    lp,
                    sc.vp.as_ptr().add(p * len * NR),
                    len,
                    c,
                    qd,
                    NR.min(hd - p * NR),
                    false,
                );
            }
        }
        i += r;
    }
    multiversion!(
        isa,
        divide_rows(out, base * qd + h * hd, qd, hd, &sc.inv_sum)
    );
}

/// Row i of the head's output block (starting at `first`, rows `stride` apart, `hd` wide)
/// ×= inv_sum[i].
#[inline(always)]
fn divide_rows(out: SendPtr, first: usize, stride: usize, hd: usize, inv_sum: &[f32]) {
    for (i, &inv) in inv_sum.iter().enumerate() {
        // SAFETY: these rows and columns of out belong to the calling (sequence, head) pair.
        let row = unsafe { std::slice::from_raw_parts_mut(out.get().add(first + i * stride), hd) };
        for v in row {
            *v *= inv;
        }
    }
}

/// The keys of rows `rows` (each `hd` values from column `col` of a row of `stride`) in the
/// float micro-kernel's panels: key j is column j % NR of panel j / NR, one panel row per
/// head dimension; the last panel's missing keys are zero.
pub(crate) fn pack_key_panels(
    k: &[f32],
    rows: Range<usize>,
    stride: usize,
    col: usize,
    hd: usize,
    kp: &mut Vec<f32>,
) {
    kp.clear();
    kp.resize(rows.len().div_ceil(NR) * hd * NR, 0.0);
    for (j, row) in rows.enumerate() {
        let kj = &k[row * stride + col..][..hd];
        let panel = &mut kp[(j / NR) * hd * NR + j % NR..];
        for (dst, &x) in panel.iter_mut().step_by(NR).zip(kj) {
            *dst = x;
        }
    }
}

/// Scores of head `h` over `seq` into `sc.p` (rows of stride `lp`): Q_h (rows of stride qd)
/// · K_hᵀ on the float micro-kernel, keys transposed into its panels first.
#[allow(clippy::too_many_arguments)]
fn scores_f32(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    seq: Range<usize>,
    h: usize,
    s: AttnShape,
    lp: usize,
    sc: &mut Scratch,
) {
    let hd = s.head_dim;
    let (qd, kd, kh) = (s.q_dim(), s.kv_dim(), s.kv_head(h));
    let (base, len) = (seq.start, seq.len());
    let kpanels = len.div_ceil(NR);
    pack_key_panels(k, seq.clone(), kd, kh * hd, hd, &mut sc.kp);
    let mr = mr_for(isa);
    let mut i = 0;
    while i < len {
        let r = mr.min(len - i);
        for p in 0..kpanels {
            // SAFETY: q rows base+i..+r hold hd values of head h; panel p holds hd·NR floats;
            // the score tile lies inside sc.p (rows of lp, columns p·NR..+nvalid ≤ len).
            unsafe {
                let a = q.as_ptr().add((base + i) * qd + h * hd);
                let c = sc.p.as_mut_ptr().add(i * lp + p * NR);
                tile(
                    isa,
                    r,
                    a,
                    qd,
                    sc.kp.as_ptr().add(p * hd * NR),
                    hd,
                    c,
                    lp,
                    NR.min(len - p * NR),
                    false,
                );
            }
        }
        i += r;
    }
}

/// x ← e^{(x − max x)·scale} in place; returns Σ x (≥ 1: the maximum contributes e^0).
#[inline(always)]
fn exp_shifted(x: &mut [f32], scale: f32) -> f32 {
    let max = max_lanes(x);
    let shift = max * scale;
    for v in x.iter_mut() {
        *v = exp_lane(v.mul_add(scale, -shift));
    }
    sum_lanes(x, |v| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::tests::Rng;

    #[test]
    fn matches_scalar_reference() {
        let mut rng = Rng::new(11);
        // The last sequence is long enough for its heads to run as parallel tasks.
        let seqs = vec![0..1, 1..11, 11..44, 44..47, 47..(47 + PARALLEL_HEADS + 3)];
        let tokens = 47 + PARALLEL_HEADS + 3;
        for (n_head, n_head_kv, head_dim) in [(12, 12, 32), (4, 2, 64), (4, 2, 16), (2, 1, 7)] {
            let s = AttnShape {
                n_head,
                n_head_kv,
                head_dim,
            };
            let q: Vec<f32> = (0..tokens * n_head * head_dim)
                .map(|_| rng.f32() * 2.0)
                .collect();
            let k: Vec<f32> = (0..tokens * n_head_kv * head_dim)
                .map(|_| rng.f32() * 2.0)
                .collect();
            let v: Vec<f32> = (0..tokens * n_head_kv * head_dim)
                .map(|_| rng.f32())
                .collect();
            for mask in [
                Mask::Full,
                Mask::Causal,
                Mask::Window { radius: 2 },
                Mask::Window { radius: 40 },
                Mask::Alibi { max_bias: 8.0 },
            ] {
                let mut want = vec![0.0; q.len()];
                crate::attention::attention_masked(&q, &k, &v, &seqs, s, mask, &mut want);
                for isa in Isa::available() {
                    for low in [false, true] {
                        // With a full or causal mask the low-precision path rounds on its fused
                        // path (tested against its emulation in attention_fused); with a window
                        // or a bias it must run the float path.
                        if low && matches!(mask, Mask::Full | Mask::Causal) {
                            continue;
                        }
                        let mut got = vec![f32::NAN; q.len()];
                        let run = if low {
                            attention_low_precision
                        } else {
                            attention
                        };
                        run(isa, &q, &k, &v, &seqs, s, mask, &mut got);
                        for (g, e) in got.iter().zip(&want) {
                            assert!(
                                (g - e).abs() <= 2e-6 * (1.0 + e.abs()),
                                "{isa:?} {s:?} {mask:?} low={low}: {g} vs {e}"
                            );
                        }
                    }
                }
            }
        }
    }
}
