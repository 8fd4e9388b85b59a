// Pooling of packed hidden states into one vector per sequence (see embed::pool):
// mode 0 mean, 1 CLS (first token), 2 last token. Empty sequences give zeros.
// One workgroup per sequence, threads across the hidden dimension.

struct Params {
    n_seqs: u32,
    dim: u32,
    mode: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> hidden: array<f32>;
@group(0) @binding(2) var<storage, read> offsets: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    if (s >= p.n_seqs) {
        return;
    }
    let start = offsets[s];
    let end = offsets[s + 1u];
    for (var d = lid; d < p.dim; d += 256u) {
        var v = 0.0;
        if (end > start) {
            if (p.mode == 0u) {
                for (var t = start; t < end; t++) {
                    v += hidden[t * p.dim + d];
                }
                v /= f32(end - start);
            } else if (p.mode == 1u) {
                v = hidden[start * p.dim + d];
            } else {
                v = hidden[(end - 1u) * p.dim + d];
            }
        }
        out[s * p.dim + d] = v;
    }
}
