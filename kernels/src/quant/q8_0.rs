use super::{blocks_to_float, bytes_at, f16_at, QK};
use half::f16;

/// Q8_0: 32 weights in 34 bytes, 8.5 bits per weight.
///
/// ```text
/// offset  size  field
///      0     2  d   f16 scale
///      2    32  qs  i8 quants, element i in byte i
/// ```
/// x\[i\] = d · qs\[i\]
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

impl BlockQ8_0 {
    pub const BYTES: usize = 2 + QK;

    /// The block at the start of `b` (`b.len() >= BYTES`).
    pub fn read(b: &[u8]) -> Self {
        BlockQ8_0 {
            d: f16_at(b, 0),
            qs: bytes_at::<QK>(b, 2).map(|q| q as i8),
        }
    }

    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out[..QK].iter_mut().zip(&self.qs) {
            *o = d * q as f32;
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
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut out = [0.0; 32];
        BlockQ8_0::to_float(&b, &mut out);
        let want: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
        assert_eq!(out.to_vec(), want);
        assert_eq!(std::mem::size_of::<BlockQ8_0>(), BlockQ8_0::BYTES);
    }
}
