//! What a benchmark run found, as a table for people and JSON for scripts.

use super::corpus::Kind;
use serde::Serialize;
use std::fmt;

/// Where the embeddings were computed from the benchmark's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    /// In process: tokenize + forward + pool + normalise.
    Library,
    /// `POST /api/embed` over loopback.
    Http,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Library => "library",
            Path::Http => "http",
        }
    }
}

/// One throughput measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub path: Path,
    pub kind: Kind,
    pub batch: usize,
    /// Compute threads; `None` over HTTP to a server whose thread count we do not set.
    pub threads: Option<usize>,
    /// Texts embedded per repetition (a whole number of batches).
    pub items: usize,
    /// Tokens per repetition, special tokens included.
    pub tokens: usize,
    pub reps: usize,
    /// Median seconds per repetition.
    pub median_s: f64,
    pub embeddings_per_s: f64,
    pub tokens_per_s: f64,
}

/// One-text latency.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub path: Path,
    pub threads: Option<usize>,
    pub requests: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
}

/// N clients each sending single queries against one client sending batches of N.
#[derive(Clone, Debug, Serialize)]
pub struct Concurrency {
    pub clients: usize,
    pub queries: usize,
    pub concurrent_queries_per_s: f64,
    pub batched_queries_per_s: f64,
    /// concurrent / batched: 1.0 means the server batches concurrent requests perfectly.
    pub ratio: f64,
}

/// The `--versus` model against the main one on one library row, from repetitions
/// alternated between them (the order swapped every repetition).
#[derive(Clone, Debug, Serialize)]
pub struct Versus {
    pub kind: Kind,
    pub batch: usize,
    pub threads: usize,
    pub reps: usize,
    /// Per repetition, the versus model's rate over the main model's (their times' inverse
    /// ratio); the median, and the extremes as a measure of the noise.
    pub median_ratio: f64,
    pub min_ratio: f64,
    pub max_ratio: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub quantization: String,
    pub cores: usize,
    pub rows: Vec<Row>,
    /// `--versus`: that model (and its quantization), its library rows, and the ratios.
    pub versus_model: Option<String>,
    pub versus_rows: Vec<Row>,
    pub versus: Vec<Versus>,
    pub latency: Vec<Latency>,
    pub concurrency: Option<Concurrency>,
    /// Things not measured and why.
    pub notes: Vec<String>,
}

impl BenchReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain numbers and strings serialise")
    }
}

fn write_rows(f: &mut fmt::Formatter<'_>, rows: &[Row]) -> fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(
        f,
        "{:<8} {:<8} {:>6} {:>7} {:>7} {:>9} {:>12} {:>12}",
        "path", "kind", "batch", "threads", "items", "median_s", "embed/s", "tokens/s"
    )?;
    for r in rows {
        writeln!(
            f,
            "{:<8} {:<8} {:>6} {:>7} {:>7} {:>9.4} {:>12.1} {:>12.0}",
            r.path.name(),
            r.kind.name(),
            r.batch,
            threads(r.threads),
            r.items,
            r.median_s,
            r.embeddings_per_s,
            r.tokens_per_s
        )?;
    }
    Ok(())
}

fn threads(t: Option<usize>) -> String {
    t.map_or("server".into(), |n| n.to_string())
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "model {} ({}), {} cores",
            self.model, self.quantization, self.cores
        )?;
        write_rows(f, &self.rows)?;
        if let Some(m) = &self.versus_model {
            writeln!(
                f,
                "versus {m}, each repetition alternated with the rows above:"
            )?;
            write_rows(f, &self.versus_rows)?;
            for v in &self.versus {
                writeln!(
                    f,
                    "versus / model, {} batch {} threads {}: median {:.3} (range {:.3}-{:.3} \
                     over {} paired repetitions)",
                    v.kind.name(),
                    v.batch,
                    v.threads,
                    v.median_ratio,
                    v.min_ratio,
                    v.max_ratio,
                    v.reps
                )?;
            }
        }
        for l in &self.latency {
            writeln!(
                f,
                "one-query latency, {} (threads {}): median {:.2} ms, p90 {:.2} ms over {} requests",
                l.path.name(),
                threads(l.threads),
                l.median_ms,
                l.p90_ms,
                l.requests
            )?;
        }
        if let Some(c) = &self.concurrency {
            writeln!(
                f,
                "concurrency: {} clients x single queries {:.1} q/s vs 1 client x batches of {} \
                 {:.1} q/s: ratio {:.2} ({} queries)",
                c.clients,
                c.concurrent_queries_per_s,
                c.clients,
                c.batched_queries_per_s,
                c.ratio,
                c.queries
            )?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}
