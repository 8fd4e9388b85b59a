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

/// Which keys of its own sequence a query sees, and what is added to its scores: the
/// differences between the encoders' attention, kept as data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mask {
    /// Every token (BERT-style encoders).
    Full,
    /// Tokens at or before the query (decoders).
    Causal,
    /// Tokens at most `radius` positions away on either side (gemma-embedding's local layers:
    /// a symmetric sliding window).
    Window { radius: usize },
    /// Every token, each score biased by −slopeₕ·|i − j| (jina-bert-v2's symmetric ALiBi), with
    /// the head slopes ggml derives from `max_bias` ([`alibi_slope`]).
    Alibi { max_bias: f32 },
}

impl Mask {
    pub fn from_causal(causal: bool) -> Mask {
        if causal {
            Mask::Causal
        } else {
            Mask::Full
        }
    }

    /// The keys (offsets within a sequence of `len`) that query `i` sees: always one range.
    pub fn visible(self, i: usize, len: usize) -> Range<usize> {
        match self {
            Mask::Full | Mask::Alibi { .. } => 0..len,
            Mask::Causal => 0..i + 1,
            Mask::Window { radius } => i.saturating_sub(radius)..(i + radius + 1).min(len),
        }
    }

    /// What is added to the scaled score of key `j` for query `i` in head `h` of `n_head`.
    pub fn bias(self, h: usize, n_head: usize, i: usize, j: usize) -> f32 {
        match self {
            Mask::Alibi { max_bias } => -alibi_slope(h, n_head, max_bias) * i.abs_diff(j) as f32,
            _ => 0.0,
        }
    }

    /// Whether the mask adds anything to scores (not only hides keys).
    pub fn has_bias(self) -> bool {
        matches!(self, Mask::Alibi { .. })
    }
}

/// ALiBi's slope of head `h` of `n_head`, as ggml computes it: the first 2^⌊log₂ n_head⌋ heads
/// take powers of m0 = 2^(−max_bias / that count), the rest odd powers of its square root.
pub fn alibi_slope(h: usize, n_head: usize, max_bias: f32) -> f32 {
    let n_floor = 1usize << (usize::BITS - 1 - n_head.max(1).leading_zeros());
    let m0 = 2f32.powf(-max_bias / n_floor as f32);
    let m1 = 2f32.powf(-(max_bias / 2.0) / n_floor as f32);
    if h < n_floor {
        m0.powi(h as i32 + 1)
    } else {
        m1.powi(2 * (h - n_floor) as i32 + 1)
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
    attention_masked(q, k, v, seqs, s, Mask::from_causal(causal), out)
}

/// [`attention`] under any [`Mask`]: scores are q·k/√head_dim + the mask's bias over the keys
/// it leaves visible.
pub fn attention_masked(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &[Range<usize>],
    s: AttnShape,
    mask: Mask,
    out: &mut [f32],
) {
    let (qd, kd) = (s.q_dim(), s.kv_dim());
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    let mut scores = Vec::new();
    for seq in seqs {
        for i in seq.clone() {
            let seen = mask.visible(i - seq.start, seq.len());
            let visible = seq.start + seen.start..seq.start + seen.end;
            for h in 0..s.n_head {
                let kh = s.kv_head(h);
                let qi = &q[i * qd + h * s.head_dim..][..s.head_dim];
                scores.clear();
                for j in visible.clone() {
                    let kj = &k[j * kd + kh * s.head_dim..][..s.head_dim];
                    let dot = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>();
                    scores.push(dot * scale + mask.bias(h, s.n_head, i, j));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alibi_slopes_are_ggmls() {
        // jina-bert-v2's tiny model: 4 heads, max_bias 8.
        let four: Vec<f32> = (0..4).map(|h| alibi_slope(h, 4, 8.0)).collect();
        assert_eq!(four, [1.0 / 4.0, 1.0 / 16.0, 1.0 / 64.0, 1.0 / 256.0]);
        // 12 heads: the first 8 are powers of 2^-1, the other 4 odd powers of 2^-0.5.
        let twelve: Vec<f32> = (0..12).map(|h| alibi_slope(h, 12, 8.0)).collect();
        for (h, &m) in twelve[..8].iter().enumerate() {
            assert_eq!(m, 0.5f32.powi(h as i32 + 1));
        }
        for (i, &m) in twelve[8..].iter().enumerate() {
            let want = 0.5f32.sqrt().powi(2 * i as i32 + 1);
            assert!((m - want).abs() <= 1e-7, "{m} vs {want}");
        }
    }

    #[test]
    fn masks_see_one_range_each() {
        assert_eq!(Mask::Full.visible(3, 10), 0..10);
        assert_eq!(Mask::Causal.visible(3, 10), 0..4);
        assert_eq!(Mask::Window { radius: 2 }.visible(0, 10), 0..3);
        assert_eq!(Mask::Window { radius: 2 }.visible(5, 10), 3..8);
        assert_eq!(Mask::Window { radius: 2 }.visible(9, 10), 7..10);
        assert_eq!(Mask::Alibi { max_bias: 8.0 }.visible(3, 10), 0..10);
        assert_eq!(Mask::Alibi { max_bias: 8.0 }.bias(0, 4, 5, 2), -0.75);
        assert_eq!(Mask::Window { radius: 2 }.bias(0, 4, 5, 4), 0.0);
    }
}
