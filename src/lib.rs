//! Quiver: text embeddings through Ollama's HTTP API, on an inference runtime of its own.
//!
//! Dependencies point one way: server → engine → {arch, tokenizer, embed, store} → backend →
//! kernels; `gguf` and `tensor` sit under everything.

pub mod arch;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod embed;
pub mod engine;
pub mod gguf;
pub mod model;
pub mod registry;
pub mod server;
pub mod store;
pub mod tensor;
pub mod tokenizer;
