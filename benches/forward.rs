//! One forward pass of all-minilm (F16 and Q8_0 fixtures) on the CPU backend: 64 passages of
//! 250 tokens and 256 queries of 10 tokens. Criterion's "elem/s" is tokens/s.
//!
//! cargo bench --bench forward -- --warm-up-time 1 --measurement-time 3
//!
//! Before criterion runs, one timed pass of each case is printed (tokens/s): a quick number
//! when the machine is busy (`cargo bench --bench forward -- none` runs only those).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver::backend::cpu::Cpu;
use quiver::gguf::GgufFile;
use quiver::model::Model;
use std::path::Path;
use std::sync::Arc;

/// `count` sequences of `len` ids: [CLS], ordinary word ids, [SEP].
fn sequences(count: usize, len: usize) -> Vec<Vec<u32>> {
    (0..count)
        .map(|s| {
            let mut v = vec![101];
            v.extend((1..len - 1).map(|i| 2000 + ((s * 31 + i * 7) % 5000) as u32));
            v.push(102);
            v
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    println!("rayon threads: {}", rayon::current_num_threads());
    for file in ["all-minilm-f16.gguf", "all-minilm-q8_0.gguf"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(file);
        let model = Model::load(GgufFile::open(&path).unwrap(), Arc::new(Cpu::new())).unwrap();
        let mut g = c.benchmark_group(format!("forward_{file}"));
        g.sample_size(10);
        for (count, len) in [(64, 250), (256, 10)] {
            let seqs = sequences(count, len);
            let t = std::time::Instant::now();
            model.embed_tokens(&seqs).unwrap();
            let secs = t.elapsed().as_secs_f64();
            println!(
                "one pass {file} {count}x{len}: {secs:.3} s, {:.0} tokens/s, {:.1} sequences/s",
                (count * len) as f64 / secs,
                count as f64 / secs
            );
            g.throughput(Throughput::Elements((count * len) as u64));
            g.bench_function(BenchmarkId::from_parameter(format!("{count}x{len}")), |b| {
                b.iter(|| model.embed_tokens(&seqs).unwrap())
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
