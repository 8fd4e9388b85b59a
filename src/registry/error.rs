//! What can go wrong talking to a registry, worded as Ollama words it where Ollama has words.

use crate::store::StoreError;
use std::fmt;
use std::time::Duration;

#[derive(Debug)]
pub enum RegistryError {
    Store(StoreError),
    /// An `http://` name without `insecure`.
    InsecureProtocol,
    /// The registry answered 404.
    NotFound,
    /// Another unexpected status, with the registry's own message when it sent one.
    Status(u16, String),
    /// The registry asked for credentials Quiver cannot give (or rejected the token it got).
    Unauthorized(String),
    /// Could not connect, or the connection broke (retries exhausted).
    Transport(String),
    /// Nothing arrived for this long.
    Stalled(Duration),
    /// The bytes received do not hash to the digest asked for; they were discarded.
    DigestMismatch {
        want: String,
        got: String,
    },
    /// The registry sent more bytes than the manifest gave the blob; they were discarded.
    Oversized(String),
    /// The manifest is not one Quiver can install.
    BadManifest(String),
    /// Stopped on request (Ctrl-C, the client went away); partial files stay for a resume.
    Cancelled,
    Io(String),
    /// Which step failed, around the error itself (`pull model manifest: …`).
    Context(&'static str, Box<RegistryError>),
}

impl RegistryError {
    pub fn context(self, what: &'static str) -> RegistryError {
        RegistryError::Context(what, Box::new(self))
    }

    /// The error inside any context.
    pub fn root(&self) -> &RegistryError {
        match self {
            RegistryError::Context(_, e) => e.root(),
            e => e,
        }
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Store(e) => write!(f, "{e}"),
            RegistryError::InsecureProtocol => write!(f, "insecure protocol http"),
            RegistryError::NotFound => write!(f, "file does not exist"),
            RegistryError::Status(code, msg) if msg.is_empty() => {
                write!(f, "registry answered with status {code}")
            }
            RegistryError::Status(code, msg) => write!(f, "{msg} (status {code})"),
            RegistryError::Unauthorized(msg) => write!(f, "unauthorized: {msg}"),
            RegistryError::Transport(msg) => write!(f, "{msg}"),
            RegistryError::Stalled(d) => write!(
                f,
                "the registry sent nothing for {:.0?}, giving up (run the command again to resume)",
                d
            ),
            RegistryError::DigestMismatch { want, got } => write!(
                f,
                "digest mismatch, file must be downloaded again: want {want}, got {got}"
            ),
            RegistryError::Oversized(msg) => write!(f, "{msg}"),
            RegistryError::BadManifest(msg) => write!(f, "invalid manifest: {msg}"),
            RegistryError::Cancelled => {
                write!(f, "interrupted (run the command again to resume)")
            }
            RegistryError::Io(msg) => write!(f, "{msg}"),
            RegistryError::Context(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for RegistryError {}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        RegistryError::Store(e)
    }
}
