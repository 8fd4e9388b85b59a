use super::{blocks_to_float, bytes_at, f16_at, QK_K};
use half::f16;

/// Q6_K: a 256-weight super-block in 210 bytes, 6.5625 bits per weight: 16 sub-blocks of 16
/// weights, each with a signed 8-bit scale; symmetric.
///
/// ```text
/// offset  size  field
///      0   128  ql      low 4 bits, two halves of 128 weights in 64 bytes each: within a
///                       half, weight l (l = 0..32) is the low nibble of byte l, weight 32 + l
///                       of byte 32 + l, weight 64 + l the high nibble of byte l, weight
///                       96 + l the high nibble of byte 32 + l
///    128    64  qh      high 2 bits, two halves of 32 bytes: within a half, weight 32·k + l
///                       is bits 2k..2k+2 of byte l
///    192    16  scales  i8 scale of sub-block s (weights 16·s .. 16·s + 16)
///    208     2  d       f16 super-block scale
/// ```
/// Weight i in sub-block s = i / 16: x\[i\] = d · sc\[s\] · (q\[i\] − 32)
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

impl BlockQ6K {
    pub const BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;

    /// The block at the start of `b` (`b.len() >= BYTES`).
    pub fn read(b: &[u8]) -> Self {
        BlockQ6K {
            ql: bytes_at(b, 0),
            qh: bytes_at(b, 128),
            scales: bytes_at::<16>(b, 192).map(|s| s as i8),
            d: f16_at(b, 208),
        }
    }

    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (half, out) in out.chunks_exact_mut(128).enumerate() {
            let ql = &self.ql[half * 64..half * 64 + 64];
            let qh = &self.qh[half * 32..half * 32 + 32];
            let sc = &self.scales[half * 8..half * 8 + 8];
            for l in 0..32 {
                let q = |low: u8, k: usize| ((low | (((qh[l] >> (2 * k)) & 3) << 4)) as i8) - 32;
                let qs = [
                    q(ql[l] & 0x0f, 0),
                    q(ql[l + 32] & 0x0f, 1),
                    q(ql[l] >> 4, 2),
                    q(ql[l + 32] >> 4, 3),
                ];
                for (k, qk) in qs.into_iter().enumerate() {
                    // Sub-block (32·k + l) / 16 of this half.
                    out[32 * k + l] = d * sc[2 * k + l / 16] as f32 * qk as f32;
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
        let q = |i: usize| ((i * 29 + 3) % 64) as u8;
        let sc = |s: usize| (s as i32 * 9 - 70) as i8;
        let mut b = vec![0u8; BlockQ6K::BYTES];
        for i in 0..256 {
            let (half, k, l) = (i / 128, (i % 128) / 32, i % 32);
            let byte = half * 64 + l + 32 * (k % 2);
            b[byte] |= (q(i) & 0x0f) << (4 * (k / 2));
            b[128 + half * 32 + l] |= (q(i) >> 4) << (2 * k);
        }
        for s in 0..16 {
            b[192 + s] = sc(s) as u8;
        }
        b[208..210].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        let mut out = [0.0; 256];
        BlockQ6K::to_float(&b, &mut out);
        for (i, &got) in out.iter().enumerate() {
            let want = 0.5 * sc(i / 16) as f32 * (q(i) as f32 - 32.0);
            assert_eq!(got, want, "weight {i}");
        }
        assert_eq!(std::mem::size_of::<BlockQ6K>(), BlockQ6K::BYTES);
    }
}
