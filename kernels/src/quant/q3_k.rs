use super::{blocks_to_float, bytes_at, f16_at, K_SCALE_SIZE, QK_K};
use half::f16;

/// Q3_K: a 256-weight super-block in 110 bytes, 3.4375 bits per weight: 16 sub-blocks of 16
/// weights, each with a signed 6-bit scale; symmetric (no mins).
///
/// ```text
/// offset  size  field
///      0    32  hmask   third bits: weight 32·k + l (k = 0..8, l = 0..32) has its high bit
///                       in bit k of byte l; a CLEAR bit means "subtract 4"
///     32    64  qs      low 2 bits, laid out like Q2_K's qs (two halves of 32 bytes; within a
///                       half, weight 32·k + l is bits 2k..2k+2 of byte l)
///     96    12  scales  sixteen 6-bit scales, stored +32: bytes 0..8 hold the low 4 bits
///                       (scale s in byte s % 8, low nibble for s < 8, high nibble after);
///                       bytes 8..12 hold the top 2 bits (scale s in bits 2·(s / 4) of
///                       byte 8 + s % 4)
///    108     2  d       f16 super-block scale
/// ```
/// Weight i in sub-block s = i / 16: x\[i\] = d · (sc\[s\] − 32) · (q\[i\] − (hbit ? 0 : 4))
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; K_SCALE_SIZE],
    pub d: f16,
}

impl BlockQ3K {
    pub const BYTES: usize = QK_K / 8 + QK_K / 4 + K_SCALE_SIZE + 2;

    /// The block at the start of `b` (`b.len() >= BYTES`).
    pub fn read(b: &[u8]) -> Self {
        BlockQ3K {
            hmask: bytes_at(b, 0),
            qs: bytes_at(b, 32),
            scales: bytes_at(b, 96),
            d: f16_at(b, 108),
        }
    }

    /// The sixteen scales, unpacked and with their +32 bias removed.
    pub fn unpacked_scales(packed: &[u8; K_SCALE_SIZE]) -> [i8; 16] {
        std::array::from_fn(|s| {
            let low = (packed[s % 8] >> (4 * (s / 8))) & 0x0f;
            let high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
            ((low | (high << 4)) as i8) - 32
        })
    }

    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let scales = Self::unpacked_scales(&self.scales);
        for (half, (q, out)) in self
            .qs
            .chunks_exact(32)
            .zip(out.chunks_exact_mut(128))
            .enumerate()
        {
            for (k, out) in out.chunks_exact_mut(32).enumerate() {
                let shift = 2 * k;
                let hbit = 1u8 << (half * 4 + k);
                for (sub, out) in out.chunks_exact_mut(16).enumerate() {
                    let dl = d * scales[half * 8 + k * 2 + sub] as f32;
                    for (l, o) in (sub * 16..).zip(out.iter_mut()) {
                        let low = ((q[l] >> shift) & 3) as i8;
                        let q3 = low - if self.hmask[l] & hbit != 0 { 0 } else { 4 };
                        *o = dl * q3 as f32;
                    }
                }
            }
        }
    }

    /// Dequantises whole super-blocks of `bytes` into `out` (256 floats per block).
    pub fn to_float(bytes: &[u8], out: &mut [f32]) {
        blocks_to_float(bytes, out, Self::BYTES, QK_K, |b, o| {
            Self::read(b).dequantize(o)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_unpack_like_ggml() {
        // ggml's kmask shuffle over the u32 words of the packed bytes, written out once here as
        // an independent check of the per-scale formula above.
        let packed: [u8; 12] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        let w = |i: usize| u32::from_le_bytes(packed[4 * i..4 * i + 4].try_into().unwrap());
        let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
        let (a0, a1, tmp) = (w(0), w(1), w(2));
        let aux = [
            (a0 & k2) | ((tmp & k1) << 4),
            (a1 & k2) | (((tmp >> 2) & k1) << 4),
            ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
            ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
        ];
        let want: Vec<i8> = aux
            .iter()
            .flat_map(|a| a.to_le_bytes())
            .map(|b| b as i8 - 32)
            .collect();
        assert_eq!(BlockQ3K::unpacked_scales(&packed).to_vec(), want);
    }

    #[test]
    fn hand_built_block() {
        // Weight i gets the 3-bit quant (i * 5) % 8 (stored as low 2 bits + high bit; value
        // q − 4); sub-block s has scale s − 32 + 3·s (stored +32).
        let q3 = |i: usize| ((i * 5) % 8) as i32 - 4;
        let sc = |s: usize| (s as i32 * 4 - 32) as i8;
        let mut b = vec![0u8; BlockQ3K::BYTES];
        for i in 0..256 {
            let (half, k, l) = (i / 128, (i % 128) / 32, i % 32);
            let q = (q3(i) + 4) as u8;
            b[32 + half * 32 + l] |= (q & 3) << (2 * k);
            b[l] |= (q >> 2) << (half * 4 + k);
        }
        for s in 0..16 {
            let v = (sc(s) as i32 + 32) as u8;
            b[96 + s % 8] |= (v & 0x0f) << (4 * (s / 8));
            b[96 + 8 + s % 4] |= (v >> 4) << (2 * (s / 4));
        }
        b[108..110].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        let mut out = [0.0; 256];
        BlockQ3K::to_float(&b, &mut out);
        for (i, &got) in out.iter().enumerate() {
            let want = 0.5 * sc(i / 16) as f32 * q3(i) as f32;
            assert_eq!(got, want, "weight {i}");
        }
        assert_eq!(std::mem::size_of::<BlockQ3K>(), BlockQ3K::BYTES);
    }
}
