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

/// Φ(x) − ½ = x·P(x²)/Q(x²) for |x| ≤ [`GELU_CLAMP`], Φ the standard normal CDF (so
/// GELU(x) = x·Φ(x)). Degrees 6 over 4 in x²: a minimax fit of Φ's absolute error over
/// [0, 5.5] (differential correction on a 2500-point Chebyshev grid, float64, then each
/// coefficient rounded to f32), error 2.0e-8 — under the f32 rounding of the evaluation, which
/// leaves Φ within about 1.5e-7 of the truth. Constant term first; Q's is 1.
#[allow(clippy::excessive_precision)]
const GELU_P: [f32; 7] = [
    0.398_942_14,
    0.035_922_226,
    0.004_509_163_6,
    0.000_170_373_84,
    3.241_059e-6,
    -2.208_231_5e-8,
    1.117_574_2e-10,
];
#[allow(clippy::excessive_precision)]
const GELU_Q: [f32; 5] = [
    1.0,
    0.256_708_23,
    0.029_091_498,
    0.001_830_642_9,
    6.232_646e-5,
];

/// |x| beyond which Φ(x) is taken as 0 or 1: Φ(−5.5) = 1.9e-8, a third of an f32 ulp of 1.
/// There the fit evaluates to Φ(−5.5) = −1.5e-8, which [`gelu_lane`] clamps to 0, so GELU is
/// exactly ∓0 below −5.5 (the reference, forming 1 + erf in f32, is 0 from −5.42 down).
const GELU_CLAMP: f32 = 5.5;

/// GELU of one value: x·Φ(x), Φ from the rational fit [`GELU_P`]/[`GELU_Q`]: two short
/// polynomials and one division, no exp, no branches (the clamps become min/max). About 20
/// vector instructions; the erfc form it replaced (t = 1/(1 + z/2), a ten-term polynomial in
/// t and an exp) took twice that and a division too.
#[inline(always)]
fn gelu_lane(x: f32) -> f32 {
    let xc = x.clamp(-GELU_CLAMP, GELU_CLAMP);
    let u = xc * xc;
    let mut p = GELU_P[6];
    for &c in GELU_P[..6].iter().rev() {
        p = p.mul_add(u, c);
    }
    let mut q = GELU_Q[4];
    for &c in GELU_Q[..4].iter().rev() {
        q = q.mul_add(u, c);
    }
    let phi = xc.mul_add(p / q, 0.5);
    // A select, not f32::max: max's NaN rule costs extra instructions, and NaN stays NaN here.
    let phi = if phi < 0.0 { 0.0 } else { phi };
    x * phi
}

#[inline(always)]
fn gelu_body(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_lane(*v);
    }
}

/// GELU (erf form) in place.
///
/// Accuracy (every 31st f32 in [−12, 12] against x·Φ(x) in f64; `gelu_error_survey` below):
/// relative error under 2e-7 for x ≥ 0, 3.5e-7 for x ≥ −1, 1.1e-6 for x ≥ −1.5. Like the
/// reference `ops::gelu`, it forms Φ(x) as ½ + (nearly −½) for negative x, so further down
/// its error is absolute, at most 1.5e-7·|x| (the reference's: 1.5e-8·|x|): relative error
/// 3.4e-6 at x = −2, 7e-5 at −3, and below −5.5 the output is ∓0 where the true GELU is
/// under 1.1e-7 in size (the reference's is 0 from −5.42 down). NaN stays NaN, +∞ gives +∞,
/// −∞ gives NaN (∞·0), as in `ops::gelu`.
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

    /// Φ(x), the standard normal CDF, in f64 and independent of `ops::erf`: for |x| < 3.1
    /// erf(z) = 2/√π·e^{−z²}·Σ 2ⁿz^{2n+1}/(1·3···(2n+1)) (terms all positive), beyond it
    /// erfc(z) = e^{−z²}/√π / (z + ½/(z + 1/(z + 3⁄2/(z + …)))). Relative error ~1e-13.
    fn phi64(x: f64) -> f64 {
        let z = x.abs() / std::f64::consts::SQRT_2;
        let two_over_sqrt_pi = std::f64::consts::FRAC_2_SQRT_PI;
        let erfc = if z < 2.2 {
            let (mut term, mut sum, mut n) = (z, z, 0.0);
            while term > 1e-18 * sum {
                n += 1.0;
                term *= 2.0 * z * z / (2.0 * n + 1.0);
                sum += term;
            }
            1.0 - two_over_sqrt_pi * (-z * z).exp() * sum
        } else {
            let mut t = z;
            for k in (1..=80).rev() {
                t = z + 0.5 * k as f64 / t;
            }
            0.5 * two_over_sqrt_pi * (-z * z).exp() / t
        };
        if x >= 0.0 {
            1.0 - 0.5 * erfc
        } else {
            0.5 * erfc
        }
    }

    #[test]
    fn phi64_agrees_with_erf() {
        for i in 0..=2400 {
            let x = -12.0 + i as f64 * 0.01;
            let want = 0.5 + 0.5 * ops::erf((x / std::f64::consts::SQRT_2) as f32) as f64;
            assert!((phi64(x) - want).abs() < 1.2e-7, "Φ({x}) = {}", phi64(x));
        }
        // Tail values from tables of the normal distribution.
        for (x, want) in [
            (-3.0, 1.349_898_031_630_094_5e-3),
            (-6.0, 9.865_876_450_376_98e-10),
        ] {
            assert!(
                ((phi64(x) - want) / want).abs() < 1e-12,
                "Φ({x}) = {}",
                phi64(x)
            );
        }
    }

    /// x: every f32 in [−12, 12] whose bits are a multiple of `stride` (the same count in
    /// each binade, down to the subnormals), a uniform grid of `grid` points, and
    /// special values.
    fn gelu_inputs(stride: u32, grid: u32) -> Vec<f32> {
        let mut xs: Vec<f32> = (0..=12f32.to_bits())
            .step_by(stride as usize)
            .map(f32::from_bits)
            .flat_map(|x| [x, -x])
            .collect();
        xs.extend((0..=grid).map(|i| -12.0 + 24.0 * i as f32 / grid as f32));
        xs.extend([
            0.0, -0.0, 1e-30, -1e-30, 1e-40, -1e-40, 1e-6, -5.5, 5.5, 20.0, -20.0, 1e30,
        ]);
        xs.extend([
            -1e30,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
        ]);
        xs
    }

    /// Against the scalar reference. Both form ½ + (about −½) for negative x in f32, so each
    /// carries an error of a few f32 ulps of 1 times |x| there: the reference half an ulp of
    /// erf (≤ 1.5e-8·|x|), the fast path about 2.5 ulps (rounding in the two polynomials and
    /// the division, ≤ 1.5e-7·|x|). Hence the absolute floor 2e-7·|x|: where GELU is not
    /// small it adds under 1e-6 relative (x ≥ −1.25), and below that the output is smaller
    /// than 2e-7·|x| anyway, an error far under what the f16 weights downstream carry.
    #[test]
    fn gelu_matches_reference() {
        let xs = gelu_inputs(1999, 200_000);
        let mut want = xs.clone();
        ops::gelu(&mut want);
        for isa in Isa::available() {
            let mut got = xs.clone();
            gelu(isa, &mut got);
            for ((&x, &g), &w) in xs.iter().zip(&got).zip(&want) {
                let err = (g as f64 - w as f64).abs();
                assert!(
                    err <= 1.5e-6 * w.abs() as f64 + 2e-7 * x.abs() as f64 + 1e-44,
                    "{isa:?} gelu({x}) = {g}, want {w}"
                );
            }
        }
    }

    /// Against the true GELU (f64): within 2.5e-7 relative for x ≥ 0, 4e-7 for x ≥ −1 and
    /// 2e-6 for x ≥ −1.5 (Φ ≥ 0.067); within 1.6e-7·|x| absolute for all x < 0.
    #[test]
    fn gelu_is_accurate() {
        let xs = gelu_inputs(1999, 200_000);
        for isa in Isa::available() {
            let mut got = xs.clone();
            gelu(isa, &mut got);
            for (&x, &g) in xs.iter().zip(&got) {
                if x.abs() > 1e30 {
                    continue; // x·Φ(x) in f64 is fine, but the f32 output is ±x or 0: below
                }
                let want = x as f64 * phi64(x as f64);
                let err = (g as f64 - want).abs();
                // Below −1.5 only the absolute bound: Φ(x) < 0.067 there.
                let rel = match x {
                    x if x >= 0.0 => 2.5e-7,
                    x if x >= -1.0 => 4e-7,
                    x if x >= -1.5 => 2e-6,
                    _ => f64::INFINITY,
                };
                assert!(
                    (rel == f64::INFINITY || err <= rel * want.abs() + 1e-44)
                        && (x >= 0.0 || err <= 1.6e-7 * x.abs() as f64 + 1e-44),
                    "{isa:?} gelu({x}) = {g}, want {want}"
                );
            }
        }
    }

    /// The negative tail, where GELU is tiny: never positive, within 1.6e-7·|x| of the truth
    /// (`gelu_is_accurate`), and exactly zero below −5.5 (true value under 1.1e-7 in size there;
    /// the reference is zero from −5.42 down).
    #[test]
    fn gelu_negative_tail() {
        let xs: Vec<f32> = (0..=100_000).map(|i| -12.0 + i as f32 * 1e-4).collect();
        for isa in Isa::available() {
            let mut got = xs.clone();
            gelu(isa, &mut got);
            for (&x, &g) in xs.iter().zip(&got) {
                assert!(g <= 0.0, "{isa:?} gelu({x}) = {g}");
                if x <= -5.5 {
                    assert!(g == 0.0, "{isa:?} gelu({x}) = {g}");
                }
            }
        }
    }

    /// NaN stays NaN; ±∞ give what `ops::gelu` gives (∞ and NaN, ∞·0); −0 stays −0.
    #[test]
    fn gelu_special_values() {
        let xs = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            1e-40,
        ];
        let mut want = xs;
        ops::gelu(&mut want);
        assert!(want[0].is_nan() && want[2] == f32::INFINITY && want[3].is_nan());
        for isa in Isa::available() {
            let mut got = xs;
            gelu(isa, &mut got);
            for ((&x, &g), &w) in xs.iter().zip(&got).zip(&want) {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{isa:?} gelu({x}) = {g}, want {w}"
                );
            }
        }
    }

    /// Error survey over every f32 in [−12, 12] (`QUIVER_GELU_STRIDE`=1; the default, every 31st
    /// bit pattern, takes ~20 s): prints the worst errors per region against the true GELU and the floor `c`
    /// that |fast − ops::gelu| ≤ 1.5e-6·|ref| + c·|x| needs.
    /// cargo test --release -p quiver-kernels gelu_error_survey -- --ignored --nocapture
    #[test]
    #[ignore]
    fn gelu_error_survey() {
        let stride = std::env::var("QUIVER_GELU_STRIDE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(31);
        let xs = gelu_inputs(stride, 0);
        let xs: Vec<f32> = xs.into_iter().filter(|x| x.abs() <= 12.0).collect();
        let mut reference = xs.clone();
        ops::gelu(&mut reference);
        let truth: Vec<f64> = xs.iter().map(|&x| x as f64 * phi64(x as f64)).collect();
        for isa in Isa::available() {
            let mut got = xs.clone();
            gelu(isa, &mut got);
            // (region lower bound, worst relative error, at x)
            let mut rel = [(-3.0, 0.0, 0.0), (-2.0, 0.0, 0.0), (-1.5, 0.0, 0.0)];
            let mut rel_more = [(-1.0, 0.0, 0.0), (-0.1, 0.0, 0.0), (0.0, 0.0, 0.0)];
            let (mut abs_neg, mut abs_pos, mut floor) = ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0));
            for i in 0..xs.len() {
                let (x, g, t, r) = (xs[i], got[i] as f64, truth[i], reference[i] as f64);
                if t.abs() < f32::MIN_POSITIVE as f64 && x.abs() < 1.0 {
                    continue; // a subnormal output: its precision is not the kernel's
                }
                let ax = x.abs() as f64;
                let err = (g - t).abs();
                for slot in rel.iter_mut().chain(rel_more.iter_mut()) {
                    if x >= slot.0 && t.abs() >= f32::MIN_POSITIVE as f64 && err / t.abs() > slot.1
                    {
                        *slot = (slot.0, err / t.abs(), x);
                    }
                }
                let a = if x < 0.0 { &mut abs_neg } else { &mut abs_pos };
                if err / ax > a.0 {
                    *a = (err / ax, x);
                }
                let need = ((g - r).abs() - 1.5e-6 * r.abs()).max(0.0) / ax;
                if need > floor.0 {
                    floor = (need, x);
                }
            }
            println!("{isa:?}: {} inputs (stride {stride})", xs.len());
            for (lo, e, x) in rel.iter().chain(&rel_more) {
                println!("  x >= {lo:5}: max relative error {e:.3e} at x = {x}");
            }
            println!(
                "  x < 0: max |err|/|x| {:.3e} at x = {}",
                abs_neg.0, abs_neg.1
            );
            println!(
                "  x >= 0: max |err|/|x| {:.3e} at x = {}",
                abs_pos.0, abs_pos.1
            );
            println!(
                "  vs ops::gelu: floor c = {:.3e} at x = {}",
                floor.0, floor.1
            );
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
