//! Vectorised element-wise and row-wise operations, tested against the scalar references in
//! `ops.rs`. Each is written once as plain lane-wise Rust (`#[inline(always)]` bodies) and
//! compiled again inside `#[target_feature]` wrappers, where LLVM turns the loops into
//! AVX-512 or AVX2 code; the scalar build of the same body is the portable fallback.

use crate::matmul::Isa;

/// Calls `$body(args)` compiled for the best of AVX-512 / AVX2+FMA that `$isa` allows.
macro_rules! multiversion {
    ($isa:expr, $body:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
            unsafe fn avx512<A: Copy>(f: impl FnOnce() -> A) -> A { f() }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2<A: Copy>(f: impl FnOnce() -> A) -> A { f() }
            match $isa {
                // SAFETY: the ISA was detected at run time.
                Isa::Avx512 | Isa::Avx512Vnni => unsafe { avx512(|| $body($($arg),*)) },
                Isa::Avx2 => unsafe { avx2(|| $body($($arg),*)) },
                _ => $body($($arg),*),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $isa;
            $body($($arg),*)
        }
    }};
}
pub(crate) use multiversion;

/// erfc(z) = t · e^{−z² + P(t)}, t = 1 / (1 + z/2), for z ≥ 0: Numerical Recipes' `erfcc`
/// fit, fractional error below 1.2e-7 everywhere. P's coefficients, constant term first.
/// Nine Horner steps instead of the fourteen-term Chebyshev sum `ops::erf` evaluates.
#[allow(clippy::excessive_precision)]
const ERFCC: [f32; 10] = [
    -1.265_512_23,
    1.000_023_68,
    0.374_091_96,
    0.096_784_18,
    -0.186_288_06,
    0.278_868_07,
    -1.135_203_98,
    1.488_515_87,
    -0.822_152_23,
    0.170_872_77,
];

/// e^a, with a clamped to [−87, 88] (so ~1.6e-38 at the bottom and ~1.7e38 at the top; the
/// exponent bits below would overflow beyond). Written to vectorise: no branches, no calls.
#[inline(always)]
pub fn exp_lane(a: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let a = a.clamp(-87.0, 88.0);
    // k = round(a · log2 e) sits in the low mantissa bits of `shifted`: read it from there
    // (a float → int conversion would be a saturating one, several instructions per lane).
    let shifted = a * std::f32::consts::LOG2_E + MAGIC;
    let k = shifted.to_bits().wrapping_sub(MAGIC.to_bits());
    let kf = shifted - MAGIC;
    let r = kf.mul_add(-0.693_145_75, a);
    let r = kf.mul_add(-1.428_606_8e-6, r);
    let mut p: f32 = 1.0 / 5040.0;
    p = p.mul_add(r, 1.0 / 720.0);
    p = p.mul_add(r, 1.0 / 120.0);
    p = p.mul_add(r, 1.0 / 24.0);
    p = p.mul_add(r, 1.0 / 6.0);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    let scale = f32::from_bits(k.wrapping_add(127) << 23);
    p * scale
}

/// GELU of one value: 0.5·x·erfc(−x/√2), erfc from [`ERFCC`], with z² split exactly (FMA)
/// so that large |x| keep their relative accuracy in the tail.
#[inline(always)]
fn gelu_lane(x: f32) -> f32 {
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / z.mul_add(0.5, 1.0);
    let mut p = ERFCC[9];
    for &c in ERFCC[..9].iter().rev() {
        p = p.mul_add(t, c);
    }
    let zz = z * z;
    let zz_lo = z.mul_add(z, -zz);
    let erfc = t * exp_lane((p - zz_lo) - zz);
    let one_plus_erf = if x >= 0.0 { 2.0 - erfc } else { erfc };
    0.5 * x * one_plus_erf
}

#[inline(always)]
fn gelu_body(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_lane(*v);
    }
}

/// GELU (erf form) in place; within ~1e-6 relative of `ops::gelu`.
pub fn gelu(isa: Isa, x: &mut [f32]) {
    multiversion!(isa, gelu_body(x))
}

const LANES: usize = 16;

/// Σ of a slice in 16 independent lanes (so it vectorises), then across lanes.
#[inline(always)]
pub(crate) fn sum_lanes(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let mut s: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for a in acc {
        s += a;
    }
    s
}

#[inline(always)]
fn layer_norm_body(x: &mut [f32], dim: usize, w: &[f32], b: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        let mean = sum_lanes(row, |v| v) / dim as f32;
        let var = sum_lanes(row, |v| (v - mean) * (v - mean)) / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &w), &b) in row.iter_mut().zip(w).zip(b) {
            *v = ((*v - mean) * inv).mul_add(w, b);
        }
    }
}

/// LayerNorm over each row of `dim` values in place (two passes in f32 lanes).
pub fn layer_norm(isa: Isa, x: &mut [f32], dim: usize, w: &[f32], b: &[f32], eps: f32) {
    multiversion!(isa, layer_norm_body(x, dim, w, b, eps))
}

#[inline(always)]
fn add_layer_norm_body(
    x: &mut [f32],
    residual: &[f32],
    dim: usize,
    w: &[f32],
    b: &[f32],
    eps: f32,
) {
    for (a, &r) in x.iter_mut().zip(residual) {
        *a += r;
    }
    layer_norm_body(x, dim, w, b, eps)
}

/// x ← LayerNorm(x + residual), row by row: the residual add in the same vector width.
pub fn add_layer_norm(
    isa: Isa,
    x: &mut [f32],
    residual: &[f32],
    dim: usize,
    w: &[f32],
    b: &[f32],
    eps: f32,
) {
    assert_eq!(x.len(), residual.len(), "add_layer_norm: residual length");
    multiversion!(isa, add_layer_norm_body(x, residual, dim, w, b, eps))
}

#[inline(always)]
fn rms_norm_body(x: &mut [f32], dim: usize, w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        // The sum of squares in f64, as the reference and llama.cpp do: quantised models
        // round their activations right after, where the last bits can flip a rounding.
        let mut acc = [0.0f64; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v as f64 * v as f64;
            }
        }
        let tail: f64 = chunks
            .remainder()
            .iter()
            .map(|&v| v as f64 * v as f64)
            .sum();
        let ms = (acc.iter().sum::<f64>() + tail) / dim as f64;
        let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
        for (v, &w) in row.iter_mut().zip(w) {
            *v = *v * inv * w;
        }
    }
}

/// RMSNorm over each row of `dim` values in place (sum of squares in f64 lanes).
pub fn rms_norm(isa: Isa, x: &mut [f32], dim: usize, w: &[f32], eps: f32) {
    multiversion!(isa, rms_norm_body(x, dim, w, eps))
}

#[inline(always)]
fn silu_mul_body(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        // For g < −88, e^{−g} stops at ~1.7e38 and g / e^{−g} is within 1e-36 of silu's 0.
        *g = *g / (1.0 + exp_lane(-*g)) * u;
    }
}

/// gate ← silu(gate) · up, with the vectorised exponential.
pub fn silu_mul(isa: Isa, gate: &mut [f32], up: &[f32]) {
    multiversion!(isa, silu_mul_body(gate, up))
}

/// max of a slice in 16 independent lanes, then across lanes.
#[inline(always)]
pub(crate) fn max_lanes(x: &[f32]) -> f32 {
    let mut mx = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in mx.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&mx)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
fn softmax_body(x: &mut [f32]) {
    let max = max_lanes(x);
    for v in x.iter_mut() {
        *v = exp_lane(*v - max);
    }
    let inv = 1.0 / sum_lanes(x, |v| v);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Softmax in place over one row.
pub fn softmax(isa: Isa, x: &mut [f32]) {
    multiversion!(isa, softmax_body(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops;

    #[test]
    fn exp_is_accurate() {
        for isa in Isa::available() {
            let xs: Vec<f32> = (0..20000).map(|i| -87.0 + i as f32 * 0.0045).collect();
            let mut got = xs.clone();
            multiversion!(isa, exp_all(&mut got));
            for (&x, &g) in xs.iter().zip(&got) {
                let want = (x as f64).exp();
                assert!(
                    ((g as f64 - want) / want).abs() < 4e-7,
                    "{isa:?} exp({x}) = {g}, want {want}"
                );
            }
        }
    }

    #[inline(always)]
    fn exp_all(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = exp_lane(*v);
        }
    }

    #[test]
    fn gelu_matches_reference() {
        let mut xs: Vec<f32> = (0..40001).map(|i| -10.0 + i as f32 * 0.0005).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 1e-6, 20.0, -12.0]);
        let mut want = xs.clone();
        ops::gelu(&mut want);
        for isa in Isa::available() {
            let mut got = xs.clone();
            gelu(isa, &mut got);
            for ((&x, &g), &w) in xs.iter().zip(&got).zip(&want) {
                // The reference forms 1 + erf in f32, so in the negative tail it carries an
                // absolute error of about half an ulp of 1 times x/2.
                let err = (g - w).abs() as f64;
                assert!(
                    err <= 1.5e-6 * w.abs() as f64 + 3e-8 * x.abs() as f64 + 1e-37,
                    "{isa:?} gelu({x}) = {g}, want {w}"
                );
            }
        }
    }

    #[test]
    fn silu_mul_and_rms_norm_match_reference() {
        let mut rng = crate::matmul::tests::Rng::new(9);
        let mut gate: Vec<f32> = (0..4001).map(|i| -100.0 + i as f32 * 0.05).collect();
        gate.extend([0.0, -0.0, 1e-30, -88.5, 88.5, -200.0]);
        let up: Vec<f32> = (0..gate.len()).map(|_| rng.f32() * 3.0).collect();
        let mut want = gate.clone();
        ops::silu_mul(&mut want, &up);
        for isa in Isa::available() {
            let mut got = gate.clone();
            silu_mul(isa, &mut got, &up);
            for ((&g, &w), &x) in got.iter().zip(&want).zip(&gate) {
                assert!(
                    (g - w).abs() <= 2e-6 * w.abs() + 1e-35,
                    "{isa:?} silu_mul({x}) = {g}, want {w}"
                );
            }
        }
        for dim in [576, 37, 16] {
            let x: Vec<f32> = (0..dim * 5)
                .map(|i| rng.f32() * 3.0 + (i % 7) as f32)
                .collect();
            let w: Vec<f32> = (0..dim).map(|_| rng.f32()).collect();
            let mut want = x.clone();
            ops::rms_norm(&mut want, dim, &w, 1e-5);
            for isa in Isa::available() {
                let mut got = x.clone();
                rms_norm(isa, &mut got, dim, &w, 1e-5);
                for (g, e) in got.iter().zip(&want) {
                    assert!(
                        (g - e).abs() <= 2e-6 * (1.0 + e.abs()),
                        "{isa:?}: {g} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn layer_norm_matches_reference() {
        let mut rng = crate::matmul::tests::Rng::new(7);
        for dim in [384, 37, 16] {
            let x: Vec<f32> = (0..dim * 5)
                .map(|i| rng.f32() * 3.0 + (i % 7) as f32)
                .collect();
            let w: Vec<f32> = (0..dim).map(|_| rng.f32()).collect();
            let b: Vec<f32> = (0..dim).map(|_| rng.f32()).collect();
            let mut want = x.clone();
            ops::layer_norm(&mut want, dim, &w, &b, 1e-12);
            // The fused form against the reference add followed by LayerNorm.
            let r: Vec<f32> = (0..x.len()).map(|i| (i % 5) as f32 - 2.0).collect();
            let x_minus_r: Vec<f32> = x.iter().zip(&r).map(|(a, b)| a - b).collect();
            let mut want_fused = x_minus_r.clone();
            ops::add(&mut want_fused, &r);
            ops::layer_norm(&mut want_fused, dim, &w, &b, 1e-12);
            for isa in Isa::available() {
                let mut got = x.clone();
                layer_norm(isa, &mut got, dim, &w, &b, 1e-12);
                let mut fused = x_minus_r.clone();
                add_layer_norm(isa, &mut fused, &r, dim, &w, &b, 1e-12);
                for ((g, f), (e, ef)) in got.iter().zip(&fused).zip(want.iter().zip(&want_fused)) {
                    assert!(
                        (g - e).abs() <= 2e-6 * (1.0 + e.abs()),
                        "{isa:?} dim {dim}: {g} vs {e}"
                    );
                    assert!(
                        (f - ef).abs() <= 2e-6 * (1.0 + ef.abs()),
                        "{isa:?} dim {dim} fused: {f} vs {ef}"
                    );
                }
            }
        }
    }

    #[test]
    fn softmax_matches_reference() {
        let mut rng = crate::matmul::tests::Rng::new(8);
        for len in [1, 10, 17, 250] {
            let x: Vec<f32> = (0..len).map(|_| rng.f32() * 20.0).collect();
            let mut want = x.clone();
            ops::softmax(&mut want);
            for isa in Isa::available() {
                let mut got = x.clone();
                softmax(isa, &mut got);
                for (g, e) in got.iter().zip(&want) {
                    assert!(
                        (g - e).abs() <= 1e-6 * e.abs() + 1e-9,
                        "{isa:?} len {len}: {g} vs {e}"
                    );
                }
            }
        }
    }
}
