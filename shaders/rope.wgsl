// Rotary position embedding in place over rows of `n_heads` heads of `head_dim` values, as
// quiver_kernels::rope: the first n_rot values of each head are rotated in pairs by
// θ_i = pos · ω_i, pairs (2i, 2i+1) in the normal layout and (i, i + n_rot/2) in NeoX's.
//
// No trigonometry here: GPU sin/cos lose accuracy on large arguments, and pos · ω_i rounded to
// f32 is already off by up to half an ulp of θ (1e-4 rad at θ ≈ 3000). Instead the host gives,
// per pair i and bit j, (cos, sin) of 2^j · ω_i computed in f64 (`table[j * half + i]`), and
// the rotation by pos · ω_i is the product of the rotations of pos's set bits: at most 32
// complex products, each off by a few f32 ulps.
//
// One thread per (token, pair) computes the rotation once and applies it to every head.

struct Params {
    n_tokens: u32,
    n_heads: u32,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
    bits: u32,
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<vec2<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let half = p.n_rot / 2u;
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= p.n_tokens * half) {
        return;
    }
    let t = idx / half;
    let i = idx % half;
    let pos = positions[t];
    var rot = vec2<f32>(1.0, 0.0);
    for (var j = 0u; j < p.bits; j++) {
        if (((pos >> j) & 1u) != 0u) {
            let r = table[j * half + i];
            rot = vec2<f32>(rot.x * r.x - rot.y * r.y, rot.x * r.y + rot.y * r.x);
        }
    }
    var a = 2u * i;
    var b = 2u * i + 1u;
    if (p.neox != 0u) {
        a = i;
        b = i + half;
    }
    let row = t * p.n_heads * p.head_dim;
    for (var h = 0u; h < p.n_heads; h++) {
        let base = row + h * p.head_dim;
        let x0 = x[base + a];
        let x1 = x[base + b];
        x[base + a] = x0 * rot.x - x1 * rot.y;
        x[base + b] = x0 * rot.y + x1 * rot.x;
    }
}
