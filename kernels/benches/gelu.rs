//! GELU, one thread: `ops_fast::gelu` beside the lane function it replaced (erfc = t·e^{…}
//! with a division, a ten-term polynomial and an exp; kept here only, for the comparison), on
//! one backend chunk (16384 floats) and on one FFN activation block of all-minilm at a
//! 250-token batch (250 × 1536 floats); each iteration first copies the inputs back in
//! (`copy_only` times that alone). Criterion's "elem/s" is GELU values per second.
//!
//! cargo bench -p quiver-kernels --bench gelu -- --warm-up-time 1 --measurement-time 3

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quiver_kernels::matmul::Isa;
use quiver_kernels::ops;
use quiver_kernels::ops_fast::{self, exp_lane};

const N: usize = 250 * 1536;

/// The previous `ops_fast` GELU lane: 0.5·x·erfc(−x/√2), erfc(z) = t·e^{−z² + P(t)},
/// t = 1/(1 + z/2) (Numerical Recipes' `erfcc` fit).
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn gelu_lane_old(x: f32) -> f32 {
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
fn gelu_old_body(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_lane_old(*v);
    }
}

/// The old lane compiled the way `ops_fast`'s `multiversion!` compiles the new one.
fn gelu_old(isa: Isa, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
        unsafe fn avx512(x: &mut [f32]) {
            gelu_old_body(x)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(x: &mut [f32]) {
            gelu_old_body(x)
        }
        match isa {
            // SAFETY: the ISA was detected at run time.
            Isa::Avx512 | Isa::Avx512Vnni => unsafe { avx512(x) },
            Isa::Avx2 => unsafe { avx2(x) },
            _ => gelu_old_body(x),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        gelu_old_body(x)
    }
}

/// The core clock in GHz, from a chain of dependent integer adds (one cycle each), so that
/// times can be read as cycles per element. None off x86-64.
fn clock_ghz() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut best = f64::INFINITY;
        for _ in 0..20 {
            let mut v = 0u64;
            let t = std::time::Instant::now();
            for _ in 0..1000 {
                // SAFETY: register arithmetic only.
                unsafe { std::arch::asm!(".rept 1000", "add {0}, 1", ".endr", inout(reg) v) };
            }
            best = best.min(t.elapsed().as_secs_f64());
            assert_eq!(v, 1_000_000);
        }
        Some(1e6 / best / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Pre-activations roughly as an FFN produces them: spread over ±6 (timing does not depend
/// on the values: the lane code has no branches).
fn inputs(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / (1u32 << 24) as f32)
        .map(|u| (u - 0.5) * 12.0)
        .collect()
}

fn bench(c: &mut Criterion) {
    match clock_ghz() {
        Some(ghz) => println!("core clock ~{ghz:.2} GHz (cycles per element = ns × GHz)"),
        None => println!("core clock unknown"),
    }
    // One chunk of the CPU backend's parallel GELU (in L1/L2, so compute-bound), and the
    // whole FFN activation of a 250-token all-minilm batch (1.5 MB, past L2).
    for (name, n) in [("gelu_16384", 16384), ("gelu_250x1536", N)] {
        let src = inputs(n);
        let mut buf = src.clone();
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(n as u64));
        // Scalar's mul_add is a libm call on x86-64, not what any machine runs; Avx512Vnni
        // runs the same code as Avx512.
        let isas = Isa::available()
            .into_iter()
            .filter(|&i| i != Isa::Scalar && i != Isa::Avx512Vnni);
        for isa in isas {
            g.bench_function(format!("old/{isa:?}"), |b| {
                b.iter(|| {
                    buf.copy_from_slice(&src);
                    gelu_old(isa, &mut buf)
                })
            });
            g.bench_function(format!("new/{isa:?}"), |b| {
                b.iter(|| {
                    buf.copy_from_slice(&src);
                    ops_fast::gelu(isa, &mut buf)
                })
            });
        }
        g.bench_function("copy_only", |b| b.iter(|| buf.copy_from_slice(&src)));
        g.finish();
    }
    let src = inputs(N);
    let mut buf = src.clone();
    c.bench_function("gelu_250x1536/scalar_reference", |b| {
        b.iter(|| {
            buf.copy_from_slice(&src);
            ops::gelu(&mut buf)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
