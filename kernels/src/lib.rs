//! Quiver's compute kernels: pure functions on slices. No I/O, no model knowledge, no GPU.
//!
//! Every SIMD path has a scalar reference beside it, and tests compare the two on random data.

pub mod attention;
pub mod attention_fast;
pub mod attention_fused;
pub mod matmul;
pub mod ops;
pub mod ops_fast;
pub mod quant;
pub mod rope;
