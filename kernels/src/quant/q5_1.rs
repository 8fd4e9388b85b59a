use super::{blocks_to_float, bytes_at, f16_at, BlockQ5_0, QK};
use half::f16;

/// Q5_1: 32 weights in 24 bytes, 6 bits per weight, with an offset.
///
/// ```text
/// offset  size  field
///      0     2  d   f16 scale
///      2     2  m   f16 minimum
///      4     4  qh  fifth bits: bit i of this little-endian u32 is bit 4 of element i
///      8    16  qs  low 4 bits: byte j holds element j in its low nibble
///                   and element j + 16 in its high nibble
/// ```
/// x\[i\] = d · q\[i\] + m
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

impl BlockQ5_1 {
    pub const BYTES: usize = 4 + 4 + QK / 2;

    /// The block at the start of `b` (`b.len() >= BYTES`).
    pub fn read(b: &[u8]) -> Self {
        BlockQ5_1 {
            d: f16_at(b, 0),
            m: f16_at(b, 2),
            qh: bytes_at(b, 4),
            qs: bytes_at(b, 8),
        }
    }

    pub fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        // Same bit packing as Q5_0; only the reconstruction differs.
        for (o, q) in out[..QK]
            .iter_mut()
            .zip(BlockQ5_0::quants(self.qh, &self.qs))
        {
            *o = d * q as f32 + m;
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
        let mut head = f16::from_f32(0.25).to_le_bytes().to_vec();
        head.extend(f16::from_f32(-1.0).to_le_bytes());
        let (b, want) = crate::quant::q5_0::tests::hand_built(&head);
        let mut out = [0.0; 32];
        BlockQ5_1::to_float(&b, &mut out);
        for i in 0..32 {
            assert_eq!(out[i], want[i] as f32 * 0.25 - 1.0, "element {i}");
        }
        assert_eq!(std::mem::size_of::<BlockQ5_1>(), BlockQ5_1::BYTES);
    }
}
