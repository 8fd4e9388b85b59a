//! From hidden states to the vectors a client gets: pooling, normalisation, `dimensions`, and
//! Ollama's truncation rules.

use std::fmt;
use std::ops::Range;

/// How the hidden states of a sequence become one vector (llama.cpp's `pooling_type` codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// No pooling: the model is not an embedding model as such.
    None,
    Mean,
    Cls,
    Last,
}

impl Pooling {
    pub fn from_gguf(code: u64) -> Option<Pooling> {
        match code {
            0 => Some(Pooling::None),
            1 => Some(Pooling::Mean),
            2 => Some(Pooling::Cls),
            3 => Some(Pooling::Last),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pooling::None => "none",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        }
    }
}

/// Pools each sequence's rows of `hidden` (`dim` wide). `Pooling::None` falls back to the last
/// token, as Ollama does for models without a pooling type.
pub fn pool(hidden: &[f32], dim: usize, seqs: &[Range<usize>], pooling: Pooling) -> Vec<Vec<f32>> {
    seqs.iter()
        .map(|s| {
            let row = |t: usize| &hidden[t * dim..(t + 1) * dim];
            if s.is_empty() {
                return vec![0.0; dim];
            }
            match pooling {
                Pooling::Cls => row(s.start).to_vec(),
                Pooling::Last | Pooling::None => row(s.end - 1).to_vec(),
                Pooling::Mean => {
                    let mut acc = vec![0.0f64; dim];
                    for t in s.clone() {
                        for (a, &v) in acc.iter_mut().zip(row(t)) {
                            *a += v as f64;
                        }
                    }
                    acc.iter().map(|&a| (a / s.len() as f64) as f32).collect()
                }
            }
        })
        .collect()
}

/// L2 norm.
pub fn norm(v: &[f32]) -> f32 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt() as f32
}

/// `v / max(|v|, 1e-12)`, in place.
pub fn normalize(v: &mut [f32]) {
    let n = norm(v).max(1e-12);
    for x in v {
        *x /= n;
    }
}

/// Matryoshka `dimensions`: keep the first `dims` values, then normalise again.
pub fn truncate_dims(v: &mut Vec<f32>, dims: usize) {
    if dims < v.len() {
        v.truncate(dims);
        normalize(v);
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EmbedError {
    /// `truncate: false` and the input has more tokens than the context allows.
    TooLong,
    /// Not even the special tokens fit in the context.
    NothingFits,
    /// The forward pass produced NaN or Inf.
    NotFinite,
    /// The model cannot produce embeddings (e.g. a tokenizer or shape problem at run time).
    Model(String),
}

impl fmt::Display for EmbedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmbedError::TooLong => f.write_str("the input length exceeds the context length"),
            EmbedError::NothingFits => {
                f.write_str("input after truncation exceeds maximum context length")
            }
            EmbedError::NotFinite => f.write_str("embedding contains NaN or Inf values"),
            EmbedError::Model(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for EmbedError {}

/// Fits `prefix + content + suffix` into `limit` tokens by Ollama's rules: with `truncate` the
/// content is cut so that it fits with its special tokens; without it, too long is an error.
pub fn fit_to_context(
    prefix: &[u32],
    content: &[u32],
    suffix: &[u32],
    limit: usize,
    truncate: bool,
) -> Result<Vec<u32>, EmbedError> {
    let specials = prefix.len() + suffix.len();
    if specials + content.len() > limit && !truncate {
        return Err(EmbedError::TooLong);
    }
    // Not even the special tokens (or, for a model without any, one token) fit.
    if limit < specials.max(1) {
        return Err(EmbedError::NothingFits);
    }
    let keep = content.len().min(limit - specials);
    let mut ids = Vec::with_capacity(specials + keep);
    ids.extend_from_slice(prefix);
    ids.extend_from_slice(&content[..keep]);
    ids.extend_from_slice(suffix);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_averages_each_sequence_alone() {
        let hidden = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0];
        let out = pool(&hidden, 2, &[0..2, 2..3], Pooling::Mean);
        assert_eq!(out, vec![vec![2.0, 3.0], vec![10.0, 20.0]]);
        assert_eq!(
            pool(&hidden, 2, std::slice::from_ref(&(0..2)), Pooling::Cls),
            vec![vec![1.0, 2.0]]
        );
        assert_eq!(
            pool(&hidden, 2, std::slice::from_ref(&(0..3)), Pooling::Last),
            vec![vec![10.0, 20.0]]
        );
    }

    #[test]
    fn normalize_and_dimensions() {
        let mut v = vec![3.0, 4.0, 12.0];
        truncate_dims(&mut v, 2);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }

    #[test]
    fn truncation_follows_ollama() {
        let (p, s) = ([101], [102]);
        let content = [1, 2, 3, 4, 5, 6];
        assert_eq!(
            fit_to_context(&p, &content, &s, 3, true).unwrap(),
            vec![101, 1, 102]
        );
        assert_eq!(
            fit_to_context(&p, &content, &s, 2, true).unwrap(),
            vec![101, 102]
        );
        assert_eq!(
            fit_to_context(&p, &content, &s, 1, true),
            Err(EmbedError::NothingFits)
        );
        assert_eq!(
            fit_to_context(&p, &content, &s, 0, true),
            Err(EmbedError::NothingFits)
        );
        assert_eq!(
            fit_to_context(&p, &content, &s, 3, false),
            Err(EmbedError::TooLong)
        );
        assert_eq!(fit_to_context(&p, &content, &s, 8, false).unwrap().len(), 8);
        assert_eq!(
            fit_to_context(&[], &content, &[], 0, true),
            Err(EmbedError::NothingFits)
        );
    }
}
