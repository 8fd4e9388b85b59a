//! Attention over packed sequences, all threads: all-minilm's shape (12 heads of 32) on a
//! ~2048-token forward pass, of 8 passages of 256 tokens or of 170 queries of 12
//! (bidirectional), at both precisions of the fused path, and the f32 one. Criterion's
//! "elem/s" is FLOP/s here: per sequence and head, Q·Kᵀ and P·V take 2·len²·head_dim
//! multiply-adds (4·len²·head_dim FLOP).
//!
//! cargo bench -p quiver-kernels --bench attention -- --warm-up-time 1 --measurement-time 3

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quiver_kernels::attention::{AttnShape, Mask};
use quiver_kernels::attention_fast::{attention, attention_low_precision};
use quiver_kernels::matmul::Isa;
use std::ops::Range;

fn bench(c: &mut Criterion) {
    println!(
        "ISA {:?}, {} threads",
        Isa::detect(),
        rayon::current_num_threads()
    );
    // Passages, and a batch of queries.
    for (n_seq, len) in [(8, 256), (170, 12)] {
        group(c, n_seq, len);
    }
}

fn group(c: &mut Criterion, n_seq: usize, len: usize) {
    let isa = Isa::detect();
    let s = AttnShape {
        n_head: 12,
        n_head_kv: 12,
        head_dim: 32,
    };
    let tokens = n_seq * len;
    let seqs: Vec<Range<usize>> = (0..n_seq).map(|i| i * len..(i + 1) * len).collect();
    // Scores of a few units, as a trained model's are: softmax rows neither flat nor one-hot.
    let gen = |n: usize, salt: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + salt) % 1013) as f32 / 1013.0 - 0.5) * 2.0)
            .collect()
    };
    let q = gen(tokens * s.q_dim(), 1);
    let k = gen(tokens * s.kv_dim(), 2);
    let v = gen(tokens * s.kv_dim(), 3);
    let mut out = vec![0.0f32; tokens * s.q_dim()];
    let flop = 4 * n_seq * len * len * s.head_dim * s.n_head;
    let mut g = c.benchmark_group(format!("attention_{n_seq}x{len}_12x32"));
    g.throughput(Throughput::Elements(flop as u64));
    g.bench_function("low_precision", |b| {
        b.iter(|| attention_low_precision(isa, &q, &k, &v, &seqs, s, Mask::Full, &mut out))
    });
    g.bench_function("f32", |b| {
        b.iter(|| attention(isa, &q, &k, &v, &seqs, s, Mask::Full, &mut out))
    });
    g.bench_function("low_precision_causal", |b| {
        b.iter(|| attention_low_precision(isa, &q, &k, &v, &seqs, s, Mask::Causal, &mut out))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
