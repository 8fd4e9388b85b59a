//! Ollama's model-management endpoints: `/api/pull`, `/api/push` (streamed progress from the
//! registry client), `/api/delete`, `/api/copy`, `/api/blobs/:digest` and `/api/create` with
//! `files`. Status codes and messages follow Ollama's server/routes.go.

use crate::registry::{self, Options, Progress, RegistryError};
use crate::server::error::ApiError;
use crate::server::http::{Request, Response};
use crate::server::routes::Ctx;
use crate::store::{self, ModelName, Store, StoreError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering;

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad("missing request body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(e.to_string()))
}

/// `model`, or the older `name`, whichever is non-empty.
fn model_or_name(model: Option<String>, name: Option<String>) -> String {
    model.filter(|m| !m.is_empty()).or(name).unwrap_or_default()
}

#[derive(Deserialize)]
struct TransferRequest {
    model: Option<String>,
    name: Option<String>,
    #[serde(default)]
    insecure: bool,
    stream: Option<bool>,
}

type Transfer = fn(&Store, &str, &Options, &mut dyn FnMut(Progress)) -> Result<(), RegistryError>;

pub fn pull(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    transfer(ctx, body, registry::pull)
}

pub fn push(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    transfer(ctx, body, registry::push)
}

/// Runs a pull or push: with `"stream": false` to the end, answering the last status (or the
/// error, 500); otherwise as NDJSON progress lines, an error as a last `{"error"}` line. A
/// client that hangs up cancels the transfer (a pull's partial files stay for the next one).
fn transfer(ctx: &Ctx, body: &[u8], run: Transfer) -> Result<Response, ApiError> {
    let r: TransferRequest = parse_json(body)?;
    let name = model_or_name(r.model, r.name);
    if name.is_empty() {
        return Err(ApiError::bad("model is required"));
    }
    ModelName::parse(&name).map_err(|e| ApiError::bad(e.to_string()))?;
    if name.starts_with("http://") && !r.insecure {
        return Err(ApiError::new(
            500,
            RegistryError::InsecureProtocol.to_string(),
        ));
    }
    let opts = Options::from_env(r.insecure);
    let engine = ctx.engine.clone();
    if r.stream == Some(false) {
        let mut last = Progress::status("");
        return match run(engine.store(), &name, &opts, &mut |p| last = p) {
            Ok(()) => Ok(Response::json(200, &last)),
            Err(e) => Err(ApiError::new(500, e.to_string())),
        };
    }
    Ok(Response::stream(200, "application/x-ndjson", move |w| {
        let cancel = opts.cancel.clone();
        let mut write_err = None;
        let result = run(engine.store(), &name, &opts, &mut |p| {
            if write_err.is_none() {
                if let Err(e) = write_line(w, &p) {
                    cancel.store(true, Ordering::Relaxed);
                    write_err = Some(e);
                }
            }
        });
        if let Some(e) = write_err {
            return Err(e);
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) => write_line(w, &json!({ "error": e.to_string() })),
        }
    }))
}

fn write_line(w: &mut dyn Write, v: &impl serde::Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

pub fn delete(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct DeleteRequest {
        model: Option<String>,
        name: Option<String>,
    }
    let r: DeleteRequest = parse_json(body)?;
    let name = model_or_name(r.model, r.name);
    if ModelName::parse(&name).is_err() {
        return Err(ApiError::bad(format!("name {name:?} is invalid")));
    }
    match ctx.engine.store().remove(&name) {
        Ok(()) => Ok(Response::empty(200)),
        Err(StoreError::NotFound(_)) => {
            Err(ApiError::new(404, format!("model '{name}' not found")))
        }
        Err(e) => Err(ApiError::new(500, e.to_string())),
    }
}

pub fn copy(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct CopyRequest {
        #[serde(default)]
        source: String,
        #[serde(default)]
        destination: String,
    }
    let r: CopyRequest = parse_json(body)?;
    if ModelName::parse(&r.source).is_err() {
        return Err(ApiError::bad(format!("source {:?} is invalid", r.source)));
    }
    if ModelName::parse(&r.destination).is_err() {
        return Err(ApiError::bad(format!(
            "destination {:?} is invalid",
            r.destination
        )));
    }
    match ctx.engine.store().copy(&r.source, &r.destination) {
        Ok(()) => Ok(Response::empty(200)),
        Err(StoreError::NotFound(_)) => Err(ApiError::new(
            404,
            format!("model {:?} not found", r.source),
        )),
        Err(e) => Err(ApiError::new(500, e.to_string())),
    }
}

/// `HEAD` and `POST /api/blobs/:digest`.
pub fn blobs(ctx: &Ctx, req: &Request, digest: &str) -> Result<Response, ApiError> {
    let store = ctx.engine.store();
    if !matches!(req.method.as_str(), "HEAD" | "POST") {
        return Err(ApiError::new(405, "405 method not allowed"));
    }
    let path = store
        .blob_path(digest)
        .map_err(|_| ApiError::bad("invalid digest format"))?;
    if path.is_file() {
        return Ok(Response::empty(200));
    }
    if req.method == "HEAD" {
        return Err(ApiError::new(404, format!("blob {digest:?} not found")));
    }
    let (got, _) = store
        .write_blob(&mut &req.body[..])
        .map_err(|e| ApiError::new(500, e.to_string()))?;
    if store::sha256_hex(&got) != store::sha256_hex(digest) {
        // Named by its own hash, the blob is not one anything asked for.
        if let Ok(p) = store.blob_path(&got) {
            let _ = std::fs::remove_file(p);
        }
        return Err(ApiError::bad(format!(
            "digest mismatch, expected {digest:?}, got {got:?}"
        )));
    }
    Ok(Response::empty(201))
}

/// `POST /api/create` with `files` (`{"model.gguf": "sha256:…"}`, uploaded first through
/// `/api/blobs`): the one GGUF becomes the model. Other ways to create (`from`, a Modelfile's
/// adapters, quantize) are not Quiver's.
pub fn create(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct CreateRequest {
        model: Option<String>,
        name: Option<String>,
        files: Option<BTreeMap<String, String>>,
        from: Option<String>,
        stream: Option<bool>,
        #[serde(flatten)]
        _rest: BTreeMap<String, Value>,
    }
    let r: CreateRequest = parse_json(body)?;
    let name = model_or_name(r.model, r.name);
    if ModelName::parse(&name).is_err() {
        return Err(ApiError::bad(format!("model name {name:?} is invalid")));
    }
    let files = r.files.unwrap_or_default();
    if files.is_empty() {
        return Err(ApiError::bad(match r.from {
            Some(_) => "quiver creates models only from an uploaded GGUF file (\"files\")",
            None => "neither 'from' or 'files' was specified",
        }));
    }
    if files.len() != 1 {
        return Err(ApiError::bad(
            "quiver creates a model from exactly one GGUF file",
        ));
    }
    let (file, digest) = files.into_iter().next().unwrap_or_default();
    let store = ctx.engine.store();
    let blob = store
        .blob_path(&digest)
        .map_err(|_| ApiError::bad(format!("invalid digest {digest:?} for {file:?}")))?;
    if !blob.is_file() {
        return Err(ApiError::bad(format!(
            "file {file:?}: blob {digest} not found, upload it with POST /api/blobs first"
        )));
    }
    let steps = [
        json!({"status": "parsing GGUF"}),
        json!({"status": format!("using existing layer {digest}")}),
        json!({"status": "writing manifest"}),
    ];
    let result = store.create(&name, &blob);
    let last = match &result {
        Ok(_) => json!({"status": "success"}),
        Err(e) => json!({"error": e.to_string()}),
    };
    if r.stream == Some(false) {
        return match result {
            Ok(_) => Ok(Response::json(200, &last)),
            Err(e) => Err(ApiError::new(400, e.to_string())),
        };
    }
    let mut out = Vec::new();
    for v in steps
        .iter()
        .take(if result.is_ok() { 3 } else { 1 })
        .chain([&last])
    {
        let _ = write_line(&mut out, v);
    }
    Ok(Response::new(200, "application/x-ndjson", out))
}
