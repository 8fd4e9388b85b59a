//! `Backend` on the GPU, one operation at a time: weights are uploaded once (cached by where
//! their bytes live), activations go up and come back per call. A GPU fault makes the backend
//! log it once and run the rest of its life on the CPU kernels, so callers never see a panic.

use super::bert::GpuBert;
use super::context::{Gpu, GpuError};
use super::kernels;
use super::rope::{position_bits, rotation_table};
use super::weights::{upload_weight, GpuWeight, WeightKey};
use crate::backend::{cpu::Cpu, rope_on_cpu, AttnShape, Backend, Mask, Rope, WholeForward};
use crate::gguf::GgufFile;
use crate::tensor::TensorView;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Activation buffers kept between calls, by power-of-two size class.
#[derive(Default)]
struct BufferPool {
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
}

/// Fewest bytes a pooled buffer has.
const MIN_POOLED: u64 = 256;

impl BufferPool {
    fn take(&self, gpu: &Gpu, what: &str, bytes: u64) -> Result<Pooled<'_>, GpuError> {
        gpu.check_size(what, bytes)?;
        let class = bytes.max(MIN_POOLED).next_power_of_two();
        let reused = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&class)
            .and_then(Vec::pop);
        let buf = match reused {
            Some(b) => b,
            // The class may exceed the binding limit where `bytes` does not: fall back to exact.
            None => {
                let size = if gpu.check_size(what, class).is_ok() {
                    class
                } else {
                    bytes
                };
                gpu.storage(
                    what,
                    size,
                    wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
                )?
            }
        };
        Ok(Pooled {
            pool: self,
            class,
            buf: Some(buf),
        })
    }
}

/// A pooled buffer that goes back to the pool when dropped.
struct Pooled<'a> {
    pool: &'a BufferPool,
    class: u64,
    buf: Option<wgpu::Buffer>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("pooled buffer present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            if b.size() == self.class {
                self.pool
                    .free
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(self.class)
                    .or_default()
                    .push(b);
            }
        }
    }
}

pub struct GpuBackend {
    gpu: Arc<Gpu>,
    weights: Mutex<HashMap<WeightKey, Arc<GpuWeight>>>,
    pool: BufferPool,
    cpu: Cpu,
    failed: AtomicBool,
}

impl GpuBackend {
    /// Opens the best adapter (CPU adapters only with `allow_cpu_adapter`) and builds every
    /// pipeline.
    pub fn new(allow_cpu_adapter: bool) -> Result<GpuBackend, GpuError> {
        Ok(GpuBackend::on(Arc::new(Gpu::open(allow_cpu_adapter)?)))
    }

    /// A backend of its own (its own weight cache, freed when it is dropped) on the process's
    /// shared device, opened on first use and opened again if it was lost. Use one per loaded
    /// model: unloading the model then frees its GPU memory while the device stays.
    pub fn shared(allow_cpu_adapter: bool) -> Result<GpuBackend, GpuError> {
        static SHARED: Mutex<Option<Weak<Gpu>>> = Mutex::new(None);
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        let usable = |g: &Arc<Gpu>| {
            g.check().is_ok() && (allow_cpu_adapter || g.info.device_type != wgpu::DeviceType::Cpu)
        };
        if let Some(g) = slot.as_ref().and_then(Weak::upgrade).filter(usable) {
            return Ok(GpuBackend::on(g));
        }
        let g = Arc::new(Gpu::open(allow_cpu_adapter)?);
        *slot = Some(Arc::downgrade(&g));
        Ok(GpuBackend::on(g))
    }

    pub fn on(gpu: Arc<Gpu>) -> GpuBackend {
        GpuBackend {
            gpu,
            weights: Mutex::default(),
            pool: BufferPool::default(),
            cpu: Cpu::new(),
            failed: AtomicBool::new(false),
        }
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The adapter, e.g. "llvmpipe (LLVM 15.0.7, 256 bits) (Cpu, Vulkan)".
    pub fn adapter(&self) -> String {
        self.gpu.describe()
    }

    /// True once a GPU fault has switched this backend to the CPU.
    pub fn fell_back(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Bytes of weights held on the GPU (what `/api/ps` reports as `size_vram`).
    pub fn vram_bytes(&self) -> u64 {
        self.weights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|w| w.bytes)
            .sum()
    }

    /// Frees every cached weight (a model unload).
    pub fn clear_weights(&self) {
        self.weights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn weight(&self, w: &TensorView) -> Result<Arc<GpuWeight>, GpuError> {
        let key = WeightKey::of(w);
        if let Some(g) = self
            .weights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(g.clone());
        }
        // Uploaded outside the lock: two threads may both upload a new weight; one copy wins.
        let g = Arc::new(upload_weight(&self.gpu, "weight", w)?);
        self.gpu.check()?;
        Ok(self
            .weights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(g)
            .clone())
    }

    fn put(&self, what: &str, data: &[f32]) -> Result<Pooled<'_>, GpuError> {
        let buf = self
            .pool
            .take(&self.gpu, what, std::mem::size_of_val(data) as u64)?;
        if !data.is_empty() {
            self.gpu
                .queue
                .write_buffer(&buf, 0, bytemuck::cast_slice(data));
        }
        Ok(buf)
    }

    fn scratch(&self, what: &str, len: usize) -> Result<Pooled<'_>, GpuError> {
        self.pool.take(&self.gpu, what, (len * 4) as u64)
    }

    pub fn try_linear(
        &self,
        x: &[f32],
        m: usize,
        w: &TensorView,
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<(), GpuError> {
        let gw = self.weight(w)?;
        if x.len() != m * gw.k || y.len() != m * gw.n || bias.is_some_and(|b| b.len() != gw.n) {
            return Err(GpuError::Unsupported(format!(
                "linear: buffers do not match {m}×{} · ({}×{})ᵀ",
                gw.k, gw.n, gw.k
            )));
        }
        let xb = self.put("x", x)?;
        let bb = bias.map(|b| self.put("bias", b)).transpose()?;
        let yb = self.scratch("y", y.len())?;
        let mut enc = self.gpu.encoder();
        kernels::matmul(&self.gpu, &mut enc, &xb, m, &gw, bb.as_deref(), &yb)?;
        self.gpu.finish_and_read(enc, &yb, y)
    }

    pub fn try_layer_norm(
        &self,
        x: &mut [f32],
        w: &[f32],
        b: &[f32],
        eps: f32,
    ) -> Result<(), GpuError> {
        let dim = w.len();
        if dim == 0 || !x.len().is_multiple_of(dim) || b.len() != dim {
            return Err(GpuError::Unsupported(
                "layer_norm: rows do not match the weight".into(),
            ));
        }
        let (xb, wb, bb) = (
            self.put("x", x)?,
            self.put("ln.w", w)?,
            self.put("ln.b", b)?,
        );
        let mut enc = self.gpu.encoder();
        kernels::layer_norm(
            &self.gpu,
            &mut enc,
            &xb,
            None,
            &wb,
            &bb,
            x.len() / dim,
            dim,
            eps,
        )?;
        self.gpu.finish_and_read(enc, &xb, x)
    }

    pub fn try_rms_norm(&self, x: &mut [f32], w: &[f32], eps: f32) -> Result<(), GpuError> {
        let dim = w.len();
        if dim == 0 || !x.len().is_multiple_of(dim) {
            return Err(GpuError::Unsupported(
                "rms_norm: rows do not match the weight".into(),
            ));
        }
        let (xb, wb) = (self.put("x", x)?, self.put("rms.w", w)?);
        let mut enc = self.gpu.encoder();
        kernels::rms_norm(&self.gpu, &mut enc, &xb, &wb, x.len() / dim, dim, eps)?;
        self.gpu.finish_and_read(enc, &xb, x)
    }

    pub fn try_gelu(&self, x: &mut [f32]) -> Result<(), GpuError> {
        let xb = self.put("x", x)?;
        let mut enc = self.gpu.encoder();
        kernels::gelu(&self.gpu, &mut enc, &xb, x.len())?;
        self.gpu.finish_and_read(enc, &xb, x)
    }

    pub fn try_silu_mul(&self, gate: &mut [f32], up: &[f32]) -> Result<(), GpuError> {
        if gate.len() != up.len() {
            return Err(GpuError::Unsupported(
                "silu_mul: gate and up differ in length".into(),
            ));
        }
        let (gb, ub) = (self.put("gate", gate)?, self.put("up", up)?);
        let mut enc = self.gpu.encoder();
        kernels::silu_mul(&self.gpu, &mut enc, &gb, &ub, gate.len())?;
        self.gpu.finish_and_read(enc, &gb, gate)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn try_attention(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        seqs: &[Range<usize>],
        shape: AttnShape,
        causal: bool,
        out: &mut [f32],
    ) -> Result<(), GpuError> {
        let qd = shape.n_head * shape.head_dim;
        let kd = shape.n_head_kv * shape.head_dim;
        let n = q.len().checked_div(qd).unwrap_or(0);
        if qd == 0
            || q.len() != n * qd
            || k.len() != n * kd
            || v.len() != n * kd
            || out.len() != q.len()
        {
            return Err(GpuError::Unsupported(
                "attention: buffers do not match the head shape".into(),
            ));
        }
        let offsets = kernels::seq_offsets(seqs, n)?;
        let (qb, kb, vb) = (self.put("q", q)?, self.put("k", k)?, self.put("v", v)?);
        let ob = self.gpu.upload("offsets", bytemuck::cast_slice(&offsets))?;
        let outb = self.scratch("attn", out.len())?;
        let mut enc = self.gpu.encoder();
        kernels::attention(
            &self.gpu,
            &mut enc,
            &qb,
            &kb,
            &vb,
            &ob,
            n,
            seqs.len(),
            shape,
            causal,
            &outb,
        )?;
        self.gpu.finish_and_read(enc, &outb, out)
    }

    pub fn try_rope(
        &self,
        rope: &Rope,
        x: &mut [f32],
        row_len: usize,
        positions: &[usize],
    ) -> Result<(), GpuError> {
        super::rope::check(rope, x.len(), row_len, positions.len())?;
        let pos = positions
            .iter()
            .map(|&p| kernels::u32_of("position", p))
            .collect::<Result<Vec<u32>, _>>()?;
        let bits = position_bits(&pos);
        let table = rotation_table(rope, bits);
        let xb = self.put("x", x)?;
        let pb = self.gpu.upload("positions", bytemuck::cast_slice(&pos))?;
        let tb = self
            .gpu
            .upload("rope table", bytemuck::cast_slice(&table))?;
        let mut enc = self.gpu.encoder();
        kernels::rope(
            &self.gpu,
            &mut enc,
            rope,
            &xb,
            row_len,
            positions.len(),
            &pb,
            &tb,
            bits,
        )?;
        self.gpu.finish_and_read(enc, &xb, x)
    }

    /// Runs `op` on the GPU unless it has failed before; on a fault, logs it, remembers it and
    /// returns false so the caller runs the CPU kernel instead.
    fn on_gpu(&self, name: &str, op: impl FnOnce() -> Result<(), GpuError>) -> bool {
        if self.failed.load(Ordering::Relaxed) {
            return false;
        }
        match self.gpu.check().and_then(|()| op()) {
            Ok(()) => true,
            Err(e @ GpuError::Unsupported(_)) | Err(e @ GpuError::TooLarge { .. }) => {
                // This call only: the next one may fit.
                eprintln!("quiver: {name} on the CPU: {e}");
                false
            }
            Err(e) => {
                if !self.failed.swap(true, Ordering::Relaxed) {
                    eprintln!("quiver: GPU failed in {name}, continuing on the CPU: {e}");
                }
                false
            }
        }
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn vram_bytes(&self) -> u64 {
        GpuBackend::vram_bytes(self)
    }

    /// BERT as one command buffer per batch ([`GpuBert`], its own weights on this device);
    /// other architectures (and a backend whose GPU already failed) run op by op.
    fn whole_forward(&self, file: &Arc<GgufFile>, arch: &str) -> Option<Box<dyn WholeForward>> {
        if arch != "bert" || self.fell_back() {
            return None;
        }
        match GpuBert::load(self.gpu.clone(), file.clone()) {
            Ok(bert) => Some(Box::new(bert)),
            Err(e) => {
                eprintln!("quiver: BERT cannot run whole on the GPU, running it op by op: {e}");
                None
            }
        }
    }

    fn linear(&self, x: &[f32], m: usize, w: &TensorView, bias: Option<&[f32]>, y: &mut [f32]) {
        if !self.on_gpu("linear", || self.try_linear(x, m, w, bias, y)) {
            self.cpu.linear(x, m, w, bias, y);
        }
    }

    fn layer_norm(&self, x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        if !self.on_gpu("layer_norm", || self.try_layer_norm(x, w, b, eps)) {
            self.cpu.layer_norm(x, w, b, eps);
        }
    }

    fn rms_norm(&self, x: &mut [f32], w: &[f32], eps: f32) {
        if !self.on_gpu("rms_norm", || self.try_rms_norm(x, w, eps)) {
            self.cpu.rms_norm(x, w, eps);
        }
    }

    fn gelu(&self, x: &mut [f32]) {
        if !self.on_gpu("gelu", || self.try_gelu(x)) {
            self.cpu.gelu(x);
        }
    }

    fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        if !self.on_gpu("silu_mul", || self.try_silu_mul(gate, up)) {
            self.cpu.silu_mul(gate, up);
        }
    }

    fn attention(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        seqs: &[Range<usize>],
        shape: AttnShape,
        mask: Mask,
        out: &mut [f32],
    ) {
        // The shader knows full and causal masks; a window or a bias runs on the CPU.
        let shader = match mask {
            Mask::Full => Some(false),
            Mask::Causal => Some(true),
            Mask::Window { .. } | Mask::Alibi { .. } => None,
        };
        let on_gpu = shader.is_some_and(|causal| {
            self.on_gpu("attention", || {
                self.try_attention(q, k, v, seqs, shape, causal, out)
            })
        });
        if !on_gpu {
            self.cpu.attention(q, k, v, seqs, shape, mask, out);
        }
    }

    fn rope(&self, rope: &Rope, x: &mut [f32], row_len: usize, positions: &[usize]) {
        if !self.on_gpu("rope", || self.try_rope(rope, x, row_len, positions)) {
            rope_on_cpu(rope, x, row_len, positions);
        }
    }
}
