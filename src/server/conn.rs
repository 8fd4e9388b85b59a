//! The connection layer: one thread owns the listener and every socket, waits on their
//! readiness (`polling`: epoll/kqueue), and reads requests into per-connection buffers. An idle
//! or slow connection costs its buffer (nothing while idle), never a thread. A complete
//! request is handed with its socket to the worker pool (`pool.rs`); the worker answers in
//! blocking mode and hands a keep-alive connection back.
//!
//! Deadlines, checked every [`TICK`]: the whole head within [`HEAD_TIMEOUT`] of its first byte
//! (else 408), the body at [`MIN_BODY_RATE`] after a grace period (else 408), an idle keep-alive
//! connection closed after [`IDLE_TIMEOUT`], or [`IDLE_TIMEOUT_BUSY`] once the server is busy.
//! Early answers (400, 408, 413, 431, 503) are written from here without blocking, then the
//! connection lingers briefly, discarding input, so the client reads the answer instead of
//! a reset.
//!
//! Memory: the bytes of unfinished requests held over all connections are counted; a
//! connection whose bytes push the sum past `QUIVER_MAX_BUFFERED` gets 503 and is closed, so
//! many slow bodies cannot each hold up to `QUIVER_MAX_BODY`.

use super::http::{self, ChunkDecoder, Framing, Head, HttpError, Request};
use super::pool::{Job, Pool};
use super::Shared;
use polling::{Event, Events, PollMode, Poller};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const TICK: Duration = Duration::from_millis(100);
/// From the first byte of a request head to its end.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A body must arrive at this rate (bytes/s), measured after [`BODY_GRACE`].
pub const MIN_BODY_RATE: u64 = 4096;
pub const BODY_GRACE: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const IDLE_TIMEOUT_BUSY: Duration = Duration::from_secs(5);
/// How long an early answer may take to leave, then how long to discard input after it.
const CLOSING_TIMEOUT: Duration = Duration::from_secs(5);
const LINGER: Duration = Duration::from_secs(2);
/// At most this much is read from one connection per readiness event (fairness).
const READ_PER_EVENT: usize = 1 << 20;
const LISTENER: usize = usize::MAX - 1;

/// A connection between requests, as the loop holds it and workers hand it back.
pub struct Conn {
    pub stream: TcpStream,
    /// Received and not yet consumed (the start of the next, pipelined request).
    pub buf: Vec<u8>,
    state: State,
    /// When the current state began.
    since: Instant,
    interest: Interest,
    /// The bytes of this connection counted in [`EventLoop::buffered`].
    counted: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Interest {
    Read,
    Write,
}

enum State {
    /// No byte of the next request yet.
    Idle,
    /// Part of a head.
    Head,
    Body {
        head: Box<Request>,
        framing: Framing,
        chunks: Option<ChunkDecoder>,
    },
    /// Writing an early answer from `out[pos..]`, then closing.
    Closing { out: Vec<u8>, pos: usize },
    /// Answer sent and write side shut: discarding input until EOF or the deadline.
    Linger,
}

impl Conn {
    pub fn new(stream: TcpStream, buf: Vec<u8>) -> Conn {
        Conn {
            stream,
            buf,
            state: State::Idle,
            since: Instant::now(),
            interest: Interest::Read,
            counted: 0,
        }
    }

    /// The path of the request being received, for an early answer.
    fn path(&self) -> String {
        match &self.state {
            State::Body { head, .. } => head.path.clone(),
            _ => "/".to_string(),
        }
    }

    /// Bytes of an unfinished request held for this connection.
    fn held(&self) -> usize {
        match &self.state {
            State::Body { chunks, .. } => {
                self.buf.len() + chunks.as_ref().map_or(0, |c| c.body.len())
            }
            _ => self.buf.len(),
        }
    }
}

enum Step {
    Wait,
    Close,
    Dispatch(Request),
}

pub struct EventLoop {
    poller: Arc<Poller>,
    listener: Option<TcpListener>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    open: usize,
    /// Requests with the workers (queued or running).
    in_flight: usize,
    /// Bytes held over all connections (the sum of their `counted`).
    buffered: usize,
    pool: Pool,
    returned: Receiver<Option<Conn>>,
    shared: Arc<Shared>,
    accept_paused_until: Option<Instant>,
}

impl EventLoop {
    pub fn new(
        listener: TcpListener,
        poller: Arc<Poller>,
        pool: Pool,
        returned: Receiver<Option<Conn>>,
        shared: Arc<Shared>,
    ) -> io::Result<EventLoop> {
        listener.set_nonblocking(true)?;
        // SAFETY: the listener is deleted from the poller before it is dropped (`stop_listening`).
        unsafe { poller.add_with_mode(&listener, Event::readable(LISTENER), PollMode::Level)? };
        Ok(EventLoop {
            poller,
            listener: Some(listener),
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            in_flight: 0,
            buffered: 0,
            pool,
            returned,
            shared,
            accept_paused_until: None,
        })
    }

    /// Runs until shutdown and until every request in flight is answered (or the shutdown
    /// deadline passes). True when nothing was left in flight.
    pub fn run(mut self) -> bool {
        let mut events = Events::new();
        let mut last_tick = Instant::now();
        let mut stop_deadline: Option<Instant> = None;
        loop {
            events.clear();
            if let Err(e) = self.poller.wait(&mut events, Some(TICK)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    std::thread::sleep(TICK);
                }
            }
            for ev in events.iter() {
                if ev.key == LISTENER {
                    self.accept();
                } else {
                    self.on_event(ev.key, ev.readable, ev.writable);
                }
            }
            while let Ok(back) = self.returned.try_recv() {
                self.in_flight -= 1;
                self.shared
                    .metrics
                    .in_flight
                    .fetch_sub(1, Ordering::Relaxed);
                if let Some(conn) = back {
                    if stop_deadline.is_none() {
                        self.adopt(conn);
                    }
                }
            }
            if self.shared.shutdown.load(Ordering::SeqCst) && stop_deadline.is_none() {
                stop_deadline = Some(Instant::now() + self.shared.shutdown_timeout);
                self.stop_listening();
                // Idle and slow connections go at once; answers in flight are written.
                for key in 0..self.conns.len() {
                    self.close(key);
                }
            }
            if let Some(deadline) = stop_deadline {
                if self.in_flight == 0 || Instant::now() >= deadline {
                    if self.in_flight > 0 {
                        super::log_line(format_args!(
                            "quiver: shutdown timeout, {} requests still running",
                            self.in_flight
                        ));
                    }
                    break;
                }
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.tick();
            }
        }
        self.pool.close();
        self.in_flight == 0
    }

    fn stop_listening(&mut self) {
        if let Some(l) = self.listener.take() {
            let _ = self.poller.delete(&l);
        }
    }

    fn busy(&self) -> bool {
        self.in_flight >= self.pool.workers() || self.open >= self.shared.max_connections / 2
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if self.open >= self.shared.max_connections {
                        let _ = (&stream).write_all(&error_bytes(
                            503,
                            "server busy, please try again.  maximum pending requests exceeded",
                            "/",
                        ));
                        let _ = stream.shutdown(Shutdown::Both);
                        continue;
                    }
                    self.adopt(Conn::new(stream, Vec::new()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // Out of file descriptors and the like: stop polling the listener for a
                    // moment instead of spinning on it.
                    let _ = self.poller.modify(listener, Event::none(LISTENER));
                    self.accept_paused_until = Some(Instant::now() + Duration::from_millis(50));
                    return;
                }
            }
        }
    }

    /// Gives `conn` a slot and polls it for its interest; `None` (the connection dropped) when
    /// the poller refuses it.
    fn register(&mut self, conn: Conn) -> Option<usize> {
        let key = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let event = match conn.interest {
            Interest::Read => Event::readable(key),
            Interest::Write => Event::writable(key),
        };
        // SAFETY: a registered connection leaves only through `unregister`, which deletes it
        // from the poller first.
        if unsafe {
            self.poller
                .add_with_mode(&conn.stream, event, PollMode::Level)
        }
        .is_err()
        {
            self.free.push(key);
            return None;
        }
        self.conns[key] = Some(conn);
        self.set_open(self.open + 1);
        Some(key)
    }

    /// Takes a connection out of its slot, the poller and the byte count.
    fn unregister(&mut self, key: usize) -> Option<Conn> {
        let mut conn = self.conns.get_mut(key).and_then(Option::take)?;
        self.buffered -= conn.counted;
        conn.counted = 0;
        let _ = self.poller.delete(&conn.stream);
        self.free.push(key);
        self.set_open(self.open - 1);
        Some(conn)
    }

    fn set_open(&mut self, open: usize) {
        self.open = open;
        self.shared
            .metrics
            .open_connections
            .store(open, Ordering::Relaxed);
    }

    /// Registers a new or returned connection and serves what its buffer already holds.
    fn adopt(&mut self, mut conn: Conn) {
        conn.state = State::Idle;
        conn.since = Instant::now();
        conn.interest = Interest::Read;
        if let Some(key) = self.register(conn) {
            self.progress(key);
        }
    }

    fn close(&mut self, key: usize) {
        self.unregister(key);
    }

    fn on_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        if writable {
            if let State::Closing { .. } = conn.state {
                self.flush_closing(key);
                return;
            }
        }
        if !readable {
            return;
        }
        let mut scratch = [0u8; 16 * 1024];
        let mut total = 0;
        let lingering = matches!(conn.state, State::Linger);
        loop {
            match (&conn.stream).read(&mut scratch) {
                Ok(0) => {
                    self.close(key);
                    return;
                }
                Ok(n) => {
                    if !lingering {
                        conn.buf.extend_from_slice(&scratch[..n]);
                    }
                    total += n;
                    if total >= READ_PER_EVENT {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(key);
                    return;
                }
            }
        }
        if !lingering {
            self.progress(key);
        }
    }

    /// Moves a connection's request on as far as its buffer allows.
    fn progress(&mut self, key: usize) {
        let max_body = self.shared.max_body;
        let step = {
            let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else {
                return;
            };
            advance(conn, max_body)
        };
        match step {
            Ok(Step::Wait) => {
                if self.recount(key) > self.shared.max_buffered {
                    let msg = "server busy, please try again.  too many request bodies in progress";
                    let path = self.conns[key]
                        .as_ref()
                        .map_or_else(String::new, Conn::path);
                    self.answer_and_close(key, 503, msg, &path);
                }
            }
            Ok(Step::Close) => self.close(key),
            Ok(Step::Dispatch(req)) => self.dispatch(key, req),
            Err(HttpError::Bad(status, msg)) => self.answer_and_close(key, status, msg, "/"),
            Err(HttpError::TooLarge(path)) => {
                let msg = format!("request body too large (the limit is {max_body} bytes)");
                self.answer_and_close(key, 413, &msg, &path)
            }
        }
    }

    /// Brings the connection's share of [`Self::buffered`] up to date; returns the new sum.
    fn recount(&mut self, key: usize) -> usize {
        if let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) {
            let held = conn.held();
            self.buffered = self.buffered - conn.counted + held;
            conn.counted = held;
        }
        self.buffered
    }

    fn dispatch(&mut self, key: usize, req: Request) {
        let Some(conn) = self.unregister(key) else {
            return;
        };
        let job = Job {
            conn,
            req,
            queued: Instant::now(),
        };
        match self.pool.submit(job) {
            Ok(()) => {
                self.in_flight += 1;
                self.shared
                    .metrics
                    .in_flight
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(job) => {
                let path = job.req.path.clone();
                self.adopt_closing(
                    job.conn,
                    error_bytes(
                        503,
                        "server busy, please try again.  maximum pending requests exceeded",
                        &path,
                    ),
                );
            }
        }
    }

    fn adopt_closing(&mut self, conn: Conn, out: Vec<u8>) {
        let conn = Conn {
            state: State::Closing { out, pos: 0 },
            since: Instant::now(),
            interest: Interest::Write,
            ..conn
        };
        if let Some(key) = self.register(conn) {
            self.flush_closing(key);
        }
    }

    fn answer_and_close(&mut self, key: usize, status: u16, msg: &str, path: &str) {
        self.shared.metrics.early_answer(status);
        let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        conn.state = State::Closing {
            out: error_bytes(status, msg, path),
            pos: 0,
        };
        conn.since = Instant::now();
        conn.buf = Vec::new();
        self.recount(key);
        self.flush_closing(key);
    }

    /// Writes what an early answer has left; once it is out, shuts the write side and lingers.
    fn flush_closing(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        let State::Closing { out, pos } = &mut conn.state else {
            return;
        };
        while *pos < out.len() {
            match (&conn.stream).write(&out[*pos..]) {
                Ok(0) => return self.close(key),
                Ok(n) => *pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if conn.interest != Interest::Write {
                        conn.interest = Interest::Write;
                        if self
                            .poller
                            .modify(&conn.stream, Event::writable(key))
                            .is_err()
                        {
                            self.close(key);
                        }
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(key),
            }
        }
        let _ = conn.stream.shutdown(Shutdown::Write);
        conn.state = State::Linger;
        conn.since = Instant::now();
        if conn.interest != Interest::Read {
            conn.interest = Interest::Read;
            if self
                .poller
                .modify(&conn.stream, Event::readable(key))
                .is_err()
            {
                self.close(key);
            }
        }
    }

    /// Enforces the deadlines.
    fn tick(&mut self) {
        if let Some(t) = self.accept_paused_until {
            if Instant::now() >= t {
                self.accept_paused_until = None;
                if let Some(l) = &self.listener {
                    let _ = self.poller.modify(l, Event::readable(LISTENER));
                }
            }
        }
        let idle_limit = if self.busy() {
            IDLE_TIMEOUT_BUSY
        } else {
            IDLE_TIMEOUT
        };
        for key in 0..self.conns.len() {
            let Some(conn) = self.conns[key].as_ref() else {
                continue;
            };
            let age = conn.since.elapsed();
            match &conn.state {
                State::Idle if age > idle_limit => self.close(key),
                State::Head if age > HEAD_TIMEOUT => {
                    self.answer_and_close(key, 408, "request header timeout", "/")
                }
                State::Body { head, chunks, .. } => {
                    let got = conn.buf.len() + chunks.as_ref().map_or(0, |c| c.body.len());
                    if too_slow(age, got as u64) {
                        let path = head.path.clone();
                        self.answer_and_close(key, 408, "request body too slow", &path);
                    }
                }
                State::Closing { .. } if age > CLOSING_TIMEOUT => self.close(key),
                State::Linger if age > LINGER => self.close(key),
                _ => {}
            }
        }
    }
}

/// Whether a body that has taken `age` so far and brought `got` bytes is below the minimum
/// rate (after the grace period).
pub fn too_slow(age: Duration, got: u64) -> bool {
    match age.checked_sub(BODY_GRACE) {
        None => false,
        Some(late) => (got as f64) < late.as_secs_f64() * MIN_BODY_RATE as f64,
    }
}

/// The state machine over the buffer: head, then body, then a complete request.
fn advance(conn: &mut Conn, max_body: u64) -> Result<Step, HttpError> {
    loop {
        match &mut conn.state {
            State::Idle | State::Head => {
                if conn.buf.is_empty() {
                    return Ok(Step::Wait);
                }
                if matches!(conn.state, State::Idle) {
                    conn.state = State::Head;
                    conn.since = Instant::now();
                }
                let Some(Head {
                    request,
                    len,
                    framing,
                    expect_continue,
                }) = http::parse_head(&conn.buf, max_body)?
                else {
                    return Ok(Step::Wait);
                };
                conn.buf.drain(..len);
                if expect_continue && conn.buf.is_empty() {
                    // Small enough to fit any socket buffer; a client that cannot take it is
                    // gone.
                    if (&conn.stream)
                        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        .is_err()
                    {
                        return Ok(Step::Close);
                    }
                }
                conn.state = State::Body {
                    head: Box::new(request),
                    framing,
                    chunks: (framing == Framing::Chunked).then(ChunkDecoder::default),
                };
                conn.since = Instant::now();
            }
            State::Body {
                head,
                framing,
                chunks,
            } => {
                let body = match (framing, chunks) {
                    (Framing::Length(n), _) => {
                        let n = *n as usize;
                        if conn.buf.len() < n {
                            // No reserve of the announced length: memory follows the bytes
                            // that arrive, not what a header promises.
                            return Ok(Step::Wait);
                        }
                        if conn.buf.len() == n {
                            std::mem::take(&mut conn.buf)
                        } else {
                            let rest = conn.buf.split_off(n);
                            std::mem::replace(&mut conn.buf, rest)
                        }
                    }
                    (Framing::Chunked, Some(dec)) => {
                        let used = dec.feed(&conn.buf, max_body).map_err(|e| match e {
                            HttpError::TooLarge(_) => HttpError::TooLarge(head.path.clone()),
                            e => e,
                        })?;
                        conn.buf.drain(..used);
                        if !dec.done() {
                            return Ok(Step::Wait);
                        }
                        std::mem::take(&mut dec.body)
                    }
                    (Framing::Chunked, None) => unreachable!("chunked bodies have a decoder"),
                };
                let mut req = *std::mem::replace(head, Box::new(empty_request()));
                req.body = body;
                conn.state = State::Idle;
                return Ok(Step::Dispatch(req));
            }
            State::Closing { .. } | State::Linger => return Ok(Step::Wait),
        }
    }
}

fn empty_request() -> Request {
    Request {
        method: String::new(),
        path: String::new(),
        http_minor: 1,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// An error answer as bytes, with `Connection: close`.
pub fn error_bytes(status: u16, msg: &str, path: &str) -> Vec<u8> {
    let resp = super::error::ApiError::new(status, msg).render(path);
    let mut out = Vec::new();
    let _ = http::write_response(&mut out, resp, false, &|| false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_rate_allows_the_grace_period_then_needs_the_minimum() {
        assert!(!too_slow(Duration::from_secs(9), 0));
        assert!(too_slow(Duration::from_secs(11), 0));
        assert!(!too_slow(Duration::from_secs(12), 2 * MIN_BODY_RATE));
        assert!(too_slow(Duration::from_secs(13), 2 * MIN_BODY_RATE));
    }
}
