//! A minimal HTTP/1.1 client for the benchmark: POST a JSON body over one keep-alive
//! connection, read the answer (Content-Length or chunked). Just enough to drive an
//! Ollama-compatible server over loopback without pulling an HTTP client crate into the library.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Biggest response body we accept (256 passages × 384 floats is ~2.5 MB of JSON).
const MAX_BODY: usize = 256 << 20;
const IO_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub enum HttpError {
    BadUrl(String),
    Io(std::io::Error),
    Protocol(String),
    Status(u16, String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::BadUrl(u) => write!(f, "bad server address {u:?} (want http://host:port)"),
            HttpError::Io(e) => write!(f, "HTTP I/O error: {e}"),
            HttpError::Protocol(why) => write!(f, "malformed HTTP response: {why}"),
            HttpError::Status(code, body) => write!(f, "server answered {code}: {body}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<std::io::Error> for HttpError {
    fn from(e: std::io::Error) -> Self {
        HttpError::Io(e)
    }
}

/// `http://host:port`, `host:port` → a socket address and the Host header.
pub fn parse_addr(url: &str) -> Result<(SocketAddr, String), HttpError> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(HttpError::BadUrl(url.to_string()));
    }
    let addr = host
        .to_socket_addrs()
        .map_err(|_| HttpError::BadUrl(url.to_string()))?
        .next()
        .ok_or_else(|| HttpError::BadUrl(url.to_string()))?;
    Ok((addr, host.to_string()))
}

/// One keep-alive connection; reconnects when the server closed it.
pub struct Client {
    addr: SocketAddr,
    host: String,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            host: addr.to_string(),
            conn: None,
        }
    }

    fn connect(&mut self) -> Result<&mut BufReader<TcpStream>, HttpError> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            self.conn = Some(BufReader::with_capacity(1 << 16, s));
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// POSTs `body` to `path`; the response body on 200, an error otherwise. A request on a
    /// reused connection that fails before any byte of the answer is retried once on a new one
    /// (the server may have closed an idle keep-alive connection).
    pub fn post_json(&mut self, path: &str, body: &[u8]) -> Result<Vec<u8>, HttpError> {
        let reused = self.conn.is_some();
        match self.post_once(path, body) {
            Err(HttpError::Io(_)) if reused => {
                self.conn = None;
                self.post_once(path, body)
            }
            other => other,
        }
    }

    fn post_once(&mut self, path: &str, body: &[u8]) -> Result<Vec<u8>, HttpError> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            self.host,
            body.len()
        );
        let result = (|| {
            let conn = self.connect()?;
            let s = conn.get_mut();
            s.write_all(head.as_bytes())?;
            s.write_all(body)?;
            read_response(conn)
        })();
        match result {
            Ok((status, close, body)) => {
                if close {
                    self.conn = None;
                }
                if status == 200 {
                    Ok(body)
                } else {
                    let text = String::from_utf8_lossy(&body).chars().take(300).collect();
                    Err(HttpError::Status(status, text))
                }
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// Status, whether the server will close the connection, and the body.
fn read_response(r: &mut BufReader<TcpStream>) -> Result<(u16, bool, Vec<u8>), HttpError> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(HttpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| HttpError::Protocol(format!("status line {:?}", line.trim_end())))?;
    let http10 = line.starts_with("HTTP/1.0");
    let (mut length, mut chunked, mut close) = (None, false, http10);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(HttpError::Protocol("headers cut short".into()));
        }
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(HttpError::Protocol(format!("header {h:?}")));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = value
                    .parse::<usize>()
                    .map_err(|_| HttpError::Protocol(format!("content-length {value:?}")))?;
                length = Some(n);
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let body = if chunked {
        read_chunked(r)?
    } else if let Some(n) = length {
        if n > MAX_BODY {
            return Err(HttpError::Protocol(format!("body of {n} bytes")));
        }
        let mut b = vec![0; n];
        r.read_exact(&mut b)?;
        b
    } else {
        // No length: the body runs to the end of the connection.
        let mut b = Vec::new();
        r.take(MAX_BODY as u64 + 1).read_to_end(&mut b)?;
        close = true;
        b
    };
    Ok((status, close, body))
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let n = usize::from_str_radix(size, 16)
            .map_err(|_| HttpError::Protocol(format!("chunk size {size:?}")))?;
        if n == 0 {
            // Trailers, then the blank line.
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + n > MAX_BODY {
            return Err(HttpError::Protocol("chunked body too large".into()));
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..])?;
        line.clear();
        r.read_line(&mut line)?; // the CRLF after the chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server that answers every request on one connection with `reply`.
    fn serve(replies: Vec<&'static str>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s);
            for reply in replies {
                let mut len = 0;
                let mut line = String::new();
                loop {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                r.get_mut().write_all(reply.as_bytes()).unwrap();
            }
        });
        addr
    }

    #[test]
    fn reads_content_length_and_chunked_bodies_on_one_connection() {
        let addr = serve(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 13\r\n\r\n{\"error\":\"x\"}",
        ]);
        let mut c = Client::new(addr);
        assert_eq!(c.post_json("/api/embed", b"{}").unwrap(), b"hello");
        assert_eq!(c.post_json("/api/embed", b"{}").unwrap(), b"abcde");
        match c.post_json("/api/embed", b"{}") {
            Err(HttpError::Status(400, body)) => assert!(body.contains("error")),
            other => panic!("want a 400, got {other:?}"),
        }
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(parse_addr("http://127.0.0.1:8080").unwrap().0.port(), 8080);
        assert_eq!(parse_addr("127.0.0.1:9/").unwrap().0.port(), 9);
        assert!(parse_addr("http://127.0.0.1:8080/api").is_err());
        assert!(parse_addr("").is_err());
    }
}
