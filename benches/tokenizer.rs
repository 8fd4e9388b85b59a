//! Tokenizer throughput on the XLM-R Unigram vocabulary (fixtures/tiny-xlmr-bert.gguf): the
//! 21 reference inputs of fixtures/new-archs-llamacpp.json (English, accents, CJK, code, emoji,
//! one long passage), tokenised one after another. Criterion's "elem/s" is input bytes/s; the
//! load (vocabulary trie and charsmap checks) is timed once before.
//!
//! cargo bench --bench tokenizer -- --warm-up-time 1 --measurement-time 3

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quiver::gguf::GgufFile;
use quiver::tokenizer;
use std::path::Path;

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let file = GgufFile::open(&root.join("tiny-xlmr-bert.gguf")).unwrap();
    let t = std::time::Instant::now();
    let tok = tokenizer::from_gguf(&file.header).unwrap();
    println!("t5 tokenizer built in {:?}", t.elapsed());
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("new-archs-llamacpp.json")).unwrap(),
    )
    .unwrap();
    let inputs: Vec<String> = j["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let bytes: usize = inputs.iter().map(String::len).sum();
    let tokens: usize = inputs.iter().map(|s| tok.encode(s).len()).sum();
    let mut g = c.benchmark_group("tokenizer_t5");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function(
        format!("{} inputs, {bytes} bytes, {tokens} tokens", inputs.len()),
        |b| {
            b.iter(|| {
                let mut n = 0;
                for s in &inputs {
                    n += tok.encode(s).len();
                }
                n
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
