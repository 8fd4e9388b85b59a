use super::{blocks_to_float, bytes_at, f16_at, QK};
use half::f16;

/// Q5_0: 32 weights in 22 bytes, 5.5 bits per weight, symmetric.
///
/// ```text
/// offset  size  field
///      0     2  d   f16 scale
///      2     4  qh  fifth bits: bit i of this little-endian u32 is bit 4 of element i
///      6    16  qs  low 4 bits: byte j holds element j in its low nibble
///                   and element j + 16 in its high nibble
/// ```
/// x\[i\] = d · (q\[i\] − 16)
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

impl BlockQ5_0 {
    pub const BYTES: usize = 2 + 4 + QK / 2;

    /// The block at the start of `b` (`b.len() >= BYTES`).
    pub fn read(b: &[u8]) -> Self {
        BlockQ5_0 {
            d: f16_at(b, 0),
            qh: bytes_at(b, 2),
            qs: bytes_at(b, 6),
        }
    }

    /// The 5-bit quants 0..32, in element order.
    pub fn quants(qh: [u8; 4], qs: &[u8; QK / 2]) -> [u8; QK] {
        let qh = u32::from_le_bytes(qh);
        let mut q = [0u8; QK];
        for (j, &b) in qs.iter().enumerate() {
            let hi0 = ((qh >> j) & 1) as u8;
            let hi1 = ((qh >> (j + QK / 2)) & 1) as u8;
            q[j] = (b & 0x0f) | (hi0 << 4);
            q[j + QK / 2] = (b >> 4) | (hi1 << 4);
        }
        q
    }

    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, q) in out[..QK].iter_mut().zip(Self::quants(self.qh, &self.qs)) {
            *o = d * (q as i32 - 16) as f32;
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
pub(crate) mod tests {
    use super::*;

    /// `head` (the scale fields) followed by qh and qs packing quants that visit all 32 values
    /// 0..32, so every nibble position and every bit of qh is exercised. Returns the quants.
    pub(crate) fn hand_built(head: &[u8]) -> (Vec<u8>, [u8; 32]) {
        let want: [u8; 32] = std::array::from_fn(|i| ((i * 7 + 3) % 32) as u8);
        let mut qh = 0u32;
        let mut qs = [0u8; 16];
        for (i, &q) in want.iter().enumerate() {
            qh |= ((q >> 4) as u32) << i;
            qs[i % 16] |= (q & 0x0f) << (4 * (i / 16));
        }
        let mut b = head.to_vec();
        b.extend(qh.to_le_bytes());
        b.extend(qs);
        (b, want)
    }

    #[test]
    fn hand_built_block() {
        let (b, want) = hand_built(&f16::from_f32(0.125).to_le_bytes());
        let mut out = [0.0; 32];
        BlockQ5_0::to_float(&b, &mut out);
        for i in 0..32 {
            assert_eq!(out[i], (want[i] as f32 - 16.0) * 0.125, "element {i}");
        }
        assert_eq!(std::mem::size_of::<BlockQ5_0>(), BlockQ5_0::BYTES);
    }
}
