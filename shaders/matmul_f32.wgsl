// F32 weights: plain floats, row-major.
@group(0) @binding(2) var<storage, read> w: array<f32>;

fn w_at(row: u32, col: u32) -> f32 {
    return w[row * p.k + col];
}
