//! The connection layer under hostile and heavy use: request smuggling and bad framing,
//! a battery of malformed requests, idle and slowloris floods, deadlines, streamed answers
//! for many inputs (identical to small batches), the input cap, the cap on bodies held over
//! all connections, /metrics, SIGTERM with slow clients connected.

mod server_common;

use quiver::server::ServerConfig;
use serde_json::{json, Value};
use server_common::*;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Sends raw bytes on a fresh connection, returns the status of the answer and whether the
/// server closed the connection after it.
fn raw(addr: SocketAddr, bytes: &[u8]) -> (u16, bool) {
    let mut c = connect(addr);
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(bytes).unwrap();
    let mut r = BufReader::new(c);
    let reply = read_reply(&mut r, false);
    let mut rest = [0u8; 64];
    let closed = matches!(r.read(&mut rest), Ok(0) | Err(_));
    (reply.status, closed)
}

/// More file descriptors than the usual soft limit of 1024, for the floods.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

#[test]
fn smuggling_and_ambiguous_framing_get_4xx_and_close() {
    let s = server();
    let body = r#"{"model":"all-minilm","input":"x"}"#;
    let cases: Vec<(String, u16)> = vec![
        (format!("POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Length: +{}\r\n\r\n{body}", body.len()), 400),
        (format!("POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Length: {0}\r\nTransfer-Encoding: chunked\r\n\r\n{0:x}\r\n{body}\r\n0\r\n\r\n", body.len()), 400),
        (format!("POST /api/embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n0\r\n\r\n", body.len()), 400),
        (format!("POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Length: {0}\r\nContent-Length: {0}\r\n\r\n{body}", body.len()), 400),
        (format!("POST /api/embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+{:x}\r\n{body}\r\n0\r\n\r\n", body.len()), 400),
        (format!("POST /api/embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-{:x}\r\n{body}\r\n0\r\n\r\n", body.len()), 400),
        ("POST /api/embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n".into(), 501),
        ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x07b\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost : x\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\n Host: x\r\n\r\n".into(), 400),
        ("GET /\0 HTTP/1.1\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nContent-Length: 1 0\r\n\r\n".into(), 400),
        ("GET / HTTP/9.9\r\n\r\n".into(), 505),
    ];
    for (req, want) in &cases {
        let (status, closed) = raw(s.addr, req.as_bytes());
        assert_eq!(status, *want, "{req:?}");
        assert!(closed, "connection left open after {req:?}");
    }
    // The server still answers.
    assert_eq!(get(s.addr, "/").status, 200);
}

/// The shape of the 806-case battery from the issue: invalid JSON, wrong types, hostile
/// names, bad framing, on every route. Every answer is a 4xx, none a 5xx, and the server
/// answers normally afterwards.
#[test]
fn bad_input_battery_is_all_4xx() {
    let s = server();
    let bodies: Vec<String> = {
        let mut b: Vec<String> = [
            "",
            "{",
            "}",
            "[]",
            "null",
            "0",
            "\"x\"",
            "{\"model\":",
            "{not json}",
            "\u{0}",
            "{\"model\":\"all-minilm\",\"input\":[\"a\",]}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let values = [
            json!(null),
            json!(5),
            json!(-1),
            json!(1e308),
            json!(true),
            json!({}),
            json!([1, 2]),
            json!([["a"]]),
            json!([null]),
            json!({"a": "b"}),
        ];
        let names = [
            "../../etc/passwd",
            "/etc/passwd",
            "..",
            "a/../../b",
            "nope",
            "x:y:z",
            "%2e%2e/%2e%2e",
            "C:\\windows",
            "all-minilm\0",
            "",
            " ",
        ];
        for v in &values {
            b.push(json!({"model": v, "input": "x"}).to_string());
            b.push(json!({"model": "all-minilm", "input": v}).to_string());
            b.push(json!({"model": "all-minilm", "input": "x", "keep_alive": v}).to_string());
            b.push(
                json!({"model": "all-minilm", "input": "x", "options": {"num_ctx": v}}).to_string(),
            );
            b.push(json!({"model": "all-minilm", "input": "x", "truncate": v}).to_string());
        }
        for n in names {
            b.push(json!({"model": n, "input": "x"}).to_string());
            b.push(json!({"model": n, "prompt": "x"}).to_string());
        }
        b
    };
    let mut n = 0;
    for path in [
        "/api/embed",
        "/api/embeddings",
        "/v1/embeddings",
        "/api/show",
    ] {
        for body in &bodies {
            let r = request(s.addr, "POST", path, &[], body.as_bytes());
            n += 1;
            // Some bodies are valid for some routes (e.g. a legacy request with `input`).
            if r.status == 200 {
                continue;
            }
            assert!(
                (400..500).contains(&r.status),
                "{path} {body:?} -> {} {:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    for raw_req in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET / FTP/1.0\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"POST /api/embed HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /api/embed HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ] {
        let (status, _) = raw(s.addr, raw_req);
        n += 1;
        assert!(
            (400..600).contains(&status) && status != 500,
            "{raw_req:?} -> {status}"
        );
    }
    assert!(n > 300, "{n} cases");
    assert_eq!(embed_one(s.addr, "all-minilm", "still fine").len(), 384);
}

#[test]
fn idle_and_slowloris_floods_do_not_lock_out_new_clients() {
    let limit = raise_fd_limit();
    // Both ends live in this process: two descriptors per connection.
    let per_kind = ((limit.saturating_sub(200)) / 4).min(1000) as usize;
    assert!(per_kind >= 300, "fd limit {limit} too low for the test");
    let s = server();
    let addr = s.addr;
    embed_one(addr, "all-minilm", "warm up");
    let idle: Vec<TcpStream> = (0..per_kind).map(|_| connect(addr)).collect();
    let mut slow: Vec<TcpStream> = (0..per_kind)
        .map(|_| {
            let mut c = connect(addr);
            c.write_all(b"POST /api/embed HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect();
    // A slow body too: headers done, then nothing.
    let mut slow_body = connect(addr);
    slow_body
        .write_all(b"POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
        .unwrap();
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        assert_eq!(
            embed_one(addr, "all-minilm", &format!("new client {i}")).len(),
            384
        );
        worst = worst.max(t.elapsed());
        // Keep the slowloris clients trickling.
        for c in slow.iter_mut().take(50) {
            let _ = c.write_all(b"a");
        }
    }
    eprintln!(
        "{per_kind} idle + {per_kind} slowloris: worst new-client latency {worst:?} (dev build)"
    );
    assert!(worst < Duration::from_secs(5), "{worst:?}");
    // Past the head deadline (10 s from the first byte), a slowloris client gets 408 and is
    // closed, trickling or not; so is the slow body (below the minimum rate after its grace).
    let wait = Duration::from_secs(12).saturating_sub(started.elapsed());
    std::thread::sleep(wait);
    for c in slow.iter_mut().take(60) {
        let _ = c.write_all(b"a");
    }
    std::thread::sleep(Duration::from_millis(500));
    for c in slow.iter().take(5).chain(std::iter::once(&slow_body)) {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = read_reply(&mut BufReader::new(c.try_clone().unwrap()), false);
        assert_eq!(r.status, 408);
    }
    drop(idle);
    assert_eq!(embed_one(addr, "all-minilm", "after").len(), 384);
}

#[test]
fn bodies_in_progress_are_capped_over_all_connections() {
    let s = server_with(ServerConfig {
        max_buffered_bytes: Some(256 << 10),
        ..config()
    });
    let addr = s.addr;
    // One input of 200,000 bytes: a valid request.
    let body = json!({"model": "all-minilm", "input": "word ".repeat(40_000)}).to_string();
    let head = format!(
        "POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let most = body.len() * 9 / 10;
    let mut first = connect(addr);
    first.write_all(head.as_bytes()).unwrap();
    first.write_all(&body.as_bytes()[..most]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Half of a second body takes the sum past 256 KiB: that connection gets 503.
    let mut second = connect(addr);
    second.write_all(head.as_bytes()).unwrap();
    second
        .write_all(&body.as_bytes()[..body.len() / 2])
        .unwrap();
    let r = read_reply(&mut BufReader::new(second.try_clone().unwrap()), false);
    assert_eq!(r.status, 503);
    assert!(
        String::from_utf8_lossy(&r.body).contains("too many request bodies"),
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    // The first one finishes and is answered; its bytes no longer count once it is.
    first.write_all(&body.as_bytes()[most..]).unwrap();
    let r = read_reply(&mut BufReader::new(first.try_clone().unwrap()), false);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    for _ in 0..3 {
        let mut c = connect(addr);
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(body.as_bytes()).unwrap();
        let r = read_reply(&mut BufReader::new(c), false);
        assert_eq!(r.status, 200);
    }
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("input number {i}: {}", "word ".repeat(i % 7)))
        .collect()
}

#[test]
fn many_inputs_stream_and_equal_small_batches() {
    let s = server();
    let inputs = texts(700);
    let big = post(
        s.addr,
        "/api/embed",
        &json!({"model": "all-minilm", "input": inputs}),
    );
    assert_eq!(big.status, 200);
    assert_eq!(big.header("transfer-encoding"), Some("chunked"));
    let big = big.json();
    let got = big["embeddings"].as_array().unwrap();
    assert_eq!(got.len(), inputs.len());
    let mut tokens = 0;
    for (i, batch) in inputs.chunks(8).enumerate() {
        let small = post(
            s.addr,
            "/api/embed",
            &json!({"model": "all-minilm", "input": batch}),
        );
        assert_eq!(small.status, 200);
        assert!(
            small.header("content-length").is_some(),
            "small answers keep a length"
        );
        let small = small.json();
        tokens += small["prompt_eval_count"].as_u64().unwrap();
        for (j, v) in small["embeddings"].as_array().unwrap().iter().enumerate() {
            assert_eq!(&got[i * 8 + j], v, "input {}", i * 8 + j);
        }
    }
    assert_eq!(big["prompt_eval_count"].as_u64(), Some(tokens));
    assert_eq!(big["model"], "all-minilm");
    assert!(big["total_duration"].as_u64().unwrap() > 0);

    // The OpenAI route, with dimensions, equals /api/embed with dimensions.
    let oa = post(
        s.addr,
        "/v1/embeddings",
        &json!({"model": "all-minilm", "input": inputs, "dimensions": 64}),
    );
    assert_eq!(oa.status, 200);
    let oa = oa.json();
    let data = oa["data"].as_array().unwrap();
    assert_eq!(data.len(), inputs.len());
    assert_eq!(oa["usage"]["prompt_tokens"].as_u64(), Some(tokens));
    let dims = post(
        s.addr,
        "/api/embed",
        &json!({"model": "all-minilm", "input": &inputs[300..310], "dimensions": 64}),
    )
    .json();
    for j in 0..10 {
        assert_eq!(data[300 + j]["index"], 300 + j);
        assert_eq!(data[300 + j]["embedding"], dims["embeddings"][j]);
    }
}

#[test]
fn inputs_over_the_cap_are_400() {
    let s = server_with(quiver::server::ServerConfig {
        max_inputs: 10,
        ..config()
    });
    for path in ["/api/embed", "/v1/embeddings"] {
        let r = post(
            s.addr,
            path,
            &json!({"model": "all-minilm", "input": texts(11)}),
        );
        assert_eq!(r.status, 400, "{path}");
        let body: Value = r.json();
        assert!(body.to_string().contains("too many inputs"), "{body}");
        let r = post(
            s.addr,
            path,
            &json!({"model": "all-minilm", "input": texts(10)}),
        );
        assert_eq!(r.status, 200, "{path}");
    }
}

/// The value of a sample line `name{labels} value` (or `name value`).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// /metrics once it counts, for each `(code, n)`, `n` requests answered with `code` on
/// /api/embed: a worker counts its request after the answer is out, so a client can read the
/// answer first.
fn metrics_after(addr: SocketAddr, counts: &[(u16, f64)]) -> (String, Reply) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = get(addr, "/metrics");
        let text = String::from_utf8(m.body.clone()).unwrap();
        let counted = counts.iter().all(|(code, n)| {
            let series = format!("quiver_requests_total{{route=\"/api/embed\",code=\"{code}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .is_some_and(|v| v.parse::<f64>().unwrap() == *n)
        });
        if counted || Instant::now() > deadline {
            return (text, m);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_are_prometheus_text_and_move() {
    let s = server();
    embed_one(s.addr, "all-minilm", "one");
    let (before, _) = metrics_after(s.addr, &[(200, 1.0)]);
    let ok = r#"quiver_requests_total{route="/api/embed",code="200"}"#;
    assert_eq!(sample(&before, ok), 1.0);
    let r = post(
        s.addr,
        "/api/embed",
        &json!({"model": "all-minilm", "input": ["a", "b c"]}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        post(s.addr, "/api/embed", &json!({"input": "x"})).status,
        400
    );
    let (after, m) = metrics_after(s.addr, &[(200, 2.0), (400, 1.0)]);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert_eq!(sample(&after, ok), 2.0);
    assert_eq!(
        sample(
            &after,
            r#"quiver_requests_total{route="/api/embed",code="400"}"#
        ),
        1.0
    );
    assert!(sample(&after, "quiver_tokens_total") > sample(&before, "quiver_tokens_total"));
    assert_eq!(sample(&after, "quiver_loaded_models"), 1.0);
    assert!(sample(&after, "quiver_resident_memory_bytes") > 1e6);
    assert_eq!(sample(&after, "quiver_request_inputs_count"), 2.0);
    // promtool, where installed (CI installs Debian's prometheus package).
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Err(_) => eprintln!("skipping promtool check: promtool is not installed"),
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(after.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The server re-executes itself once with glibc's per-thread malloc caches off (they made
/// the RSS creep for as long as it ran), and says so; a count the user chose is kept. Then its
/// stderr is closed: requests (each logs a line) are still answered, SIGTERM still exits 0.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn serve_runs_without_glibc_thread_caches_unless_told_otherwise() {
    use std::io::BufRead;
    for (given, expect) in [
        (None, "glibc.malloc.tcache_count=0"),
        (
            Some("glibc.malloc.tcache_count=3"),
            "glibc.malloc.tcache_count=3",
        ),
        (
            Some("glibc.malloc.arena_max=2"),
            "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0",
        ),
    ] {
        let envs: Vec<(&str, &str)> = given.map(|g| ("GLIBC_TUNABLES", g)).into_iter().collect();
        let (mut child, addr) = spawn_serve(&envs);
        let mut said = Vec::new();
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            let done = line.contains("listening on");
            said.push(line);
            if done {
                break;
            }
        }
        for i in 0..3 {
            assert_eq!(embed_one(addr, "all-minilm", &format!("{i}")).len(), 384);
        }
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert!(child.wait().unwrap().success());
        assert!(
            said.contains(&format!("malloc: GLIBC_TUNABLES={expect}")),
            "{given:?}: {said:?}"
        );
    }
}

/// `quiver serve` with many slow and idle clients connected and a request in flight: SIGTERM
/// answers the request, drops the others at once, and exits 0 well within the deadline.
#[cfg(unix)]
#[test]
fn sigterm_with_slow_clients_answers_in_flight_and_exits_zero() {
    raise_fd_limit();
    let (child, addr) = spawn_serve(&[("QUIVER_SHUTDOWN_TIMEOUT", "30s"), ("OLLAMA_DEBUG", "1")]);
    embed_one(addr, "all-minilm", "warm up");
    let slow: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut c = connect(addr);
            if i % 2 == 0 {
                c.write_all(b"POST /api/embed HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
            }
            c
        })
        .collect();
    let inputs = texts(400);
    let client = std::thread::spawn(move || {
        post(
            addr,
            "/api/embed",
            &json!({"model": "all-minilm", "input": inputs}),
        )
    });
    std::thread::sleep(Duration::from_millis(150));
    let t_term = Instant::now();
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let r = client.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["embeddings"].as_array().unwrap().len(), 400);
    let out = child.wait_with_output().unwrap();
    let took = t_term.elapsed();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{log}", out.status);
    assert!(took < Duration::from_secs(30), "{took:?}");
    // One structured line per request, with the model's numbers and (OLLAMA_DEBUG) more.
    let line = log
        .lines()
        .find(|l| l.contains("inputs=400"))
        .unwrap_or_else(|| panic!("no request line in\n{log}"));
    for field in [
        "msg=request",
        "method=POST",
        "path=\"/api/embed\"",
        "status=200",
        "model=\"all-minilm\"",
        "queue_ms=",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
    // The slow clients were closed, not left hanging.
    for c in slow.iter().take(10) {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!((&*c).read(&mut buf), Ok(0) | Err(_)));
    }
}

/// A loaded model's file truncated in place (another process, a full disk): the next request
/// gets a clear error instead of the server dying of SIGBUS, and the server keeps serving.
#[test]
fn a_model_file_truncated_under_the_server_is_refused_not_a_signal() {
    use quiver::store::Store;
    use std::sync::Arc;
    let root = std::env::temp_dir().join(format!("quiver-truncate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let store = Store::new(vec![root.clone()], None);
    store.create("victim", F16.as_ref()).unwrap();
    let s =
        quiver::server::start(config(), Arc::new(Store::new(vec![root.clone()], None))).unwrap();
    assert_eq!(embed_one(s.addr, "victim", "before").len(), 384);
    let blob = std::fs::read_dir(root.join("blobs"))
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let f = std::fs::OpenOptions::new().write(true).open(&blob).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
    let r = post(
        s.addr,
        "/api/embed",
        &json!({"model": "victim", "input": "after"}),
    );
    assert_eq!(r.status, 500);
    assert!(r.error().contains("changed size"), "{}", r.error());
    // Loaded again from the half file: refused as a broken model, still no signal.
    let r = post(
        s.addr,
        "/api/embed",
        &json!({"model": "victim", "input": "after"}),
    );
    assert!((400..600).contains(&r.status), "{}", r.status);
    assert!(!r.error().is_empty());
    assert_eq!(get(s.addr, "/").status, 200);
    drop(s);
    let _ = std::fs::remove_dir_all(&root);
}
