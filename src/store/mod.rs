//! Model names → GGUF files. Sources, first match wins: `QUIVER_MODELS` (Ollama's layout),
//! `OLLAMA_MODELS` or `~/.ollama/models` (models an Ollama user already pulled), then the
//! bundled default. Names are validated before they ever become paths.
//!
//! INTERFACE ONLY for now: the store developer fills this in; the server codes against it.

pub mod bundled;

use crate::gguf::{GgufError, GgufFile};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A model name as Ollama parses it: `[host/][namespace/]model[:tag]`, defaults
/// `registry.ollama.ai`, `library`, `latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelName {
    pub host: String,
    pub namespace: String,
    pub model: String,
    pub tag: String,
}

impl ModelName {
    /// Parses and validates `s`; a name that could escape the store (`..`, `/` in the wrong
    /// place, control characters, …) is an error.
    pub fn parse(s: &str) -> Result<ModelName, StoreError> {
        let _ = s;
        todo!("store: ModelName::parse")
    }

    /// The short form Ollama shows: `all-minilm:latest`, `user/model:tag`, `host/ns/model:tag`.
    pub fn display_short(&self) -> String {
        todo!("store: ModelName::display_short")
    }
}

/// Where a model's bytes are.
#[derive(Clone, Debug)]
pub enum ModelSource {
    File(PathBuf),
    Bundled(&'static [u8]),
}

/// A model the store can serve.
#[derive(Clone, Debug)]
pub struct ModelEntry {
    pub name: ModelName,
    pub source: ModelSource,
    /// sha256 of the GGUF blob, lower-case hex without a prefix.
    pub digest: String,
    pub size: u64,
    pub modified: SystemTime,
}

impl ModelEntry {
    /// Maps (or wraps) and parses the GGUF file.
    pub fn open(&self) -> Result<GgufFile, GgufError> {
        todo!("store: ModelEntry::open")
    }
}

#[derive(Debug)]
pub enum StoreError {
    /// The name is not a valid model name (the message says why).
    InvalidName(String),
    /// No source has this model.
    NotFound(String),
    Io(String),
    /// A manifest or blob that is not what Ollama's layout says it should be.
    Corrupt(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::InvalidName(why) => write!(f, "invalid model name: {why}"),
            StoreError::NotFound(name) => {
                write!(f, "model {name:?} not found, try pulling it first")
            }
            StoreError::Io(e) => write!(f, "{e}"),
            StoreError::Corrupt(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub struct Store {
    /// Ollama-layout roots searched in order (each has `manifests/` and `blobs/`).
    pub roots: Vec<PathBuf>,
    /// The bundled default model's bytes, if this binary carries them.
    pub bundled: Option<&'static [u8]>,
}

impl Store {
    /// Roots from `QUIVER_MODELS`, then `OLLAMA_MODELS` or `~/.ollama/models`.
    pub fn from_env(bundled: Option<&'static [u8]>) -> Store {
        let _ = bundled;
        todo!("store: Store::from_env")
    }

    pub fn new(roots: Vec<PathBuf>, bundled: Option<&'static [u8]>) -> Store {
        Store { roots, bundled }
    }

    /// The model `name` names, from the first source that has it. A path to a `.gguf` file is
    /// not a name: see [`Store::resolve_path`].
    pub fn resolve(&self, name: &str) -> Result<ModelEntry, StoreError> {
        let _ = name;
        todo!("store: Store::resolve")
    }

    /// A `.gguf` file given by path (the CLI accepts these; the server does not).
    pub fn resolve_path(&self, path: &Path) -> Result<ModelEntry, StoreError> {
        let _ = path;
        todo!("store: Store::resolve_path")
    }

    /// Every model available, for `/api/tags` and `quiver list`.
    pub fn list(&self) -> Result<Vec<ModelEntry>, StoreError> {
        todo!("store: Store::list")
    }

    /// Writes `gguf` into the first root as `name`, in Ollama's layout.
    pub fn create(&self, name: &str, gguf: &Path) -> Result<ModelEntry, StoreError> {
        let _ = (name, gguf);
        todo!("store: Store::create")
    }

    /// Removes `name`'s manifest (and its blob when nothing else refers to it).
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let _ = name;
        todo!("store: Store::remove")
    }
}
