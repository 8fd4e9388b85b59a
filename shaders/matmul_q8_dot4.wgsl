// Q8_0 matmul on int8 activations: y[m×n] = x[m×k] · Wᵀ (+ bias), where x comes quantised per
// block of 32 (quantize_q8.wgsl: packed quants `xq`, scales `xd`) and W is Q8_0 repacked at
// upload (quants `w`, 8 words a block; f32 scales `scales`). Each block's 32 products are four
// dot4I8Packed sums of exact integers, scaled once by xd · wd and accumulated in f32.
//
// Tiling as matmul.wgsl: a 16×16 workgroup computes a BM×64 tile of y, each thread TM×4 values;
// a k step is one block, whose x and W words are staged in workgroup memory. BM is 64 here and
// 16 in the variant for short batches (the `const BM` line is replaced). W may come in row
// blocks (one dispatch each, writing columns col_off.. of y, rows ldy long).

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
@group(0) @binding(1) var<storage, read> xq: array<u32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read> xd: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const TM: u32 = BM / 16u;
const TN: u32 = BN / 16u;

// Word-major (xs[word * BM + row]) so the inner loop reads consecutive rows.
var<workgroup> xs: array<u32, BM * 8u>;
var<workgroup> ws: array<u32, BN * 8u>;
var<workgroup> xsd: array<f32, BM>;
var<workgroup> wsd: array<f32, BN>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    let kb = p.k / 32u;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var blk = 0u; blk < kb; blk++) {
        // Neighbouring threads load neighbouring words of a block.
        for (var idx = li; idx < BM * 8u; idx += 256u) {
            let r = row0 + idx / 8u;
            var v = 0u;
            if (r < p.m) {
                v = xq[(r * kb + blk) * 8u + idx % 8u];
            }
            xs[(idx % 8u) * BM + idx / 8u] = v;
        }
        for (var idx = li; idx < BN * 8u; idx += 256u) {
            let r = col0 + idx / 8u;
            var v = 0u;
            if (r < p.n) {
                v = w[(r * kb + blk) * 8u + idx % 8u];
            }
            ws[(idx % 8u) * BN + idx / 8u] = v;
        }
        if (li < BM) {
            var d = 0.0;
            if (row0 + li < p.m) {
                d = xd[(row0 + li) * kb + blk];
            }
            xsd[li] = d;
        }
        if (li < BN) {
            var d = 0.0;
            if (col0 + li < p.n) {
                d = scales[(col0 + li) * kb + blk];
            }
            wsd[li] = d;
        }
        workgroupBarrier();
        // |Σ| ≤ 32 · 127 · 128: exact in i32.
        var isum: array<i32, 16>;
        for (var i = 0u; i < 16u; i++) {
            isum[i] = 0;
        }
        for (var wi = 0u; wi < 8u; wi++) {
            var a: array<u32, 4>;
            var b: array<u32, 4>;
            for (var i = 0u; i < TM; i++) {
                a[i] = xs[wi * BM + lid.y + 16u * i];
            }
            for (var j = 0u; j < TN; j++) {
                b[j] = ws[wi * BN + lid.x + 16u * j];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    isum[i * TN + j] += dot4I8Packed(a[i], b[j]);
                }
            }
        }
        for (var i = 0u; i < TM; i++) {
            let dx = xsd[lid.y + 16u * i];
            for (var j = 0u; j < TN; j++) {
                let s = dx * wsd[lid.x + 16u * j];
                acc[i * TN + j] = fma(f32(isum[i * TN + j]), s, acc[i * TN + j]);
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
