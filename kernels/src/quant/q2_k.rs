use super::{blocks_to_float, bytes_at, f16_at, QK_K};
use half::f16;

/// Q2_K: a 256-weight super-block in 84 bytes, 2.625 bits per weight: 16 sub-blocks of 16
/// weights, each with a 4-bit scale and a 4-bit min.
///
/// ```text
/// offset  size  field
///      0    16  scales  sub-block s: scale in the low nibble of byte s, min in the high nibble
///     16    64  qs      2-bit quants, two halves of 128 weights in 32 bytes each: within a
///                       half, weight 32·k + l (k = 0..4, l = 0..32) is bits 2k..2k+2 of byte l
///     80     2  d       f16 super-block scale (of the scales)
///     82     2  dmin    f16 super-block scale of the mins
/// ```
/// Weight i lies in sub-block s = i / 16: x\[i\] = d · sc\[s\] · q\[i\] − dmin · m\[s\]
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}

impl BlockQ2K {
    pub const BYTES: usize = QK_K / 16 + QK_K / 4 + 4;

    /// The block at the start of `b` (`b.len() >= BYTES`).
    pub fn read(b: &[u8]) -> Self {
        BlockQ2K {
            scales: bytes_at(b, 0),
            qs: bytes_at(b, 16),
            d: f16_at(b, 80),
            dmin: f16_at(b, 82),
        }
    }

    pub fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (half, (q, out)) in self
            .qs
            .chunks_exact(32)
            .zip(out.chunks_exact_mut(128))
            .enumerate()
        {
            for (k, out) in out.chunks_exact_mut(32).enumerate() {
                let shift = 2 * k;
                // 32 weights of one shift are two sub-blocks of 16.
                for (sub, (q, out)) in q.chunks_exact(16).zip(out.chunks_exact_mut(16)).enumerate()
                {
                    let sc = self.scales[half * 8 + k * 2 + sub];
                    let dl = d * (sc & 0x0f) as f32;
                    let ml = dmin * (sc >> 4) as f32;
                    for (o, &b) in out.iter_mut().zip(q) {
                        *o = dl * ((b >> shift) & 3) as f32 - ml;
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
    fn hand_built_block() {
        // Weight i gets quant (i / 7) % 4; sub-block s has scale s % 16, min 15 - s.
        let q = |i: usize| ((i / 7) % 4) as u8;
        let mut b = vec![0u8; BlockQ2K::BYTES];
        for (s, b) in b[..16].iter_mut().enumerate() {
            *b = (s as u8 % 16) | ((15 - s as u8) << 4);
        }
        for i in 0..256 {
            let (half, k, l) = (i / 128, (i % 128) / 32, i % 32);
            b[16 + half * 32 + l] |= q(i) << (2 * k);
        }
        b[80..82].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[82..84].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        let mut out = [0.0; 256];
        BlockQ2K::to_float(&b, &mut out);
        for (i, &got) in out.iter().enumerate() {
            let s = i / 16;
            let want = 0.5 * (s % 16) as f32 * q(i) as f32 - 0.25 * (15 - s) as f32;
            assert_eq!(got, want, "weight {i}");
        }
        assert_eq!(std::mem::size_of::<BlockQ2K>(), BlockQ2K::BYTES);
    }
}
