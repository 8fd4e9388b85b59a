use super::{blocks_to_float, bytes_at, f16_at, scale_min_k4, K_SCALE_SIZE, QK_K};
use half::f16;

/// Q5_K: a 256-weight super-block in 176 bytes, 5.5 bits per weight: Q4_K plus a fifth bit.
///
/// ```text
/// offset  size  field
///      0     2  d       f16 super-block scale of the scales
///      2     2  dmin    f16 super-block scale of the mins
///      4    12  scales  eight 6-bit scales and mins, packed as in Q4_K
///     16    32  qh      fifth bits: weight 32·s + l (sub-block s, l = 0..32) has its bit 4
///                       in bit s of byte l
///     48   128  qs      low 4 bits, laid out as Q4_K's qs
/// ```
/// Weight i in sub-block s = i / 32: x\[i\] = d · sc\[s\] · q\[i\] − dmin · m\[s\]
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

impl BlockQ5K {
    pub const BYTES: usize = 4 + K_SCALE_SIZE + QK_K / 8 + QK_K / 2;

    /// The block at the start of `b` (`b.len() >= BYTES`).
    pub fn read(b: &[u8]) -> Self {
        BlockQ5K {
            d: f16_at(b, 0),
            dmin: f16_at(b, 2),
            scales: bytes_at(b, 4),
            qh: bytes_at(b, 16),
            qs: bytes_at(b, 48),
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
            let (u1, u2) = (1u8 << (2 * c), 1u8 << (2 * c + 1));
            let (lo, hi) = out.split_at_mut(32);
            for (l, (o, p)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
                let h1 = if self.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if self.qh[l] & u2 != 0 { 16 } else { 0 };
                *o = d1 * ((q[l] & 0x0f) + h1) as f32 - m1;
                *p = d2 * ((q[l] >> 4) + h2) as f32 - m2;
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
    use crate::quant::q4_k::pack_scale_min_k4;

    #[test]
    fn hand_built_block() {
        let q = |i: usize| ((i * 13 + 7) % 32) as u8;
        let sc: [u8; 8] = [1, 63, 17, 42, 60, 2, 48, 31];
        let m: [u8; 8] = [63, 0, 5, 60, 33, 62, 16, 15];
        let mut b = vec![0u8; BlockQ5K::BYTES];
        b[0..2].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[4..16].copy_from_slice(&pack_scale_min_k4(sc, m));
        for i in 0..256 {
            let (s, l) = (i / 32, i % 32);
            b[48 + (s / 2) * 32 + l] |= (q(i) & 0x0f) << (4 * (s % 2));
            b[16 + l] |= (q(i) >> 4) << s;
        }
        let mut out = [0.0; 256];
        BlockQ5K::to_float(&b, &mut out);
        for (i, &got) in out.iter().enumerate() {
            let s = i / 32;
            let want = 0.25 * sc[s] as f32 * q(i) as f32 - 0.5 * m[s] as f32;
            assert_eq!(got, want, "weight {i}");
        }
        assert_eq!(std::mem::size_of::<BlockQ5K>(), BlockQ5K::BYTES);
    }
}
