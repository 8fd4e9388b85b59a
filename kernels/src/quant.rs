//! GGML block formats: one type per format, its layout spelled out, `to_float` beside it.

use half::{bf16, f16};

/// Elements per block of the 32-wide formats (Q4_0 .. Q8_0).
pub const QK: usize = 32;
/// Elements per super-block of the K-quants.
pub const QK_K: usize = 256;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

pub fn f32_to_float(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

pub fn f16_to_float(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

pub fn bf16_to_float(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

/// Q8_0: `d: f16` then 32 × `i8`; x = d · q.
pub struct BlockQ8_0;
impl BlockQ8_0 {
    pub const BYTES: usize = 2 + QK;
    pub fn to_float(bytes: &[u8], out: &mut [f32]) {
        for (b, o) in bytes
            .chunks_exact(Self::BYTES)
            .zip(out.chunks_exact_mut(QK))
        {
            let d = f16_at(b, 0);
            for (o, &q) in o.iter_mut().zip(&b[2..]) {
                *o = d * (q as i8) as f32;
            }
        }
    }
}

macro_rules! todo_block {
    ($name:ident, $bytes:expr) => {
        pub struct $name;
        impl $name {
            pub const BYTES: usize = $bytes;
            pub fn to_float(_bytes: &[u8], _out: &mut [f32]) {
                unimplemented!(concat!(stringify!($name), "::to_float"))
            }
        }
    };
}
todo_block!(BlockQ4_0, 2 + QK / 2);
todo_block!(BlockQ4_1, 4 + QK / 2);
todo_block!(BlockQ5_0, 2 + 4 + QK / 2);
todo_block!(BlockQ5_1, 4 + 4 + QK / 2);
todo_block!(BlockQ2K, QK_K / 16 + QK_K / 4 + 4);
todo_block!(BlockQ3K, QK_K / 8 + QK_K / 4 + 12 + 2);
todo_block!(BlockQ4K, 4 + 12 + QK_K / 2);
todo_block!(BlockQ5K, 4 + 12 + QK_K / 8 + QK_K / 2);
todo_block!(BlockQ6K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2);
