// Q8_0 weights, repacked at upload: `w` holds the int8 quants of each 32-value block as 8 u32
// words, `scales` the block's scale as f32 (GGUF interleaves a 2-byte scale with 32 bytes,
// which is not 4-byte aligned).
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;

fn w_at(row: u32, col: u32) -> f32 {
    let e = row * p.k + col;
    let block = e >> 5u;
    let q = e & 31u;
    let word = w[block * 8u + (q >> 2u)];
    let v = extractBits(bitcast<i32>(word), (q & 3u) * 8u, 8u);
    return f32(v) * scales[block];
}
