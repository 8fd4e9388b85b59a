//! Counters and histograms for `GET /metrics`, in Prometheus' text format (version 0.0.4).
//! Updated by the connection layer and the workers; a Mutex per family is plenty at the rate
//! requests finish (each costs a forward pass).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds in seconds of the latency buckets.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the inputs-per-request and tokens-per-request buckets.
const COUNT_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
];

#[derive(Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        for (c, b) in self.counts.iter_mut().zip(bounds) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in bounds.iter().enumerate() {
            let c = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

#[derive(Default)]
pub struct Metrics {
    pub open_connections: AtomicUsize,
    pub in_flight: AtomicUsize,
    /// (route, status) → count.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    queue_wait: Mutex<Histogram>,
    inputs: Mutex<Histogram>,
    tokens: Mutex<Histogram>,
    tokens_total: AtomicU64,
    embed_seconds_total: Mutex<f64>,
}

/// What a handler knows about its request that the log line wants (set on the worker's
/// thread, taken after the answer is written).
#[derive(Default, Clone, Debug, PartialEq)]
pub struct Note {
    pub model: String,
    pub inputs: usize,
    pub tokens: usize,
}

thread_local! {
    static NOTE: std::cell::RefCell<Option<Note>> = const { std::cell::RefCell::new(None) };
}

/// Records the model, inputs and tokens of the request this thread is handling.
pub fn note(model: &str, inputs: usize, tokens: usize) {
    NOTE.with(|n| {
        *n.borrow_mut() = Some(Note {
            model: model.to_string(),
            inputs,
            tokens,
        })
    });
}

/// Takes this thread's note (none when the handler left none).
pub fn take_note() -> Option<Note> {
    NOTE.with(|n| n.borrow_mut().take())
}

/// Known routes keep their name; anything else is one label, so a scanner cannot grow the
/// label set without bound.
fn route_label(path: &str) -> &str {
    const KNOWN: &[&str] = &[
        "/",
        "/api/version",
        "/api/embed",
        "/api/embeddings",
        "/api/ps",
        "/api/tags",
        "/api/show",
        "/v1/embeddings",
        "/v1/models",
        "/metrics",
    ];
    let p = if path == "/" {
        path
    } else {
        path.strip_suffix('/').unwrap_or(path)
    };
    KNOWN.iter().find(|k| **k == p).copied().unwrap_or("other")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn request(&self, path: &str, status: u16, latency: Duration) {
        let route = route_label(path).to_string();
        *lock(&self.requests)
            .entry((route.clone(), status))
            .or_insert(0) += 1;
        lock(&self.latency)
            .entry(route)
            .or_default()
            .observe(LATENCY_BUCKETS, latency.as_secs_f64());
    }

    /// An answer the connection layer gave itself (malformed, slow, too large).
    pub fn early_answer(&self, status: u16) {
        *lock(&self.requests)
            .entry(("connection".to_string(), status))
            .or_insert(0) += 1;
    }

    pub fn queue_wait(&self, d: Duration) {
        lock(&self.queue_wait).observe(LATENCY_BUCKETS, d.as_secs_f64());
    }

    /// One embedding request's size and the time its model work took.
    pub fn embedded(&self, inputs: usize, tokens: usize, took: Duration) {
        lock(&self.inputs).observe(COUNT_BUCKETS, inputs as f64);
        lock(&self.tokens).observe(COUNT_BUCKETS, tokens as f64);
        self.tokens_total
            .fetch_add(tokens as u64, Ordering::Relaxed);
        *lock(&self.embed_seconds_total) += took.as_secs_f64();
    }

    /// The text exposition. `loaded_models` and the RSS are read by the caller at scrape time.
    pub fn render(&self, loaded_models: usize) -> String {
        let mut o = String::new();
        o.push_str("# HELP quiver_requests_total HTTP requests answered, by route and status.\n");
        o.push_str("# TYPE quiver_requests_total counter\n");
        for ((route, code), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                o,
                "quiver_requests_total{{route=\"{route}\",code=\"{code}\"}} {n}"
            );
        }
        o.push_str("# HELP quiver_request_duration_seconds Time from a complete request to its answer written.\n");
        o.push_str("# TYPE quiver_request_duration_seconds histogram\n");
        for (route, h) in lock(&self.latency).iter() {
            h.render(
                &mut o,
                "quiver_request_duration_seconds",
                &format!("route=\"{route}\""),
                LATENCY_BUCKETS,
            );
        }
        o.push_str(
            "# HELP quiver_queue_wait_seconds Time a complete request waited for a worker.\n",
        );
        o.push_str("# TYPE quiver_queue_wait_seconds histogram\n");
        lock(&self.queue_wait).render(&mut o, "quiver_queue_wait_seconds", "", LATENCY_BUCKETS);
        o.push_str("# HELP quiver_request_inputs Inputs (sequences) per embedding request.\n");
        o.push_str("# TYPE quiver_request_inputs histogram\n");
        lock(&self.inputs).render(&mut o, "quiver_request_inputs", "", COUNT_BUCKETS);
        o.push_str("# HELP quiver_request_tokens Tokens per embedding request.\n");
        o.push_str("# TYPE quiver_request_tokens histogram\n");
        lock(&self.tokens).render(&mut o, "quiver_request_tokens", "", COUNT_BUCKETS);
        let tokens = self.tokens_total.load(Ordering::Relaxed);
        let secs = *lock(&self.embed_seconds_total);
        o.push_str(
            "# HELP quiver_tokens_total Tokens embedded.\n# TYPE quiver_tokens_total counter\n",
        );
        let _ = writeln!(o, "quiver_tokens_total {tokens}");
        o.push_str("# HELP quiver_embed_seconds_total Time spent embedding (per request, summed); tokens_total over it is tokens/s.\n# TYPE quiver_embed_seconds_total counter\n");
        let _ = writeln!(o, "quiver_embed_seconds_total {secs}");
        let gauges = [
            (
                "quiver_open_connections",
                "Connections held by the connection layer (not counting those with a worker).",
                self.open_connections.load(Ordering::Relaxed) as u64,
            ),
            (
                "quiver_requests_in_flight",
                "Requests queued for or running on a worker.",
                self.in_flight.load(Ordering::Relaxed) as u64,
            ),
            (
                "quiver_loaded_models",
                "Models in memory.",
                loaded_models as u64,
            ),
            (
                "quiver_resident_memory_bytes",
                "Resident set size of the process.",
                rss_bytes().unwrap_or(0),
            ),
        ];
        let heap = heap_bytes();
        let gauges = gauges.into_iter().chain(
            heap.map(|(used, free)| {
                [
                    (
                        "quiver_heap_in_use_bytes",
                        "Bytes the allocator has handed out and not had back (glibc mallinfo2).",
                        used,
                    ),
                    (
                        "quiver_heap_free_bytes",
                        "Bytes the allocator holds free but has not returned to the system.",
                        free,
                    ),
                ]
            })
            .into_iter()
            .flatten(),
        );
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        o
    }
}

/// The process's resident set, from /proc (Linux); `None` elsewhere.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

/// The allocator's bytes in use and held free, from glibc's `mallinfo2`; `None` with any other
/// libc. In use flat while the resident set climbs means fragmentation, not a leak.
pub fn heap_bytes() -> Option<(u64, u64)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters (under its own locks).
        let m = unsafe { libc::mallinfo2() };
        Some(((m.uordblks + m.hblkhd) as u64, m.fordblks as u64))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_routes_bounded() {
        let m = Metrics::default();
        m.request("/api/embed", 200, Duration::from_millis(3));
        m.request("/api/embed/", 200, Duration::from_millis(300));
        m.request("/../etc/passwd", 404, Duration::from_millis(1));
        let text = m.render(1);
        assert!(text.contains("quiver_requests_total{route=\"/api/embed\",code=\"200\"} 2"));
        assert!(text.contains("quiver_requests_total{route=\"other\",code=\"404\"} 1"));
        assert!(text.contains(
            "quiver_request_duration_seconds_bucket{route=\"/api/embed\",le=\"0.005\"} 1"
        ));
        assert!(text
            .contains("quiver_request_duration_seconds_bucket{route=\"/api/embed\",le=\"0.5\"} 2"));
        assert!(text.contains("quiver_loaded_models 1"));
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            let heap = text
                .lines()
                .find_map(|l| l.strip_prefix("quiver_heap_in_use_bytes "));
            assert!(heap.unwrap().parse::<u64>().unwrap() > 0);
        }
    }
}
