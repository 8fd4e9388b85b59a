//! Tiny llama, qwen2 and qwen3 models with random weights, written by the test, run through the
//! real forward pass (src/arch/llama.rs on the CPU backend) and through a scalar reference
//! forward written here with plain loops (no Backend, no kernels): they must agree per token.
//! Also: packed sequences do not see each other, and load errors are typed, not panics.

mod common;

use common::{cosine, gguf_from_bytes, q8_0_encode, Rng};
use half::f16;
use quiver::arch::{self, Batch, LoadError};
use quiver::backend::cpu::Cpu;
use quiver::embed::Pooling;
use quiver::gguf::writer::GgufWriter;
use quiver::gguf::{GgufFile, Value};
use quiver::model::Model;
use quiver::tensor::DType;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Q8_0 decoding and Q4_0 of our own (independent of the library's); random numbers and the
// Q8_0 encoder are in tests/common.

fn q8_0_decode(b: &[u8]) -> Vec<f32> {
    b.chunks(34)
        .flat_map(|blk| {
            let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            blk[2..].iter().map(move |&q| d * q as i8 as f32)
        })
        .collect()
}

/// Q4_0: `d: f16` then 16 bytes of nibbles; element j is the low nibble of byte j, element
/// j + 16 the high nibble; x = d · (q − 8), with d = max / −8 (max: the value of largest magnitude).
fn q4_0_encode(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for block in x.chunks(32) {
        let max = block
            .iter()
            .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = f16::from_f32(max / -8.0);
        let inv = if d.to_f32() == 0.0 {
            0.0
        } else {
            1.0 / d.to_f32()
        };
        let q = |v: f32| ((v * inv + 8.5) as i32).clamp(0, 15) as u8;
        out.extend_from_slice(&d.to_le_bytes());
        out.extend((0..16).map(|j| q(block[j]) | (q(block[j + 16]) << 4)));
    }
    out
}

fn q4_0_decode(b: &[u8]) -> Vec<f32> {
    b.chunks(18)
        .flat_map(|blk| {
            let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            let lo = blk[2..].iter().map(move |&q| d * ((q & 0xF) as f32 - 8.0));
            let hi = blk[2..].iter().map(move |&q| d * ((q >> 4) as f32 - 8.0));
            lo.chain(hi).collect::<Vec<_>>()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The tiny model: its hyper-parameters, its weights as f32 (what the reference reads), and the
// GGUF bytes (what the library reads).

#[derive(Clone, Copy)]
struct Spec {
    arch: &'static str,
    neox: bool,
    qkv_bias: bool,
    qk_norm: bool,
    n_embd: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    n_ff: usize,
    n_layer: usize,
    n_vocab: usize,
    n_rot: usize,
    freq_base: f32,
    /// `rope.scaling.factor` with type linear, if any.
    rope_linear: Option<f32>,
    pooling_type: Option<u32>,
    eps: f32,
}

const LLAMA: Spec = Spec {
    arch: "llama",
    neox: false,
    qkv_bias: false,
    qk_norm: false,
    n_embd: 32,
    n_head: 4,
    n_head_kv: 2,
    head_dim: 8,
    n_ff: 64,
    n_layer: 2,
    n_vocab: 50,
    n_rot: 8,
    freq_base: 10000.0,
    rope_linear: None,
    pooling_type: None,
    eps: 1e-5,
};

const QWEN2: Spec = Spec {
    arch: "qwen2",
    neox: true,
    qkv_bias: true,
    n_head_kv: 1,
    freq_base: 1e6,
    rope_linear: Some(2.0),
    eps: 1e-6,
    ..LLAMA
};

// qwen3: q/k norms, and a head size (16) that is not n_embd / n_head (8), as in Qwen3 itself.
const QWEN3: Spec = Spec {
    arch: "qwen3",
    neox: true,
    qk_norm: true,
    head_dim: 16,
    n_rot: 16,
    freq_base: 1e6,
    pooling_type: Some(1),
    eps: 1e-6,
    ..LLAMA
};

struct Lin {
    w: Vec<f32>, // n_out rows of n_in
    b: Option<Vec<f32>>,
}

struct LayerW {
    attn_norm: Vec<f32>,
    q: Lin,
    k: Lin,
    v: Lin,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    o: Lin,
    ffn_norm: Vec<f32>,
    gate: Lin,
    up: Lin,
    down: Lin,
}

struct Weights {
    embd: Vec<f32>, // n_vocab rows of n_embd
    layers: Vec<LayerW>,
    out_norm: Vec<f32>,
}

/// Metadata and tensors to write; `build` hands them to GgufWriter.
struct Draft {
    meta: Vec<(String, Value)>,
    tensors: Vec<(String, DType, Vec<usize>, Vec<u8>)>,
}

impl Draft {
    fn f32(&mut self, name: &str, dims: &[usize], v: &[f32]) {
        self.tensors.push((
            name.into(),
            DType::F32,
            dims.to_vec(),
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    fn f16(&mut self, name: &str, dims: &[usize], v: &[f32]) -> Vec<f32> {
        let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        self.tensors.push((
            name.into(),
            DType::F16,
            dims.to_vec(),
            h.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
        h.iter().map(|x| x.to_f32()).collect()
    }
    fn q4_0(&mut self, name: &str, dims: &[usize], v: &[f32]) -> Vec<f32> {
        let b = q4_0_encode(v);
        let back = q4_0_decode(&b);
        self.tensors
            .push((name.into(), DType::Q4_0, dims.to_vec(), b));
        back
    }
    fn q8_0(&mut self, name: &str, dims: &[usize], v: &[f32]) -> Vec<f32> {
        let b = q8_0_encode(v);
        let back = q8_0_decode(&b);
        self.tensors
            .push((name.into(), DType::Q8_0, dims.to_vec(), b));
        back
    }

    fn build(self) -> Vec<u8> {
        let mut w = GgufWriter::new();
        for (k, v) in self.meta {
            w = w.meta(&k, v);
        }
        for (name, dtype, dims, bytes) in self.tensors {
            w = w.tensor(&name, dtype, &dims, bytes);
        }
        w.to_bytes()
    }
}

/// Random weights for `s`, written as a mix of F32, F16, Q8_0 and Q4_0 so every path is exercised;
/// the reference gets the values as they read back from those dtypes.
fn make(s: Spec, seed: u64, skip: Option<&str>) -> (Vec<u8>, Weights) {
    make_with(s, seed, skip, vec![])
}

fn make_with(
    s: Spec,
    seed: u64,
    skip: Option<&str>,
    extra: Vec<(String, Value)>,
) -> (Vec<u8>, Weights) {
    let mut r = Rng(seed);
    let mut d = Draft {
        meta: extra,
        tensors: vec![],
    };
    let key = |k: &str| format!("{}.{k}", s.arch);
    d.meta
        .push(("general.architecture".into(), Value::String(s.arch.into())));
    for (k, v) in [
        ("block_count", s.n_layer),
        ("context_length", 128),
        ("embedding_length", s.n_embd),
        ("feed_forward_length", s.n_ff),
        ("attention.head_count", s.n_head),
        ("attention.head_count_kv", s.n_head_kv),
        ("rope.dimension_count", s.n_rot),
    ] {
        d.meta.push((key(k), Value::U32(v as u32)));
    }
    if s.head_dim * s.n_head != s.n_embd {
        d.meta
            .push((key("attention.key_length"), Value::U32(s.head_dim as u32)));
        d.meta
            .push((key("attention.value_length"), Value::U32(s.head_dim as u32)));
    }
    d.meta
        .push((key("rope.freq_base"), Value::F32(s.freq_base)));
    d.meta
        .push((key("attention.layer_norm_rms_epsilon"), Value::F32(s.eps)));
    if let Some(f) = s.rope_linear {
        d.meta
            .push((key("rope.scaling.type"), Value::String("linear".into())));
        d.meta.push((key("rope.scaling.factor"), Value::F32(f)));
    }
    if let Some(p) = s.pooling_type {
        d.meta.push((key("pooling_type"), Value::U32(p)));
    }

    let (e, hd) = (s.n_embd, s.head_dim);
    let (qd, kvd) = (s.n_head * hd, s.n_head_kv * hd);
    let embd = d.q8_0(
        "token_embd.weight",
        &[e, s.n_vocab],
        &r.vec(e * s.n_vocab, 1.0),
    );
    let norm = |d: &mut Draft, r: &mut Rng, name: &str, n: usize| {
        let v: Vec<f32> = r.vec(n, 0.2).iter().map(|x| 1.0 + x).collect();
        d.f32(name, &[n], &v);
        v
    };
    let mut layers = Vec::new();
    for i in 0..s.n_layer {
        let n = |t: &str| format!("blk.{i}.{t}");
        // Alternate dtypes between layers and matrices.
        let lin = |d: &mut Draft,
                   r: &mut Rng,
                   t: &str,
                   n_in: usize,
                   n_out: usize,
                   bias: bool,
                   which: usize| {
            // Large q/k weights make attention peaky, so RoPE and masking errors show.
            let gain = if t == "attn_q" || t == "attn_k" {
                4.0
            } else {
                1.0
            };
            let w = r.vec(n_in * n_out, gain / (n_in as f32).sqrt());
            let name = n(&format!("{t}.weight"));
            let w = match (i + which) % 4 {
                0 => {
                    d.f32(&name, &[n_in, n_out], &w);
                    w
                }
                1 => d.f16(&name, &[n_in, n_out], &w),
                2 => d.q8_0(&name, &[n_in, n_out], &w),
                _ => d.q4_0(&name, &[n_in, n_out], &w),
            };
            let b = bias.then(|| {
                let b = r.vec(n_out, 0.1);
                d.f32(&n(&format!("{t}.bias")), &[n_out], &b);
                b
            });
            Lin { w, b }
        };
        let attn_norm = norm(&mut d, &mut r, &n("attn_norm.weight"), e);
        let q = lin(&mut d, &mut r, "attn_q", e, qd, s.qkv_bias, 0);
        let k = lin(&mut d, &mut r, "attn_k", e, kvd, s.qkv_bias, 1);
        let v = lin(&mut d, &mut r, "attn_v", e, kvd, s.qkv_bias, 2);
        let (q_norm, k_norm) = if s.qk_norm {
            (
                Some(norm(&mut d, &mut r, &n("attn_q_norm.weight"), hd)),
                Some(norm(&mut d, &mut r, &n("attn_k_norm.weight"), hd)),
            )
        } else {
            (None, None)
        };
        let o = lin(&mut d, &mut r, "attn_output", qd, e, false, 3);
        let ffn_norm = norm(&mut d, &mut r, &n("ffn_norm.weight"), e);
        let gate = lin(&mut d, &mut r, "ffn_gate", e, s.n_ff, false, 1);
        let up = lin(&mut d, &mut r, "ffn_up", e, s.n_ff, false, 2);
        let down = lin(&mut d, &mut r, "ffn_down", s.n_ff, e, false, 3);
        layers.push(LayerW {
            attn_norm,
            q,
            k,
            v,
            q_norm,
            k_norm,
            o,
            ffn_norm,
            gate,
            up,
            down,
        });
    }
    let out_norm = norm(&mut d, &mut r, "output_norm.weight", e);
    if let Some(skip) = skip {
        d.tensors.retain(|t| t.0 != skip);
    }
    (
        d.build(),
        Weights {
            embd,
            layers,
            out_norm,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The scalar reference forward: one sequence at a time, straight from the formulas.

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps as f64).sqrt();
    x.iter()
        .zip(w)
        .map(|(v, w)| (*v as f64 * inv) as f32 * w)
        .collect()
}

fn matvec(l: &Lin, x: &[f32]) -> Vec<f32> {
    let n_in = x.len();
    let n_out = l.w.len() / n_in;
    (0..n_out)
        .map(|j| {
            let dot: f64 = (0..n_in)
                .map(|i| l.w[j * n_in + i] as f64 * x[i] as f64)
                .sum();
            dot as f32 + l.b.as_ref().map_or(0.0, |b| b[j])
        })
        .collect()
}

/// Rotates one head in place: pair (a, b) as the complex number a + ib, times e^{iθ}.
fn rope_head(h: &mut [f32], pos: usize, s: &Spec) {
    let scale = 1.0 / s.rope_linear.unwrap_or(1.0) as f64;
    for i in 0..s.n_rot / 2 {
        let (a, b) = if s.neox {
            (i, i + s.n_rot / 2)
        } else {
            (2 * i, 2 * i + 1)
        };
        let theta =
            pos as f64 * scale * (s.freq_base as f64).powf(-((2 * i) as f64) / s.n_rot as f64);
        let (x, y) = (h[a] as f64, h[b] as f64);
        h[a] = (x * theta.cos() - y * theta.sin()) as f32;
        h[b] = (x * theta.sin() + y * theta.cos()) as f32;
    }
}

fn reference(s: &Spec, w: &Weights, tokens: &[u32]) -> Vec<Vec<f32>> {
    let (e, hd) = (s.n_embd, s.head_dim);
    let mut x: Vec<Vec<f32>> = tokens
        .iter()
        .map(|&t| w.embd[t as usize * e..][..e].to_vec())
        .collect();
    for l in &w.layers {
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (pos, xt) in x.iter().enumerate() {
            let h = rms_norm(xt, &l.attn_norm, s.eps);
            let (mut q, mut k, v) = (matvec(&l.q, &h), matvec(&l.k, &h), matvec(&l.v, &h));
            for (head, t) in q
                .chunks_mut(hd)
                .map(|c| (c, 0))
                .chain(k.chunks_mut(hd).map(|c| (c, 1)))
            {
                if let Some(nw) = if t == 0 { &l.q_norm } else { &l.k_norm } {
                    let normed = rms_norm(head, nw, s.eps);
                    head.copy_from_slice(&normed);
                }
                rope_head(head, pos, s);
            }
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let group = s.n_head / s.n_head_kv;
        for i in 0..x.len() {
            let mut attn = vec![0.0f32; s.n_head * hd];
            for h in 0..s.n_head {
                let kh = h / group;
                let q = &qs[i][h * hd..][..hd];
                // Causal: token i sees tokens 0..=i of its own sequence.
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let k = &ks[j][kh * hd..][..hd];
                        q.iter()
                            .zip(k)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for (j, p) in exps.iter().enumerate() {
                    for c in 0..hd {
                        attn[h * hd + c] += (p / sum * vs[j][kh * hd + c] as f64) as f32;
                    }
                }
            }
            let o = matvec(&l.o, &attn);
            x[i].iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let h = rms_norm(&x[i], &l.ffn_norm, s.eps);
            let (g, u) = (matvec(&l.gate, &h), matvec(&l.up, &h));
            let act: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = matvec(&l.down, &act);
            x[i].iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
    }
    x.iter()
        .map(|xt| rms_norm(xt, &w.out_norm, s.eps))
        .collect()
}

// ---------------------------------------------------------------------------------------------

fn open(bytes: Vec<u8>) -> Arc<GgufFile> {
    Arc::new(gguf_from_bytes(&bytes))
}

fn check_against_reference(s: Spec) {
    let (bytes, w) = make(s, 42, None);
    let model = arch::load(open(bytes)).unwrap_or_else(|e| panic!("{}: {e}", s.arch));
    assert_eq!(model.hidden_size(), s.n_embd);
    assert_eq!(model.vocab_size(), s.n_vocab);
    assert_eq!(model.context_length(), 128);
    let want_pooling = s
        .pooling_type
        .map_or(Pooling::Last, |p| Pooling::from_gguf(p as u64).unwrap());
    assert_eq!(model.pooling(), want_pooling, "{}", s.arch);

    let seqs: [&[u32]; 2] = [&[3, 17, 5, 9, 44, 0, 21], &[49, 8, 8, 30]];
    let batch = Batch::new(&seqs);
    let hidden = model.forward(&Cpu::new(), &batch);
    assert_eq!(hidden.len(), 11 * s.n_embd);
    assert!(
        hidden.iter().all(|v| v.is_finite()),
        "{}: non-finite hidden state",
        s.arch
    );
    for (seq, range) in seqs.iter().zip(&batch.seqs) {
        let want = reference(&s, &w, seq);
        for (t, wt) in range.clone().zip(&want) {
            let got = &hidden[t * s.n_embd..][..s.n_embd];
            let c = cosine(got, wt);
            assert!(
                c >= 0.9999,
                "{}: token {t} cosine {c} with the reference",
                s.arch
            );
        }
    }
}

#[test]
fn tiny_llama_matches_reference() {
    check_against_reference(LLAMA);
}

#[test]
fn tiny_qwen2_matches_reference() {
    check_against_reference(QWEN2);
}

#[test]
fn tiny_qwen3_matches_reference() {
    check_against_reference(QWEN3);
}

#[test]
fn packed_sequences_do_not_see_each_other() {
    for s in [LLAMA, QWEN2, QWEN3] {
        let (bytes, _) = make(s, 7, None);
        let model = arch::load(open(bytes)).unwrap();
        let (a, b): (&[u32], &[u32]) = (&[1, 2, 3, 4, 5], &[6, 7, 8]);
        let both = model.forward(&Cpu::new(), &Batch::new(&[a, b]));
        let alone_a = model.forward(&Cpu::new(), &Batch::new(&[a]));
        let alone_b = model.forward(&Cpu::new(), &Batch::new(&[b]));
        let alone: Vec<f32> = alone_a.into_iter().chain(alone_b).collect();
        assert_eq!(both.len(), alone.len());
        let max = both
            .iter()
            .zip(&alone)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max < 1e-5,
            "{}: batch differs from separate runs by {max}",
            s.arch
        );
    }
}

#[test]
fn causal_earlier_tokens_ignore_later_ones() {
    // The first three tokens' states must not depend on what follows them.
    let (bytes, _) = make(LLAMA, 9, None);
    let model = arch::load(open(bytes)).unwrap();
    let short = model.forward(&Cpu::new(), &Batch::new(&[[1u32, 2, 3]]));
    let long = model.forward(&Cpu::new(), &Batch::new(&[[1u32, 2, 3, 40, 41]]));
    let max = short
        .iter()
        .zip(&long)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(max < 1e-5, "prefix states changed by {max}");
}

#[test]
fn missing_tensors_and_bad_heads_are_typed_errors() {
    let (bytes, _) = make(QWEN2, 1, Some("blk.1.attn_k.bias"));
    assert_eq!(
        arch::load(open(bytes)).err(),
        Some(LoadError::MissingTensor("blk.1.attn_k.bias".into()))
    );
    let (bytes, _) = make(QWEN3, 1, Some("blk.0.attn_q_norm.weight"));
    assert_eq!(
        arch::load(open(bytes)).err(),
        Some(LoadError::MissingTensor("blk.0.attn_q_norm.weight".into()))
    );
    let (bytes, _) = make(LLAMA, 1, Some("output_norm.weight"));
    assert!(matches!(
        arch::load(open(bytes)),
        Err(LoadError::MissingTensor(_))
    ));
    // 4 query heads cannot share 3 KV heads.
    let (bytes, _) = make(
        Spec {
            n_head_kv: 3,
            ..LLAMA
        },
        1,
        None,
    );
    assert!(matches!(
        arch::load(open(bytes)),
        Err(LoadError::Invalid(_))
    ));
    // Unsupported RoPE scaling is refused, not run wrongly.
    let yarn = vec![(
        "llama.rope.scaling.type".to_string(),
        Value::String("yarn".into()),
    )];
    let (bytes, _) = make_with(LLAMA, 1, None, yarn);
    assert!(matches!(
        arch::load(open(bytes)),
        Err(LoadError::Invalid(_))
    ));
}

/// A byte-level BPE vocabulary of `n` tokens for the tiny models: the 26 letters, `Ġ` (a space),
/// a few merges, `<|endoftext|>` as the last token, unused fillers between.
fn gpt2_tokenizer(n: usize, add_eos: bool) -> Vec<(String, Value)> {
    let mut tokens: Vec<String> = ('a'..='z').map(String::from).collect();
    tokens.push("Ġ".into());
    let merges = ["h e", "l l", "he ll", "Ġ w", "o r"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    while tokens.len() < n - 1 {
        tokens.push(format!("<unused{}>", tokens.len()));
    }
    tokens.push("<|endoftext|>".into());
    let strings = |v: Vec<String>| {
        Value::Array(
            quiver::gguf::ValueType::String,
            v.into_iter().map(Value::String).collect(),
        )
    };
    vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("qwen2".into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        (
            "tokenizer.ggml.merges".into(),
            strings(merges.iter().map(|m| m.to_string()).collect()),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(n as u32 - 1),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.ggml.add_eos_token".into(), Value::Bool(add_eos)),
    ]
}

/// Qwen3-Embedding: last-token pooling over a sequence that the tokenizer ends with EOS, as
/// the file's `add_eos_token` asks. The pooled vector is the EOS token's hidden state.
#[test]
fn qwen3_last_pooling_ends_with_eos_and_pools_its_state() {
    let s = Spec {
        pooling_type: Some(3),
        ..QWEN3
    };
    let eos = s.n_vocab as u32 - 1;
    let (bytes, w) = make_with(s, 11, None, gpt2_tokenizer(s.n_vocab, true));
    let model = Model::load(gguf_from_bytes(&bytes), Arc::new(Cpu::new())).expect("load");
    assert_eq!(model.info.pooling, Pooling::Last);
    let ids = model.tokenize("hello world");
    assert_eq!(ids.last(), Some(&eos), "no EOS at the end of {ids:?}");
    assert_eq!(ids.iter().filter(|&&t| t == eos).count(), 1);
    // h e l l o: "he" and "ll" merge, then "hell"; then "Ġw" "or" "l" "d".
    assert_eq!(
        &ids[..ids.len() - 1],
        &[29, 14, 30, 31, 11, 3],
        "the merges ran"
    );

    // A batch of two: each pooled vector is its own sequence's last (EOS) state.
    let other = model.tokenize("word");
    let got = model.embed_tokens(&[&ids, &other]).expect("embed");
    for (seq, got) in [&ids, &other].into_iter().zip(&got) {
        let states = reference(&s, &w, seq);
        let c = cosine(got, states.last().unwrap());
        assert!(c >= 0.9999, "pooled vs the EOS state: cosine {c}");
        // and not merely any state: the one before EOS differs
        let before = &states[states.len() - 2];
        assert!(cosine(got, before) < 0.999, "pooled the token before EOS");
    }

    // Without the flag, no EOS is added.
    let (bytes, _) = make_with(s, 11, None, gpt2_tokenizer(s.n_vocab, false));
    let model = Model::load(gguf_from_bytes(&bytes), Arc::new(Cpu::new())).expect("load");
    assert!(!model.tokenize("hello world").contains(&eos));
}
