use super::{blocks_to_float, bytes_at, f16_at, QK};
use half::f16;

/// Q4_1: 32 weights in 20 bytes, 5 bits per weight, with an offset.
///
/// ```text
/// offset  size  field
///      0     2  d   f16 scale
///      2     2  m   f16 minimum
///      4    16  qs  4-bit quants: byte j holds element j in its low nibble
///                   and element j + 16 in its high nibble
/// ```
/// x\[i\] = d · q\[i\] + m
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

impl BlockQ4_1 {
    pub const BYTES: usize = 4 + QK / 2;

    /// The block at the start of `b` (`b.len() >= BYTES`).
    pub fn read(b: &[u8]) -> Self {
        BlockQ4_1 {
            d: f16_at(b, 0),
            m: f16_at(b, 2),
            qs: bytes_at(b, 4),
        }
    }

    pub fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = d * (q & 0x0f) as f32 + m;
            out[j + QK / 2] = d * (q >> 4) as f32 + m;
        }
    }

    /// Dequantises whole blocks of `bytes` into `out` (32 floats per block).
    pub fn to_float(bytes: &[u8], out: &mut [f32]) {
        blocks_to_float(bytes, out, Self::BYTES, QK, |b, o| {
            Self::read(b).dequantize(o)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_block() {
        let mut b = f16::from_f32(0.5).to_le_bytes().to_vec();
        b.extend(f16::from_f32(-2.0).to_le_bytes());
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = [0.0; 32];
        BlockQ4_1::to_float(&b, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], j as f32 * 0.5 - 2.0, "low nibble {j}");
            assert_eq!(out[j + 16], (15 - j) as f32 * 0.5 - 2.0, "high nibble {j}");
        }
        assert_eq!(std::mem::size_of::<BlockQ4_1>(), BlockQ4_1::BYTES);
    }
}
