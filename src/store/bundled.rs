//! The bundled default model. The bytes themselves are compiled into the `quiver` binary only
//! (see main.rs), never into the library, so test binaries stay small.

/// Wraps `include_bytes!` data so that it starts on a 64-byte boundary: GGUF tensor data is
/// aligned within the file, and the kernels read f16/f32 weights in place.
#[repr(C, align(64))]
pub struct Aligned<T: ?Sized>(pub T);

/// The name the bundled model answers to.
pub const NAME: &str = "all-minilm";
