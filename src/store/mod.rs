//! Model names → GGUF files: Ollama's on-disk layout, the bundled default, `create` (to be
//! written beyond `bundled`).

pub mod bundled;
