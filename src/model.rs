//! A loaded model: the file, its architecture, its tokenizer and the backend it runs on.
//! Text → token ids (with Ollama's truncation) → pooled vectors.

use crate::arch::{self, Architecture, Batch, LoadError};
use crate::backend::Backend;
use crate::embed::{self, EmbedError, Pooling};
use crate::gguf::{GgufError, GgufFile};
use crate::tokenizer::{self, Tokenizer, TokenizerError};
use std::fmt;
use std::sync::Arc;

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

pub struct Model {
    pub file: Arc<GgufFile>,
    pub info: ModelInfo,
    arch: Box<dyn Architecture>,
    tokenizer: Box<dyn Tokenizer>,
    backend: Arc<dyn Backend>,
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
    pub fn load(file: GgufFile, backend: Arc<dyn Backend>) -> Result<Model, ModelError> {
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
        Ok(Model {
            file,
            info,
            arch,
            tokenizer,
            backend,
        })
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
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
        let hidden = if batch.tokens.is_empty() {
            Vec::new()
        } else {
            self.arch.forward(&*self.backend, &batch)
        };
        let vectors = embed::pool(
            &hidden,
            self.arch.hidden_size(),
            &batch.seqs,
            self.arch.pooling(),
        );
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
