//! The model-management endpoints without a registry: blobs, create with `files`, copy,
//! delete, with the status codes and messages Ollama's routes.go gives.

mod registry_common;
mod server_common;

use quiver::store::Store;
use registry_common::TempDir;
use serde_json::json;
use server_common::{post, request};
use sha2::{Digest, Sha256};
use std::sync::Arc;

#[test]
fn blobs_create_copy_delete_answer_as_ollama_does() {
    let dir = TempDir::new("manage");
    let server = quiver::server::start(
        server_common::config(),
        Arc::new(Store::new(vec![dir.path().to_path_buf()], None)),
    )
    .expect("server starts");
    let addr = server.addr;
    let gguf = std::fs::read(server_common::Q8).unwrap();
    let digest = format!("sha256:{:x}", Sha256::digest(&gguf));

    // Blobs: a malformed digest, an absent one, a body that is not what the digest says.
    let r = request(addr, "HEAD", "/api/blobs/sha256:xyz", &[], b"");
    assert_eq!(r.status, 400);
    let r = request(addr, "HEAD", &format!("/api/blobs/{digest}"), &[], b"");
    assert_eq!(r.status, 404);
    let r = request(
        addr,
        "POST",
        &format!("/api/blobs/{digest}"),
        &[],
        b"not the model",
    );
    assert_eq!(r.status, 400);
    assert!(
        r.error().starts_with("digest mismatch, expected"),
        "{}",
        r.error()
    );
    let r = request(addr, "POST", &format!("/api/blobs/{digest}"), &[], &gguf);
    assert_eq!(r.status, 201);
    let r = request(addr, "HEAD", &format!("/api/blobs/{digest}"), &[], b"");
    assert_eq!(r.status, 200);
    let r = request(addr, "PUT", &format!("/api/blobs/{digest}"), &[], b"");
    assert_eq!(r.status, 405);

    // Create from the uploaded blob.
    let r = post(
        addr,
        "/api/create",
        &json!({"model": "made", "files": {"m.gguf": digest}}),
    );
    assert_eq!(r.status, 200);
    let last: serde_json::Value = serde_json::from_slice(
        r.body
            .split(|&b| b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last, json!({"status": "success"}));
    let r = post(addr, "/api/create", &json!({"model": "made2"}));
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), "neither 'from' or 'files' was specified");
    let missing = format!("sha256:{}", "0".repeat(64));
    let r = post(
        addr,
        "/api/create",
        &json!({"model": "x", "files": {"m.gguf": missing}}),
    );
    assert_eq!(r.status, 400);

    // Copy, then the copy serves the same vectors.
    let r = post(
        addr,
        "/api/copy",
        &json!({"source": "made", "destination": "copied:v1"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        server_common::embed_one(addr, "made", "a copy"),
        server_common::embed_one(addr, "copied:v1", "a copy")
    );
    let r = post(
        addr,
        "/api/copy",
        &json!({"source": "nothing", "destination": "y"}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "model \"nothing\" not found");
    let r = post(
        addr,
        "/api/copy",
        &json!({"source": "made", "destination": "../x"}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), "destination \"../x\" is invalid");

    // Delete: once, then not found; the other name keeps the shared blob.
    let del = |name: &str| {
        let body = json!({ "model": name }).to_string();
        request(addr, "DELETE", "/api/delete", &[], body.as_bytes())
    };
    assert_eq!(del("made").status, 200);
    let r = del("made");
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "model 'made' not found");
    assert_eq!(del("a/../b").status, 400);
    let r = request(addr, "HEAD", &format!("/api/blobs/{digest}"), &[], b"");
    assert_eq!(r.status, 200, "the copy still uses the blob");
    assert_eq!(del("copied:v1").status, 200);
    let r = request(addr, "HEAD", &format!("/api/blobs/{digest}"), &[], b"");
    assert_eq!(r.status, 404, "the last name gone, its blob goes too");
}
