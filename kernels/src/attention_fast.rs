//! Softmax attention, parallel over (sequence, head) pairs and vectorised: the same result as
//! the scalar reference `attention::attention`, which the tests compare it with.
//!
//! Per pair, the head's keys are transposed into a small scratch (head_dim × L) so a row of
//! scores is head_dim axpy's over contiguous keys, and each output row is an axpy over values;
//! both are plain loops that LLVM vectorises inside the multiversioned wrappers.

use crate::attention::AttnShape;
use crate::matmul::{Isa, SendPtr};
use crate::ops_fast::{multiversion, softmax_body};
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

thread_local! {
    /// Transposed keys and one row of scores for the pair running on this thread.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Attention over packed sequences; layout as in [`crate::attention::attention`].
#[allow(clippy::too_many_arguments)]
pub fn attention(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &[Range<usize>],
    s: AttnShape,
    causal: bool,
    out: &mut [f32],
) {
    let (qd, kd) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
    let tokens = seqs.iter().map(|r| r.end).max().unwrap_or(0);
    assert!(s.n_head_kv > 0 && s.n_head % s.n_head_kv == 0, "attention: heads do not group");
    assert!(q.len() >= tokens * qd && out.len() >= tokens * qd, "attention: q/out too short");
    assert!(k.len() >= tokens * kd && v.len() >= tokens * kd, "attention: k/v too short");
    let op = SendPtr(out.as_mut_ptr());
    (0..seqs.len() * s.n_head).into_par_iter().for_each(|item| {
        let (seq, h) = (seqs[item / s.n_head].clone(), item % s.n_head);
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (kt, scores) = &mut *guard;
            let len = seq.len();
            kt.resize(len * s.head_dim, 0.0);
            scores.resize(len, 0.0);
            let args = HeadArgs { q, k, v, seq, h, s, causal, out: op };
            multiversion!(isa, one_head(&args, kt, scores))
        });
    });
}

struct HeadArgs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    seq: Range<usize>,
    h: usize,
    s: AttnShape,
    causal: bool,
    out: SendPtr,
}

#[inline(always)]
fn one_head(a: &HeadArgs, kt: &mut [f32], scores: &mut [f32]) {
    let s = a.s;
    let hd = s.head_dim;
    let (qd, kd) = (s.n_head * hd, s.n_head_kv * hd);
    let kh = a.h / (s.n_head / s.n_head_kv);
    let (base, len) = (a.seq.start, a.seq.len());
    let scale = 1.0 / (hd as f32).sqrt();
    for j in 0..len {
        let kj = &a.k[(base + j) * kd + kh * hd..][..hd];
        for (d, &x) in kj.iter().enumerate() {
            kt[d * len + j] = x;
        }
    }
    for i in 0..len {
        let visible = if a.causal { i + 1 } else { len };
        let sc = &mut scores[..visible];
        sc.fill(0.0);
        let qi = &a.q[(base + i) * qd + a.h * hd..][..hd];
        for (d, &qv) in qi.iter().enumerate() {
            let qv = qv * scale;
            for (s, &kv) in sc.iter_mut().zip(&kt[d * len..d * len + visible]) {
                *s = qv.mul_add(kv, *s);
            }
        }
        softmax_body(sc);
        // SAFETY: row base+i, columns of head h: written by this (sequence, head) pair only.
        let o = unsafe { std::slice::from_raw_parts_mut(a.out.get().add((base + i) * qd + a.h * hd), hd) };
        o.fill(0.0);
        for (j, &p) in sc.iter().enumerate() {
            let vj = &a.v[(base + j) * kd + kh * hd..][..hd];
            for (o, &x) in o.iter_mut().zip(vj) {
                *o = p.mul_add(x, *o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::tests::Rng;

    #[test]
    fn matches_scalar_reference() {
        let mut rng = Rng::new(11);
        let seqs = vec![0..1, 1..11, 11..44, 44..47];
        let tokens = 47;
        for (n_head, n_head_kv, head_dim) in [(12, 12, 32), (4, 2, 16), (2, 1, 7)] {
            let s = AttnShape { n_head, n_head_kv, head_dim };
            let q: Vec<f32> = (0..tokens * n_head * head_dim).map(|_| rng.f32() * 2.0).collect();
            let k: Vec<f32> = (0..tokens * n_head_kv * head_dim).map(|_| rng.f32() * 2.0).collect();
            let v: Vec<f32> = (0..tokens * n_head_kv * head_dim).map(|_| rng.f32()).collect();
            for causal in [false, true] {
                let mut want = vec![0.0; q.len()];
                crate::attention::attention(&q, &k, &v, &seqs, s, causal, &mut want);
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; q.len()];
                    attention(isa, &q, &k, &v, &seqs, s, causal, &mut got);
                    for (g, e) in got.iter().zip(&want) {
                        assert!((g - e).abs() <= 2e-6 * (1.0 + e.abs()), "{isa:?} {s:?} causal={causal}: {g} vs {e}");
                    }
                }
            }
        }
    }
}
