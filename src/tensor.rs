//! Weight views: a GGML dtype, a shape and the bytes borrowed from the model file.
//!
//! This is the one place that knows the block sizes of every GGML dtype. The block layouts
//! themselves (and their scalar dequantisation) live beside the kernels that consume them, in
//! `quiver_kernels::quant`.

use quiver_kernels::quant;
use std::fmt;

/// GGML tensor element types Quiver can read. The discriminant is GGML's type id.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    BF16 = 30,
}

impl DType {
    pub const ALL: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ];

    pub fn from_ggml(id: u32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| *d as u32 == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q8_0 => "Q8_0",
            DType::Q2_K => "Q2_K",
            DType::Q3_K => "Q3_K",
            DType::Q4_K => "Q4_K",
            DType::Q5_K => "Q5_K",
            DType::Q6_K => "Q6_K",
        }
    }

    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(name))
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            DType::F32 => (1, 4),
            DType::F16 | DType::BF16 => (1, 2),
            DType::Q4_0 => (quant::QK, quant::BlockQ4_0::BYTES),
            DType::Q4_1 => (quant::QK, quant::BlockQ4_1::BYTES),
            DType::Q5_0 => (quant::QK, quant::BlockQ5_0::BYTES),
            DType::Q5_1 => (quant::QK, quant::BlockQ5_1::BYTES),
            DType::Q8_0 => (quant::QK, quant::BlockQ8_0::BYTES),
            DType::Q2_K => (quant::QK_K, quant::BlockQ2K::BYTES),
            DType::Q3_K => (quant::QK_K, quant::BlockQ3K::BYTES),
            DType::Q4_K => (quant::QK_K, quant::BlockQ4K::BYTES),
            DType::Q5_K => (quant::QK_K, quant::BlockQ5K::BYTES),
            DType::Q6_K => (quant::QK_K, quant::BlockQ6K::BYTES),
        }
    }

    /// Bytes taken by `n` elements, or None when `n` is not a whole number of blocks (or
    /// overflows).
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let (elems, bytes) = self.block();
        if !n.is_multiple_of(elems as u64) {
            return None;
        }
        (n / elems as u64).checked_mul(bytes as u64)
    }

    /// Bits per weight, for display.
    pub fn bits_per_weight(self) -> f64 {
        let (elems, bytes) = self.block();
        bytes as f64 * 8.0 / elems as f64
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor inside a model file. `shape` is in GGML order: `shape[0]` is the length of a row
/// (the contiguous dimension), so a matrix `[n_in, n_out]` is `n_out` rows of `n_in` values.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub dtype: DType,
    pub shape: [usize; 4],
    pub n_dims: usize,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Elements in one row (GGML's ne\[0\]).
    pub fn row_len(&self) -> usize {
        self.shape[0]
    }

    /// Number of rows: the product of every dimension past the first.
    pub fn n_rows(&self) -> usize {
        self.shape[1..].iter().product()
    }

    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        let (elems, bytes) = self.dtype.block();
        self.row_len() / elems * bytes
    }

    /// The bytes of row `i`.
    pub fn row(&self, i: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[i * rb..(i + 1) * rb]
    }

    /// Dequantises row `i` into `out` (`out.len() == row_len()`).
    pub fn dequantize_row(&self, i: usize, out: &mut [f32]) {
        dequantize(self.dtype, self.row(i), out);
    }

    /// The whole tensor as f32 values.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.n_elements()];
        dequantize(self.dtype, self.data, &mut out);
        out
    }
}

/// Dequantises `bytes` (whole blocks of `dtype`) into `out`, one f32 per element.
///
/// Panics if `out.len()` does not match the number of elements in `bytes`: callers hold
/// validated tensor views, so a mismatch is a bug, not bad input.
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    let (elems, bsize) = dtype.block();
    assert_eq!(
        bytes.len() / bsize * elems,
        out.len(),
        "dequantize: size mismatch"
    );
    assert_eq!(bytes.len() % bsize, 0, "dequantize: partial block");
    match dtype {
        DType::F32 => quant::f32_to_float(bytes, out),
        DType::F16 => quant::f16_to_float(bytes, out),
        DType::BF16 => quant::bf16_to_float(bytes, out),
        DType::Q4_0 => quant::BlockQ4_0::to_float(bytes, out),
        DType::Q4_1 => quant::BlockQ4_1::to_float(bytes, out),
        DType::Q5_0 => quant::BlockQ5_0::to_float(bytes, out),
        DType::Q5_1 => quant::BlockQ5_1::to_float(bytes, out),
        DType::Q8_0 => quant::BlockQ8_0::to_float(bytes, out),
        DType::Q2_K => quant::BlockQ2K::to_float(bytes, out),
        DType::Q3_K => quant::BlockQ3K::to_float(bytes, out),
        DType::Q4_K => quant::BlockQ4K::to_float(bytes, out),
        DType::Q5_K => quant::BlockQ5K::to_float(bytes, out),
        DType::Q6_K => quant::BlockQ6K::to_float(bytes, out),
    }
}
