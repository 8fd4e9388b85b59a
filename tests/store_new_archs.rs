//! A store written by `quiver create` holding every new architecture under an Ollama name,
//! served by `quiver serve`: `/api/embed` gives llama.cpp's vectors (the reference JSON),
//! `/api/show` names the architecture, `/api/ps` lists each model once it has run.
//!
//! The tiny models are in fixtures/; the real-weight ones (multilingual-e5-small, the Gemma
//! relabel) are fetched by scripts/fetch_e5.sh and scripts/fetch_gemma.sh into target/models/
//! and skipped, with a line saying so, where absent.

mod common;

use common::{cosine, f32s, read_json, u32s};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_quiver");

/// (Ollama name, file, key in the reference JSON, cosine to hold).
fn models() -> Vec<(&'static str, PathBuf, &'static str, f64)> {
    let fetched = |name: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/models")
            .join(name)
    };
    let all = vec![
        (
            "nomic-embed-text:tiny",
            common::fixture("tiny-nomic-bert.gguf"),
            "tiny-nomic-bert",
            0.999,
        ),
        (
            "nomic-embed-text-v2-moe:tiny",
            common::fixture("tiny-nomic-bert-moe.gguf"),
            "tiny-nomic-bert-moe",
            0.999,
        ),
        (
            "bge-m3:tiny",
            common::fixture("tiny-xlmr-bert.gguf"),
            "tiny-xlmr-bert",
            0.999,
        ),
        (
            "jina/jina-embeddings-v2-base-en:tiny",
            common::fixture("tiny-jina-bert-v2.gguf"),
            "tiny-jina-bert-v2",
            0.999,
        ),
        (
            "embeddinggemma:tiny",
            fetched("tiny-gemma-embedding.gguf"),
            "tiny-gemma-embedding",
            0.999,
        ),
        (
            "multilingual-e5-small",
            fetched("multilingual-e5-small-q4_0.gguf"),
            "multilingual-e5-small-q4_0",
            0.999,
        ),
        (
            "team/gemma-relabel:270m",
            fetched("gemma-embedding-from-gemma3-270m-q4_k_m.gguf"),
            "gemma-embedding-from-gemma3-270m-q4_k_m",
            0.995,
        ),
    ];
    all.into_iter()
        .filter(|(name, path, ..)| {
            let there = path.exists();
            if !there {
                eprintln!(
                    "skipped {name}: {} is absent (fetch scripts in scripts/)",
                    path.display()
                );
            }
            there
        })
        .collect()
}

struct Server {
    child: Child,
    port: u16,
    store: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn quiver(store: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("QUIVER_MODELS", store)
        .env("OLLAMA_MODELS", store.join("ollama-none"))
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .env("QUIVER_BACKEND", "cpu")
        .output()
        .expect("run quiver")
}

fn serve(store: PathBuf) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(BIN)
        .arg("serve")
        .env("QUIVER_MODELS", &store)
        .env("OLLAMA_MODELS", store.join("ollama-none"))
        .env("OLLAMA_HOST", format!("127.0.0.1:{port}"))
        .env("OLLAMA_MAX_LOADED_MODELS", "16")
        .env("QUIVER_BACKEND", "cpu")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start quiver serve");
    let server = Server { child, port, store };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "quiver serve did not listen within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// One request on its own connection; the body de-chunked where the server streams it.
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        let l = line.to_ascii_lowercase();
        chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
    }
    let mut bytes = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            bytes.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut bytes).unwrap();
    }
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{path}: not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, v)
}

#[test]
fn a_store_of_every_new_architecture_serves_llama_cpps_vectors() {
    let reference = read_json("new-archs-llamacpp.json");
    let models = models();
    let store = std::env::temp_dir().join(format!("quiver-new-archs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    std::fs::create_dir_all(&store).unwrap();
    for (name, path, ..) in &models {
        let o = quiver(&store, &["create", name, "-f", path.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "quiver create {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let server = serve(store);
    for (name, _, key, bound) in &models {
        let m = &reference["models"][key];
        // A short input, an accented one and the longest of the set, in one request.
        let results = m["results"].as_array().unwrap();
        let longest = results
            .iter()
            .max_by_key(|r| r["n_tokens"].as_u64().unwrap())
            .unwrap();
        let picked = [&results[0], &results[6], longest];
        let inputs: Vec<&str> = picked
            .iter()
            .map(|r| r["input"].as_str().unwrap())
            .collect();
        let (status, reply) = request(
            server.port,
            "POST",
            "/api/embed",
            Some(&json!({"model": name, "input": inputs})),
        );
        assert_eq!(status, 200, "{name}: {reply}");
        let tokens: u64 = picked.iter().map(|r| u32s(&r["ids"]).len() as u64).sum();
        assert_eq!(reply["prompt_eval_count"], tokens, "{name}: token count");
        let got = reply["embeddings"].as_array().unwrap();
        assert_eq!(got.len(), picked.len());
        for (r, v) in picked.iter().zip(got) {
            let c = cosine(&f32s(v), &f32s(&r["embedding_raw"]));
            assert!(c >= *bound, "{name} {:?}: cosine {c} < {bound}", r["input"]);
        }

        let (status, show) = request(
            server.port,
            "POST",
            "/api/show",
            Some(&json!({"model": name})),
        );
        assert_eq!(status, 200, "{name}: {show}");
        let arch = m["architecture"].as_str().unwrap();
        assert_eq!(
            show["model_info"]["general.architecture"], arch,
            "{name}: {show}"
        );
        assert_eq!(show["details"]["family"], arch, "{name}");
        assert!(
            show["capabilities"]
                .as_array()
                .unwrap()
                .contains(&json!("embedding")),
            "{name}: {show}"
        );
    }
    let (status, ps) = request(server.port, "GET", "/api/ps", None);
    assert_eq!(status, 200);
    let loaded: Vec<&str> = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for (name, ..) in &models {
        let full = if name.contains(':') {
            name.to_string()
        } else {
            format!("{name}:latest")
        };
        assert!(
            loaded.contains(&full.as_str()),
            "/api/ps lacks {full}: {loaded:?}"
        );
    }
}
