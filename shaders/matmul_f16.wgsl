// F16 weights: the file's bytes as u32 words, two halves per word (little-endian: the even
// element is the low half, which is what unpack2x16float returns first).
@group(0) @binding(2) var<storage, read> w: array<u32>;

fn w_at(row: u32, col: u32) -> f32 {
    let e = row * p.k + col;
    return unpack2x16float(w[e >> 1u])[e & 1u];
}
