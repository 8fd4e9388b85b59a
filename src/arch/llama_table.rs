//! What differs between the llama-family decoders, as data: one row per `general.architecture`.
//! `llama.rs` reads the row and never asks which architecture it is running.

use quiver_kernels::rope::RopeLayout;

/// GGUF tensor names of one decoder (`{i}` is the block index). The same for every row today,
/// kept as data so a family member with other names is one table entry, not a new branch.
#[derive(Clone, Copy, Debug)]
pub struct TensorNames {
    pub token_embd: &'static str,
    pub output_norm: &'static str,
    /// Per-pair RoPE frequency divisors (llama 3.1+), optional.
    pub rope_freqs: &'static str,
    pub attn_norm: &'static str,
    pub attn_q: &'static str,
    pub attn_k: &'static str,
    pub attn_v: &'static str,
    pub attn_output: &'static str,
    pub attn_q_norm: &'static str,
    pub attn_k_norm: &'static str,
    pub ffn_norm: &'static str,
    pub ffn_gate: &'static str,
    pub ffn_up: &'static str,
    pub ffn_down: &'static str,
}

pub const GGML_NAMES: TensorNames = TensorNames {
    token_embd: "token_embd",
    output_norm: "output_norm",
    rope_freqs: "rope_freqs",
    attn_norm: "attn_norm",
    attn_q: "attn_q",
    attn_k: "attn_k",
    attn_v: "attn_v",
    attn_output: "attn_output",
    attn_q_norm: "attn_q_norm",
    attn_k_norm: "attn_k_norm",
    ffn_norm: "ffn_norm",
    ffn_gate: "ffn_gate",
    ffn_up: "ffn_up",
    ffn_down: "ffn_down",
};

/// Whether a family of tensors must be present, may be present, or must not be looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Required,
    Optional,
    Absent,
}

/// One architecture's row.
#[derive(Clone, Copy, Debug)]
pub struct ArchSpec {
    /// `general.architecture`, also the prefix of its metadata keys.
    pub name: &'static str,
    pub names: TensorNames,
    /// How RoPE pairs the values of a head (llama.cpp's choice per architecture: the converter
    /// permutes llama's q/k weights so that adjacent pairs work; qwen keeps HF's halves).
    pub rope_layout: RopeLayout,
    /// `attn_q/k/v.bias` (qwen2 has them; llama-style files may).
    pub qkv_bias: Presence,
    /// RMSNorm over each head of q and k before RoPE (qwen3).
    pub qk_norm: Presence,
    /// RMSNorm epsilon when `<arch>.attention.layer_norm_rms_epsilon` is absent.
    pub default_rms_eps: f32,
    /// RoPE base when `<arch>.rope.freq_base` is absent.
    pub default_freq_base: f32,
}

pub const ARCHS: &[ArchSpec] = &[
    ArchSpec {
        name: "llama",
        names: GGML_NAMES,
        rope_layout: RopeLayout::Normal,
        qkv_bias: Presence::Optional,
        qk_norm: Presence::Absent,
        default_rms_eps: 1e-5,
        default_freq_base: 10000.0,
    },
    // Mistral 7B is llama's graph (sliding window aside, which embeddings of < 4096 tokens never
    // reach); files from llama.cpp's converter usually say "llama" anyway.
    ArchSpec {
        name: "mistral",
        names: GGML_NAMES,
        rope_layout: RopeLayout::Normal,
        qkv_bias: Presence::Optional,
        qk_norm: Presence::Absent,
        default_rms_eps: 1e-5,
        default_freq_base: 10000.0,
    },
    ArchSpec {
        name: "qwen2",
        names: GGML_NAMES,
        rope_layout: RopeLayout::NeoX,
        qkv_bias: Presence::Required,
        qk_norm: Presence::Absent,
        default_rms_eps: 1e-6,
        default_freq_base: 1_000_000.0,
    },
    ArchSpec {
        name: "qwen3",
        names: GGML_NAMES,
        rope_layout: RopeLayout::NeoX,
        qkv_bias: Presence::Absent,
        qk_norm: Presence::Required,
        default_rms_eps: 1e-6,
        default_freq_base: 1_000_000.0,
    },
];

/// The row of `arch`, if it is a llama-family decoder.
pub fn spec(arch: &str) -> Option<&'static ArchSpec> {
    ARCHS.iter().find(|s| s.name == arch)
}
