//! The 16-bit integer path for float weights: y = x · Wᵀ with W (f32/f16/bf16) packed once per
//! model load into 13-bit integers, activations quantised per call the same way, and integer
//! dot products of pairs (VPDPWSSD with AVX-512 VNNI, VPMADDWD + VPADDD with AVX2, SMLAL /
//! SMLAL2 on NEON).
//!
//! Why: a pair-of-i16 dot product does twice the multiply-adds per instruction of an f32 FMA,
//! and packing once removes the per-call conversion that dominated small batches. Why 13 bits:
//! on all-minilm F16 it keeps the golden tolerances with room (cosine ≥ 0.99999 vs PyTorch,
//! pooled norm within 0.05 %), where bf16 (8 bits) misses the 0.1 % norm bound.
//!
//! Quantisation: one scale per chunk of `KC = 128` values of k, for each weight row (output
//! column) and each activation row: `s = max|v| / 4095` over the chunk, `q = round(v / s)` ∈
//! [-4095, 4095]. A product of two is < 2^24, so an i32 holds the sum of a chunk's 128 of them
//! (128 · 4095² = 2 146 435 200 < 2^31): each chunk's sum is converted to f32, scaled by
//! `s_x · s_w` and added to y. Per chunk rather than per row because BERT's activations have
//! a few channels far larger than the rest: with one scale per row they took the other
//! channels' precision with them. Measured on all-minilm F16 (21 golden cases, the pooled norm
//! against an exact f32 run of the same file): per row 0.038 % rms, 0.10 % worst; per chunk
//! 0.030 % rms, 0.059 % worst. It costs nothing: each chunk was converted and scaled anyway.
//!
//! Layout: columns in panels of `NR = 64`; a panel holds, for each pair of k (k padded to even
//! with a zero), 64 columns × 2 i16 — one 256-byte line per k pair, i.e. four 16-lane vectors of
//! (w\[k\], w\[k+1\]) pairs that VPDPWSSD multiplies by one broadcast (x\[k\], x\[k+1\]).

use super::isa::Isa;
use super::pack::convert_row;
use super::{FloatFormat, MultiGrid, Product, SendPtr};
use rayon::prelude::*;
use std::cell::RefCell;

/// Columns per panel.
pub const NR: usize = 64;
/// k values summed in i32 before converting (see the overflow bound above). Even.
pub const KC: usize = 128;
/// Largest quantised magnitude: 13-bit signed.
pub const QMAX: f32 = 4095.0;

/// Float weights packed for [`matmul_i16`].
pub struct PackedI16 {
    pub n: usize,
    pub k: usize,
    /// `ceil(n / NR)` panels of `kp · NR` values, kp = k rounded up to even.
    q: Vec<i16>,
    /// Per k chunk of `KC`, per column, its scale (0 for padding columns): `chunks(k)` rows
    /// of `panels · NR`.
    scale: Vec<f32>,
}

impl PackedI16 {
    /// Packs `n` rows of `k ≥ 1` values of `fmt` from `data` (row after row).
    pub fn pack(fmt: FloatFormat, data: &[u8], n: usize, k: usize) -> PackedI16 {
        assert!(k > 0, "PackedI16::pack: empty rows");
        let row_bytes = k * fmt.bytes();
        assert_eq!(data.len(), n * row_bytes, "PackedI16::pack: weight bytes");
        let kp = k.next_multiple_of(2);
        let panels = n.div_ceil(NR);
        let mut q = vec![0i16; panels * kp * NR];
        // Scales gathered per panel first ([column][chunk]), then laid out per chunk.
        let chunks = chunks(k);
        let mut by_panel = vec![0.0f32; panels * NR * chunks];
        q.par_chunks_mut(kp * NR)
            .zip(by_panel.par_chunks_mut(NR * chunks))
            .enumerate()
            .for_each(|(s, (panel, scales))| {
                let mut row = vec![0.0f32; k];
                let mut qrow = vec![0i16; k];
                for c in 0..NR.min(n - s * NR) {
                    let j = s * NR + c;
                    convert_row(
                        Isa::detect(),
                        fmt,
                        &data[j * row_bytes..][..row_bytes],
                        0,
                        &mut row,
                    );
                    let column_scales = &mut scales[c * chunks..(c + 1) * chunks];
                    quantize_chunks(Isa::detect(), &row, &mut qrow, column_scales);
                    for (p, &v) in qrow.iter().enumerate() {
                        panel[(p / 2) * 2 * NR + 2 * c + p % 2] = v;
                    }
                }
            });
        let mut scale = vec![0.0f32; chunks * panels * NR];
        chunk_major(&by_panel, chunks, &mut scale);
        PackedI16 { n, k, q, scale }
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.q.len() * 2 + self.scale.len() * 4
    }

    fn kp(&self) -> usize {
        self.k.next_multiple_of(2)
    }
}

/// k chunks of [`KC`] (the last may be shorter).
pub fn chunks(k: usize) -> usize {
    k.next_multiple_of(2).div_ceil(KC)
}

/// Scales gathered item by item (`chunks` per weight column or activation row, as the
/// parallel quantisation writes them) into `out` chunk by chunk (`out[c · items + i]`), the
/// order in which a tile reads them for one k chunk.
fn chunk_major(by_item: &[f32], chunks: usize, out: &mut [f32]) {
    let items = by_item.len() / chunks;
    assert_eq!(out.len(), items * chunks, "chunk_major: out");
    for (i, per_chunk) in by_item.chunks_exact(chunks).enumerate() {
        for (c, &sc) in per_chunk.iter().enumerate() {
            out[c * items + i] = sc;
        }
    }
}

/// Quantises `v` into `q` (same length) chunk by chunk of [`KC`] values, each with its own
/// scale (into `scales`, [`chunks`]`(v.len())` of them): a large value then costs precision
/// only within its own chunk.
pub fn quantize_chunks(isa: Isa, v: &[f32], q: &mut [i16], scales: &mut [f32]) {
    assert_eq!(scales.len(), chunks(v.len()), "quantize_chunks: scales");
    for ((v, q), s) in v.chunks(KC).zip(q.chunks_mut(KC)).zip(scales) {
        *s = quantize_row(isa, v, q);
    }
}

/// Quantises `v` into `q` (same length) with one scale, returned. All zeros → scale 0; any
/// NaN or infinity → scale NaN (so the products are NaN, as in f32). Rounds to nearest even.
pub fn quantize_row(isa: Isa, v: &[f32], q: &mut [i16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512 {
        // SAFETY: AVX-512 F/BW detected; q is as long as v.
        return unsafe { quantize_row_avx512(v, q) };
    }
    #[cfg(target_arch = "aarch64")]
    if isa.is_neon() {
        // SAFETY: NEON detected; q is as long as v.
        return unsafe { quantize_row_neon(v, q) };
    }
    let _ = isa;
    quantize_row_scalar(v, q)
}

/// The reference. Rounding by the 1.5 · 2^23 trick (exact for |t| ≤ 2^22, here ≤ 4095) rather
/// than `round_ties_even`, which is a call to `rintf` per element on baseline x86-64.
pub fn quantize_row_scalar(v: &[f32], q: &mut [i16]) -> f32 {
    let (mut amax, mut probe) = (0.0f32, 0.0f32);
    for &x in v {
        let a = x.abs();
        amax = if a > amax { a } else { amax };
        probe += x * 0.0;
    }
    if probe != 0.0 {
        // NaN (from a NaN, or inf · 0).
        q.fill(0);
        return f32::NAN;
    }
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let inv = QMAX / amax;
    for (q, &x) in q.iter_mut().zip(v) {
        *q = quantize_one(x, inv);
    }
    amax / QMAX
}

/// One value of [`quantize_row_scalar`], given QMAX / max|v|.
#[inline(always)]
fn quantize_one(x: f32, inv: f32) -> i16 {
    const MAGIC: f32 = 12_582_912.0;
    let t = (x * inv).clamp(-QMAX, QMAX);
    ((t + MAGIC) - MAGIC) as i32 as i16
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row_avx512(v: &[f32], q: &mut [i16]) -> f32 {
    use std::arch::x86_64::*;
    assert_eq!(v.len(), q.len());
    let n = v.len();
    let tail = |i: usize| -> __mmask16 { ((1u32 << (n - i).min(16)) - 1) as u16 };
    let (mut amax, mut bad) = (_mm512_setzero_ps(), 0u16);
    let inf = _mm512_set1_ps(f32::INFINITY);
    let mut i = 0;
    while i < n {
        let a = _mm512_abs_ps(_mm512_maskz_loadu_ps(tail(i), v.as_ptr().add(i)));
        amax = _mm512_max_ps(amax, a);
        // Not less than infinity, or unordered: an infinity or a NaN.
        bad |= _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(a, inf);
        i += 16;
    }
    let amax = _mm512_reduce_max_ps(amax);
    if bad != 0 || amax == 0.0 {
        q.fill(0);
        return if bad != 0 { f32::NAN } else { 0.0 };
    }
    let inv = _mm512_set1_ps(QMAX / amax);
    let (lo, hi) = (_mm512_set1_ps(-QMAX), _mm512_set1_ps(QMAX));
    // 32 at a time: two vectors packed to i16 with VPACKSSDW (which interleaves 128-bit
    // lanes, put back in order by one permute) and one full store; the narrowing store
    // (VPMOVDW to memory) used for the tail is several times slower on Zen 4.
    let order = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
    let mut i = 0;
    while i + 32 <= n {
        let t0 = _mm512_mul_ps(_mm512_loadu_ps(v.as_ptr().add(i)), inv);
        let t1 = _mm512_mul_ps(_mm512_loadu_ps(v.as_ptr().add(i + 16)), inv);
        let q0 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(t0, lo), hi));
        let q1 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(t1, lo), hi));
        let packed = _mm512_permutexvar_epi64(order, _mm512_packs_epi32(q0, q1));
        _mm512_storeu_si512(q.as_mut_ptr().add(i) as *mut _, packed);
        i += 32;
    }
    while i < n {
        let m = tail(i);
        let t = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, v.as_ptr().add(i)), inv);
        // cvtps rounds to nearest even under the default MXCSR, like the reference.
        let qi = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(t, lo), hi));
        _mm512_mask_cvtepi32_storeu_epi16(q.as_mut_ptr().add(i), m, qi);
        i += 16;
    }
    amax / QMAX
}

/// NEON: the same steps as the reference, four lanes at a time; FCVTNS rounds to nearest
/// even like the reference's 1.5 · 2^23 trick (|t| ≤ 4095), so the bits are the same.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn quantize_row_neon(v: &[f32], q: &mut [i16]) -> f32 {
    use std::arch::aarch64::*;
    assert_eq!(v.len(), q.len());
    let n = v.len();
    let body = n / 4 * 4;
    let inf = vdupq_n_f32(f32::INFINITY);
    let (mut amaxv, mut badv) = (vdupq_n_f32(0.0), vdupq_n_u32(0));
    for i in (0..body).step_by(4) {
        let a = vabsq_f32(vld1q_f32(v.as_ptr().add(i)));
        amaxv = vmaxq_f32(amaxv, a);
        // Not less than infinity: an infinity or a NaN.
        badv = vorrq_u32(badv, vmvnq_u32(vcltq_f32(a, inf)));
    }
    let (mut amax, mut bad) = (vmaxvq_f32(amaxv), vmaxvq_u32(badv) != 0);
    for &x in &v[body..] {
        let a = x.abs();
        amax = if a > amax { a } else { amax };
        bad |= !x.is_finite();
    }
    if bad || amax == 0.0 {
        q.fill(0);
        return if bad { f32::NAN } else { 0.0 };
    }
    let inv = QMAX / amax;
    let (lo, hi) = (vdupq_n_f32(-QMAX), vdupq_n_f32(QMAX));
    let round = |i: usize| {
        let t = vmulq_n_f32(vld1q_f32(v.as_ptr().add(i)), inv);
        vmovn_s32(vcvtnq_s32_f32(vminq_f32(vmaxq_f32(t, lo), hi)))
    };
    let mut i = 0;
    while i + 8 <= n {
        vst1q_s16(q.as_mut_ptr().add(i), vcombine_s16(round(i), round(i + 4)));
        i += 8;
    }
    if i + 4 <= n {
        vst1_s16(q.as_mut_ptr().add(i), round(i));
        i += 4;
    }
    for j in i..n {
        q[j] = quantize_one(v[j], inv);
    }
    amax / QMAX
}

/// Activations quantised for [`matmul_i16_quantised`]: per row, `kp` values (k padded to even
/// with a zero) and a scale per k chunk (stored chunk by chunk: `chunks(k)` runs of `m`).
/// Quantised once, they can be multiplied by any number of packed weights of the same k (Q, K
/// and V of a layer). The buffers are kept and reused by the next [`QuantisedI16::quantize`].
#[derive(Default)]
pub struct QuantisedI16 {
    m: usize,
    k: usize,
    q: Vec<i16>,
    s: Vec<f32>,
    /// The scales row by row, as quantised (reused).
    by_row: Vec<f32>,
}

thread_local! {
    static QX: RefCell<QuantisedI16> = RefCell::new(QuantisedI16::default());
}

impl QuantisedI16 {
    /// Quantises `m` rows of `k` values of `x`, row by row, in parallel.
    pub fn quantize(&mut self, isa: Isa, x: &[f32], m: usize, k: usize) {
        assert_eq!(x.len(), m * k, "QuantisedI16::quantize: x is not m×k");
        let kp = k.next_multiple_of(2);
        (self.m, self.k) = (m, k);
        let nc = chunks(k);
        self.q.resize(m * kp, 0);
        self.s.resize(m * nc, 0.0);
        if m == 0 || k == 0 {
            return;
        }
        // Row-major scales from the parallel loop, then transposed to chunk-major so a tile
        // reads its rows' scales for one chunk contiguously.
        let mut by_row = std::mem::take(&mut self.by_row);
        by_row.resize(m * nc, 0.0);
        self.q
            .par_chunks_mut(kp * 16)
            .zip(by_row.par_chunks_mut(nc * 16))
            .zip(x.par_chunks(k * 16))
            .for_each(|((q, s), x)| {
                for ((q, s), x) in q.chunks_mut(kp).zip(s.chunks_mut(nc)).zip(x.chunks(k)) {
                    quantize_chunks(isa, x, &mut q[..k], s);
                    q[k..].fill(0);
                }
            });
        chunk_major(&by_row, nc, &mut self.s);
        self.by_row = by_row;
    }

    /// Rows quantised.
    pub fn rows(&self) -> usize {
        self.m
    }
}

/// Rows of the micro-kernel for an ISA.
fn mr_for(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 | Isa::Avx512Vnni => 6,
        Isa::Avx2 => 3,
        Isa::Neon | Isa::NeonDot => 3,
        _ => 4,
    }
}

/// y[m×n] = x[m×k] · Wᵀ (+ bias, n values) with W packed by [`PackedI16::pack`], in the
/// tasks of a `TaskGrid`.
pub fn matmul_i16(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &PackedI16,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    matmul_i16_many(isa, x, m, &mut [Product { w, bias, y }]);
}

/// Several products of the same x (each `w.k` = k = x.len() / m): x is quantised once, into
/// this thread's reused buffers, and every product's tiles run in one parallel region. Each y
/// is bit for bit what [`matmul_i16`] gives for its weights alone.
pub fn matmul_i16_many(isa: Isa, x: &[f32], m: usize, outs: &mut [Product<'_, PackedI16>]) {
    let Some(k) = outs.first().map(|o| o.w.k) else {
        return;
    };
    assert_eq!(x.len(), m * k, "matmul_i16: x is not m×k");
    // Taken out of the thread-local (not borrowed across the parallel loop) so that a nested
    // call on this thread, e.g. from work stealing, cannot find it borrowed.
    let mut qx = QX.with(|c| std::mem::take(&mut *c.borrow_mut()));
    qx.quantize(isa, x, m, k);
    matmul_i16_quantised(isa, &qx, outs);
    QX.with(|c| *c.borrow_mut() = qx);
}

/// y = x · Wᵀ (+ bias) for each product, x quantised by [`QuantisedI16::quantize`] (every
/// `w.k` must be its k), all tiles in one parallel region (see `MultiGrid`).
pub fn matmul_i16_quantised(isa: Isa, qx: &QuantisedI16, outs: &mut [Product<'_, PackedI16>]) {
    let m = qx.m;
    for o in outs.iter() {
        assert_eq!(o.w.k, qx.k, "matmul_i16: x is not m×k");
        assert_eq!(o.y.len(), m * o.w.n, "matmul_i16: y is not m×n");
        assert!(
            o.bias.is_none_or(|b| b.len() == o.w.n),
            "matmul_i16: bias is not n long"
        );
    }
    if m == 0 {
        return;
    }
    let mr = mr_for(isa);
    let grid = MultiGrid::new(m, mr, outs.iter().map(|o| o.w.n.div_ceil(NR)));
    // Raw output pointers, taken here from the exclusive borrows: tasks write disjoint tiles.
    let ys: Vec<SendPtr> = outs.iter_mut().map(|o| SendPtr(o.y.as_mut_ptr())).collect();
    let outs = &*outs;
    (0..grid.tasks()).into_par_iter().for_each(|t| {
        let (i0, nrows, panels) = grid.task(t);
        for g in panels {
            let (o, s) = grid.panel(g);
            let Product { w, bias, .. } = &outs[o];
            // SAFETY: the task owns rows i0..i0+nrows of panel s's columns of product o's y
            // (`MultiGrid`), which is m × w.n (asserted above).
            unsafe { panel_rows(isa, mr, qx, w, *bias, ys[o], i0, nrows, s) };
        }
    });
}

/// Rows i0..i0+nrows of y's columns in panel `s`: every k chunk, `mr` rows at a time.
///
/// # Safety
/// `y` points at an m × w.n output (m = qx.m) of which these rows and columns are the
/// caller's alone; `bias` is None or w.n long; i0 + nrows ≤ m.
#[allow(clippy::too_many_arguments)]
unsafe fn panel_rows(
    isa: Isa,
    mr: usize,
    qx: &QuantisedI16,
    w: &PackedI16,
    bias: Option<&[f32]>,
    y: SendPtr,
    i0: usize,
    nrows: usize,
    s: usize,
) {
    let (n, kp) = (w.n, w.kp());
    let j0 = s * NR;
    let nvalid = NR.min(n - j0);
    let panel = &w.q[s * kp * NR..(s + 1) * kp * NR];
    let (m, width) = (qx.m, w.scale.len() / chunks(w.k));
    for p0 in (0..kp).step_by(KC) {
        let kc = KC.min(kp - p0);
        let chunk = p0 / KC;
        let ws = &w.scale[chunk * width + j0..][..NR];
        for i in (0..nrows).step_by(mr) {
            let r = mr.min(nrows - i);
            // a covers r rows of kp (p0+kc ≤ kp), b kc/2 panel lines; c is the caller's.
            let a = qx.q.as_ptr().add((i0 + i) * kp + p0);
            let b = panel.as_ptr().add(p0 * NR);
            let c = y.get().add((i0 + i) * n + j0);
            let sxr = &qx.s[chunk * m + i0 + i..][..r];
            // The bias goes in with the last k chunk.
            let bias = match bias {
                Some(bv) if p0 + kc == kp => bv.as_ptr().add(j0),
                _ => std::ptr::null(),
            };
            tile(isa, r, a, kp, b, kc, sxr, ws, bias, c, n, nvalid, p0 > 0);
        }
    }
}

/// One r × NR tile: c[i][j] (+)= (Σ_p a[i][p] · b[p][j]) · sx[i] · ws[j] over `kc` values of k,
/// then + bias[j] where `bias` is not null.
///
/// # Safety
/// `a`: r rows of stride `lda` with kc i16; `b`: kc/2 panel lines; `bias`: null or nvalid
/// values; `c`: r rows of stride `ldc` with nvalid values; kc ≤ KC and even; the ISA must be supported.
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    isa: Isa,
    r: usize,
    a: *const i16,
    lda: usize,
    b: *const i16,
    kc: usize,
    sx: &[f32],
    ws: &[f32],
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    nvalid: usize,
    acc: bool,
) {
    // Arguments are passed explicitly: macro hygiene would otherwise ignore shadowed names.
    macro_rules! by_rows {
        ($f:ident, $b:expr, $c:expr, $ws:expr, $bias:expr, $nv:expr, $($n:literal)*) => {
            match r { $($n => $f::<$n>(a, lda, $b, kc, sx, $ws, $bias, $c, ldc, $nv, acc),)* _ => unreachable!() }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => by_rows!(kernel_vnni, b, c, ws, bias, nvalid, 1 2 3 4 5 6),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => by_rows!(kernel_avx512, b, c, ws, bias, nvalid, 1 2 3 4 5 6),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // Two halves of 32 columns: a panel line is 2·NR i16, half a line is 32 pairs.
            by_rows!(kernel_avx2, b, c, ws, bias, nvalid, 1 2 3);
            if nvalid > 32 {
                let bias2 = if bias.is_null() { bias } else { bias.add(32) };
                by_rows!(kernel_avx2, b.add(64), c.add(32), &ws[32..], bias2, nvalid - 32, 1 2 3);
            }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot => {
            // Quarters of 16 columns (see kernel_neon); those wholly past nvalid are skipped.
            // SAFETY: the caller's contract; quarter q reads its 16 pairs of each panel line,
            // ws[q..q+16] (ws holds NR scales) and writes only its valid columns of c.
            for q in (0..nvalid).step_by(16) {
                let bias_q = if bias.is_null() { bias } else { bias.add(q) };
                by_rows!(kernel_neon, b.add(2 * q), c.add(q), &ws[q..], bias_q, nvalid - q, 1 2 3);
            }
        }
        _ => kernel_scalar(r, a, lda, b, kc, sx, ws, bias, c, ldc, nvalid, acc),
    }
}

/// The reference micro-kernel: the same integer sums and the same float steps, plain loops.
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_scalar(
    r: usize,
    a: *const i16,
    lda: usize,
    b: *const i16,
    kc: usize,
    sx: &[f32],
    ws: &[f32],
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    nvalid: usize,
    acc: bool,
) {
    for (i, &sxi) in sx.iter().enumerate().take(r) {
        let mut sums = [0i32; NR];
        for p in 0..kc {
            let av = *a.add(i * lda + p) as i32;
            for (j, s) in sums.iter_mut().enumerate() {
                *s += av * *b.add((p / 2) * 2 * NR + 2 * j + p % 2) as i32;
            }
        }
        for (j, &s) in sums.iter().enumerate().take(nvalid) {
            let cp = c.add(i * ldc + j);
            let mut v = s as f32 * (sxi * ws[j]);
            if acc {
                v += *cp;
            }
            if !bias.is_null() {
                v += *bias.add(j);
            }
            *cp = v;
        }
    }
}

/// acc + pairwise b · broadcast(*pair): VPDPWSSD with a {1to16} memory operand, so the
/// broadcast load rides on the dot product. Inline assembly also because LLVM's generic x86
/// tuning rewrites the intrinsic into VPMADDWD + VPADDD (two instructions, half the rate on
/// Zen 4).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
unsafe fn dpwssd_bcast(
    mut acc: std::arch::x86_64::__m512i,
    b: std::arch::x86_64::__m512i,
    pair: *const i32,
) -> std::arch::x86_64::__m512i {
    std::arch::asm!(
        "vpdpwssd {acc}, {b}, dword ptr [{pair}]{{1to16}}",
        acc = inout(zmm_reg) acc,
        b = in(zmm_reg) b,
        pair = in(reg) pair,
        options(pure, readonly, nostack, preserves_flags)
    );
    acc
}

/// 16-lane vectors per panel line.
#[cfg(target_arch = "x86_64")]
const V512: usize = NR / 16;

/// AVX-512: R ≤ 6 rows × 64 columns, 24 accumulators; one broadcast feeds four products.
/// Defined twice by this macro: with VNNI (VPDPWSSD) and without (VPMADDWD + VPADDD), each
/// compiled for its own features so the plain one never contains a VNNI instruction.
macro_rules! kernel_avx512 {
    ($name:ident, $features:literal, $step:expr) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<const R: usize>(
            a: *const i16,
            lda: usize,
            b: *const i16,
            kc: usize,
            sx: &[f32],
            ws: &[f32],
            bias: *const f32,
            c: *mut f32,
            ldc: usize,
            nvalid: usize,
            acc: bool,
        ) {
            use std::arch::x86_64::*;
            // Ask for the tile's output lines (64 floats a row, any alignment: 5 lines) for
            // writing now, so that fetching them overlaps the integer sums instead of
            // stalling the stores at the end.
            for i in 0..R {
                for o in [0, 16, 32, 48, 63] {
                    _mm_prefetch::<_MM_HINT_ET0>(c.add(i * ldc + o) as *const i8);
                }
            }
            let mut s = [[_mm512_setzero_si512(); V512]; R];
            for p in 0..kc / 2 {
                let line = b.add(p * 2 * NR);
                let mut bv = [_mm512_setzero_si512(); V512];
                for (h, v) in bv.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(line.add(32 * h) as *const _);
                }
                for (i, si) in s.iter_mut().enumerate() {
                    let pair = a.add(i * lda + 2 * p) as *const i32;
                    for (sv, &bw) in si.iter_mut().zip(&bv) {
                        *sv = $step(*sv, pair, bw);
                    }
                }
            }
            // Per row: i32 sums → f32, times s_x · s_w, added to (or written over) c.
            let wsv = [
                _mm512_loadu_ps(ws.as_ptr()),
                _mm512_loadu_ps(ws.as_ptr().add(16)),
                _mm512_loadu_ps(ws.as_ptr().add(32)),
                _mm512_loadu_ps(ws.as_ptr().add(48)),
            ];
            let masks: [__mmask16; V512] = std::array::from_fn(|h| {
                let lanes = nvalid.saturating_sub(16 * h).min(16);
                ((1u32 << lanes) - 1) as u16
            });
            for (i, si) in s.iter().enumerate() {
                let sxv = _mm512_set1_ps(*sx.get_unchecked(i));
                let cp = c.add(i * ldc);
                for h in 0..V512 {
                    let scale = _mm512_mul_ps(sxv, wsv[h]);
                    let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(si[h]), scale);
                    if acc {
                        v = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[h], cp.add(16 * h)), v);
                    }
                    if !bias.is_null() {
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(masks[h], bias.add(16 * h)));
                    }
                    _mm512_mask_storeu_ps(cp.add(16 * h), masks[h], v);
                }
            }
        }
    };
}
kernel_avx512!(kernel_vnni, "avx512f,avx512bw,avx512vnni", |s, pair, b| {
    dpwssd_bcast(s, b, pair)
});
kernel_avx512!(
    kernel_avx512,
    "avx512f,avx512bw",
    |s, pair: *const i32, b| {
        _mm512_add_epi32(
            s,
            _mm512_madd_epi16(_mm512_set1_epi32(pair.read_unaligned()), b),
        )
    }
);

/// AVX2: R ≤ 3 rows × 32 columns (half a panel, from `col0`) as four 8-lane vectors per row:
/// 12 accumulators + 4 loads fill the 16 registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx2<const R: usize>(
    a: *const i16,
    lda: usize,
    b: *const i16,
    kc: usize,
    sx: &[f32],
    ws: &[f32],
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    nvalid: usize,
    acc: bool,
) {
    use std::arch::x86_64::*;
    let mut s = [[_mm256_setzero_si256(); 4]; R];
    for p in 0..kc / 2 {
        let line = b.add(p * 2 * NR) as *const __m256i;
        let bv = [
            _mm256_loadu_si256(line),
            _mm256_loadu_si256(line.add(1)),
            _mm256_loadu_si256(line.add(2)),
            _mm256_loadu_si256(line.add(3)),
        ];
        for (i, si) in s.iter_mut().enumerate() {
            let av = _mm256_set1_epi32((a.add(i * lda + 2 * p) as *const i32).read_unaligned());
            for (sv, &b) in si.iter_mut().zip(&bv) {
                *sv = _mm256_add_epi32(*sv, _mm256_madd_epi16(av, b));
            }
        }
    }
    for (i, si) in s.iter().enumerate() {
        let mut t = [0i32; 32];
        for (h, v) in si.iter().enumerate() {
            _mm256_storeu_si256(t.as_mut_ptr().add(8 * h) as *mut __m256i, *v);
        }
        let cp = c.add(i * ldc);
        for (j, &v) in t.iter().enumerate().take(nvalid) {
            let mut v = v as f32 * (sx[i] * ws[j]);
            if acc {
                v += *cp.add(j);
            }
            if !bias.is_null() {
                v += *bias.add(j);
            }
            *cp.add(j) = v;
        }
    }
}

/// NEON: R ≤ 3 rows × 16 columns (a quarter of the panel: `b`, `ws`, `bias` and `c` point at
/// its first column). A panel line holds (w[k], w[k+1]) pairs, so one 8-lane vector is 4
/// columns × 2 k; the row's pair (x[k], x[k+1]) broadcast as one 32-bit value lines up with
/// it. SMLAL / SMLAL2 multiply-accumulate the low and high halves into i32 lanes holding one
/// (column, k parity) each, and a pairwise add at the end gives the column sums: exact
/// integers, the scalar kernel's bits. Registers: 24 accumulators + 4 panel vectors + a
/// broadcast of the 32; 24 independent MACs per 4 panel loads and 3 broadcasts per k pair.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_neon<const R: usize>(
    a: *const i16,
    lda: usize,
    b: *const i16,
    kc: usize,
    sx: &[f32],
    ws: &[f32],
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    nvalid: usize,
    acc: bool,
) {
    use std::arch::aarch64::*;
    // lo[i][h]: columns 4h, 4h+1 of row i (k even, k odd); hi[i][h]: columns 4h+2, 4h+3.
    let mut lo = [[vdupq_n_s32(0); 4]; R];
    let mut hi = [[vdupq_n_s32(0); 4]; R];
    for p in 0..kc / 2 {
        let line = b.add(p * 2 * NR);
        let bv = [
            vld1q_s16(line),
            vld1q_s16(line.add(8)),
            vld1q_s16(line.add(16)),
            vld1q_s16(line.add(24)),
        ];
        for i in 0..R {
            let pair = (a.add(i * lda + 2 * p) as *const i32).read_unaligned();
            let av = vreinterpretq_s16_s32(vdupq_n_s32(pair));
            for h in 0..4 {
                lo[i][h] = vmlal_s16(lo[i][h], vget_low_s16(bv[h]), vget_low_s16(av));
                hi[i][h] = vmlal_high_s16(hi[i][h], bv[h], av);
            }
        }
    }
    // Per row: i32 sums → f32, times s_x · s_w, (+ c) (+ bias): the reference's steps.
    for i in 0..R {
        let cp = c.add(i * ldc);
        for h in 0..4 {
            let j0 = 4 * h;
            if j0 >= nvalid {
                break;
            }
            let sums = vpaddq_s32(lo[i][h], hi[i][h]);
            let scale = vmulq_n_f32(vld1q_f32(ws.as_ptr().add(j0)), *sx.get_unchecked(i));
            let mut v = vmulq_f32(vcvtq_f32_s32(sums), scale);
            if nvalid >= j0 + 4 {
                if acc {
                    v = vaddq_f32(v, vld1q_f32(cp.add(j0)));
                }
                if !bias.is_null() {
                    v = vaddq_f32(v, vld1q_f32(bias.add(j0)));
                }
                vst1q_f32(cp.add(j0), v);
            } else {
                let mut t = [0.0f32; 4];
                vst1q_f32(t.as_mut_ptr(), v);
                for (j, &tv) in t.iter().enumerate().take(nvalid - j0) {
                    let mut tv = tv;
                    if acc {
                        tv += *cp.add(j0 + j);
                    }
                    if !bias.is_null() {
                        tv += *bias.add(j0 + j);
                    }
                    *cp.add(j0 + j) = tv;
                }
            }
        }
    }
}
