//! Element-wise and row-wise operations of a transformer layer. Scalar for now: they are a
//! small part of the time next to the matmuls.

/// LayerNorm over each row of `dim` values, in place: (x - mean) / sqrt(var + eps) * w + b.
pub fn layer_norm(x: &mut [f32], dim: usize, w: &[f32], b: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for ((v, &w), &b) in row.iter_mut().zip(w).zip(b) {
            *v = ((*v as f64 - mean) * inv) as f32 * w + b;
        }
    }
}

/// RMSNorm over each row of `dim` values, in place: x / sqrt(mean(x²) + eps) * w.
pub fn rms_norm(x: &mut [f32], dim: usize, w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / dim as f64;
        let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
        for (v, &w) in row.iter_mut().zip(w) {
            *v = *v * inv * w;
        }
    }
}

/// GELU, the exact erf form that BERT was trained with.
pub fn gelu(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erf(*v / std::f32::consts::SQRT_2));
    }
}

/// GELU in the tanh approximation, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`: the form
/// Gemma was trained with (and the one llama.cpp's `ggml_gelu` computes for every model).
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]`: GeGLU's combination (Gemma).
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh(*g) * u;
    }
}

/// `gate[i] = silu(gate[i]) * up[i]`: SwiGLU's combination.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// Softmax in place over one row.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Adds `b` to every row of `x` (rows of `b.len()` values).
pub fn add_bias(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        for (v, &b) in row.iter_mut().zip(b) {
            *v += b;
        }
    }
}

/// `x += y`, element-wise.
pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// x ← x · y, element by element (a gated FFN's product of its two halves).
pub fn mul(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a *= b;
    }
}

/// erf(x) with max error ~1e-7 (Abramowitz–Stegun 7.1.26 is too coarse for golden tests, so
/// this evaluates in f64 with the W. J. Cody style rational approximation via libm-free series).
pub fn erf(x: f32) -> f32 {
    erf64(x as f64) as f32
}

fn erf64(x: f64) -> f64 {
    // erf(x) = 1 - erfc(x); erfc from a Chebyshev fit (Numerical Recipes' erfc, |err| < 1.2e-7
    // relative) is accurate enough in f64 for f32 results.
    let z = x.abs();
    let t = 2.0 / (2.0 + z);
    let ty = 4.0 * t - 2.0;
    const COF: [f64; 28] = [
        -1.3026537197817094,
        6.419_697_923_564_902e-1,
        1.9476473204185836e-2,
        -9.561_514_786_808_63e-3,
        -9.46595344482036e-4,
        3.66839497852761e-4,
        4.2523324806907e-5,
        -2.0278578112534e-5,
        -1.624290004647e-6,
        1.303655835580e-6,
        1.5626441722e-8,
        -8.5238095915e-8,
        6.529054439e-9,
        5.059343495e-9,
        -9.91364156e-10,
        -2.27365122e-10,
        9.6467911e-11,
        2.394038e-12,
        -6.886027e-12,
        8.94487e-13,
        3.13092e-13,
        -1.12708e-13,
        3.81e-16,
        7.106e-15,
        -1.523e-15,
        -9.4e-17,
        1.21e-16,
        -2.8e-17,
    ];
    let (mut d, mut dd) = (0.0f64, 0.0f64);
    for &c in COF[1..].iter().rev() {
        let tmp = d;
        d = ty * d - dd + c;
        dd = tmp;
    }
    let erfc = t * (-z * z + 0.5 * (COF[0] + ty * d) - dd).exp();
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_tanh_matches_its_formula_in_f64() {
        // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) evaluated in f64.
        for (x, want) in [
            (0.0f32, 0.0f64),
            (1.0, 0.841_191_990_608_276_8),
            (-3.0, -0.003_637_392_081_772_994),
            (2.5, 2.484_915_733_910_001),
        ] {
            assert!((gelu_tanh(x) as f64 - want).abs() < 1e-6, "gelu_tanh({x})");
        }
        let mut gate = vec![1.0f32, -3.0];
        gelu_tanh_mul(&mut gate, &[2.0, 10.0]);
        assert!((gate[0] - 2.0 * gelu_tanh(1.0)).abs() < 1e-7);
        assert!((gate[1] - 10.0 * gelu_tanh(-3.0)).abs() < 1e-7);
    }

    #[test]
    fn erf_matches_known_values() {
        // Values from tables of erf.
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (-1.0, -0.842_700_8),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-7,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, -1000.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] == 0.0 && x[2] > x[1]);
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        layer_norm(&mut x, 4, &[1.0; 4], &[0.5; 4], 0.0);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        assert!((mean - 0.5).abs() < 1e-6);
        let var: f32 = x.iter().map(|v| (v - 0.5).powi(2)).sum::<f32>() / 4.0;
        assert!((var - 1.0).abs() < 1e-5);
    }
}
