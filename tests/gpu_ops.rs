//! Every GPU shader against the scalar CPU kernels on random data of several shapes. Runs on any
//! Vulkan/Metal/DX12 adapter, CPU ones (lavapipe) included; skips, saying why, where there is none.
#![cfg(feature = "gpu")]

use quiver::backend::cpu::Cpu;
use quiver::backend::gpu::kernels::{self, PoolMode};
use quiver::backend::gpu::{select, Choice, Gpu, GpuBackend, Variants};
use quiver::backend::{AttnShape, Backend, Rope};
use quiver::embed::{self, Pooling};
use quiver::tensor::{dequantize, DType, TensorView};
use quiver_kernels::rope::RopeLayout;
use quiver_kernels::{attention, matmul::matmul_f32_ref, ops};
use std::ops::Range;
use std::sync::Arc;

/// Says why a test did nothing, straight to stderr: the harness captures `println!` of passing
/// tests, and a skip must be visible.
fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

fn backend() -> Option<GpuBackend> {
    match GpuBackend::new(true) {
        Ok(b) => {
            eprintln!("GPU tests on {}", b.adapter());
            Some(b)
        }
        Err(e) => {
            skip(&format!("no GPU adapter ({e})"));
            None
        }
    }
}

/// A backend on a device of its own using only the shader variants in `v` (where supported).
fn backend_with(v: Variants) -> Option<GpuBackend> {
    match Gpu::open_with(true, v) {
        Ok(g) => Some(GpuBackend::on(Arc::new(g))),
        Err(e) => {
            skip(&format!("no GPU adapter ({e})"));
            None
        }
    }
}

/// xorshift: reproducible data without a dependency.
struct Rng(u64);

impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol(i),
            "{what}[{i}]: gpu {g} cpu {w} (tol {})",
            tol(i)
        );
    }
}

/// Weight bytes in `dtype` for n rows of k values (Q8_0 quantised here, as llama.cpp does).
fn weight_bytes(dtype: DType, w: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => bytemuck::cast_slice(w).to_vec(),
        DType::F16 => w
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::Q8_0 => {
            let mut out = Vec::new();
            for b in w.chunks_exact(32) {
                let amax = b.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
                out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
            }
            out
        }
        _ => unreachable!(),
    }
}

fn check_linear(
    be: &GpuBackend,
    rng: &mut Rng,
    dtype: DType,
    m: usize,
    k: usize,
    n: usize,
    with_bias: bool,
) {
    let x = rng.vec(m * k, 1.0);
    let wf = rng.vec(n * k, 0.5);
    let bytes = weight_bytes(dtype, &wf);
    let view = TensorView {
        dtype,
        shape: [k, n, 1, 1],
        n_dims: 2,
        data: &bytes,
    };
    let mut wd = vec![0.0; n * k];
    dequantize(dtype, &bytes, &mut wd);
    let bias = with_bias.then(|| rng.vec(n, 1.0));
    // The packed-dot Q8_0 shader multiplies int8-quantised activations: so does the reference,
    // and a quant that rounds the other way at a near-tie (GPU division is not exact) may move
    // an output by one quantisation step of x times one weight.
    let packed_dot = dtype == DType::Q8_0 && be.gpu().variants.packed_dot;
    let (xr, step) = if packed_dot {
        quantize_rows_q8(&x)
    } else {
        (x.clone(), vec![0.0; x.len() / 32 + 1])
    };
    let x = &x;
    let mut want = vec![0.0; m * n];
    matmul_f32_ref(&xr, &wd, m, k, n, &mut want);
    if let Some(b) = &bias {
        ops::add_bias(&mut want, b);
    }
    // Error bound from the magnitudes summed: order of accumulation differs.
    let mut bound = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let flip = (0..k)
                .map(|p| step[(i * k + p) / 32] * wd[j * k + p].abs())
                .fold(0.0f32, f32::max);
            bound[i * n + j] = (0..k)
                .map(|p| (xr[i * k + p] * wd[j * k + p]).abs())
                .sum::<f32>()
                * 1e-5
                + 1e-5
                + 2.0 * flip;
        }
    }
    let mut got = vec![f32::NAN; m * n];
    be.try_linear(x, m, &view, bias.as_deref(), &mut got)
        .unwrap();
    let path = if packed_dot { " (dot4I8Packed)" } else { "" };
    assert_close(
        &format!("linear {dtype:?}{path} {m}×{k}·{n}"),
        &got,
        &want,
        |i| bound[i],
    );
}

/// Activations as the packed-dot Q8_0 shader sees them: per block of 32, d = max|x| / 127 and
/// q = round(x / d) ties to even. Returns the dequantised values q·d and each block's d.
fn quantize_rows_q8(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut out = Vec::with_capacity(x.len());
    let mut steps = Vec::new();
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend(
            b.iter()
                .map(|&v| (v * id).round_ties_even().clamp(-127.0, 127.0) * d),
        );
        steps.push(d);
    }
    (out, steps)
}

#[test]
fn adapter_features_and_shader_variants_are_reported() {
    let Some(be) = backend() else { return };
    let g = be.gpu();
    let f16 = g.adapter_features.contains(wgpu::Features::SHADER_F16);
    eprintln!("adapter {}: SHADER_F16 {f16}", g.describe());
    eprintln!("adapter features: {:?}", g.adapter_features);
    eprintln!("shader variants in use: {:?}", g.variants);
    // Each variant is on exactly where the device can run it.
    assert_eq!(g.variants.shader_f16, f16);
    assert_eq!(
        g.device.features().contains(wgpu::Features::SHADER_F16),
        f16
    );
    assert_eq!(g.pipes.q8_dot4.is_some(), g.variants.packed_dot);
    // Native wgpu always compiles dot4I8Packed (natively or through naga's polyfill).
    assert!(g.variants.packed_dot);
    let Some(portable) = backend_with(Variants::PORTABLE) else {
        return;
    };
    assert_eq!(portable.gpu().variants, Variants::PORTABLE);
    assert!(portable.gpu().pipes.q8_dot4.is_none());
}

#[test]
fn matmul_matches_reference_for_each_dtype_and_shape() {
    for variants in [Variants::ALL, Variants::PORTABLE] {
        let Some(be) = backend_with(variants) else {
            return;
        };
        eprintln!("matmul with {:?}", be.gpu().variants);
        matmul_shapes(&be);
    }
}

/// Packed-dot Q8_0 against the plain f32 product too: the activation quantisation costs at
/// most half a step of x per value, so the result stays within that of the exact product.
#[test]
fn q8_dot4_stays_near_the_f32_activation_product() {
    let Some(be) = backend_with(Variants::ALL) else {
        return;
    };
    if !be.gpu().variants.packed_dot {
        skip("no dot4I8Packed on this device");
        return;
    }
    let mut rng = Rng(41);
    let (m, k, n) = (9, 384, 50);
    let x = rng.vec(m * k, 1.0);
    let bytes = weight_bytes(DType::Q8_0, &rng.vec(n * k, 0.5));
    let view = TensorView {
        dtype: DType::Q8_0,
        shape: [k, n, 1, 1],
        n_dims: 2,
        data: &bytes,
    };
    let mut wd = vec![0.0; n * k];
    dequantize(DType::Q8_0, &bytes, &mut wd);
    let mut want = vec![0.0; m * n];
    matmul_f32_ref(&x, &wd, m, k, n, &mut want);
    let (_, step) = quantize_rows_q8(&x);
    let mut got = vec![f32::NAN; m * n];
    be.try_linear(&x, m, &view, None, &mut got).unwrap();
    assert_close("q8 dot4 vs f32 activations", &got, &want, |i| {
        let (r, c) = (i / n, i % n);
        (0..k)
            .map(|p| 0.5 * step[(r * k + p) / 32] * wd[c * k + p].abs())
            .sum::<f32>()
            + 1e-4
    });
}

fn matmul_shapes(be: &GpuBackend) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let shapes = [
        (1, 32, 1),
        (3, 64, 5),
        (17, 384, 384),
        (65, 96, 130),
        (130, 1536, 70),
        (7, 32, 200),
        (64, 64, 64),
        // Either side of the switch from 16-row to 64-row tiles.
        (32, 64, 70),
        (33, 64, 70),
    ];
    for dtype in [DType::F32, DType::F16, DType::Q8_0] {
        for (i, &(m, k, n)) in shapes.iter().enumerate() {
            check_linear(be, &mut rng, dtype, m, k, n, i % 2 == 0);
        }
    }
    // Odd row lengths where the dtype allows them (F16 halves straddle u32 words).
    check_linear(be, &mut rng, DType::F16, 5, 33, 7, true);
    check_linear(be, &mut rng, DType::F32, 9, 3, 11, false);
}

#[test]
fn weights_beyond_one_binding_are_split_by_rows() {
    for variants in [Variants::ALL, Variants::PORTABLE] {
        let Some(be) = backend_with(variants) else {
            return;
        };
        split_weights(&be);
    }
}

fn split_weights(be: &GpuBackend) {
    // Far below any real adapter's limit, so these small weights need several bindings.
    be.gpu().limit_bindings_to(4096);
    let mut rng = Rng(37);
    let bytes = weight_bytes(DType::F32, &rng.vec(64 * 70, 1.0));
    let view = TensorView {
        dtype: DType::F32,
        shape: [64, 70, 1, 1],
        n_dims: 2,
        data: &bytes,
    };
    let w = quiver::backend::gpu::weights::upload_weight(be.gpu(), "w", &view).unwrap();
    assert_eq!(
        w.parts.iter().map(|p| p.rows).collect::<Vec<_>>(),
        [16, 16, 16, 16, 6]
    );
    check_linear(be, &mut rng, DType::F32, 5, 64, 70, true);
    check_linear(be, &mut rng, DType::F16, 5, 64, 100, false);
    check_linear(be, &mut rng, DType::F16, 3, 33, 130, true);
    check_linear(be, &mut rng, DType::Q8_0, 5, 64, 200, true);
    // A single row that does not fit is a clear error.
    let bytes = weight_bytes(DType::F32, &rng.vec(2048 * 2, 1.0));
    let view = TensorView {
        dtype: DType::F32,
        shape: [2048, 2, 1, 1],
        n_dims: 2,
        data: &bytes,
    };
    let err = be
        .try_linear(&[0.0; 2048], 1, &view, None, &mut [0.0; 2])
        .unwrap_err();
    assert!(err.to_string().contains("4096"), "{err}");
}

#[test]
fn backend_linear_caches_weights_and_matches_cpu() {
    let Some(be) = backend() else { return };
    let mut rng = Rng(7);
    let (m, k, n) = (10, 128, 48);
    let x = rng.vec(m * k, 1.0);
    let bytes = weight_bytes(DType::F16, &rng.vec(n * k, 0.5));
    let view = TensorView {
        dtype: DType::F16,
        shape: [k, n, 1, 1],
        n_dims: 2,
        data: &bytes,
    };
    let b = rng.vec(n, 1.0);
    let (mut want, mut got) = (vec![0.0; m * n], vec![0.0; m * n]);
    Cpu::new().linear(&x, m, &view, Some(&b), &mut want);
    be.linear(&x, m, &view, Some(&b), &mut got);
    let vram = be.vram_bytes();
    assert!(
        vram >= (n * k * 2) as u64,
        "weight on the GPU: {vram} bytes"
    );
    be.linear(&x, m, &view, Some(&b), &mut got);
    assert_eq!(
        be.vram_bytes(),
        vram,
        "second call reuses the uploaded weight"
    );
    assert_close("linear", &got, &want, |_| 1e-4);
    assert!(!be.fell_back());
    be.clear_weights();
    assert_eq!(be.vram_bytes(), 0);
}

#[test]
fn layer_norm_and_rms_norm_match_cpu() {
    let Some(be) = backend() else { return };
    let mut rng = Rng(11);
    for (rows, dim) in [(1, 1), (3, 7), (9, 384), (4, 1000), (70, 300)] {
        let mut x = rng.vec(rows * dim, 3.0);
        // A row far from zero: the variance must not cancel.
        x[..dim].iter_mut().for_each(|v| *v += 100.0);
        let (w, b) = (rng.vec(dim, 1.0), rng.vec(dim, 1.0));
        let (mut want, mut got) = (x.clone(), x.clone());
        ops::layer_norm(&mut want, dim, &w, &b, 1e-12);
        be.try_layer_norm(&mut got, &w, &b, 1e-12).unwrap();
        assert_close(&format!("layer_norm {rows}×{dim}"), &got, &want, |_| 2e-4);

        let (mut want, mut got) = (x.clone(), x.clone());
        ops::rms_norm(&mut want, dim, &w, 1e-6);
        be.try_rms_norm(&mut got, &w, 1e-6).unwrap();
        assert_close(&format!("rms_norm {rows}×{dim}"), &got, &want, |i| {
            1e-5 * (1.0 + want[i].abs())
        });
    }
}

#[test]
fn gelu_erf_polynomial_matches_cpu() {
    let Some(be) = backend() else { return };
    let mut rng = Rng(13);
    let mut x = rng.vec(70_001, 8.0);
    x.extend([
        0.0, -0.0, 1e-7, -1e-7, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 6.0, -6.0, 12.0, -12.0, 40.0,
        -40.0,
    ]);
    let mut want = x.clone();
    ops::gelu(&mut want);
    let mut got = x.clone();
    be.try_gelu(&mut got).unwrap();
    assert_close("gelu", &got, &want, |i| 2e-7 * (1.0 + x[i].abs()));
}

#[test]
fn silu_mul_matches_cpu() {
    let Some(be) = backend() else { return };
    let mut rng = Rng(17);
    for len in [1, 255, 256, 10_007] {
        let (g, u) = (rng.vec(len, 10.0), rng.vec(len, 2.0));
        let (mut want, mut got) = (g.clone(), g.clone());
        ops::silu_mul(&mut want, &u);
        be.try_silu_mul(&mut got, &u).unwrap();
        assert_close(&format!("silu_mul {len}"), &got, &want, |i| {
            1e-5 * (1.0 + want[i].abs())
        });
    }
}

fn packed(lens: &[usize]) -> Vec<Range<usize>> {
    let mut start = 0;
    lens.iter()
        .map(|&l| {
            start += l;
            start - l..start
        })
        .collect()
}

#[test]
fn attention_matches_cpu_packed_causal_and_gqa() {
    let Some(be) = backend() else { return };
    let mut rng = Rng(19);
    let cases: [(&[usize], AttnShape); 4] = [
        (
            &[1, 5, 0, 12],
            AttnShape {
                n_head: 4,
                n_head_kv: 4,
                head_dim: 16,
            },
        ),
        (
            &[8, 3],
            AttnShape {
                n_head: 12,
                n_head_kv: 12,
                head_dim: 32,
            },
        ),
        (
            &[9, 20],
            AttnShape {
                n_head: 8,
                n_head_kv: 2,
                head_dim: 64,
            },
        ),
        // Longer than one workgroup-memory chunk of keys (1024).
        (
            &[1500, 4],
            AttnShape {
                n_head: 2,
                n_head_kv: 1,
                head_dim: 8,
            },
        ),
    ];
    for (lens, s) in cases {
        let seqs = packed(lens);
        let n: usize = lens.iter().sum();
        let (qd, kd) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
        let (q, k, v) = (
            rng.vec(n * qd, 2.0),
            rng.vec(n * kd, 2.0),
            rng.vec(n * kd, 1.0),
        );
        for causal in [false, true] {
            let (mut want, mut got) = (vec![0.0; n * qd], vec![f32::NAN; n * qd]);
            attention::attention(&q, &k, &v, &seqs, s, causal, &mut want);
            be.try_attention(&q, &k, &v, &seqs, s, causal, &mut got)
                .unwrap();
            assert_close(
                &format!("attention {lens:?} {s:?} causal={causal}"),
                &got,
                &want,
                |_| 2e-5,
            );
        }
    }
}

#[test]
fn pooling_and_l2_normalisation_match_cpu() {
    let Some(be) = backend() else { return };
    let gpu = be.gpu().clone();
    let mut rng = Rng(23);
    let lens = [3, 0, 1, 17];
    let seqs = packed(&lens);
    let (n, dim) = (21, 300);
    let hidden = rng.vec(n * dim, 4.0);
    for (mode, pooling) in [
        (PoolMode::Mean, Pooling::Mean),
        (PoolMode::Cls, Pooling::Cls),
        (PoolMode::Last, Pooling::Last),
    ] {
        let mut want = embed::pool(&hidden, dim, &seqs, pooling);
        for normalize in [false, true] {
            let hb = gpu.upload_f32("hidden", &hidden).unwrap();
            let ob = gpu
                .upload(
                    "offsets",
                    bytemuck::cast_slice(&kernels::seq_offsets(&seqs, n).unwrap()),
                )
                .unwrap();
            let out = gpu
                .storage(
                    "pooled",
                    (lens.len() * dim * 4) as u64,
                    wgpu::BufferUsages::COPY_SRC,
                )
                .unwrap();
            let mut enc = gpu.encoder();
            kernels::pool(&gpu, &mut enc, &hb, &ob, lens.len(), dim, mode, &out).unwrap();
            if normalize {
                kernels::l2_normalize(&gpu, &mut enc, &out, lens.len(), dim).unwrap();
                want.iter_mut().for_each(|v| embed::normalize(v));
            }
            let mut got = vec![f32::NAN; lens.len() * dim];
            gpu.finish_and_read(enc, &out, &mut got).unwrap();
            assert_close(
                &format!("pool {pooling:?} normalize={normalize}"),
                &got,
                &want.concat(),
                |_| 1e-5,
            );
        }
    }
}

#[test]
fn oversized_tensor_is_a_clear_error() {
    let Some(be) = backend() else { return };
    let limit = be
        .gpu()
        .limits
        .max_storage_buffer_binding_size
        .min(be.gpu().limits.max_buffer_size);
    let err = be
        .gpu()
        .storage("activations", limit + 4, wgpu::BufferUsages::empty())
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("activations") && msg.contains(&limit.to_string()),
        "{msg}"
    );
}

#[test]
fn lost_device_falls_back_to_cpu_without_panicking() {
    let Some(be) = backend() else { return };
    let mut rng = Rng(29);
    let mut x = rng.vec(4 * 64, 1.0);
    let (w, b) = (rng.vec(64, 1.0), rng.vec(64, 1.0));
    let mut want = x.clone();
    Cpu::new().layer_norm(&mut want, &w, &b, 1e-12);
    be.gpu().device.destroy();
    be.layer_norm(&mut x, &w, &b, 1e-12);
    assert!(
        be.fell_back(),
        "a destroyed device must switch the backend to the CPU"
    );
    assert_close("layer_norm after device loss", &x, &want, |_| 1e-6);
    // Straight calls on the lost device are errors too, not panics.
    let bytes = weight_bytes(DType::Q8_0, &rng.vec(64 * 64, 1.0));
    let view = TensorView {
        dtype: DType::Q8_0,
        shape: [64, 64, 1, 1],
        n_dims: 2,
        data: &bytes,
    };
    let mut y = vec![0.0; 4 * 64];
    assert!(be.try_linear(&x, 4, &view, Some(&b), &mut y).is_err());
    let s = AttnShape {
        n_head: 4,
        n_head_kv: 4,
        head_dim: 16,
    };
    let mut out = vec![0.0; 4 * 64];
    assert!(be
        .try_attention(&x, &x, &x, &packed(&[4]), s, false, &mut out)
        .is_err());
}

#[test]
fn shared_backends_share_the_device_but_not_the_weights() {
    let Some(_probe) = backend() else { return };
    let (a, b) = (
        GpuBackend::shared(true).unwrap(),
        GpuBackend::shared(true).unwrap(),
    );
    assert!(
        std::sync::Arc::ptr_eq(a.gpu(), b.gpu()),
        "one device for the process"
    );
    let mut rng = Rng(31);
    let bytes = weight_bytes(DType::F32, &rng.vec(32 * 8, 1.0));
    let view = TensorView {
        dtype: DType::F32,
        shape: [32, 8, 1, 1],
        n_dims: 2,
        data: &bytes,
    };
    let x = rng.vec(2 * 32, 1.0);
    let (mut ya, mut yb) = (vec![0.0; 16], vec![0.0; 16]);
    a.try_linear(&x, 2, &view, None, &mut ya).unwrap();
    assert!(a.vram_bytes() > 0);
    assert_eq!(
        b.vram_bytes(),
        0,
        "weights belong to the backend that uploaded them"
    );
    drop(a);
    b.try_linear(&x, 2, &view, None, &mut yb).unwrap();
    assert_eq!(ya, yb);
}

#[test]
fn selection_follows_quiver_backend() {
    let (cpu, line) = select(Choice::Cpu, false);
    assert_eq!(cpu.name(), "cpu");
    assert!(line.contains("QUIVER_BACKEND=cpu"), "{line}");
    assert_eq!(Choice::parse(Some("GPU")), Ok(Choice::Gpu));
    assert_eq!(Choice::parse(None), Ok(Choice::Auto));
    assert!(Choice::parse(Some("tpu")).is_err());

    let adapters = quiver::backend::gpu::list_adapters();
    let real = adapters
        .iter()
        .any(|a| a.device_type != wgpu::DeviceType::Cpu);
    let (auto, line) = select(Choice::Auto, false);
    eprintln!("{line}");
    if !real {
        // Only lavapipe or nothing: auto keeps to the CPU and says why.
        assert_eq!(auto.name(), "cpu", "{line}");
        assert!(line.starts_with("backend: cpu ("), "{line}");
    }
    let (gpu, line) = select(Choice::Gpu, false);
    eprintln!("{line}");
    assert_eq!(gpu.name() == "gpu", !adapters.is_empty(), "{line}");
}

/// Positions as llama gives them: restarting at 0 in each packed sequence.
fn positions_of(lens: &[usize]) -> Vec<usize> {
    lens.iter().flat_map(|&l| 0..l).collect()
}

#[test]
fn rope_matches_cpu_both_layouts_with_scaling_and_factors() {
    let Some(be) = backend() else { return };
    let mut rng = Rng(43);
    let mut positions = positions_of(&[5, 1, 40]);
    // Far positions: the angle reaches thousands of radians.
    positions.extend([1000, 4095, 4096, 9999, 65_535, 131_071]);
    let n = positions.len();
    let factors: Vec<f32> = (0..64).map(|i| 1.0 + i as f32 * 0.37).collect();
    for layout in [RopeLayout::Normal, RopeLayout::NeoX] {
        // (n_head, head_dim, n_rot, base, scale, factors)
        let cases: [(usize, usize, usize, f32, f32, bool); 5] = [
            (4, 64, 64, 10_000.0, 1.0, false),
            (3, 128, 128, 500_000.0, 1.0, true),
            (2, 32, 16, 10_000.0, 0.25, false),
            (5, 16, 8, 1e6, 1.0, true),
            (1, 2, 2, 100.0, 0.5, false),
        ];
        for (n_head, head_dim, n_rot, base, scale, with_factors) in cases {
            let rope = Rope {
                layout,
                head_dim,
                n_rot,
                freq_base: base,
                freq_scale: scale,
                freq_factors: with_factors.then_some(&factors[..n_rot / 2]),
            };
            let row = n_head * head_dim;
            let x = rng.vec(n * row, 2.0);
            let (mut want, mut got) = (x.clone(), x.clone());
            rope.apply(&mut want, row, &positions);
            be.try_rope(&rope, &mut got, row, &positions).unwrap();
            assert_close(
                &format!("rope {layout:?} {n_head}×{head_dim} n_rot {n_rot} base {base}"),
                &got,
                &want,
                |_| 1e-5,
            );
            // Values past n_rot are untouched, bit for bit.
            for (g, x0) in got.chunks(head_dim).zip(x.chunks(head_dim)) {
                assert_eq!(g[n_rot..], x0[n_rot..]);
            }
        }
    }
}

#[test]
fn rope_through_the_backend_trait_and_bad_shapes_are_errors() {
    let Some(be) = backend() else { return };
    let mut rng = Rng(47);
    let rope = Rope {
        layout: RopeLayout::NeoX,
        head_dim: 16,
        n_rot: 16,
        freq_base: 10_000.0,
        freq_scale: 1.0,
        freq_factors: None,
    };
    let positions = positions_of(&[7, 70]);
    let x = rng.vec(positions.len() * 32, 1.0);
    let (mut want, mut got) = (x.clone(), x.clone());
    Cpu::new().rope(&rope, &mut want, 32, &positions);
    be.rope(&rope, &mut got, 32, &positions);
    assert!(!be.fell_back());
    assert_close("Backend::rope", &got, &want, |_| 1e-5);
    // No tokens: nothing to do.
    be.try_rope(&rope, &mut [], 32, &[]).unwrap();

    let mut y = x.clone();
    let odd = Rope { n_rot: 15, ..rope };
    assert!(be.try_rope(&odd, &mut y, 32, &positions).is_err());
    let wide = Rope { n_rot: 18, ..rope };
    assert!(be.try_rope(&wide, &mut y, 32, &positions).is_err());
    // Rows that are not whole heads, or a row count that does not match the positions.
    assert!(be.try_rope(&rope, &mut y, 24, &positions).is_err());
    assert!(be.try_rope(&rope, &mut y, 32, &positions[1..]).is_err());
    let few = [1.0f32; 3];
    let short = Rope {
        freq_factors: Some(&few),
        ..rope
    };
    assert!(be.try_rope(&short, &mut y, 32, &positions).is_err());
    assert_eq!(y, x, "a refused call leaves x alone");
}
