//! A loaded model: the file, its architecture, its tokenizer and the backend it runs on.
//! Text → token ids (with Ollama's truncation) → pooled vectors.
//!
//! A batch runs one of three ways ([`ForwardPath`]): whole on the backend's device when the
//! backend offers that for the architecture (BERT on the GPU: one submission per batch), else
//! the architecture's forward op by op on the backend. A device fault in the whole path moves
//! the model to the CPU kernels for good, with one log line; a batch too big for the device
//! runs on the CPU alone.

use crate::arch::{self, Architecture, Batch, LoadError};
use crate::backend::cpu::Cpu;
use crate::backend::{Backend, WholeForward, WholeForwardError};
use crate::embed::{self, EmbedError, Pooling};
use crate::gguf::{GgufError, GgufFile};
use crate::tokenizer::{self, Tokenizer, TokenizerError};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// What `/api/show`, `/api/ps` and `quiver show` say about a model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// `general.architecture`.
    pub family: String,
    pub parameter_count: u64,
    /// From `general.file_type`: `F32`, `F16`, `Q8_0`, `Q4_K_M`, …
    pub quantization_level: String,
    pub context_length: usize,
    pub embedding_length: usize,
    pub pooling: Pooling,
    /// Bytes of the model file.
    pub file_size: u64,
}

/// How a batch's forward pass ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardPath {
    /// The whole forward pass and pooling on the GPU, one submission for the batch.
    GpuWhole,
    /// The architecture's forward, each op on a device backend (`GpuBackend`), activations
    /// going up and down per op.
    PerOp,
    /// The CPU kernels: a CPU backend, or the GPU's whole path failed or could not take the
    /// batch.
    Cpu,
}

impl ForwardPath {
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardPath::GpuWhole => "gpu-whole",
            ForwardPath::PerOp => "per-op",
            ForwardPath::Cpu => "cpu",
        }
    }

    fn from_u8(v: u8) -> ForwardPath {
        match v {
            0 => ForwardPath::GpuWhole,
            1 => ForwardPath::PerOp,
            _ => ForwardPath::Cpu,
        }
    }
}

/// What `Model::load_with` may use.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Run whole on the backend's device where it offers that (default); off, the model always
    /// runs op by op (tests and comparisons of the two paths).
    pub whole_forward: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            whole_forward: true,
        }
    }
}

pub struct Model {
    pub file: Arc<GgufFile>,
    pub info: ModelInfo,
    arch: Box<dyn Architecture>,
    tokenizer: Box<dyn Tokenizer>,
    backend: Arc<dyn Backend>,
    /// The backend's whole-forward path, dropped (freeing its device memory) once the device
    /// fails.
    whole: Mutex<Option<Arc<dyn WholeForward>>>,
    /// Set when the whole path's device failed: every later batch runs on the CPU kernels.
    device_failed: AtomicBool,
    /// The [`ForwardPath`] of the latest batch (before any: the one the first will take).
    last_path: AtomicU8,
}

#[derive(Debug)]
pub enum ModelError {
    Gguf(GgufError),
    Tokenizer(TokenizerError),
    Load(LoadError),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Gguf(e) => write!(f, "{e}"),
            ModelError::Tokenizer(e) => write!(f, "{e}"),
            ModelError::Load(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ModelError {}

impl From<GgufError> for ModelError {
    fn from(e: GgufError) -> Self {
        ModelError::Gguf(e)
    }
}
impl From<TokenizerError> for ModelError {
    fn from(e: TokenizerError) -> Self {
        ModelError::Tokenizer(e)
    }
}
impl From<LoadError> for ModelError {
    fn from(e: LoadError) -> Self {
        ModelError::Load(e)
    }
}

impl Model {
    /// Loads `file` to run on `backend`, whole on its device where it can.
    pub fn load(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Model, ModelError> {
        Model::load_with(file, backend, LoadOptions::default())
    }

    pub fn load_with(
        file: GgufFile,
        backend: Arc<dyn Backend>,
        options: LoadOptions,
    ) -> Result<Model, ModelError> {
        let file = Arc::new(file);
        let tokenizer = tokenizer::from_gguf(&file.header)?;
        let arch = arch::load(file.clone())?;
        if tokenizer.vocab_size() > arch.vocab_size() {
            return Err(LoadError::Invalid(format!(
                "tokenizer has {} tokens but the embedding only {}",
                tokenizer.vocab_size(),
                arch.vocab_size()
            ))
            .into());
        }
        let h = &file.header;
        let info = ModelInfo {
            family: h.architecture().unwrap_or_default().to_string(),
            parameter_count: h.parameter_count(),
            quantization_level: file_type_name(h.get_u64("general.file_type")).to_string(),
            context_length: arch.context_length(),
            embedding_length: arch.hidden_size(),
            pooling: arch.pooling(),
            file_size: file.len() as u64,
        };
        // After the checks above, so that a bad file never reaches the device.
        let whole: Option<Arc<dyn WholeForward>> = options
            .whole_forward
            .then(|| backend.whole_forward(&file, &info.family))
            .flatten()
            .map(Arc::from);
        let path = if whole.is_some() {
            ForwardPath::GpuWhole
        } else {
            backend.prepare(&file);
            op_path(&*backend)
        };
        Ok(Model {
            file,
            info,
            arch,
            tokenizer,
            backend,
            whole: Mutex::new(whole),
            device_failed: AtomicBool::new(false),
            last_path: AtomicU8::new(path as u8),
        })
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Bytes of this model's weights in device memory (`/api/ps` `size_vram`): the whole-forward
    /// path's and the per-op backend's cache (only one of them is ever filled).
    pub fn vram_bytes(&self) -> u64 {
        let whole = self.whole_path().map_or(0, |w| w.vram_bytes());
        whole + self.backend.vram_bytes()
    }

    /// How the latest batch ran (before any batch: how the first will run).
    pub fn forward_path(&self) -> ForwardPath {
        ForwardPath::from_u8(self.last_path.load(Ordering::Relaxed))
    }

    fn whole_path(&self) -> Option<Arc<dyn WholeForward>> {
        self.whole.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Pooled, unnormalised vectors of a non-empty batch, by the best path that works.
    fn pooled(&self, batch: &Batch, pooling: Pooling) -> Vec<Vec<f32>> {
        if let Some(whole) = self.whole_path() {
            match whole.pooled(batch, pooling) {
                Ok(v) => {
                    self.last_path
                        .store(ForwardPath::GpuWhole as u8, Ordering::Relaxed);
                    return v;
                }
                Err(WholeForwardError::Batch(why)) => {
                    eprintln!(
                        "quiver: a batch of {} tokens runs on the CPU: {why}",
                        batch.tokens.len()
                    );
                }
                Err(WholeForwardError::Device(why)) => {
                    self.device_failed.store(true, Ordering::Relaxed);
                    // Another thread may have dropped it already: log once.
                    if self
                        .whole
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take()
                        .is_some()
                    {
                        eprintln!(
                            "quiver: GPU failed, {} continues on the CPU: {why}",
                            self.info.family
                        );
                    }
                }
            }
            self.last_path
                .store(ForwardPath::Cpu as u8, Ordering::Relaxed);
            return self.pooled_op_by_op(&Cpu::new(), batch, pooling);
        }
        if self.device_failed.load(Ordering::Relaxed) {
            // The whole path's device failed: it is not used again.
            self.last_path
                .store(ForwardPath::Cpu as u8, Ordering::Relaxed);
            return self.pooled_op_by_op(&Cpu::new(), batch, pooling);
        }
        self.last_path
            .store(op_path(&*self.backend) as u8, Ordering::Relaxed);
        self.pooled_op_by_op(&*self.backend, batch, pooling)
    }

    /// Op by op, in forward passes of at most [`OP_BY_OP_TOKENS`] tokens (whole sequences; a
    /// longer one runs alone).
    fn pooled_op_by_op(&self, be: &dyn Backend, batch: &Batch, pooling: Pooling) -> Vec<Vec<f32>> {
        let mut out = Vec::with_capacity(batch.seqs.len());
        let mut rest = &batch.seqs[..];
        while !rest.is_empty() {
            let mut take = 1;
            let mut tokens = rest[0].len();
            while take < rest.len() && tokens + rest[take].len() <= OP_BY_OP_TOKENS {
                tokens += rest[take].len();
                take += 1;
            }
            let (part, next) = rest.split_at(take);
            let sub = if part.len() == batch.seqs.len() {
                None
            } else {
                Some(Batch::new(
                    &part
                        .iter()
                        .map(|r| &batch.tokens[r.clone()])
                        .collect::<Vec<_>>(),
                ))
            };
            let sub = sub.as_ref().unwrap_or(batch);
            let hidden = self.arch.forward(be, sub);
            out.extend(embed::pool(
                &hidden,
                self.arch.hidden_size(),
                &sub.seqs,
                pooling,
            ));
            rest = next;
        }
        out
    }

    /// Token ids of `text` with the model's special tokens, no truncation.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text)
    }

    /// Token ids of `text` fitted to the context: the model's length, lowered by `num_ctx`.
    pub fn prepare(
        &self,
        text: &str,
        num_ctx: Option<usize>,
        truncate: bool,
    ) -> Result<Vec<u32>, EmbedError> {
        let limit = num_ctx.map_or(self.info.context_length, |n| {
            n.min(self.info.context_length)
        });
        let content = self.tokenizer.tokenize(text);
        embed::fit_to_context(
            self.tokenizer.prefix(),
            &content,
            self.tokenizer.suffix(),
            limit,
            truncate,
        )
    }

    /// Pooled, unnormalised vectors of already-tokenised sequences, in order. All sequences run
    /// through one forward pass.
    pub fn embed_tokens<S: AsRef<[u32]>>(&self, seqs: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_tokens_with(seqs, self.arch.pooling())
    }

    /// [`Model::embed_tokens`] with a pooling other than the model's own (tests, comparisons).
    pub fn embed_tokens_with<S: AsRef<[u32]>>(
        &self,
        seqs: &[S],
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let vocab = self.arch.vocab_size();
        for s in seqs {
            let s = s.as_ref();
            if s.len() > self.info.context_length {
                return Err(EmbedError::TooLong);
            }
            if let Some(&bad) = s.iter().find(|&&t| t as usize >= vocab) {
                return Err(EmbedError::Model(format!(
                    "token id {bad} is outside the vocabulary"
                )));
            }
        }
        let batch = Batch::new(seqs);
        let mut vectors = if batch.tokens.is_empty() {
            embed::pool(&[], self.arch.hidden_size(), &batch.seqs, pooling)
        } else {
            self.pooled(&batch, pooling)
        };
        self.arch.project(&*self.backend, &mut vectors);
        if vectors.iter().flatten().any(|v| !v.is_finite()) {
            return Err(EmbedError::NotFinite);
        }
        Ok(vectors)
    }

    /// Normalised embeddings of `texts`, truncated to the context.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let seqs = texts
            .iter()
            .map(|t| self.prepare(t, None, true))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = self.embed_tokens(&seqs)?;
        out.iter_mut().for_each(|v| embed::normalize(v));
        Ok(out)
    }
}

/// Most tokens in one op-by-op forward pass, and the default token budget of the server's
/// batches (`QUIVER_BATCH_TOKENS`): larger passes are no faster on the CPU and their
/// activations fall out of the caches and take memory.
pub const OP_BY_OP_TOKENS: usize = 2048;

/// How the architecture's op-by-op forward runs on `backend`.
fn op_path(backend: &dyn Backend) -> ForwardPath {
    if backend.name() == "cpu" {
        ForwardPath::Cpu
    } else {
        ForwardPath::PerOp
    }
}

/// llama.cpp's `general.file_type` codes, named as Ollama shows them.
pub fn file_type_name(code: Option<u64>) -> &'static str {
    match code {
        Some(0) => "F32",
        Some(1) => "F16",
        Some(2) => "Q4_0",
        Some(3) => "Q4_1",
        Some(7) => "Q8_0",
        Some(8) => "Q5_0",
        Some(9) => "Q5_1",
        Some(10) => "Q2_K",
        Some(11) => "Q3_K_S",
        Some(12) => "Q3_K_M",
        Some(13) => "Q3_K_L",
        Some(14) => "Q4_K_S",
        Some(15) => "Q4_K_M",
        Some(16) => "Q5_K_S",
        Some(17) => "Q5_K_M",
        Some(18) => "Q6_K",
        Some(32) => "BF16",
        _ => "unknown",
    }
}

/// A count the way Ollama's `format.HumanNumber` writes it (`parameter_size`): `22.57M`,
/// `137M`, `7.2B`, `110K`. Whole millions and billions drop the decimals; otherwise millions
/// keep two and billions one.
pub fn human_number(n: u64) -> String {
    const THOUSAND: u64 = 1_000;
    const MILLION: u64 = 1_000_000;
    const BILLION: u64 = 1_000_000_000;
    let scaled = |unit: u64, decimals: usize, suffix: &str| {
        if n.is_multiple_of(unit) {
            format!("{}{suffix}", n / unit)
        } else {
            format!("{:.*}{suffix}", decimals, n as f64 / unit as f64)
        }
    };
    match n {
        _ if n >= BILLION => scaled(BILLION, 1, "B"),
        _ if n >= MILLION => scaled(MILLION, 2, "M"),
        _ if n >= THOUSAND => format!("{:.0}K", n as f64 / THOUSAND as f64),
        _ => n.to_string(),
    }
}
