//! The integer path: Q8_0 / Q4_0 / Q4_1 weights times activations quantised on the fly.
//!
//! Activations: each row is cut into blocks of 32, each block scaled by `d = max|x| / 127` and
//! rounded (ties to even) to q ∈ [-127, 127], stored as the unsigned byte `q + 128` — VPDPBUSD
//! wants an unsigned operand. The `+ 128` is taken back out with a per-(column, block)
//! correction `-128 · Σw` that packing computes.
//!
//! Weights: a block of 32 columns is packed per 32-element k block as 8 groups of
//! [32 columns × 4 bytes], so one 4-byte broadcast of activations times one 64-byte load of
//! weights is 16 columns × 4 products in a single VPDPBUSD. Per block the i32 sums are
//! converted and scaled: y += (Σ q·w) · d_x · d_w.
//!
//! NEON (aarch64) multiplies signed × signed (SDOT with FEAT_DotProd, SMULL + SADALP without):
//! it flips the activations' top bit back to q and skips the correction; the same integers.
//!
//! Weights of -128 (which ggml's quantisers never write) are clamped to -127 when packed: the
//! AVX2 path's sign trick could not represent them.
//!
//! Q4_1 (w = d_w · q_w + m_w, q_w ∈ 0..15): the integer part is the same product with the
//! unsigned nibbles; the minimum adds m_w · Σ_e d_x · q_x = m_w · s_x per block, where
//! `s_x` is the block sum the quantiser stores (llama.cpp's Q8_1 carries the same sum).

use super::isa::Isa;
#[cfg(target_arch = "aarch64")]
use super::q8_neon::{quantize_block_neon, rows_neon};
use super::{MultiGrid, Product, SendPtr, WeightFormat};
use rayon::prelude::*;
use std::cell::RefCell;

/// Elements per quantisation block.
pub const QB: usize = 32;
/// Columns per packed panel.
pub const NRQ: usize = 32;
/// Bytes of one packed k block of a panel.
pub(crate) const BLOCK_BYTES: usize = QB * NRQ;

/// Activations quantised to 8-bit blocks: `q` holds `q + 128` per element, `d` one scale per
/// block, `s` per block the sum of the rounded values `d · Σ q` (Q4_1's minimum term; empty
/// when [`quantize_rows`] was not asked for them).
#[derive(Default)]
pub struct QuantRows {
    pub q: Vec<u8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
}

/// A panel of packed weights: `q` (blocks × 1024 bytes), per block and column the scale `d` and
/// the offset correction `corr` = -128 · Σ w, and for Q4_1 the minimum `m` (empty otherwise).
#[derive(Default)]
pub struct Panel {
    pub q: Vec<u8>,
    pub d: Vec<f32>,
    pub corr: Vec<i32>,
    pub m: Vec<f32>,
}

thread_local! {
    static QX: RefCell<QuantRows> = RefCell::new(QuantRows::default());
    static PANEL: RefCell<Panel> = RefCell::new(Panel::default());
}

/// Quantises `m` rows of `k` values (k a multiple of 32) into `out`, with the block sums
/// `out.s` only if `sums` (only Q4_1 weights use them; `s` is left empty otherwise).
pub fn quantize_rows(isa: Isa, x: &[f32], m: usize, k: usize, sums: bool, out: &mut QuantRows) {
    out.q.resize(m * k, 0);
    out.d.resize(m * k / QB, 0.0);
    out.s.resize(if sums { m * k / QB } else { 0 }, 0.0);
    let rows_per_task = (8192 / k.max(1)).max(1);
    let tasks = out
        .q
        .par_chunks_mut(rows_per_task * k)
        .zip(out.d.par_chunks_mut(rows_per_task * k / QB))
        .zip(x.par_chunks(rows_per_task * k));
    if sums {
        tasks
            .zip(out.s.par_chunks_mut(rows_per_task * k / QB))
            .for_each(|(((q, d), x), s)| quantize_blocks(isa, x, q, d, Some(s)));
    } else {
        tasks.for_each(|((q, d), x)| quantize_blocks(isa, x, q, d, None));
    }
}

/// Consecutive blocks of 32 (`x.len()` = 32 · `d.len()`): per block its scale `d`, `q + 128`
/// in `q` and, if given, `s` = d · Σ q.
fn quantize_blocks(isa: Isa, x: &[f32], q: &mut [u8], d: &mut [f32], s: Option<&mut [f32]>) {
    assert!(x.len() == d.len() * QB && q.len() == x.len());
    assert!(s.as_ref().is_none_or(|s| s.len() == d.len()));
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512 {
        // SAFETY: AVX-512 F/BW/VL detected; the lengths are asserted above.
        return unsafe {
            match s {
                Some(s) => quantize_blocks_avx512::<true>(x, q, d, s),
                None => quantize_blocks_avx512::<false>(x, q, d, &mut []),
            }
        };
    }
    let mut s = s;
    for (b, (q, x)) in q.chunks_exact_mut(QB).zip(x.chunks_exact(QB)).enumerate() {
        let (scale, sum) = quantize_block(isa, x, q);
        d[b] = scale;
        if let Some(s) = s.as_deref_mut() {
            // Exact: |Σ q| ≤ 32 · 127 fits an f32 mantissa; one rounding in the product.
            s[b] = scale * sum as f32;
        }
    }
}

/// One block of 32: returns its scale and Σ q, writes `q + 128`.
fn quantize_block(isa: Isa, x: &[f32], q: &mut [u8]) -> (f32, i32) {
    #[cfg(target_arch = "aarch64")]
    if isa.is_neon() {
        // SAFETY: NEON detected; x and q hold 32 elements.
        return unsafe { quantize_block_neon(x, q) };
    }
    let _ = isa;
    let amax = x.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0;
    for (q, &v) in q.iter_mut().zip(x) {
        let i = (v * id).round_ties_even().clamp(-127.0, 127.0) as i32;
        sum += i;
        *q = (i + 128) as u8;
    }
    (d, sum)
}

/// AVX-512: the reference's steps, 16 blocks at a time. Their maxima are reduced together
/// ([`block_maxima`]) and their scales and inverses take one vector division each, where a
/// block alone waited on a horizontal maximum and then two scalar divisions in a row (2048 ×
/// 384 values, one thread: 9.5 → 6.7 ns a block; the old quantiser was ~10 % of a Q8_0
/// product's time with n = 1536, more with n = 384). Same results bit for bit, NaN
/// and infinities included: MAXPS returns its second operand where either is NaN, so a NaN is
/// skipped by the maximum (as by `f32::max`) and kept by the clamp (as by `clamp`); CVTPS2DQ
/// sends it to 0x80000000, whose low byte (VPMOVDB truncates) flipped is q + 128 for q = 0
/// (`NaN as i32`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn quantize_blocks_avx512<const SUMS: bool>(
    x: &[f32],
    q: &mut [u8],
    d: &mut [f32],
    s: &mut [f32],
) {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    let (lo, hi) = (_mm512_set1_ps(-127.0), _mm512_set1_ps(127.0));
    let flip = _mm256_set1_epi8(-128);
    for g0 in (0..d.len()).step_by(16) {
        let n = 16.min(d.len() - g0);
        let xp = x.as_ptr().add(g0 * QB);
        // |x| per block as one vector of 16 (blocks past the end: 0).
        let halves: [__m512; 16] = std::array::from_fn(|j| {
            if j >= n {
                return zero;
            }
            let v0 = _mm512_abs_ps(_mm512_loadu_ps(xp.add(j * QB)));
            let v1 = _mm512_abs_ps(_mm512_loadu_ps(xp.add(j * QB + 16)));
            _mm512_max_ps(v0, _mm512_max_ps(v1, zero))
        });
        let dv = _mm512_div_ps(block_maxima(halves), _mm512_set1_ps(127.0));
        let nonzero = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(dv, zero);
        let idv = _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(1.0), dv);
        let (mut scale, mut inv) = ([0.0f32; 16], [0.0f32; 16]);
        _mm512_storeu_ps(scale.as_mut_ptr(), dv);
        _mm512_storeu_ps(inv.as_mut_ptr(), idv);
        d[g0..g0 + n].copy_from_slice(&scale[..n]);
        for j in 0..n {
            let id = _mm512_set1_ps(inv[j]);
            let bytes = |h: usize| {
                let v = _mm512_mul_ps(_mm512_loadu_ps(xp.add(j * QB + 16 * h)), id);
                // cvtps rounds to nearest even under the default MXCSR, like round_ties_even.
                _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_min_ps(hi, _mm512_max_ps(lo, v))))
            };
            // The low byte of q with its top bit flipped is q + 128.
            let qb = _mm256_xor_si256(_mm256_set_m128i(bytes(1), bytes(0)), flip);
            _mm256_storeu_si256(q.as_mut_ptr().add((g0 + j) * QB) as *mut __m256i, qb);
            if SUMS {
                // Σ (q + 128) by SAD, in four 64-bit lanes.
                let sad = _mm256_sad_epu8(qb, _mm256_setzero_si256());
                let pair = _mm_add_epi64(
                    _mm256_castsi256_si128(sad),
                    _mm256_extracti128_si256::<1>(sad),
                );
                let sum = _mm_cvtsi128_si64(_mm_add_epi64(pair, _mm_unpackhi_epi64(pair, pair)));
                s[g0 + j] = scale[j] * (sum as i32 - 128 * QB as i32) as f32;
            }
        }
    }
}

/// The maximum of each of 16 vectors, as lane j of one vector: three rounds of pairing
/// (256-bit halves, then 128-bit quarters, then lanes), 46 instructions for 16 blocks where
/// a horizontal maximum each takes ~8. No NaN may be left in `v`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block_maxima(v: [std::arch::x86_64::__m512; 16]) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // Round 1: t[p] = [max of v[2p]'s halves | max of v[2p+1]'s halves], 4 quarters each.
    let t: [__m512; 8] = std::array::from_fn(|p| {
        let (a, b) = (v[2 * p], v[2 * p + 1]);
        _mm512_max_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xEE>(a, b),
        )
    });
    // Round 2: quarter L of u[i] holds 4 partial maxima of block 4i + L.
    let u: [__m512; 4] = std::array::from_fn(|i| {
        let (a, b) = (t[2 * i], t[2 * i + 1]);
        _mm512_max_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    });
    // Round 3, within each quarter L: lane 4L + i = the maximum of block 4i + L.
    let w01 = _mm512_max_ps(
        _mm512_unpacklo_ps(u[0], u[1]),
        _mm512_unpackhi_ps(u[0], u[1]),
    );
    let w23 = _mm512_max_ps(
        _mm512_unpacklo_ps(u[2], u[3]),
        _mm512_unpackhi_ps(u[2], u[3]),
    );
    let z = _mm512_max_ps(
        _mm512_shuffle_ps::<0x44>(w01, w23),
        _mm512_shuffle_ps::<0xEE>(w01, w23),
    );
    // Lane j = 4i + L from lane 4L + i.
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(idx, z)
}

/// The 32 weights of block `b` of a row, as i8 (clamped to ≥ -127), their scale and their
/// minimum (0 for formats without one).
fn weight_block(format: WeightFormat, row: &[u8], b: usize, out: &mut [i8; QB]) -> (f32, f32) {
    let f16 = |lo: u8, hi: u8| half::f16::from_le_bytes([lo, hi]).to_f32();
    // Q4_0 / Q4_1 nibbles: low nibbles are elements 0..16, high nibbles 16..32.
    let nibbles = |qs: &[u8], offset: i8, out: &mut [i8; QB]| {
        for (i, &v) in qs.iter().enumerate() {
            out[i] = (v & 0x0f) as i8 - offset;
            out[i + 16] = (v >> 4) as i8 - offset;
        }
    };
    match format {
        WeightFormat::Q8_0 => {
            let blk = &row[b * 34..(b + 1) * 34];
            for (o, &v) in out.iter_mut().zip(&blk[2..]) {
                *o = (v as i8).max(-127);
            }
            (f16(blk[0], blk[1]), 0.0)
        }
        WeightFormat::Q4_0 => {
            let blk = &row[b * 18..(b + 1) * 18];
            nibbles(&blk[2..], 8, out);
            (f16(blk[0], blk[1]), 0.0)
        }
        WeightFormat::Q4_1 => {
            let blk = &row[b * 20..(b + 1) * 20];
            nibbles(&blk[4..], 0, out);
            (f16(blk[0], blk[1]), f16(blk[2], blk[3]))
        }
        WeightFormat::Float(_) => unreachable!("float weights take the float path"),
    }
}

/// Packs weight rows `j0..j0+nb` (nb ≤ NRQ) of `k` elements into `p` (one panel).
fn pack_panel(
    format: WeightFormat,
    data: &[u8],
    row_bytes: usize,
    k: usize,
    j0: usize,
    nb: usize,
    p: &mut Panel,
) {
    let nblk = k / QB;
    p.q.resize(nblk * BLOCK_BYTES, 0);
    p.d.resize(nblk * NRQ, 0.0);
    p.corr.resize(nblk * NRQ, 0);
    let has_min = format == WeightFormat::Q4_1;
    p.m.resize(if has_min { nblk * NRQ } else { 0 }, 0.0);
    let mut w = [0i8; QB];
    for c in 0..NRQ {
        if c >= nb {
            for b in 0..nblk {
                p.d[b * NRQ + c] = 0.0;
                p.corr[b * NRQ + c] = 0;
                if has_min {
                    p.m[b * NRQ + c] = 0.0;
                }
                for g in 0..QB / 4 {
                    p.q[b * BLOCK_BYTES + g * NRQ * 4 + c * 4..][..4].fill(0);
                }
            }
            continue;
        }
        let row = &data[(j0 + c) * row_bytes..(j0 + c + 1) * row_bytes];
        for b in 0..nblk {
            let (d, m) = weight_block(format, row, b, &mut w);
            p.d[b * NRQ + c] = d;
            if has_min {
                p.m[b * NRQ + c] = m;
            }
            p.corr[b * NRQ + c] = -128 * w.iter().map(|&v| v as i32).sum::<i32>();
            for g in 0..QB / 4 {
                let dst = &mut p.q[b * BLOCK_BYTES + g * NRQ * 4 + c * 4..][..4];
                for (d, &v) in dst.iter_mut().zip(&w[g * 4..g * 4 + 4]) {
                    *d = v as u8;
                }
            }
        }
    }
}

/// Rows of the integer micro-kernels (6 with VNNI measured no faster).
pub(crate) const MRQ: usize = 4;

/// y[m×n] = x · Wᵀ for Q8_0 / Q4_0 / Q4_1 weights (k a multiple of 32).
#[allow(clippy::too_many_arguments)]
pub fn matmul_quant(
    isa: Isa,
    format: WeightFormat,
    x: &[f32],
    m: usize,
    data: &[u8],
    n: usize,
    k: usize,
    y: &mut [f32],
) {
    assert_eq!(k % QB, 0, "quantised matmul: k must be a multiple of 32");
    let row_bytes = format.row_bytes(k).expect("k checked above");
    // Taken out of the thread-local (not borrowed across the parallel loop) so that a nested
    // call on this thread, e.g. from work stealing, cannot find it borrowed.
    let mut qx = QX.with(|c| std::mem::take(&mut *c.borrow_mut()));
    quantize_rows(isa, x, m, k, format == WeightFormat::Q4_1, &mut qx);
    let nblocks = n.div_ceil(NRQ);
    let want = 4 * rayon::current_num_threads();
    let mblocks = want.div_ceil(nblocks).clamp(1, m.div_ceil(MRQ * 16).max(1));
    let mb = m.div_ceil(mblocks).div_ceil(MRQ) * MRQ;
    let mblocks = m.div_ceil(mb);
    let yp = SendPtr(y.as_mut_ptr());
    let qxr = &qx;
    (0..nblocks * mblocks).into_par_iter().for_each(|t| {
        let (jb, ib) = (t % nblocks, t / nblocks);
        let (j0, i0) = (jb * NRQ, ib * mb);
        let (ncols, nrows) = (NRQ.min(n - j0), mb.min(m - i0));
        PANEL.with(|cell| {
            let mut panel = cell.borrow_mut();
            pack_panel(format, data, row_bytes, k, j0, ncols, &mut panel);
            // SAFETY: rows i0..i0+nrows and columns j0..j0+ncols of y belong to this task.
            unsafe {
                tile_q(
                    isa,
                    nrows,
                    &qxr.q[i0 * k..],
                    &qxr.d[i0 * k / QB..],
                    qxr.s.get(i0 * k / QB..).unwrap_or(&[]),
                    k,
                    &panel,
                    yp.get().add(i0 * n + j0),
                    n,
                    ncols,
                    None,
                );
            }
        });
    });
    QX.with(|c| *c.borrow_mut() = qx);
}

/// Quantised weights packed once (per model load) for [`matmul_quant_packed`]: the panels
/// [`matmul_quant`] would build on every call.
pub struct PackedQuant {
    pub format: WeightFormat,
    pub n: usize,
    pub k: usize,
    panels: Vec<Panel>,
}

impl PackedQuant {
    /// Packs `n` rows of `k` values (k a multiple of 32) of a quantised `format` from `data`.
    pub fn pack(format: WeightFormat, data: &[u8], n: usize, k: usize) -> PackedQuant {
        assert_eq!(k % QB, 0, "quantised weights: k must be a multiple of 32");
        let row_bytes = format.row_bytes(k).expect("k checked above");
        assert_eq!(data.len(), n * row_bytes, "PackedQuant::pack: weight bytes");
        let panels = (0..n.div_ceil(NRQ))
            .into_par_iter()
            .map(|s| {
                let mut p = Panel::default();
                let j0 = s * NRQ;
                pack_panel(format, data, row_bytes, k, j0, NRQ.min(n - j0), &mut p);
                p
            })
            .collect();
        PackedQuant {
            format,
            n,
            k,
            panels,
        }
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.panels
            .iter()
            .map(|p| p.q.len() + 4 * (p.d.len() + p.corr.len() + p.m.len()))
            .sum()
    }
}

/// y[m×n] = x · Wᵀ (+ bias, n values) with W packed by [`PackedQuant::pack`], in the tasks
/// of a `TaskGrid`.
pub fn matmul_quant_packed(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &PackedQuant,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    matmul_quant_packed_many(isa, x, m, &mut [Product { w, bias, y }]);
}

/// Several products of the same x (each `w.k` = k = x.len() / m; the formats may differ):
/// x is quantised once, into this thread's reused buffers, and every product's tiles run in
/// one parallel region. Each y is bit for bit what [`matmul_quant_packed`] gives for its
/// weights alone.
pub fn matmul_quant_packed_many(
    isa: Isa,
    x: &[f32],
    m: usize,
    outs: &mut [Product<'_, PackedQuant>],
) {
    let Some(k) = outs.first().map(|o| o.w.k) else {
        return;
    };
    assert_eq!(x.len(), m * k, "matmul_quant_packed: x is not m×k");
    // Taken out of the thread-local (not borrowed across the parallel loop) so that a nested
    // call on this thread, e.g. from work stealing, cannot find it borrowed.
    let mut qx = QX.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let sums = outs.iter().any(|o| o.w.format == WeightFormat::Q4_1);
    quantize_rows(isa, x, m, k, sums, &mut qx);
    matmul_quant_packed_quantised(isa, &qx, m, outs);
    QX.with(|c| *c.borrow_mut() = qx);
}

/// y = x · Wᵀ (+ bias) for each product, the `m` rows of x quantised by [`quantize_rows`]
/// (every `w.k` must be their k), all tiles in one parallel region (see `MultiGrid`).
pub fn matmul_quant_packed_quantised(
    isa: Isa,
    qx: &QuantRows,
    m: usize,
    outs: &mut [Product<'_, PackedQuant>],
) {
    for o in outs.iter() {
        let (n, k) = (o.w.n, o.w.k);
        assert_eq!(qx.q.len(), m * k, "matmul_quant_packed: x is not m×k");
        assert_eq!(qx.d.len(), m * k / QB, "matmul_quant_packed: x is not m×k");
        assert_eq!(o.y.len(), m * n, "matmul_quant_packed: y is not m×n");
        assert!(
            o.w.format != WeightFormat::Q4_1 || qx.s.len() == qx.d.len(),
            "matmul_quant_packed: Q4_1 weights need the block sums"
        );
        assert!(
            o.bias.is_none_or(|b| b.len() == n),
            "matmul_quant_packed: bias is not n long"
        );
    }
    if m == 0 {
        return;
    }
    let grid = MultiGrid::new(m, MRQ, outs.iter().map(|o| o.w.panels.len()));
    // Raw output pointers, taken here from the exclusive borrows: tasks write disjoint tiles.
    let ys: Vec<SendPtr> = outs.iter_mut().map(|o| SendPtr(o.y.as_mut_ptr())).collect();
    let outs = &*outs;
    (0..grid.tasks()).into_par_iter().for_each(|t| {
        let (i0, nrows, panels) = grid.task(t);
        for g in panels {
            let (o, s) = grid.panel(g);
            let Product { w, bias, .. } = &outs[o];
            let (n, k) = (w.n, w.k);
            let j0 = s * NRQ;
            let ncols = NRQ.min(n - j0);
            // SAFETY: rows i0..i0+nrows and columns j0..j0+ncols of this product's y (m × n,
            // asserted above) belong to this task (`MultiGrid`).
            unsafe {
                tile_q(
                    isa,
                    nrows,
                    &qx.q[i0 * k..],
                    &qx.d[i0 * k / QB..],
                    qx.s.get(i0 * k / QB..).unwrap_or(&[]),
                    k,
                    &w.panels[s],
                    ys[o].get().add(i0 * n + j0),
                    n,
                    ncols,
                    bias.map(|b| &b[j0..j0 + ncols]),
                );
            }
        }
    });
}

/// `rows` × NRQ of y: c[i][j] = Σ_b d_x[i,b] · d_w[j,b] · (Σ_e q_x · q_w) [+ m_w[j,b] · s_x[i,b]]
/// [+ bias[j]] for j < nvalid (the first bracket where the panel has minima), MRQ rows at a
/// time. The bias is added while the tile is in registers or cache, not in a pass over y.
///
/// # Safety
/// `c` must cover `rows` rows of stride `ldc` with `nvalid` values; `qx`/`dx`/`sx` hold `rows`
/// rows of k quantised values / k/32 scales / k/32 sums; the ISA must be supported.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile_q(
    isa: Isa,
    rows: usize,
    qx: &[u8],
    dx: &[f32],
    sx: &[f32],
    k: usize,
    p: &Panel,
    c: *mut f32,
    ldc: usize,
    nvalid: usize,
    bias: Option<&[f32]>,
) {
    let nblk = k / QB;
    assert!(bias.is_none_or(|b| b.len() == nvalid));
    assert!(qx.len() >= rows * k && dx.len() >= rows * nblk && p.q.len() >= nblk * BLOCK_BYTES);
    let has_min = !p.m.is_empty();
    assert!(!has_min || (sx.len() >= rows * nblk && p.m.len() >= nblk * NRQ));
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni {
        // Straight into y with masked stores (a staging tile costs ~10 % at k = 384); the row
        // loop inside the kernel's own target features, so the 4-row kernel is inlined.
        let (m0, m1) = masks(nvalid);
        let tail = Tail { m0, m1, bias };
        if has_min {
            rows_vnni::<true>(rows, qx, dx, sx, k, p, c, ldc, tail);
        } else {
            rows_vnni::<false>(rows, qx, dx, sx, k, p, c, ldc, tail);
        }
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if isa.is_neon() {
        // SAFETY: this function's contract (asserted sizes above); SDOT only for NeonDot.
        rows_neon(isa, rows, qx, dx, sx, k, p, c, ldc, nvalid, bias);
        return;
    }
    for i in (0..rows).step_by(MRQ) {
        let r = MRQ.min(rows - i);
        let (qx, dx, sx) = row_group(qx, dx, sx, k, i);
        let mut out = [[0.0f32; NRQ]; MRQ];
        // Instantiated with and without the minimum term: Q8_0 / Q4_0 pay nothing for Q4_1.
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => match (r, has_min) {
                (1, false) => kernel_avx2::<1, false>(qx, dx, sx, k, p, &mut out),
                (2, false) => kernel_avx2::<2, false>(qx, dx, sx, k, p, &mut out),
                (3, false) => kernel_avx2::<3, false>(qx, dx, sx, k, p, &mut out),
                (4, false) => kernel_avx2::<4, false>(qx, dx, sx, k, p, &mut out),
                (1, true) => kernel_avx2::<1, true>(qx, dx, sx, k, p, &mut out),
                (2, true) => kernel_avx2::<2, true>(qx, dx, sx, k, p, &mut out),
                (3, true) => kernel_avx2::<3, true>(qx, dx, sx, k, p, &mut out),
                (4, true) => kernel_avx2::<4, true>(qx, dx, sx, k, p, &mut out),
                _ => unreachable!(),
            },
            _ => kernel_scalar(r, qx, dx, sx, k, p, &mut out),
        }
        for (ii, o) in out.iter_mut().enumerate().take(r) {
            if let Some(b) = bias {
                for (v, &b) in o.iter_mut().zip(b) {
                    *v += b;
                }
            }
            std::ptr::copy_nonoverlapping(o.as_ptr(), c.add((i + ii) * ldc), nvalid);
        }
    }
}

/// The quantised activations from row `i` on: values (k per row), scales and sums (k/32 per
/// row; the sums are empty for formats without a minimum).
pub(crate) fn row_group<'a>(
    qx: &'a [u8],
    dx: &'a [f32],
    sx: &'a [f32],
    k: usize,
    i: usize,
) -> (&'a [u8], &'a [f32], &'a [f32]) {
    let nblk = k / QB;
    (
        &qx[i * k..],
        &dx[i * nblk..],
        sx.get(i * nblk..).unwrap_or(&[]),
    )
}

/// The VNNI row loop: MRQ rows at a time (fewer for the last group).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_vnni<const MIN: bool>(
    rows: usize,
    qx: &[u8],
    dx: &[f32],
    sx: &[f32],
    k: usize,
    p: &Panel,
    c: *mut f32,
    ldc: usize,
    tail: Tail,
) {
    for i in (0..rows).step_by(MRQ) {
        let (q, d, s) = row_group(qx, dx, sx, k, i);
        let c = c.add(i * ldc);
        match MRQ.min(rows - i) {
            4 => kernel_vnni::<4, MIN>(q, d, s, k, p, c, ldc, tail),
            3 => kernel_vnni::<3, MIN>(q, d, s, k, p, c, ldc, tail),
            2 => kernel_vnni::<2, MIN>(q, d, s, k, p, c, ldc, tail),
            1 => kernel_vnni::<1, MIN>(q, d, s, k, p, c, ldc, tail),
            _ => unreachable!(),
        }
    }
}

/// How the VNNI kernel ends a tile: store masks for its two 16-column halves, and the bias
/// of its columns.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Tail<'a> {
    m0: u16,
    m1: u16,
    bias: Option<&'a [f32]>,
}

/// Store masks for the two 16-column halves of a tile with `nvalid` columns.
#[cfg(target_arch = "x86_64")]
fn masks(nvalid: usize) -> (u16, u16) {
    let bits = |n: usize| if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
    (bits(nvalid), bits(nvalid.saturating_sub(16)))
}

/// The reference: the same sums in plain integer arithmetic, scaled the same way.
#[allow(clippy::needless_range_loop)] // indices spell out the packed layout
fn kernel_scalar(
    r: usize,
    qx: &[u8],
    dx: &[f32],
    sx: &[f32],
    k: usize,
    p: &Panel,
    out: &mut [[f32; NRQ]; MRQ],
) {
    let nblk = k / QB;
    for i in 0..r {
        for j in 0..NRQ {
            let mut acc = 0.0f32;
            for b in 0..nblk {
                let mut s = p.corr[b * NRQ + j];
                for e in 0..QB {
                    let w = p.q[b * BLOCK_BYTES + (e / 4) * NRQ * 4 + j * 4 + e % 4] as i8 as i32;
                    s += qx[i * k + b * QB + e] as i32 * w;
                }
                acc = (s as f32).mul_add(p.d[b * NRQ + j] * dx[i * nblk + b], acc);
                if !p.m.is_empty() {
                    acc = p.m[b * NRQ + j].mul_add(sx[i * nblk + b], acc);
                }
            }
            out[i][j] = acc;
        }
    }
}

/// acc + Σ of four u8·i8 products per lane (VPDPBUSD). Inline assembly so that no tuning
/// of LLVM's can split it into several instructions (it does so for VPDPWSSD).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
unsafe fn dpbusd(
    mut acc: std::arch::x86_64::__m512i,
    a: std::arch::x86_64::__m512i,
    b: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    std::arch::asm!(
        "vpdpbusd {acc}, {a}, {b}",
        acc = inout(zmm_reg) acc,
        a = in(zmm_reg) a,
        b = in(zmm_reg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn kernel_vnni<const R: usize, const MIN: bool>(
    qx: &[u8],
    dx: &[f32],
    sx: &[f32],
    k: usize,
    p: &Panel,
    c: *mut f32,
    ldc: usize,
    tail: Tail,
) {
    use std::arch::x86_64::*;
    let Tail { m0, m1, bias } = tail;
    let nblk = k / QB;
    let mut f0 = [_mm512_setzero_ps(); R];
    let mut f1 = [_mm512_setzero_ps(); R];
    let (qp, dp, cp) = (p.q.as_ptr(), p.d.as_ptr(), p.corr.as_ptr());
    let xp = qx.as_ptr();
    // The tile's lines of y are written once, at the end, and are usually not cached (y is
    // megabytes): fetched for writing now, while the integer sums run, instead of stalling the
    // stores (~30 % of the run time at 1024×384×1536 without). Three lines cover 32 floats at
    // any alignment.
    for i in 0..R {
        for o in [0, 16, 31] {
            _mm_prefetch::<_MM_HINT_ET0>(c.add(i * ldc + o) as *const i8);
        }
    }
    for b in 0..nblk {
        let c0 = _mm512_loadu_si512(cp.add(b * NRQ) as *const _);
        let c1 = _mm512_loadu_si512(cp.add(b * NRQ + 16) as *const _);
        let mut s0 = [c0; R];
        let mut s1 = [c1; R];
        let wb = qp.add(b * BLOCK_BYTES);
        for g in 0..QB / 4 {
            let w0 = _mm512_loadu_si512(wb.add(g * NRQ * 4) as *const _);
            let w1 = _mm512_loadu_si512(wb.add(g * NRQ * 4 + 64) as *const _);
            for i in 0..R {
                let xv = _mm512_set1_epi32(
                    (xp.add(i * k + b * QB + g * 4) as *const i32).read_unaligned(),
                );
                s0[i] = dpbusd(s0[i], xv, w0);
                s1[i] = dpbusd(s1[i], xv, w1);
            }
        }
        let d0 = _mm512_loadu_ps(dp.add(b * NRQ));
        let d1 = _mm512_loadu_ps(dp.add(b * NRQ + 16));
        for i in 0..R {
            let dxv = _mm512_set1_ps(*dx.get_unchecked(i * nblk + b));
            f0[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0[i]), _mm512_mul_ps(d0, dxv), f0[i]);
            f1[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1[i]), _mm512_mul_ps(d1, dxv), f1[i]);
        }
        if MIN {
            let mp = p.m.as_ptr().add(b * NRQ);
            let (mw0, mw1) = (_mm512_loadu_ps(mp), _mm512_loadu_ps(mp.add(16)));
            for i in 0..R {
                let sxv = _mm512_set1_ps(*sx.get_unchecked(i * nblk + b));
                f0[i] = _mm512_fmadd_ps(mw0, sxv, f0[i]);
                f1[i] = _mm512_fmadd_ps(mw1, sxv, f1[i]);
            }
        }
    }
    if let Some(b) = bias {
        let b0 = _mm512_maskz_loadu_ps(m0, b.as_ptr());
        // Past the end when nvalid ≤ 16: the mask is then 0 and nothing is read.
        let b1 = _mm512_maskz_loadu_ps(m1, b.as_ptr().wrapping_add(16));
        for i in 0..R {
            f0[i] = _mm512_add_ps(f0[i], b0);
            f1[i] = _mm512_add_ps(f1[i], b1);
        }
    }
    for i in 0..R {
        _mm512_mask_storeu_ps(c.add(i * ldc), m0, f0[i]);
        _mm512_mask_storeu_ps(c.add(i * ldc + 16), m1, f1[i]);
    }
}

/// AVX2: the sign trick (|x| · sign(w, x) with maddubs) on un-offset activations, so the
/// correction term is not needed. Four groups of 8 columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2<const R: usize, const MIN: bool>(
    qx: &[u8],
    dx: &[f32],
    sx: &[f32],
    k: usize,
    p: &Panel,
    out: &mut [[f32; NRQ]; MRQ],
) {
    use std::arch::x86_64::*;
    let nblk = k / QB;
    let ones = _mm256_set1_epi16(1);
    let flip = _mm256_set1_epi8(-128);
    let (qp, dp) = (p.q.as_ptr(), p.d.as_ptr());
    let xp = qx.as_ptr();
    for half in 0..2 {
        let mut f0 = [_mm256_setzero_ps(); R];
        let mut f1 = [_mm256_setzero_ps(); R];
        for b in 0..nblk {
            let mut s0 = [_mm256_setzero_si256(); R];
            let mut s1 = [_mm256_setzero_si256(); R];
            let wb = qp.add(b * BLOCK_BYTES + half * 64);
            for g in 0..QB / 4 {
                let w0 = _mm256_loadu_si256(wb.add(g * NRQ * 4) as *const _);
                let w1 = _mm256_loadu_si256(wb.add(g * NRQ * 4 + 32) as *const _);
                for i in 0..R {
                    let raw = (xp.add(i * k + b * QB + g * 4) as *const i32).read_unaligned();
                    // q + 128 → q as a signed byte.
                    let xs = _mm256_xor_si256(_mm256_set1_epi32(raw), flip);
                    let xa = _mm256_abs_epi8(xs);
                    let p0 =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(xa, _mm256_sign_epi8(w0, xs)), ones);
                    let p1 =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(xa, _mm256_sign_epi8(w1, xs)), ones);
                    s0[i] = _mm256_add_epi32(s0[i], p0);
                    s1[i] = _mm256_add_epi32(s1[i], p1);
                }
            }
            let d0 = _mm256_loadu_ps(dp.add(b * NRQ + half * 16));
            let d1 = _mm256_loadu_ps(dp.add(b * NRQ + half * 16 + 8));
            for i in 0..R {
                let dxv = _mm256_set1_ps(*dx.get_unchecked(i * nblk + b));
                f0[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0[i]), _mm256_mul_ps(d0, dxv), f0[i]);
                f1[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1[i]), _mm256_mul_ps(d1, dxv), f1[i]);
            }
            if MIN {
                let mp = p.m.as_ptr().add(b * NRQ + half * 16);
                let (mw0, mw1) = (_mm256_loadu_ps(mp), _mm256_loadu_ps(mp.add(8)));
                for i in 0..R {
                    let sxv = _mm256_set1_ps(*sx.get_unchecked(i * nblk + b));
                    f0[i] = _mm256_fmadd_ps(mw0, sxv, f0[i]);
                    f1[i] = _mm256_fmadd_ps(mw1, sxv, f1[i]);
                }
            }
        }
        for i in 0..R {
            _mm256_storeu_ps(out[i].as_mut_ptr().add(half * 16), f0[i]);
            _mm256_storeu_ps(out[i].as_mut_ptr().add(half * 16 + 8), f1[i]);
        }
    }
}
