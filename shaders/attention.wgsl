// Softmax attention over packed sequences. One workgroup per (head, query token): it finds the
// token's sequence in `offsets` (n_seqs + 1 token offsets), then walks the visible keys in
// chunks with an online softmax (running max and sum, rescaled per chunk), so any sequence
// length fits in fixed workgroup memory. GQA: query head h reads KV head h / (n_head / n_head_kv).
// Layout as quiver_kernels::attention: q/out tokens × n_head·head_dim, k/v tokens × n_head_kv·head_dim.

struct Params {
    n_tokens: u32,
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    n_seqs: u32,
    causal: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> offsets: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const CHUNK: u32 = 1024u;
// head_dim ≤ 4·WG = 256: each thread owns output dims lid, lid + 64, …
const PER_THREAD: u32 = 4u;

var<workgroup> sc: array<f32, 1024>;
var<workgroup> red: array<f32, 64>;

fn reduce(lid: u32, val: f32, is_max: bool) -> f32 {
    red[lid] = val;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            if (is_max) {
                red[lid] = max(red[lid], red[lid + s]);
            } else {
                red[lid] += red[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let i = wg.y + wg.z * nwg.y;
    if (i >= p.n_tokens) {
        return;
    }
    // The last sequence whose start is ≤ i.
    var lo = 0u;
    var hi = p.n_seqs;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (offsets[mid] <= i) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let start = offsets[lo];
    var end = offsets[lo + 1u];
    if (p.causal != 0u) {
        end = i + 1u;
    }
    let hd = p.head_dim;
    let qd = p.n_head * hd;
    let kd = p.n_head_kv * hd;
    let kh = h / (p.n_head / p.n_head_kv);
    let qbase = i * qd + h * hd;

    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, 4>;
    for (var r = 0u; r < PER_THREAD; r++) {
        acc[r] = 0.0;
    }
    for (var cs = start; cs < end; cs += CHUNK) {
        let len = min(CHUNK, end - cs);
        var cmax = -3.0e38;
        for (var j = lid; j < len; j += WG) {
            let kbase = (cs + j) * kd + kh * hd;
            var dot = 0.0;
            for (var d = 0u; d < hd; d++) {
                dot = fma(q[qbase + d], k[kbase + d], dot);
            }
            let s = dot * p.scale;
            sc[j] = s;
            cmax = max(cmax, s);
        }
        let new_m = max(m, reduce(lid, cmax, true));
        var psum = 0.0;
        for (var j = lid; j < len; j += WG) {
            let e = exp(sc[j] - new_m);
            sc[j] = e;
            psum += e;
        }
        let csum = reduce(lid, psum, false);
        let corr = exp(m - new_m);
        l = l * corr + csum;
        for (var r = 0u; r < PER_THREAD; r++) {
            let d = lid + r * WG;
            if (d < hd) {
                var a = acc[r] * corr;
                for (var j = 0u; j < len; j++) {
                    a = fma(sc[j], v[(cs + j) * kd + kh * hd + d], a);
                }
                acc[r] = a;
            }
        }
        m = new_m;
        workgroupBarrier();
    }
    for (var r = 0u; r < PER_THREAD; r++) {
        let d = lid + r * WG;
        if (d < hd) {
            out[qbase + d] = acc[r] / l;
        }
    }
}
