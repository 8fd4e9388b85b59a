//! The unquantised element types: one value per "block".

use half::{bf16, f16};

/// F32: 4 bytes little-endian per value.
pub fn f32_to_float(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

/// F16: IEEE half, 2 bytes little-endian per value.
pub fn f16_to_float(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

/// BF16: the top 16 bits of an f32, 2 bytes little-endian per value.
pub fn bf16_to_float(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}
