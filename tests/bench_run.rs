//! `quiver::bench::run` end to end on the committed F16 model, tiny sizes: the library path,
//! the in-process HTTP server path, latency and the concurrency test all produce sane numbers.

use quiver::bench::report::Path;
use quiver::bench::{run, BenchOptions, Kind};

fn fixture(file: &str) -> String {
    format!("{}/fixtures/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// The smallest run that still has every row: one thread, 2 queries a batch (4 a
/// repetition), one passage.
fn tiny(model: String) -> BenchOptions {
    BenchOptions {
        model,
        threads: vec![1],
        batches: vec![2],
        passage_batches: vec![1],
        min_queries: 4,
        min_passages: 1,
        ..BenchOptions::default()
    }
}

#[test]
fn library_and_http_paths_measure_the_same_work() {
    let opts = BenchOptions {
        reps: 1,
        http: true,
        latency_requests: 3,
        concurrency: 2,
        ..tiny(fixture("all-minilm-f16.gguf"))
    };
    let report = run(opts).expect("bench runs");
    assert_eq!(report.quantization, "F16");
    // Library and HTTP rows for queries (batch 2) and passages (batch 1).
    assert_eq!(report.rows.len(), 4, "{report}");
    for r in &report.rows {
        assert!(
            r.embeddings_per_s.is_finite() && r.embeddings_per_s > 0.0,
            "{report}"
        );
        let (items, tokens) = match r.kind {
            Kind::Query => (4, 4 * 13),
            Kind::Passage => (1, 250),
        };
        assert_eq!(r.items, items, "{report}");
        // Over HTTP the token count is the server's prompt_eval_count: the same tokenizer.
        assert_eq!(r.tokens, tokens, "{:?} {report}", r.path);
    }
    assert!(report.rows.iter().any(|r| r.path == Path::Http));
    assert_eq!(report.latency.len(), 2);
    let c = report.concurrency.as_ref().expect("concurrency measured");
    assert_eq!(c.queries, 2 * 4);
    assert!(c.ratio > 0.0 && c.ratio.is_finite());
    // The table and the JSON both render.
    assert!(report.to_string().contains("http"));
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 4);
}

#[test]
fn versus_alternates_two_models_and_reports_their_ratio() {
    let opts = BenchOptions {
        versus: Some(fixture("all-minilm-q8_0.gguf")),
        reps: 3,
        latency_requests: 1,
        ..tiny(fixture("all-minilm-f16.gguf"))
    };
    let report = run(opts).expect("bench runs");
    assert_eq!(report.quantization, "F16");
    let versus = report.versus_model.as_deref().expect("versus model named");
    assert!(versus.ends_with("(Q8_0)"), "{versus}");
    assert_eq!(
        (report.rows.len(), report.versus_rows.len()),
        (2, 2),
        "{report}"
    );
    assert_eq!(report.versus.len(), 2, "{report}");
    for ((a, b), v) in report
        .rows
        .iter()
        .zip(&report.versus_rows)
        .zip(&report.versus)
    {
        // The same work for both: same texts, same tokenizer.
        assert_eq!((a.kind, a.items, a.tokens), (b.kind, b.items, b.tokens));
        assert_eq!((v.kind, v.batch, v.reps), (a.kind, a.batch, 3));
        assert!(
            v.min_ratio > 0.0 && v.min_ratio <= v.median_ratio,
            "{report}"
        );
        assert!(
            v.median_ratio <= v.max_ratio && v.max_ratio.is_finite(),
            "{report}"
        );
    }
    assert!(report.to_string().contains("versus / model"), "{report}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["versus"].as_array().unwrap().len(), 2);
}

#[test]
fn a_missing_model_is_an_error_not_a_panic() {
    let opts = BenchOptions {
        model: "/nonexistent/model.gguf".into(),
        ..BenchOptions::default()
    };
    let e = run(opts).expect_err("an error");
    assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
}
