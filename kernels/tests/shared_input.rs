//! Several products of one input (Q, K and V of a layer) with the input quantised once: each
//! output must be bit for bit what the product gives alone. Both packed paths are integer
//! sums with the same float steps per tile, so anything but identical bits is a bug (a tile
//! given the wrong activations, scales, bias or output offset).
//!
//! Shapes are awkward on purpose: row counts that are not a multiple of the micro-kernel's
//! rows (6 / 4 / 3) nor of the 96-row task blocks, column counts that leave part panels, an
//! odd k that spans two 128-value chunks (int16), and mixed formats within one call.

use quiver_kernels::matmul::int16::{
    matmul_i16, matmul_i16_many, matmul_i16_quantised, PackedI16, QuantisedI16,
};
use quiver_kernels::matmul::q8::{
    matmul_quant_packed, matmul_quant_packed_many, matmul_quant_packed_quantised, quantize_rows,
    PackedQuant, QuantRows,
};
use quiver_kernels::matmul::{FloatFormat, Isa, Product, WeightFormat};

/// xorshift: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

const ROWS: [usize; 6] = [1, 5, 7, 97, 101, 203];

/// `n` rows of `k` random values in `fmt`'s bytes.
fn float_weights(rng: &mut Rng, fmt: FloatFormat, n: usize, k: usize) -> Vec<u8> {
    let v = rng.vec(n * k);
    match fmt {
        FloatFormat::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        FloatFormat::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        FloatFormat::BF16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
    }
}

/// `n` rows of `k` random blocks of a quantised `format` (random quants, sane f16 scales).
fn quant_weights(rng: &mut Rng, format: WeightFormat, n: usize, k: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n * k / 32 {
        out.extend_from_slice(&half::f16::from_f32(0.05 * rng.f32()).to_le_bytes());
        let quants = match format {
            WeightFormat::Q8_0 => 32,
            WeightFormat::Q4_0 => 16,
            WeightFormat::Q4_1 => {
                // The minimum.
                out.extend_from_slice(&half::f16::from_f32(0.1 * rng.f32()).to_le_bytes());
                16
            }
            WeightFormat::Float(_) => unreachable!(),
        };
        out.extend((0..quants).map(|_| rng.next() as u8));
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Each product alone (`single`) and all together (`many`) give the same bits.
fn check_many<W>(
    what: &str,
    m: usize,
    ws: &[W],
    n_of: impl Fn(&W) -> usize,
    biases: &[Option<Vec<f32>>],
    single: impl Fn(&W, Option<&[f32]>, &mut [f32]),
    many: impl Fn(&mut [Product<'_, W>]),
) {
    let mut alone: Vec<Vec<f32>> = Vec::new();
    for (w, b) in ws.iter().zip(biases) {
        let mut y = vec![f32::NAN; m * n_of(w)];
        single(w, b.as_deref(), &mut y);
        alone.push(y);
    }
    let mut ys: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; m * n_of(w)]).collect();
    let mut outs: Vec<Product<'_, W>> = ws
        .iter()
        .zip(biases)
        .zip(ys.iter_mut())
        .map(|((w, b), y)| Product {
            w,
            bias: b.as_deref(),
            y,
        })
        .collect();
    many(&mut outs);
    drop(outs);
    for (i, (a, b)) in alone.iter().zip(&ys).enumerate() {
        assert!(a.iter().all(|v| v.is_finite()), "{what}: product {i} alone");
        assert_eq!(bits(a), bits(b), "{what}: product {i} of {}", ws.len());
    }
}

/// Float weights of three formats and widths, k odd and past one 128-value chunk.
fn int16_case(rng: &mut Rng, k: usize) -> (Vec<PackedI16>, Vec<Option<Vec<f32>>>) {
    let shapes = [
        (FloatFormat::F16, 100),
        (FloatFormat::BF16, 64),
        (FloatFormat::F32, 37),
    ];
    let ws = shapes
        .iter()
        .map(|&(f, n)| PackedI16::pack(f, &float_weights(rng, f, n, k), n, k))
        .collect();
    let biases = vec![Some(rng.vec(100)), None, Some(rng.vec(37))];
    (ws, biases)
}

#[test]
fn int16_products_of_one_input_match_each_alone_bit_for_bit() {
    let mut rng = Rng(0x5eed_1616);
    let k = 131;
    let (ws, biases) = int16_case(&mut rng, k);
    for isa in Isa::available() {
        for m in ROWS {
            let x = rng.vec(m * k);
            check_many(
                &format!("int16 {isa:?} m={m}"),
                m,
                &ws,
                |w| w.n,
                &biases,
                |w, b, y| matmul_i16(isa, &x, m, w, b, y),
                |outs| matmul_i16_many(isa, &x, m, outs),
            );
            // Quantised once by the caller and reused: two calls on the same activations.
            let mut qx = QuantisedI16::default();
            qx.quantize(isa, &x, m, k);
            assert_eq!(qx.rows(), m);
            check_many(
                &format!("int16 quantised {isa:?} m={m}"),
                m,
                &ws,
                |w| w.n,
                &biases,
                |w, b, y| matmul_i16(isa, &x, m, w, b, y),
                |outs| {
                    let (first, rest) = outs.split_at_mut(1);
                    matmul_i16_quantised(isa, &qx, first);
                    matmul_i16_quantised(isa, &qx, rest);
                },
            );
        }
    }
}

#[test]
fn quantised_products_of_one_input_match_each_alone_bit_for_bit() {
    let mut rng = Rng(0x5eed_0808);
    let k = 96;
    let shapes = [
        (WeightFormat::Q8_0, 70),
        (WeightFormat::Q4_0, 32),
        (WeightFormat::Q4_1, 45),
    ];
    let ws: Vec<PackedQuant> = shapes
        .iter()
        .map(|&(f, n)| PackedQuant::pack(f, &quant_weights(&mut rng, f, n, k), n, k))
        .collect();
    let biases = vec![Some(rng.vec(70)), Some(rng.vec(32)), None];
    for isa in Isa::available() {
        for m in ROWS {
            let x = rng.vec(m * k);
            check_many(
                &format!("q8 {isa:?} m={m}"),
                m,
                &ws,
                |w| w.n,
                &biases,
                |w, b, y| matmul_quant_packed(isa, &x, m, w, b, y),
                |outs| matmul_quant_packed_many(isa, &x, m, outs),
            );
            let mut qx = QuantRows::default();
            quantize_rows(isa, &x, m, k, true, &mut qx);
            check_many(
                &format!("q8 quantised {isa:?} m={m}"),
                m,
                &ws,
                |w| w.n,
                &biases,
                |w, b, y| matmul_quant_packed(isa, &x, m, w, b, y),
                |outs| {
                    let (first, rest) = outs.split_at_mut(2);
                    matmul_quant_packed_quantised(isa, &qx, m, first);
                    matmul_quant_packed_quantised(isa, &qx, m, rest);
                },
            );
        }
    }
}

/// The split of the work into tasks depends on the thread count: the bits must not.
#[test]
fn products_of_one_input_do_not_depend_on_the_thread_count() {
    let mut rng = Rng(0x5eed_7777);
    let k = 131;
    let (ws, biases) = int16_case(&mut rng, k);
    let m = 101;
    let x = rng.vec(m * k);
    let isa = Isa::detect();
    let mut one_thread: Vec<Vec<f32>> = ws.iter().map(|w| vec![0.0; m * w.n]).collect();
    for ((w, b), y) in ws.iter().zip(&biases).zip(one_thread.iter_mut()) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| matmul_i16(isa, &x, m, w, b.as_deref(), y));
    }
    for threads in [3, 5] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            check_many(
                &format!("int16 {threads} threads"),
                m,
                &ws,
                |w| w.n,
                &biases,
                |w, b, y| matmul_i16(isa, &x, m, w, b, y),
                |outs| matmul_i16_many(isa, &x, m, outs),
            );
            let mut ys: Vec<Vec<f32>> = ws.iter().map(|w| vec![0.0; m * w.n]).collect();
            let mut outs: Vec<Product<'_, PackedI16>> = ws
                .iter()
                .zip(&biases)
                .zip(ys.iter_mut())
                .map(|((w, b), y)| Product {
                    w,
                    bias: b.as_deref(),
                    y,
                })
                .collect();
            matmul_i16_many(isa, &x, m, &mut outs);
            drop(outs);
            for (a, b) in one_thread.iter().zip(&ys) {
                assert_eq!(bits(a), bits(b), "{threads} threads vs 1");
            }
        });
    }
}

#[test]
fn no_products_and_no_rows_are_fine() {
    let isa = Isa::detect();
    matmul_i16_many(isa, &[1.0; 6], 2, &mut []);
    matmul_quant_packed_many(isa, &[1.0; 64], 2, &mut []);
    let mut rng = Rng(0x5eed_0000);
    let (ws, _) = int16_case(&mut rng, 5);
    let mut y: Vec<f32> = Vec::new();
    matmul_i16_many(
        isa,
        &[],
        0,
        &mut [Product {
            w: &ws[0],
            bias: None,
            y: &mut y,
        }],
    );
}

#[test]
#[should_panic(expected = "x is not m×k")]
fn products_of_different_k_are_refused() {
    let mut rng = Rng(0x5eed_0001);
    let (a, _) = int16_case(&mut rng, 8);
    let (b, _) = int16_case(&mut rng, 10);
    let (mut ya, mut yb) = (vec![0.0; 2 * a[0].n], vec![0.0; 2 * b[0].n]);
    matmul_i16_many(
        Isa::detect(),
        &[0.5; 16],
        2,
        &mut [
            Product {
                w: &a[0],
                bias: None,
                y: &mut ya,
            },
            Product {
                w: &b[0],
                bias: None,
                y: &mut yb,
            },
        ],
    );
}
