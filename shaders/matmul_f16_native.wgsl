// F16 weights read as f16 (wgpu's SHADER_F16): the file's halves bound as `array<f16>`, so an
// element is one load and one conversion, with no word/half selection. Products and sums stay
// in f32 (matmul.wgsl), as in the `unpack2x16float` fallback (matmul_f16.wgsl).
enable f16;

@group(0) @binding(2) var<storage, read> w: array<f16>;

fn w_at(row: u32, col: u32) -> f32 {
    return f32(w[row * p.k + col]);
}
