//! `quiver serve`: Ollama's embedding API over HTTP/1.1.
//!
//! One thread accepts; each connection gets its own worker thread (at most
//! `ServerConfig::workers` at once; past that a new connection gets 503), which reads requests
//! with hard limits (see [`http`]), routes them (see [`routes`]) and writes answers. Model
//! work happens in the engine's per-model batching threads, so a slow model never holds up a
//! request for another one. On shutdown the listener closes, in-flight requests finish and
//! are answered, idle keep-alive connections are closed, and models are unloaded.

pub mod cors;
pub mod error;
pub mod http;
pub mod routes;

use crate::backend::gpu::select_backend;
use crate::engine::{Engine, EngineConfig, KeepAlive};
use crate::store::Store;
use http::HttpError;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const DEFAULT_PORT: u16 = 11434;
pub const DEFAULT_MAX_BODY: u64 = 32 * 1024 * 1024;

/// How long a keep-alive connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one read may stall once a request has started arriving.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle connection looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Largest request body accepted (`QUIVER_MAX_BODY`); larger ones get 413 unread.
    pub max_body_bytes: u64,
    /// Most connections served at once (`QUIVER_WORKERS`).
    pub workers: usize,
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
            workers: 256,
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
    /// `OLLAMA_MAX_LOADED_MODELS`, `QUIVER_MAX_BODY`, `QUIVER_WORKERS`, `QUIVER_BATCH_TOKENS`.
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
        if let Some(t) = env_var("QUIVER_BATCH_TOKENS") {
            c.batch_tokens = t
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("QUIVER_BATCH_TOKENS: {t:?} is not a count"))?;
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

struct Shared {
    ctx: routes::Ctx,
    max_body: u64,
    workers: usize,
    log: bool,
    shutdown: AtomicBool,
    /// Live connection threads.
    conns: Mutex<usize>,
    conns_done: Condvar,
}

/// A server running in background threads (for tests, and under [`serve`]).
pub struct RunningServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish and be answered, closes idle
    /// connections, unloads the models. Returns when all of that is done.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(2)).is_ok() {
            let _ = accept.join();
        }
        let mut n = lock(&self.shared.conns);
        while *n > 0 {
            n = self
                .shared
                .conns_done
                .wait(n)
                .unwrap_or_else(|p| p.into_inner());
        }
        drop(n);
        self.shared.ctx.engine.shutdown();
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
        eprintln!("{backend_line}");
    }
    let factory: crate::engine::BackendFactory = Arc::new(|| select_backend().0);
    let engine = Engine::new(store, factory, engine_cfg);
    let shared = Arc::new(Shared {
        ctx: routes::Ctx {
            engine,
            origins: cors::Origins::new(&config.origins),
        },
        max_body: config.max_body_bytes,
        workers: config.workers.max(1),
        log,
        shutdown: AtomicBool::new(false),
        conns: Mutex::new(0),
        conns_done: Condvar::new(),
    });
    let s = shared.clone();
    let accept = std::thread::Builder::new()
        .name("quiver-accept".into())
        .spawn(move || accept_loop(listener, s))
        .map_err(ServerError::Io)?;
    Ok(RunningServer {
        addr,
        shared,
        accept: Some(accept),
    })
}

/// Runs the server until SIGINT or SIGTERM, then shuts down gracefully and returns Ok.
/// A second signal during the drain exits at once.
pub fn serve(config: ServerConfig, store: Arc<Store>) -> Result<(), ServerError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Handlers first, so that a signal right after the bind is not the default (kill).
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(ServerError::Signals)?;
    let server = start_inner(config, store, true)?;
    eprintln!(
        "quiver {}: listening on {}",
        env!("CARGO_PKG_VERSION"),
        server.addr
    );
    let sig = signals.forever().next();
    eprintln!(
        "quiver: signal {}, finishing in-flight requests",
        sig.unwrap_or(0)
    );
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("quiver: second signal, exiting now");
            std::process::exit(130);
        }
    });
    server.shutdown();
    eprintln!("quiver: stopped");
    Ok(())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // Out of file descriptors and the like: back off instead of spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let mut n = lock(&shared.conns);
        if *n >= shared.workers {
            drop(n);
            refuse(stream);
            continue;
        }
        *n += 1;
        drop(n);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("quiver-conn".into())
            .spawn(move || {
                let _ = catch_unwind(AssertUnwindSafe(|| connection(stream, &s)));
                let mut n = lock(&s.conns);
                *n -= 1;
                s.conns_done.notify_all();
            });
        if spawned.is_err() {
            let mut n = lock(&shared.conns);
            *n -= 1;
            shared.conns_done.notify_all();
        }
    }
}

/// Every worker is busy: say so and hang up.
fn refuse(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let resp = error::ApiError::new(
        503,
        "server busy, please try again.  maximum pending requests exceeded",
    )
    .ollama();
    let _ = http::write_response(&mut stream, &resp, false, false);
    let _ = stream.shutdown(Shutdown::Both);
}

/// Waits for the first byte of the next request. False when the peer closed, the connection
/// idled too long, or the server is shutting down.
fn await_request(reader: &mut BufReader<TcpStream>, shared: &Shared) -> bool {
    if !reader.buffer().is_empty() {
        return true;
    }
    let since = Instant::now();
    if reader.get_ref().set_read_timeout(Some(POLL)).is_err() {
        return false;
    }
    loop {
        match reader.fill_buf() {
            Ok(buf) => return !buf.is_empty(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if shared.shutdown.load(Ordering::SeqCst) || since.elapsed() > IDLE_TIMEOUT {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

fn connection(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut writer = stream;
    let _ = writer.set_write_timeout(Some(READ_TIMEOUT));
    loop {
        if !await_request(&mut reader, shared) {
            return;
        }
        if reader
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .is_err()
        {
            return;
        }
        let started = Instant::now();
        let req = match http::read_request(&mut reader, &mut writer, shared.max_body) {
            Ok(r) => r,
            Err(HttpError::Io(_)) => return, // the client went away mid-request
            Err(HttpError::TooLarge(path)) => {
                let msg = format!(
                    "request body too large (the limit is {} bytes)",
                    shared.max_body
                );
                let resp = error::ApiError::new(413, msg).render(&path);
                let _ = http::write_response(&mut writer, &resp, false, false);
                linger_close(&writer, &mut reader);
                return;
            }
            Err(HttpError::Bad(status, msg)) => {
                let resp = error::ApiError::new(status, msg).ollama();
                let _ = http::write_response(&mut writer, &resp, false, false);
                linger_close(&writer, &mut reader);
                return;
            }
        };
        let resp = catch_unwind(AssertUnwindSafe(|| routes::handle(&shared.ctx, &req)))
            .unwrap_or_else(|_| {
                error::ApiError::new(500, "internal server error").render(&req.path)
            });
        let keep = req.keep_alive() && !shared.shutdown.load(Ordering::SeqCst);
        if shared.log {
            eprintln!(
                "[quiver] {} | {:>10.3?} | {:>15} | {:<7} {:?}",
                resp.status,
                started.elapsed(),
                writer
                    .peer_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default(),
                req.method,
                req.path
            );
        }
        if http::write_response(&mut writer, &resp, req.method == "HEAD", keep).is_err() || !keep {
            return;
        }
    }
}

/// Closes after an early answer (413, 400) without resetting the connection under the
/// client's feet: stop writing, then read and discard what it still sends, for a short while.
fn linger_close(writer: &TcpStream, reader: &mut BufReader<TcpStream>) {
    let _ = writer.shutdown(Shutdown::Write);
    let _ = reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(250)));
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sink = [0u8; 16 * 1024];
    let mut drained = 0usize;
    while Instant::now() < deadline && drained < (64 << 20) {
        match reader.get_mut().read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}
