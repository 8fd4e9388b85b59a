// Activations to int8 for the packed-dot Q8_0 matmul (matmul_q8_dot4.wgsl): each block of 32
// values of a row gets the scale d = max|x| / 127 and quants q = round(x / d) (ties to even,
// in [-127, 127]), as quiver_kernels' VNNI path and llama.cpp's q8 activations do. Quants are
// packed 4 per u32, low byte first; one thread per block.

struct Params {
    blocks: u32,
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;
@group(0) @binding(3) var<storage, read_write> xd: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * 64u;
    if (b >= p.blocks) {
        return;
    }
    let x0 = b * 32u;
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(x[x0 + i]));
    }
    let d = amax / 127.0;
    var id = 0.0;
    if (d > 0.0) {
        id = 1.0 / d;
    }
    for (var wi = 0u; wi < 8u; wi++) {
        var word = 0u;
        for (var j = 0u; j < 4u; j++) {
            let q = i32(clamp(round(x[x0 + wi * 4u + j] * id), -127.0, 127.0));
            word |= (bitcast<u32>(q) & 0xffu) << (8u * j);
        }
        xq[b * 8u + wi] = word;
    }
    xd[b] = d;
}
