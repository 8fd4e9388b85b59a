//! WordPiece (BERT) — to be written.

use super::{Tokenizer, TokenizerError};
use crate::gguf::Gguf;

pub struct WordPiece {
    vocab: Vec<String>,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
}

impl WordPiece {
    pub fn from_gguf(g: &Gguf) -> Result<WordPiece, TokenizerError> {
        let vocab = super::vocab(g)?;
        let cls = super::token_id(g, "tokenizer.ggml.cls_token_id", vocab.len())?.or(
            super::token_id(g, "tokenizer.ggml.bos_token_id", vocab.len())?,
        );
        let sep = super::token_id(g, "tokenizer.ggml.seperator_token_id", vocab.len())?.or(
            super::token_id(g, "tokenizer.ggml.eos_token_id", vocab.len())?,
        );
        Ok(WordPiece {
            prefix: cls.into_iter().collect(),
            suffix: sep.into_iter().collect(),
            vocab,
        })
    }
}

impl Tokenizer for WordPiece {
    fn tokenize(&self, _text: &str) -> Vec<u32> {
        unimplemented!("WordPiece::tokenize")
    }
    fn prefix(&self) -> &[u32] {
        &self.prefix
    }
    fn suffix(&self) -> &[u32] {
        &self.suffix
    }
    fn vocab_size(&self) -> usize {
        self.vocab.len()
    }
}
