//! One model's batching queue. Requests push their tokenised sequences; a worker thread drains
//! what is waiting, round-robin across requests, up to a token budget, and runs one
//! `Model::embed_tokens` call per batch. Round-robin means a short request that arrives while a
//! long one is being worked through goes into the very next batch instead of waiting for the
//! long one to finish. Each request gets its vectors back in its own order.

use crate::embed::EmbedError;
use crate::model::Model;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitError {
    /// More tokens are queued than the scheduler accepts (→ 503).
    Busy,
}

type Reply = Result<Vec<Vec<f32>>, EmbedError>;

struct Job {
    seqs: Vec<Vec<u32>>,
    /// Index of the next sequence not yet handed to a batch.
    next: usize,
    results: Vec<Vec<f32>>,
    reply: mpsc::Sender<Reply>,
}

struct Queue {
    jobs: VecDeque<Job>,
    queued_tokens: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

pub struct Scheduler {
    shared: Arc<Shared>,
    max_queued_tokens: usize,
    worker: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the worker for `model`. `budget` is the most tokens per forward pass (a single
    /// longer sequence still runs, alone); `max_queued_tokens` bounds the waiting work.
    pub fn start(
        model: Arc<Model>,
        name: &str,
        budget: usize,
        max_queued_tokens: usize,
    ) -> Scheduler {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                queued_tokens: 0,
                closed: false,
            }),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name(format!("quiver-batch-{name}"))
            .spawn(move || work(&s, &model, budget.max(1)))
            .expect("spawning a scheduler thread");
        Scheduler {
            shared,
            max_queued_tokens,
            worker: Some(worker),
        }
    }

    /// Queues `seqs` and waits for their pooled (unnormalised) vectors, in order.
    pub fn embed(&self, seqs: Vec<Vec<u32>>) -> Result<Reply, SubmitError> {
        if seqs.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let tokens: usize = seqs.iter().map(Vec::len).sum();
        let (tx, rx) = mpsc::channel();
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            // An idle queue always takes the job, however large, so that no single request
            // is refused just for its size.
            if !q.jobs.is_empty() && q.queued_tokens + tokens > self.max_queued_tokens {
                return Err(SubmitError::Busy);
            }
            q.queued_tokens += tokens;
            let n = seqs.len();
            q.jobs.push_back(Job {
                seqs,
                next: 0,
                results: Vec::with_capacity(n),
                reply: tx,
            });
        }
        self.shared.wake.notify_one();
        Ok(rx
            .recv()
            .unwrap_or_else(|_| Err(EmbedError::Model("the model was unloaded".into()))))
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.wake.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// One sequence of a batch: which job (by position in the queue) and which of its sequences.
struct Slot {
    job: usize,
    tokens: Vec<u32>,
}

fn work(shared: &Shared, model: &Model, budget: usize) {
    loop {
        // Gather a batch.
        let batch: Vec<Slot> = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            while q.jobs.is_empty() && !q.closed {
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.jobs.is_empty() {
                return; // closed and drained
            }
            let mut batch = Vec::new();
            let mut tokens = 0;
            'fill: loop {
                let mut progress = false;
                for (j, job) in q.jobs.iter_mut().enumerate() {
                    if job.next == job.seqs.len() {
                        continue;
                    }
                    let len = job.seqs[job.next].len();
                    if !batch.is_empty() && tokens + len > budget {
                        break 'fill;
                    }
                    tokens += len;
                    batch.push(Slot {
                        job: j,
                        tokens: std::mem::take(&mut job.seqs[job.next]),
                    });
                    job.next += 1;
                    progress = true;
                }
                if !progress {
                    break;
                }
            }
            batch
        };

        let outcome = run(
            model,
            &batch.iter().map(|s| &s.tokens[..]).collect::<Vec<_>>(),
        );

        // Hand the vectors back. Jobs only leave the queue here, on this thread, so the
        // positions recorded in `batch` are still valid.
        let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        let tokens: usize = batch.iter().map(|s| s.tokens.len()).sum();
        q.queued_tokens -= tokens;
        let mut failed: Vec<(usize, EmbedError)> = Vec::new();
        match outcome {
            Ok(vectors) => {
                for (slot, v) in batch.iter().zip(vectors) {
                    q.jobs[slot.job].results.push(v);
                }
            }
            Err(e) => {
                // Find out whose input failed: run each job's part alone.
                let mut jobs: Vec<usize> = batch.iter().map(|s| s.job).collect();
                jobs.dedup();
                jobs.sort_unstable();
                jobs.dedup();
                for j in jobs {
                    let part: Vec<&[u32]> = batch
                        .iter()
                        .filter(|s| s.job == j)
                        .map(|s| &s.tokens[..])
                        .collect();
                    let alone = if batch.iter().all(|s| s.job == j) {
                        Err(e.clone())
                    } else {
                        run(model, &part)
                    };
                    match alone {
                        Ok(vs) => q.jobs[j].results.extend(vs),
                        Err(e) => failed.push((j, e)),
                    }
                }
            }
        }
        // Reply to finished and failed jobs, removing them from the back so indices hold.
        let mut done: Vec<usize> = (0..q.jobs.len())
            .filter(|&j| {
                failed.iter().any(|(f, _)| *f == j)
                    || q.jobs[j].results.len() == q.jobs[j].seqs.len()
            })
            .collect();
        done.sort_unstable_by(|a, b| b.cmp(a));
        for j in done {
            let job = q.jobs.remove(j).expect("index in range");
            let unsent: usize = job.seqs[job.next..].iter().map(Vec::len).sum();
            q.queued_tokens -= unsent;
            let reply = match failed.iter().find(|(f, _)| *f == j) {
                Some((_, e)) => Err(e.clone()),
                None => Ok(job.results),
            };
            let _ = job.reply.send(reply); // the requester may have gone; that is fine
        }
    }
}

/// One forward pass; a panic inside the model becomes an error for this batch only.
fn run(model: &Model, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
    // On a rayon worker (`scope` moves the call there): the forward pass's many parallel
    // loops then fork and join inside the pool, instead of each one crossing from this
    // thread to the pool and back (≈ 1 ms per short query over ~60 operations).
    rayon::scope(
        |_| match catch_unwind(AssertUnwindSafe(|| model.embed_tokens(seqs))) {
            Ok(r) => r,
            Err(_) => Err(EmbedError::Model(
                "internal error while computing embeddings".into(),
            )),
        },
    )
}
