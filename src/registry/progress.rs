//! Progress events, shaped as Ollama's `ProgressResponse` so the server can stream them as they
//! are and the CLI can draw bars from them.

use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
}

impl Progress {
    pub fn status(s: impl Into<String>) -> Progress {
        Progress {
            status: s.into(),
            digest: None,
            total: None,
            completed: None,
        }
    }

    /// `pulling 1234567890ab` / `pushing …`: Ollama names a layer by 12 hex digits.
    pub fn layer(verb: &str, digest: &str, total: u64, completed: u64) -> Progress {
        let short: String = digest
            .strip_prefix("sha256:")
            .unwrap_or(digest)
            .chars()
            .take(12)
            .collect();
        Progress {
            status: format!("{verb} {short}"),
            digest: Some(digest.to_string()),
            total: Some(total),
            completed: Some(completed),
        }
    }
}

/// Lets through one byte-count update per interval (a 600 MB blob read in 1 MiB pieces would
/// otherwise send hundreds of events a second to a terminal or a client).
pub(crate) struct Throttle {
    last: Option<Instant>,
    every: Duration,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle {
            last: None,
            every: Duration::from_millis(100),
        }
    }

    pub fn ready(&mut self) -> bool {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.every => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}
