//! The endpoints: request JSON in, response JSON out. Everything model-related goes through
//! the engine; this file only validates, dispatches and shapes answers the way Ollama does.

use super::batches::{EmbedJob, RunError, Texts};
use super::cors::{self, Origins};
use super::error::ApiError;
use super::http::{Request, Response};
use super::metrics::Metrics;
use crate::embed;
use crate::engine::{format, Engine, KeepAlive};
use crate::store::{ModelEntry, ModelSource};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

// The management handlers live in their own file beside this one (declared here so that the
// connection layer's mod.rs stays untouched).
#[path = "manage.rs"]
mod manage;

pub struct Ctx {
    pub engine: Arc<Engine>,
    pub origins: Origins,
    pub metrics: Arc<Metrics>,
    /// Inputs per embedding request at most.
    pub max_inputs: usize,
}

/// Known paths and the methods each takes (HEAD wherever GET is).
const ROUTES: &[(&str, &[&str])] = &[
    ("/", &["GET", "HEAD"]),
    ("/api/version", &["GET", "HEAD"]),
    ("/api/embed", &["POST"]),
    ("/api/embeddings", &["POST"]),
    ("/api/ps", &["GET", "HEAD"]),
    ("/api/tags", &["GET", "HEAD"]),
    ("/api/show", &["POST"]),
    ("/api/pull", &["POST"]),
    ("/api/push", &["POST"]),
    ("/api/delete", &["DELETE"]),
    ("/api/copy", &["POST"]),
    ("/api/create", &["POST"]),
    ("/v1/embeddings", &["POST"]),
    ("/v1/models", &["GET", "HEAD"]),
    ("/metrics", &["GET", "HEAD"]),
];

const JSON: &str = "application/json; charset=utf-8";

pub fn handle(ctx: &Ctx, req: &Request) -> Response {
    let path = match req.path.as_str() {
        "/" => "/",
        p => p.strip_suffix('/').unwrap_or(p),
    };
    // CORS first: a browser origin that is not allowed gets nothing else.
    let origin = req.header("origin").map(str::to_string);
    if let Some(o) = &origin {
        if !ctx.origins.allows(o, req.header("host")) {
            return ApiError::new(403, "origin not allowed").render(path);
        }
    }
    let with_cors = |resp: Response| match &origin {
        Some(o) => resp
            .with_header("Access-Control-Allow-Origin", o)
            .with_header("Vary", "Origin"),
        None => resp,
    };
    if req.method == "OPTIONS" {
        let resp = Response::empty(204)
            .with_header("Access-Control-Allow-Methods", cors::ALLOW_METHODS)
            .with_header("Access-Control-Allow-Headers", cors::ALLOW_HEADERS)
            .with_header("Access-Control-Max-Age", "43200");
        return with_cors(resp);
    }

    if let Some(digest) = path.strip_prefix("/api/blobs/") {
        let resp = manage::blobs(ctx, req, digest).unwrap_or_else(|e| e.render(path));
        return with_cors(resp);
    }
    let Some((_, methods)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        return with_cors(ApiError::new(404, "404 page not found").render(path));
    };
    if !methods.contains(&req.method.as_str()) {
        let resp = ApiError::new(405, "405 method not allowed").render(path);
        return with_cors(resp.with_header("Allow", &methods.join(", ")));
    }
    let result = match path {
        "/" => Ok(Response::new(
            200,
            "text/plain; charset=utf-8",
            b"Ollama is running".to_vec(),
        )),
        "/api/version" => Ok(Response::json(
            200,
            &json!({ "version": env!("CARGO_PKG_VERSION") }),
        )),
        "/api/embed" => embed_handler(ctx, &req.body),
        "/api/embeddings" => embeddings_handler(ctx, &req.body),
        "/api/ps" => Ok(ps_handler(ctx)),
        "/api/tags" => tags_handler(ctx),
        "/api/show" => show_handler(ctx, &req.body),
        "/api/pull" => manage::pull(ctx, &req.body),
        "/api/push" => manage::push(ctx, &req.body),
        "/api/delete" => manage::delete(ctx, &req.body),
        "/api/copy" => manage::copy(ctx, &req.body),
        "/api/create" => manage::create(ctx, &req.body),
        "/v1/embeddings" => openai_embeddings_handler(ctx, &req.body),
        "/v1/models" => openai_models_handler(ctx),
        "/metrics" => Ok(Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            ctx.metrics.render(ctx.engine.ps().len()).into_bytes(),
        )),
        _ => Err(ApiError::new(404, "404 page not found")),
    };
    with_cors(result.unwrap_or_else(|e| e.render(path)))
}

/// The body as `T`; an empty body is Ollama's `missing request body`.
fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad("missing request body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(e.to_string()))
}

fn required_model(model: Option<String>) -> Result<String, ApiError> {
    match model {
        Some(m) if !m.trim().is_empty() => Ok(m),
        _ => Err(ApiError::bad("model is required")),
    }
}

fn keep_alive(v: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    v.map_or(Ok(None), |v| KeepAlive::from_json(v).map_err(ApiError::bad))
}

/// `options.num_ctx`, when given; other options are model parameters Quiver does not use.
fn num_ctx(options: Option<&Map<String, Value>>) -> Result<Option<usize>, ApiError> {
    let bad = || ApiError::bad("option \"num_ctx\" must be of type integer");
    match options.and_then(|o| o.get("num_ctx")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i.max(0) as usize))
            } else if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.is_finite()) {
                Ok(Some(f.max(0.0).min(usize::MAX as f64) as usize))
            } else {
                Err(bad())
            }
        }
        Some(_) => Err(bad()),
    }
}

#[derive(Deserialize)]
struct EmbedRequest<'a> {
    model: Option<String>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    truncate: Option<bool>,
    dimensions: Option<i64>,
    options: Option<Map<String, Value>>,
    keep_alive: Option<Value>,
}

/// Normalises one vector, then applies `dimensions` (keep the first N, normalise again).
fn finish_one(v: &mut Vec<f32>, dimensions: Option<i64>) {
    embed::normalize(v);
    if let Some(d) = dimensions.filter(|&d| d > 0) {
        embed::truncate_dims(v, d as usize);
    }
}

/// The answer is streamed: each chunk of inputs is embedded and written before the next one
/// is tokenised (see [`super::batches`]), so memory does not grow with the number of inputs.
fn embed_handler(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let started = Instant::now();
    let r: EmbedRequest = parse_json(body)?;
    let ka = keep_alive(r.keep_alive.as_ref())?;
    let texts = Texts::parse(r.input, ctx.max_inputs, false)?;
    let model = required_model(r.model)?;
    let num_ctx = num_ctx(r.options.as_ref())?;
    let mut job = EmbedJob::start(
        &ctx.engine,
        &model,
        texts,
        r.truncate.unwrap_or(true),
        num_ctx,
        ka,
    )?;
    if job.is_empty() {
        return Ok(Response::json(
            200,
            &json!({ "model": model, "embeddings": [] }),
        ));
    }
    job.embed_first()?;
    let (dims, metrics) = (r.dimensions, ctx.metrics.clone());
    Ok(Response::stream(200, JSON, move |w| {
        w.write_all(b"{\"model\":")?;
        serde_json::to_writer(&mut *w, &model)?;
        w.write_all(b",\"embeddings\":[")?;
        let (inputs, tokens, load_ns) = (job.len(), job.tokens, job.load_duration.as_nanos());
        let took = job.run(|i, mut v| {
            if i > 0 {
                w.write_all(b",")?;
            }
            finish_one(&mut v, dims);
            Ok(serde_json::to_writer(&mut *w, &v)?)
        })?;
        metrics.embedded(inputs, tokens, took);
        write!(
            w,
            "],\"total_duration\":{},\"load_duration\":{load_ns},\"prompt_eval_count\":{tokens}}}",
            started.elapsed().as_nanos()
        )
    }))
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    model: Option<String>,
    prompt: Option<String>,
    options: Option<Map<String, Value>>,
    keep_alive: Option<Value>,
}

fn embeddings_handler(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let r: EmbeddingsRequest = parse_json(body)?;
    let ka = keep_alive(r.keep_alive.as_ref())?;
    let model = required_model(r.model)?;
    let num_ctx = num_ctx(r.options.as_ref())?;
    let prompt = r.prompt.unwrap_or_default();
    let texts = Texts::one(&prompt);
    let job = EmbedJob::start(&ctx.engine, &model, texts, true, num_ctx, ka)?;
    let mut vector = Vec::new();
    job.run(|_, v| {
        vector = v;
        Ok(())
    })
    .map_err(|e| match e {
        RunError::Model(e) => e,
        RunError::Write(e) => ApiError::new(500, e.to_string()),
    })?;
    // Ollama answers float64s of its float32 vector; clients read either.
    let embedding: Vec<f64> = vector.into_iter().map(f64::from).collect();
    Ok(Response::json(200, &json!({ "embedding": embedding })))
}

fn ps_handler(ctx: &Ctx) -> Response {
    let models: Vec<Value> = ctx
        .engine
        .ps()
        .into_iter()
        .map(|m| {
            json!({
                "name": m.name,
                "model": m.name,
                "size": m.size,
                "digest": m.digest,
                "details": m.details,
                "expires_at": format::rfc3339_local(m.expires_at),
                "size_vram": m.size_vram,
                "context_length": m.context_length,
            })
        })
        .collect();
    Response::json(200, &json!({ "models": models }))
}

fn list(ctx: &Ctx) -> Result<Vec<ModelEntry>, ApiError> {
    let mut entries = ctx
        .engine
        .store()
        .list()
        .map_err(|e| ApiError::new(500, e.to_string()))?;
    entries.sort_by_key(|e| std::cmp::Reverse(e.modified));
    Ok(entries)
}

fn tags_handler(ctx: &Ctx) -> Result<Response, ApiError> {
    let models: Vec<Value> = list(ctx)?
        .into_iter()
        .filter_map(|m| {
            // A blob that cannot be read is left out rather than failing the whole list.
            let details = ctx.engine.details(&m).ok()?;
            let name = m.name.display_short();
            Some(json!({
                "name": name,
                "model": name,
                "modified_at": format::rfc3339_local(m.modified),
                "size": m.size,
                "digest": m.digest,
                "details": details,
            }))
        })
        .collect();
    Ok(Response::json(200, &json!({ "models": models })))
}

#[derive(Deserialize)]
struct ShowRequest {
    model: Option<String>,
    /// The older field name for `model`.
    name: Option<String>,
    #[serde(default)]
    verbose: bool,
}

fn show_handler(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let r: ShowRequest = parse_json(body)?;
    let model = required_model(r.model.filter(|m| !m.is_empty()).or(r.name))?;
    let entry = ctx
        .engine
        .store()
        .resolve(&model)
        .map_err(|e| ApiError::from_engine(crate::engine::EngineError::Store(e), &model))?;
    let file = entry
        .open()
        .map_err(|e| ApiError::new(500, e.to_string()))?;
    let h = &file.header;
    let max_array = if r.verbose { usize::MAX } else { 64 };
    let mut info = Map::new();
    for (k, v) in &h.metadata {
        info.insert(k.clone(), v.to_json(max_array));
    }
    info.entry("general.parameter_count")
        .or_insert_with(|| json!(h.parameter_count()));
    let details = crate::engine::Details::from_header(h);
    let from = match &entry.source {
        ModelSource::File(p) => p.display().to_string(),
        ModelSource::Bundled(_) => entry.name.display_short(),
    };
    let modelfile = format!(
        "# Modelfile generated by \"ollama show\"\n# To build a new Modelfile based on this, replace FROM with:\n# FROM {}\n\nFROM {from}\n",
        entry.name.display_short()
    );
    Ok(Response::json(
        200,
        &json!({
            "license": "",
            "modelfile": modelfile,
            "parameters": "",
            "template": "",
            "details": details,
            "model_info": info,
            "capabilities": ["embedding"],
            "modified_at": format::rfc3339_local(entry.modified),
        }),
    ))
}

#[derive(Deserialize)]
struct OpenAiEmbedRequest<'a> {
    model: Option<String>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    encoding_format: Option<String>,
    dimensions: Option<i64>,
}

/// Streamed like [`embed_handler`].
fn openai_embeddings_handler(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let r: OpenAiEmbedRequest = parse_json(body)?;
    // As Ollama's OpenAI layer: a missing input or an empty list is an error, "" is one input.
    let texts = Texts::parse(r.input, ctx.max_inputs, true)?;
    if texts.is_empty() {
        return Err(ApiError::bad("invalid input"));
    }
    let base64 = match r.encoding_format.as_deref() {
        None | Some("") | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "invalid encoding_format {other:?}: expected \"float\" or \"base64\""
            )))
        }
    };
    let model = required_model(r.model)?;
    let mut job = EmbedJob::start(&ctx.engine, &model, texts, true, None, None)?;
    job.embed_first()?;
    let (dims, metrics) = (r.dimensions, ctx.metrics.clone());
    Ok(Response::stream(200, JSON, move |w| {
        w.write_all(b"{\"object\":\"list\",\"data\":[")?;
        let (inputs, tokens) = (job.len(), job.tokens);
        let took = job.run(|i, mut v| {
            if i > 0 {
                w.write_all(b",")?;
            }
            finish_one(&mut v, dims);
            w.write_all(b"{\"object\":\"embedding\",\"embedding\":")?;
            if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                serde_json::to_writer(&mut *w, &text)?;
            } else {
                serde_json::to_writer(&mut *w, &v)?;
            }
            write!(w, ",\"index\":{i}}}")
        })?;
        metrics.embedded(inputs, tokens, took);
        w.write_all(b"],\"model\":")?;
        serde_json::to_writer(&mut *w, &model)?;
        write!(
            w,
            ",\"usage\":{{\"prompt_tokens\":{tokens},\"total_tokens\":{tokens}}}}}"
        )
    }))
}

fn openai_models_handler(ctx: &Ctx) -> Result<Response, ApiError> {
    let data: Vec<Value> = list(ctx)?
        .into_iter()
        .map(|m| {
            let created = m.modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            json!({ "id": m.name.display_short(), "object": "model", "created": created, "owned_by": m.name.namespace })
        })
        .collect();
    Ok(Response::json(
        200,
        &json!({ "object": "list", "data": data }),
    ))
}
