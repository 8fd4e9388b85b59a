//! GGML block formats: one type per format (one file each), its byte layout spelled out in a
//! doc comment, `BYTES`, a safe `read` from raw bytes, and `to_float` (the scalar reference
//! dequantisation that SIMD/integer kernels are tested against).
//!
//! Every `to_float(bytes, out)` takes whole blocks (`bytes.len()` a multiple of `BYTES`) and
//! writes `BLOCK` floats per block; it stops at whichever of the two runs out first. The
//! arithmetic follows ggml's reference `dequantize_row_*` operation for operation (f32 math,
//! same order, no fused multiply-add), so the results match ggml and the `gguf` Python package
//! bit for bit.
//!
//! Blocks are read by copying fields out of the byte slice: the 18-, 22-, 110-byte… blocks
//! of a row sit at arbitrary offsets, so they are never cast in place.

mod float;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;

pub use float::{bf16_to_float, f16_to_float, f32_to_float};
pub use q2_k::BlockQ2K;
pub use q3_k::BlockQ3K;
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4K;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use q8_0::BlockQ8_0;

use half::f16;

/// Elements per block of the 32-wide formats (Q4_0 .. Q8_0).
pub const QK: usize = 32;
/// Elements per super-block of the K-quants.
pub const QK_K: usize = 256;
/// Bytes of the packed 6-bit scales and mins of Q4_K/Q5_K (and the 6-bit scales of Q3_K).
pub const K_SCALE_SIZE: usize = 12;

/// The little-endian f16 at `b[i..i + 2]`.
pub(crate) fn f16_at(b: &[u8], i: usize) -> f16 {
    f16::from_le_bytes([b[i], b[i + 1]])
}

/// `N` bytes of `b` starting at `i`, copied.
pub(crate) fn bytes_at<const N: usize>(b: &[u8], i: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[i..i + N]);
    a
}

/// Decodes whole blocks of `B` from `bytes` into `out`, `elems` floats per block.
pub(crate) fn blocks_to_float(
    bytes: &[u8],
    out: &mut [f32],
    block_bytes: usize,
    elems: usize,
    mut decode: impl FnMut(&[u8], &mut [f32]),
) {
    for (b, o) in bytes
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(elems))
    {
        decode(b, o);
    }
}

/// The `j`-th (0..8) 6-bit scale and 6-bit min of Q4_K/Q5_K's 12 packed bytes.
///
/// Bytes 0..4 hold scales 0..3 in their low 6 bits, bytes 4..8 mins 0..3 likewise; bytes 8..12
/// hold the low 4 bits of scales 4..7 (low nibble) and mins 4..7 (high nibble), whose top 2 bits
/// are the spare top bits of bytes 0..4 (scales) and 4..8 (mins).
pub(crate) fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let d = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (d, m)
    }
}
