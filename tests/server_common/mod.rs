//! Shared by the `server_*` integration tests: a model store in a temp dir holding the F16
//! fixture as `all-minilm` and the Q8_0 fixture as `minilm-q8`, a server on a free loopback
//! port, and a tiny raw-HTTP client over `TcpStream`.
#![allow(dead_code)]

use quiver::server::{start, RunningServer, ServerConfig};
use quiver::store::Store;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub const F16: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-f16.gguf");
pub const Q8: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-q8_0.gguf");
pub const OLLAMA_GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/ollama-all-minilm.json"
);

/// One store per test process, written once (Ollama's layout, via `Store::create`).
pub fn store_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("quiver-server-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let store = Store::new(vec![root.clone()], None);
        store
            .create("all-minilm", F16.as_ref())
            .expect("create all-minilm");
        store
            .create("minilm-q8", Q8.as_ref())
            .expect("create minilm-q8");
        root
    })
    .clone()
}

pub fn store() -> Arc<Store> {
    Arc::new(Store::new(vec![store_root()], None))
}

pub fn config() -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    }
}

pub fn server() -> RunningServer {
    server_with(config())
}

pub fn server_with(c: ServerConfig) -> RunningServer {
    start(c, store()).expect("server starts")
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error string in {:?}", self.json()))
            .to_string()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s
}

/// Reads one response: Content-Length, or chunked transfer encoding (large embedding answers
/// are streamed).
pub fn read_reply(r: &mut impl BufRead, head_only: bool) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split(' ')
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    let body = if head_only {
        Vec::new()
    } else if chunked {
        read_chunked(r)
    } else {
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        body
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// A chunked body, strictly: panics on anything but hex sizes and CRLFs, or a missing last
/// chunk (a stream cut short).
pub fn read_chunked(r: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim_end(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).unwrap();
        assert_eq!(&chunk[size..], b"\r\n");
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// One request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = connect(addr);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in extra_headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    s.write_all(&msg).unwrap();
    read_reply(&mut BufReader::new(s), method == "HEAD")
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"")
}

pub fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

pub fn vector(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a vector")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (norm(a) * norm(b))
}

pub fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(OLLAMA_GOLDEN).unwrap()).unwrap()
}

/// `/api/embed` of one text on `model`, as a vector.
pub fn embed_one(addr: SocketAddr, model: &str, text: &str) -> Vec<f32> {
    let r = post(
        addr,
        "/api/embed",
        &serde_json::json!({"model": model, "input": text}),
    );
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    vector(&r.json()["embeddings"][0])
}

/// `quiver serve` (the real binary) as a process on a free loopback port, with the fixture
/// store and `envs`, once it listens. Its stderr is piped for the caller; its stdout goes
/// nowhere, so a server left behind cannot hold a test's output open.
pub fn spawn_serve(envs: &[(&str, &str)]) -> (std::process::Child, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .arg("serve")
        .env("QUIVER_HOST", format!("127.0.0.1:{port}"))
        .env("QUIVER_MODELS", store_root())
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = std::time::Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "quiver serve did not come up"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "quiver serve exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}
