//! The bundled default model. The bytes themselves are compiled into the `quiver` binary only
//! (see main.rs), never into the library, so test binaries stay small.

/// Wraps `include_bytes!` data so that it starts on a 64-byte boundary: GGUF tensor data is
/// aligned within the file, and the kernels read f16/f32 weights in place.
#[repr(C, align(64))]
pub struct Aligned<T: ?Sized>(pub T);

/// The name the bundled model answers to.
pub const NAME: &str = "all-minilm";

/// Hex sha256 of the bundled bytes, computed once per process (hashing 46 MB takes ~0.1 s).
pub fn digest(bytes: &'static [u8]) -> String {
    static CACHE: std::sync::OnceLock<(usize, usize, String)> = std::sync::OnceLock::new();
    let key = (bytes.as_ptr() as usize, bytes.len());
    let cached = CACHE.get_or_init(|| (key.0, key.1, super::manifest::sha256_of(bytes)));
    if (cached.0, cached.1) == key {
        cached.2.clone()
    } else {
        super::manifest::sha256_of(bytes)
    }
}

/// When the bundled model "was modified": when the running binary was built (its file time).
pub fn modified() -> std::time::SystemTime {
    std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH)
}
