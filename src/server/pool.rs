//! The worker pool: a fixed number of threads take complete requests from a bounded queue,
//! run the (synchronous) handler, and write the answer on the connection in blocking mode
//! with a write timeout. A keep-alive connection goes back to the event loop; the loop is
//! told about every finished job, so it knows what is still in flight.

use super::conn::Conn;
use super::http::{self, Request};
use super::{error, routes, Shared};
use polling::Poller;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one write of an answer may stall before the client is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Job {
    pub conn: Conn,
    pub req: Request,
    pub queued: Instant,
}

pub struct Pool {
    tx: Option<SyncSender<Job>>,
    workers: usize,
    handles: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Pool {
    /// Starts `workers` threads with a queue of `queue` waiting requests. Finished jobs go to
    /// `back` (the connection when it stays open), and `poller` is woken for each.
    pub fn start(
        workers: usize,
        queue: usize,
        shared: Arc<Shared>,
        back: Sender<Option<Conn>>,
        poller: Arc<Poller>,
    ) -> std::io::Result<Pool> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let (rx, shared, back, poller) =
                (rx.clone(), shared.clone(), back.clone(), poller.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("quiver-worker-{i}"))
                    .spawn(move || worker(&rx, &shared, &back, &poller))?,
            );
        }
        Ok(Pool {
            tx: Some(tx),
            workers,
            handles: Arc::new(Mutex::new(handles)),
        })
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Queues `job`; gives it back when the queue is full or closed.
    pub fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        match &self.tx {
            Some(tx) => tx.try_send(job).map_err(|e| match e {
                TrySendError::Full(j) | TrySendError::Disconnected(j) => Box::new(j),
            }),
            None => Err(Box::new(job)),
        }
    }

    /// No more jobs: workers exit once the queue is empty.
    pub fn close(&mut self) {
        self.tx = None;
    }

    pub fn handles(&self) -> Arc<Mutex<Vec<JoinHandle<()>>>> {
        self.handles.clone()
    }
}

fn worker(
    rx: &Mutex<Receiver<Job>>,
    shared: &Shared,
    back: &Sender<Option<Conn>>,
    poller: &Poller,
) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        let conn = serve(job, shared);
        let _ = back.send(conn);
        let _ = poller.notify();
    }
}

/// Answers one request; the connection back when it stays open.
fn serve(job: Job, shared: &Shared) -> Option<Conn> {
    let Job { conn, req, queued } = job;
    let started = Instant::now();
    shared.metrics.queue_wait(started - queued);
    if conn.stream.set_nonblocking(false).is_err()
        || conn.stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
    {
        return None;
    }
    let resp = catch_unwind(AssertUnwindSafe(|| routes::handle(&shared.ctx, &req)))
        .unwrap_or_else(|_| error::ApiError::new(500, "internal server error").render(&req.path));
    let wants_keep = req.keep_alive();
    let keep = || wants_keep && !shared.shutdown.load(Ordering::SeqCst);
    let status = resp.status;
    let mut stream = &conn.stream;
    let written = catch_unwind(AssertUnwindSafe(|| {
        http::write_response(&mut stream, resp, req.method == "HEAD", &keep)
    }));
    // A streamed answer can fail after its head went out (the client left, or the model
    // failed on a later chunk): the connection is dropped without the last chunk, and the
    // log line says why.
    let (ok, keep, cut) = match written {
        Ok(Ok(keep)) => (true, keep, None),
        Ok(Err(e)) => (false, false, Some(e.to_string())),
        Err(_) => (false, false, Some("panic while writing".to_string())),
    };
    let elapsed = started.elapsed();
    shared.metrics.request(&req.path, status, elapsed);
    let note = super::metrics::take_note().unwrap_or_default();
    if shared.log {
        // One logfmt line per request; OLLAMA_DEBUG=1 adds queue wait, body size, user agent.
        let mut line = format!(
            "time={} level={} msg=request method={} path={:?} status={status} latency_ms={:.3} model={:?} inputs={} tokens={} remote={}",
            crate::engine::format::rfc3339_local(std::time::SystemTime::now()),
            if cut.is_some() { "WARN" } else { "INFO" },
            req.method,
            req.path,
            elapsed.as_secs_f64() * 1e3,
            note.model,
            note.inputs,
            note.tokens,
            conn.stream
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
        );
        if let Some(why) = &cut {
            line.push_str(&format!(" error={:?}", format!("answer cut short: {why}")));
        }
        if shared.debug {
            line.push_str(&format!(
                " queue_ms={:.3} body_bytes={} user_agent={:?} keep_alive={keep} written={ok}",
                (started - queued).as_secs_f64() * 1e3,
                req.body.len(),
                req.header("user-agent").unwrap_or(""),
            ));
        }
        super::log_line(format_args!("{line}"));
    }
    if !ok || !keep || conn.stream.set_nonblocking(true).is_err() {
        return None;
    }
    Some(conn)
}
