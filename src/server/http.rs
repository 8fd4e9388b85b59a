//! A small HTTP/1.1 reader and writer over a `TcpStream`, with hard limits.
//!
//! Why not tiny_http: when a request body is left unread, tiny_http's reader drains the rest on
//! drop with `vec![0; remaining]` — a client announcing `Content-Length: 10^12` makes the server
//! try to allocate a terabyte (abort), and one that never sends the body blocks a worker
//! forever. Here a body over the limit is answered with 413 before a byte of it is read, the
//! connection is closed, and every read has a timeout.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// Request line plus headers, at most.
const MAX_HEAD_BYTES: u64 = 64 * 1024;
const MAX_HEADERS: usize = 128;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub http_minor: u8,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept open after this request.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(str::to_ascii_lowercase);
        match conn {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => self.http_minor >= 1,
        }
    }
}

#[derive(Debug)]
pub enum HttpError {
    /// The peer closed the connection or the socket failed: nothing to answer.
    Io(io::Error),
    /// A malformed request: answer with this status, then close.
    Bad(u16, &'static str),
    /// The body is larger than allowed: answer 413 (for the request's path), then close.
    TooLarge(String),
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        HttpError::Io(e)
    }
}

/// Reads one line ending in `\n` (at most `*budget` bytes, which it lowers), without the
/// line ending.
fn read_line<R: BufRead>(r: &mut R, budget: &mut u64) -> Result<String, HttpError> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(*budget).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(HttpError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    *budget -= n as u64;
    if buf.last() != Some(&b'\n') {
        return Err(if *budget == 0 {
            HttpError::Bad(431, "request header too large")
        } else {
            HttpError::Io(io::ErrorKind::UnexpectedEof.into())
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| HttpError::Bad(400, "request header is not UTF-8"))
}

/// Reads one request from `reader`. `writer` is used only for `100 Continue`.
pub fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    max_body: u64,
) -> Result<Request, HttpError> {
    let mut budget = MAX_HEAD_BYTES;
    // Tolerate empty lines before a request line (RFC 9112 §2.2).
    let mut line = read_line(reader, &mut budget)?;
    while line.is_empty() {
        line = read_line(reader, &mut budget)?;
    }
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
        _ => return Err(HttpError::Bad(400, "malformed request line")),
    };
    let http_minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(HttpError::Bad(505, "HTTP version not supported")),
    };
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Bad(400, "malformed method"));
    }
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();

    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, &mut budget)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::Bad(431, "too many headers"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Bad(400, "malformed header"))?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(HttpError::Bad(400, "malformed header"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path,
        http_minor,
        headers,
        body: Vec::new(),
    };

    let chunked = match req.header("transfer-encoding") {
        None => false,
        Some(te) if te.eq_ignore_ascii_case("chunked") => true,
        Some(_) => return Err(HttpError::Bad(501, "unsupported transfer encoding")),
    };
    let content_length = if chunked {
        None
    } else {
        let mut lens = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        match (lens.next(), lens.next()) {
            (None, _) => None,
            (Some((_, v)), None) => match v.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => return Err(HttpError::Bad(400, "invalid Content-Length")),
            },
            (Some(_), Some(_)) => return Err(HttpError::Bad(400, "more than one Content-Length")),
        }
    };
    // Refuse before the client sends a byte of the body.
    if content_length.is_some_and(|n| n > max_body) {
        return Err(HttpError::TooLarge(req.path.clone()));
    }
    let has_body = chunked || content_length.is_some_and(|n| n > 0);
    match req.header("expect") {
        Some(e) if e.eq_ignore_ascii_case("100-continue") && has_body => {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            writer.flush()?;
        }
        Some(e) if !e.eq_ignore_ascii_case("100-continue") => {
            return Err(HttpError::Bad(417, "unsupported expectation"))
        }
        _ => {}
    }
    if chunked {
        req.body = read_chunked(reader, max_body).map_err(|e| match e {
            HttpError::TooLarge(_) => HttpError::TooLarge(req.path.clone()),
            e => e,
        })?;
    } else if let Some(n) = content_length {
        // Grow as bytes arrive rather than trusting the announced length up front.
        let mut body = Vec::with_capacity(n.min(1 << 20) as usize);
        reader.by_ref().take(n).read_to_end(&mut body)?;
        if (body.len() as u64) < n {
            return Err(HttpError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        req.body = body;
    }
    Ok(req)
}

/// Decodes a chunked body, refusing (without reading on) once it would pass `max_body`.
fn read_chunked<R: BufRead>(r: &mut R, max_body: u64) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let mut budget = 1024;
        let line = read_line(r, &mut budget)?;
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_str, 16)
            .map_err(|_| HttpError::Bad(400, "malformed chunk size"))?;
        if size == 0 {
            // Trailers, then the empty line.
            let mut budget = MAX_HEAD_BYTES;
            while !read_line(r, &mut budget)?.is_empty() {}
            return Ok(body);
        }
        if body.len() as u64 + size > max_body {
            return Err(HttpError::TooLarge(String::new()));
        }
        let start = body.len();
        r.by_ref().take(size).read_to_end(&mut body)?;
        if ((body.len() - start) as u64) < size {
            return Err(HttpError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let mut budget = 2;
        if !read_line(r, &mut budget)?.is_empty() {
            return Err(HttpError::Bad(400, "malformed chunk"));
        }
    }
}

/// A body written by the handler's code as it goes (pull progress), sent chunked.
type StreamBody = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static>;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Taken (once) by [`write_response`]; behind a mutex because the writer borrows `self`.
    stream: std::sync::Mutex<Option<StreamBody>>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
            stream: std::sync::Mutex::new(None),
        }
    }

    /// A response whose body `body` writes while it is sent, with chunked transfer encoding.
    pub fn stream(
        status: u16,
        content_type: &str,
        body: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + 'static,
    ) -> Response {
        let r = Response::new(status, content_type, Vec::new());
        *r.stream.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(body));
        r
    }

    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        let body = serde_json::to_vec(value)
            .unwrap_or_else(|_| b"{\"error\":\"serialisation failed\"}".to_vec());
        Response::new(status, "application/json; charset=utf-8", body)
    }

    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            stream: std::sync::Mutex::new(None),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Each write as one HTTP chunk, flushed at once (progress lines must reach the client as they
/// happen).
struct Chunked<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Chunked<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.0, "{:x}\r\n", buf.len())?;
        self.0.write_all(buf)?;
        self.0.write_all(b"\r\n")?;
        self.0.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Writes `resp` in one piece. `head_only` for HEAD requests (Content-Length still says how
/// long the body would be).
pub fn write_response(
    w: &mut impl Write,
    resp: &Response,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(256 + resp.body.len());
    write!(out, "HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status))?;
    for (k, v) in &resp.headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    let stream = resp.stream.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(body) = stream {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        out.extend_from_slice(if keep_alive {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
        w.write_all(&out)?;
        if head_only {
            return w.flush();
        }
        let mut chunked = Chunked(w);
        body(&mut chunked)?;
        chunked.0.write_all(b"0\r\n\r\n")?;
        return chunked.0.flush();
    }
    if resp.status != 204 {
        write!(out, "Content-Length: {}\r\n", resp.body.len())?;
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
    if !head_only && resp.status != 204 {
        out.extend_from_slice(&resp.body);
    }
    w.write_all(&out)?;
    w.flush()
}
