//! HTTP/1.1 framing: request heads parsed with `httparse` (strict about what it accepts), the
//! body's framing decided by RFC 9112 §6.3 with every ambiguous case refused, an incremental
//! chunked-body decoder, and the response writer (whole bodies with Content-Length, streamed
//! ones with chunked transfer encoding).
//!
//! Nothing here touches a socket's readiness: the connection layer (`conn.rs`) feeds bytes in
//! as they arrive and hands complete requests to the workers, which write answers with
//! [`write_response`].

use std::io::{self, Write};

/// Request line plus headers, at most.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
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

#[derive(Debug, PartialEq)]
pub enum HttpError {
    /// A malformed or ambiguous request: answer with this status, then close.
    Bad(u16, &'static str),
    /// The body is larger than allowed: answer 413 (for the request's path), then close.
    TooLarge(String),
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// A parsed request head; `len` bytes of the buffer were the head.
#[derive(Debug)]
pub struct Head {
    pub request: Request,
    pub len: usize,
    pub framing: Framing,
    /// `Expect: 100-continue` with a body to come.
    pub expect_continue: bool,
}

/// Parses a request head from the start of `buf`. `Ok(None)`: not all of it has arrived.
/// Leading empty lines are skipped (RFC 9112 §2.2) and count toward the head.
pub fn parse_head(buf: &[u8], max_body: u64) -> Result<Option<Head>, HttpError> {
    let skip = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(&buf[skip..]) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::Bad(431, "too many headers"))
        }
        Err(httparse::Error::Version) => {
            return Err(HttpError::Bad(505, "HTTP version not supported"))
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(HttpError::Bad(400, "invalid header value"))
        }
        Err(httparse::Error::HeaderName) => return Err(HttpError::Bad(400, "malformed header")),
        Err(_) => return Err(HttpError::Bad(400, "malformed request line")),
    };
    let len = match status {
        httparse::Status::Complete(n) => skip + n,
        httparse::Status::Partial if buf.len() >= MAX_HEAD_BYTES => {
            return Err(HttpError::Bad(431, "request header too large"))
        }
        httparse::Status::Partial => return Ok(None),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HttpError::Bad(431, "request header too large"));
    }
    let method = req.method.unwrap_or_default();
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Bad(400, "malformed method"));
    }
    let target = req.path.unwrap_or_default();
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();
    let mut list = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        // httparse already refused NUL and other controls; obs-text (>= 0x80) is not UTF-8 text.
        let v = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::Bad(400, "request header is not UTF-8"))?;
        list.push((h.name.to_string(), v.trim().to_string()));
    }
    let request = Request {
        method: method.to_string(),
        path,
        http_minor: req.version.unwrap_or(1),
        headers: list,
        body: Vec::new(),
    };
    let framing = framing(&request)?;
    if let Framing::Length(n) = framing {
        // Refuse before the client sends a byte of the body.
        if n > max_body {
            return Err(HttpError::TooLarge(request.path));
        }
    }
    let has_body = framing != Framing::Length(0);
    let expect_continue = match request.header("expect") {
        None => false,
        Some(e) if e.eq_ignore_ascii_case("100-continue") => has_body,
        Some(_) => return Err(HttpError::Bad(417, "unsupported expectation")),
    };
    Ok(Some(Head {
        request,
        len,
        framing,
        expect_continue,
    }))
}

/// RFC 9112 §6.3: chunked, or one exact Content-Length, or no body. Both headers at once, a
/// transfer coding other than `chunked`, or a length that is not plain digits (`+34`, `1,2`,
/// two different values) is ambiguous between us and a proxy in front: refused.
fn framing(req: &Request) -> Result<Framing, HttpError> {
    let mut te = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    let mut cl = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    let (te1, te2) = (te.next(), te.next());
    let (cl1, cl2) = (cl.next(), cl.next());
    if te1.is_some() && cl1.is_some() {
        return Err(HttpError::Bad(
            400,
            "both Transfer-Encoding and Content-Length",
        ));
    }
    if let Some((_, v)) = te1 {
        if te2.is_some() || !v.eq_ignore_ascii_case("chunked") {
            return Err(HttpError::Bad(501, "unsupported transfer encoding"));
        }
        if req.http_minor == 0 {
            return Err(HttpError::Bad(400, "chunked transfer encoding in HTTP/1.0"));
        }
        return Ok(Framing::Chunked);
    }
    match (cl1, cl2) {
        (None, _) => Ok(Framing::Length(0)),
        (Some(_), Some(_)) => Err(HttpError::Bad(400, "more than one Content-Length")),
        (Some((_, v)), None) => parse_length(v)
            .map(Framing::Length)
            .ok_or(HttpError::Bad(400, "invalid Content-Length")),
    }
}

/// 1*DIGIT and nothing else (Rust's `parse` would take a leading `+`).
fn parse_length(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Decodes a chunked body as bytes arrive.
#[derive(Debug, Default)]
pub struct ChunkDecoder {
    state: ChunkState,
    pub body: Vec<u8>,
}

#[derive(Debug, Default, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl ChunkDecoder {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Takes what it can from `input`; returns how many bytes it used. Stops at the end of the
    /// body (the rest may be the next, pipelined request). Refuses a body past `max_body`, a
    /// chunk size that is not plain hex (httparse: no sign, no `0x`, at most 15 digits).
    pub fn feed(&mut self, input: &[u8], max_body: u64) -> Result<usize, HttpError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        pos += n;
                        if self.body.len() as u64 + size > max_body {
                            return Err(HttpError::TooLarge(String::new()));
                        }
                        self.state = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if rest.len() > 1024 => {
                        return Err(HttpError::Bad(400, "malformed chunk size"))
                    }
                    Ok(httparse::Status::Partial) => return Ok(pos),
                    Err(_) => return Err(HttpError::Bad(400, "malformed chunk size")),
                },
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    let n = rest.len().min(left.min(usize::MAX as u64) as usize);
                    self.body.extend_from_slice(&rest[..n]);
                    pos += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|&b| b != b'\r') {
                            return Err(HttpError::Bad(400, "malformed chunk"));
                        }
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(HttpError::Bad(400, "malformed chunk"));
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(rest, &mut trailers) {
                        Ok(httparse::Status::Complete((n, _))) => {
                            pos += n;
                            self.state = ChunkState::Done;
                        }
                        Ok(httparse::Status::Partial) if rest.len() >= MAX_HEAD_BYTES => {
                            return Err(HttpError::Bad(431, "trailers too large"))
                        }
                        Ok(httparse::Status::Partial) => return Ok(pos),
                        Err(_) => return Err(HttpError::Bad(400, "malformed trailer")),
                    }
                }
            }
        }
    }
}

/// A body written by a closure, on a worker thread, straight to the client.
pub type StreamFn = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static>;

pub enum Body {
    Bytes(Vec<u8>),
    Stream(StreamFn),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Body::Bytes(body),
        }
    }

    /// A body produced by `body` as the answer is written. Small bodies (the closure returns
    /// before writing 64 KiB and never flushes) still go out with Content-Length; otherwise
    /// with chunked transfer encoding, a chunk per flush or per 64 KiB. An error from `body`
    /// after the first chunk left cuts the answer short (no final chunk): the client sees a
    /// truncated body rather than a complete-looking wrong one.
    pub fn stream(
        status: u16,
        content_type: &str,
        body: impl FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static,
    ) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Body::Stream(Box::new(body)),
        }
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
            body: Body::Bytes(Vec::new()),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The whole body, when it is not streamed (tests, small answers).
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Bytes(b) => Some(b),
            Body::Stream(_) => None,
        }
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
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

fn head_bytes(resp: &Response, keep_alive: bool, length: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if resp.status != 204 {
        match length {
            Some(n) => {
                let _ = write!(out, "Content-Length: {n}\r\n");
            }
            None => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        }
    }
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });
    out
}

/// Writes `resp`. `head_only` for HEAD requests (Content-Length still says how long the body
/// would be; a streamed body is not produced at all). `keep_alive` is asked when the head
/// goes out (for a streamed body, after its first chunk is ready: a shutdown meanwhile
/// still gets `Connection: close`); returns what the head announced.
pub fn write_response(
    w: &mut dyn Write,
    resp: Response,
    head_only: bool,
    keep_alive: &dyn Fn() -> bool,
) -> io::Result<bool> {
    let Response {
        status,
        headers,
        body,
    } = resp;
    let resp = Response {
        status,
        headers,
        body: Body::Bytes(Vec::new()),
    };
    match body {
        Body::Bytes(body) => {
            let keep = keep_alive();
            let mut out = head_bytes(&resp, keep, Some(body.len()));
            if !head_only && status != 204 {
                out.extend_from_slice(&body);
            }
            w.write_all(&out)?;
            w.flush()?;
            Ok(keep)
        }
        Body::Stream(_) if head_only => {
            let keep = keep_alive();
            w.write_all(&head_bytes(&resp, keep, None))?;
            w.flush()?;
            Ok(keep)
        }
        Body::Stream(f) => {
            let mut out = Streamer {
                w,
                sent_keep: None,
                resp: &resp,
                keep_alive,
                buf: Vec::new(),
            };
            f(&mut out)?;
            out.finish()
        }
    }
}

const STREAM_BUFFER: usize = 64 * 1024;

/// Buffers a streamed body; switches to chunked encoding at the first flush or once the buffer
/// fills, so a small answer keeps its Content-Length.
struct Streamer<'a> {
    w: &'a mut dyn Write,
    /// What the head said about keep-alive, once it is sent.
    sent_keep: Option<bool>,
    resp: &'a Response,
    keep_alive: &'a dyn Fn() -> bool,
    buf: Vec<u8>,
}

impl Streamer<'_> {
    fn send_chunk(&mut self) -> io::Result<()> {
        if self.sent_keep.is_none() {
            let keep = (self.keep_alive)();
            self.w.write_all(&head_bytes(self.resp, keep, None))?;
            self.sent_keep = Some(keep);
        }
        if !self.buf.is_empty() {
            let mut frame = format!("{:x}\r\n", self.buf.len()).into_bytes();
            frame.append(&mut self.buf);
            frame.extend_from_slice(b"\r\n");
            self.w.write_all(&frame)?;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<bool> {
        let keep = match self.sent_keep {
            None => {
                // Never switched to chunked: one answer with a length.
                let keep = (self.keep_alive)();
                let mut out = head_bytes(self.resp, keep, Some(self.buf.len()));
                out.append(&mut self.buf);
                self.w.write_all(&out)?;
                keep
            }
            Some(keep) => {
                self.send_chunk()?;
                self.w.write_all(b"0\r\n\r\n")?;
                keep
            }
        };
        self.w.flush()?;
        Ok(keep)
    }
}

impl Write for Streamer<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= STREAM_BUFFER {
            self.send_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_chunk()?;
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Option<Head>, HttpError> {
        parse_head(s.as_bytes(), 1 << 20)
    }

    fn bad(s: &str) -> u16 {
        match head(s) {
            Err(HttpError::Bad(code, _)) => code,
            other => panic!("{s:?} accepted: {other:?}"),
        }
    }

    #[test]
    fn heads_parse_and_partial_heads_wait() {
        let h =
            head("\r\nPOST /api/embed?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nrest")
                .unwrap()
                .unwrap();
        assert_eq!(h.request.path, "/api/embed");
        assert_eq!(h.framing, Framing::Length(12));
        assert_eq!(
            h.len,
            "\r\nPOST /api/embed?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n".len()
        );
        assert!(head("POST /api/embed HTTP/1.1\r\nHost: a\r\n")
            .unwrap()
            .is_none());
        assert!(
            head("GET / HTTP/1.0\r\n\r\n")
                .unwrap()
                .unwrap()
                .request
                .http_minor
                == 0
        );
    }

    #[test]
    fn ambiguous_framing_and_bad_values_are_refused() {
        assert_eq!(bad("POST / HTTP/1.1\r\nContent-Length: +34\r\n\r\n"), 400);
        assert_eq!(bad("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(bad("POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n"), 400);
        assert_eq!(
            bad("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"),
            400
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(bad("POST / HTTP/1.1\r\nHost: a\0b\r\n\r\n"), 400);
        assert_eq!(bad("POST / HTTP/1.1\r\nHost: a\x01b\r\n\r\n"), 400);
        assert_eq!(bad("POST / HTTP/1.1\r\nBad Name: x\r\n\r\n"), 400);
        assert_eq!(bad("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(bad("\x16\x03\x01 hello\r\n\r\n"), 400);
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(bad(&huge), 431);
        match parse_head(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n", 10) {
            Err(HttpError::TooLarge(p)) => assert_eq!(p, "/"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chunked_bodies_decode_in_pieces_and_refuse_signed_sizes() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        // Byte by byte, as a slow client sends it.
        let mut d = ChunkDecoder::default();
        let mut fed = 0;
        let mut pending = Vec::new();
        for &b in wire.iter() {
            if d.done() {
                break;
            }
            pending.push(b);
            let n = d.feed(&pending, 1 << 20).unwrap();
            pending.drain(..n);
            fed += 1;
        }
        assert!(d.done());
        assert_eq!(d.body, b"hello world");
        assert_eq!(&wire[fed..], b"NEXT");
        for bad in [&b"+10\r\n"[..], b"-1\r\n", b"0x5\r\n", b"zz\r\n"] {
            let mut d = ChunkDecoder::default();
            assert!(
                matches!(d.feed(bad, 1 << 20), Err(HttpError::Bad(400, _))),
                "{bad:?}"
            );
        }
        let mut d = ChunkDecoder::default();
        assert!(matches!(
            d.feed(b"5\r\nhelloXX", 1 << 20),
            Err(HttpError::Bad(400, _))
        ));
        let mut d = ChunkDecoder::default();
        assert!(matches!(d.feed(b"ff\r\n", 16), Err(HttpError::TooLarge(_))));
    }

    #[test]
    fn small_streams_keep_a_length_and_large_or_flushed_ones_are_chunked() {
        let mut out = Vec::new();
        let r = Response::stream(200, "text/plain", |w| w.write_all(b"short"));
        write_response(&mut out, r, false, &|| true).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("Content-Length: 5\r\n") && s.ends_with("\r\n\r\nshort"),
            "{s}"
        );

        let mut out = Vec::new();
        let r = Response::stream(200, "text/plain", |w| {
            w.write_all(b"one")?;
            w.flush()?;
            w.write_all(b"two")
        });
        write_response(&mut out, r, false, &|| false).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Transfer-Encoding: chunked\r\n"), "{s}");
        assert!(
            s.ends_with("\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"),
            "{s}"
        );
    }
}
