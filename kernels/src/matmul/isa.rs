//! Which instruction set the kernels run on: detected once at run time, so one binary serves
//! every x86-64 (and aarch64) machine.

use std::sync::OnceLock;

/// A level of SIMD support. Each level implies the ones listed before it on its architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust: always works, the reference every other path is tested against.
    Scalar,
    /// aarch64 Advanced SIMD (always present on aarch64).
    Neon,
    /// aarch64 Advanced SIMD with the int8 dot product (SDOT, FEAT_DotProd): Neoverse N1 and
    /// later, Apple M1 and later. Below `Avx2` like `Neon`, so no `isa >= Isa::Avx2` test
    /// ever sends an aarch64 level down an x86 path.
    NeonDot,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL (+ the AVX2 set).
    Avx512,
    /// AVX-512 with VNNI (VPDPBUSD) for the integer dot products.
    Avx512Vnni,
}

impl Isa {
    /// The best level this machine supports (cached). `QUIVER_ISA=scalar|neon|neondot|avx2|avx512`
    /// caps it, which helps compare paths on one machine.
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let best = *Isa::available().last().unwrap_or(&Isa::Scalar);
            let cap = match std::env::var("QUIVER_ISA").ok().as_deref() {
                Some("scalar") => Isa::Scalar,
                Some("neon") => Isa::Neon,
                Some("neondot") => Isa::NeonDot,
                Some("avx2") => Isa::Avx2,
                Some("avx512") => Isa::Avx512,
                _ => Isa::Avx512Vnni,
            };
            best.min(cap)
        })
    }

    /// Every level this machine can run, lowest first (tests run each of them).
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                v.push(Isa::Avx2);
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                {
                    v.push(Isa::Avx512);
                    if is_x86_feature_detected!("avx512vnni") {
                        v.push(Isa::Avx512Vnni);
                    }
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                v.push(Isa::Neon);
                if std::arch::is_aarch64_feature_detected!("dotprod") {
                    v.push(Isa::NeonDot);
                }
            }
        }
        v
    }

    /// Whether this is one of the aarch64 levels (the NEON kernels apply).
    pub fn is_neon(self) -> bool {
        matches!(self, Isa::Neon | Isa::NeonDot)
    }
}

#[cfg(test)]
mod tests {
    use super::Isa;

    /// The aarch64 levels sit below every x86 one, so `isa >= Isa::Avx2` style tests in the
    /// kernels can never pick an x86 path for them.
    #[test]
    fn neon_levels_order_below_x86() {
        for isa in [Isa::Neon, Isa::NeonDot] {
            assert!(isa > Isa::Scalar && isa < Isa::Avx2 && isa.is_neon());
        }
        assert!(!Isa::Scalar.is_neon() && !Isa::Avx2.is_neon());
    }

    /// On aarch64 the NEON levels are found (so the tests looping over `available` run the
    /// NEON kernels, and the dot-product ones where the core has SDOT).
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn aarch64_detects_neon() {
        let v = Isa::available();
        assert!(v.contains(&Isa::Neon), "{v:?}");
        assert_eq!(
            v.contains(&Isa::NeonDot),
            std::arch::is_aarch64_feature_detected!("dotprod"),
            "{v:?}"
        );
        eprintln!("aarch64 ISA levels under test: {v:?}");
    }
}
