//! A GGUF file held in memory: its bytes (mapped or static) with the parsed header beside them.

use super::{Gguf, GgufError};
use crate::tensor::TensorView;
use std::path::Path;

/// Where a model's bytes live.
pub enum ModelBytes {
    /// A read-only memory map of a file on disk.
    Mapped(memmap2::Mmap),
    /// Bytes compiled into the binary (the bundled default model).
    Static(&'static [u8]),
    /// Bytes owned on the heap (tests, or data that had to be re-aligned).
    Owned(AlignedBytes),
}

impl ModelBytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ModelBytes::Mapped(m) => m,
            ModelBytes::Static(s) => s,
            ModelBytes::Owned(v) => v.as_slice(),
        }
    }
}

/// The bytes of a model file and its parsed header.
pub struct GgufFile {
    bytes: ModelBytes,
    pub header: Gguf,
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let f = std::fs::File::open(path)
            .map_err(|e| GgufError::Io(format!("{}: {e}", path.display())))?;
        // SAFETY: the map is read-only. If another process truncates the file while it is
        // mapped, reads fault; Quiver's own store never rewrites a blob in place.
        let map = unsafe { memmap2::Mmap::map(&f) }
            .map_err(|e| GgufError::Io(format!("{}: {e}", path.display())))?;
        GgufFile::from_bytes(ModelBytes::Mapped(map))
    }

    /// Parses bytes already in memory. Tensor data must be at least 4-byte aligned for the
    /// kernels to read it in place; misaligned bytes are copied once into an aligned buffer.
    pub fn from_bytes(bytes: ModelBytes) -> Result<GgufFile, GgufError> {
        let bytes = if (bytes.as_slice().as_ptr() as usize).is_multiple_of(64) {
            bytes
        } else {
            ModelBytes::Owned(AlignedBytes::copy_from(bytes.as_slice()))
        };
        let header = Gguf::parse(bytes.as_slice())?;
        Ok(GgufFile { bytes, header })
    }

    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells the OS that this process no longer needs `range` of the bytes in memory (after
    /// they were copied into another form): a mapped file's or the binary's pages are dropped
    /// from the resident set, and read again from the file if touched later. Heap bytes are
    /// kept (dropping them would lose them). Only whole pages inside the range are released.
    pub fn release_pages(&self, range: std::ops::Range<usize>) {
        if matches!(self.bytes, ModelBytes::Owned(_)) || range.end > self.len() {
            return;
        }
        #[cfg(unix)]
        {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
            let base = self.bytes().as_ptr() as usize;
            let start = (base + range.start).next_multiple_of(page);
            let end = (base + range.end) / page * page;
            if end > start {
                // SAFETY: [start, end) lies inside a read-only private mapping (a file map or
                // the binary's read-only data) that lives as long as `self`; MADV_DONTNEED on
                // it only drops clean pages, which later reads fault back in from the file.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
                };
            }
        }
    }

    /// A view of tensor `name`, if the file has it.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.header.tensor(self.bytes(), name)
    }
}

/// Bytes on the heap whose first byte sits on a 64-byte boundary, so that f16/f32 tensor data
/// inside can be viewed in place.
pub struct AlignedBytes {
    lines: Vec<Line>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl AlignedBytes {
    pub fn copy_from(src: &[u8]) -> AlignedBytes {
        let mut lines = vec![Line([0; 64]); src.len().div_ceil(64)];
        for (line, chunk) in lines.iter_mut().zip(src.chunks(64)) {
            line.0[..chunk.len()].copy_from_slice(chunk);
        }
        AlignedBytes {
            lines,
            len: src.len(),
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `Line` is 64 plain bytes with no padding, so the Vec's buffer is
        // `lines.len() * 64` initialised bytes, of which `len` are ours.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, self.len) }
    }
}
