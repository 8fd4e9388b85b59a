//! The GPU backend: BERT's operations as WGSL compute shaders (shaders/*.wgsl) through wgpu,
//! on Vulkan, Metal or DX12.
//!
//! - [`GpuBackend`] implements [`Backend`] op by op: weights uploaded once, activations
//!   uploaded and read back per call; a GPU fault switches it to the CPU kernels.
//! - [`GpuBert`] runs a whole BERT forward pass (and pooling) as one command buffer with
//!   activations kept on the GPU. `GpuBackend::whole_forward` offers it to `Model`, which
//!   then runs every BERT batch that way (a packed batch is one submission) and never fills
//!   the per-op weight cache.
//! - [`select_backend`] picks GPU or CPU from `QUIVER_BACKEND` for the server, and
//!   [`select_backend_for_command`] the same for `quiver embed` and `quiver bench`.
//!
//! Some shaders have a faster variant chosen when the device is opened ([`Variants`]): F16
//! weights read as `f16` where the adapter has `SHADER_F16`, and Q8_0 matmuls on int8
//! activations with `dot4I8Packed`; the portable shaders remain the fallback.

#[cfg(feature = "gpu")]
mod backend;
#[cfg(feature = "gpu")]
mod bert;
#[cfg(feature = "gpu")]
pub mod context;
#[cfg(feature = "gpu")]
pub mod kernels;
#[cfg(feature = "gpu")]
mod matmul;
#[cfg(feature = "gpu")]
mod pipelines;
#[cfg(feature = "gpu")]
mod rope;
#[cfg(feature = "gpu")]
pub mod weights;

#[cfg(feature = "gpu")]
pub use backend::GpuBackend;
#[cfg(feature = "gpu")]
pub use bert::{forward_bert, GpuBert};
#[cfg(feature = "gpu")]
pub use context::{list_adapters, Gpu, GpuError, Variants};

use crate::backend::{cpu::Cpu, Backend};
use std::sync::Arc;

/// What `QUIVER_BACKEND` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Cpu,
    /// A GPU, CPU adapters (lavapipe, WARP) included: the user asked for it.
    Gpu,
    /// A real GPU if there is one (or a CPU adapter with QUIVER_GPU_ALLOW_CPU_ADAPTER=1), else the CPU.
    Auto,
}

impl Choice {
    pub fn parse(v: Option<&str>) -> Result<Choice, String> {
        match v.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("auto") => Ok(Choice::Auto),
            Some("cpu") => Ok(Choice::Cpu),
            Some("gpu") => Ok(Choice::Gpu),
            Some(other) => Err(format!("QUIVER_BACKEND={other:?} is not cpu, gpu or auto")),
        }
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

/// The backend a server should load a model on, and a line saying why, for its log.
/// Never fails: anything that keeps the GPU from working means the CPU backend. Call it once
/// per model load: GPU backends share one device but each keeps its own weights, which are
/// freed when the model (and so its backend) is dropped.
pub fn select_backend() -> (Arc<dyn Backend>, String) {
    let raw = std::env::var("QUIVER_BACKEND").ok();
    let choice = match Choice::parse(raw.as_deref()) {
        Ok(c) => c,
        Err(why) => return (Arc::new(Cpu::new()), format!("backend: cpu ({why})")),
    };
    select(choice, env_flag("QUIVER_GPU_ALLOW_CPU_ADAPTER"))
}

/// [`select_backend`] for the one-shot commands (`quiver embed`, `quiver bench`): the server's
/// choice, with its line on stderr whenever `QUIVER_BACKEND` is set or a GPU is used, so that
/// `QUIVER_BACKEND=gpu` on a machine without a GPU says it runs on the CPU, and why, as
/// `quiver serve` does, instead of doing so silently. Unset on a machine without a GPU: the
/// CPU, and nothing said (stdout carries the command's output either way).
pub fn select_backend_for_command() -> Arc<dyn Backend> {
    let (backend, line) = select_backend();
    let asked = std::env::var("QUIVER_BACKEND").is_ok_and(|v| !v.trim().is_empty());
    if asked || backend.name() != "cpu" {
        eprintln!("{line}");
    }
    backend
}

/// [`select_backend`] with the environment already read.
pub fn select(choice: Choice, allow_cpu_adapter: bool) -> (Arc<dyn Backend>, String) {
    if choice == Choice::Cpu {
        return (
            Arc::new(Cpu::new()),
            "backend: cpu (QUIVER_BACKEND=cpu)".to_string(),
        );
    }
    if choice == Choice::Auto && !allow_cpu_adapter && !gpu_device_node_present() {
        // Enumerating adapters would load every Vulkan driver installed, lavapipe and its
        // ~45 MB LLVM included, only to refuse it: look for a GPU device node first.
        return (
            Arc::new(Cpu::new()),
            "backend: cpu (no GPU device in /dev/dri or /dev/nvidia*)".to_string(),
        );
    }
    open_gpu(choice == Choice::Gpu || allow_cpu_adapter)
}

/// Whether a GPU's device node exists: a DRM render node (AMD, Intel, nouveau, virtio) or the
/// NVIDIA driver's. Only Linux has these; elsewhere adapters are always enumerated.
fn gpu_device_node_present() -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    let any_named = |dir: &str, prefix: &str| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
    };
    any_named("/dev/dri", "renderD") || any_named("/dev", "nvidia")
}

#[cfg(feature = "gpu")]
fn open_gpu(allow_cpu_adapter: bool) -> (Arc<dyn Backend>, String) {
    match GpuBackend::shared(allow_cpu_adapter) {
        Ok(g) => {
            let line = format!("backend: gpu on {}", g.adapter());
            (Arc::new(g), line)
        }
        Err(e) => (Arc::new(Cpu::new()), format!("backend: cpu ({e})")),
    }
}

#[cfg(not(feature = "gpu"))]
fn open_gpu(_allow_cpu_adapter: bool) -> (Arc<dyn Backend>, String) {
    (
        Arc::new(Cpu::new()),
        "backend: cpu (built without the `gpu` feature)".to_string(),
    )
}
