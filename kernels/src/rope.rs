//! Rotary position embedding (RoPE), applied in place to the query or key rows of a batch.
//!
//! Each head's first `n_rot` values are rotated in pairs by the angle
//! `θ_i = pos · freq_scale · base^(-2i / n_rot) / factor_i`; values past `n_rot` are left alone.
//! Two conventions pick which values form a pair:
//! - [`RopeLayout::Normal`] (llama.cpp's mode 0, used for `llama`): adjacent values `(2i, 2i+1)`;
//! - [`RopeLayout::NeoX`] (GPT-NeoX, used for `qwen2`/`qwen3`): the two halves `(i, i + n_rot/2)`.

/// Which values of a head form a rotated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    Normal,
    NeoX,
}

/// Parameters of one RoPE application.
#[derive(Clone, Copy, Debug)]
pub struct Rope<'a> {
    pub layout: RopeLayout,
    /// Values per head.
    pub head_dim: usize,
    /// Rotated values per head (even, at most `head_dim`).
    pub n_rot: usize,
    pub freq_base: f32,
    /// Linear position scaling: 1 / `rope.scaling.factor`.
    pub freq_scale: f32,
    /// Optional per-pair divisors of the frequency (`rope_freqs.weight`, llama 3.1), `n_rot/2` long.
    pub freq_factors: Option<&'a [f32]>,
}

impl Rope<'_> {
    /// Per pair, the angle per position step: freq_scale · base^(−2i/n_rot) / factor_i. In f64
    /// so that long positions keep their precision.
    fn steps(&self) -> Vec<f64> {
        (0..self.n_rot / 2)
            .map(|i| {
                let inv_freq = (self.freq_base as f64).powf(-2.0 * i as f64 / self.n_rot as f64);
                let factor = self.freq_factors.map_or(1.0, |f| f[i] as f64);
                self.freq_scale as f64 * inv_freq / factor
            })
            .collect()
    }

    /// The (cos, sin) of every pair for one position, into `cs`.
    fn angles(steps: &[f64], pos: usize, cs: &mut [(f32, f32)]) {
        for (c, &step) in cs.iter_mut().zip(steps) {
            let (sin, cos) = (pos as f64 * step).sin_cos();
            *c = (cos as f32, sin as f32);
        }
    }

    /// Rotates `x` in place: `x` holds `positions.len()` rows, each of `row_len / head_dim` heads
    /// of `head_dim` values; row `t` is at position `positions[t]`.
    pub fn apply(&self, x: &mut [f32], row_len: usize, positions: &[usize]) {
        assert!(
            self.n_rot.is_multiple_of(2) && self.n_rot <= self.head_dim,
            "rope: bad n_rot"
        );
        assert_eq!(row_len % self.head_dim, 0, "rope: row is not whole heads");
        assert_eq!(
            x.len(),
            row_len * positions.len(),
            "rope: x is not rows × row_len"
        );
        if let Some(f) = self.freq_factors {
            assert!(f.len() >= self.n_rot / 2, "rope: too few frequency factors");
        }
        let half = self.n_rot / 2;
        let steps = self.steps();
        let mut cs = vec![(0.0f32, 0.0f32); half];
        for (row, &pos) in x.chunks_exact_mut(row_len).zip(positions) {
            Self::angles(&steps, pos, &mut cs);
            for head in row.chunks_exact_mut(self.head_dim) {
                for (i, &(c, s)) in cs.iter().enumerate() {
                    let (a, b) = match self.layout {
                        RopeLayout::Normal => (2 * i, 2 * i + 1),
                        RopeLayout::NeoX => (i, i + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * c - x1 * s;
                    head[b] = x0 * s + x1 * c;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook formula as a complex multiplication: pair (a, b) as a + ib times e^{iθ}.
    fn direct(
        layout: RopeLayout,
        head: &[f32],
        n_rot: usize,
        pos: usize,
        base: f64,
        scale: f64,
    ) -> Vec<f32> {
        let mut out = head.to_vec();
        for i in 0..n_rot / 2 {
            let (a, b) = if layout == RopeLayout::Normal {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + n_rot / 2)
            };
            let theta = pos as f64 * scale / base.powf(2.0 * i as f64 / n_rot as f64);
            let z = (head[a] as f64, head[b] as f64);
            out[a] = (z.0 * theta.cos() - z.1 * theta.sin()) as f32;
            out[b] = (z.0 * theta.sin() + z.1 * theta.cos()) as f32;
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_direct_formula_both_layouts() {
        let (head_dim, n_head, positions) = (16, 3, [0usize, 1, 2, 7, 100, 3000]);
        for layout in [RopeLayout::Normal, RopeLayout::NeoX] {
            for n_rot in [16, 8] {
                for scale in [1.0f32, 0.25] {
                    let x0 = pseudo_random(positions.len() * n_head * head_dim, 7);
                    let mut x = x0.clone();
                    let rope = Rope {
                        layout,
                        head_dim,
                        n_rot,
                        freq_base: 10000.0,
                        freq_scale: scale,
                        freq_factors: None,
                    };
                    rope.apply(&mut x, n_head * head_dim, &positions);
                    for (t, &pos) in positions.iter().enumerate() {
                        for h in 0..n_head {
                            let at = (t * n_head + h) * head_dim;
                            let want = direct(
                                layout,
                                &x0[at..at + head_dim],
                                n_rot,
                                pos,
                                10000.0,
                                scale as f64,
                            );
                            for (g, w) in x[at..at + head_dim].iter().zip(&want) {
                                assert!(
                                    (g - w).abs() < 1e-5,
                                    "{layout:?} n_rot {n_rot} pos {pos}: {g} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn position_zero_is_identity_and_norm_is_kept() {
        let x0 = pseudo_random(2 * 32, 3);
        let mut x = x0.clone();
        let rope = Rope {
            layout: RopeLayout::NeoX,
            head_dim: 32,
            n_rot: 32,
            freq_base: 1e6,
            freq_scale: 1.0,
            freq_factors: None,
        };
        rope.apply(&mut x, 32, &[0, 55]);
        assert_eq!(&x[..32], &x0[..32]);
        let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((n(&x[32..]) - n(&x0[32..])).abs() < 1e-4);
        assert_ne!(&x[32..], &x0[32..]);
    }

    #[test]
    fn freq_factors_divide_the_angle() {
        // A factor of 2 on every pair at position 2p equals no factor at position p.
        let x0 = pseudo_random(16, 5);
        let factors = [2.0f32; 8];
        let base = Rope {
            layout: RopeLayout::Normal,
            head_dim: 16,
            n_rot: 16,
            freq_base: 500.0,
            freq_scale: 1.0,
            freq_factors: None,
        };
        let (mut a, mut b) = (x0.clone(), x0.clone());
        Rope {
            freq_factors: Some(&factors),
            ..base
        }
        .apply(&mut a, 16, &[10]);
        base.apply(&mut b, 16, &[5]);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5);
        }
    }
}
