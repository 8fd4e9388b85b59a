//! `quiver embed`: embed texts with a model from the store (or a .gguf path) on this machine,
//! and print the JSON `/api/embed` would answer.

use super::{resolve_model, CliResult};
use crate::backend::gpu::select_backend_for_command;
use crate::embed::normalize;
use crate::model::Model;
use crate::store::Store;
use std::io::BufRead;
use std::time::Instant;

/// Inputs go through the model this many at a time, so that a long stdin does not become one
/// huge batch.
const BATCH: usize = 64;

pub fn run(store: &Store, model_name: &str, texts: Vec<String>) -> CliResult {
    let start = Instant::now();
    let texts = if texts.is_empty() {
        read_stdin_lines()?
    } else {
        texts
    };
    let entry = resolve_model(store, model_name)?;
    // QUIVER_BACKEND=cpu|gpu|auto, chosen as `quiver serve` chooses.
    let model = Model::load(entry.open()?, select_backend_for_command())?;
    let load_duration = start.elapsed();

    let mut embeddings = Vec::with_capacity(texts.len());
    let mut tokens = 0usize;
    for chunk in texts.chunks(BATCH) {
        let seqs = chunk
            .iter()
            .map(|t| model.prepare(t, None, true))
            .collect::<Result<Vec<_>, _>>()?;
        tokens += seqs.iter().map(Vec::len).sum::<usize>();
        let mut vectors = model.embed_tokens(&seqs)?;
        vectors.iter_mut().for_each(|v| normalize(v));
        embeddings.extend(vectors);
    }
    let out = serde_json::json!({
        "model": model_name,
        "embeddings": embeddings,
        "total_duration": start.elapsed().as_nanos() as u64,
        "load_duration": load_duration.as_nanos() as u64,
        "prompt_eval_count": tokens,
    });
    println!("{out}");
    Ok(())
}

/// One input per non-empty line of stdin.
fn read_stdin_lines() -> Result<Vec<String>, std::io::Error> {
    let mut out = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if !line.trim().is_empty() {
            out.push(line);
        }
    }
    Ok(out)
}
