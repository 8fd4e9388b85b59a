//! The HTTP path: `POST /api/embed` to a server over loopback, with the same corpus, batches and
//! repetitions as the library path; one-query latency; and the concurrency test.

use super::corpus::Corpus;
use super::http::{Client, HttpError};
use super::library::{ms, Spec};
use super::report::{Concurrency, Latency, Path, Row};
use super::{plan, stats, BenchError};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct EmbedResponse {
    embeddings: Vec<Vec<f32>>,
    #[serde(default)]
    prompt_eval_count: usize,
}

/// Sends one `/api/embed` request; checks one vector came back per input. Returns the
/// server's token count.
fn embed(client: &mut Client, model: &str, texts: &[&str]) -> Result<usize, BenchError> {
    let body = serde_json::json!({ "model": model, "input": texts }).to_string();
    let raw = client
        .post_json("/api/embed", body.as_bytes())
        .map_err(http_err)?;
    let r: EmbedResponse = serde_json::from_slice(&raw)
        .map_err(|e| BenchError::Run(format!("bad /api/embed response: {e}")))?;
    if r.embeddings.len() != texts.len() {
        return Err(BenchError::Run(format!(
            "{} inputs gave {} embeddings",
            texts.len(),
            r.embeddings.len()
        )));
    }
    Ok(r.prompt_eval_count)
}

fn http_err(e: HttpError) -> BenchError {
    BenchError::Run(e.to_string())
}

pub fn throughput(
    addr: SocketAddr,
    model: &str,
    corpus: &Corpus,
    threads: Option<usize>,
    spec: &Spec,
) -> Result<Row, BenchError> {
    let batches = plan(corpus.texts(spec.kind), spec.batch, spec.min_items);
    let items: usize = batches.iter().map(Vec::len).sum();
    let mut client = Client::new(addr);
    embed(&mut client, model, &batches[0])?; // warm-up (and loads the model)
    let mut times = Vec::with_capacity(spec.reps);
    let mut tokens = 0;
    for _ in 0..spec.reps {
        tokens = 0;
        let t0 = Instant::now();
        for b in &batches {
            tokens += embed(&mut client, model, b)?;
        }
        times.push(t0.elapsed());
    }
    let median_s = stats::median(&times).unwrap_or_default().as_secs_f64();
    Ok(Row {
        path: Path::Http,
        kind: spec.kind,
        batch: spec.batch,
        threads,
        items,
        tokens,
        reps: spec.reps,
        median_s,
        embeddings_per_s: items as f64 / median_s,
        tokens_per_s: tokens as f64 / median_s,
    })
}

pub fn latency(
    addr: SocketAddr,
    model: &str,
    corpus: &Corpus,
    threads: Option<usize>,
    requests: usize,
) -> Result<Latency, BenchError> {
    let mut client = Client::new(addr);
    embed(&mut client, model, &[corpus.queries[0].as_str()])?;
    let mut times = Vec::with_capacity(requests);
    for q in corpus.queries.iter().cycle().take(requests) {
        let t0 = Instant::now();
        embed(&mut client, model, &[q.as_str()])?;
        times.push(t0.elapsed());
    }
    Ok(Latency {
        path: Path::Http,
        threads,
        requests,
        median_ms: ms(stats::median(&times)),
        p90_ms: ms(stats::quantile(&times, 0.9)),
    })
}

/// `clients` threads each send `per_client` single-query requests at once, against one client
/// sending the same queries in batches of `clients`. Medians over `reps`.
pub fn concurrency(
    addr: SocketAddr,
    model: &str,
    corpus: &Corpus,
    clients: usize,
    reps: usize,
) -> Result<Concurrency, BenchError> {
    let per_client = 4;
    let total = clients * per_client;
    let queries: Vec<&str> = corpus
        .queries
        .iter()
        .cycle()
        .take(total)
        .map(String::as_str)
        .collect();

    // Concurrent: each client keeps its connection across repetitions (opened in the warm-up).
    let mut concurrent = Vec::with_capacity(reps);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let elapsed = std::thread::scope(|s| -> Result<Vec<Duration>, BenchError> {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let barrier = barrier.clone();
                let mine: Vec<&str> = queries[c * per_client..(c + 1) * per_client].to_vec();
                s.spawn(move || -> Result<(), BenchError> {
                    let mut client = Client::new(addr);
                    // Every rep: wait for the start, send, wait for the others to finish.
                    // An error is reported after the barriers so no thread waits forever.
                    let mut result = embed(&mut client, model, &mine[..1]).map(|_| ());
                    for _ in 0..=reps {
                        barrier.wait();
                        if result.is_ok() {
                            for q in &mine {
                                if let Err(e) = embed(&mut client, model, &[q]) {
                                    result = Err(e);
                                    break;
                                }
                            }
                        }
                        barrier.wait();
                    }
                    result
                })
            })
            .collect();
        // Rep 0 is a warm-up round with every client connected.
        let mut times = Vec::with_capacity(reps);
        for rep in 0..=reps {
            barrier.wait();
            let t0 = Instant::now();
            barrier.wait();
            if rep > 0 {
                times.push(t0.elapsed());
            }
        }
        for h in handles {
            h.join()
                .map_err(|_| BenchError::Run("a client thread panicked".into()))??;
        }
        Ok(times)
    })?;
    concurrent.extend(elapsed);

    let mut client = Client::new(addr);
    embed(&mut client, model, &queries[..clients])?;
    let mut batched = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        for chunk in queries.chunks(clients) {
            embed(&mut client, model, chunk)?;
        }
        batched.push(t0.elapsed());
    }
    let per_s = |t: &[Duration]| total as f64 / stats::median(t).unwrap_or_default().as_secs_f64();
    let (c, b) = (per_s(&concurrent), per_s(&batched));
    Ok(Concurrency {
        clients,
        queries: total,
        concurrent_queries_per_s: c,
        batched_queries_per_s: b,
        ratio: c / b,
    })
}
