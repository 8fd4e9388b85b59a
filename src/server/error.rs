//! Errors as the HTTP layer answers them: a status and a message, written as Ollama's
//! `{"error": msg}` or, under `/v1`, OpenAI's `{"error": {"message", "type"}}`.

use super::http::Response;
use crate::embed::EmbedError;
use crate::engine::EngineError;
use crate::store::StoreError;
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    /// Maps an engine error for a request that named `model`.
    pub fn from_engine(e: EngineError, model: &str) -> ApiError {
        match e {
            EngineError::Store(StoreError::NotFound(_)) => {
                ApiError::new(404, format!("model {model:?} not found, try pulling it first"))
            }
            EngineError::Store(e @ StoreError::InvalidName(_)) => ApiError::bad(e.to_string()),
            EngineError::Store(e) => ApiError::new(500, e.to_string()),
            e @ EngineError::CannotEmbed { .. } => ApiError::bad(e.to_string()),
            e @ EngineError::Io(_) => ApiError::new(500, e.to_string()),
            e @ (EngineError::Busy | EngineError::ShuttingDown) => ApiError::new(503, e.to_string()),
            EngineError::Embed(e) => ApiError::from(e),
        }
    }

    pub fn ollama(&self) -> Response {
        Response::json(self.status, &json!({ "error": self.message }))
    }

    pub fn openai(&self) -> Response {
        let kind = match self.status {
            400 | 405 | 413 => "invalid_request_error",
            404 => "not_found_error",
            _ => "api_error",
        };
        Response::json(self.status, &json!({ "error": { "message": self.message, "type": kind, "param": null, "code": null } }))
    }

    /// The shape the path's API family uses.
    pub fn render(&self, path: &str) -> Response {
        if path.starts_with("/v1/") {
            self.openai()
        } else {
            self.ollama()
        }
    }
}

impl From<EmbedError> for ApiError {
    fn from(e: EmbedError) -> ApiError {
        match e {
            EmbedError::Model(m) => ApiError::new(500, m),
            e => ApiError::bad(e.to_string()),
        }
    }
}
