//! gemma-embedding (EmbeddingGemma's graph) and Gemma-3's SentencePiece BPE against llama.cpp
//! (fixtures/new-archs-llamacpp.json): the tiny random-weight model and the real Gemma-3-270M
//! weights relabelled `gemma-embedding`. Neither file may be committed (Gemma Terms of Use):
//! `scripts/fetch_gemma.sh` builds both in target/models/; without them these tests say so and
//! pass. Malformed files are written here and need nothing fetched.

mod common;

use common::{cosine, gguf_from_bytes, read_json, u32s, Rng};
use quiver::arch::{self, LoadError};
use quiver::backend::cpu::Cpu;
use quiver::gguf::writer::GgufWriter;
use quiver::gguf::{GgufFile, Value, ValueType};
use quiver::model::Model;
use quiver::tensor::DType;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const REFERENCE: &str = "new-archs-llamacpp.json";
const TINY: &str = "tiny-gemma-embedding";
const REAL: &str = "gemma-embedding-from-gemma3-270m-q4_k_m";

/// What the reference README says to hold: the tiny model's vectors come from the same graph in
/// float64 to 0.9999996, so 0.999 leaves room only for f32 and llama.cpp's fp16 GELU table.
const MIN_COSINE_TINY: f64 = 0.999;
/// The relabelled Gemma-3 is no embedding model: its raw vectors ride on a few large channels,
/// so activation rounding costs more (HF transformers in fp32 on the dequantised weights:
/// min 0.9963 against llama.cpp).
const MIN_COSINE_REAL: f64 = 0.995;

fn model_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/models")
        .join(format!("{name}.gguf"))
}

fn load(name: &str) -> Option<(Model, Arc<Cpu>)> {
    let path = model_path(name);
    if !Path::new(&path).exists() {
        println!(
            "skipped: {} not found (run scripts/fetch_gemma.sh)",
            path.display()
        );
        return None;
    }
    let cpu = Arc::new(Cpu::new());
    let file = GgufFile::open(&path).expect("open gemma model");
    let model = Model::load(file, cpu.clone()).expect("load gemma model");
    Some((model, cpu))
}

/// (input, llama.cpp's ids, llama.cpp's raw pooled vector) of every reference input.
fn results(model: &str) -> Vec<(String, Vec<u32>, Vec<f32>)> {
    let j = read_json(REFERENCE);
    j["models"][model]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["input"].as_str().unwrap().to_string(),
                u32s(&r["ids"]),
                common::f32s(&r["embedding_raw"]),
            )
        })
        .collect()
}

fn check_ids(model: &Model, name: &str) {
    let all = results(name);
    assert_eq!(all.len(), 21);
    for (text, want, _) in &all {
        assert_eq!(&model.tokenize(text), want, "{name}: ids of {text:?}");
    }
}

/// Every input's pooled vector (after dense_2 and dense_3) against llama.cpp's; returns the
/// smallest cosine.
fn check_vectors(model: &Model, name: &str, min: f64) -> f64 {
    let all = results(name);
    let ids: Vec<&Vec<u32>> = all.iter().map(|r| &r.1).collect();
    // One batch of all inputs: sequences packed together must not see each other.
    let got = model.embed_tokens(&ids).expect("embed");
    let mut worst = 1.0f64;
    for ((text, _, want), got) in all.iter().zip(&got) {
        let c = cosine(got, want);
        println!("{name}: cosine {c:.6} {text:?}");
        assert!(c >= min, "{name}: cosine {c} < {min} on {text:?}");
        worst = worst.min(c);
    }
    worst
}

#[test]
fn gemma3_tokenizer_matches_llama_tokenize() {
    let Some((model, _)) = load(TINY) else { return };
    let j = read_json(REFERENCE);
    let results = j["tokenizers"]["gemma-3"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 21);
    for r in results {
        let text = r["input"].as_str().unwrap();
        assert_eq!(model.tokenize(text), u32s(&r["ids"]), "ids of {text:?}");
    }
}

#[test]
fn tiny_gemma_embedding_matches_llama_cpp() {
    let Some((model, _)) = load(TINY) else { return };
    assert_eq!(model.info.family, "gemma-embedding");
    assert_eq!(model.info.embedding_length, 32);
    check_ids(&model, TINY);
    let worst = check_vectors(&model, TINY, MIN_COSINE_TINY);
    println!("{TINY}: min cosine {worst:.7}");
}

#[test]
fn real_gemma_embedding_matches_llama_cpp() {
    let Some((model, cpu)) = load(REAL) else {
        return;
    };
    assert_eq!(model.info.embedding_length, 640);
    // Q8_0, Q5_0, Q4_K and Q6_K matrices: every block matrix is packed at load for a fast
    // kernel (8-bit panels for Q8_0, 16-bit integers for the rest: at least 1 byte per weight
    // for the one, 2 for the others), none left to be dequantised on every call.
    let mut least = 0usize;
    let mut kinds = std::collections::BTreeSet::new();
    for t in &model.file.header.tensors {
        if t.name.starts_with("blk.") && t.n_dims == 2 {
            kinds.insert(format!("{:?}", t.dtype));
            let per = if t.dtype == DType::Q8_0 { 1 } else { 2 };
            least += t.n_elements() * per;
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["Q4_K", "Q5_0", "Q6_K", "Q8_0"]
    );
    assert!(
        cpu.packed_bytes() >= least,
        "packed {} bytes, expected at least {least}",
        cpu.packed_bytes()
    );
    check_ids(&model, REAL);
    let worst = check_vectors(&model, REAL, MIN_COSINE_REAL);
    println!("{REAL}: min cosine {worst:.6}");
}

// ---------------------------------------------------------------------------------------------
// Malformed files: a small valid gemma-embedding written here, then broken one way at a time.

const E: usize = 8;
const HD: usize = 8;
const FF: usize = 16;
const VOCAB: usize = 16;

struct Tiny {
    meta: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<usize>)>,
}

fn key(k: &str) -> String {
    format!("gemma-embedding.{k}")
}

fn tiny() -> Tiny {
    let mut meta = vec![(
        "general.architecture".to_string(),
        Value::String("gemma-embedding".into()),
    )];
    for (k, v) in [
        ("embedding_length", E),
        ("block_count", 2),
        ("feed_forward_length", FF),
        ("attention.head_count", 2),
        ("attention.head_count_kv", 1),
        ("attention.key_length", HD),
        ("attention.value_length", HD),
        ("attention.sliding_window", 2),
        ("context_length", 64),
        ("pooling_type", 1),
    ] {
        meta.push((key(k), Value::U32(v as u32)));
    }
    meta.push((
        key("attention.sliding_window_pattern"),
        Value::Array(ValueType::Bool, vec![Value::Bool(true), Value::Bool(false)]),
    ));
    let mut tensors = vec![
        ("token_embd.weight".to_string(), vec![E, VOCAB]),
        ("output_norm.weight".to_string(), vec![E]),
        ("dense_2.weight".to_string(), vec![E, 4 * E]),
        ("dense_3.weight".to_string(), vec![4 * E, E]),
    ];
    for i in 0..2 {
        for (name, shape) in [
            ("attn_norm", vec![E]),
            ("attn_q", vec![E, 2 * HD]),
            ("attn_k", vec![E, HD]),
            ("attn_v", vec![E, HD]),
            ("attn_q_norm", vec![HD]),
            ("attn_k_norm", vec![HD]),
            ("attn_output", vec![2 * HD, E]),
            ("post_attention_norm", vec![E]),
            ("ffn_norm", vec![E]),
            ("ffn_gate", vec![E, FF]),
            ("ffn_up", vec![E, FF]),
            ("ffn_down", vec![FF, E]),
            ("post_ffw_norm", vec![E]),
        ] {
            tensors.push((format!("blk.{i}.{name}.weight"), shape));
        }
    }
    Tiny { meta, tensors }
}

impl Tiny {
    fn file(&self) -> GgufFile {
        let mut rng = Rng(7);
        let mut w = GgufWriter::new();
        for (k, v) in &self.meta {
            w = w.meta(k, v.clone());
        }
        for (name, shape) in &self.tensors {
            let n: usize = shape.iter().product();
            let values = if shape.len() == 1 {
                vec![1.0; n]
            } else {
                rng.vec(n, 0.3)
            };
            w = w.tensor_f32(name, shape, &values);
        }
        gguf_from_bytes(&w.to_bytes())
    }

    fn load(&self) -> Result<(), LoadError> {
        arch::load(Arc::new(self.file())).map(|_| ())
    }

    fn set(mut self, k: &str, v: Value) -> Tiny {
        self.meta.retain(|(name, _)| name != &key(k));
        self.meta.push((key(k), v));
        self
    }

    fn without_key(mut self, k: &str) -> Tiny {
        self.meta.retain(|(name, _)| name != &key(k));
        self
    }

    fn without_tensor(mut self, name: &str) -> Tiny {
        self.tensors.retain(|(n, _)| n != name);
        self
    }

    fn reshape(mut self, name: &str, shape: Vec<usize>) -> Tiny {
        for t in &mut self.tensors {
            if t.0 == name {
                t.1 = shape.clone();
            }
        }
        self
    }
}

#[test]
fn a_valid_tiny_gemma_loads_and_runs() {
    let file = Arc::new(tiny().file());
    let a = arch::load(file).expect("valid file");
    let cpu = Cpu::new();
    let batch = arch::Batch::new(&[vec![1u32, 2, 3, 4, 5], vec![6, 7]]);
    let hidden = a.forward(&cpu, &batch);
    assert_eq!(hidden.len(), 7 * E);
    assert!(hidden.iter().all(|v| v.is_finite()));
    let mut pooled = vec![hidden[..E].to_vec()];
    let before = pooled.clone();
    a.project(&cpu, &mut pooled);
    assert_eq!(pooled[0].len(), E);
    assert_ne!(pooled, before, "dense_2/dense_3 were not applied");
}

#[test]
fn malformed_gemma_files_are_load_errors() {
    let invalid = |t: Tiny, what: &str| match t.load() {
        Err(LoadError::Invalid(_)) => {}
        other => panic!("{what}: expected LoadError::Invalid, got {other:?}"),
    };
    invalid(
        tiny().set(
            "attention.sliding_window_pattern",
            Value::Array(ValueType::Bool, vec![Value::Bool(true)]),
        ),
        "pattern shorter than the layers",
    );
    invalid(
        tiny().set(
            "attention.sliding_window_pattern",
            Value::Array(
                ValueType::String,
                vec![Value::String("yes".into()), Value::String("no".into())],
            ),
        ),
        "pattern of strings",
    );
    invalid(
        tiny().set("attention.head_count_kv", Value::U32(3)),
        "KV heads that do not divide the query heads",
    );
    invalid(
        tiny().set("attention.key_length", Value::U32(7)),
        "odd head size",
    );
    invalid(
        tiny().set("attention.value_length", Value::U32(4)),
        "value length other than key length",
    );
    invalid(tiny().set("pooling_type", Value::U32(9)), "unknown pooling");
    assert_eq!(
        tiny().without_key("attention.sliding_window").load(),
        Err(LoadError::MissingKey(
            "gemma-embedding.attention.sliding_window".into()
        ))
    );
    assert_eq!(
        tiny().without_tensor("blk.1.post_ffw_norm.weight").load(),
        Err(LoadError::MissingTensor(
            "blk.1.post_ffw_norm.weight".into()
        ))
    );
    assert!(matches!(
        tiny().reshape("dense_3.weight", vec![4 * E, E + 1]).load(),
        Err(LoadError::BadShape { .. })
    ));
    assert!(matches!(
        tiny().without_tensor("dense_3.weight").load(),
        Err(LoadError::MissingTensor(_))
    ));
    assert!(matches!(
        tiny().reshape("blk.0.attn_q.weight", vec![E, HD]).load(),
        Err(LoadError::BadShape { .. })
    ));
    // Ollama's older names for the projections load too; no projections at all is fine.
    tiny()
        .without_tensor("dense_2.weight")
        .without_tensor("dense_3.weight")
        .load()
        .expect("no projections");
    let mut old = tiny();
    for t in &mut old.tensors {
        t.0 =
            t.0.replace("dense_2", "dense.0")
                .replace("dense_3", "dense.1");
    }
    old.load().expect("dense.0 / dense.1");
}

/// How much each token's hidden state moves when the token at `changed` is replaced.
fn state_change(t: Tiny, changed: usize) -> Vec<f32> {
    let a = arch::load(Arc::new(t.file())).expect("valid file");
    let cpu = Cpu::new();
    let mut tokens = vec![1u32, 2, 3, 4, 5, 6, 7];
    let before = a.forward(&cpu, &arch::Batch::new(&[tokens.clone()]));
    tokens[changed] = 9;
    let after = a.forward(&cpu, &arch::Batch::new(&[tokens]));
    before
        .chunks(E)
        .zip(after.chunks(E))
        .map(|(x, y)| {
            x.iter()
                .zip(y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        })
        .collect()
}

#[test]
fn local_layers_see_a_symmetric_window_global_ones_everything() {
    let pattern = |local: bool| {
        Value::Array(
            ValueType::Bool,
            vec![Value::Bool(local), Value::Bool(local)],
        )
    };
    // Two local layers with a window of 2 (|i−j| ≤ 1): token 0 sees as far as token 2, and
    // token 6 back to token 4; changing token 4 reaches tokens 2..=6 only, on both sides.
    let local = state_change(
        tiny().set("attention.sliding_window_pattern", pattern(true)),
        4,
    );
    for (i, &d) in local.iter().enumerate() {
        if (2..=6).contains(&i) {
            assert!(d > 1e-4, "token {i} did not see the change two steps away");
        } else {
            assert_eq!(d, 0.0, "token {i} saw past its window");
        }
    }
    // Global (bidirectional, not causal) layers: every token, before and after, sees it.
    let global = state_change(
        tiny().set("attention.sliding_window_pattern", pattern(false)),
        4,
    );
    assert!(global.iter().all(|&d| d > 1e-4), "{global:?}");
}

/// Ollama's embeddinggemma is the same graph labelled `gemma3`, told from the generative
/// Gemma-3 by its `gemma3.pooling_type`, with `dense.0`/`dense.1` and Ollama's key for the
/// local RoPE base: it gives the gemma-embedding file's hidden states and projection bit for
/// bit. Without a pooling type a `gemma3` file stays an unsupported (generative) architecture.
#[test]
fn ollamas_gemma3_labelled_embeddinggemma_runs_the_same_graph() {
    let ours = tiny();
    let relabel = |t: &Tiny, pooling: bool| {
        let mut meta: Vec<(String, Value)> = t
            .meta
            .iter()
            .filter(|(k, _)| pooling || k != &key("pooling_type"))
            .map(|(k, v)| match k.strip_prefix("gemma-embedding.") {
                Some(rest) => (format!("gemma3.{rest}"), v.clone()),
                None if k == "general.architecture" => (k.clone(), Value::String("gemma3".into())),
                None => (k.clone(), v.clone()),
            })
            .collect();
        meta.push(("gemma3.rope.local.freq_base".into(), Value::F32(10_000.0)));
        let tensors = t
            .tensors
            .iter()
            .map(|(n, s)| {
                let n = n
                    .replace("dense_2.", "dense.0.")
                    .replace("dense_3.", "dense.1.");
                (n, s.clone())
            })
            .collect();
        Tiny { meta, tensors }
    };
    let ollama = relabel(&ours, true);
    let (a, b) = (
        arch::load(Arc::new(ours.file())).expect("gemma-embedding"),
        arch::load(Arc::new(ollama.file())).expect("Ollama's gemma3 embedding file"),
    );
    let cpu = Cpu::new();
    let batch = arch::Batch::new(&[vec![1u32, 2, 3, 4, 5], vec![6, 7]]);
    let (ha, hb) = (a.forward(&cpu, &batch), b.forward(&cpu, &batch));
    assert_eq!(ha, hb);
    let (mut pa, mut pb) = (vec![ha[..E].to_vec()], vec![hb[..E].to_vec()]);
    a.project(&cpu, &mut pa);
    b.project(&cpu, &mut pb);
    assert_eq!(pa, pb);
    let generative = relabel(&ours, false);
    assert!(matches!(
        arch::load(Arc::new(generative.file())),
        Err(LoadError::UnknownArchitecture(a)) if a == "gemma3"
    ));
}
