//! What differs between the BERT-family encoders, as data: one row per `general.architecture`.
//! `bert.rs` reads the row and the tensors present in the file, and never asks which
//! architecture it is running.

use super::llama_table::Presence;
use crate::embed::Pooling;

/// Where a token's position enters the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Positions {
    /// A learned `position_embd` row added to the token embedding (BERT).
    Learned,
    /// RoPE over q and k, GPT-NeoX pairing (halves of a head), positions from 0 per sequence.
    RopeNeox,
    /// No position input: symmetric ALiBi biases on the attention scores (jina-bert-v2).
    Alibi,
}

/// How a layer's q, k and v are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qkv {
    /// `attn_q`, `attn_k`, `attn_v`.
    Separate,
    /// One `attn_qkv` of 3 × width rows: q, then k, then v.
    Fused,
}

/// The feed-forward block of the dense layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ffn {
    /// `ffn_down(gelu(ffn_up · x))`.
    Gelu,
    /// `ffn_down(silu(ffn_gate · x) · (ffn_up · x))`.
    SwiGlu,
    /// `ffn_down(gelu(g) · u)`: either `ffn_up` holds 2 × n_ff rows, g the first half and u the
    /// second, or a separate `ffn_gate` gives g. Which one is read off the file's shapes.
    GeGlu,
}

/// One architecture's row.
#[derive(Clone, Copy, Debug)]
pub struct ArchSpec {
    /// `general.architecture`, also the prefix of its metadata keys.
    pub name: &'static str,
    pub positions: Positions,
    pub qkv: Qkv,
    /// Biases of q/k/v (or qkv) and of `attn_output`.
    pub attn_bias: Presence,
    pub ffn: Ffn,
    /// Biases of the dense FFN's `ffn_up` and `ffn_down`.
    pub ffn_bias: Presence,
    /// `token_types` (row 0 is added to every token; all our tokens are of type 0).
    pub token_types: Presence,
    /// LayerNorms over the whole q and k rows (`attn_q_norm`, `attn_k_norm`, with biases).
    pub qk_norm: Presence,
    /// A second post-attention LayerNorm of (first norm's output + the layer input).
    pub attn_norm_2: Presence,
    /// A mixture-of-experts GELU FFN on layers `i % moe_every_n_layers == 1` (the metadata key
    /// decides whether there are any).
    pub moe: bool,
    /// When `<arch>.pooling_type` is absent.
    pub default_pooling: Pooling,
    /// When `<arch>.attention.layer_norm_epsilon` is absent.
    pub default_eps: f32,
    /// RoPE base when `<arch>.rope.freq_base` is absent.
    pub default_freq_base: f32,
    /// ALiBi's max bias when `<arch>.attention.max_alibi_bias` is absent (llama.cpp uses 8).
    pub default_max_alibi_bias: f32,
}

pub const ARCHS: &[ArchSpec] = &[
    // all-MiniLM, bge, e5, and XLM-R models (bge-m3, multilingual-e5, …) that differ only in
    // their tokenizer and pooling type.
    ArchSpec {
        name: "bert",
        positions: Positions::Learned,
        qkv: Qkv::Separate,
        attn_bias: Presence::Required,
        ffn: Ffn::Gelu,
        ffn_bias: Presence::Required,
        token_types: Presence::Required,
        qk_norm: Presence::Absent,
        attn_norm_2: Presence::Absent,
        moe: false,
        default_pooling: Pooling::Mean,
        default_eps: 1e-12,
        default_freq_base: 10000.0,
        default_max_alibi_bias: 0.0,
    },
    // nomic-embed-text v1/v1.5, snowflake-arctic-embed:137m.
    ArchSpec {
        name: "nomic-bert",
        positions: Positions::RopeNeox,
        qkv: Qkv::Fused,
        attn_bias: Presence::Absent,
        ffn: Ffn::SwiGlu,
        ffn_bias: Presence::Absent,
        token_types: Presence::Optional,
        qk_norm: Presence::Absent,
        attn_norm_2: Presence::Absent,
        moe: false,
        default_pooling: Pooling::Mean,
        default_eps: 1e-12,
        default_freq_base: 10000.0,
        default_max_alibi_bias: 0.0,
    },
    // nomic-embed-text-v2-moe: every other layer a mixture of GELU experts.
    ArchSpec {
        name: "nomic-bert-moe",
        positions: Positions::RopeNeox,
        qkv: Qkv::Fused,
        attn_bias: Presence::Required,
        ffn: Ffn::Gelu,
        ffn_bias: Presence::Required,
        token_types: Presence::Optional,
        qk_norm: Presence::Absent,
        attn_norm_2: Presence::Absent,
        moe: true,
        default_pooling: Pooling::Mean,
        default_eps: 1e-12,
        default_freq_base: 10000.0,
        default_max_alibi_bias: 0.0,
    },
    // jina-embeddings-v2 (base-en, code, de, es, zh).
    ArchSpec {
        name: "jina-bert-v2",
        positions: Positions::Alibi,
        qkv: Qkv::Separate,
        attn_bias: Presence::Required,
        ffn: Ffn::GeGlu,
        ffn_bias: Presence::Optional,
        token_types: Presence::Optional,
        qk_norm: Presence::Optional,
        attn_norm_2: Presence::Optional,
        moe: false,
        default_pooling: Pooling::Mean,
        default_eps: 1e-12,
        default_freq_base: 10000.0,
        default_max_alibi_bias: 8.0,
    },
];

/// The row of `arch`, if it is a BERT-family encoder.
pub fn spec(arch: &str) -> Option<&'static ArchSpec> {
    ARCHS.iter().find(|s| s.name == arch)
}
