//! Model names parse the way Ollama parses them, and hostile names are refused before they can
//! become paths.

use quiver::model::human_number;
use quiver::store::{ModelName, StoreError};

fn parts(s: &str) -> [String; 4] {
    let n = ModelName::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"));
    [n.host, n.namespace, n.model, n.tag]
}

#[test]
fn valid_names_fill_ollamas_defaults() {
    let table: &[(&str, [&str; 4])] = &[
        (
            "all-minilm",
            ["registry.ollama.ai", "library", "all-minilm", "latest"],
        ),
        (
            "all-minilm:latest",
            ["registry.ollama.ai", "library", "all-minilm", "latest"],
        ),
        (
            "all-minilm:33m",
            ["registry.ollama.ai", "library", "all-minilm", "33m"],
        ),
        (
            "nomic-embed-text:v1.5",
            ["registry.ollama.ai", "library", "nomic-embed-text", "v1.5"],
        ),
        (
            "user/model:tag",
            ["registry.ollama.ai", "user", "model", "tag"],
        ),
        (
            "jina/jina-embeddings-v2-base-en",
            [
                "registry.ollama.ai",
                "jina",
                "jina-embeddings-v2-base-en",
                "latest",
            ],
        ),
        (
            "example.com/ns/model:q8_0",
            ["example.com", "ns", "model", "q8_0"],
        ),
        (
            "localhost:5000/ns/model",
            ["localhost:5000", "ns", "model", "latest"],
        ),
        (
            "localhost:5000/ns/model:v2",
            ["localhost:5000", "ns", "model", "v2"],
        ),
        (
            "https://example.com/ns/model:1",
            ["example.com", "ns", "model", "1"],
        ),
        (
            "http://example.com/ns/model",
            ["example.com", "ns", "model", "latest"],
        ),
        (
            "hf.co/bartowski/Model-GGUF:Q4_K_M",
            ["hf.co", "bartowski", "Model-GGUF", "Q4_K_M"],
        ),
        ("_x/y_:z-", ["registry.ollama.ai", "_x", "y_", "z-"]),
        ("a..b", ["registry.ollama.ai", "library", "a..b", "latest"]),
    ];
    for (s, want) in table {
        assert_eq!(parts(s), want.map(String::from), "{s}");
    }
}

#[test]
fn hostile_and_malformed_names_are_invalid() {
    let long = "a".repeat(81);
    let long_tag = format!("m:{}", "t".repeat(81));
    let long_host = format!("{}/ns/m", "h".repeat(351));
    let bad: &[&str] = &[
        "",
        "../../etc/passwd",
        "..",
        ".",
        "a/../../b",
        "a/..",
        "../a:b",
        "/etc/passwd",
        "/abs/path/model",
        "model/",
        "/model",
        "ns//model",
        "a\0b",
        "a\\b",
        "..\\..\\windows",
        "%2e%2e/%2e%2e/etc",
        "%2e%2e",
        "model:",
        ":tag",
        "model:../x",
        "model:.hidden",
        "ns.dot/model",
        "host/ns.dot/model",
        "a/b/c/d",
        "a/b/c/d:e",
        "host:1/n:s/model",
        "mo del",
        "model\n",
        "-model",
        ".model",
        "model:-tag",
        "modèle",
        "model@sha256:abcd",
        "model+Q4_0",
        "~/model",
        "file:///etc/passwd",
        &long,
        &long_tag,
        &long_host,
    ];
    for s in bad {
        match ModelName::parse(s) {
            Err(StoreError::InvalidName(msg)) => assert!(!msg.is_empty()),
            other => panic!("{s:?} should be an invalid name, got {other:?}"),
        }
    }
}

#[test]
fn very_long_input_is_refused_quickly() {
    let huge = "a/".repeat(1 << 20);
    assert!(matches!(
        ModelName::parse(&huge),
        Err(StoreError::InvalidName(_))
    ));
}

#[test]
fn short_display_drops_default_parts() {
    let short = |s: &str| ModelName::parse(s).unwrap().display_short();
    assert_eq!(short("all-minilm"), "all-minilm:latest");
    assert_eq!(
        short("registry.ollama.ai/library/all-minilm:latest"),
        "all-minilm:latest"
    );
    assert_eq!(short("user/model:tag"), "user/model:tag");
    assert_eq!(
        short("host:1/library/model:tag"),
        "host:1/library/model:tag"
    );
    assert_eq!(short("host/ns/model"), "host/ns/model:latest");
}

#[test]
fn names_compare_without_regard_to_case() {
    let a = ModelName::parse("All-MiniLM:Latest").unwrap();
    let b = ModelName::parse("registry.ollama.ai/library/all-minilm").unwrap();
    assert!(a.eq_fold(&b));
    assert!(!a.eq_fold(&ModelName::parse("all-minilm:33m").unwrap()));
    assert_eq!(a.to_lowercase(), b);
}

#[test]
fn human_number_matches_ollamas_format() {
    let table: &[(u64, &str)] = &[
        (0, "0"),
        (999, "999"),
        (1_000, "1K"),
        (1_499, "1K"),
        (1_500, "2K"),
        (136_727_040, "136.73M"),
        (8_000_000_000, "8B"),
        (1_999_999, "2.00M"),
        (110_000, "110K"),
        (1_000_000, "1M"),
        (22_565_376, "22.57M"),
        (33_210_000, "33.21M"),
        (137_000_000, "137M"),
        (1_000_000_000, "1B"),
        (7_241_732_096, "7.2B"),
        (70_553_706_496, "70.6B"),
    ];
    for (n, want) in table {
        assert_eq!(human_number(*n), *want, "{n}");
    }
}
