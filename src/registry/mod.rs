//! The registry protocol: Docker Registry HTTP API v2 with Ollama's media types, so that
//! `quiver pull` / `quiver push` (and `/api/pull`, `/api/push`) talk to registry.ollama.ai or
//! any private distribution registry as Ollama does.
//!
//! Pulls stream every blob to `blobs/sha256-<hex>-partial` while hashing it, resume a partial
//! file with an HTTP `Range` request, and move a blob into place only once its sha256 matches;
//! the manifest is written last, so an interrupted pull never shows a model to `list` or
//! `serve`. Everything on disk goes through [`crate::store`].

mod error;
#[cfg(unix)]
mod parts;
mod progress;
mod pull;
mod push;
mod transport;

pub use error::RegistryError;
pub use progress::Progress;
pub use pull::pull;
pub use push::push;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How a pull or push talks to the registry.
#[derive(Clone, Debug)]
pub struct Options {
    /// Plain HTTP instead of HTTPS (Ollama's `insecure`).
    pub insecure: bool,
    /// How long the registry may send nothing before the transfer fails as stalled.
    pub stall_timeout: Duration,
    /// Set from elsewhere (Ctrl-C, a client that hung up) to stop between reads; what was
    /// downloaded stays as a partial file for the next pull.
    pub cancel: Arc<AtomicBool>,
    /// Blobs of at least this many bytes are fetched as parallel byte ranges. `None`: 64 MiB,
    /// except from a loopback registry, where one stream is faster (measured with
    /// scripts/bench_pull.sh: ranges are hashed after they land instead of on the way).
    pub parallel_min: Option<u64>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            insecure: false,
            stall_timeout: Duration::from_secs(30),
            cancel: Arc::new(AtomicBool::new(false)),
            parallel_min: None,
        }
    }
}

impl Options {
    /// Defaults with `QUIVER_PULL_TIMEOUT` (seconds of silence before a stalled registry is
    /// given up on) and `QUIVER_PULL_PARALLEL_MIN` (bytes) applied when set.
    pub fn from_env(insecure: bool) -> Options {
        let mut o = Options {
            insecure,
            ..Options::default()
        };
        if let Some(secs) = std::env::var("QUIVER_PULL_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
        {
            o.stall_timeout = Duration::from_secs_f64(secs);
        }
        if let Some(bytes) = std::env::var("QUIVER_PULL_PARALLEL_MIN")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            o.parallel_min = Some(bytes.max(1));
        }
        o
    }

    /// The size from which blobs from `host` come as parallel ranges.
    fn parallel_min_for(&self, host: &str) -> u64 {
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let loopback = name == "localhost"
            || name == "[::1]"
            || name
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback());
        self.parallel_min
            .unwrap_or(if loopback { u64::MAX } else { 64 << 20 })
    }

    fn cancelled(&self) -> Result<(), RegistryError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(RegistryError::Cancelled)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Options;

    #[test]
    fn ranges_by_default_only_from_remote_registries() {
        let o = Options::default();
        for local in ["127.0.0.1:5000", "localhost", "localhost:5000", "127.1.2.3"] {
            assert_eq!(o.parallel_min_for(local), u64::MAX, "{local}");
        }
        for remote in ["registry.ollama.ai", "10.0.0.2:5000", "reg.example:443"] {
            assert_eq!(o.parallel_min_for(remote), 64 << 20, "{remote}");
        }
        let set = Options {
            parallel_min: Some(1),
            ..Options::default()
        };
        assert_eq!(set.parallel_min_for("127.0.0.1:5000"), 1);
    }
}
