// LayerNorm of each row, in place, optionally after adding a residual: x = LN(x + res) · w + b.
// One workgroup per row; mean first, then the variance around it (two passes keep f32 exact
// enough for rows with a large mean).

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    has_res: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> res: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> b: array<f32>;

const WG: u32 = 256u;
var<workgroup> red: array<f32, 256>;

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.dim;
    var s = 0.0;
    for (var i = lid; i < p.dim; i += WG) {
        var v = x[base + i];
        if (p.has_res != 0u) {
            v += res[base + i];
            x[base + i] = v;
        }
        s += v;
    }
    let mean = reduce_sum(lid, s) / f32(p.dim);
    var sq = 0.0;
    for (var i = lid; i < p.dim; i += WG) {
        let d = x[base + i] - mean;
        sq += d * d;
    }
    let inv = inverseSqrt(reduce_sum(lid, sq) / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += WG) {
        x[base + i] = (x[base + i] - mean) * inv * w[i] + b[i];
    }
}
