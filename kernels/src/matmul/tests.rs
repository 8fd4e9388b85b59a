//! Every matmul path against the scalar reference, on random data and awkward shapes.

use super::*;

/// A small deterministic generator (xorshift), so the tests need no dependency.
pub(crate) struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

fn f16_bytes(v: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
    (
        h.iter().flat_map(|x| x.to_le_bytes()).collect(),
        h.iter().map(|x| x.to_f32()).collect(),
    )
}

fn bf16_bytes(v: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let h: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
    (
        h.iter().flat_map(|x| x.to_le_bytes()).collect(),
        h.iter().map(|x| x.to_f32()).collect(),
    )
}

/// Random Q8_0 rows (q in [-128, 127], including -128 at times) and their values.
fn q8_0_bytes(rng: &mut Rng, n: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
    let (mut bytes, mut vals) = (Vec::new(), Vec::new());
    for _ in 0..n * k / 32 {
        let d = half::f16::from_f32(0.01 + 0.02 * rng.f32().abs());
        bytes.extend_from_slice(&d.to_le_bytes());
        for _ in 0..32 {
            let q = (rng.next() % 256) as u8 as i8;
            bytes.push(q as u8);
            // The documented clamp: -128 is packed as -127.
            vals.push(d.to_f32() * q.max(-127) as f32);
        }
    }
    (bytes, vals)
}

fn q4_0_bytes(rng: &mut Rng, n: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
    let (mut bytes, mut vals) = (Vec::new(), Vec::new());
    for _ in 0..n * k / 32 {
        let d = half::f16::from_f32(0.05 * rng.f32());
        bytes.extend_from_slice(&d.to_le_bytes());
        let nib: Vec<u8> = (0..32).map(|_| (rng.next() % 16) as u8).collect();
        for i in 0..16 {
            bytes.push(nib[i] | (nib[i + 16] << 4));
        }
        vals.extend(nib.iter().map(|&q| d.to_f32() * (q as i32 - 8) as f32));
    }
    (bytes, vals)
}

/// Random Q4_1 rows (x = d·q + m, q in 0..15) and their values, dequantised as ggml does.
fn q4_1_bytes(rng: &mut Rng, n: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
    let (mut bytes, mut vals) = (Vec::new(), Vec::new());
    for _ in 0..n * k / 32 {
        let d = half::f16::from_f32(0.05 * rng.f32());
        let m = half::f16::from_f32(0.1 * rng.f32());
        bytes.extend_from_slice(&d.to_le_bytes());
        bytes.extend_from_slice(&m.to_le_bytes());
        let nib: Vec<u8> = (0..32).map(|_| (rng.next() % 16) as u8).collect();
        for i in 0..16 {
            bytes.push(nib[i] | (nib[i + 16] << 4));
        }
        vals.extend(nib.iter().map(|&q| d.to_f32() * q as f32 + m.to_f32()));
    }
    (bytes, vals)
}

#[allow(clippy::too_many_arguments)]
/// |got - want| ≤ rel · Σ|x·w| per element (the scale of the rounding a sum can pick up).
fn assert_close(
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    got: &[f32],
    want: &[f32],
    rel: f32,
    what: &str,
) {
    for i in 0..m {
        for j in 0..n {
            let mag: f32 = (0..k).map(|p| (x[i * k + p] * w[j * k + p]).abs()).sum();
            let (g, e) = (got[i * n + j], want[i * n + j]);
            assert!(
                (g - e).abs() <= rel * mag + 1e-6,
                "{what}: y[{i}][{j}] = {g}, want {e} (m={m} k={k} n={n})"
            );
        }
    }
}

const SHAPES: [(usize, usize, usize); 9] = [
    (1, 64, 5),
    (3, 96, 33),
    (1, 384, 70),
    (8, 32, 32),
    (13, 160, 65),
    (17, 800, 40),
    (40, 96, 100),
    (7, 416, 31),
    (4, 224, 70),
];

#[test]
fn float_paths_match_reference() {
    let mut rng = Rng::new(1);
    for &(m, k, n) in SHAPES
        .iter()
        .chain(&[(5, 77, 9), (2, 1, 3), (3, 77, 9), (4, 200, 130)])
    {
        let x = rng.vec(m * k);
        let w32 = rng.vec(n * k);
        let formats = [
            (
                FloatFormat::F32,
                w32.iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
                w32.clone(),
            ),
            {
                let (b, v) = f16_bytes(&w32);
                (FloatFormat::F16, b, v)
            },
            {
                let (b, v) = bf16_bytes(&w32);
                (FloatFormat::BF16, b, v)
            },
        ];
        for (fmt, bytes, vals) in &formats {
            let mut want = vec![0.0; m * n];
            matmul_f32_ref(&x, vals, m, k, n, &mut want);
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; m * n];
                let w = Weights {
                    format: WeightFormat::Float(*fmt),
                    data: bytes,
                    n,
                    k,
                };
                matmul_with(isa, &x, m, &w, &mut y);
                assert_close(
                    &x,
                    vals,
                    m,
                    k,
                    n,
                    &y,
                    &want,
                    1e-5,
                    &format!("{fmt:?} {isa:?}"),
                );
                // Packed once: the same tiles over the same panels, so the same bits.
                let packed = float::PackedF32::pack(*fmt, bytes, n, k);
                let mut yp = vec![f32::NAN; m * n];
                float::matmul_float_packed(isa, &x, m, &packed, &mut yp);
                assert!(
                    yp.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "packed {fmt:?} {isa:?} m={m} k={k} n={n}"
                );
            }
        }
    }
}

#[test]
fn quantised_paths_are_exact_against_scalar_and_close_to_reference() {
    let mut rng = Rng::new(2);
    // 102 rows: two row blocks of the packed path, the second ending in a 2-row tile.
    for &(m, k, n) in SHAPES
        .iter()
        .chain(&[(5, 224, 45), (5, 32, 1), (102, 64, 40)])
    {
        let x = rng.vec(m * k);
        for (format, (bytes, vals)) in [
            (WeightFormat::Q8_0, q8_0_bytes(&mut rng, n, k)),
            (WeightFormat::Q4_0, q4_0_bytes(&mut rng, n, k)),
            (WeightFormat::Q4_1, q4_1_bytes(&mut rng, n, k)),
        ] {
            let w = Weights {
                format,
                data: &bytes,
                n,
                k,
            };
            let mut scalar = vec![f32::NAN; m * n];
            matmul_with(Isa::Scalar, &x, m, &w, &mut scalar);
            // The scalar integer path against f32 on dequantised weights: the difference is the
            // activation rounding, at most half a step (max|x|/254) per element.
            let mut want = vec![0.0; m * n];
            matmul_f32_ref(&x, &vals, m, k, n, &mut want);
            for i in 0..m {
                for j in 0..n {
                    let bound: f32 = (0..k)
                        .map(|p| {
                            let b0 = i * k + p / 32 * 32;
                            let amax = x[b0..b0 + 32].iter().fold(0.0f32, |a, v| a.max(v.abs()));
                            vals[j * k + p].abs() * amax / 254.0
                        })
                        .sum();
                    let (g, e) = (scalar[i * n + j], want[i * n + j]);
                    assert!(
                        (g - e).abs() <= bound * 1.01 + 1e-5,
                        "{format:?} y[{i}][{j}]={g} want {e} bound {bound}"
                    );
                }
            }
            // Packed once: the same panels and tiles as packing per call, so the same bits.
            let packed = q8::PackedQuant::pack(format, &bytes, n, k);
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; m * n];
                q8::matmul_quant_packed(isa, &x, m, &packed, Some(&bias), &mut y);
                // The bias is added after the sums, so taking it back out is exact enough.
                for row in y.chunks_mut(n) {
                    for (v, b) in row.iter_mut().zip(&bias) {
                        *v -= b;
                    }
                }
                let mut no_bias = vec![f32::NAN; m * n];
                q8::matmul_quant_packed(isa, &x, m, &packed, None, &mut no_bias);
                for (a, b) in y.iter().zip(&no_bias) {
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "bias: {a} vs {b}");
                }
                let y = no_bias;
                let mut per_call = vec![f32::NAN; m * n];
                q8::matmul_quant(isa, format, &x, m, &bytes, n, k, &mut per_call);
                assert_eq!(y, per_call, "packed {format:?} {isa:?} m={m} k={k} n={n}");
            }
            // SIMD paths: the same integers and the same scaling steps, so the same bits.
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; m * n];
                matmul_with(isa, &x, m, &w, &mut y);
                assert_eq!(y, scalar, "{format:?} {isa:?} m={m} k={k} n={n}");
            }
        }
    }
}

#[test]
fn activation_quantisation_is_identical_on_every_path() {
    let mut rng = Rng::new(3);
    let (m, k) = (5, 256);
    let mut x = rng.vec(m * k);
    x[0..32].fill(0.0); // an all-zero block
    x[40] = 127.5; // a tie after scaling
    let mut want = q8::QuantRows::default();
    q8::quantize_rows(Isa::Scalar, &x, m, k, true, &mut want);
    assert!(want.q[0..32].iter().all(|&q| q == 128) && want.d[0] == 0.0 && want.s[0] == 0.0);
    // The block sums (Q4_1's minimum term): d · Σ q of the rounded values.
    for (b, q) in want.q.chunks_exact(32).enumerate() {
        let sum: i32 = q.iter().map(|&v| v as i32 - 128).sum();
        assert_eq!(want.s[b], want.d[b] * sum as f32, "block {b}");
    }
    assert!(want.s.iter().any(|&s| s != 0.0));
    for isa in Isa::available() {
        let mut got = q8::QuantRows::default();
        q8::quantize_rows(isa, &x, m, k, true, &mut got);
        assert_eq!(
            (got.q, got.d, got.s),
            (want.q.clone(), want.d.clone(), want.s.clone()),
            "{isa:?}"
        );
    }
}

/// Every activation quantiser treats NaN, infinity and subnormal blocks as the reference does
/// (NaN ignored by the block maximum and quantised to 0; an infinity makes the scale infinite
/// and every q 0; a block so small that 1 / scale overflows clamps to ±127 and sends 0 to 0).
#[test]
fn activation_quantisation_matches_scalar_on_nan_inf_and_subnormals() {
    let mut rng = Rng::new(4);
    // 20 blocks: more than one group of 16 for the AVX-512 path, and a partial one.
    let k = 640;
    let mut x = rng.vec(k);
    x[3] = f32::NAN;
    x[40] = f32::INFINITY;
    x[70] = f32::NEG_INFINITY;
    x[100..128].fill(f32::NAN);
    for (i, v) in x[128..160].iter_mut().enumerate() {
        *v = [0.0, 1e-40, -3e-39, 5e-45][i % 4];
    }
    x[600] = f32::NAN;
    let mut want = q8::QuantRows::default();
    q8::quantize_rows(Isa::Scalar, &x, 1, k, true, &mut want);
    assert!(want.q[128..160].contains(&1) && want.q[128..160].contains(&128));
    for isa in Isa::available() {
        let mut got = q8::QuantRows::default();
        q8::quantize_rows(isa, &x, 1, k, true, &mut got);
        assert_eq!(got.q, want.q, "{isa:?}");
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.d), bits(&want.d), "{isa:?}");
        assert_eq!(got.s.len(), want.s.len());
        for (g, w) in got.s.iter().zip(&want.s) {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{isa:?}"
            );
        }
    }
}

/// Every f16 bit pattern converts as `half` does, on every path (F16C, FCVTL, scalar); the
/// row is 65 536 + 3 long so the vector loops' tails run too.
#[test]
fn f16_conversion_is_exact_for_every_value() {
    let mut bytes: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    bytes.extend_from_slice(&[0x00, 0x3c, 0x01, 0x80, 0xff, 0x7b]); // 1.0, -tiny, max
    let n = bytes.len() / 2;
    let want: Vec<f32> = bytes
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    for isa in Isa::available() {
        let mut got = vec![0.0f32; n];
        pack::convert_row(isa, FloatFormat::F16, &bytes, 0, &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{isa:?}: f16 #{i}: {g} vs {w}"
            );
        }
    }
}

/// Batch invariance: row i of y depends on row i of x alone, not on how many rows are
/// multiplied with it (which picks tile sizes and task grids), where it sits among them, or the
/// number of threads. Every path and ISA: the float path read from the file, the 13-bit integer
/// path and the 8-bit path over packed weights, and the 8-bit path over the file's blocks.
#[test]
fn a_row_gives_the_same_bits_in_any_batch_and_thread_count() {
    use super::int16::{matmul_i16, PackedI16};
    use super::q8::{matmul_quant, matmul_quant_packed, PackedQuant};
    let mut rng = Rng::new(11);
    let (k, n) = (416, 70);
    let rows = 103;
    let x = rng.vec(rows * k);
    let w32 = rng.vec(n * k);
    let f32_bytes: Vec<u8> = w32.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (f16, _) = f16_bytes(&w32);
    let (q8, _) = q8_0_bytes(&mut rng, n, k);
    let (q41, _) = q4_1_bytes(&mut rng, n, k);
    let packed_f32 = float::PackedF32::pack(FloatFormat::F32, &f32_bytes, n, k);
    let packed_i16 = PackedI16::pack(FloatFormat::F16, &f16, n, k);
    let packed_q8 = PackedQuant::pack(WeightFormat::Q8_0, &q8, n, k);
    let packed_q41 = PackedQuant::pack(WeightFormat::Q4_1, &q41, n, k);
    type Path<'a> = (
        &'a str,
        Box<dyn Fn(Isa, &[f32], usize, &mut [f32]) + Sync + 'a>,
    );
    let paths: Vec<Path> = vec![
        (
            "f32 file",
            Box::new(|isa, x, m, y| {
                let w = Weights {
                    format: WeightFormat::Float(FloatFormat::F32),
                    data: &f32_bytes,
                    n,
                    k,
                };
                matmul_with(isa, x, m, &w, y)
            }),
        ),
        (
            "f32 packed",
            Box::new(|isa, x, m, y| float::matmul_float_packed(isa, x, m, &packed_f32, y)),
        ),
        (
            "f16 int16",
            Box::new(|isa, x, m, y| matmul_i16(isa, x, m, &packed_i16, None, y)),
        ),
        (
            "q8_0 packed",
            Box::new(|isa, x, m, y| matmul_quant_packed(isa, x, m, &packed_q8, None, y)),
        ),
        (
            "q4_1 packed",
            Box::new(|isa, x, m, y| matmul_quant_packed(isa, x, m, &packed_q41, None, y)),
        ),
        (
            "q4_1 file",
            Box::new(|isa, x, m, y| matmul_quant(isa, WeightFormat::Q4_1, x, m, &q41, n, k, y)),
        ),
    ];
    for (name, run) in &paths {
        for isa in Isa::available() {
            let mut all = vec![f32::NAN; rows * n];
            run(isa, &x, rows, &mut all);
            // Windows of every size from 1 row (a query) up, at several offsets.
            for (i0, m) in [
                (0, 1),
                (5, 1),
                (102, 1),
                (3, 2),
                (7, 3),
                (1, 4),
                (9, 5),
                (50, 13),
            ] {
                for threads in [1, 2] {
                    let mut y = vec![f32::NAN; m * n];
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap()
                        .install(|| run(isa, &x[i0 * k..(i0 + m) * k], m, &mut y));
                    let want = &all[i0 * n..(i0 + m) * n];
                    assert!(
                        y.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{name} {isa:?}: rows {i0}..{} alone on {threads} thread(s) differ \
                         from the same rows among {rows}",
                        i0 + m
                    );
                }
            }
        }
    }
}

#[test]
fn task_grid_covers_every_tile_once() {
    for threads in [1, 2, 3, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for m in [1, 5, 96, 97, 480, 1000, 1024, 2000, 2048] {
                for panels in [1, 3, 12, 48] {
                    let g = TaskGrid::new(m, 4, panels);
                    let mut seen = vec![0u8; m * panels];
                    for t in 0..g.tasks() {
                        let (i0, rows, ps) = g.task(t);
                        for i in i0..i0 + rows {
                            for p in ps.clone() {
                                seen[i * panels + p] += 1;
                            }
                        }
                    }
                    assert!(
                        seen.iter().all(|&c| c == 1),
                        "{threads} threads, m {m}, {panels} panels: a tile run {} times",
                        seen.iter().find(|&&c| c != 1).unwrap()
                    );
                }
            }
        });
    }
}

#[test]
fn fma_peak_is_positive() {
    // Positive and finite only: a rate bound would fail under emulation (qemu) or load.
    for isa in Isa::available() {
        let p = peak::fma_peak_gflops(isa, 5);
        assert!(p > 0.0 && p.is_finite(), "{isa:?}: {p}");
    }
}

mod int16_path {
    use super::super::int16::{matmul_i16, quantize_row, quantize_row_scalar, PackedI16, QMAX};

    #[test]
    fn quantize_row_matches_scalar() {
        let mut rng = Rng::new(15);
        for len in [1, 15, 16, 17, 384, 1000] {
            let mut v = rng.vec(len);
            // Exact ties after scaling: max 4095 → scale 1, halves round to even.
            v[0] = 4095.0;
            if len > 3 {
                v[1] = 2.5;
                v[2] = -3.5;
            }
            let mut want = vec![0i16; len];
            let sw = quantize_row_scalar(&v, &mut want);
            if len > 3 {
                assert_eq!((want[1], want[2]), (2, -4));
            }
            for isa in Isa::available() {
                let mut got = vec![7i16; len];
                assert_eq!(quantize_row(isa, &v, &mut got), sw, "{isa:?}");
                assert_eq!(got, want, "{isa:?} len {len}");
            }
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut w = v.clone();
                w[len / 2] = bad;
                for isa in Isa::available() {
                    assert!(
                        quantize_row(isa, &w, &mut vec![0; len]).is_nan(),
                        "{isa:?} {bad}"
                    );
                }
            }
        }
        let mut z = vec![1i16; 20];
        assert_eq!(quantize_row(Isa::detect(), &[0.0; 20], &mut z), 0.0);
        assert!(z.iter().all(|&q| q == 0));
    }

    use super::*;

    /// Every ISA gives the scalar kernel's result exactly (the same integer sums, the same
    /// float steps), and that result is the f32 product within the quantisation error.
    #[test]
    fn matches_scalar_exactly_and_reference_closely() {
        let mut rng = Rng::new(16);
        for &(n, k) in &[(32, 64), (77, 301), (64, 384), (40, 1000), (5, 2)] {
            let (bytes, wv) = f16_bytes(&rng.vec(n * k));
            let packed = PackedI16::pack(FloatFormat::F16, &bytes, n, k);
            let bias_values = rng.vec(n);
            for (&m, with_bias) in [1, 3, 8, 13, 17].iter().zip([false, true].iter().cycle()) {
                let x = rng.vec(m * k);
                let mut want = vec![0.0; m * n];
                matmul_f32_ref(&x, &wv, m, k, n, &mut want);
                let bias = with_bias.then_some(&bias_values[..]);
                if let Some(b) = bias {
                    want.chunks_mut(n).for_each(|row| crate::ops::add(row, b));
                }
                let mut scalar = vec![f32::NAN; m * n];
                matmul_i16(Isa::Scalar, &x, m, &packed, bias, &mut scalar);
                // |error| ≤ Σ |x||δw| + |δx||w| + |δx||δw| with |δ| ≤ max/(2·QMAX) per factor.
                let bound = k as f32 * (1.0 / QMAX + 1e-6) * 1.01;
                for (a, b) in scalar.iter().zip(&want) {
                    assert!((a - b).abs() <= bound, "n {n} k {k} m {m}: {a} vs {b}");
                }
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; m * n];
                    matmul_i16(isa, &x, m, &packed, bias, &mut got);
                    assert_eq!(got, scalar, "{isa:?} n {n} k {k} m {m} bias {with_bias}");
                }
            }
        }
    }

    /// Each chunk of k has its own scale: one huge activation spoils only its own chunk. Here
    /// it meets zero weights, so the exact product ignores it; the other chunks must keep the
    /// precision of their own values (one scale per row would quantise them in steps of
    /// 1000/4095 and miss the bound ~100×).
    #[test]
    fn an_outlier_costs_precision_only_in_its_chunk() {
        use super::super::int16::KC;
        let mut rng = Rng::new(18);
        let (n, k, m) = (64, 3 * KC, 2);
        let mut w = rng.vec(n * k);
        for row in w.chunks_mut(k) {
            row[..KC].fill(0.0);
        }
        let (bytes, wv) = f16_bytes(&w);
        let packed = PackedI16::pack(FloatFormat::F16, &bytes, n, k);
        let mut x = rng.vec(m * k);
        x[5] = 1000.0;
        let mut want = vec![0.0; m * n];
        matmul_f32_ref(&x, &wv, m, k, n, &mut want);
        // Two chunks of KC products, each off by ≤ (|x| + |w| + ε)/(2·QMAX), |x|, |w| ≤ 1.
        let bound = 2.0 * KC as f32 * 2.01 / (2.0 * QMAX);
        for isa in Isa::available() {
            let mut got = vec![0.0; m * n];
            matmul_i16(isa, &x, m, &packed, None, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= bound, "{isa:?} {i}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn bf16_and_f32_weights_pack_too() {
        let mut rng = Rng::new(17);
        let (n, k, m) = (33, 130, 5);
        let x = rng.vec(m * k);
        let (bb, bv) = bf16_bytes(&rng.vec(n * k));
        let fv = rng.vec(n * k);
        let fb: Vec<u8> = fv.iter().flat_map(|v| v.to_le_bytes()).collect();
        for (fmt, bytes, wv) in [(FloatFormat::BF16, bb, bv), (FloatFormat::F32, fb, fv)] {
            let packed = PackedI16::pack(fmt, &bytes, n, k);
            let (mut got, mut want) = (vec![0.0; m * n], vec![0.0; m * n]);
            matmul_i16(Isa::detect(), &x, m, &packed, None, &mut got);
            matmul_f32_ref(&x, &wv, m, k, n, &mut want);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= k as f32 * 1.01 / QMAX,
                    "{fmt:?}: {a} vs {b}"
                );
            }
        }
    }

    /// The overflow bound: all weights and activations at the extreme of the same sign, the
    /// longest k chunk, still sum exactly.
    #[test]
    fn extreme_values_do_not_overflow() {
        let (n, k, m) = (32, 1024, 8);
        let w: Vec<u8> = (0..n * k).flat_map(|_| 1.0f32.to_le_bytes()).collect();
        let packed = PackedI16::pack(FloatFormat::F32, &w, n, k);
        for sign in [1.0f32, -1.0] {
            let x = vec![sign; m * k];
            for isa in Isa::available() {
                let mut y = vec![0.0; m * n];
                matmul_i16(isa, &x, m, &packed, None, &mut y);
                // Exact integer sums; only the f32 conversion and the scales round.
                let want = sign * k as f32;
                assert!(
                    y.iter().all(|&v| (v - want).abs() <= want.abs() * 1e-6),
                    "{isa:?}: {:?}",
                    &y[..4]
                );
            }
        }
    }

    #[test]
    fn zero_rows_stay_zero_and_nan_propagates() {
        let (n, k) = (4, 64);
        let w: Vec<u8> = (0..n * k)
            .flat_map(|i| ((i % 7) as f32).to_le_bytes())
            .collect();
        let packed = PackedI16::pack(FloatFormat::F32, &w, n, k);
        let mut x = vec![0.0f32; 2 * k];
        x[k + 3] = f32::NAN;
        let mut y = vec![1.0; 2 * n];
        matmul_i16(Isa::detect(), &x, 2, &packed, None, &mut y);
        assert!(y[..n].iter().all(|&v| v == 0.0));
        assert!(y[n..].iter().all(|v| v.is_nan()));
    }
}
