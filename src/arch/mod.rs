//! Model architectures: hyper-parameters from `<arch>.*` keys and a forward pass written
//! against [`Backend`]. One file per architecture.

pub mod bert;
pub mod bert_table;
mod decoder;
pub mod gemma;
pub mod llama;
pub mod llama_table;

use crate::backend::Backend;
use crate::embed::Pooling;
use crate::gguf::{GgufFile, TensorInfo};
use crate::tensor::TensorView;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// The tokens of several sequences packed back to back, with each sequence's range.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub seqs: Vec<Range<usize>>,
}

impl Batch {
    pub fn new<S: AsRef<[u32]>>(seqs: &[S]) -> Batch {
        let mut b = Batch::default();
        for s in seqs {
            let start = b.tokens.len();
            b.tokens.extend_from_slice(s.as_ref());
            b.seqs.push(start..b.tokens.len());
        }
        b
    }

    /// Each token's position within its own sequence (positions restart at 0 in every one).
    pub fn positions(&self) -> Vec<usize> {
        let mut positions = vec![0usize; self.tokens.len()];
        for seq in &self.seqs {
            for (p, t) in seq.clone().enumerate() {
                positions[t] = p;
            }
        }
        positions
    }
}

pub trait Architecture: Send + Sync {
    /// Width of the hidden states (and of the pooled embedding).
    fn hidden_size(&self) -> usize;
    /// Longest sequence the model was trained on.
    fn context_length(&self) -> usize;
    /// Number of rows of the token embedding: every token id must be below it.
    fn vocab_size(&self) -> usize;
    /// Pooling the file asks for (`<arch>.pooling_type`), or the architecture's default.
    fn pooling(&self) -> Pooling;
    /// Hidden states of every token of the batch, `tokens.len() × hidden_size()`.
    fn forward(&self, backend: &dyn Backend, batch: &Batch) -> Vec<f32>;
    /// Maps each pooled vector to the embedding, in place and keeping its width
    /// (gemma-embedding's dense projections). By default the pooled vector is the embedding.
    fn project(&self, _backend: &dyn Backend, _pooled: &mut [Vec<f32>]) {}
}

#[derive(Debug, Clone, PartialEq)]
pub enum LoadError {
    UnknownArchitecture(String),
    MissingKey(String),
    MissingTensor(String),
    BadShape {
        tensor: String,
        want: Vec<usize>,
        got: Vec<usize>,
    },
    Invalid(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::UnknownArchitecture(a) => write!(f, "unsupported architecture {a:?}"),
            LoadError::MissingKey(k) => write!(f, "model metadata {k} is missing"),
            LoadError::MissingTensor(t) => write!(f, "model tensor {t} is missing"),
            LoadError::BadShape { tensor, want, got } => {
                write!(f, "tensor {tensor} has shape {got:?}, expected {want:?}")
            }
            LoadError::Invalid(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Builds the architecture that `general.architecture` names.
pub fn load(file: Arc<GgufFile>) -> Result<Box<dyn Architecture>, LoadError> {
    let arch = file
        .header
        .architecture()
        .ok_or(LoadError::MissingKey("general.architecture".into()))?;
    match arch {
        a if bert_table::spec(a).is_some() => Ok(Box::new(bert::Bert::load(file.clone())?)),
        gemma::ARCH => Ok(Box::new(gemma::Gemma::load(file.clone(), arch)?)),
        gemma::OLLAMA_ARCH if gemma::is_ollama_embedding(&file) => {
            Ok(Box::new(gemma::Gemma::load(file.clone(), arch)?))
        }
        "llama" | "qwen2" | "qwen3" | "mistral" => {
            Ok(Box::new(llama::Llama::load(file.clone(), arch)?))
        }
        other => Err(LoadError::UnknownArchitecture(other.to_string())),
    }
}

/// Reads hyper-parameters and tensors of one architecture out of a file, checking shapes.
pub(crate) struct Loader<'a> {
    pub file: &'a GgufFile,
    pub arch: &'a str,
}

impl<'a> Loader<'a> {
    /// `<arch>.<key>` as an integer.
    pub fn usize(&self, key: &str) -> Result<usize, LoadError> {
        let full = format!("{}.{key}", self.arch);
        self.file
            .header
            .get_u64(&full)
            .map(|v| v as usize)
            .ok_or(LoadError::MissingKey(full))
    }

    pub fn usize_or(&self, key: &str, default: usize) -> usize {
        self.file
            .header
            .get_u64(&format!("{}.{key}", self.arch))
            .map_or(default, |v| v as usize)
    }

    pub fn f32_or(&self, key: &str, default: f32) -> f32 {
        self.file
            .header
            .get_f64(&format!("{}.{key}", self.arch))
            .map_or(default, |v| v as f32)
    }

    /// Tensor `name` with the given shape (GGML order).
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<TensorInfo, LoadError> {
        let t = self
            .file
            .header
            .tensor_info(name)
            .ok_or(LoadError::MissingTensor(name.into()))?;
        if t.dims() != shape {
            return Err(LoadError::BadShape {
                tensor: name.into(),
                want: shape.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        Ok(t.clone())
    }

    /// A small tensor (norm weights, biases) read once into f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, LoadError> {
        let t = self.tensor(name, &[len])?;
        Ok(view(self.file, &t).to_f32())
    }

    pub fn optional_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, LoadError> {
        match self.file.header.tensor_info(name) {
            None => Ok(None),
            Some(_) => self.vector(name, len).map(Some),
        }
    }
}

/// The bytes of tensor `t` in `file`.
pub(crate) fn view<'a>(file: &'a GgufFile, t: &TensorInfo) -> TensorView<'a> {
    TensorView {
        dtype: t.dtype,
        shape: t.shape,
        n_dims: t.n_dims,
        data: &file.bytes()[t.offset..t.offset + t.len],
    }
}
