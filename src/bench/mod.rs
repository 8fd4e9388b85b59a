//! `quiver bench`: end-to-end embeddings/s and tokens/s over a fixed corpus, through the library
//! and over HTTP, at several batch sizes and thread counts; one-query latency; and how well
//! concurrent single-query clients fare against one batching client.
//!
//! Each measurement: one warm-up, then `reps` timed repetitions, the median reported. A
//! repetition embeds a whole number of batches, at least `min_queries` / `min_passages` texts.

pub mod corpus;
mod http;
mod library;
mod options;
mod over_http;
pub mod report;
mod stats;

pub use corpus::{Corpus, Kind};
pub use options::{parse_args, BenchOptions, USAGE};
pub use report::BenchReport;

use crate::gguf::{GgufFile, ModelBytes};
use crate::model::Model;
use library::Spec;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug)]
pub enum BenchError {
    /// The model could not be found or loaded.
    Model(String),
    /// Threads, server or files could not be set up.
    Setup(String),
    /// A measurement failed (an embedding error, a bad HTTP answer).
    Run(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Model(e) => write!(f, "bench: cannot load the model: {e}"),
            BenchError::Setup(e) => write!(f, "bench: {e}"),
            BenchError::Run(e) => write!(f, "bench: measurement failed: {e}"),
        }
    }
}

impl std::error::Error for BenchError {}

/// `quiver bench ARGS`: parse, run, print the table, write JSON when asked. For the CLI arm:
/// `Some("bench") => quiver::bench::main_args(&args[1..])`.
pub fn main_args(args: &[String]) -> Result<(), String> {
    main_args_with(args, None)
}

/// [`main_args`] for a binary that carries the bundled model (answers `all-minilm`).
pub fn main_args_with(args: &[String], bundled: Option<&'static [u8]>) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let mut opts = parse_args(args)?;
    opts.bundled = bundled;
    if let Some(path) = &opts.dump_corpus {
        return std::fs::write(path, Corpus::fixed().to_json())
            .map_err(|e| format!("cannot write {}: {e}", path.display()));
    }
    if let Some(addr) = opts.serve {
        return serve_only(&opts, addr).map_err(|e| e.to_string());
    }
    let json = opts.json.clone();
    let report = run(opts).map_err(|e| e.to_string())?;
    print!("{report}");
    if let Some(path) = json {
        std::fs::write(&path, report.to_json())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs every measurement `opts` asks for. Progress goes to stderr, one line per row.
pub fn run(opts: BenchOptions) -> Result<BenchReport, BenchError> {
    let corpus = Corpus::fixed();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = BenchReport {
        model: opts.model.clone(),
        // Known once the model is loaded here; an HTTP-only run never loads it in this process.
        quantization: "not loaded here".into(),
        cores,
        rows: Vec::new(),
        versus_model: None,
        versus_rows: Vec::new(),
        versus: Vec::new(),
        latency: Vec::new(),
        concurrency: None,
        notes: Vec::new(),
    };
    let specs = specs(&opts);

    if opts.library {
        let model = load_model(&opts, &opts.model)?;
        report.quantization = model.info.quantization_level.clone();
        let versus = opts
            .versus
            .as_deref()
            .map(|n| load_model(&opts, n))
            .transpose()?;
        if let (Some(name), Some(v)) = (&opts.versus, &versus) {
            report.versus_model = Some(format!("{name} ({})", v.info.quantization_level));
        }
        for &threads in &opts.threads {
            for spec in &specs {
                let Some(versus) = &versus else {
                    let row = library::throughput(&model, &corpus, threads, spec)?;
                    progress(&row);
                    report.rows.push(row);
                    continue;
                };
                let (row, versus_row, ratio) =
                    library::throughput_versus(&model, versus, &corpus, threads, spec)?;
                progress(&row);
                eprint!("versus ");
                progress(&versus_row);
                report.rows.push(row);
                report.versus_rows.push(versus_row);
                report.versus.push(ratio);
            }
            let lat = library::latency(&model, &corpus, threads, opts.latency_requests)?;
            report.latency.push(lat);
        }
    }

    if opts.http {
        let target = http_target(&opts, None)?;
        let name = target.model.as_str();
        for spec in &specs {
            let row = over_http::throughput(target.addr, name, &corpus, target.threads, spec)?;
            progress(&row);
            report.rows.push(row);
        }
        report.latency.push(over_http::latency(
            target.addr,
            name,
            &corpus,
            target.threads,
            opts.latency_requests,
        )?);
        if opts.concurrency > 0 {
            report.concurrency = Some(over_http::concurrency(
                target.addr,
                name,
                &corpus,
                opts.concurrency,
                opts.reps,
            )?);
        }
        target.stop();
    }
    Ok(report)
}

fn progress(r: &report::Row) {
    eprintln!(
        "bench: {} {} batch {} threads {}: {:.1} embeddings/s",
        r.path.name(),
        r.kind.name(),
        r.batch,
        r.threads.map_or("server".into(), |t| t.to_string()),
        r.embeddings_per_s
    );
}

fn specs(opts: &BenchOptions) -> Vec<Spec> {
    let queries = opts.batches.iter().map(|&batch| Spec {
        kind: Kind::Query,
        batch,
        min_items: opts.min_queries,
        reps: opts.reps,
    });
    let passages = opts.passage_batches.iter().map(|&batch| Spec {
        kind: Kind::Passage,
        batch,
        min_items: opts.min_passages,
        reps: opts.reps,
    });
    queries.chain(passages).collect()
}

/// The texts of one repetition: `ceil(max(batch, min_items) / batch)` batches of `batch` texts,
/// taken from the corpus in order and wrapping around.
fn plan(texts: &[String], batch: usize, min_items: usize) -> Vec<Vec<&str>> {
    let n_batches = batch.max(min_items).div_ceil(batch);
    let mut it = texts.iter().map(String::as_str).cycle();
    (0..n_batches)
        .map(|_| it.by_ref().take(batch).collect())
        .collect()
}

/// A `.gguf` path, the bundled `all-minilm`, or a name the store resolves.
fn load_model(opts: &BenchOptions, name: &str) -> Result<Model, BenchError> {
    let err = |e: &dyn fmt::Display| BenchError::Model(format!("{name}: {e}"));
    let path = std::path::Path::new(name);
    let file = if name.ends_with(".gguf") || path.is_file() {
        GgufFile::open(path).map_err(|e| err(&e))?
    } else if let (Some(bytes), true) = (
        opts.bundled,
        name == crate::store::bundled::NAME || name == "all-minilm:latest",
    ) {
        GgufFile::from_bytes(ModelBytes::Static(bytes)).map_err(|e| err(&e))?
    } else {
        let store = crate::store::Store::from_env(opts.bundled);
        let entry = store.resolve(name).map_err(|e| err(&e))?;
        entry.open().map_err(|e| err(&e))?
    };
    // QUIVER_BACKEND=cpu|gpu|auto, chosen as the server (the HTTP rows) chooses.
    let backend = crate::backend::gpu::select_backend_for_command();
    Model::load(file, backend).map_err(|e| err(&e))
}

/// The server the HTTP measurements talk to: one given by `--url`, or one started in process.
struct Target {
    addr: SocketAddr,
    model: String,
    /// Compute threads of the server, when we know them (in process: the global rayon pool).
    threads: Option<usize>,
    server: Option<InProcess>,
}

/// A server this process started, and the scratch store it serves from.
struct InProcess {
    server: crate::server::RunningServer,
    scratch: Option<std::path::PathBuf>,
}

impl Target {
    fn stop(self) {
        if let Some(p) = self.server {
            p.server.shutdown();
            if let Some(dir) = p.scratch {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// The name the model has in the scratch store when `--model` is a `.gguf` path.
const SCRATCH_NAME: &str = "quiver-bench";

/// `--url`: that server. Otherwise `quiver::server::start` on `addr` (port 0: any free port)
/// with keep_alive forever and the rest of `ServerConfig::from_env`. A `.gguf` path is copied into a scratch store under the temp dir
/// (the server serves names, not paths) and removed again by [`Target::stop`].
fn http_target(opts: &BenchOptions, addr: Option<SocketAddr>) -> Result<Target, BenchError> {
    if let Some(url) = &opts.url {
        let (addr, _) = http::parse_addr(url).map_err(|e| BenchError::Setup(e.to_string()))?;
        let model = opts.http_model.clone().unwrap_or_else(|| {
            if opts.model.ends_with(".gguf") {
                crate::store::bundled::NAME.to_string()
            } else {
                opts.model.clone()
            }
        });
        return Ok(Target {
            addr,
            model,
            threads: None,
            server: None,
        });
    }
    let setup = |e: &dyn fmt::Display| BenchError::Setup(e.to_string());
    let (store, model, scratch) = if opts.model.to_ascii_lowercase().ends_with(".gguf") {
        let dir = std::env::temp_dir().join(format!("quiver-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| setup(&e))?;
        let store = crate::store::Store::new(vec![dir.clone()], opts.bundled);
        store
            .create(SCRATCH_NAME, std::path::Path::new(&opts.model))
            .map_err(|e| BenchError::Model(format!("{}: {e}", opts.model)))?;
        (store, SCRATCH_NAME.to_string(), Some(dir))
    } else {
        let name = opts
            .http_model
            .clone()
            .unwrap_or_else(|| opts.model.clone());
        (crate::store::Store::from_env(opts.bundled), name, None)
    };
    // The server's own settings from the environment (QUIVER_BATCH_TOKENS, …), on our address.
    let config = crate::server::ServerConfig {
        addr: addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        keep_alive_default: None,
        ..crate::server::ServerConfig::from_env().map_err(|e| setup(&e))?
    };
    let server = crate::server::start(config, Arc::new(store)).map_err(|e| setup(&e))?;
    Ok(Target {
        addr: server.addr,
        model,
        threads: Some(rayon::current_num_threads()),
        server: Some(InProcess { server, scratch }),
    })
}

/// `--serve ADDR`: only the server, in process, until SIGINT or SIGTERM, so a script can
/// measure it from outside (`--url`) and read its peak RSS from /proc.
fn serve_only(opts: &BenchOptions, addr: SocketAddr) -> Result<(), BenchError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| BenchError::Setup(format!("signals: {e}")))?;
    let target = http_target(opts, Some(addr))?;
    eprintln!(
        "quiver bench: serving {} ({}) on http://{} until SIGTERM",
        target.model, opts.model, target.addr
    );
    signals.forever().next();
    target.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_whole_batches_and_wraps() {
        let texts: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let p = plan(&texts, 2, 5);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|b| b.len() == 2));
        assert_eq!(p[2], vec!["4", "0"]);
        assert_eq!(plan(&texts, 8, 1).len(), 1);
        assert_eq!(plan(&texts, 8, 1)[0].len(), 8);
    }
}
