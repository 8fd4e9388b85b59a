//! `quiver bench` options and their command-line form.

use std::path::PathBuf;

/// What to measure. `BenchOptions::default()` is the full default run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// A `.gguf` path, or a model name resolved through the store.
    pub model: String,
    /// A second model (path or name) for the library path, its repetitions alternated with
    /// `model`'s so that both see the same machine (see `library::throughput_versus`).
    pub versus: Option<String>,
    /// Thread counts for the library path (a dedicated rayon pool each).
    pub threads: Vec<usize>,
    /// Batch sizes for queries.
    pub batches: Vec<usize>,
    /// Batch sizes for passages.
    pub passage_batches: Vec<usize>,
    /// Timed repetitions per measurement (after one warm-up); the median is reported.
    pub reps: usize,
    /// Each repetition embeds at least this many queries / passages (several batches when the
    /// batch is smaller), so small batches are timed over more than a few milliseconds.
    pub min_queries: usize,
    pub min_passages: usize,
    /// Measure the library path (tokenize + forward + pool + normalise in process).
    pub library: bool,
    /// Measure over HTTP: one-query latency, throughput per batch, and concurrency.
    pub http: bool,
    /// Benchmark a server that is already running (`http://127.0.0.1:11434`) instead of starting
    /// one in process.
    pub url: Option<String>,
    /// The model name sent over HTTP (default: `model`, or `all-minilm` when `model` is a path
    /// and `url` is given).
    pub http_model: Option<String>,
    /// Single-query requests timed for the latency figures.
    pub latency_requests: usize,
    /// Client threads in the concurrency test (each sends single queries) and the batch size
    /// the one batching client sends; 0 skips the test.
    pub concurrency: usize,
    /// Write the report as JSON here.
    pub json: Option<PathBuf>,
    /// Write the corpus as JSON here and measure nothing (for the anchor scripts).
    pub dump_corpus: Option<PathBuf>,
    /// Only serve (in process, on this address) until SIGTERM; measure nothing.
    pub serve: Option<std::net::SocketAddr>,
    /// The bundled model's bytes, when the binary carries them (answers `all-minilm`).
    pub bundled: Option<&'static [u8]>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        let all = std::thread::available_parallelism().map_or(1, |n| n.get());
        BenchOptions {
            model: "all-minilm".into(),
            versus: None,
            threads: if all > 1 { vec![1, all] } else { vec![1] },
            batches: vec![1, 8, 64, 256],
            passage_batches: vec![1, 8, 64, 256],
            reps: 3,
            min_queries: 64,
            min_passages: 8,
            library: true,
            http: false,
            url: None,
            http_model: None,
            latency_requests: 50,
            concurrency: 32,
            json: None,
            dump_corpus: None,
            serve: None,
            bundled: None,
        }
    }
}

pub const USAGE: &str = "\
usage: quiver bench [options]
  --model M             .gguf path or model name (default all-minilm)
  --versus M2           library path: also M2, each repetition alternated with M's;
                        reports M2's rate / M's as the median of per-repetition ratios
  --threads N[,N..]     library-path thread counts; `all` = every core (default 1,all)
  --batch B[,B..]       query batch sizes (default 1,8,64,256)
  --passage-batch B,..  passage batch sizes (default: the query ones)
  --reps N              timed repetitions per row, median reported (default 3)
  --min-queries N       queries embedded per repetition at least (default 64)
  --min-passages N      passages embedded per repetition at least (default 8)
  --http                also measure over HTTP (latency, throughput, concurrency)
  --http-only           only the HTTP measurements
  --url URL             benchmark a running server instead of starting one (implies --http)
  --http-model NAME     model name to send over HTTP
  --latency-requests N  single-query requests for median/p90 latency (default 50)
  --concurrency N       clients in the concurrency test, 0 to skip (default 32)
  --json FILE           also write the report as JSON
  --dump-corpus FILE    write the benchmark corpus as JSON and exit
  --serve ADDR          only start the server on ADDR (127.0.0.1:PORT) until SIGTERM,
                        for --url runs and RSS readings from another process";

/// Parses `quiver bench` arguments (everything after `bench`).
pub fn parse_args(args: &[String]) -> Result<BenchOptions, String> {
    let mut o = BenchOptions::default();
    let mut passage_batches_set = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .map(String::as_str)
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--model" | "-m" => o.model = value()?.to_string(),
            "--versus" => o.versus = Some(value()?.to_string()),
            "--threads" | "-t" => o.threads = parse_threads(value()?)?,
            "--batch" | "-b" => o.batches = parse_list(flag, value()?)?,
            "--passage-batch" => {
                o.passage_batches = parse_list(flag, value()?)?;
                passage_batches_set = true;
            }
            "--reps" => o.reps = parse_positive(flag, value()?)?,
            "--min-queries" => o.min_queries = parse_positive(flag, value()?)?,
            "--min-passages" => o.min_passages = parse_positive(flag, value()?)?,
            "--http" => o.http = true,
            "--http-only" => {
                o.http = true;
                o.library = false;
            }
            "--url" => {
                o.url = Some(value()?.to_string());
                o.http = true;
            }
            "--http-model" => o.http_model = Some(value()?.to_string()),
            "--latency-requests" => o.latency_requests = parse_positive(flag, value()?)?,
            "--concurrency" => {
                let v = value()?;
                o.concurrency = v
                    .parse()
                    .map_err(|_| format!("{flag}: {v:?} is not a number"))?;
            }
            "--json" => o.json = Some(value()?.into()),
            "--serve" => {
                let v = value()?;
                o.serve = Some(v.parse().map_err(|_| {
                    format!("--serve: {v:?} is not an address like 127.0.0.1:8080")
                })?);
            }
            "--dump-corpus" => o.dump_corpus = Some(value()?.into()),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    if o.versus.is_some() && !o.library {
        return Err("--versus compares models on the library path: drop --http-only".into());
    }
    if !passage_batches_set {
        o.passage_batches = o.batches.clone();
    }
    Ok(o)
}

/// Largest batch or thread count accepted: far above anything useful, far below a silly
/// allocation.
const MAX_COUNT: usize = 65_536;

fn parse_positive(flag: &str, v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag}: {v:?} is not a number from 1 to {MAX_COUNT}"
        )),
    }
}

fn parse_list(flag: &str, v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|s| parse_positive(flag, s.trim()))
        .collect()
}

fn parse_threads(v: &str) -> Result<Vec<usize>, String> {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = Vec::new();
    for s in v.split(',') {
        let n = match s.trim() {
            "all" => all,
            s => parse_positive("--threads", s)?,
        };
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_the_documented_form() {
        let o = parse_args(&args(
            "--model m.gguf --threads 2 --batch 1,8,64,256 --json out.json --http --versus q.gguf",
        ))
        .unwrap();
        assert_eq!(o.model, "m.gguf");
        assert_eq!(o.versus.as_deref(), Some("q.gguf"));
        assert_eq!(o.threads, vec![2]);
        assert_eq!(o.batches, vec![1, 8, 64, 256]);
        assert_eq!(o.passage_batches, vec![1, 8, 64, 256]);
        assert_eq!(o.json.as_deref(), Some(std::path::Path::new("out.json")));
        assert!(o.http && o.library && o.url.is_none());
    }

    #[test]
    fn url_implies_http_and_lists_dedupe() {
        let o = parse_args(&args(
            "--url http://127.0.0.1:9 --http-only --threads 1,1,2 --passage-batch 64",
        ))
        .unwrap();
        assert!(o.http && !o.library);
        assert_eq!(o.threads, vec![1, 2]);
        assert_eq!(o.passage_batches, vec![64]);
    }

    #[test]
    fn rejects_bad_values_with_a_message() {
        for bad in [
            "--batch 0",
            "--batch 1,x",
            "--threads -1",
            "--reps",
            "--bogus",
            "--batch 99999999",
        ] {
            let e = parse_args(&args(bad)).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }
}
