// GELU, erf form, in place: 0.5·x·(1 + erf(x/√2)). WGSL has no erf: erfc comes from the
// Chebyshev fit that quiver_kernels::ops::erf uses (Numerical Recipes' erfccheb, coefficients
// cut where they stop mattering in f32). The negative side uses erfc directly, which keeps
// the tiny tail values accurate instead of cancelling 1 + erf.

struct Params {
    len: u32,
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

// Private, not const: indexed with a loop counter, which SPIR-V wants in a variable.
var<private> COF: array<f32, 18> = array<f32, 18>(
    -1.3026537197817094, 0.6419697923564902, 1.9476473204185836e-2, -9.561514786808631e-3,
    -9.46595344482036e-4, 3.66839497852761e-4, 4.2523324806907e-5, -2.0278578112534e-5,
    -1.624290004647e-6, 1.303655835580e-6, 1.5626441722e-8, -8.5238095915e-8,
    6.529054439e-9, 5.059343495e-9, -9.91364156e-10, -2.27365122e-10, 9.6467911e-11,
    2.394038e-12,
);

// erfc(z) for z ≥ 0.
fn erfc_pos(z: f32) -> f32 {
    let t = 2.0 / (2.0 + z);
    let ty = 4.0 * t - 2.0;
    var d = 0.0;
    var dd = 0.0;
    for (var j = 17; j >= 1; j--) {
        let tmp = d;
        d = ty * d - dd + COF[j];
        dd = tmp;
    }
    return t * exp(-z * z + 0.5 * (COF[0] + ty * d) - dd);
}

fn gelu(v: f32) -> f32 {
    let e = erfc_pos(abs(v) * 0.70710678118654752);
    if (v >= 0.0) {
        return 0.5 * v * (2.0 - e);
    }
    return 0.5 * v * e;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.len) {
        x[i] = gelu(x[i]);
    }
}
