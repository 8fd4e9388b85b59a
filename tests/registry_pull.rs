//! Pull and push against a real registry (Debian's `docker-registry`, started here on a
//! loopback port): the round trip gives identical vectors, a pull killed 20 times resumes to
//! the right bytes and never shows a partial model, corrupted bytes and a stalled registry give
//! clear errors and leave nothing behind.

mod common;
mod registry_common;
mod server_common;

use common::files;
use quiver::registry::{self, Options, Progress};
use quiver::store::Store;
use registry_common::{Mode, Proxy, Registry, TempDir};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const Q8: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-q8_0.gguf");

fn insecure() -> Options {
    Options {
        insecure: true,
        ..Options::default()
    }
}

fn sha256_file(p: &Path) -> String {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut h).unwrap();
    format!("{:x}", h.finalize())
}

/// A store in `root` holding the Q8_0 fixture as `name`.
fn store_with_model(root: &Path, name: &str) -> Store {
    let store = Store::new(vec![root.to_path_buf()], None);
    store.create(name, Q8.as_ref()).expect("create");
    store
}

/// Pushes the Q8_0 fixture as `<registry>/team/minilm` and returns its name.
fn pushed(reg: &Registry) -> String {
    let src = TempDir::new("push-src");
    let name = format!("{}/team/minilm", reg.host());
    let store = store_with_model(src.path(), &name);
    registry::push(&store, &name, &insecure(), &mut |_| {}).expect("push");
    name
}

/// POSTs `body` and reads a chunked NDJSON answer line by line.
fn post_stream(addr: SocketAddr, path: &str, body: &Value) -> (u16, Vec<Value>) {
    let mut s = server_common::connect(addr);
    let body = serde_json::to_vec(body).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut r = BufReader::new(s);
    let mut status_line = String::new();
    r.read_line(&mut status_line).unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut chunked = false;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim_end().is_empty() {
            break;
        }
        chunked |= h
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked");
    }
    let mut raw = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut raw).unwrap();
    }
    let lines = raw
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    (status, lines)
}

fn embed(addr: SocketAddr, model: &str) -> Vec<Vec<f32>> {
    let r = server_common::post(
        addr,
        "/api/embed",
        &json!({"model": model, "input": ["why is the sky blue?", "a registry round trip"]}),
    );
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    r.json()["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(server_common::vector)
        .collect()
}

fn start_server(root: &Path) -> quiver::server::RunningServer {
    quiver::server::start(
        server_common::config(),
        Arc::new(Store::new(vec![root.to_path_buf()], None)),
    )
    .expect("server starts")
}

#[test]
fn push_remove_pull_gives_identical_vectors() {
    let Some(reg) = Registry::start() else { return };
    let name = format!("{}/team/minilm", reg.host());
    let a = TempDir::new("a");
    let store_a = store_with_model(a.path(), &name);
    let before = {
        let server = start_server(a.path());
        embed(server.addr, &name)
    };

    let mut statuses = Vec::new();
    registry::push(&store_a, &name, &insecure(), &mut |p: Progress| {
        if statuses.last() != Some(&p.status) {
            statuses.push(p.status)
        }
    })
    .expect("push");
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("retrieving manifest")
    );
    assert_eq!(statuses.last().map(String::as_str), Some("success"));
    assert!(statuses.iter().any(|s| s.starts_with("pushing ")));
    store_a.remove(&name).expect("rm");
    assert!(store_a.list().unwrap().is_empty());

    // Pull into an empty store through the server's /api/pull, as ollama-python would.
    let b = TempDir::new("b");
    let server = start_server(b.path());
    let (status, lines) = post_stream(
        server.addr,
        "/api/pull",
        &json!({"model": name, "insecure": true}),
    );
    assert_eq!(status, 200);
    let mut seq: Vec<String> = Vec::new();
    for l in &lines {
        assert!(l.get("error").is_none(), "{l}");
        let s = l["status"].as_str().unwrap().to_string();
        if let Some(d) = l.get("digest") {
            assert!(d.as_str().unwrap().starts_with("sha256:"));
            assert!(l["total"].as_u64().unwrap() >= l["completed"].as_u64().unwrap_or(0));
        }
        if seq.last() != Some(&s) {
            seq.push(s);
        }
    }
    assert_eq!(seq.first().map(String::as_str), Some("pulling manifest"));
    let tail: Vec<&str> = seq.iter().rev().take(3).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        ["verifying sha256 digest", "writing manifest", "success"]
    );
    let layers: Vec<&String> = seq
        .iter()
        .filter(|s| s.starts_with("pulling ") && s.len() == 20)
        .collect();
    assert_eq!(layers.len(), 2, "model and config layers: {seq:?}");

    let after = embed(server.addr, &name);
    assert_eq!(before, after, "vectors differ after the round trip");
    let entry = Store::new(vec![b.path().to_path_buf()], None)
        .resolve(&name)
        .unwrap();
    assert_eq!(entry.digest, sha256_file(Q8.as_ref()));
    assert!(!files(b.path()).iter().any(|f| f.ends_with("-partial")));

    // A second pull finds every blob in place and fetches none.
    let (_, lines) = post_stream(
        server.addr,
        "/api/pull",
        &json!({"model": name, "insecure": true, "stream": false}),
    );
    assert_eq!(lines, [json!({"status": "success"})]);
}

#[test]
fn an_insecure_name_without_insecure_and_a_missing_model_are_errors() {
    let Some(reg) = Registry::start() else { return };
    let b = TempDir::new("missing");
    let server = start_server(b.path());
    let missing = format!("{}/team/nothing", reg.host());
    let (status, lines) = post_stream(
        server.addr,
        "/api/pull",
        &json!({"model": missing, "insecure": true}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        lines.last().unwrap()["error"],
        "pull model manifest: file does not exist"
    );
    let (status, lines) = post_stream(
        server.addr,
        "/api/pull",
        &json!({"model": format!("http://{missing}")}),
    );
    assert_eq!(status, 500);
    assert_eq!(lines, [json!({"error": "insecure protocol http"})]);
    assert!(
        files(b.path()).iter().all(|f| f.starts_with('.')),
        "{:?}",
        files(b.path())
    );
}

/// The store's models, each checked: every listed model's blob has the sha256 its manifest
/// names (a partial blob is never visible).
fn listed_and_sound(root: &Path) -> usize {
    let store = Store::new(vec![root.to_path_buf()], None);
    let list = store.list().unwrap();
    for e in &list {
        let quiver::store::ModelSource::File(p) = &e.source else {
            panic!("no bundled model here")
        };
        assert_eq!(
            sha256_file(p),
            e.digest,
            "{} is listed with wrong bytes",
            e.name
        );
    }
    list.len()
}

#[test]
fn a_pull_killed_twenty_times_resumes_to_the_right_bytes() {
    kill_and_resume("a single stream", u64::MAX);
}

/// The same with the blob fetched as four parallel ranges (the range record resumes each).
#[test]
fn a_parallel_ranged_pull_killed_twenty_times_resumes_to_the_right_bytes() {
    kill_and_resume("parallel ranges", 1 << 20);
}

fn kill_and_resume(what: &str, parallel_min: u64) {
    let Some(reg) = Registry::start() else { return };
    let name = pushed(&reg);
    // 25 MB at 24 MB/s: a whole pull takes ~1 s, so most kills land mid-blob.
    let proxy = Proxy::start(reg.port, Mode::Throttle(24 << 20));
    let via = name.replacen(&reg.host(), &proxy.host(), 1);
    let dest = TempDir::new("killed");
    let want = sha256_file(Q8.as_ref());
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut interrupted = 0;
    let started = Instant::now();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
            .args(["pull", "--insecure", &via])
            .env("QUIVER_MODELS", dest.path())
            .env("QUIVER_PULL_TIMEOUT", "10")
            .env("QUIVER_PULL_PARALLEL_MIN", parallel_min.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    for _ in 0..20 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let after = Duration::from_millis(30 + rng % 500);
        let mut child = run();
        std::thread::sleep(after);
        let finished = child.try_wait().unwrap().is_some();
        // SIGKILL: no handler runs, whatever was written stays as it is.
        let _ = child.kill();
        let _ = child.wait();
        let listed = listed_and_sound(dest.path());
        if finished {
            assert_eq!(listed, 1);
            // Start again from nothing, so the next kills land in a download.
            Store::new(vec![dest.path().to_path_buf()], None)
                .remove(&via)
                .unwrap();
        } else {
            interrupted += 1;
            assert!(listed <= 1);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the kill loop took too long"
        );
    }
    eprintln!("{what}: {interrupted} of 20 kills interrupted a pull");
    assert!(
        interrupted >= 10,
        "only {interrupted} of 20 kills interrupted a pull"
    );
    let status = run().wait().unwrap();
    assert!(status.success());
    assert_eq!(listed_and_sound(dest.path()), 1);
    let entry = Store::new(vec![dest.path().to_path_buf()], None)
        .resolve(&via)
        .unwrap();
    assert_eq!(entry.digest, want);
    // No partial download is left. (A kill inside the store's atomic manifest write can leave
    // its `.tmp-<pid>-<n>` file, which no listing reads: start-up hygiene removes those.)
    let left = files(dest.path());
    assert!(!left.iter().any(|f| f.contains("-partial")), "{left:?}");
}

#[test]
fn corrupted_bytes_are_an_error_and_leave_nothing_behind() {
    let Some(reg) = Registry::start() else { return };
    let name = pushed(&reg);
    // Past the manifest (a few hundred bytes), inside the 25 MB model blob.
    let proxy = Proxy::start(reg.port, Mode::Corrupt(3 << 20));
    let via = name.replacen(&reg.host(), &proxy.host(), 1);
    for parallel_min in [u64::MAX, 1 << 20] {
        corrupted_pull(&via, parallel_min);
    }
}

fn corrupted_pull(via: &str, parallel_min: u64) {
    let dest = TempDir::new("corrupt");
    let store = Store::new(vec![dest.path().to_path_buf()], None);
    let opts = Options {
        parallel_min: Some(parallel_min),
        ..insecure()
    };
    let err = registry::pull(&store, via, &opts, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("digest mismatch, file must be downloaded again"),
        "{msg}"
    );
    assert!(msg.contains(&sha256_file(Q8.as_ref())), "{msg}");
    assert!(store.list().unwrap().is_empty());
    let left: Vec<String> = files(dest.path())
        .into_iter()
        .filter(|f| !f.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_stalled_registry_times_out_with_a_message() {
    let Some(reg) = Registry::start() else { return };
    let name = pushed(&reg);
    let proxy = Proxy::start(reg.port, Mode::Stall(1 << 20));
    let via = name.replacen(&reg.host(), &proxy.host(), 1);
    for parallel_min in [u64::MAX, 1 << 20] {
        stalled_pull(&via, parallel_min);
    }
}

fn stalled_pull(via: &str, parallel_min: u64) {
    let dest = TempDir::new("stall");
    let store = Store::new(vec![dest.path().to_path_buf()], None);
    let opts = Options {
        stall_timeout: Duration::from_millis(800),
        parallel_min: Some(parallel_min),
        ..insecure()
    };
    let started = Instant::now();
    let err = registry::pull(&store, via, &opts, &mut |_| {}).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let msg = err.to_string();
    assert!(msg.contains("sent nothing for"), "{msg}");
    assert!(store.list().unwrap().is_empty());
    // What arrived stays as a partial file for the next pull to resume.
    assert!(files(dest.path()).iter().any(|f| f.ends_with("-partial")));
}

/// The bytes already in a partial file are kept and only the rest is asked for (HTTP Range):
/// seeded with a correct first half the pull succeeds; seeded with a first half that has one
/// byte flipped it fails the sha256 check, which it could not if it had fetched the blob anew.
#[test]
fn a_partial_file_is_resumed_not_fetched_again() {
    let Some(reg) = Registry::start() else { return };
    let name = pushed(&reg);
    let blob = std::fs::read(Q8).unwrap();
    let digest = format!("sha256:{}", sha256_file(Q8.as_ref()));
    for flip in [false, true] {
        let dest = TempDir::new("resume");
        let store = Store::new(vec![dest.path().to_path_buf()], None);
        let partial = quiver::store::partial_file(dest.path(), &digest).unwrap();
        std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
        let mut half = blob[..blob.len() / 2].to_vec();
        if flip {
            half[1000] ^= 1;
        }
        std::fs::write(&partial, &half).unwrap();
        let mut first_completed = None;
        let result = registry::pull(&store, &name, &insecure(), &mut |p| {
            if p.digest.as_deref() == Some(digest.as_str()) && first_completed.is_none() {
                first_completed = p.completed;
            }
        });
        assert_eq!(
            first_completed,
            Some(half.len() as u64),
            "progress starts at the partial size"
        );
        if flip {
            let msg = result.unwrap_err().to_string();
            assert!(msg.starts_with("digest mismatch"), "{msg}");
            assert!(!partial.exists(), "a mismatched partial file is deleted");
        } else {
            result.unwrap();
            assert_eq!(listed_and_sound(dest.path()), 1);
            assert!(!partial.exists());
        }
    }
}

/// Ctrl-C (SIGINT) stops `quiver pull` with a message and keeps what was downloaded; the same
/// command then finishes the pull.
#[test]
fn ctrl_c_leaves_a_resumable_pull() {
    let Some(reg) = Registry::start() else { return };
    let name = pushed(&reg);
    let proxy = Proxy::start(reg.port, Mode::Throttle(8 << 20));
    let via = name.replacen(&reg.host(), &proxy.host(), 1);
    let dest = TempDir::new("ctrl-c");
    let cmd = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"));
        c.args(["pull", "--insecure", &via])
            .env("QUIVER_MODELS", dest.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c
    };
    let child = cmd().spawn().unwrap();
    // Interrupt once bytes are arriving (however slowly the machine starts the process).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !files(dest.path()).iter().any(|f| {
        f.ends_with("-partial")
            && std::fs::metadata(dest.path().join(f)).is_ok_and(|m| m.len() > (1 << 20))
    }) {
        assert!(Instant::now() < deadline, "the pull never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("interrupted (run the command again to resume)"),
        "{stderr}"
    );
    assert_eq!(listed_and_sound(dest.path()), 0);
    let partial = files(dest.path())
        .into_iter()
        .find(|f| f.ends_with("-partial"))
        .expect("a partial file stays");
    assert!(std::fs::metadata(dest.path().join(&partial)).unwrap().len() > 0);
    let out = cmd().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listed_and_sound(dest.path()), 1);
}
