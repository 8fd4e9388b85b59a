//! Every GPU shader against the scalar CPU kernels on random data of several shapes. Runs on any
//! Vulkan/Metal/DX12 adapter, CPU ones (lavapipe) included; skips, saying why, where there is none.
#![cfg(feature = "gpu")]

use quiver::backend::cpu::Cpu;
use quiver::backend::gpu::kernels::{self, PoolMode};
use quiver::backend::gpu::{select, Choice, GpuBackend};
use quiver::backend::{AttnShape, Backend};
use quiver::embed::{self, Pooling};
use quiver::tensor::{dequantize, DType, TensorView};
use quiver_kernels::{attention, matmul::matmul_f32_ref, ops};
use std::ops::Range;

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
    let mut want = vec![0.0; m * n];
    matmul_f32_ref(&x, &wd, m, k, n, &mut want);
    if let Some(b) = &bias {
        ops::add_bias(&mut want, b);
    }
    // Error bound from the magnitudes summed: order of accumulation differs.
    let mut bound = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            bound[i * n + j] = (0..k)
                .map(|p| (x[i * k + p] * wd[j * k + p]).abs())
                .sum::<f32>()
                * 1e-5
                + 1e-5;
        }
    }
    let mut got = vec![f32::NAN; m * n];
    be.try_linear(&x, m, &view, bias.as_deref(), &mut got)
        .unwrap();
    assert_close(
        &format!("linear {dtype:?} {m}×{k}·{n}"),
        &got,
        &want,
        |i| bound[i],
    );
}

#[test]
fn matmul_matches_reference_for_each_dtype_and_shape() {
    let Some(be) = backend() else { return };
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
            check_linear(&be, &mut rng, dtype, m, k, n, i % 2 == 0);
        }
    }
    // Odd row lengths where the dtype allows them (F16 halves straddle u32 words).
    check_linear(&be, &mut rng, DType::F16, 5, 33, 7, true);
    check_linear(&be, &mut rng, DType::F32, 9, 3, 11, false);
}

#[test]
fn weights_beyond_one_binding_are_split_by_rows() {
    let Some(be) = backend() else { return };
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
    check_linear(&be, &mut rng, DType::F32, 5, 64, 70, true);
    check_linear(&be, &mut rng, DType::F16, 5, 64, 100, false);
    check_linear(&be, &mut rng, DType::F16, 3, 33, 130, true);
    check_linear(&be, &mut rng, DType::Q8_0, 5, 64, 200, true);
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
