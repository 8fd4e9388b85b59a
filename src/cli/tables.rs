//! `quiver list` and `quiver ps`: ask the running server, print Ollama's tables.

use super::client::get_json;
use super::format::{human_bytes, human_time, parse_rfc3339};
use super::CliResult;
use serde_json::Value;
use std::time::SystemTime;

pub fn list() -> CliResult {
    let json = get_json("/api/tags")?;
    print!("{}", list_table(&json, SystemTime::now()));
    Ok(())
}

pub fn ps() -> CliResult {
    let json = get_json("/api/ps")?;
    print!("{}", ps_table(&json, SystemTime::now()));
    Ok(())
}

fn models(json: &Value) -> &[Value] {
    json.get("models")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn str_of<'a>(m: &'a Value, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The first 12 hex digits of a digest, as Ollama shows an ID.
fn short_id(m: &Value) -> String {
    let d = str_of(m, "digest");
    d.strip_prefix("sha256:")
        .unwrap_or(d)
        .chars()
        .take(12)
        .collect()
}

fn when(m: &Value, key: &str, now: SystemTime, zero: &str) -> String {
    parse_rfc3339(str_of(m, key)).map_or_else(|| zero.to_string(), |t| human_time(t, now))
}

/// `NAME ID SIZE MODIFIED`, as `ollama list`.
pub fn list_table(json: &Value, now: SystemTime) -> String {
    let rows = models(json)
        .iter()
        .map(|m| {
            vec![
                str_of(m, "name").to_string(),
                short_id(m),
                human_bytes(m.get("size").and_then(Value::as_u64).unwrap_or(0)),
                when(m, "modified_at", now, "Never"),
            ]
        })
        .collect();
    table(&["NAME", "ID", "SIZE", "MODIFIED"], rows)
}

/// `NAME ID SIZE PROCESSOR UNTIL`, as `ollama ps`.
pub fn ps_table(json: &Value, now: SystemTime) -> String {
    let rows = models(json)
        .iter()
        .map(|m| {
            let size = m.get("size").and_then(Value::as_u64).unwrap_or(0);
            let vram = m
                .get("size_vram")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(size);
            vec![
                str_of(m, "name").to_string(),
                short_id(m),
                human_bytes(size),
                processor(size, vram),
                when(m, "expires_at", now, "Never"),
            ]
        })
        .collect();
    table(&["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"], rows)
}

/// Where the model's memory is: `100% CPU`, `100% GPU` or a split like `48%/52% CPU/GPU`.
fn processor(size: u64, vram: u64) -> String {
    if vram == 0 || size == 0 {
        "100% CPU".to_string()
    } else if vram >= size {
        "100% GPU".to_string()
    } else {
        let gpu = (vram as f64 / size as f64 * 100.0).round() as u64;
        format!("{}%/{gpu}% CPU/GPU", 100 - gpu)
    }
}

/// Left-aligned columns three spaces apart (Go's tabwriter as Ollama configures it).
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_table_like_ollama() {
        let now = parse_rfc3339("2026-11-24T12:00:00Z").unwrap();
        let json = serde_json::json!({"models": [
            {"name": "all-minilm:latest", "digest": "1b226e2802dbabcdef", "size": 45960996u64,
             "modified_at": "2026-11-10T12:00:00Z"},
            {"name": "nomic-embed-text:latest", "digest": "sha256:0a109f422b47aaaa", "size": 274302450u64,
             "modified_at": "2026-11-24T11:55:00+00:00"},
        ]});
        let t = list_table(&json, now);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "NAME                      ID             SIZE     MODIFIED"
        );
        assert_eq!(
            lines[1],
            "all-minilm:latest         1b226e2802db   45 MB    2 weeks ago"
        );
        assert_eq!(
            lines[2],
            "nomic-embed-text:latest   0a109f422b47   274 MB   5 minutes ago"
        );
    }

    #[test]
    fn ps_table_like_ollama() {
        let now = parse_rfc3339("2026-11-24T12:00:00Z").unwrap();
        let json = serde_json::json!({"models": [
            {"name": "all-minilm:latest", "digest": "1b226e2802dbabcdef", "size": 46223616u64, "size_vram": 0,
             "expires_at": "2026-11-24T05:04:30-07:00"},
        ]});
        let t = ps_table(&json, now);
        assert!(
            t.starts_with("NAME                ID             SIZE    PROCESSOR   UNTIL\n"),
            "{t}"
        );
        assert!(
            t.contains("all-minilm:latest   1b226e2802db   46 MB   100% CPU    4 minutes from now"),
            "{t}"
        );
        assert_eq!(
            ps_table(&serde_json::json!({"models": []}), now)
                .lines()
                .count(),
            1
        );
        assert_eq!(processor(100, 48), "52%/48% CPU/GPU");
        assert_eq!(processor(100, 100), "100% GPU");
    }
}
