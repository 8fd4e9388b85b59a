//! Matmul throughput per weight format and shape, printed next to the machine's measured FMA
//! peak. Criterion's "elem/s" is FLOP/s here (throughput = 2·m·k·n elements per iteration).
//!
//! cargo bench -p quiver-kernels --bench matmul -- --warm-up-time 1 --measurement-time 3
//!
//! Also the activation quantisers the packed paths run before each product (group
//! `quantize_*`, elem/s = activations quantised per second), on all-minilm's two widths at a
//! 2048-token forward pass.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver_kernels::matmul::int16::{matmul_i16, PackedI16, QuantisedI16};
use quiver_kernels::matmul::q8::{matmul_quant_packed, quantize_rows, PackedQuant, QuantRows};
use quiver_kernels::matmul::{self, peak, FloatFormat, Isa, WeightFormat, Weights};

/// Random weight bytes of a format (values need not be meaningful, only finite).
fn weight_bytes(format: WeightFormat, n: usize, k: usize) -> Vec<u8> {
    let mut s = 0x1234_5678_u32;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    let len = format.row_bytes(k).unwrap() * n;
    let mut v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
    let small_f16 = half::f16::from_f32(0.01).to_le_bytes();
    match format {
        // Keep every float finite: overwrite with small values of the format.
        WeightFormat::Float(FloatFormat::F32) => {
            for c in v.chunks_exact_mut(4) {
                c.copy_from_slice(&((next() % 1000) as f32 * 1e-3).to_le_bytes());
            }
        }
        WeightFormat::Float(FloatFormat::F16) => v
            .chunks_exact_mut(2)
            .for_each(|c| c.copy_from_slice(&small_f16)),
        WeightFormat::Float(FloatFormat::BF16) => {
            let b = half::bf16::from_f32(0.01).to_le_bytes();
            v.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&b));
        }
        WeightFormat::Q8_0 => v
            .chunks_exact_mut(34)
            .for_each(|c| c[..2].copy_from_slice(&small_f16)),
        WeightFormat::Q4_0 => v
            .chunks_exact_mut(18)
            .for_each(|c| c[..2].copy_from_slice(&small_f16)),
        WeightFormat::Q4_1 => v.chunks_exact_mut(20).for_each(|c| {
            c[..2].copy_from_slice(&small_f16);
            c[2..4].copy_from_slice(&small_f16);
        }),
    }
    v
}

fn bench(c: &mut Criterion) {
    let isa = Isa::detect();
    println!(
        "ISA {isa:?}, {} threads; FMA peak: {:.1} GFLOP/s one thread, {:.1} GFLOP/s all threads",
        rayon::current_num_threads(),
        peak::fma_peak_gflops(isa, 300),
        peak::fma_peak_gflops_all_threads(isa, 300)
    );
    let formats = [
        ("f32", WeightFormat::Float(FloatFormat::F32)),
        ("f16", WeightFormat::Float(FloatFormat::F16)),
        ("bf16", WeightFormat::Float(FloatFormat::BF16)),
        ("q8_0", WeightFormat::Q8_0),
        ("q4_0", WeightFormat::Q4_0),
        ("q4_1", WeightFormat::Q4_1),
    ];
    for (m, k, n) in [(1024, 384, 1536), (1, 384, 1536), (256, 1536, 384)] {
        let mut g = c.benchmark_group(format!("matmul_{m}x{k}x{n}"));
        g.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        let x: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
        let mut y = vec![0.0f32; m * n];
        for (name, format) in formats {
            let data = weight_bytes(format, n, k);
            let w = Weights {
                format,
                data: &data,
                n,
                k,
            };
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| matmul::matmul(&x, m, &w, &mut y))
            });
        }
        // f16 weights packed once to 13-bit integers (what the CPU backend runs for F16).
        let data = weight_bytes(WeightFormat::Float(FloatFormat::F16), n, k);
        let packed = PackedI16::pack(FloatFormat::F16, &data, n, k);
        g.bench_function(BenchmarkId::from_parameter("f16_int16"), |b| {
            b.iter(|| matmul_i16(isa, &x, m, &packed, None, &mut y))
        });
        // Quantised weights packed once (what the CPU backend runs for Q8_0 / Q4_0 / Q4_1).
        for (name, format) in &formats[3..] {
            let data = weight_bytes(*format, n, k);
            let packed = PackedQuant::pack(*format, &data, n, k);
            g.bench_function(BenchmarkId::from_parameter(format!("{name}_packed")), |b| {
                b.iter(|| matmul_quant_packed(isa, &x, m, &packed, None, &mut y))
            });
        }
        g.finish();
    }
    for (m, k) in [(2048, 384), (2048, 1536)] {
        let mut g = c.benchmark_group(format!("quantize_{m}x{k}"));
        g.throughput(Throughput::Elements((m * k) as u64));
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.01)
            .collect();
        let mut q8 = QuantRows::default();
        g.bench_function(BenchmarkId::from_parameter("q8_blocks"), |b| {
            b.iter(|| quantize_rows(isa, &x, m, k, false, &mut q8))
        });
        let mut i16 = QuantisedI16::default();
        g.bench_function(BenchmarkId::from_parameter("int16_chunks"), |b| {
            b.iter(|| i16.quantize(isa, &x, m, k))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
