//! Concurrency, hostile or vanishing clients, and graceful shutdown.

mod server_common;

use serde_json::json;
use server_common::*;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `f` on a thread and fails if it takes longer than `limit` (a wedged server).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("did not finish in time")
}

#[test]
fn concurrent_requests_on_two_models() {
    let s = server();
    let addr = s.addr;
    // Reference vectors, one request at a time.
    let texts = [
        "why is the sky blue?",
        "a cat",
        "rust is a language",
        "hello world",
    ];
    let reference: Vec<(Vec<f32>, Vec<f32>)> = texts
        .iter()
        .map(|t| {
            (
                embed_one(addr, "all-minilm", t),
                embed_one(addr, "minilm-q8", t),
            )
        })
        .collect();
    let mut handles = Vec::new();
    for i in 0..8 {
        let model = if i % 2 == 0 {
            "all-minilm"
        } else {
            "minilm-q8"
        };
        handles.push(std::thread::spawn(move || {
            let mut out = Vec::new();
            for round in 0..4 {
                let t = texts[(i + round) % texts.len()];
                out.push(((i + round) % texts.len(), embed_one(addr, model, t)));
            }
            (i % 2, out)
        }));
    }
    for h in handles {
        let (which, out) = h.join().unwrap();
        for (t, v) in out {
            let want = if which == 0 {
                &reference[t].0
            } else {
                &reference[t].1
            };
            assert!(cosine(&v, want) > 0.9999, "text {t} on model {which}");
        }
    }
    // F16 and Q8_0 really are different models.
    assert!(cosine(&reference[0].0, &reference[0].1) < 0.999999);
}

#[test]
fn batches_from_concurrent_requests_keep_each_requests_order() {
    let s = server();
    let addr = s.addr;
    let texts: Vec<String> = (0..24)
        .map(|i| format!("sentence number {i} about the sky"))
        .collect();
    let reference: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| embed_one(addr, "all-minilm", t))
        .collect();
    let mut handles = Vec::new();
    for k in 0..6 {
        let mine: Vec<String> = texts.iter().skip(k).step_by(6).cloned().collect();
        handles.push(std::thread::spawn(move || {
            let r = post(
                addr,
                "/api/embed",
                &json!({"model": "all-minilm", "input": mine}),
            );
            assert_eq!(r.status, 200);
            (
                k,
                r.json()["embeddings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(vector)
                    .collect::<Vec<_>>(),
            )
        }));
    }
    for h in handles {
        let (k, vs) = h.join().unwrap();
        assert_eq!(vs.len(), 4);
        for (j, v) in vs.iter().enumerate() {
            assert!(
                cosine(v, &reference[k + 6 * j]) > 0.9999,
                "request {k} item {j}"
            );
        }
    }
}

#[test]
fn clients_that_vanish_do_not_hurt_the_server() {
    let s = server();
    let addr = s.addr;
    // Headers, half a body, gone.
    let mut c = connect(addr);
    c.write_all(b"POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\":")
        .unwrap();
    drop(c);
    // Half the headers, gone.
    let mut c = connect(addr);
    c.write_all(b"POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    drop(c);
    // A whole request, gone before the answer (the model is still computing).
    for _ in 0..3 {
        let mut c = connect(addr);
        let body = json!({"model": "all-minilm", "input": vec!["a long enough text to take a moment"; 64]}).to_string();
        c.write_all(
            format!(
                "POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        drop(c);
    }
    // Garbage.
    let mut c = connect(addr);
    c.write_all(b"\x16\x03\x01 hello\r\n\r\n").unwrap();
    let r = read_reply(&mut BufReader::new(c), false);
    assert_eq!(r.status, 400);
    // Still serving, and every worker comes back: shutdown does not hang.
    assert_eq!(embed_one(addr, "all-minilm", "why").len(), 384);
    within(Duration::from_secs(60), move || s.shutdown());
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
}

#[test]
fn keep_alive_connections_and_pipelining() {
    let s = server();
    let mut c = connect(s.addr);
    let body = json!({"model": "all-minilm", "input": "why"}).to_string();
    let one = format!(
        "POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Two requests in one write, then a third after the answers.
    c.write_all(format!("{one}{one}").as_bytes()).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let a = read_reply(&mut r, false);
    let b = read_reply(&mut r, false);
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.header("connection"), Some("keep-alive"));
    assert_eq!(a.json()["embeddings"], b.json()["embeddings"]);
    c.write_all(b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut r, false).status, 200);
    // HTTP/1.0 without keep-alive closes.
    let mut c = connect(s.addr);
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let r = read_reply(&mut BufReader::new(c), false);
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn shutdown_finishes_the_request_in_flight() {
    let s = server();
    let addr = s.addr;
    embed_one(addr, "all-minilm", "warm up");
    // Big enough (≈ 37k tokens, most of a second in a release build) to be in flight when
    // the shutdown comes 100 ms after it was sent.
    let texts: Vec<String> = (0..600).map(|i| format!("{i} ").repeat(30)).collect();
    let (started_tx, started_rx) = mpsc::channel();
    let client = std::thread::spawn(move || {
        let mut c = connect(addr);
        let body = json!({"model": "all-minilm", "input": texts}).to_string();
        c.write_all(
            format!(
                "POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        started_tx.send(()).unwrap();
        read_reply(&mut BufReader::new(c), false)
    });
    started_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    within(Duration::from_secs(120), move || s.shutdown());
    let r = client.join().unwrap();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["embeddings"].as_array().unwrap().len(), 600);
    assert_eq!(r.header("connection"), Some("close"));
    eprintln!("shutdown waited {:?}", t0.elapsed());
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn a_long_request_does_not_starve_a_short_one() {
    // A small batch budget so that the long request needs many forward passes.
    let s = server_with(quiver::server::ServerConfig {
        batch_tokens: 64,
        ..config()
    });
    let addr = s.addr;
    embed_one(addr, "all-minilm", "warm up");
    // ~18 tokens each, 1000 of them: about 280 forward passes of 64 tokens, still running
    // when the short request comes 100 ms later.
    let long: Vec<String> = (0..1000).map(|i| format!("{i} ").repeat(16)).collect();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let big = std::thread::spawn(move || {
        let r = post(
            addr,
            "/api/embed",
            &json!({"model": "all-minilm", "input": long}),
        );
        tx.send(("long", r.status)).unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    let small = std::thread::spawn(move || {
        let r = post(
            addr,
            "/api/embed",
            &json!({"model": "all-minilm", "input": "short"}),
        );
        tx2.send(("short", r.status)).unwrap();
    });
    let first = rx.recv().unwrap();
    let second = rx.recv().unwrap();
    big.join().unwrap();
    small.join().unwrap();
    assert_eq!(
        first,
        ("short", 200),
        "the short request waited for the long one"
    );
    assert_eq!(second, ("long", 200));
}

/// `serve()` itself: this test re-runs its own binary as a child that calls `serve`, sends it
/// SIGTERM while a request is in flight, and expects the request answered and exit status 0.
#[cfg(unix)]
#[test]
fn serve_exits_zero_on_sigterm_after_finishing_requests() {
    if let Ok(port) = std::env::var("QUIVER_TEST_SERVE_CHILD") {
        let c = quiver::server::ServerConfig {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            ..config()
        };
        quiver::server::serve(c, store()).expect("serve");
        std::process::exit(0);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "serve_exits_zero_on_sigterm_after_finishing_requests",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("QUIVER_TEST_SERVE_CHILD", port.to_string())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "child server did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    embed_one(addr, "all-minilm", "warm up");
    // Big enough (≈ 37k tokens, most of a second in a release build) to be in flight when
    // the shutdown comes 100 ms after it was sent.
    let texts: Vec<String> = (0..600).map(|i| format!("{i} ").repeat(30)).collect();
    let client = std::thread::spawn(move || {
        post(
            addr,
            "/api/embed",
            &json!({"model": "all-minilm", "input": texts}),
        )
    });
    std::thread::sleep(Duration::from_millis(100));
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let r = client.join().unwrap();
    assert_eq!(r.status, 200);
    let status = within(Duration::from_secs(60), move || child.wait().unwrap());
    assert!(status.success(), "{status:?}");
}

/// The real binary: `quiver serve` exits 0 on SIGTERM.
#[cfg(unix)]
#[test]
fn quiver_serve_binary_exits_zero_on_sigterm() {
    let (mut child, addr) = spawn_serve(&[]);
    assert_eq!(get(addr, "/").status, 200);
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = within(Duration::from_secs(60), move || child.wait().unwrap());
    assert!(status.success(), "{status:?}");
}
