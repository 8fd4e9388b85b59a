//! Every compute pipeline, built once per device from the WGSL in `shaders/`.

use super::context::Variants;

/// How a shader uses one binding; bindings are numbered in order from 0.
#[derive(Clone, Copy)]
pub enum Bind {
    Uniform,
    Read,
    ReadWrite,
}

pub struct Pipe {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl Pipe {
    fn new(device: &wgpu::Device, label: &str, source: &str, binds: &[Bind]) -> Pipe {
        let entries: Vec<wgpu::BindGroupLayoutEntry> = binds
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b {
                        Bind::Uniform => wgpu::BufferBindingType::Uniform,
                        Bind::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Bind::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(label),
            entries: &entries,
        });
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pl),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        Pipe { pipeline, layout }
    }

    /// A bind group with `buffers` at bindings 0, 1, …
    pub fn bind(&self, device: &wgpu::Device, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.layout,
            entries: &entries,
        })
    }
}

pub const MATMUL_WGSL: &str = include_str!("../../../shaders/matmul.wgsl");
pub const MATMUL_F32_WGSL: &str = include_str!("../../../shaders/matmul_f32.wgsl");
pub const MATMUL_F16_WGSL: &str = include_str!("../../../shaders/matmul_f16.wgsl");
pub const MATMUL_F16_NATIVE_WGSL: &str = include_str!("../../../shaders/matmul_f16_native.wgsl");
pub const MATMUL_Q8_0_WGSL: &str = include_str!("../../../shaders/matmul_q8_0.wgsl");
pub const MATMUL_Q8_DOT4_WGSL: &str = include_str!("../../../shaders/matmul_q8_dot4.wgsl");

/// Rows of y per workgroup in the matmul variant for short batches.
pub const SMALL_M_TILE: usize = 16;

/// `source` with its 64-row tile (`const BM: u32 = 64u;`) cut to `SMALL_M_TILE` rows.
fn small_tile(source: &str) -> String {
    let small = source.replace(
        "const BM: u32 = 64u;",
        &format!("const BM: u32 = {SMALL_M_TILE}u;"),
    );
    debug_assert_ne!(small, source, "the matmul shader declares BM as expected");
    small
}

/// The packed-dot Q8_0 path: activations quantised to int8, then the int8 matmul.
pub struct Q8Dot4 {
    pub quantize: Pipe,
    /// [64-row tiles, 16-row tiles].
    pub matmul: [Pipe; 2],
}

pub struct Pipelines {
    /// Per weight dtype: [64-row tiles, 16-row tiles (see `SMALL_M_TILE`)].
    pub matmul_f32: [Pipe; 2],
    /// Reads f16 natively where the device has SHADER_F16, else through `unpack2x16float`.
    pub matmul_f16: [Pipe; 2],
    /// Q8_0 weights times f32 activations: the fallback for `q8_dot4`.
    pub matmul_q8_0: [Pipe; 2],
    /// Present where the device's WGSL has `dot4I8Packed` (and the caller wants it).
    pub q8_dot4: Option<Q8Dot4>,
    pub rope: Pipe,
    pub layer_norm: Pipe,
    pub rms_norm: Pipe,
    pub gelu: Pipe,
    pub silu_mul: Pipe,
    pub attention: Pipe,
    pub pool: Pipe,
    pub l2_normalize: Pipe,
}

impl Pipelines {
    /// Every pipeline, the optional variants as `variants` says (the caller has checked that
    /// the device supports them).
    pub fn new(device: &wgpu::Device, variants: Variants) -> Pipelines {
        use Bind::*;
        // params, x, w, scales, bias, y
        let mm = [Uniform, Read, Read, Read, Read, ReadWrite];
        let small = small_tile(MATMUL_WGSL);
        let matmul = |label: &str, prelude: &str| {
            [
                Pipe::new(device, label, &format!("{prelude}\n{MATMUL_WGSL}"), &mm),
                Pipe::new(device, label, &format!("{prelude}\n{small}"), &mm),
            ]
        };
        Pipelines {
            matmul_f32: matmul("matmul_f32", MATMUL_F32_WGSL),
            matmul_f16: if variants.shader_f16 {
                matmul("matmul_f16_native", MATMUL_F16_NATIVE_WGSL)
            } else {
                matmul("matmul_f16", MATMUL_F16_WGSL)
            },
            matmul_q8_0: matmul("matmul_q8_0", MATMUL_Q8_0_WGSL),
            q8_dot4: variants.packed_dot.then(|| {
                // params, xq, w, scales, bias, y, xd
                let binds = [Uniform, Read, Read, Read, Read, ReadWrite, Read];
                Q8Dot4 {
                    quantize: Pipe::new(
                        device,
                        "quantize_q8",
                        include_str!("../../../shaders/quantize_q8.wgsl"),
                        &[Uniform, Read, ReadWrite, ReadWrite],
                    ),
                    matmul: [
                        Pipe::new(device, "matmul_q8_dot4", MATMUL_Q8_DOT4_WGSL, &binds),
                        Pipe::new(
                            device,
                            "matmul_q8_dot4",
                            &small_tile(MATMUL_Q8_DOT4_WGSL),
                            &binds,
                        ),
                    ],
                }
            }),
            rope: Pipe::new(
                device,
                "rope",
                include_str!("../../../shaders/rope.wgsl"),
                &[Uniform, ReadWrite, Read, Read],
            ),
            layer_norm: Pipe::new(
                device,
                "layer_norm",
                include_str!("../../../shaders/layer_norm.wgsl"),
                &[Uniform, ReadWrite, Read, Read, Read],
            ),
            rms_norm: Pipe::new(
                device,
                "rms_norm",
                include_str!("../../../shaders/rms_norm.wgsl"),
                &[Uniform, ReadWrite, Read],
            ),
            gelu: Pipe::new(
                device,
                "gelu",
                include_str!("../../../shaders/gelu.wgsl"),
                &[Uniform, ReadWrite],
            ),
            silu_mul: Pipe::new(
                device,
                "silu_mul",
                include_str!("../../../shaders/silu_mul.wgsl"),
                &[Uniform, ReadWrite, Read],
            ),
            attention: Pipe::new(
                device,
                "attention",
                include_str!("../../../shaders/attention.wgsl"),
                &[Uniform, Read, Read, Read, Read, ReadWrite],
            ),
            pool: Pipe::new(
                device,
                "pool",
                include_str!("../../../shaders/pool.wgsl"),
                &[Uniform, Read, Read, ReadWrite],
            ),
            l2_normalize: Pipe::new(
                device,
                "l2_normalize",
                include_str!("../../../shaders/l2_normalize.wgsl"),
                &[Uniform, ReadWrite],
            ),
        }
    }
}
