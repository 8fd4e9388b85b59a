//! Matrix products of activations with weights: y[m×n] = x[m×k] · Wᵀ, W stored as n rows of k.
//!
//! - `float`: f32 / f16 / bf16 weights, packed into f32 panels, FMA micro-kernel.
//! - `q8`: Q8_0 / Q4_0 / Q4_1 weights, activations quantised per row to 8-bit blocks of 32,
//!   integer dot products (VPDPBUSD with AVX-512 VNNI, maddubs with AVX2, SDOT or SMULL on
//!   NEON), per-block scales.
//! - `int16`: float weights packed once per load to 13-bit integers (a scale per 128 values),
//!   activations likewise per call, pair dot products (VPDPWSSD / VPMADDWD, SMLAL on NEON):
//!   the fast path for f16 / bf16 models.
//! - `isa`: run-time choice of instruction set (x86-64 AVX2 / AVX-512 / VNNI, aarch64 NEON
//!   with or without the dot product); `peak`: the machine's FMA peak, for benches.
//!
//! Every path is tested against [`matmul_f32_ref`] on dequantised weights.
//!
//! Batch invariance: row i of y depends on row i of x and on W alone, never on m, on the
//! row's place among the others or on the thread count. Each output is summed by one
//! micro-kernel in one order over k (k chunks in ascending order, each a sequential chain),
//! and tile sizes and task grids only decide which outputs a task computes. So an embedding
//! has the same bits alone or in any batch. There is deliberately no separate few-rows path:
//! the dot-product kernels once used for m ≤ 4 summed k in another order (the 0.9997 cosine
//! of SmolLM2's "Pizza is delicious" alone against inside a batch of 18), and over packed
//! 8-bit weights the tiles measured 3–9× faster than them at m = 1–4 anyway.

pub mod float;
pub mod int16;
pub mod isa;
pub mod pack;
pub mod peak;
pub mod q8;
#[cfg(target_arch = "aarch64")]
mod q8_neon;

pub use isa::Isa;
use std::ops::Range;

/// Scalar reference: every other matmul path is tested against this.
pub fn matmul_f32_ref(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, y: &mut [f32]) {
    assert_eq!(x.len(), m * k);
    assert_eq!(w.len(), n * k);
    assert_eq!(y.len(), m * n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += x[i * k + p] * w[j * k + p];
            }
            y[i * n + j] = acc;
        }
    }
}

/// Weight element types with a float path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatFormat {
    F32,
    F16,
    BF16,
}

impl FloatFormat {
    pub fn bytes(self) -> usize {
        match self {
            FloatFormat::F32 => 4,
            FloatFormat::F16 | FloatFormat::BF16 => 2,
        }
    }
}

/// Weight formats these kernels multiply directly (anything else: dequantise first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    Float(FloatFormat),
    /// Blocks of 32: f16 scale then 32 × i8.
    Q8_0,
    /// Blocks of 32: f16 scale then 16 bytes of nibbles (low nibbles = elements 0..16).
    Q4_0,
    /// Blocks of 32: f16 scale d, f16 minimum m, then 16 bytes of unsigned nibbles q (same
    /// order as Q4_0); x = d · q + m.
    Q4_1,
}

impl WeightFormat {
    /// Bytes of one row of `k` elements, or None if `k` is not a whole number of blocks.
    pub fn row_bytes(self, k: usize) -> Option<usize> {
        match self {
            WeightFormat::Float(f) => Some(k * f.bytes()),
            WeightFormat::Q8_0 => k.is_multiple_of(32).then_some(k / 32 * 34),
            WeightFormat::Q4_0 => k.is_multiple_of(32).then_some(k / 32 * 18),
            WeightFormat::Q4_1 => k.is_multiple_of(32).then_some(k / 32 * 20),
        }
    }
}

/// A weight matrix: `n` rows of `k` elements in `format`, borrowed from the model file.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    pub format: WeightFormat,
    pub data: &'a [u8],
    pub n: usize,
    pub k: usize,
}

/// y[m×n] = x[m×k] · Wᵀ on the best instruction set of this machine, in parallel (rayon).
pub fn matmul(x: &[f32], m: usize, w: &Weights, y: &mut [f32]) {
    matmul_with(Isa::detect(), x, m, w, y)
}

/// [`matmul`] on a given instruction set (which must be one of [`Isa::available`]).
pub fn matmul_with(isa: Isa, x: &[f32], m: usize, w: &Weights, y: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    assert_eq!(x.len(), m * k, "matmul: x is not m×k");
    assert_eq!(y.len(), m * n, "matmul: y is not m×n");
    assert_eq!(
        Some(w.data.len()),
        w.format.row_bytes(k).map(|r| r * n),
        "matmul: weight bytes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    // One path per format whatever m is: a row's result must not depend on how many rows
    // share the call (see the module note on batch invariance).
    match w.format {
        WeightFormat::Float(f) => float::matmul_float(isa, f, x, m, w.data, n, k, y),
        WeightFormat::Q8_0 | WeightFormat::Q4_0 | WeightFormat::Q4_1 => {
            q8::matmul_quant(isa, w.format, x, m, w.data, n, k, y)
        }
    }
}

/// How a product over pre-packed weights is cut into parallel tasks: blocks of at most 96 rows
/// × groups of column panels. Within a task each panel's output tile stays in cache across
/// the k chunks, and the row block's quantised activations stay in L2 across the panels. Few
/// rows (one query) make one row block, with the panels split so that every thread gets work.
///
/// At least 16 tasks per thread: at the end of a product one thread may wait for another's
/// last task, and the two cores of this VM do not keep pace with each other. With 4 per
/// thread, 1024 rows made 11 tasks of a whole row block each; with 16, 33 (2 threads,
/// alternated, best of 20): Q8_0 1024×384×1536 650 → 700 GOP/s, 1024×1536×384 630 → 675,
/// 2000 rows 650 → 684 and 620 → 646; f16 1024×384×1536 390 → 418, 2048 rows unchanged
/// (400).
pub(crate) struct TaskGrid {
    m: usize,
    panels: usize,
    /// Rows per block (a multiple of the micro-kernel's rows), and panels per group.
    mb: usize,
    pg: usize,
    pgroups: usize,
}

impl TaskGrid {
    const MAX_ROWS: usize = 96;

    /// The grid for `m` rows, a micro-kernel of `mr` rows and `panels` column panels.
    pub fn new(m: usize, mr: usize, panels: usize) -> TaskGrid {
        let mb = Self::MAX_ROWS.min(m.div_ceil(mr) * mr).max(1);
        let mblocks = m.div_ceil(mb);
        let want = 16 * rayon::current_num_threads();
        let pg = panels
            .div_ceil(want.div_ceil(mblocks).clamp(1, panels.max(1)))
            .max(1);
        TaskGrid {
            m,
            panels,
            mb,
            pg,
            pgroups: panels.div_ceil(pg),
        }
    }

    pub fn tasks(&self) -> usize {
        self.m.div_ceil(self.mb) * self.pgroups
    }

    /// Task `t`: its first row, its number of rows and its panels.
    pub fn task(&self, t: usize) -> (usize, usize, Range<usize>) {
        let (ib, g) = (t / self.pgroups, t % self.pgroups);
        let i0 = ib * self.mb;
        let panels = g * self.pg..((g + 1) * self.pg).min(self.panels);
        (i0, self.mb.min(self.m - i0), panels)
    }
}

/// One of several products of the same activations: y = x · Wᵀ (+ bias, n values), W packed
/// (`W` is [`int16::PackedI16`] or [`q8::PackedQuant`]). Several are run together so that x
/// is quantised once and their tiles share one parallel region.
pub struct Product<'a, W> {
    pub w: &'a W,
    pub bias: Option<&'a [f32]>,
    pub y: &'a mut [f32],
}

/// The tasks of several products of one input in one parallel region: each product's own
/// [`TaskGrid`] (the tiles and order a call of its own would run), one after another. A
/// thread thus works through one weight matrix at a time, as with separate calls, but there
/// is no barrier between the matrices: a thread done with its share of one goes on to the
/// next. (One grid over all the products' panels, so that a row block meets every matrix in
/// turn, measured no better on all-minilm's Q/K/V and a little worse on gate/up: see
/// `examples/shared_input.rs`.)
///
/// Column panels are numbered one product after another: global panel `g` is panel `s` of
/// product `o` ([`MultiGrid::panel`]).
pub(crate) struct MultiGrid {
    /// Per product: its first global panel; then the total.
    starts: Vec<usize>,
    /// Per product: its first task and its grid.
    grids: Vec<(usize, TaskGrid)>,
    tasks: usize,
}

impl MultiGrid {
    /// The grids for `m` rows, a micro-kernel of `mr` rows and each product's column panels.
    pub fn new(m: usize, mr: usize, panels: impl Iterator<Item = usize>) -> MultiGrid {
        let (mut starts, mut grids, mut tasks) = (vec![0], Vec::new(), 0);
        for p in panels {
            starts.push(starts.last().unwrap() + p);
            let g = TaskGrid::new(m, mr, p);
            grids.push((tasks, g));
            tasks += grids.last().unwrap().1.tasks();
        }
        MultiGrid {
            starts,
            grids,
            tasks,
        }
    }

    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// Task `t`: its first row, its number of rows and its global panels.
    pub fn task(&self, t: usize) -> (usize, usize, Range<usize>) {
        // A handful of products: a linear search. (A product without columns has no tasks,
        // and the same first task as the next: the last whose first task ≤ t owns t.)
        let o = self
            .grids
            .iter()
            .rposition(|&(first, _)| first <= t)
            .unwrap();
        let (first, ref g) = self.grids[o];
        let (i0, rows, panels) = g.task(t - first);
        let s0 = self.starts[o];
        (i0, rows, s0 + panels.start..s0 + panels.end)
    }

    /// Global panel `g`: its product and its panel there.
    pub fn panel(&self, g: usize) -> (usize, usize) {
        let o = self.starts.partition_point(|&s| s <= g) - 1;
        (o, g - self.starts[o])
    }
}

/// A raw output pointer shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: every task writes only its own tile of the output (see the callers).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
pub(crate) mod tests;
