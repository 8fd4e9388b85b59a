//! The library path: `Model::embed` (tokenize + forward + pool + normalise) inside a dedicated
//! rayon pool of N threads, so the thread count is exactly what the row says.

use super::corpus::{Corpus, Kind};
use super::report::{Latency, Path, Row, Versus};
use super::{plan, stats, BenchError};
use crate::model::Model;
use std::time::{Duration, Instant};

pub struct Spec {
    pub kind: Kind,
    pub batch: usize,
    pub min_items: usize,
    pub reps: usize,
}

fn pool(threads: usize) -> Result<rayon::ThreadPool, BenchError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| BenchError::Setup(format!("cannot start {threads} threads: {e}")))
}

fn embed(model: &Model, texts: &[&str]) -> Result<(), BenchError> {
    let v = model
        .embed(texts)
        .map_err(|e| BenchError::Run(e.to_string()))?;
    if v.len() != texts.len() {
        return Err(BenchError::Run(format!(
            "{} texts gave {} vectors",
            texts.len(),
            v.len()
        )));
    }
    Ok(())
}

pub fn throughput(
    model: &Model,
    corpus: &Corpus,
    threads: usize,
    spec: &Spec,
) -> Result<Row, BenchError> {
    let batches = plan(corpus.texts(spec.kind), spec.batch, spec.min_items);
    let pool = pool(threads)?;
    let times = pool.install(|| -> Result<Vec<Duration>, BenchError> {
        embed(model, &batches[0])?; // warm-up: page in weights, size the arenas
        (0..spec.reps)
            .map(|_| repetition(model, &batches))
            .collect()
    })?;
    Ok(row(model, &batches, threads, spec, &times))
}

/// [`throughput`] for `model` and `versus` at once, their repetitions alternated (the order
/// swapped every time), and per repetition `versus`'s rate over `model`'s. On a machine whose
/// speed drifts by more than the difference being measured (a shared VM), the ratio of
/// neighbouring repetitions holds where two separate runs' medians do not.
pub fn throughput_versus(
    model: &Model,
    versus: &Model,
    corpus: &Corpus,
    threads: usize,
    spec: &Spec,
) -> Result<(Row, Row, Versus), BenchError> {
    let batches = plan(corpus.texts(spec.kind), spec.batch, spec.min_items);
    let pool = pool(threads)?;
    let (a, b) = pool.install(|| -> Result<_, BenchError> {
        embed(model, &batches[0])?;
        embed(versus, &batches[0])?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for rep in 0..spec.reps {
            if rep % 2 == 0 {
                a.push(repetition(model, &batches)?);
                b.push(repetition(versus, &batches)?);
            } else {
                b.push(repetition(versus, &batches)?);
                a.push(repetition(model, &batches)?);
            }
        }
        Ok((a, b))
    })?;
    let ratios: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
        .collect();
    // The rows' rule for a median (nearest rank), so ratio and rows agree on even counts.
    let at = |q| stats::quantile(&ratios, q).unwrap_or(f64::NAN);
    let versus_row = Versus {
        kind: spec.kind,
        batch: spec.batch,
        threads,
        reps: spec.reps,
        median_ratio: at(0.5),
        min_ratio: at(0.0),
        max_ratio: at(1.0),
    };
    Ok((
        row(model, &batches, threads, spec, &a),
        row(versus, &batches, threads, spec, &b),
        versus_row,
    ))
}

/// One timed repetition: every batch of the plan.
fn repetition(model: &Model, batches: &[Vec<&str>]) -> Result<Duration, BenchError> {
    let t0 = Instant::now();
    for b in batches {
        embed(model, b)?;
    }
    Ok(t0.elapsed())
}

fn row(
    model: &Model,
    batches: &[Vec<&str>],
    threads: usize,
    spec: &Spec,
    times: &[Duration],
) -> Row {
    let items: usize = batches.iter().map(Vec::len).sum();
    let tokens: usize = batches
        .iter()
        .flatten()
        .map(|t| model.prepare(t, None, true).map_or(0, |ids| ids.len()))
        .sum();
    let median_s = stats::median(times).unwrap_or_default().as_secs_f64();
    Row {
        path: Path::Library,
        kind: spec.kind,
        batch: spec.batch,
        threads: Some(threads),
        items,
        tokens,
        reps: spec.reps,
        median_s,
        embeddings_per_s: items as f64 / median_s,
        tokens_per_s: tokens as f64 / median_s,
    }
}

/// One query at a time, `requests` of them after a warm-up.
pub fn latency(
    model: &Model,
    corpus: &Corpus,
    threads: usize,
    requests: usize,
) -> Result<Latency, BenchError> {
    let pool = pool(threads)?;
    let times = pool.install(|| -> Result<Vec<Duration>, BenchError> {
        embed(model, &[corpus.queries[0].as_str()])?;
        let mut times = Vec::with_capacity(requests);
        for q in corpus.queries.iter().cycle().take(requests) {
            let t0 = Instant::now();
            embed(model, &[q.as_str()])?;
            times.push(t0.elapsed());
        }
        Ok(times)
    })?;
    Ok(Latency {
        path: Path::Library,
        threads: Some(threads),
        requests,
        median_ms: ms(stats::median(&times)),
        p90_ms: ms(stats::quantile(&times, 0.9)),
    })
}

pub(super) fn ms(d: Option<Duration>) -> f64 {
    d.unwrap_or_default().as_secs_f64() * 1e3
}
