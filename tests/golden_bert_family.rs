//! Golden tests of the BERT-family encoders nomic-bert, nomic-bert-moe and jina-bert-v2 (and
//! `bert` with an XLM-R vocabulary) against llama.cpp's raw pooled vectors on the same tiny
//! random-weight files (fixtures/new-archs-llamacpp.json, made by llama-embedding). The forward
//! pass runs on llama.cpp's token ids, so it is tested apart from the tokenizer; for the
//! WordPiece models the tokenizer and the whole text → vector path are checked too. Malformed
//! files must be refused with a LoadError.

mod common;

use common::*;
use quiver::arch::{self, Batch, LoadError};
use quiver::backend::cpu::Cpu;
use quiver::backend::Backend;
use quiver::embed::{self, pool};
use quiver::gguf::writer::GgufWriter;
use quiver::gguf::{GgufFile, Value};
use quiver::model::{Model, ModelError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MIN_COS: f64 = 0.999;

struct Case {
    input: String,
    ids: Vec<u32>,
    raw: Vec<f32>,
}

/// llama.cpp's ids and raw vectors for `model` ("tiny-nomic-bert", …).
fn cases(model: &str) -> Vec<Case> {
    let refs = read_json("new-archs-llamacpp.json");
    let results = refs["models"][model]["results"]
        .as_array()
        .expect("results");
    assert_eq!(results.len(), 21, "{model}: 21 inputs");
    results
        .iter()
        .map(|r| Case {
            input: r["input"].as_str().unwrap().to_string(),
            ids: u32s(&r["ids"]),
            raw: f32s(&r["embedding_raw"]),
        })
        .collect()
}

fn open(path: &Path) -> Arc<GgufFile> {
    Arc::new(GgufFile::open(path).expect("fixture opens"))
}

/// Runs the architecture of `path` on every reference's ids in one packed batch (positions
/// restart per sequence, attention stays within each) and compares the pooled vectors.
fn check_forward(path: PathBuf, model: &str) {
    let file = open(&path);
    let arch = arch::load(file.clone()).expect("model loads");
    let cpu = Cpu::new();
    cpu.prepare(&file);
    let cases = cases(model);
    let batch = Batch::new(&cases.iter().map(|c| c.ids.clone()).collect::<Vec<_>>());
    let hidden = arch.forward(&cpu, &batch);
    let pooled = pool(&hidden, arch.hidden_size(), &batch.seqs, arch.pooling());
    let mut worst = f64::MAX;
    for (i, (c, v)) in cases.iter().zip(&pooled).enumerate() {
        let cos = cosine(v, &c.raw);
        worst = worst.min(cos);
        assert!(
            cos >= MIN_COS,
            "{model} case {i} {:?}: cosine {cos}",
            c.input
        );
        // Raw vectors: the scale must match too, not only the direction.
        let rel = (norm(v) - norm(&c.raw)).abs() / norm(&c.raw);
        assert!(rel < 1e-2, "{model} case {i}: norm off by {rel}");
    }
    eprintln!(
        "{model}: worst cosine {worst:.7} over {} inputs",
        cases.len()
    );

    // One sequence alone gives the vector it gets inside the batch.
    let one = Batch::new(&[cases[3].ids.clone()]);
    let alone = pool(
        &arch.forward(&cpu, &one),
        arch.hidden_size(),
        &one.seqs,
        arch.pooling(),
    );
    assert!(cosine(&alone[0], &pooled[3]) > 0.99999);
}

/// Text → ids must equal llama.cpp's, and text → vector through `Model` must match.
fn check_end_to_end(path: PathBuf, model: &str) {
    let m = Model::load(GgufFile::open(&path).unwrap(), Arc::new(Cpu::new())).unwrap();
    let cases = cases(model);
    for c in &cases {
        assert_eq!(m.tokenize(&c.input), c.ids, "{model} ids of {:?}", c.input);
    }
    let texts: Vec<&str> = cases.iter().map(|c| c.input.as_str()).collect();
    let vectors = m.embed(&texts).unwrap();
    for (c, v) in cases.iter().zip(&vectors) {
        let mut want = c.raw.clone();
        embed::normalize(&mut want);
        let cos = cosine(v, &want);
        assert!(cos >= MIN_COS, "{model} {:?}: cosine {cos}", c.input);
    }
}

#[test]
fn nomic_bert_matches_llamacpp() {
    check_forward(fixture("tiny-nomic-bert.gguf"), "tiny-nomic-bert");
}

#[test]
fn nomic_bert_text_to_vector() {
    check_end_to_end(fixture("tiny-nomic-bert.gguf"), "tiny-nomic-bert");
}

#[test]
fn jina_bert_v2_matches_llamacpp() {
    check_forward(fixture("tiny-jina-bert-v2.gguf"), "tiny-jina-bert-v2");
}

#[test]
fn jina_bert_v2_text_to_vector() {
    check_end_to_end(fixture("tiny-jina-bert-v2.gguf"), "tiny-jina-bert-v2");
}

#[test]
fn nomic_bert_moe_matches_llamacpp() {
    check_forward(fixture("tiny-nomic-bert-moe.gguf"), "tiny-nomic-bert-moe");
}

/// `bert` with an XLM-R vocabulary: one row of token types, CLS pooling from the file. The
/// 15.6 MB file is not in fixtures/; it is read from ../shared when that is there.
#[test]
fn xlmr_bert_matches_llamacpp() {
    let Some(path) = shared("models/tiny-xlmr-bert.gguf") else {
        eprintln!("skipped: ../shared/models/tiny-xlmr-bert.gguf is absent");
        return;
    };
    check_forward(path, "tiny-xlmr-bert");
}

/// The fixture `name` rebuilt with `edit` applied to its metadata and tensors.
fn edited(
    name: &str,
    edit: impl Fn(&mut Vec<(String, Value)>, &mut Vec<(String, Vec<usize>, Vec<u8>)>),
) -> GgufFile {
    let file = GgufFile::open(&fixture(name)).unwrap();
    let h = &file.header;
    let mut meta = h.metadata.clone();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = h
        .tensors
        .iter()
        .map(|t| {
            let data = file.bytes()[t.offset..t.offset + t.len].to_vec();
            (t.name.clone(), t.shape[..t.n_dims].to_vec(), data)
        })
        .collect();
    edit(&mut meta, &mut tensors);
    let dtypes: std::collections::HashMap<_, _> = h
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.dtype))
        .collect();
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w = w.meta(&k, v);
    }
    for (name, dims, data) in tensors {
        w = w.tensor(&name, dtypes[&name], &dims, data);
    }
    gguf_from_bytes(&w.to_bytes())
}

fn load_error(file: GgufFile) -> LoadError {
    match Model::load(file, Arc::new(Cpu::new())) {
        Err(ModelError::Load(e)) => e,
        Err(other) => panic!("expected a LoadError, got {other}"),
        Ok(_) => panic!("a malformed file loaded"),
    }
}

fn set(meta: &mut [(String, Value)], key: &str, v: Value) {
    meta.iter_mut().find(|(k, _)| k == key).unwrap().1 = v;
}

#[test]
fn the_unedited_rebuild_loads() {
    let file = edited("tiny-nomic-bert-moe.gguf", |_, _| {});
    assert!(arch::load(Arc::new(file)).is_ok());
}

#[test]
fn missing_tensors_are_refused() {
    for (fixture_name, tensor) in [
        ("tiny-nomic-bert.gguf", "blk.1.attn_qkv.weight"),
        ("tiny-nomic-bert.gguf", "blk.0.ffn_gate.weight"),
        ("tiny-jina-bert-v2.gguf", "blk.0.attn_k.bias"),
        ("tiny-jina-bert-v2.gguf", "token_embd_norm.bias"),
    ] {
        let f = edited(fixture_name, |_, t| t.retain(|(n, ..)| n != tensor));
        assert_eq!(
            load_error(f),
            LoadError::MissingTensor(tensor.into()),
            "{fixture_name}"
        );
    }
    let f = edited("tiny-nomic-bert-moe.gguf", |_, t| {
        t.retain(|(n, ..)| n != "blk.1.ffn_up_exps.weight")
    });
    assert!(matches!(
        arch::load(Arc::new(f)).err(),
        Some(LoadError::MissingTensor(_))
    ));
}

#[test]
fn bad_shapes_are_refused() {
    // attn_qkv of 64 outputs instead of 96.
    let f = edited("tiny-nomic-bert.gguf", |_, t| {
        let qkv = t
            .iter_mut()
            .find(|(n, ..)| n == "blk.0.attn_qkv.weight")
            .unwrap();
        qkv.1 = vec![32, 64];
        qkv.2.truncate(32 * 64 * 4);
    });
    assert!(matches!(load_error(f), LoadError::BadShape { .. }));
    // A fused GEGLU up that is neither n_ff nor 2 × n_ff wide.
    let f = edited("tiny-jina-bert-v2.gguf", |_, t| {
        let up = t
            .iter_mut()
            .find(|(n, ..)| n == "blk.1.ffn_up.weight")
            .unwrap();
        up.1 = vec![32, 96];
        up.2.truncate(32 * 96 * 4);
    });
    assert!(matches!(load_error(f), LoadError::BadShape { .. }));
    // Experts stacked 3 deep where the metadata says 4.
    let f = edited("tiny-nomic-bert-moe.gguf", |_, t| {
        let up = t
            .iter_mut()
            .find(|(n, ..)| n == "blk.1.ffn_up_exps.weight")
            .unwrap();
        up.1 = vec![32, 64, 3];
        up.2.truncate(32 * 64 * 3 * 4);
    });
    assert!(matches!(
        arch::load(Arc::new(f)).err(),
        Some(LoadError::BadShape { .. })
    ));
}

#[test]
fn impossible_expert_counts_are_refused() {
    for (count, used) in [(4u32, 5u32), (0, 0), (4, 0)] {
        let f = edited("tiny-nomic-bert-moe.gguf", |m, _| {
            set(m, "nomic-bert-moe.expert_count", Value::U32(count));
            set(m, "nomic-bert-moe.expert_used_count", Value::U32(used));
        });
        assert!(
            matches!(arch::load(Arc::new(f)).err(), Some(LoadError::Invalid(_))),
            "{used} of {count} experts"
        );
    }
    let f = edited("tiny-nomic-bert-moe.gguf", |m, _| {
        m.retain(|(k, _)| k != "nomic-bert-moe.expert_count")
    });
    assert!(matches!(
        arch::load(Arc::new(f)).err(),
        Some(LoadError::MissingKey(_))
    ));
}

#[test]
fn heads_that_do_not_divide_the_width_are_refused() {
    let f = edited("tiny-jina-bert-v2.gguf", |m, _| {
        set(m, "jina-bert-v2.attention.head_count", Value::U32(5))
    });
    assert!(matches!(load_error(f), LoadError::Invalid(_)));
}

/// GEGLU's combination on the CPU backend (parallel chunks, the SIMD GELU) against the scalar
/// references gelu then mul, over several chunks of awkward length.
#[test]
fn gelu_mul_matches_the_scalar_reference() {
    let mut rng = Rng(7);
    let n = 3 * 4096 + 37;
    let (gate, up) = (rng.vec(n, 4.0), rng.vec(n, 2.0));
    let mut want = gate.clone();
    quiver_kernels::ops::gelu(&mut want);
    quiver_kernels::ops::mul(&mut want, &up);
    let mut got = gate.clone();
    Cpu::new().gelu_mul(&mut got, &up);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{i}: {g} vs {w}");
    }
}
