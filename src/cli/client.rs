//! Just enough of an HTTP/1.1 client to ask the running server for `/api/tags` and `/api/ps`:
//! plain `http://` on the address in `OLLAMA_HOST`, as Ollama's CLI finds its server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Responses larger than this are not what `/api/tags` or `/api/ps` send.
const MAX_BODY: usize = 64 << 20;

/// `host:port` from `OLLAMA_HOST` with Ollama's defaults (`127.0.0.1`, port 11434); a server
/// bound to every interface (`0.0.0.0`) is reached on loopback.
pub fn server_address(var: Option<&str>) -> Result<(String, String), String> {
    let raw = var.map(str::trim).unwrap_or("");
    let rest = if let Some(r) = raw.strip_prefix("http://") {
        r
    } else if raw.starts_with("https://") {
        return Err("OLLAMA_HOST: https is not supported by quiver's client".to_string());
    } else {
        raw
    };
    let rest = rest.split('/').next().unwrap_or("");
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("OLLAMA_HOST: unclosed '['")?;
        (
            h.to_string(),
            after.strip_prefix(':').unwrap_or("").to_string(),
        )
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.to_string()),
            None => (rest.to_string(), String::new()),
        }
    };
    let host = match host.as_str() {
        "" | "0.0.0.0" => "127.0.0.1".to_string(),
        "::" => "::1".to_string(),
        _ => host,
    };
    let port = if port.is_empty() {
        "11434".to_string()
    } else {
        port
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("OLLAMA_HOST: invalid port {port:?}"));
    }
    Ok((host, port))
}

/// GETs `path` from the server and parses the JSON body. A refused connection becomes the
/// message Ollama's CLI gives.
pub fn get_json(path: &str) -> Result<serde_json::Value, String> {
    let (host, port) = server_address(std::env::var("OLLAMA_HOST").ok().as_deref())?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let not_running = || {
        format!("could not connect to a running quiver or Ollama server at {authority} (start one with `quiver serve`)")
    };
    let addrs: Vec<_> = authority
        .to_socket_addrs()
        .map_err(|_| not_running())?
        .collect();
    let stream = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(3)).ok())
        .ok_or_else(not_running)?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    // One write, so a server that answers as soon as it has the request line still gets it all.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    (&stream)
        .write_all(request.as_bytes())
        .map_err(|e| format!("{authority}: {e}"))?;

    let mut r = BufReader::new(&stream);
    let mut status_line = String::new();
    r.read_line(&mut status_line)
        .map_err(|e| format!("{authority}: {e}"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "{authority}: not an HTTP response: {:?}",
                status_line.trim_end()
            )
        })?;
    let mut length = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)
            .map_err(|e| format!("{authority}: {e}"))?
            == 0
        {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    let body = if chunked {
        read_chunked(&mut r)?
    } else {
        let mut body = Vec::new();
        let limit = length.unwrap_or(MAX_BODY).min(MAX_BODY) as u64;
        r.take(limit)
            .read_to_end(&mut body)
            .map_err(|e| format!("{authority}: {e}"))?;
        body
    };
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("{authority}{path}: invalid JSON in the response: {e}"))?;
    if !(200..300).contains(&status) {
        let msg = json
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("request failed");
        return Err(format!("{msg} (HTTP {status})"));
    }
    Ok(json)
}

fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        r.read_line(&mut size_line).map_err(|e| e.to_string())?;
        let size_hex = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| "malformed chunked response".to_string())?;
        if size == 0 {
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err("response too large".to_string());
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])
            .map_err(|e| e.to_string())?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).map_err(|e| e.to_string())?;
    }
}

#[cfg(test)]
mod tests {
    use super::server_address;

    #[test]
    fn ollama_host_forms() {
        let a = |v: Option<&str>| server_address(v).map(|(h, p)| format!("{h} {p}"));
        assert_eq!(a(None).unwrap(), "127.0.0.1 11434");
        assert_eq!(a(Some("")).unwrap(), "127.0.0.1 11434");
        assert_eq!(a(Some("0.0.0.0")).unwrap(), "127.0.0.1 11434");
        assert_eq!(a(Some("0.0.0.0:8080")).unwrap(), "127.0.0.1 8080");
        assert_eq!(a(Some(":9000")).unwrap(), "127.0.0.1 9000");
        assert_eq!(
            a(Some("http://example.com:1234")).unwrap(),
            "example.com 1234"
        );
        assert_eq!(a(Some("http://example.com/")).unwrap(), "example.com 11434");
        assert_eq!(a(Some("[::1]:5000")).unwrap(), "::1 5000");
        assert!(a(Some("host:notaport")).is_err());
        assert!(a(Some("https://example.com")).is_err());
    }
}
