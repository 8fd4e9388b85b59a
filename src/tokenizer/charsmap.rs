//! SentencePiece's precompiled normalisation map (`tokenizer.ggml.precompiled_charsmap`): a
//! trie from input byte strings to replacement strings, compiled by SentencePiece from its
//! `nmt_nfkc` rules (NFKC plus whitespace and control-character clean-up).
//!
//! Layout: a little-endian u32 `n`, then `n` bytes of trie units (u32 each, a darts-clone
//! XOR-compressed double array), then the replacement strings, each NUL-terminated. A unit packs
//! LCHECK (its label) in bits 0-7 (bit 31 set on value units so that no label matches them),
//! LEAF in bit 8, and BASE in bits 10-30, shifted left 8 more when bit 9 is set. The child of
//! the node whose offset is `s` under byte `c` is unit `s ^ c`, its own offset is
//! `(s ^ c) ^ BASE`, and a leaf's value (an offset into the strings) sits in the unit at that
//! offset.
//!
//! The whole trie is walked once when the map is loaded, so that a malformed map is a
//! `TokenizerError` then, and matching later never reads outside the units or the strings.

use super::TokenizerError;

pub struct Charsmap {
    units: Vec<u32>,
    strings: Vec<u8>,
}

fn invalid(why: &str) -> TokenizerError {
    TokenizerError::Invalid(format!("precompiled_charsmap: {why}"))
}

impl Charsmap {
    pub fn parse(bytes: &[u8]) -> Result<Charsmap, TokenizerError> {
        let Some((head, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(invalid("shorter than its 4-byte header"));
        };
        let n = u32::from_le_bytes(*head) as usize;
        if !n.is_multiple_of(4) || n == 0 || n >= rest.len() {
            return Err(invalid(&format!(
                "trie of {n} bytes does not fit a map of {} bytes",
                bytes.len()
            )));
        }
        let units = rest[..n]
            .chunks_exact(4)
            .map(|u| u32::from_le_bytes([u[0], u[1], u[2], u[3]]))
            .collect();
        let map = Charsmap {
            units,
            strings: rest[n..].to_vec(),
        };
        map.validate()?;
        Ok(map)
    }

    fn base(u: u32) -> usize {
        ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize
    }

    fn label(u: u32) -> u32 {
        u & ((1 << 31) | 0xff)
    }

    fn is_leaf(u: u32) -> bool {
        (u >> 8) & 1 == 1
    }

    fn value(u: u32) -> usize {
        (u & ((1 << 31) - 1)) as usize
    }

    /// The child of the node at offset `s` under byte `c`: (its offset, whether it ends a key).
    fn child(&self, s: usize, c: u8) -> Option<(usize, bool)> {
        let i = s ^ c as usize;
        let u = *self.units.get(i)?;
        if Self::label(u) != c as u32 {
            return None;
        }
        Some((i ^ Self::base(u), Self::is_leaf(u)))
    }

    /// The replacement string that starts at `off`, without its NUL.
    fn string_at(&self, off: usize) -> Option<&[u8]> {
        let tail = self.strings.get(off..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        Some(&tail[..end])
    }

    /// The replacement stored at a leaf whose offset is `s`.
    fn leaf_string(&self, s: usize) -> Option<&[u8]> {
        self.string_at(Self::value(*self.units.get(s)?))
    }

    /// Walks every reachable node once, checking that every leaf names a terminated string.
    /// Nodes may be reached more than once (the builder shares common suffixes, a DAWG), and a
    /// malformed map may even loop; matching consumes a byte per step, so neither can hang it.
    fn validate(&self) -> Result<(), TokenizerError> {
        let root = Self::base(self.units[0]);
        let mut seen = vec![false; self.units.len()];
        let mut stack = vec![root];
        while let Some(s) = stack.pop() {
            for c in 1..=255u8 {
                let Some((next, leaf)) = self.child(s, c) else {
                    continue;
                };
                if leaf && self.leaf_string(next).is_none() {
                    return Err(invalid("a leaf names no terminated replacement string"));
                }
                // A node past the units has no children: reading them would only stop a walk.
                if let Some(seen @ false) = seen.get_mut(next) {
                    *seen = true;
                    stack.push(next);
                }
            }
        }
        Ok(())
    }

    /// The longest key that `input` starts with: (its length in bytes, its replacement).
    /// The replacement may be empty (the key is deleted).
    pub fn longest_match(&self, input: &[u8]) -> Option<(usize, &[u8])> {
        let mut s = Self::base(self.units[0]);
        let mut best = None;
        for (i, &c) in input.iter().enumerate() {
            // Keys never hold NUL: SentencePiece stops there too.
            if c == 0 {
                break;
            }
            let Some((next, leaf)) = self.child(s, c) else {
                break;
            };
            s = next;
            if leaf {
                best = Some((i + 1, s));
            }
        }
        let (len, leaf) = best?;
        Some((len, self.leaf_string(leaf)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map with one key: "a" → "xy". Root unit 0 has base 1; "a" (0x61) is unit 1 ^ 0x61 =
    /// 0x60, a leaf with base 0x62 so that its offset is 0x60 ^ 0x62 = 2; unit 2 holds the
    /// value 0 (the strings' first).
    fn one_key() -> Vec<u8> {
        let mut units = vec![0u32; 0x80];
        units[0] = 1 << 10;
        units[0x60] = (0x62 << 10) | (1 << 8) | 0x61;
        units[2] = 1 << 31; // value unit: offset 0 into the strings, label never matches
        let mut bytes = ((units.len() * 4) as u32).to_le_bytes().to_vec();
        for u in units {
            bytes.extend(u.to_le_bytes());
        }
        bytes.extend(b"xy\0");
        bytes
    }

    #[test]
    fn finds_a_key_and_its_replacement() {
        let m = Charsmap::parse(&one_key()).unwrap();
        assert_eq!(m.longest_match(b"ab"), Some((1, &b"xy"[..])));
        assert_eq!(m.longest_match(b"b"), None);
        assert_eq!(m.longest_match(b""), None);
    }

    #[test]
    fn malformed_maps_are_errors_not_panics() {
        let good = one_key();
        // Too short, a trie size past the end, a size that is not a multiple of 4.
        for bad in [&good[..3], &[255, 255, 255, 255, 0][..]] {
            assert!(Charsmap::parse(bad).is_err());
        }
        let mut odd = good.clone();
        odd[0] = 3;
        assert!(Charsmap::parse(&odd).is_err());
        // The replacement's NUL missing.
        assert!(Charsmap::parse(&good[..good.len() - 1]).is_err());
        // The leaf's value pointing past the strings.
        let mut far = good.clone();
        far[4 + 2 * 4..4 + 3 * 4].copy_from_slice(&((1u32 << 31) | 1000).to_le_bytes());
        assert!(Charsmap::parse(&far).is_err());
        // Every truncation and every single-byte corruption: an error or a map that matches safely.
        for cut in 0..good.len() {
            if let Ok(m) = Charsmap::parse(&good[..cut]) {
                m.longest_match(b"aaa");
            }
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 0x61, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                if let Ok(m) = Charsmap::parse(&b) {
                    for input in [&b"a"[..], b"ab", b"\xff\x61"] {
                        m.longest_match(input);
                    }
                }
            }
        }
    }

    #[test]
    fn a_looping_map_loads_and_matches_in_bounded_time() {
        // Root offset 1; "a" is unit 0x60, a leaf whose offset is 1 again: "a", "aa", … all
        // match, through one node. The value unit is the root's own (units[1]: offset 0).
        let mut units = vec![0u32; 0x80];
        units[0] = 1 << 10;
        units[1] = 1 << 31;
        units[0x60] = (0x61 << 10) | (1 << 8) | 0x61;
        let mut bytes = ((units.len() * 4) as u32).to_le_bytes().to_vec();
        for u in units {
            bytes.extend(u.to_le_bytes());
        }
        bytes.extend(b"z\0");
        let m = Charsmap::parse(&bytes).unwrap();
        assert_eq!(m.longest_match(&[b'a'; 10_000]), Some((10_000, &b"z"[..])));
    }
}
