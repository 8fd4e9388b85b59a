//! The real `quiver` binary: embed, show, create/list/rm on a temporary store, hostile names,
//! list/ps with no server.

mod common;

use quiver::gguf::Value;
use quiver::tensor::DType;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_quiver");
const Q8: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-q8_0.gguf");
const F16: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-f16.gguf");
const OLLAMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/ollama-all-minilm.json"
);

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "quiver-cli-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs quiver with a store of its own: `QUIVER_MODELS=store`, no Ollama dir, no server.
fn quiver(store: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    quiver_env(store, args, stdin, &[])
}

/// [`quiver`] with extra environment variables (QUIVER_BACKEND is unset unless given here).
fn quiver_env(store: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("QUIVER_MODELS", store)
        .env("OLLAMA_MODELS", store.join("ollama-none"))
        // A port nothing listens on, so list/ps find no server.
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .env_remove("QUIVER_BACKEND")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run quiver");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ollama_vector() -> Vec<f64> {
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(OLLAMA).unwrap()).unwrap();
    let e = &j["embed_single"];
    assert_eq!(e["input"], "why is the sky blue?");
    e["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn embeddings(o: &Output) -> Vec<Vec<f64>> {
    assert!(o.status.success(), "quiver embed failed: {}", stderr(o));
    let j: serde_json::Value = serde_json::from_str(&stdout(o)).expect("embed prints JSON");
    j["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn embed_with_the_bundled_model_matches_ollama() {
    let dir = TempDir::new("bundled");
    let o = quiver(
        &dir.0,
        &["embed", "-m", "all-minilm", "why is the sky blue?"],
        None,
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let v = embeddings(&o);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].len(), 384);
    let norm: f64 = v[0].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    let cos = cosine(&v[0], &ollama_vector());
    assert!(cos >= 0.9999, "cosine to Ollama's vector {cos}");
    assert_eq!(j["model"], "all-minilm");
    assert_eq!(
        j["prompt_eval_count"], 8,
        "[CLS] why is the sky blue ? [SEP]"
    );
}

/// `quiver embed` takes its backend from QUIVER_BACKEND as `quiver serve` does, and says which
/// one it runs on: an explicit `gpu` without a GPU runs on the CPU with a line saying why,
/// never silently. (`quiver bench` loads its models through the same function.)
#[test]
fn embed_honours_quiver_backend() {
    let dir = TempDir::new("backend");
    let args = ["embed", "-m", "all-minilm", "why is the sky blue?"];
    let run = |env: &[(&str, &str)]| quiver_env(&dir.0, &args, None, env);
    let default = run(&[]);
    assert_eq!(stderr(&default), "", "nothing asked, nothing said");
    let cpu = run(&[("QUIVER_BACKEND", "cpu")]);
    assert!(
        stderr(&cpu).contains("backend: cpu (QUIVER_BACKEND=cpu)"),
        "{}",
        stderr(&cpu)
    );
    assert_eq!(embeddings(&cpu), embeddings(&default));
    // No Vulkan driver at all: the loader finds no ICD (both the old and new variable).
    let no_driver = [
        ("QUIVER_BACKEND", "gpu"),
        ("VK_ICD_FILENAMES", "/nonexistent.json"),
        ("VK_DRIVER_FILES", "/nonexistent.json"),
    ];
    let none = run(&no_driver);
    assert!(
        stderr(&none).contains("backend: cpu ("),
        "{}",
        stderr(&none)
    );
    assert_eq!(embeddings(&none), embeddings(&default));
    let bogus = run(&[("QUIVER_BACKEND", "tpu")]);
    assert!(
        stderr(&bogus).contains("is not cpu, gpu or auto"),
        "{}",
        stderr(&bogus)
    );
    // With whatever driver this machine has (lavapipe in CI): a GPU, and vectors close to the
    // CPU's, or the CPU and the reason.
    let gpu = run(&[("QUIVER_BACKEND", "gpu")]);
    if stderr(&gpu).contains("backend: gpu on ") {
        let c = cosine(&embeddings(&gpu)[0], &embeddings(&default)[0]);
        assert!(c >= 0.9999, "GPU against CPU: cosine {c}");
    } else {
        assert!(stderr(&gpu).contains("backend: cpu ("), "{}", stderr(&gpu));
        assert_eq!(embeddings(&gpu), embeddings(&default));
    }
}

/// `quiver bench` loads its library-path model through the same choice, and says so.
#[test]
fn bench_honours_quiver_backend() {
    let dir = TempDir::new("bench-backend");
    let args = [
        "bench",
        "--model",
        F16,
        "--threads",
        "1",
        "--batch",
        "1",
        "--passage-batch",
        "1",
        "--reps",
        "1",
        "--min-queries",
        "1",
        "--min-passages",
        "1",
    ];
    let no_driver = [
        ("QUIVER_BACKEND", "gpu"),
        ("VK_ICD_FILENAMES", "/nonexistent.json"),
        ("VK_DRIVER_FILES", "/nonexistent.json"),
    ];
    for (env, want) in [
        (
            &[("QUIVER_BACKEND", "cpu")][..],
            "backend: cpu (QUIVER_BACKEND=cpu)",
        ),
        (&no_driver[..], "backend: cpu ("),
    ] {
        let o = quiver_env(&dir.0, &args, None, env);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{env:?}: {}", stderr(&o));
    }
}

#[test]
fn embed_reads_stdin_lines_and_accepts_a_gguf_path() {
    let dir = TempDir::new("stdin");
    let o = quiver(
        &dir.0,
        &["embed", "-m", Q8],
        Some("why is the sky blue?\n\nhello world\n"),
    );
    let v = embeddings(&o);
    assert_eq!(v.len(), 2, "the empty line is skipped");
    let cos = cosine(&v[0], &ollama_vector());
    assert!(cos >= 0.999, "Q8_0 cosine to Ollama's F16 vector {cos}");
    assert!(
        cosine(&v[0], &v[1]) < 0.9,
        "different texts, different vectors"
    );
}

#[test]
fn show_describes_the_model() {
    let dir = TempDir::new("show");
    for model in ["all-minilm", F16] {
        let o = quiver(&dir.0, &["show", model], None);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        for want in [
            "architecture        bert",
            "22.57M",
            "context length      512",
            "embedding length    384",
            "F16",
            "mean",
        ] {
            assert!(out.contains(want), "show {model} lacks {want:?}:\n{out}");
        }
        assert!(out.contains("tokenizer.ggml.tokens"), "{out}");
        assert!(
            out.contains("[String; 30522]"),
            "the vocabulary is summarised:\n{out}"
        );
        assert!(out.len() < 10_000, "no 30k-entry dump");
    }
}

/// The rows of `quiver show`'s Model section, key → value.
fn model_rows(out: &str) -> HashMap<String, String> {
    out.lines()
        .skip_while(|l| l.trim() != "Model")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.trim().split_once("    "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn assert_row(rows: &HashMap<String, String>, key: &str, want: &str) {
    assert_eq!(
        rows.get(key).map(String::as_str),
        Some(want),
        "{key}: {rows:?}"
    );
}

#[test]
fn show_names_pooling_tokenizer_and_lengths() {
    let dir = TempDir::new("show-facts");
    let o = quiver(&dir.0, &["show", F16], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = model_rows(&stdout(&o));
    for (k, v) in [
        ("architecture", "bert"),
        ("pooling", "mean"),
        ("tokenizer", "bert"),
        ("context length", "512"),
        ("embedding length", "384"),
    ] {
        assert_row(&rows, k, v);
    }
    // The file's own key, shown as it is (the converter writes one even for WordPiece).
    let file = quiver::gguf::GgufFile::open(Path::new(F16)).unwrap();
    let pre = file
        .header
        .get_str("tokenizer.ggml.pre")
        .map(str::to_string);
    assert_eq!(rows.get("pre-tokenizer"), pre.as_ref(), "{rows:?}");
    // A llama without `pooling_type`: the architecture's default, the last token.
    let path = dir.0.join("tiny-llama.gguf");
    let pre = [("tokenizer.ggml.pre", Value::String("smollm".into()))];
    std::fs::write(&path, common::tiny_llama_gguf(DType::Q8_0, &pre)).unwrap();
    let o = quiver(&dir.0, &["show", path.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = model_rows(&stdout(&o));
    for (k, v) in [
        ("architecture", "llama"),
        ("pooling", "last"),
        ("tokenizer", "bert"),
        ("pre-tokenizer", "smollm"),
        ("context length", "1024"),
        ("embedding length", "256"),
        ("quantization", "unknown"),
    ] {
        assert_row(&rows, k, v);
    }
}

#[test]
fn create_list_show_and_rm_on_a_temporary_store() {
    let dir = TempDir::new("create");
    let o = quiver(&dir.0, &["create", "mini:q8", "-f", Q8], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir
        .0
        .join("manifests/registry.ollama.ai/library/mini/q8")
        .is_file());

    let o = quiver(&dir.0, &["show", "mini:q8"], None);
    assert!(stdout(&o).contains("Q8_0"), "{}", stdout(&o));
    let v = embeddings(&quiver(
        &dir.0,
        &["embed", "-m", "mini:q8", "why is the sky blue?"],
        None,
    ));
    assert!(cosine(&v[0], &ollama_vector()) >= 0.999);

    let o = quiver(&dir.0, &["rm", "mini:q8"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("deleted 'mini:q8'"));
    let o = quiver(&dir.0, &["show", "mini:q8"], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = quiver(&dir.0, &["rm", "mini:q8"], None);
    assert!(!o.status.success());
}

#[test]
fn create_refuses_a_non_gguf_file() {
    let dir = TempDir::new("junk");
    let junk = dir.0.join("junk.gguf");
    std::fs::write(&junk, b"not a model").unwrap();
    let o = quiver(
        &dir.0.join("store"),
        &["create", "junk", "-f", junk.to_str().unwrap()],
        None,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a GGUF file"), "{}", stderr(&o));
}

#[test]
fn hostile_names_fail_clearly() {
    let dir = TempDir::new("hostile");
    // `/etc/passwd` exists: it is still judged as a name, never read as a file.
    for name in [
        "../../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "%2e%2e",
        "x\\y",
    ] {
        for args in [
            vec!["show", name],
            vec!["embed", "-m", name, "hi"],
            vec!["rm", name],
            vec!["create", name, "-f", Q8],
        ] {
            let o = quiver(&dir.0, &args, None);
            assert_eq!(o.status.code(), Some(1), "{args:?}");
            let err = stderr(&o);
            assert!(
                err.starts_with("Error: invalid model name"),
                "{args:?}: {err}"
            );
            assert!(stdout(&o).is_empty());
        }
    }
    let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert!(left.is_empty(), "nothing written for hostile names");
}

#[test]
fn list_and_ps_without_a_server_say_so() {
    let dir = TempDir::new("noserver");
    for cmd in ["list", "ps"] {
        let o = quiver(&dir.0, &[cmd], None);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("could not connect"), "{}", stderr(&o));
    }
}

#[test]
fn list_and_ps_print_ollamas_tables_from_a_server() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 2048];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "request ended early");
                req.extend_from_slice(&buf[..n]);
            }
            let req = String::from_utf8_lossy(&req).into_owned();
            let body = if req.starts_with("GET /api/tags ") {
                r#"{"models":[{"name":"all-minilm:latest","model":"all-minilm:latest","modified_at":"2020-01-01T00:00:00Z","size":46223616,"digest":"1b226e2802dbabcdef"}]}"#
            } else {
                r#"{"models":[{"name":"all-minilm:latest","model":"all-minilm:latest","size":46223616,"size_vram":0,"digest":"1b226e2802dbabcdef","expires_at":"2999-01-01T00:00:00Z"}]}"#
            };
            // Chunked, as Go's server sends larger bodies.
            let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
            write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}").unwrap();
        }
    });
    let dir = TempDir::new("server");
    let run = |cmd: &str| {
        Command::new(BIN)
            .arg(cmd)
            .env("QUIVER_MODELS", &dir.0)
            .env("OLLAMA_HOST", format!("127.0.0.1:{port}"))
            .output()
            .unwrap()
    };
    let o = run("list");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("NAME "), "{out}");
    assert!(out.contains("ID") && out.contains("SIZE") && out.contains("MODIFIED"));
    assert!(
        out.contains("all-minilm:latest   1b226e2802db   46 MB   "),
        "{out}"
    );
    assert!(out.trim_end().ends_with("years ago"), "{out}");
    let o = run("ps");
    let out = stdout(&o);
    assert!(out.contains("PROCESSOR") && out.contains("UNTIL"), "{out}");
    assert!(
        out.contains("100% CPU") && out.trim_end().ends_with("Forever"),
        "{out}"
    );
    server.join().unwrap();
}

#[test]
fn version_help_and_usage_errors() {
    let dir = TempDir::new("misc");
    let o = quiver(&dir.0, &["--version"], None);
    assert!(stdout(&o).contains(env!("CARGO_PKG_VERSION")));
    let o = quiver(&dir.0, &["help"], None);
    assert!(o.status.success() && stdout(&o).contains("embed") && stdout(&o).contains("create"));
    let o = quiver(&dir.0, &["frobnicate"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown command"));
}

#[test]
fn models_pulled_by_ollama_are_found_and_create_writes_to_quiver_models() {
    use sha2::Digest;
    let dir = TempDir::new("ollamadir");
    // quiver() points OLLAMA_MODELS at <store>/ollama-none: lay a pulled model out there.
    let ollama = dir.0.join("ollama-none");
    let gguf = std::fs::read(Q8).unwrap();
    let hex: String = sha2::Sha256::digest(&gguf)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::create_dir_all(ollama.join("blobs")).unwrap();
    std::fs::write(ollama.join(format!("blobs/sha256-{hex}")), &gguf).unwrap();
    let mdir = ollama.join("manifests/registry.ollama.ai/someone/mini");
    std::fs::create_dir_all(&mdir).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{}","size":2}},"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{hex}","size":{}}}]}}"#,
        "0".repeat(64),
        gguf.len()
    );
    std::fs::write(mdir.join("v1"), manifest).unwrap();

    let o = quiver(&dir.0, &["show", "someone/mini:v1"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Q8_0"));

    let o = quiver(&dir.0, &["create", "mine", "-f", Q8], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir
        .0
        .join("manifests/registry.ollama.ai/library/mine/latest")
        .is_file());
    assert!(
        !ollama.join("manifests/registry.ollama.ai/library").exists(),
        "Ollama's dir untouched"
    );
}
