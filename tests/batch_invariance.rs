//! Batch invariance: a text gives the same f32 bits alone or inside any batch (short and long
//! neighbours, any position, the number of rows of every matrix product changing with them),
//! with 1 or 2 rayon threads, and through the engine's scheduler while other requests share
//! its forward passes. A search index built from vectors embedded one by one must match the
//! vectors of a query embedded in a busy server's batch, bit for bit.
//!
//! One row of [`MODELS`] per model: a name and a function that loads it (or says why it
//! cannot). A new architecture is one more row.

mod common;

use common::{fixture, gguf_from_bytes};
use quiver::backend::cpu::Cpu;
use quiver::engine::scheduler::Scheduler;
use quiver::gguf::writer::GgufWriter;
use quiver::gguf::{GgufFile, Value};
use quiver::model::Model;
use quiver::tensor::DType;
use std::path::Path;
use std::sync::Arc;

/// A model to test, or why it is not here (printed, and the row passes).
type Loader = fn() -> Result<Model, String>;

const MODELS: &[(&str, Loader)] = &[
    ("all-minilm F32", || minilm_f32()),
    ("all-minilm F16", || {
        load_path(&fixture("all-minilm-f16.gguf"))
    }),
    ("all-minilm Q8_0", || {
        load_path(&fixture("all-minilm-q8_0.gguf"))
    }),
    ("tiny llama F32", || tiny_llama(DType::F32)),
    ("tiny llama F16", || tiny_llama(DType::F16)),
    ("tiny llama Q8_0", || tiny_llama(DType::Q8_0)),
    ("tiny llama Q4_0", || tiny_llama(DType::Q4_0)),
    ("tiny llama Q4_1", || tiny_llama(DType::Q4_1)),
    ("tiny llama Q4_K", || tiny_llama(DType::Q4_K)),
    ("tiny llama Q6_K", || tiny_llama(DType::Q6_K)),
    ("SmolLM2 Q4_1", smollm2),
    ("tiny nomic-bert (RoPE, SwiGLU)", || {
        load_path(&fixture("tiny-nomic-bert.gguf"))
    }),
    ("tiny nomic-bert-moe (mixture of experts)", || {
        load_path(&fixture("tiny-nomic-bert-moe.gguf"))
    }),
    ("tiny jina-bert-v2 (ALiBi, GEGLU)", || {
        load_path(&fixture("tiny-jina-bert-v2.gguf"))
    }),
    ("tiny bert + XLM-R Unigram", || {
        load_path(&fixture("tiny-xlmr-bert.gguf"))
    }),
    ("multilingual-e5-small Q4_0", || {
        load_path(&fetched("multilingual-e5-small-q4_0.gguf"))
    }),
    ("tiny gemma-embedding (sliding window)", || {
        load_path(&fetched("tiny-gemma-embedding.gguf"))
    }),
    (
        "Gemma-3-270M as gemma-embedding (Q5_0, Q4_K, Q6_K, Q8_0)",
        || load_path(&fetched("gemma-embedding-from-gemma3-270m-q4_k_m.gguf")),
    ),
];

/// A model a script in scripts/ fetches into target/models/ (absent: the row says so).
fn fetched(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/models")
        .join(name)
}

/// Short texts (1–5 tokens: the few-rows paths of the matrix products), a medium one and a
/// long one (hundreds of tokens in the character-level tiny vocabulary).
const TEXTS: &[&str] = &[
    "Pizza is delicious",
    "why",
    "a",
    "The quick brown fox jumps over the lazy dog while the cat watches from the windowsill.",
    "Embeddings map text to vectors so that texts with similar meanings lie close together; \
     a search engine then ranks documents by the cosine of their vectors with the query's. \
     For that ranking to be stable, the vector of a text must not depend on which other texts \
     happened to share its batch, nor on how many threads computed it.",
    "ok go",
];

// ---------------------------------------------------------------------------------------------
// The check.

fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter()
        .map(|x| x.iter().map(|f| f.to_bits()).collect())
        .collect()
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool")
        .install(f)
}

/// Every text alone (the reference) against: alone on 1 and 2 threads; all in one batch, in
/// order and reversed; each between a long and a short neighbour; a batch of 18 (the first
/// report's case) on 1 and 2 threads; and the engine's scheduler with concurrent requests.
fn check(name: &str, model: Model) -> Vec<String> {
    let seqs: Vec<Vec<u32>> = TEXTS
        .iter()
        .map(|t| model.prepare(t, None, true).expect("fits the context"))
        .collect();
    let embed = |batch: &[&Vec<u32>]| bits(&model.embed_tokens(batch).expect("embeds"));
    let alone: Vec<Vec<u32>> = seqs.iter().map(|s| embed(&[s]).remove(0)).collect();
    // Every difference is collected, then reported together: which texts and which batches
    // differ says where the rounding comes from.
    let failures = std::sync::Mutex::new(Vec::new());
    let same = |what: &str, i: usize, got: &[u32]| {
        if got != &alone[i][..] {
            failures.lock().unwrap().push(format!(
                "{name}: {:?} {what} differs from alone ({} of {} values)",
                TEXTS[i],
                got.iter().zip(&alone[i]).filter(|(a, b)| a != b).count(),
                got.len()
            ));
        }
    };
    for threads in [1, 2] {
        for (i, s) in seqs.iter().enumerate() {
            let got = in_pool(threads, || embed(&[s]));
            same(&format!("alone on {threads} thread(s)"), i, &got[0]);
        }
    }
    let order: Vec<usize> = (0..seqs.len()).collect();
    let long = TEXTS
        .iter()
        .enumerate()
        .max_by_key(|t| t.1.len())
        .unwrap()
        .0;
    let mut batches: Vec<(String, Vec<usize>)> = vec![
        ("in one batch".into(), order.clone()),
        (
            "in a reversed batch".into(),
            order.iter().rev().copied().collect(),
        ),
    ];
    for i in 0..seqs.len() {
        batches.push((
            "between a long and a short neighbour".into(),
            vec![long, i, 2],
        ));
    }
    let eighteen: Vec<usize> = (0..18).map(|j| (j * 5 + 3) % seqs.len()).collect();
    batches.push(("in a batch of 18".into(), eighteen.clone()));
    for (what, members) in &batches {
        let got = embed(&members.iter().map(|&i| &seqs[i]).collect::<Vec<_>>());
        for (&i, v) in members.iter().zip(&got) {
            same(what, i, v);
        }
    }
    for threads in [1, 2] {
        let got = in_pool(threads, || {
            embed(&eighteen.iter().map(|&i| &seqs[i]).collect::<Vec<_>>())
        });
        for (&i, v) in eighteen.iter().zip(&got) {
            same(&format!("in a batch of 18 on {threads} thread(s)"), i, v);
        }
    }

    // The scheduler: requests from several threads at once, merged into shared forward passes
    // under a small token budget (so that batches are cut at different places).
    let model = Arc::new(model);
    let scheduler = Scheduler::start(model.clone(), "invariance", 64, usize::MAX);
    std::thread::scope(|scope| {
        for r in 0..4 {
            let (scheduler, seqs, same) = (&scheduler, &seqs, &same);
            scope.spawn(move || {
                let members: Vec<usize> = (0..seqs.len()).map(|j| (j + r) % seqs.len()).collect();
                let request = members.iter().map(|&i| seqs[i].clone()).collect();
                let got = scheduler.embed(request).expect("queued").expect("embedded");
                for (&i, v) in members.iter().zip(&bits(&got)) {
                    same("through the scheduler", i, v);
                }
            });
        }
    });
    drop(scheduler);
    failures.into_inner().unwrap()
}

#[test]
fn same_bits_alone_in_any_batch_and_with_any_thread_count() {
    let mut failures = Vec::new();
    for (name, load) in MODELS {
        match load() {
            Ok(model) => failures.extend(check(name, model)),
            Err(why) => eprintln!("skipped {name}: {why}"),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The models.

fn load_path(path: &Path) -> Result<Model, String> {
    if !path.exists() {
        return Err(format!("{} not found", path.display()));
    }
    let file = GgufFile::open(path).map_err(|e| e.to_string())?;
    Model::load(file, Arc::new(Cpu::new())).map_err(|e| e.to_string())
}

fn load_bytes(bytes: &[u8]) -> Result<Model, String> {
    Model::load(gguf_from_bytes(bytes), Arc::new(Cpu::new())).map_err(|e| e.to_string())
}

/// all-minilm with every F16 tensor of the fixture widened to F32 (the exact float path).
fn minilm_f32() -> Result<Model, String> {
    let f16 = GgufFile::open(&fixture("all-minilm-f16.gguf")).map_err(|e| e.to_string())?;
    let mut w = GgufWriter::new();
    for (k, v) in &f16.header.metadata {
        let v = match k.as_str() {
            "general.file_type" => Value::U32(0),
            _ => v.clone(),
        };
        w = w.meta(k, v);
    }
    for t in &f16.header.tensors {
        let view = f16.tensor(&t.name).expect("listed tensor");
        w = w.tensor_f32(&t.name, t.dims(), &view.to_f32());
    }
    load_bytes(&w.to_bytes())
}

/// SmolLM2-135M (Q4_1), when scripts/fetch_smollm2.sh has fetched it.
fn smollm2() -> Result<Model, String> {
    load_path(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
    .map_err(|e| format!("{e} (run scripts/fetch_smollm2.sh)"))
}

/// The tiny llama of tests/common with random valid blocks of `dtype` in its layer matrices.
fn tiny_llama(dtype: DType) -> Result<Model, String> {
    load_bytes(&common::tiny_llama_gguf(dtype, &[]))
}
