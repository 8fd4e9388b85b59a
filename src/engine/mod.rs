//! Loaded models, keep_alive timers and eviction, `ps` data, and (in [`scheduler`]) the queue
//! that batches sequences from concurrent requests into one forward pass per model.
//!
//! Locking: one mutex guards the table of models, and it is never held while a model loads,
//! computes or unloads. A model being loaded sits in the table as `Loading`; other requests
//! for it wait on that entry's own condvar, requests for other models go straight through.

pub mod format;
pub mod keep_alive;
pub mod scheduler;

pub use keep_alive::KeepAlive;

use crate::backend::Backend;
use crate::embed::EmbedError;
use crate::gguf::{Gguf, GgufError};
use crate::model::{file_type_name, Model, ModelError};
use crate::store::{ModelEntry, Store, StoreError};
use scheduler::{Scheduler, SubmitError};
use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// keep_alive when a request gives none (`OLLAMA_KEEP_ALIVE`, else 5 minutes).
    pub keep_alive_default: KeepAlive,
    /// Most models loaded at once (`OLLAMA_MAX_LOADED_MODELS`).
    pub max_loaded_models: usize,
    /// Most tokens in one forward pass.
    pub token_budget: usize,
    /// Most tokens waiting per model before requests get 503.
    pub max_queued_tokens: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            keep_alive_default: KeepAlive::DEFAULT,
            max_loaded_models: 3,
            token_budget: crate::model::OP_BY_OP_TOKENS,
            max_queued_tokens: 4_000_000,
        }
    }
}

#[derive(Debug)]
pub enum EngineError {
    Store(StoreError),
    /// The file is there but is not a model Quiver can embed with.
    CannotEmbed {
        name: String,
        why: String,
    },
    /// Reading the model failed (I/O).
    Io(String),
    /// Too much work queued for this model.
    Busy,
    Embed(EmbedError),
    ShuttingDown,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Store(e) => write!(f, "{e}"),
            EngineError::CannotEmbed { name, why } => {
                write!(f, "{name:?} does not support embeddings: {why}")
            }
            EngineError::Io(e) => write!(f, "{e}"),
            EngineError::Busy => {
                f.write_str("server busy, please try again.  maximum pending requests exceeded")
            }
            EngineError::Embed(e) => write!(f, "{e}"),
            EngineError::ShuttingDown => f.write_str("server is shutting down"),
        }
    }
}

impl std::error::Error for EngineError {}

/// What `/api/ps`, `/api/tags` and `/api/show` call `details`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Details {
    pub parent_model: String,
    pub format: String,
    pub family: String,
    pub families: Vec<String>,
    pub parameter_size: String,
    pub quantization_level: String,
}

impl Details {
    pub fn from_header(h: &Gguf) -> Details {
        let family = h.architecture().unwrap_or_default().to_string();
        let params = h
            .get_u64("general.parameter_count")
            .unwrap_or_else(|| h.parameter_count());
        Details {
            parent_model: String::new(),
            format: "gguf".into(),
            families: vec![family.clone()],
            family,
            parameter_size: crate::model::human_number(params),
            quantization_level: file_type_name(h.get_u64("general.file_type")).into(),
        }
    }
}

/// One row of `/api/ps`.
#[derive(Clone, Debug)]
pub struct PsEntry {
    pub name: String,
    pub size: u64,
    pub digest: String,
    pub details: Details,
    pub expires_at: SystemTime,
    pub context_length: usize,
    /// Bytes of the model held in GPU memory.
    pub size_vram: u64,
}

struct Life {
    /// Requests holding a lease right now; a model in use never expires.
    active: usize,
    keep_alive: KeepAlive,
    /// When it goes, once idle (`None` = never).
    deadline: Option<Instant>,
    expires_at: SystemTime,
}

/// A model in memory with its batching worker.
pub struct Loaded {
    pub name: String,
    pub entry: ModelEntry,
    pub model: Arc<Model>,
    pub details: Details,
    /// Memory the loaded model takes: the mapped weights plus an estimate of working buffers.
    pub size: u64,
    sched: Scheduler,
    life: Mutex<Life>,
}

impl Loaded {
    fn life(&self) -> MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_expiry(&self, life: &mut Life, ka: KeepAlive) {
        life.keep_alive = ka;
        let now = Instant::now();
        match ka {
            KeepAlive::Forever => life.deadline = None,
            KeepAlive::For(d) => {
                life.deadline = Some(
                    now.checked_add(d)
                        .unwrap_or(now + Duration::from_secs(1 << 40)),
                )
            }
        }
        life.expires_at = SystemTime::now() + ka.as_duration();
    }
}

struct LoadWait {
    done: Mutex<Option<Result<(), String>>>,
    cv: Condvar,
}

enum Slot {
    Loading(Arc<LoadWait>),
    Ready(Arc<Loaded>),
}

struct State {
    models: HashMap<String, Slot>,
    stopping: bool,
}

/// Makes the backend for one model load. Each load gets its own, so that device memory (GPU
/// weights) is freed when that model is unloaded.
pub type BackendFactory = Arc<dyn Fn() -> Arc<dyn Backend> + Send + Sync>;

pub struct Engine {
    store: Arc<Store>,
    backend: BackendFactory,
    cfg: EngineConfig,
    state: Mutex<State>,
    /// Wakes the reaper when an expiry changes.
    reaper_wake: Condvar,
    reaper: Mutex<Option<JoinHandle<()>>>,
    details_cache: Mutex<HashMap<String, Details>>,
}

/// A request's hold on a loaded model. While it lives the model cannot expire; dropping it
/// starts the keep_alive timer (or unloads at once for `keep_alive: 0`).
pub struct Lease {
    engine: Arc<Engine>,
    loaded: Arc<Loaded>,
    keep_alive: KeepAlive,
    /// Time spent loading for this request (zero when it was already loaded).
    pub load_duration: Duration,
}

impl Lease {
    pub fn model(&self) -> &Model {
        &self.loaded.model
    }

    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// Pooled, unnormalised vectors of `seqs`, batched with other requests' sequences.
    pub fn embed_tokens(&self, seqs: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, EngineError> {
        match self.loaded.sched.embed(seqs) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(EngineError::Embed(e)),
            Err(SubmitError::Busy) => Err(EngineError::Busy),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.engine.release(&self.loaded, self.keep_alive);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    pub fn new(store: Arc<Store>, backend: BackendFactory, cfg: EngineConfig) -> Arc<Engine> {
        let engine = Arc::new(Engine {
            store,
            backend,
            cfg,
            state: Mutex::new(State {
                models: HashMap::new(),
                stopping: false,
            }),
            reaper_wake: Condvar::new(),
            reaper: Mutex::new(None),
            details_cache: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&engine);
        let handle = std::thread::Builder::new()
            .name("quiver-reaper".into())
            .spawn(move || reap(weak))
            .expect("spawning the reaper thread");
        *lock(&engine.reaper) = Some(handle);
        engine
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The model `name`, loaded if it is not yet; its expiry is pushed back by `keep_alive`
    /// (the server default when `None`).
    pub fn acquire(
        self: &Arc<Self>,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Lease, EngineError> {
        let ka = keep_alive.unwrap_or(self.cfg.keep_alive_default);
        let entry = self.store.resolve(name).map_err(EngineError::Store)?;
        let key = entry.name.display_short();
        let mut waited = Duration::ZERO;
        loop {
            let mut st = lock(&self.state);
            if st.stopping {
                return Err(EngineError::ShuttingDown);
            }
            let mut stale = None;
            match st.models.get(&key) {
                Some(Slot::Ready(l))
                    if l.entry.digest == entry.digest && l.entry.size != entry.size =>
                {
                    // The mapped file was truncated or grown in place: reading its pages now
                    // could fault (SIGBUS). Unload it and refuse this request; the next one
                    // loads the file as it now is (or fails to parse it, cleanly).
                    let (was, now) = (l.entry.size, entry.size);
                    let old = st.models.remove(&key);
                    drop(st);
                    drop(old);
                    return Err(EngineError::Io(format!(
                        "the file of model {key:?} changed size while it was loaded ({was} -> {now} bytes); it was unloaded: create or pull it again"
                    )));
                }
                Some(Slot::Ready(l)) if l.entry.digest == entry.digest => {
                    let l = l.clone();
                    drop(st);
                    {
                        let mut life = l.life();
                        life.active += 1;
                        l.set_expiry(&mut life, ka);
                    }
                    return Ok(Lease {
                        engine: self.clone(),
                        loaded: l,
                        keep_alive: ka,
                        load_duration: waited,
                    });
                }
                Some(Slot::Ready(_)) => {
                    // The name now points at another blob: drop the old one, load the new.
                    stale = st.models.remove(&key);
                }
                Some(Slot::Loading(w)) => {
                    let w = w.clone();
                    drop(st);
                    let t0 = Instant::now();
                    let mut done = lock(&w.done);
                    while done.is_none() {
                        done = w.cv.wait(done).unwrap_or_else(|p| p.into_inner());
                    }
                    waited += t0.elapsed();
                    if let Some(Err(why)) = done.as_ref() {
                        return Err(EngineError::CannotEmbed {
                            name: name.to_string(),
                            why: why.clone(),
                        });
                    }
                    continue;
                }
                None => {}
            }
            // Load it ourselves. Make room first.
            let mut evicted = Vec::new();
            evicted.extend(stale);
            while st.models.len() >= self.cfg.max_loaded_models.max(1) {
                match pick_victim(&st.models) {
                    Some(k) => evicted.extend(st.models.remove(&k)),
                    None => break, // everything else is still loading: go over the bound briefly
                }
            }
            let wait = Arc::new(LoadWait {
                done: Mutex::new(None),
                cv: Condvar::new(),
            });
            st.models.insert(key.clone(), Slot::Loading(wait.clone()));
            drop(st);
            drop(evicted); // unloads (joins workers) outside the lock

            let t0 = Instant::now();
            let result = self.load(&entry, &key);
            let load_duration = waited + t0.elapsed();
            let mut st = lock(&self.state);
            let outcome = match result {
                Ok(loaded) => {
                    {
                        let mut life = loaded.life();
                        life.active = 1;
                        loaded.set_expiry(&mut life, ka);
                    }
                    st.models.insert(key.clone(), Slot::Ready(loaded.clone()));
                    Ok(Lease {
                        engine: self.clone(),
                        loaded,
                        keep_alive: ka,
                        load_duration,
                    })
                }
                Err(e) => {
                    st.models.remove(&key);
                    Err(e)
                }
            };
            drop(st);
            *lock(&wait.done) = Some(outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            wait.cv.notify_all();
            return outcome;
        }
    }

    fn load(&self, entry: &ModelEntry, key: &str) -> Result<Arc<Loaded>, EngineError> {
        let cannot = |why: String| EngineError::CannotEmbed {
            name: key.to_string(),
            why,
        };
        let file = entry.open().map_err(|e| match e {
            GgufError::Io(e) => EngineError::Io(e),
            e => cannot(e.to_string()),
        })?;
        let backend = (self.backend)();
        let model = catch_unwind(AssertUnwindSafe(|| Model::load(file, backend)))
            .map_err(|_| cannot("internal error while loading the model".into()))?
            .map_err(|e: ModelError| cannot(e.to_string()))?;
        let details = Details::from_header(&model.file.header);
        lock(&self.details_cache).insert(entry.digest.clone(), details.clone());
        let info = &model.info;
        // Working buffers: a full-context sequence's activations through one layer, roughly
        // a dozen hidden-size rows per token, in f32.
        let work = (info.context_length.min(self.cfg.token_budget) * info.embedding_length * 12 * 4)
            as u64;
        let size = info.file_size + work;
        let model = Arc::new(model);
        let sched = Scheduler::start(
            model.clone(),
            key,
            self.cfg.token_budget,
            self.cfg.max_queued_tokens,
        );
        Ok(Arc::new(Loaded {
            name: key.to_string(),
            entry: entry.clone(),
            model,
            details,
            size,
            sched,
            life: Mutex::new(Life {
                active: 0,
                keep_alive: KeepAlive::DEFAULT,
                deadline: None,
                expires_at: SystemTime::now(),
            }),
        }))
    }

    fn release(&self, loaded: &Arc<Loaded>, ka: KeepAlive) {
        let unload_now = {
            let mut life = loaded.life();
            life.active -= 1;
            loaded.set_expiry(&mut life, ka);
            life.active == 0 && ka == KeepAlive::For(Duration::ZERO)
        };
        if unload_now {
            let removed = {
                let mut st = lock(&self.state);
                match st.models.get(&loaded.name) {
                    Some(Slot::Ready(l)) if Arc::ptr_eq(l, loaded) && l.life().active == 0 => {
                        st.models.remove(&loaded.name)
                    }
                    _ => None,
                }
            };
            drop(removed);
        }
        self.reaper_wake.notify_all();
    }

    /// Loaded models, the one with the longest time left first.
    pub fn ps(&self) -> Vec<PsEntry> {
        let st = lock(&self.state);
        let mut out: Vec<PsEntry> = st
            .models
            .values()
            .filter_map(|s| match s {
                Slot::Ready(l) => Some(PsEntry {
                    name: l.name.clone(),
                    size: l.size,
                    digest: l.entry.digest.clone(),
                    details: l.details.clone(),
                    expires_at: l.life().expires_at,
                    context_length: l.model.info.context_length,
                    size_vram: l.model.vram_bytes(),
                }),
                Slot::Loading(_) => None,
            })
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.expires_at));
        out
    }

    /// `details` of a model from the store, read from its header once per digest.
    pub fn details(&self, entry: &ModelEntry) -> Result<Details, EngineError> {
        if let Some(d) = lock(&self.details_cache).get(&entry.digest) {
            return Ok(d.clone());
        }
        let file = entry.open().map_err(|e| EngineError::Io(e.to_string()))?;
        let d = Details::from_header(&file.header);
        lock(&self.details_cache).insert(entry.digest.clone(), d.clone());
        Ok(d)
    }

    /// Unloads everything and stops the reaper. Requests still holding a lease finish first
    /// (their model stays alive until they drop it).
    pub fn shutdown(&self) {
        let models = {
            let mut st = lock(&self.state);
            st.stopping = true;
            std::mem::take(&mut st.models)
        };
        self.reaper_wake.notify_all();
        drop(models);
        if let Some(h) = lock(&self.reaper).take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        lock(&self.state).stopping = true;
        self.reaper_wake.notify_all();
    }
}

/// The model to unload to make room: an idle one before a busy one, then the soonest to expire.
fn pick_victim(models: &HashMap<String, Slot>) -> Option<String> {
    models
        .iter()
        .filter_map(|(k, s)| match s {
            Slot::Ready(l) => {
                let life = l.life();
                Some((
                    life.active > 0,
                    life.deadline.is_none(),
                    life.deadline,
                    k.clone(),
                ))
            }
            Slot::Loading(_) => None,
        })
        .min()
        .map(|(_, _, _, k)| k)
}

/// The reaper: unloads idle models whose time ran out, sleeping until the next deadline.
fn reap(engine: Weak<Engine>) {
    loop {
        let Some(e) = engine.upgrade() else { return };
        let mut st = lock(&e.state);
        if st.stopping {
            return;
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (k, s) in st.models.iter() {
            if let Slot::Ready(l) = s {
                let life = l.life();
                match life.deadline {
                    Some(d) if life.active == 0 && d <= now => expired.push(k.clone()),
                    Some(d) if life.active == 0 => next = Some(next.map_or(d, |n| n.min(d))),
                    _ => {}
                }
            }
        }
        if !expired.is_empty() {
            let gone: Vec<Slot> = expired.iter().filter_map(|k| st.models.remove(k)).collect();
            drop(st);
            drop(gone); // joins the workers and unmaps, outside the lock
            continue;
        }
        // Sleep at most a second at a time so that a dropped engine is noticed.
        let sleep = next
            .map_or(Duration::from_secs(1), |n| n.saturating_duration_since(now))
            .min(Duration::from_secs(1));
        let st = e
            .reaper_wake
            .wait_timeout(st, sleep)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        drop(st);
        drop(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_of_the_f16_fixture() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-f16.gguf");
        let file = crate::gguf::GgufFile::open(std::path::Path::new(path)).unwrap();
        let d = Details::from_header(&file.header);
        assert_eq!(d.family, "bert");
        assert_eq!(d.families, vec!["bert".to_string()]);
        assert_eq!(d.quantization_level, "F16");
        assert_eq!(d.parameter_size, "22.57M");
        assert_eq!(d.format, "gguf");
    }
}
