//! HTTP to one registry: URLs for a model name, the bearer-token challenge, status → error.
//!
//! ureq (blocking, rustls for https) fits the rest of Quiver, which has no async runtime; it
//! follows redirects itself (blob GETs are usually sent on to a CDN) and drops the
//! Authorization header when it does.

use super::{Options, RegistryError};
use crate::store::ModelName;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

/// Registry error bodies and token answers are small; more than this is not one.
const MAX_SMALL_BODY: u64 = 1 << 20;

pub(crate) struct Transport {
    agent: ureq::Agent,
    /// `https://host` or `http://host`.
    base: String,
    /// `namespace/model`, the repository path.
    repo: String,
    /// The bearer token from the last challenge, reused until the registry refuses it.
    token: Mutex<Option<String>>,
    stall: Duration,
}

impl Transport {
    pub fn new(name: &ModelName, opts: &Options) -> Transport {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30).min(opts.stall_timeout * 4))
            .timeout_read(opts.stall_timeout)
            .timeout_write(opts.stall_timeout)
            .redirects(10)
            .user_agent(concat!("quiver/", env!("CARGO_PKG_VERSION")))
            .build();
        let scheme = if opts.insecure { "http" } else { "https" };
        Transport {
            agent,
            base: format!("{scheme}://{}", name.host),
            repo: format!("{}/{}", name.namespace, name.model),
            token: Mutex::new(None),
            stall: opts.stall_timeout,
        }
    }

    /// `<base>/v2/<namespace>/<model>/<rest>`.
    pub fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.repo)
    }

    /// An upload `Location` (absolute, or a path on the registry) as a full URL.
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}/{}", self.base, location.trim_start_matches('/'))
        }
    }

    /// Sends a request built by `send` (which may be called a second time, after a bearer
    /// challenge, so it must be able to produce its body again). Any status ≥ 400 is an error.
    /// (`send`'s error is boxed: ureq's holds a whole response.)
    pub fn call(
        &self,
        method: &str,
        url: &str,
        send: &mut dyn FnMut(ureq::Request) -> Result<ureq::Response, Box<ureq::Error>>,
    ) -> Result<ureq::Response, RegistryError> {
        let mut challenged = false;
        loop {
            let mut req = self.agent.request(method, url);
            if let Some(t) = self
                .token
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            match send(req).map_err(|e| *e) {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if !challenged => {
                    challenged = true;
                    let header = resp.header("www-authenticate").unwrap_or("").to_string();
                    let token = self.fetch_token(&header)?;
                    *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
                }
                Err(ureq::Error::Status(401, resp)) => {
                    return Err(RegistryError::Unauthorized(error_message(resp)))
                }
                Err(ureq::Error::Status(404, _)) => return Err(RegistryError::NotFound),
                Err(ureq::Error::Status(code, resp)) => {
                    return Err(RegistryError::Status(code, error_message(resp)))
                }
                Err(ureq::Error::Transport(t)) => return Err(self.transport_error(t)),
            }
        }
    }

    /// A ureq transport failure as a stall (read timeout) or a connection error.
    pub fn transport_error(&self, t: ureq::Transport) -> RegistryError {
        let text = t.to_string();
        let timed_out = std::error::Error::source(&t)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(is_timeout)
            || text.contains("timed out");
        if timed_out {
            RegistryError::Stalled(self.stall)
        } else {
            RegistryError::Transport(text)
        }
    }

    pub fn stall(&self) -> Duration {
        self.stall
    }

    /// Answers a `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge with an
    /// anonymous token request, as `docker pull` does for public images.
    fn fetch_token(&self, challenge: &str) -> Result<String, RegistryError> {
        let Some(params) = challenge
            .strip_prefix("Bearer ")
            .or_else(|| challenge.strip_prefix("bearer "))
        else {
            let scheme = challenge.split(' ').next().unwrap_or("");
            return Err(RegistryError::Unauthorized(if scheme.is_empty() {
                "the registry asks for credentials".to_string()
            } else {
                format!("the registry asks for {scheme} credentials, which quiver does not send")
            }));
        };
        let params = parse_challenge(params);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let realm = get("realm").ok_or_else(|| {
            RegistryError::Unauthorized("bearer challenge without a realm".into())
        })?;
        let mut req = self.agent.get(realm);
        for k in ["service", "scope"] {
            if let Some(v) = get(k) {
                req = req.query(k, v);
            }
        }
        let resp = req.call().map_err(|e| match e {
            ureq::Error::Status(code, r) => RegistryError::Unauthorized(format!(
                "token request answered {code}: {}",
                error_message(r)
            )),
            ureq::Error::Transport(t) => self.transport_error(t),
        })?;
        let mut body = String::new();
        resp.into_reader()
            .take(MAX_SMALL_BODY)
            .read_to_string(&mut body)
            .map_err(|e| RegistryError::Transport(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| RegistryError::Unauthorized(format!("token answer: {e}")))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Unauthorized("token answer without a token".into()))
    }
}

pub(crate) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// `realm="…",service="…"` → pairs (values may be quoted; commas inside quotes kept).
fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_string();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start_matches([',', ' ']);
        out.push((key, value));
    }
    out
}

/// The registry's `{"errors":[{"code","message"}]}` as one line, or the body's first line.
fn error_message(resp: ureq::Response) -> String {
    let mut body = String::new();
    let _ = resp
        .into_reader()
        .take(MAX_SMALL_BODY)
        .read_to_string(&mut body);
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
        if let Some(errors) = v.get("errors").and_then(|e| e.as_array()) {
            let msgs: Vec<String> = errors
                .iter()
                .filter_map(|e| {
                    let msg = e.get("message").and_then(|m| m.as_str())?;
                    Some(msg.to_string())
                })
                .collect();
            if !msgs.is_empty() {
                return msgs.join("; ");
            }
        }
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return e.to_string();
        }
    }
    body.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_challenge;

    #[test]
    fn challenge_parameters() {
        let p = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
    }
}
