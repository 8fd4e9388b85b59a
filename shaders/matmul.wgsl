// Tiled matmul: y[m×n] = x[m×k] · Wᵀ (+ bias). W is n rows of k values; how one weight is read
// (`w_at`) comes from the dtype prelude (matmul_f32/f16/q8_0.wgsl) that is prepended to this file.
//
// A 16×16 workgroup computes a BM×64 tile of y, each thread a TM×4 block; x and W panels of
// BM×16 and 64×16 are staged in workgroup memory so every global value is read once per tile.
// BM is 64 here; the pipeline for few rows (a short batch) is built with BM = 16 by replacing
// the `const BM` line, so it does not compute 48 rows of padding per tile.
//
// A weight too large for one storage binding is uploaded in row blocks; each block is one
// dispatch writing columns col_off.. of y, whose rows are ldy values long.

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
// Rows and columns of y per thread.
const TM: u32 = BM / 16u;
const TN: u32 = BN / 16u;

// Stored k-major (xs[kk * BM + row]) so the inner loop reads consecutive rows.
var<workgroup> xs: array<f32, BM * BK>;
var<workgroup> ws: array<f32, BN * BK>;

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
        // Each panel value loaded by one thread; neighbouring threads read neighbouring k.
        for (var idx = li; idx < BM * BK; idx += 256u) {
            let kk = idx % BK;
            let c = t + kk;
            let r = row0 + idx / BK;
            var xv = 0.0;
            if (r < p.m && c < p.k) {
                xv = x[r * p.k + c];
            }
            xs[kk * BM + idx / BK] = xv;
        }
        for (var idx = li; idx < BN * BK; idx += 256u) {
            let kk = idx % BK;
            let c = t + kk;
            let wr = col0 + idx / BK;
            var wv = 0.0;
            if (wr < p.n && c < p.k) {
                wv = w_at(wr, c);
            }
            ws[kk * BN + idx / BK] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < TM; i++) {
                a[i] = xs[kk * BM + lid.y + 16u * i];
            }
            for (var j = 0u; j < TN; j++) {
                b[j] = ws[kk * BN + lid.x + 16u * j];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * TN + j] = fma(a[i], b[j], acc[i * TN + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let r = row0 + lid.y + 16u * i;
        for (var j = 0u; j < TN; j++) {
            let c = col0 + lid.x + 16u * j;
            if (r < p.m && c < p.n) {
                var v = acc[i * TN + j];
                if (p.has_bias != 0u) {
                    v += bias[p.col_off + c];
                }
                y[r * p.ldy + p.col_off + c] = v;
            }
        }
    }
}
