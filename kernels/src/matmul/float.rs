//! The float path: y = x · Wᵀ for f32 / f16 / bf16 weights. Blocks of weight rows are packed
//! into f32 panels (pack.rs) and an MR × NR register-blocked FMA micro-kernel sweeps them.
//!
//! Blocking: a task owns a block of output columns (NB, a few panels) and a block of activation
//! rows; it walks k in chunks of KC so the packed block (NB × KC f32) stays in L2 while each
//! MR-row slice of x (MR × KC) stays in L1 across the panels.

use super::isa::Isa;
use super::pack::{pack_panels, NR};
use super::{FloatFormat, SendPtr, TaskGrid};
use rayon::prelude::*;
use std::cell::RefCell;

/// Depth of one k chunk.
pub const KC: usize = 384;

thread_local! {
    /// Packed panels (and one converted row) of the task running on this thread: reused so
    /// the hot path allocates nothing after warm-up.
    static PANELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows of the micro-kernel for an ISA.
pub(crate) fn mr_for(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 | Isa::Avx512Vnni => 8,
        Isa::Avx2 => 6,
        Isa::Neon | Isa::NeonDot => 8,
        _ => 4,
    }
}

/// y[m×n] = x[m×k] · Wᵀ, W given as `n` rows of `k` values of `fmt` in `data`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_float(
    isa: Isa,
    fmt: FloatFormat,
    x: &[f32],
    m: usize,
    data: &[u8],
    n: usize,
    k: usize,
    y: &mut [f32],
) {
    let row_bytes = k * fmt.bytes();
    let mr = mr_for(isa);
    // Few rows: small column blocks so every thread gets work; many rows: wider blocks so the
    // packing cost is spread over more rows.
    let nb = if m <= 4 * mr { NR } else { 2 * NR };
    let nblocks = n.div_ceil(nb);
    let want = 4 * rayon::current_num_threads();
    let mblocks = want.div_ceil(nblocks).clamp(1, m.div_ceil(mr * 8).max(1));
    let mb = m.div_ceil(mblocks).div_ceil(mr) * mr;
    let mblocks = m.div_ceil(mb);
    let yp = SendPtr(y.as_mut_ptr());
    (0..nblocks * mblocks).into_par_iter().for_each(|t| {
        let (jb, ib) = (t % nblocks, t / nblocks);
        let (j0, i0) = (jb * nb, ib * mb);
        let (ncols, nrows) = (nb.min(n - j0), mb.min(m - i0));
        PANELS.with(|cell| {
            let mut buf = cell.borrow_mut();
            let panel_len = ncols.div_ceil(NR) * NR * KC;
            if buf.len() < panel_len + KC {
                buf.resize(panel_len + KC, 0.0);
            }
            let (panels, tmp) = buf.split_at_mut(panel_len);
            let mut p0 = 0;
            while p0 < k {
                let kc = KC.min(k - p0);
                pack_panels(isa, fmt, data, row_bytes, j0, ncols, p0, kc, tmp, panels);
                let mut i = 0;
                while i < nrows {
                    let r = mr.min(nrows - i);
                    for s in 0..ncols.div_ceil(NR) {
                        let nvalid = NR.min(ncols - s * NR);
                        // SAFETY: the tile rows i0+i..+r, columns j0+s·NR..+nvalid lie inside y
                        // and belong to this task alone; a and b cover r rows / kc·NR floats.
                        unsafe {
                            let a = x.as_ptr().add((i0 + i) * k + p0);
                            let b = panels.as_ptr().add(s * kc * NR);
                            let c = yp.get().add((i0 + i) * n + j0 + s * NR);
                            tile(isa, r, a, k, b, kc, c, n, nvalid, p0 > 0);
                        }
                    }
                    i += r;
                }
                p0 += kc;
            }
        });
    });
}

/// Float weights converted once into the panels [`matmul_float`] packs on every call (panel
/// after panel, each with its k chunks of [`KC`] one after another, `kc × NR` f32 each), for
/// weights multiplied many times: a model's F32 layer matrices. Per-call packing cost 5× the
/// product itself for one query row (1 × 576 × 1536: 850 µs against 180 µs for the
/// dot-product path it replaced).
pub struct PackedF32 {
    pub n: usize,
    pub k: usize,
    panels: Vec<f32>,
}

impl PackedF32 {
    /// Packs `n` rows of `k` values of `fmt` from `data` (row after row).
    pub fn pack(fmt: FloatFormat, data: &[u8], n: usize, k: usize) -> PackedF32 {
        let row_bytes = k * fmt.bytes();
        assert_eq!(data.len(), n * row_bytes, "PackedF32::pack: weight bytes");
        let mut panels = vec![0.0f32; n.div_ceil(NR) * k * NR];
        if k > 0 {
            panels
                .par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(s, panel)| {
                    let (j0, mut tmp) = (s * NR, vec![0.0f32; KC]);
                    for p0 in (0..k).step_by(KC) {
                        let kc = KC.min(k - p0);
                        let out = &mut panel[p0 * NR..(p0 + kc) * NR];
                        let nb = NR.min(n - j0);
                        pack_panels(
                            Isa::detect(),
                            fmt,
                            data,
                            row_bytes,
                            j0,
                            nb,
                            p0,
                            kc,
                            &mut tmp,
                            out,
                        );
                    }
                });
        }
        PackedF32 { n, k, panels }
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.panels.len() * 4
    }
}

/// y[m×n] = x[m×k] · Wᵀ over weights packed by [`PackedF32::pack`]: the tiles of
/// [`matmul_float`] (the same k chunks in the same order, the same micro-kernel), so the same
/// bits, without its packing; the tasks of a `TaskGrid`.
pub fn matmul_float_packed(isa: Isa, x: &[f32], m: usize, w: &PackedF32, y: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    assert_eq!(x.len(), m * k, "matmul_float_packed: x is not m×k");
    assert_eq!(y.len(), m * n, "matmul_float_packed: y is not m×n");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let mr = mr_for(isa);
    let grid = TaskGrid::new(m, mr, n.div_ceil(NR));
    let yp = SendPtr(y.as_mut_ptr());
    (0..grid.tasks()).into_par_iter().for_each(|t| {
        let (i0, nrows, panels) = grid.task(t);
        for s in panels {
            let nvalid = NR.min(n - s * NR);
            let panel = &w.panels[s * k * NR..(s + 1) * k * NR];
            for p0 in (0..k).step_by(KC) {
                let kc = KC.min(k - p0);
                let mut i = 0;
                while i < nrows {
                    let r = mr.min(nrows - i);
                    // SAFETY: rows i0+i..+r and columns s·NR..+nvalid of y belong to this task
                    // (`TaskGrid`); a covers r rows of kc values, b kc·NR floats of the panel.
                    unsafe {
                        let a = x.as_ptr().add((i0 + i) * k + p0);
                        let b = panel.as_ptr().add(p0 * NR);
                        let c = yp.get().add((i0 + i) * n + s * NR);
                        tile(isa, r, a, k, b, kc, c, n, nvalid, p0 > 0);
                    }
                    i += r;
                }
            }
        }
    });
}

/// One r × NR tile (r ≤ MR): c[0..r][0..nvalid] (+)= a[0..r][0..kc] · panel.
///
/// # Safety
/// `a` must cover r rows of stride `lda` with kc values, `b` kc·NR floats, `c` r rows of stride
/// `ldc` with nvalid values; the ISA must be supported.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile(
    isa: Isa,
    r: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nvalid: usize,
    acc: bool,
) {
    // Arguments are passed explicitly: macro hygiene would otherwise ignore shadowed names.
    macro_rules! by_rows {
        ($f:ident, $b:expr, $c:expr, $nv:expr, $($n:literal)*) => {
            match r { $($n => $f::<$n>(a, lda, $b, kc, $c, ldc, $nv, acc),)* _ => unreachable!() }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => by_rows!(kernel_avx512, b, c, nvalid, 1 2 3 4 5 6 7 8),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // Two halves of 16 columns, so 6 rows × 2 vectors of accumulators fit 16 registers.
            by_rows!(kernel_avx2, b, c, nvalid, 1 2 3 4 5 6);
            if nvalid > 16 {
                by_rows!(kernel_avx2, b.add(16), c.add(16), nvalid - 16, 1 2 3 4 5 6);
            }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot => {
            // Four quarters of 8 columns (see kernel_neon); quarters wholly past nvalid (a
            // short last panel, a short attention row) are skipped. SAFETY: the caller's
            // contract; quarter q reads columns q..q+8 of each panel line and writes only its
            // nvalid - q valid columns of c.
            for q in (0..nvalid).step_by(8) {
                by_rows!(kernel_neon, b.add(q), c.add(q), nvalid - q, 1 2 3 4 5 6 7 8);
            }
        }
        _ => kernel_scalar(r, a, lda, b, kc, c, ldc, nvalid, acc),
    }
}

/// The reference micro-kernel: the same tile, plain loops.
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_scalar(
    r: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nvalid: usize,
    acc: bool,
) {
    for i in 0..r {
        let mut sums = [0.0f32; NR];
        for p in 0..kc {
            let av = *a.add(i * lda + p);
            for (j, s) in sums.iter_mut().enumerate() {
                *s += av * *b.add(p * NR + j);
            }
        }
        for (j, &s) in sums.iter().enumerate().take(nvalid) {
            let cp = c.add(i * ldc + j);
            *cp = if acc { *cp + s } else { s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512<const R: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nvalid: usize,
    acc: bool,
) {
    use std::arch::x86_64::*;
    let mut s0 = [_mm512_setzero_ps(); R];
    let mut s1 = [_mm512_setzero_ps(); R];
    for p in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(p * NR));
        let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
        for i in 0..R {
            let av = _mm512_set1_ps(*a.add(i * lda + p));
            s0[i] = _mm512_fmadd_ps(av, b0, s0[i]);
            s1[i] = _mm512_fmadd_ps(av, b1, s1[i]);
        }
    }
    let m0: __mmask16 = if nvalid >= 16 {
        0xffff
    } else {
        (1u16 << nvalid) - 1
    };
    let m1: __mmask16 = if nvalid >= 32 {
        0xffff
    } else if nvalid > 16 {
        (1u16 << (nvalid - 16)) - 1
    } else {
        0
    };
    for i in 0..R {
        let cp = c.add(i * ldc);
        let (mut v0, mut v1) = (s0[i], s1[i]);
        if acc {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cp));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cp.add(16)));
        }
        _mm512_mask_storeu_ps(cp, m0, v0);
        _mm512_mask_storeu_ps(cp.add(16), m1, v1);
    }
}

/// AVX2: R rows × the first 16 columns of the panel (`b` may point at column 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx2<const R: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nvalid: usize,
    acc: bool,
) {
    use std::arch::x86_64::*;
    let mut s0 = [_mm256_setzero_ps(); R];
    let mut s1 = [_mm256_setzero_ps(); R];
    for p in 0..kc {
        let b0 = _mm256_loadu_ps(b.add(p * NR));
        let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
        for i in 0..R {
            let av = _mm256_broadcast_ss(&*a.add(i * lda + p));
            s0[i] = _mm256_fmadd_ps(av, b0, s0[i]);
            s1[i] = _mm256_fmadd_ps(av, b1, s1[i]);
        }
    }
    for i in 0..R {
        let cp = c.add(i * ldc);
        if nvalid >= 16 {
            let (mut v0, mut v1) = (s0[i], s1[i]);
            if acc {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cp));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cp.add(8)));
            }
            _mm256_storeu_ps(cp, v0);
            _mm256_storeu_ps(cp.add(8), v1);
        } else {
            let mut t = [0.0f32; 16];
            _mm256_storeu_ps(t.as_mut_ptr(), s0[i]);
            _mm256_storeu_ps(t.as_mut_ptr().add(8), s1[i]);
            for (j, &v) in t.iter().enumerate().take(nvalid) {
                *cp.add(j) = if acc { *cp.add(j) + v } else { v };
            }
        }
    }
}

/// NEON: R ≤ 8 rows × 8 columns (a quarter of the panel, `b` pointing at its first column).
///
/// Four steps of k at a time: one 4-float load per row of `a`, then for each step the panel's
/// two 4-column vectors times lane l of that load (FMLA by element), so the activations need
/// no broadcast. Registers: 16 accumulators + 8 `a` vectors + 2 panel vectors of the 32; each
/// step is 16 independent FMAs per 2 panel loads (plus 2 `a` loads amortised), which keeps
/// four FMA pipes (Neoverse V1/V2, Apple) busy from two or three load ports and covers the
/// 4-cycle FMA latency. A full 32-column row (8 vectors) would need 64 accumulators at 8 rows.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_neon<const R: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nvalid: usize,
    acc: bool,
) {
    use std::arch::aarch64::*;
    let mut s0 = [vdupq_n_f32(0.0); R];
    let mut s1 = [vdupq_n_f32(0.0); R];
    let mut p = 0;
    while p + 4 <= kc {
        let mut av = [vdupq_n_f32(0.0); R];
        for (i, v) in av.iter_mut().enumerate() {
            *v = vld1q_f32(a.add(i * lda + p));
        }
        let bp = b.add(p * NR);
        let (b0, b1) = (vld1q_f32(bp), vld1q_f32(bp.add(4)));
        for i in 0..R {
            s0[i] = vfmaq_laneq_f32::<0>(s0[i], b0, av[i]);
            s1[i] = vfmaq_laneq_f32::<0>(s1[i], b1, av[i]);
        }
        let (b0, b1) = (vld1q_f32(bp.add(NR)), vld1q_f32(bp.add(NR + 4)));
        for i in 0..R {
            s0[i] = vfmaq_laneq_f32::<1>(s0[i], b0, av[i]);
            s1[i] = vfmaq_laneq_f32::<1>(s1[i], b1, av[i]);
        }
        let (b0, b1) = (vld1q_f32(bp.add(2 * NR)), vld1q_f32(bp.add(2 * NR + 4)));
        for i in 0..R {
            s0[i] = vfmaq_laneq_f32::<2>(s0[i], b0, av[i]);
            s1[i] = vfmaq_laneq_f32::<2>(s1[i], b1, av[i]);
        }
        let (b0, b1) = (vld1q_f32(bp.add(3 * NR)), vld1q_f32(bp.add(3 * NR + 4)));
        for i in 0..R {
            s0[i] = vfmaq_laneq_f32::<3>(s0[i], b0, av[i]);
            s1[i] = vfmaq_laneq_f32::<3>(s1[i], b1, av[i]);
        }
        p += 4;
    }
    // The last kc % 4 steps: one broadcast value per row (a may end right after them).
    while p < kc {
        let bp = b.add(p * NR);
        let (b0, b1) = (vld1q_f32(bp), vld1q_f32(bp.add(4)));
        for i in 0..R {
            let av = vdupq_n_f32(*a.add(i * lda + p));
            s0[i] = vfmaq_f32(s0[i], b0, av);
            s1[i] = vfmaq_f32(s1[i], b1, av);
        }
        p += 1;
    }
    for i in 0..R {
        let cp = c.add(i * ldc);
        if nvalid >= 8 {
            let (mut v0, mut v1) = (s0[i], s1[i]);
            if acc {
                v0 = vaddq_f32(v0, vld1q_f32(cp));
                v1 = vaddq_f32(v1, vld1q_f32(cp.add(4)));
            }
            vst1q_f32(cp, v0);
            vst1q_f32(cp.add(4), v1);
        } else {
            let mut t = [0.0f32; 8];
            vst1q_f32(t.as_mut_ptr(), s0[i]);
            vst1q_f32(t.as_mut_ptr().add(4), s1[i]);
            for (j, &v) in t.iter().enumerate().take(nvalid) {
                *cp.add(j) = if acc { *cp.add(j) + v } else { v };
            }
        }
    }
}
