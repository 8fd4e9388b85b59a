//! Softmax attention over packed sequences: q, k, v hold the rows of every token of every
//! sequence back to back; each sequence attends only to its own tokens.

use crate::ops::softmax;
use std::ops::Range;

/// Head layout of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_head: usize,
    /// Grouped-query attention: each KV head serves `n_head / n_head_kv` query heads.
    pub n_head_kv: usize,
    pub head_dim: usize,
}

impl AttnShape {
    /// Width of a token's q (and output) row: every query head.
    pub fn q_dim(self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of a token's k and v rows: every KV head.
    pub fn kv_dim(self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// The KV head that query head `h` reads (grouped-query attention).
    pub fn kv_head(self, h: usize) -> usize {
        h / (self.n_head / self.n_head_kv)
    }
}

/// Scalar reference attention. `q` is tokens × (n_head·head_dim), `k`/`v` tokens ×
/// (n_head_kv·head_dim), `out` like `q`. `seqs` are token ranges. `causal`: token i sees only
/// tokens ≤ i of its own sequence.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &[Range<usize>],
    s: AttnShape,
    causal: bool,
    out: &mut [f32],
) {
    let (qd, kd) = (s.q_dim(), s.kv_dim());
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    let mut scores = Vec::new();
    for seq in seqs {
        for i in seq.clone() {
            let visible = if causal {
                seq.start..i + 1
            } else {
                seq.clone()
            };
            for h in 0..s.n_head {
                let kh = s.kv_head(h);
                let qi = &q[i * qd + h * s.head_dim..][..s.head_dim];
                scores.clear();
                for j in visible.clone() {
                    let kj = &k[j * kd + kh * s.head_dim..][..s.head_dim];
                    scores.push(qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale);
                }
                softmax(&mut scores);
                let o = &mut out[i * qd + h * s.head_dim..][..s.head_dim];
                o.fill(0.0);
                for (j, &p) in visible.clone().zip(&scores) {
                    let vj = &v[j * kd + kh * s.head_dim..][..s.head_dim];
                    for (o, &x) in o.iter_mut().zip(vj) {
                        *o += p * x;
                    }
                }
            }
        }
    }
}
