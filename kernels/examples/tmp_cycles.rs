use quiver_kernels::matmul::int16::{matmul_i16, PackedI16};
use quiver_kernels::matmul::FloatFormat;
use quiver_kernels::matmul::Isa;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (m, k, n): (usize, usize, usize) = (
        args[1].parse().unwrap(),
        args[2].parse().unwrap(),
        args[3].parse().unwrap(),
    );
    let reps: usize = args[4].parse().unwrap();
    let x: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
    let w: Vec<u8> = (0..n * k)
        .flat_map(|i| half::f16::from_f32(((i % 13) as f32 - 6.0) * 0.01).to_le_bytes())
        .collect();
    let mut y = vec![0.0f32; m * n];
    let packed = PackedI16::pack(FloatFormat::F16, &w, n, k);
    matmul_i16(Isa::detect(), &x, m, &packed, &mut y);
    let t = std::time::Instant::now();
    for _ in 0..reps {
        matmul_i16(Isa::detect(), &x, m, &packed, &mut y)
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "{m}x{k}x{n}: {:.1} GFLOP/s",
        2.0 * (m * k * n * reps) as f64 / dt / 1e9
    );
}
