//! Matrix products of activations with weights: y[m×n] = x[m×k] · Wᵀ, W stored as n rows of k.

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
