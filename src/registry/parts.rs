//! Parallel ranged download of one large blob: the partial file is allocated at full size and
//! a few threads each fetch one byte range of it with `Range`, writing at their offsets.
//!
//! How far each range got is kept in `sha256-<hex>-partial-parts` (rewritten every 100 ms,
//! always *after* the bytes it counts were written), so a killed pull resumes every range from
//! where its record says. The sha256 is checked by the caller over the whole file afterwards:
//! ranges arrive out of order, so it cannot be computed on the way.

use super::progress::{Progress, Throttle};
use super::transport::{is_timeout, Transport};
use super::{Options, RegistryError};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Threads per blob: enough to fill a fast link from a CDN, few enough for a 2-core machine.
const PARTS: u64 = 4;
const BUF_BYTES: usize = 256 << 10;
const MAX_FRUITLESS_ATTEMPTS: u32 = 3;

/// `<partial>-parts`: the per-range progress record beside a partial file.
pub(super) fn record_path(partial: &Path) -> PathBuf {
    let mut p = partial.as_os_str().to_owned();
    p.push("-parts");
    PathBuf::from(p)
}

/// The ranges `[start, end)` a blob of `total` bytes is split into.
fn ranges(total: u64) -> Vec<(u64, u64)> {
    let step = total.div_ceil(PARTS);
    (0..PARTS)
        .map(|i| (i * step, ((i + 1) * step).min(total)))
        .filter(|(s, e)| s < e)
        .collect()
}

/// The record's per-range byte counts, if it exists and fits `total`.
fn read_record(path: &Path, total: u64) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    if v.get("total")?.as_u64()? != total {
        return None;
    }
    let done: Vec<u64> = v
        .get("done")?
        .as_array()?
        .iter()
        .map(|d| d.as_u64())
        .collect::<Option<_>>()?;
    let r = ranges(total);
    (done.len() == r.len() && done.iter().zip(&r).all(|(d, (s, e))| *d <= e - s)).then_some(done)
}

fn write_record(path: &Path, total: u64, done: &[u64]) -> Result<(), RegistryError> {
    let tmp = {
        let mut p = path.as_os_str().to_owned();
        p.push(".tmp");
        PathBuf::from(p)
    };
    let text = serde_json::json!({ "total": total, "done": done }).to_string();
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| RegistryError::Io(format!("{}: {e}", path.display())))
}

enum PartError {
    /// The registry answered a ranged request with the whole blob.
    NoRanges,
    Registry(RegistryError),
}

/// Downloads `digest` into `f` (the locked partial file) range by range. `Ok(true)`: every
/// byte is there (the record is removed; the caller verifies). `Ok(false)`: the registry does
/// not do ranges; the file is emptied for a plain download.
pub(super) fn download(
    t: &Transport,
    f: &File,
    partial: &Path,
    digest: &str,
    total: u64,
    opts: &Options,
    emit: &mut dyn FnMut(Progress),
) -> Result<bool, RegistryError> {
    let record = record_path(partial);
    let io = |e: std::io::Error| RegistryError::Io(format!("{}: {e}", partial.display()));
    let ranges = ranges(total);
    let done: Vec<u64> = match read_record(&record, total) {
        Some(d) => d,
        None => {
            // The record first: a file of full length without one would read as complete.
            let zeros = vec![0; ranges.len()];
            write_record(&record, total, &zeros)?;
            f.set_len(total).map_err(io)?;
            zeros
        }
    };
    let done: Vec<AtomicU64> = done.into_iter().map(AtomicU64::new).collect();
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<PartError>> = Mutex::new(None);
    let url = t.url(&format!("blobs/{digest}"));
    let snapshot = || -> Vec<u64> { done.iter().map(|d| d.load(Ordering::Acquire)).collect() };

    std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .zip(&done)
            .map(|(&range, done)| {
                let (url, stop, failure) = (&url, &stop, &failure);
                s.spawn(move || {
                    if let Err(e) = fetch_range(t, f, url, range, done, stop, opts) {
                        stop.store(true, Ordering::Relaxed);
                        failure
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                    }
                })
            })
            .collect();
        let mut throttle = Throttle::new();
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
            if throttle.ready() {
                let now = snapshot();
                emit(Progress::layer("pulling", digest, total, now.iter().sum()));
                if let Err(e) = write_record(&record, total, &now) {
                    stop.store(true, Ordering::Relaxed);
                    failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(PartError::Registry(e));
                }
            }
        }
    });
    let now = snapshot();
    match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(PartError::NoRanges) => {
            let _ = std::fs::remove_file(&record);
            f.set_len(0).map_err(io)?;
            Ok(false)
        }
        Some(PartError::Registry(e)) => {
            let _ = write_record(&record, total, &now);
            Err(e)
        }
        None => {
            emit(Progress::layer("pulling", digest, total, total));
            let _ = std::fs::remove_file(&record);
            Ok(true)
        }
    }
}

/// Fetches `[start, end)` from where `done` says, retrying dropped connections.
fn fetch_range(
    t: &Transport,
    f: &File,
    url: &str,
    (start, end): (u64, u64),
    done: &AtomicU64,
    stop: &AtomicBool,
    opts: &Options,
) -> Result<(), PartError> {
    let mut buf = vec![0u8; BUF_BYTES];
    let mut fruitless = 0;
    loop {
        let mut at = start + done.load(Ordering::Acquire);
        if at >= end || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        opts.cancelled().map_err(PartError::Registry)?;
        let before = at;
        let result = t.call("GET", url, &mut |r| {
            r.set("Range", &format!("bytes={at}-{}", end - 1))
                .call()
                .map_err(Box::new)
        });
        let outcome = match result {
            Ok(resp) if resp.status() != 206 => return Err(PartError::NoRanges),
            Ok(resp) => {
                let mut body = resp.into_reader();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    opts.cancelled().map_err(PartError::Registry)?;
                    let n = match body.read(&mut buf) {
                        Ok(0) => break Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) if is_timeout(&e) => {
                            return Err(PartError::Registry(RegistryError::Stalled(t.stall())))
                        }
                        Err(e) => break Err(RegistryError::Transport(e.to_string())),
                    };
                    if at + n as u64 > end {
                        return Err(PartError::Registry(RegistryError::Oversized(format!(
                            "the registry sent more than bytes {start}-{end} asked for"
                        ))));
                    }
                    f.write_all_at(&buf[..n], at)
                        .map_err(|e| PartError::Registry(RegistryError::Io(e.to_string())))?;
                    at += n as u64;
                    done.fetch_add(n as u64, Ordering::Release);
                }
            }
            Err(e @ RegistryError::Transport(_)) => Err(e),
            Err(e) => return Err(PartError::Registry(e)),
        };
        fruitless = if at > before { 0 } else { fruitless + 1 };
        if fruitless >= MAX_FRUITLESS_ATTEMPTS {
            return Err(PartError::Registry(match outcome {
                Err(e) => e,
                Ok(()) => RegistryError::Transport(format!(
                    "the connection kept closing at byte {at} of {url}"
                )),
            }));
        }
        if fruitless > 0 {
            std::thread::sleep(Duration::from_millis(200 << fruitless));
        }
    }
}
