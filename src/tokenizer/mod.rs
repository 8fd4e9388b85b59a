//! Tokenizers built from a GGUF file's `tokenizer.ggml.*` metadata, behind one trait.

pub mod bpe;
mod charsmap;
mod normalize;
pub mod spm;
pub mod ugm;
mod wordpiece;

pub use bpe::BytePairEncoding;
pub use spm::SentencePieceBpe;
pub use ugm::Unigram;
pub use wordpiece::WordPiece;

use crate::gguf::Gguf;
use std::fmt;

pub trait Tokenizer: Send + Sync {
    /// Token ids of `text`, without any special tokens.
    fn tokenize(&self, text: &str) -> Vec<u32>;
    /// Ids placed before every sequence (`[CLS]` for BERT, BOS where the model adds one).
    fn prefix(&self) -> &[u32];
    /// Ids placed after every sequence (`[SEP]` for BERT, EOS where the model adds one).
    fn suffix(&self) -> &[u32];
    /// Number of entries in the vocabulary.
    fn vocab_size(&self) -> usize;

    /// `prefix + tokenize(text) + suffix`.
    fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = self.prefix().to_vec();
        ids.extend(self.tokenize(text));
        ids.extend_from_slice(self.suffix());
        ids
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerError {
    /// `tokenizer.ggml.model` names a kind Quiver does not implement.
    Unsupported(String),
    /// A required key is absent or has the wrong type.
    Missing(&'static str),
    /// The metadata is there but inconsistent.
    Invalid(String),
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerError::Unsupported(m) => write!(f, "unsupported tokenizer model {m:?}"),
            TokenizerError::Missing(k) => write!(f, "tokenizer metadata {k} is missing"),
            TokenizerError::Invalid(why) => write!(f, "invalid tokenizer metadata: {why}"),
        }
    }
}

impl std::error::Error for TokenizerError {}

/// Builds the tokenizer that `tokenizer.ggml.model` names.
pub fn from_gguf(g: &Gguf) -> Result<Box<dyn Tokenizer>, TokenizerError> {
    let model = g
        .get_str("tokenizer.ggml.model")
        .ok_or(TokenizerError::Missing("tokenizer.ggml.model"))?;
    match model {
        "bert" => Ok(Box::new(WordPiece::from_gguf(g)?)),
        "gpt2" => Ok(Box::new(BytePairEncoding::from_gguf(g)?)),
        "llama" => Ok(Box::new(SentencePieceBpe::from_gguf(g)?)),
        "t5" => Ok(Box::new(Unigram::from_gguf(g)?)),
        other => Err(TokenizerError::Unsupported(other.to_string())),
    }
}

/// The token strings of `tokenizer.ggml.tokens`.
pub(crate) fn vocab(g: &Gguf) -> Result<Vec<String>, TokenizerError> {
    let arr = g
        .get_array("tokenizer.ggml.tokens")
        .ok_or(TokenizerError::Missing("tokenizer.ggml.tokens"))?;
    arr.iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or(TokenizerError::Invalid(
            "tokenizer.ggml.tokens holds a non-string".into(),
        ))
}

/// An optional token id key such as `tokenizer.ggml.bos_token_id`, checked against the vocab.
pub(crate) fn token_id(
    g: &Gguf,
    key: &'static str,
    vocab_len: usize,
) -> Result<Option<u32>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(id) if (id as usize) < vocab_len => Ok(Some(id as u32)),
            _ => Err(TokenizerError::Invalid(format!(
                "{key} = {v} is not a token id"
            ))),
        },
    }
}
