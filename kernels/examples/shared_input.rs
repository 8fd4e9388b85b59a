//! Q, K and V (or gate and up) of one input: three separate products (x quantised three
//! times, three parallel regions) against one `*_many` call (quantised once, one region),
//! alternated in one process so that both see the same machine load. Prints the minimum and
//! the median wall time of each, and the mean CPU time of all threads (which a busy machine
//! disturbs less: it leaves out the time other processes hold the cores).
//!
//! cargo run --release -p quiver-kernels --example shared_input [reps]

use quiver_kernels::matmul::int16::{matmul_i16, matmul_i16_many, PackedI16};
use quiver_kernels::matmul::peak::process_cpu_ns;
use quiver_kernels::matmul::q8::{matmul_quant_packed, matmul_quant_packed_many, PackedQuant};
use quiver_kernels::matmul::{FloatFormat, Isa, Product, WeightFormat};
use std::time::Instant;

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 8e6 - 1.0)
        .collect()
}

fn f16_bytes(n: usize, k: usize, seed: u32) -> Vec<u8> {
    values(n * k, seed)
        .iter()
        .flat_map(|&v| half::f16::from_f32(v * 0.1).to_le_bytes())
        .collect()
}

fn q8_bytes(n: usize, k: usize, seed: u32) -> Vec<u8> {
    let v = values(n * k, seed);
    let mut out = Vec::new();
    for b in v.chunks(32) {
        out.extend_from_slice(&half::f16::from_f32(0.001).to_le_bytes());
        out.extend(b.iter().map(|&x| (x * 127.0) as i8 as u8));
    }
    out
}

fn stats(mut t: Vec<f64>) -> (f64, f64) {
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (t[0], t[t.len() / 2])
}

/// Times `sep` and `many` alternately, `reps` each, both writing into `ys` (lent to one at a
/// time); prints the minimum and median wall time and the mean CPU time (ms).
fn compare<Y>(
    what: &str,
    reps: usize,
    ys: &mut Y,
    mut sep: impl FnMut(&mut Y),
    mut many: impl FnMut(&mut Y),
) {
    sep(ys);
    many(ys);
    let (mut wall, mut cpu) = ([Vec::new(), Vec::new()], [0u64; 2]);
    for _ in 0..reps {
        for (i, (wall, cpu)) in wall.iter_mut().zip(cpu.iter_mut()).enumerate() {
            let c = process_cpu_ns();
            let t = Instant::now();
            if i == 0 {
                sep(ys)
            } else {
                many(ys)
            }
            wall.push(t.elapsed().as_secs_f64() * 1e3);
            *cpu += process_cpu_ns() - c;
        }
    }
    let [a, b] = wall.map(stats);
    let cpu = cpu.map(|c| c as f64 / 1e6 / reps as f64);
    println!(
        "{what:<30} wall min/med, cpu ms: separate {:7.3} {:7.3} {:7.3} | many {:7.3} {:7.3} {:7.3} | many/separate: min {:.3} cpu {:.3}",
        a.0, a.1, cpu[0], b.0, b.1, cpu[1], b.0 / a.0, cpu[1] / cpu[0]
    );
}

/// [`compare`] for products of one input: each weight of `ws` (with its bias) by `single`, one
/// call each, against all of them in one `many` call.
fn compare_products<W>(
    what: &str,
    reps: usize,
    ws: &[W],
    biases: &[Vec<f32>],
    ys: &mut Vec<Vec<f32>>,
    single: impl Fn(&W, Option<&[f32]>, &mut [f32]),
    many: impl Fn(&mut [Product<'_, W>]),
) {
    compare(
        what,
        reps,
        ys,
        |ys| {
            for ((w, b), y) in ws.iter().zip(biases).zip(ys.iter_mut()) {
                single(w, Some(b), y);
            }
        },
        |ys| {
            let mut outs: Vec<Product<'_, W>> = ws
                .iter()
                .zip(biases)
                .zip(ys.iter_mut())
                .map(|((w, b), y)| Product {
                    w,
                    bias: Some(b),
                    y,
                })
                .collect();
            many(&mut outs);
        },
    );
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let isa = Isa::detect();
    println!(
        "isa {isa:?}, rayon threads {}",
        rayon::current_num_threads()
    );
    // (name, k, widths of the products)
    let cases: [(&str, usize, &[usize]); 2] = [
        ("minilm qkv", 384, &[384, 384, 384]),
        ("smollm2 gate/up", 576, &[1536, 1536]),
    ];
    for (name, k, widths) in cases {
        for m in [10, 2560, 16000] {
            if name.starts_with("smollm2") && m == 16000 {
                continue;
            }
            let x = values(m * k, 7);
            let mut ys: Vec<Vec<f32>> = widths.iter().map(|&n| vec![0.0; m * n]).collect();
            let biases: Vec<Vec<f32>> = widths.iter().map(|&n| values(n, 3)).collect();

            let ws: Vec<PackedI16> = widths
                .iter()
                .enumerate()
                .map(|(i, &n)| PackedI16::pack(FloatFormat::F16, &f16_bytes(n, k, i as u32), n, k))
                .collect();
            compare_products(
                &format!("int16 {name} m={m}"),
                reps,
                &ws,
                &biases,
                &mut ys,
                |w, b, y| matmul_i16(isa, &x, m, w, b, y),
                |outs| matmul_i16_many(isa, &x, m, outs),
            );

            if m <= 4 {
                continue;
            }
            let ws: Vec<PackedQuant> = widths
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    PackedQuant::pack(WeightFormat::Q8_0, &q8_bytes(n, k, i as u32), n, k)
                })
                .collect();
            compare_products(
                &format!("q8 {name} m={m}"),
                reps,
                &ws,
                &biases,
                &mut ys,
                |w, b, y| matmul_quant_packed(isa, &x, m, w, b, y),
                |outs| matmul_quant_packed_many(isa, &x, m, outs),
            );
        }
    }
}
