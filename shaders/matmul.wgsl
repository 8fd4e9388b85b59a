// Tiled matmul: y[m×n] = x[m×k] · Wᵀ (+ bias). W is n rows of k values; how one weight is read
// (`w_at`) comes from the dtype prelude (matmul_f32/f16/q8_0.wgsl) that is prepended to this file.
//
// A weight too large for one storage binding is uploaded in row blocks; each block is one
// dispatch writing columns col_off.. of y, whose rows are ldy values long.
//
// A 16×16 workgroup computes a 64×64 tile of y, each thread a 4×4 block; x and W panels of
// 64×16 are staged in workgroup memory so every global value is read once per tile.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
    ldy: u32,
    col_off: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

// Stored k-major (xs[kk * BM + row]) so the inner loop reads consecutive rows.
var<workgroup> xs: array<f32, 1024>;
var<workgroup> ws: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var t = 0u; t < p.k; t += BK) {
        // 1024 values of each panel, 4 per thread; neighbouring threads read neighbouring k.
        for (var e = 0u; e < 4u; e++) {
            let idx = li + e * 256u;
            let kk = idx % BK;
            let mm = idx / BK;
            let c = t + kk;
            let r = row0 + mm;
            var xv = 0.0;
            if (r < p.m && c < p.k) {
                xv = x[r * p.k + c];
            }
            xs[kk * BM + mm] = xv;
            let wr = col0 + mm;
            var wv = 0.0;
            if (wr < p.n && c < p.k) {
                wv = w_at(wr, c);
            }
            ws[kk * BN + mm] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[kk * BM + lid.y + 16u * i];
                b[i] = ws[kk * BN + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + lid.x + 16u * j;
            if (r < p.m && c < p.n) {
                var v = acc[i * 4u + j];
                if (p.has_bias != 0u) {
                    v += bias[p.col_off + c];
                }
                y[r * p.ldy + p.col_off + c] = v;
            }
        }
    }
}
