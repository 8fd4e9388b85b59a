//! CORS as Ollama does it: `OLLAMA_ORIGINS` (comma-separated, `*` wildcards) on top of the
//! loopback origins and the desktop app schemes; a request whose `Origin` is not allowed gets
//! 403; `OPTIONS` preflights get 204 with the allowed methods and headers.

pub const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS";
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, \
     X-Stainless-Lang, X-Stainless-Package-Version, X-Stainless-Os, X-Stainless-Arch, \
     X-Stainless-Retry-Count, X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Async, \
     X-Stainless-Helper-Method, X-Stainless-Poll-Helper, X-Stainless-Custom-Poll-Interval, \
     X-Stainless-Timeout";

#[derive(Clone, Debug)]
pub struct Origins {
    patterns: Vec<String>,
}

impl Origins {
    /// The defaults plus `extra` (the entries of `OLLAMA_ORIGINS`).
    pub fn new(extra: &[String]) -> Origins {
        let mut patterns = Vec::new();
        for host in ["localhost", "127.0.0.1", "[::1]", "0.0.0.0"] {
            for scheme in ["http", "https"] {
                patterns.push(format!("{scheme}://{host}"));
                patterns.push(format!("{scheme}://{host}:*"));
            }
        }
        for scheme in ["app", "file", "tauri", "vscode-webview", "vscode-file"] {
            patterns.push(format!("{scheme}://*"));
        }
        patterns.extend(extra.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
        Origins { patterns }
    }

    /// Whether a request from `origin` may be served. `host` is the request's `Host` header:
    /// a same-origin request always may.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if let Some(h) = host {
            if origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(h) {
                return true;
            }
        }
        self.patterns.iter().any(|p| matches(p, origin))
    }
}

/// `*` alone matches everything; otherwise one `*` stands for any run of characters.
fn matches(pattern: &str, origin: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.split_once('*') {
        None => pattern.eq_ignore_ascii_case(origin),
        Some((pre, suf)) => {
            origin.len() >= pre.len() + suf.len()
                && origin[..pre.len()].eq_ignore_ascii_case(pre)
                && origin.is_char_boundary(origin.len() - suf.len())
                && origin[origin.len() - suf.len()..].eq_ignore_ascii_case(suf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_allowed_by_default_others_not() {
        let o = Origins::new(&[]);
        assert!(o.allows("http://localhost", None));
        assert!(o.allows("http://localhost:3000", None));
        assert!(o.allows("https://127.0.0.1:8443", None));
        assert!(o.allows("http://[::1]:5173", None));
        assert!(o.allows("app://anything", None));
        assert!(!o.allows("http://evil.example", None));
        assert!(!o.allows("http://localhost.evil.example", None));
        assert!(o.allows("http://myhost:11434", Some("myhost:11434")));
    }

    #[test]
    fn extra_origins_and_wildcards() {
        let o = Origins::new(&["https://*.example.com".into(), " http://box ".into()]);
        assert!(o.allows("https://app.example.com", None));
        assert!(!o.allows("https://example.org", None));
        assert!(o.allows("http://box", None));
        assert!(Origins::new(&["*".into()]).allows("http://anything", None));
    }
}
