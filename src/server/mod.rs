//! `quiver serve`: Ollama's embedding API over HTTP/1.1.
//!
//! One thread owns the listener and every connection and waits on their readiness
//! ([`conn`]); an idle or slow client costs a buffer, not a thread, and deadlines bound how
//! long a head or a body may take. Complete requests go to a bounded pool of worker threads
//! ([`pool`]) that run the synchronous handlers ([`routes`]) and write the answers. Model work
//! happens in the engine's per-model batching threads, so a slow model never holds up a
//! request for another one. On shutdown the listener closes, idle and half-received
//! connections are closed at once, in-flight requests finish and are answered (bounded by
//! `QUIVER_SHUTDOWN_TIMEOUT`), and models are unloaded.

pub mod batches;
mod conn;
pub mod cors;
pub mod error;
pub mod http;
pub mod malloc;
pub mod metrics;
mod pool;
pub mod routes;

use crate::backend::gpu::select_backend;
use crate::engine::{Engine, EngineConfig, KeepAlive};
use crate::store::Store;
use polling::Poller;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 11434;
pub const DEFAULT_MAX_BODY: u64 = 32 * 1024 * 1024;
/// Complete requests waiting for a worker; past that a request gets 503.
const QUEUE: usize = 1024;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Largest request body accepted (`QUIVER_MAX_BODY`); larger ones get 413 unread.
    pub max_body_bytes: u64,
    /// Bytes of unfinished requests held over all connections (`QUIVER_MAX_BUFFERED`); the
    /// connection that goes past it gets 503. `None`: the larger of 256 MiB and two bodies.
    pub max_buffered_bytes: Option<u64>,
    /// Requests handled at once: worker threads (`QUIVER_WORKERS`).
    pub workers: usize,
    /// Open connections at most (`QUIVER_MAX_CONNECTIONS`); past that a new one gets 503.
    pub max_connections: usize,
    /// Inputs per embedding request at most (`QUIVER_MAX_INPUTS`); more is a 400.
    pub max_inputs: usize,
    /// How long SIGTERM waits for requests in flight (`QUIVER_SHUTDOWN_TIMEOUT`).
    pub shutdown_timeout: Duration,
    /// Extra CORS origins (`OLLAMA_ORIGINS`); loopback origins are always allowed.
    pub origins: Vec<String>,
    /// keep_alive when a request gives none; `None` = forever (`OLLAMA_KEEP_ALIVE`).
    pub keep_alive_default: Option<Duration>,
    /// `OLLAMA_MAX_LOADED_MODELS`.
    pub max_loaded_models: usize,
    /// Most tokens per forward pass when batching concurrent requests (`QUIVER_BATCH_TOKENS`).
    pub batch_tokens: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            max_body_bytes: DEFAULT_MAX_BODY,
            max_buffered_bytes: None,
            workers: 64,
            max_connections: 16384,
            max_inputs: 1_000_000,
            shutdown_timeout: Duration::from_secs(30),
            origins: Vec::new(),
            keep_alive_default: Some(Duration::from_secs(300)),
            max_loaded_models: 3,
            batch_tokens: crate::model::OP_BY_OP_TOKENS,
        }
    }
}

/// An environment variable as Ollama reads it: trimmed, surrounding quotes removed; empty = unset.
fn env_var(key: &str) -> Option<String> {
    let v = std::env::var(key).ok()?;
    let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
    (!v.is_empty()).then_some(v)
}

impl ServerConfig {
    /// `QUIVER_HOST` (else `OLLAMA_HOST`), `OLLAMA_ORIGINS`, `OLLAMA_KEEP_ALIVE`,
    /// `OLLAMA_MAX_LOADED_MODELS`, `QUIVER_MAX_BODY`, `QUIVER_MAX_BUFFERED`, `QUIVER_WORKERS`,
    /// `QUIVER_BATCH_TOKENS`, `QUIVER_MAX_CONNECTIONS`, `QUIVER_MAX_INPUTS`, `QUIVER_SHUTDOWN_TIMEOUT`.
    pub fn from_env() -> Result<ServerConfig, String> {
        let mut c = ServerConfig::default();
        if let Some(h) = env_var("QUIVER_HOST").or_else(|| env_var("OLLAMA_HOST")) {
            c.addr = parse_host(&h)?;
        }
        if let Some(o) = env_var("OLLAMA_ORIGINS") {
            c.origins = o
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(k) = env_var("OLLAMA_KEEP_ALIVE") {
            c.keep_alive_default =
                match KeepAlive::parse_str(&k).map_err(|e| format!("OLLAMA_KEEP_ALIVE: {e}"))? {
                    KeepAlive::For(d) => Some(d),
                    KeepAlive::Forever => None,
                };
        }
        if let Some(n) = env_var("OLLAMA_MAX_LOADED_MODELS") {
            let n: usize = n
                .parse()
                .map_err(|_| format!("OLLAMA_MAX_LOADED_MODELS: {n:?} is not a count"))?;
            // Ollama reads 0 as "choose for me".
            c.max_loaded_models = if n == 0 { 3 } else { n };
        }
        if let Some(b) = env_var("QUIVER_MAX_BODY") {
            c.max_body_bytes =
                parse_size(&b).ok_or_else(|| format!("QUIVER_MAX_BODY: {b:?} is not a size"))?;
        }
        if let Some(b) = env_var("QUIVER_MAX_BUFFERED") {
            c.max_buffered_bytes = Some(
                parse_size(&b)
                    .ok_or_else(|| format!("QUIVER_MAX_BUFFERED: {b:?} is not a size"))?,
            );
        }
        if let Some(t) = env_var("QUIVER_BATCH_TOKENS") {
            c.batch_tokens = t
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("QUIVER_BATCH_TOKENS: {t:?} is not a count"))?;
        }
        for (key, field) in [
            ("QUIVER_MAX_CONNECTIONS", &mut c.max_connections),
            ("QUIVER_MAX_INPUTS", &mut c.max_inputs),
        ] {
            if let Some(v) = env_var(key) {
                *field = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{key}: {v:?} is not a count"))?;
            }
        }
        if let Some(t) = env_var("QUIVER_SHUTDOWN_TIMEOUT") {
            c.shutdown_timeout = match KeepAlive::parse_str(&t)
                .map_err(|e| format!("QUIVER_SHUTDOWN_TIMEOUT: {e}"))?
            {
                KeepAlive::For(d) => d,
                KeepAlive::Forever => Duration::from_secs(u32::MAX as u64),
            };
        }
        if let Some(w) = env_var("QUIVER_WORKERS") {
            c.workers = w
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("QUIVER_WORKERS: {w:?} is not a count"))?;
        }
        Ok(c)
    }
}

/// A byte count: `1048576`, `512K`, `32M`, `32MiB`, `1G` (binary multiples).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = s[..digits].parse().ok()?;
    let mult = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `OLLAMA_HOST` in Ollama's forms: `0.0.0.0`, `:8080`, `host:port`, `http://host:port`,
/// `https://host` (port 443), `[::1]:11434`. A bad port falls back to the default, as in Ollama.
pub fn parse_host(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let (scheme, rest) = match s.split_once("://") {
        Some((sc, r)) => (Some(sc.to_ascii_lowercase()), r),
        None => (None, s),
    };
    let default_port = match scheme.as_deref() {
        Some("http") => 80,
        Some("https") => 443,
        _ => DEFAULT_PORT,
    };
    let hostport = rest.split('/').next().unwrap_or("");
    // Split off a port: the last ':' outside brackets.
    let (host, port) = match hostport.rfind(':') {
        Some(i) if !hostport[i..].contains(']') => {
            let host = &hostport[..i];
            if host.contains(':') && !host.starts_with('[') {
                // A bare IPv6 address without brackets: no port.
                (hostport, None)
            } else {
                (host, Some(&hostport[i + 1..]))
            }
        }
        _ => (hostport, None),
    };
    let port = port
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(default_port);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("OLLAMA_HOST: cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("OLLAMA_HOST: {host:?} has no address"))
}

#[derive(Debug)]
pub enum ServerError {
    Bind(SocketAddr, io::Error),
    Signals(io::Error),
    Io(io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            ServerError::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            ServerError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// Writes a line to stderr and ignores failure: `eprintln!` panics when stderr is closed,
/// which would take down the worker that logs a request, or the shutdown.
pub(crate) fn log_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|()| e.write_all(b"\n"));
}

pub(crate) struct Shared {
    pub(crate) ctx: routes::Ctx,
    pub(crate) max_body: u64,
    pub(crate) max_buffered: usize,
    pub(crate) max_connections: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) log: bool,
    /// `OLLAMA_DEBUG=1`: more fields in each request's log line.
    pub(crate) debug: bool,
    pub(crate) shutdown: AtomicBool,
    pub(crate) metrics: Arc<metrics::Metrics>,
}

/// A server running in background threads (for tests, and under [`serve`]).
pub struct RunningServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    poller: Arc<Poller>,
    event_loop: Option<JoinHandle<bool>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl RunningServer {
    /// Stops accepting, closes idle and half-received connections, lets in-flight requests
    /// finish and be answered (for at most the shutdown timeout), unloads the models.
    /// Returns when all of that is done.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(event_loop) = self.event_loop.take() else {
            return;
        };
        self.shared.shutdown.store(true, Ordering::SeqCst);
        let _ = self.poller.notify();
        let drained = event_loop.join().unwrap_or(false);
        if drained {
            // Every job was answered and the queue is closed: the workers are leaving.
            for h in std::mem::take(&mut *lock(&self.workers)) {
                let _ = h.join();
            }
            self.shared.ctx.engine.shutdown();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the server in background threads and returns once it listens.
pub fn start(config: ServerConfig, store: Arc<Store>) -> Result<RunningServer, ServerError> {
    start_inner(config, store, false)
}

fn start_inner(
    config: ServerConfig,
    store: Arc<Store>,
    log: bool,
) -> Result<RunningServer, ServerError> {
    let listener = TcpListener::bind(config.addr).map_err(|e| ServerError::Bind(config.addr, e))?;
    let addr = listener.local_addr().map_err(ServerError::Io)?;
    let engine_cfg = EngineConfig {
        keep_alive_default: config
            .keep_alive_default
            .map_or(KeepAlive::Forever, KeepAlive::For),
        max_loaded_models: config.max_loaded_models.max(1),
        token_budget: config.batch_tokens.max(1),
        ..EngineConfig::default()
    };
    // The backend is chosen per model load (QUIVER_BACKEND=cpu|gpu|auto); say once at start-up
    // which one serves, and why.
    let (_, backend_line) = select_backend();
    if log {
        log_line(format_args!("{backend_line}"));
    }
    let factory: crate::engine::BackendFactory = Arc::new(|| select_backend().0);
    let engine = Engine::new(store, factory, engine_cfg);
    let metrics = Arc::new(metrics::Metrics::default());
    let shared = Arc::new(Shared {
        ctx: routes::Ctx {
            engine,
            origins: cors::Origins::new(&config.origins),
            metrics: metrics.clone(),
            max_inputs: config.max_inputs.max(1),
        },
        max_body: config.max_body_bytes,
        max_buffered: config
            .max_buffered_bytes
            .unwrap_or((256 << 20).max(config.max_body_bytes.saturating_mul(2)))
            .min(usize::MAX as u64) as usize,
        max_connections: config.max_connections.max(1),
        shutdown_timeout: config.shutdown_timeout,
        log,
        debug: log && env_var("OLLAMA_DEBUG").is_some_and(|v| v != "0" && v != "false"),
        shutdown: AtomicBool::new(false),
        metrics,
    });
    let poller = Arc::new(Poller::new().map_err(ServerError::Io)?);
    let (back_tx, back_rx) = std::sync::mpsc::channel();
    let pool = pool::Pool::start(
        config.workers.max(1),
        QUEUE,
        shared.clone(),
        back_tx,
        poller.clone(),
    )
    .map_err(ServerError::Io)?;
    let workers = pool.handles();
    let ev = conn::EventLoop::new(listener, poller.clone(), pool, back_rx, shared.clone())
        .map_err(ServerError::Io)?;
    let event_loop = std::thread::Builder::new()
        .name("quiver-conns".into())
        .spawn(move || ev.run())
        .map_err(ServerError::Io)?;
    Ok(RunningServer {
        addr,
        shared,
        poller,
        event_loop: Some(event_loop),
        workers,
    })
}

/// Runs the server until SIGINT or SIGTERM, then shuts down gracefully and returns Ok.
/// A second signal during the drain exits at once.
pub fn serve(config: ServerConfig, store: Arc<Store>) -> Result<(), ServerError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Handlers first, so that a signal right after the bind is not the default (kill).
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(ServerError::Signals)?;
    raise_fd_limit();
    for p in store.clean_stale() {
        log_line(format_args!(
            "quiver: removed {} (left by an interrupted create or pull)",
            p.display()
        ));
    }
    let server = start_inner(config, store, true)?;
    log_line(format_args!(
        "quiver {}: listening on {}",
        env!("CARGO_PKG_VERSION"),
        server.addr
    ));
    let sig = signals.forever().next();
    log_line(format_args!(
        "quiver: signal {}, finishing in-flight requests",
        sig.unwrap_or(0)
    ));
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            log_line(format_args!("quiver: second signal, exiting now"));
            std::process::exit(130);
        }
    });
    server.shutdown();
    log_line(format_args!("quiver: stopped"));
    Ok(())
}

/// Connections cost a file descriptor each: lift the soft limit (often 1024) to the hard one,
/// so that thousands of idle clients do not lock new ones out.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
