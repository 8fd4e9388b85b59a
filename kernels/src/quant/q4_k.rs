use super::{blocks_to_float, bytes_at, f16_at, scale_min_k4, K_SCALE_SIZE, QK_K};
use half::f16;

/// Q4_K: a 256-weight super-block in 144 bytes, 4.5 bits per weight: 8 sub-blocks of 32
/// weights, each with a 6-bit scale and a 6-bit min.
///
/// ```text
/// offset  size  field
///      0     2  d       f16 super-block scale of the scales
///      2     2  dmin    f16 super-block scale of the mins
///      4    12  scales  eight 6-bit scales and eight 6-bit mins (see `scale_min_k4`): bytes
///                       0..4 scales 0..3, bytes 4..8 mins 0..3 (low 6 bits); bytes 8..12
///                       scale 4+j low nibble / min 4+j high nibble, their top 2 bits in the
///                       top 2 bits of bytes j (scales) and 4+j (mins)
///     16   128  qs      4-bit quants in four chunks of 32 bytes: chunk c holds sub-block 2c
///                       in the low nibbles and sub-block 2c+1 in the high nibbles
/// ```
/// Weight i in sub-block s = i / 32: x\[i\] = d · sc\[s\] · q\[i\] − dmin · m\[s\]
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

impl BlockQ4K {
    pub const BYTES: usize = 4 + K_SCALE_SIZE + QK_K / 2;

    /// The block at the start of `b` (`b.len() >= BYTES`).
    pub fn read(b: &[u8]) -> Self {
        BlockQ4K {
            d: f16_at(b, 0),
            dmin: f16_at(b, 2),
            scales: bytes_at(b, 4),
            qs: bytes_at(b, 16),
        }
    }

    pub fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (c, (q, out)) in self
            .qs
            .chunks_exact(32)
            .zip(out.chunks_exact_mut(64))
            .enumerate()
        {
            let (sc1, m1) = scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            let (lo, hi) = out.split_at_mut(32);
            for ((o, &b), p) in lo.iter_mut().zip(q).zip(hi.iter_mut()) {
                *o = d1 * (b & 0x0f) as f32 - m1;
                *p = d2 * (b >> 4) as f32 - m2;
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

/// Packs eight 6-bit scales and mins the way `scale_min_k4` reads them (test helper).
#[cfg(test)]
pub(crate) fn pack_scale_min_k4(sc: [u8; 8], m: [u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut p = [0u8; K_SCALE_SIZE];
    for j in 0..4 {
        p[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        p[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        p[j + 8] = (sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_and_mins_round_trip() {
        let sc: [u8; 8] = [0, 63, 17, 42, 63, 1, 48, 31];
        let m: [u8; 8] = [63, 0, 5, 60, 33, 62, 16, 15];
        let p = pack_scale_min_k4(sc, m);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &p), (sc[j], m[j]), "sub-block {j}");
        }
    }

    #[test]
    fn hand_built_block() {
        let q = |i: usize| ((i * 11 + 5) % 16) as u8;
        let sc: [u8; 8] = [1, 63, 17, 42, 60, 2, 48, 31];
        let m: [u8; 8] = [63, 0, 5, 60, 33, 62, 16, 15];
        let mut b = vec![0u8; BlockQ4K::BYTES];
        b[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(0.125).to_le_bytes());
        b[4..16].copy_from_slice(&pack_scale_min_k4(sc, m));
        for i in 0..256 {
            let (s, l) = (i / 32, i % 32);
            b[16 + (s / 2) * 32 + l] |= q(i) << (4 * (s % 2));
        }
        let mut out = [0.0; 256];
        BlockQ4K::to_float(&b, &mut out);
        for (i, &got) in out.iter().enumerate() {
            let s = i / 32;
            let want = 0.5 * sc[s] as f32 * q(i) as f32 - 0.125 * m[s] as f32;
            assert_eq!(got, want, "weight {i}");
        }
        assert_eq!(std::mem::size_of::<BlockQ4K>(), BlockQ4K::BYTES);
    }
}
