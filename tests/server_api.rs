//! Every endpoint of API.md over real HTTP, and every error row of its table.

mod server_common;

use serde_json::json;
use server_common::*;
use std::time::{Duration, Instant};

#[test]
fn root_and_version_answer_get_and_head() {
    let s = server();
    let r = get(s.addr, "/");
    assert_eq!((r.status, &r.body[..]), (200, &b"Ollama is running"[..]));
    let r = request(s.addr, "HEAD", "/", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("17"));
    let v = get(s.addr, "/api/version").json();
    let version = v["version"].as_str().unwrap();
    assert_eq!(version.split('.').count(), 3, "{version}");
    assert_eq!(request(s.addr, "HEAD", "/api/version", &[], b"").status, 200);
}

#[test]
fn unknown_paths_404_and_wrong_methods_405() {
    let s = server();
    let r = get(s.addr, "/api/nothing");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    let r = get(s.addr, "/api/embed");
    assert_eq!(r.status, 405);
    assert!(r.json()["error"].is_string());
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(post(s.addr, "/api/ps", &json!({})).status, 405);
    // Under /v1 errors are OpenAI-shaped.
    let r = get(s.addr, "/v1/nothing");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
}

#[test]
fn embed_matches_ollama_golden_vector() {
    let s = server();
    let g = golden();
    let want = vector(&g["embed_single"]["embedding"]);
    let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": "why is the sky blue?"}));
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["model"], "all-minilm");
    assert_eq!(v["prompt_eval_count"], 8);
    assert!(v["total_duration"].as_u64().unwrap() > 0);
    assert!(v["load_duration"].as_u64().unwrap() <= v["total_duration"].as_u64().unwrap());
    let got = vector(&v["embeddings"][0]);
    assert_eq!(got.len(), 384);
    assert!((norm(&got) - 1.0).abs() < 1e-4);
    let cos = cosine(&got, &want);
    assert!(cos >= 0.999, "cosine {cos}");
    // Already loaded: the second request loads nothing.
    let v = post(s.addr, "/api/embed", &json!({"model": "all-minilm:latest", "input": ["why is the sky blue?"]})).json();
    assert_eq!(v["model"], "all-minilm:latest", "model is echoed as given");
    assert!(v["load_duration"].as_u64().unwrap() < 1_000_000, "{}", v["load_duration"]);
}

#[test]
fn batch_keeps_order_and_equals_single_requests() {
    let s = server();
    let texts = ["why is the sky blue?", "a", "the quick brown fox jumps over the lazy dog", "b", ""];
    let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": texts}));
    assert_eq!(r.status, 200);
    let v = r.json();
    let all = v["embeddings"].as_array().unwrap();
    assert_eq!(all.len(), texts.len());
    for (i, t) in texts.iter().enumerate() {
        let batch = vector(&all[i]);
        assert!((norm(&batch) - 1.0).abs() < 1e-4);
        if !t.is_empty() {
            let single = embed_one(s.addr, "all-minilm", t);
            assert!(cosine(&batch, &single) > 0.9999, "input {i}");
        }
    }
}

#[test]
fn empty_inputs_load_the_model_and_return_no_vectors() {
    let s = server();
    for input in [json!(""), json!([])] {
        let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": input}));
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), json!({"model": "all-minilm", "embeddings": []}));
    }
    let ps = get(s.addr, "/api/ps").json();
    assert_eq!(ps["models"][0]["name"], "all-minilm:latest");
    // And on the legacy endpoint.
    let r = post(s.addr, "/api/embeddings", &json!({"model": "all-minilm", "prompt": ""}));
    assert_eq!(r.json(), json!({"embedding": []}));
}

#[test]
fn input_of_other_types_is_400() {
    let s = server();
    for input in [json!(5), json!([1]), json!(["a", 2]), json!({"a": "b"}), json!(true)] {
        let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": input}));
        assert_eq!(r.status, 400, "{input}");
        assert_eq!(r.error(), "invalid input type");
    }
}

#[test]
fn truncation_num_ctx_and_dimensions() {
    let s = server();
    let why = embed_one(s.addr, "all-minilm", "why");
    let r = post(
        s.addr,
        "/api/embed",
        &json!({"model": "all-minilm", "input": "why is the sky blue?", "options": {"num_ctx": 3}}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["prompt_eval_count"], 3);
    let cut = vector(&r.json()["embeddings"][0]);
    assert!(cosine(&cut, &why) > 0.99999);

    for n in [0, 1] {
        let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": "why", "options": {"num_ctx": n}}));
        assert_eq!(r.status, 400);
        assert_eq!(r.error(), "input after truncation exceeds maximum context length");
    }
    let r = post(
        s.addr,
        "/api/embed",
        &json!({"model": "all-minilm", "input": "why is the sky blue?", "truncate": false, "options": {"num_ctx": 3}}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), "the input length exceeds the context length");
    // Within the context, truncate:false is fine.
    let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": "why", "truncate": false}));
    assert_eq!(r.status, 200);
    // A very long input is cut to the model's 512 tokens by default.
    let long = "sky ".repeat(2000);
    let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": long}));
    assert_eq!(r.json()["prompt_eval_count"], 512);
    let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": long, "truncate": false}));
    assert_eq!(r.status, 400);

    let full = embed_one(s.addr, "all-minilm", "why is the sky blue?");
    let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": "why is the sky blue?", "dimensions": 10}));
    let d = vector(&r.json()["embeddings"][0]);
    assert_eq!(d.len(), 10);
    assert!((norm(&d) - 1.0).abs() < 1e-4);
    let n10 = norm(&full[..10]);
    for (a, b) in d.iter().zip(&full[..10]) {
        assert!((a - b / n10).abs() < 1e-5);
    }
    let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": "x", "options": {"num_ctx": "3"}}));
    assert_eq!(r.status, 400);
}

#[test]
fn request_errors_follow_the_table() {
    let s = server();
    let r = request(s.addr, "POST", "/api/embed", &[], b"");
    assert_eq!((r.status, r.error().as_str()), (400, "missing request body"));
    let r = request(s.addr, "POST", "/api/embed", &[], b"{not json");
    assert_eq!(r.status, 400);
    assert!(!r.error().is_empty());
    let r = post(s.addr, "/api/embed", &json!({"model": 5, "input": "x"}));
    assert_eq!(r.status, 400);
    let r = post(s.addr, "/api/embed", &json!({"model": "nope", "input": "x"}));
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "model \"nope\" not found, try pulling it first");
    let r = post(s.addr, "/api/embed", &json!({"input": "x"}));
    assert_eq!((r.status, r.error().as_str()), (400, "model is required"));
    let r = post(s.addr, "/api/embed", &json!({"model": "../../etc/passwd", "input": "x"}));
    assert_eq!(r.status, 400, "{}", r.error());
    let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": "x", "keep_alive": true}));
    assert_eq!(r.status, 400);
    let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": "x", "keep_alive": "soon"}));
    assert_eq!(r.status, 400);
    let r = post(s.addr, "/api/embeddings", &json!({"prompt": "x"}));
    assert_eq!((r.status, r.error().as_str()), (400, "model is required"));
    let r = post(s.addr, "/api/embeddings", &json!({"model": "nope", "prompt": "x"}));
    assert_eq!(r.status, 404);
    let r = request(s.addr, "POST", "/api/embeddings", &[], b"");
    assert_eq!((r.status, r.error().as_str()), (400, "missing request body"));
}

#[test]
fn legacy_embeddings_are_unnormalised() {
    let s = server();
    let g = golden();
    let want = vector(&g["legacy_embeddings"]["embedding"]);
    let r = post(s.addr, "/api/embeddings", &json!({"model": "all-minilm", "prompt": "why is the sky blue?"}));
    assert_eq!(r.status, 200);
    let got = vector(&r.json()["embedding"]);
    assert!((norm(&got) - norm(&want)).abs() / norm(&want) < 0.01, "{} vs {}", norm(&got), norm(&want));
    assert!(cosine(&got, &want) >= 0.999);
}

#[test]
fn ps_shows_loaded_models_longest_first() {
    let s = server();
    assert_eq!(get(s.addr, "/api/ps").json(), json!({"models": []}));
    post(s.addr, "/api/embed", &json!({"model": "minilm-q8", "input": "a", "keep_alive": "1h"}));
    post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": "a", "keep_alive": 600}));
    let ps = get(s.addr, "/api/ps").json();
    let models = ps["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["name"], "minilm-q8:latest");
    assert_eq!(models[1]["name"], "all-minilm:latest");
    let m = &models[1];
    assert_eq!(m["model"], "all-minilm:latest");
    assert_eq!(m["size_vram"], 0);
    assert_eq!(m["context_length"], 512);
    assert!(m["size"].as_u64().unwrap() > 40_000_000);
    let digest = m["digest"].as_str().unwrap();
    assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{digest}");
    assert_eq!(
        m["details"],
        json!({"parent_model": "", "format": "gguf", "family": "bert", "families": ["bert"],
               "parameter_size": "22.57M", "quantization_level": "F16"})
    );
    assert_eq!(models[0]["details"]["quantization_level"], "Q8_0");
    // RFC 3339 with an offset: 2026-11-24T14:38:31.83753-07:00 or ...Z
    let exp = m["expires_at"].as_str().unwrap();
    assert!(exp.len() >= 20 && &exp[4..5] == "-" && &exp[10..11] == "T", "{exp}");
    assert!(exp.ends_with('Z') || exp[exp.len() - 6..].starts_with(['+', '-']), "{exp}");
    // keep_alive -1: forever, so it sorts first (Ollama shows a date centuries away).
    post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": "a", "keep_alive": -1}));
    let ps = get(s.addr, "/api/ps").json();
    assert_eq!(ps["models"][0]["name"], "all-minilm:latest");
    assert!(ps["models"][0]["expires_at"].as_str().unwrap().starts_with('2') && ps["models"][0]["expires_at"].as_str().unwrap()[..4].parse::<u32>().unwrap() > 2200);
}

#[test]
fn keep_alive_expiry_unloads_the_model() {
    let s = server();
    let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": "a", "keep_alive": "1s"}));
    assert_eq!(r.status, 200);
    assert_eq!(get(s.addr, "/api/ps").json()["models"].as_array().unwrap().len(), 1);
    let t0 = Instant::now();
    loop {
        let n = get(s.addr, "/api/ps").json()["models"].as_array().unwrap().len();
        if n == 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the model did not expire");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(t0.elapsed() >= Duration::from_millis(500));
    // The next request loads it again.
    let r = post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": "a", "keep_alive": 0}));
    assert_eq!(r.status, 200);
    assert!(r.json()["load_duration"].as_u64().unwrap() > 0);
    // keep_alive 0: gone right after the request.
    assert_eq!(get(s.addr, "/api/ps").json(), json!({"models": []}));
}

#[test]
fn max_loaded_models_evicts() {
    let s = server_with(quiver::server::ServerConfig { max_loaded_models: 1, ..config() });
    post(s.addr, "/api/embed", &json!({"model": "all-minilm", "input": "a"}));
    post(s.addr, "/api/embed", &json!({"model": "minilm-q8", "input": "a"}));
    let ps = get(s.addr, "/api/ps").json();
    let names: Vec<&str> = ps["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["minilm-q8:latest"]);
}

#[test]
fn tags_and_show() {
    let s = server();
    let tags = get(s.addr, "/api/tags").json();
    let models = tags["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"all-minilm:latest") && names.contains(&"minilm-q8:latest"), "{names:?}");
    for m in models {
        assert_eq!(m["model"], m["name"]);
        assert!(m["size"].as_u64().unwrap() > 1_000_000);
        assert_eq!(m["digest"].as_str().unwrap().len(), 64);
        assert_eq!(m["details"]["family"], "bert");
        assert!(m["modified_at"].is_string());
    }
    let r = post(s.addr, "/api/show", &json!({"model": "all-minilm"}));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["capabilities"], json!(["embedding"]));
    assert_eq!(v["details"]["parameter_size"], "22.57M");
    assert_eq!(v["model_info"]["general.architecture"], "bert");
    assert_eq!(v["model_info"]["bert.context_length"], 512);
    assert!(v["model_info"]["tokenizer.ggml.tokens"].is_null(), "the vocabulary only with verbose");
    let v = post(s.addr, "/api/show", &json!({"name": "all-minilm", "verbose": true})).json();
    assert_eq!(v["model_info"]["tokenizer.ggml.tokens"].as_array().unwrap().len(), 30522);
    assert_eq!(post(s.addr, "/api/show", &json!({"model": "nope"})).status, 404);
    assert_eq!(post(s.addr, "/api/show", &json!({})).status, 400);
}

#[test]
fn openai_embeddings_float_and_base64() {
    let s = server();
    let r = post(s.addr, "/v1/embeddings", &json!({"model": "all-minilm", "input": ["why is the sky blue?", "a"]}));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "all-minilm");
    assert_eq!(v["usage"], json!({"prompt_tokens": 11, "total_tokens": 11}));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    let f = vector(&data[0]["embedding"]);
    assert!(cosine(&f, &vector(&golden()["embed_single"]["embedding"])) >= 0.999);

    let r = post(
        s.addr,
        "/v1/embeddings",
        &json!({"model": "all-minilm", "input": "why is the sky blue?", "encoding_format": "base64", "dimensions": 64}),
    );
    use base64::Engine as _;
    let b64 = r.json()["data"][0]["embedding"].as_str().unwrap().to_string();
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let dec: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(dec.len(), 64);
    let n = norm(&f[..64]);
    for (a, b) in dec.iter().zip(&f[..64]) {
        assert!((a - b / n).abs() < 1e-5);
    }

    let r = post(s.addr, "/v1/embeddings", &json!({"model": "nope", "input": "x"}));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = post(s.addr, "/v1/embeddings", &json!({"model": "all-minilm"}));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = post(s.addr, "/v1/embeddings", &json!({"model": "all-minilm", "input": "x", "encoding_format": "hex"}));
    assert_eq!(r.status, 400);
    let r = get(s.addr, "/v1/models").json();
    assert_eq!(r["object"], "list");
    let m = r["data"].as_array().unwrap().iter().find(|m| m["id"] == "all-minilm:latest").expect("listed");
    assert_eq!(m["object"], "model");
    assert_eq!(m["owned_by"], "library");
    assert!(m["created"].as_u64().unwrap() > 1_600_000_000);
}

#[test]
fn cors_allows_loopback_origins_only_by_default() {
    let s = server();
    let r = request(s.addr, "GET", "/api/version", &[("Origin", "http://localhost:3000")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("http://localhost:3000"));
    let r = request(s.addr, "GET", "/api/version", &[("Origin", "http://evil.example")], b"");
    assert_eq!(r.status, 403);
    let r = request(
        s.addr,
        "OPTIONS",
        "/api/embed",
        &[("Origin", "http://127.0.0.1:5173"), ("Access-Control-Request-Method", "POST")],
        b"",
    );
    assert_eq!(r.status, 204);
    assert!(r.header("access-control-allow-methods").unwrap().contains("POST"));
    assert!(r.header("access-control-allow-headers").unwrap().contains("Content-Type"));
    let s2 = server_with(quiver::server::ServerConfig { origins: vec!["https://*.example.com".into()], ..config() });
    let r = request(s2.addr, "GET", "/api/version", &[("Origin", "https://app.example.com")], b"");
    assert_eq!(r.status, 200);
}

#[test]
fn oversized_bodies_get_413_unread() {
    let s = server_with(quiver::server::ServerConfig { max_body_bytes: 1024, ..config() });
    // A huge Content-Length and no body at all: the answer comes without waiting for it.
    let mut c = connect(s.addr);
    use std::io::{BufReader, Write};
    c.write_all(b"POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 999999999999999\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    let r = read_reply(&mut BufReader::new(c), false);
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].is_string());
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Chunked: refused once the chunks pass the limit.
    let mut c = connect(s.addr);
    c.write_all(b"POST /api/embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 600, "a".repeat(600));
    c.write_all(chunk.as_bytes()).unwrap();
    c.write_all(chunk.as_bytes()).unwrap();
    let r = read_reply(&mut BufReader::new(c), false);
    assert_eq!(r.status, 413);
    // Expect: 100-continue with a too-large body: 413 instead of 100.
    let mut c = connect(s.addr);
    c.write_all(b"POST /api/embed HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut BufReader::new(c), false).status, 413);
    // The server is still fine, and a small chunked body works.
    let mut c = connect(s.addr);
    let body = json!({"model": "all-minilm", "input": "why"}).to_string();
    let msg = format!(
        "POST /api/embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    c.write_all(msg.as_bytes()).unwrap();
    let r = read_reply(&mut BufReader::new(c), false);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
}
