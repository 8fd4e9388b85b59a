//! One wgpu device: adapter choice, device creation, error capture and buffer helpers.
//!
//! wgpu reports validation errors, out-of-memory and device loss through callbacks (its default
//! handler panics). Here every such report is stored as a fault; `submit` and the helpers turn a
//! stored fault into a `GpuError`, which the caller can answer by running on the CPU.

use super::pipelines::Pipelines;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Why a GPU operation did not happen.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuError {
    /// No adapter fits the request (none at all, or only a CPU one that was not asked for).
    NoAdapter(String),
    /// The device could not be created, was lost, ran out of memory or rejected a command.
    Device(String),
    /// One tensor needs a bigger storage binding than the adapter allows.
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },
    /// A shape the shaders do not handle.
    Unsupported(String),
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuError::NoAdapter(why) => write!(f, "no usable GPU adapter: {why}"),
            GpuError::Device(why) => write!(f, "GPU device error: {why}"),
            GpuError::TooLarge { what, bytes, limit } => write!(
                f,
                "{what} needs {bytes} bytes in one GPU storage binding but the adapter allows {limit}"
            ),
            GpuError::Unsupported(why) => write!(f, "not supported on the GPU backend: {why}"),
        }
    }
}

impl std::error::Error for GpuError {}

/// The backends Quiver uses: native compute APIs only (GL has no storage-buffer guarantees).
pub fn native_backends() -> wgpu::Backends {
    wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12
}

/// Every adapter wgpu can see, for logs and tests.
pub fn list_adapters() -> Vec<wgpu::AdapterInfo> {
    let instance = new_instance();
    pollster::block_on(instance.enumerate_adapters(native_backends()))
        .iter()
        .map(|a| a.get_info())
        .collect()
}

fn new_instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: native_backends(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

/// Preference among adapter kinds: real GPUs first; a CPU rasteriser (lavapipe, WARP) only
/// when the caller allows it.
fn rank(kind: wgpu::DeviceType, allow_cpu: bool) -> Option<u8> {
    match kind {
        wgpu::DeviceType::DiscreteGpu => Some(0),
        wgpu::DeviceType::IntegratedGpu => Some(1),
        wgpu::DeviceType::VirtualGpu => Some(2),
        wgpu::DeviceType::Other => Some(3),
        wgpu::DeviceType::Cpu if allow_cpu => Some(4),
        wgpu::DeviceType::Cpu => None,
    }
}

pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend)
}

/// Optional shader variants: each is used where the device supports it and the caller wants
/// it (tests turn them off to exercise the portable fallbacks on the same adapter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variants {
    /// F16 weights read as `f16` (`enable f16;`, wgpu's `SHADER_F16`) rather than unpacked
    /// from u32 words with `unpack2x16float`.
    pub shader_f16: bool,
    /// Q8_0 matmuls on int8-quantised activations with `dot4I8Packed` (WGSL's
    /// `packed_4x8_integer_dot_product`) rather than on f32 activations.
    pub packed_dot: bool,
}

impl Variants {
    /// Every variant, where available.
    pub const ALL: Variants = Variants {
        shader_f16: true,
        packed_dot: true,
    };
    /// Only the portable shaders.
    pub const PORTABLE: Variants = Variants {
        shader_f16: false,
        packed_dot: false,
    };
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// Everything the adapter offers (the device enables only what a variant needs).
    pub adapter_features: wgpu::Features,
    pub limits: wgpu::Limits,
    pub pipes: Pipelines,
    /// The optional shader variants this device's pipelines use.
    pub variants: Variants,
    fault: Arc<Mutex<Option<String>>>,
    /// Largest storage binding, from the adapter (lowered only by `limit_bindings_to`).
    binding_limit: AtomicU64,
    /// Bound for every optional binding a shader does not use this time.
    pub dummy: wgpu::Buffer,
}

impl Gpu {
    /// Opens the best adapter with every shader variant it supports; CPU adapters count only
    /// with `allow_cpu`.
    pub fn open(allow_cpu: bool) -> Result<Gpu, GpuError> {
        Gpu::open_with(allow_cpu, Variants::ALL)
    }

    /// [`Gpu::open`] using only the optional shader variants in `want` (where supported).
    pub fn open_with(allow_cpu: bool, want: Variants) -> Result<Gpu, GpuError> {
        let instance = new_instance();
        let adapters = pollster::block_on(instance.enumerate_adapters(native_backends()));
        let adapter = adapters
            .into_iter()
            .filter_map(|a| rank(a.get_info().device_type, allow_cpu).map(|r| (r, a)))
            .min_by_key(|(r, _)| *r)
            .map(|(_, a)| a)
            .ok_or_else(|| {
                let seen: Vec<String> = list_adapters().iter().map(describe).collect();
                GpuError::NoAdapter(if seen.is_empty() {
                    "wgpu found no Vulkan/Metal/DX12 adapter".to_string()
                } else {
                    format!(
                        "only CPU adapters ({}); set QUIVER_BACKEND=gpu to use them",
                        seen.join(", ")
                    )
                })
            })?;
        let info = adapter.get_info();
        // Ask for everything the adapter offers: the storage binding limit decides how large a
        // batch fits in one dispatch.
        let limits = adapter.limits();
        let variants = Variants {
            shader_f16: want.shader_f16 && adapter.features().contains(wgpu::Features::SHADER_F16),
            // Native wgpu always accepts `dot4I8Packed`: naga lowers it to SPIR-V `OpSDot` where
            // the driver has integer dot products, else to an exact shift-and-multiply polyfill.
            packed_dot: want.packed_dot
                && instance
                    .wgsl_language_features()
                    .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct),
        };
        let required_features = if variants.shader_f16 {
            wgpu::Features::SHADER_F16
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("quiver"),
            required_features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device(format!("{}: {e}", describe(&info))))?;

        let fault = Arc::new(Mutex::new(None::<String>));
        let f = fault.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = f.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        let f = fault.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut slot = f.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| format!("device lost ({reason:?}): {msg}"));
        });
        let pipes = Pipelines::new(&device, variants);
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let binding_limit = AtomicU64::new(
            limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
        );
        let gpu = Gpu {
            device,
            queue,
            info,
            adapter_features: adapter.features(),
            limits,
            pipes,
            variants,
            fault,
            binding_limit,
            dummy,
        };
        gpu.check()?;
        Ok(gpu)
    }

    pub fn describe(&self) -> String {
        describe(&self.info)
    }

    /// The first fault wgpu reported since the last check, as an error. A fault is sticky for
    /// the device (lost stays lost), so it is left in place.
    pub fn check(&self) -> Result<(), GpuError> {
        let slot = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some(msg) => Err(GpuError::Device(msg.clone())),
            None => Ok(()),
        }
    }

    /// Bytes one storage binding may hold.
    pub fn binding_limit(&self) -> u64 {
        self.binding_limit.load(Ordering::Relaxed)
    }

    /// Lowers the binding limit (never raises it): how tests exercise weights split across
    /// bindings on adapters whose real limit is far above any test tensor.
    pub fn limit_bindings_to(&self, bytes: u64) {
        self.binding_limit.fetch_min(bytes, Ordering::Relaxed);
    }

    /// Errors out before asking wgpu for a binding the adapter cannot give.
    pub fn check_size(&self, what: &str, bytes: u64) -> Result<(), GpuError> {
        let limit = self.binding_limit();
        if bytes > limit {
            return Err(GpuError::TooLarge {
                what: what.to_string(),
                bytes,
                limit,
            });
        }
        Ok(())
    }

    /// A storage buffer of at least `bytes` (rounded up to 16, never empty).
    pub fn storage(
        &self,
        what: &str,
        bytes: u64,
        extra: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer, GpuError> {
        self.check_size(what, bytes)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes.max(16).next_multiple_of(16),
            usage: wgpu::BufferUsages::STORAGE | extra,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `data` (padded to 4 bytes, never empty).
    pub fn upload(&self, what: &str, data: &[u8]) -> Result<wgpu::Buffer, GpuError> {
        self.check_size(what, data.len() as u64)?;
        let padded;
        let contents = if !data.len().is_multiple_of(4) || data.is_empty() {
            let mut v = data.to_vec();
            v.resize(data.len().max(4).next_multiple_of(4), 0);
            padded = v;
            &padded[..]
        } else {
            data
        };
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: contents.len() as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, contents);
        Ok(buf)
    }

    pub fn upload_f32(&self, what: &str, data: &[f32]) -> Result<wgpu::Buffer, GpuError> {
        self.upload(what, bytemuck::cast_slice(data))
    }

    /// A uniform buffer with one parameter block. (Written through the queue rather than mapped
    /// at creation: wgpu panics on a mapping of a buffer a lost device could not create.)
    pub fn uniform<T: bytemuck::Pod>(&self, v: &T) -> wgpu::Buffer {
        let bytes = bytemuck::bytes_of(v);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: bytes.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, bytes);
        buf
    }

    pub fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("quiver"),
            })
    }

    /// Submits `enc`, copies `src` (f32 values) into `out` and waits for both.
    pub fn finish_and_read(
        &self,
        mut enc: wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        out: &mut [f32],
    ) -> Result<(), GpuError> {
        let bytes = std::mem::size_of_val(out) as u64;
        if bytes == 0 {
            return self.submit(enc);
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
        self.submit(enc)?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(GpuError::Device(format!("reading back results: {e}"))),
            Err(_) => {
                return Err(GpuError::Device(
                    "reading back results: the map never completed".into(),
                ))
            }
        }
        {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| GpuError::Device(format!("reading back results: {e}")))?;
            out.copy_from_slice(bytemuck::cast_slice(&view[..bytes as usize]));
        }
        staging.unmap();
        self.check()
    }

    pub fn submit(&self, enc: wgpu::CommandEncoder) -> Result<(), GpuError> {
        self.check()?;
        self.queue.submit([enc.finish()]);
        self.wait()
    }

    fn wait(&self) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Device(format!("waiting for the GPU: {e}")))?;
        self.check()
    }
}
