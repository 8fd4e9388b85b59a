//! The machine's f32 FMA peak, measured: a loop of independent FMA chains with no memory
//! traffic. Benches print matmul GFLOP/s next to it. Also the process's CPU time, which the
//! A/B examples report beside wall time.

use super::isa::Isa;
use std::time::Instant;

/// GFLOP/s of one thread running FMAs on the widest vectors of `isa` for about `millis` ms.
pub fn fma_peak_gflops(isa: Isa, millis: u64) -> f64 {
    let iters: u64 = 1 << 20;
    let start = Instant::now();
    let mut flops = 0.0f64;
    let mut sink = 0.0f32;
    while start.elapsed().as_millis() < millis as u128 {
        let (f, s) = fma_loop(isa, iters);
        flops += f;
        sink += s;
    }
    std::hint::black_box(sink);
    flops / start.elapsed().as_secs_f64() / 1e9
}

/// Peak of all rayon threads at once (each runs [`fma_peak_gflops`]).
pub fn fma_peak_gflops_all_threads(isa: Isa, millis: u64) -> f64 {
    use rayon::prelude::*;
    (0..rayon::current_num_threads())
        .into_par_iter()
        .map(|_| fma_peak_gflops(isa, millis))
        .sum()
}

fn fma_loop(isa: Isa, iters: u64) -> (f64, f32) {
    match isa {
        // SAFETY: the ISA was detected.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe { fma_avx512(iters) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { fma_avx2(iters) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot => unsafe { fma_neon(iters) },
        _ => {
            let mut acc = [1.0f32; 8];
            let m = std::hint::black_box(0.999_999f32);
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = a.mul_add(m, 1e-7);
                }
            }
            ((iters * 8 * 2) as f64, acc.iter().sum())
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(iters: u64) -> (f64, f32) {
    use std::arch::x86_64::*;
    // 12 independent chains hide the FMA latency on every current core.
    let mut acc = [_mm512_set1_ps(1.0); 12];
    let m = _mm512_set1_ps(std::hint::black_box(0.999_999));
    let c = _mm512_set1_ps(1e-7);
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, m, c);
        }
    }
    let mut s = _mm512_setzero_ps();
    for a in acc {
        s = _mm512_add_ps(s, a);
    }
    ((iters * 12 * 16 * 2) as f64, _mm512_reduce_add_ps(s))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: u64) -> (f64, f32) {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(1.0); 12];
    let m = _mm256_set1_ps(std::hint::black_box(0.999_999));
    let c = _mm256_set1_ps(1e-7);
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut t = [0.0f32; 8];
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    _mm256_storeu_ps(t.as_mut_ptr(), s);
    ((iters * 12 * 8 * 2) as f64, t.iter().sum())
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn fma_neon(iters: u64) -> (f64, f32) {
    use std::arch::aarch64::*;
    // 16 chains: 4 FMA pipes × 4 cycles of latency on the widest current cores.
    let mut acc = [vdupq_n_f32(1.0); 16];
    let m = vdupq_n_f32(std::hint::black_box(0.999_999));
    let c = vdupq_n_f32(1e-7);
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = vfmaq_f32(c, *a, m);
        }
    }
    let s = acc.iter().fold(vdupq_n_f32(0.0), |s, &a| vaddq_f32(s, a));
    ((iters * 16 * 4 * 2) as f64, vaddvq_f32(s))
}

/// CPU time of all this process's threads so far (ns), from `/proc/self/task/*/schedstat`
/// (0 where there is none). It counts work and the spinning of idle rayon workers, not the
/// time the machine's other load takes the cores away, so a busy machine disturbs it less
/// than wall time.
pub fn process_cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| {
                let s = std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok()?;
                s.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum()
        })
        .unwrap_or(0)
}
