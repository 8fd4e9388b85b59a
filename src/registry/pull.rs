//! `pull`: manifest, then every blob (resumed, verified, moved into place), then the manifest.

use super::progress::{Progress, Throttle};
use super::transport::{is_timeout, Transport};
use super::{Options, RegistryError};
use crate::store::{self, Layer, Manifest, ModelName, Store, MANIFEST_MEDIA_TYPE};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Manifests are small JSON documents; anything much larger is not one.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Connection drops survived per blob when each attempt made no progress at all.
const MAX_FRUITLESS_ATTEMPTS: u32 = 3;
const BUF_BYTES: usize = 1 << 20;

/// Pulls `name` into `store`'s write root, reporting as Ollama's `/api/pull` does.
pub fn pull(
    store: &Store,
    name: &str,
    opts: &Options,
    emit: &mut dyn FnMut(Progress),
) -> Result<(), RegistryError> {
    let parsed = ModelName::parse(name)?;
    if name.starts_with("http://") && !opts.insecure {
        return Err(RegistryError::InsecureProtocol);
    }
    let root = store.write_root()?.to_path_buf();
    emit(Progress::status("pulling manifest"));
    let t = Transport::new(&parsed, opts);
    let (manifest, bytes) =
        fetch_manifest(&t, &parsed).map_err(|e| e.context("pull model manifest"))?;

    let mut layers: Vec<&Layer> = manifest.layers.iter().collect();
    layers.push(&manifest.config);
    for layer in &layers {
        download_blob(
            &t,
            &root,
            layer,
            opts.parallel_min_for(&parsed.host),
            opts,
            emit,
        )?;
    }
    emit(Progress::status("verifying sha256 digest"));
    emit(Progress::status("writing manifest"));
    store.install_manifest(&parsed, &bytes)?;
    emit(Progress::status("success"));
    Ok(())
}

fn fetch_manifest(t: &Transport, name: &ModelName) -> Result<(Manifest, Vec<u8>), RegistryError> {
    let url = t.url(&format!("manifests/{}", name.tag));
    let resp = t.call("GET", &url, &mut |r| {
        r.set("Accept", MANIFEST_MEDIA_TYPE)
            .call()
            .map_err(Box::new)
    })?;
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_error(t, e))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(RegistryError::BadManifest("larger than 1 MiB".into()));
    }
    let m: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadManifest(e.to_string()))?;
    // Digests become file names: every one must be a plain sha256 before anything is fetched.
    for d in m.digests() {
        if store::sha256_hex(d).is_none() {
            return Err(RegistryError::BadManifest(format!("invalid digest {d:?}")));
        }
    }
    if m.model_layer().is_none() {
        return Err(RegistryError::BadManifest(format!(
            "no layer of type {}: not a model quiver can serve",
            store::MODEL_MEDIA_TYPE
        )));
    }
    Ok((m, bytes))
}

fn read_error(t: &Transport, e: std::io::Error) -> RegistryError {
    if is_timeout(&e) {
        RegistryError::Stalled(t.stall())
    } else {
        RegistryError::Transport(e.to_string())
    }
}

/// Brings `layer` into `root/blobs`: skipped when there, otherwise downloaded into its partial
/// file from where a previous attempt stopped, hashed on the way, and renamed into place when
/// the sha256 matches. A mismatch deletes the partial file.
fn download_blob(
    t: &Transport,
    root: &Path,
    layer: &Layer,
    parallel_min: u64,
    opts: &Options,
    emit: &mut dyn FnMut(Progress),
) -> Result<(), RegistryError> {
    let digest = layer.digest.as_str();
    let total = layer.size;
    let dest = store::blob_file(root, digest)?;
    if dest.is_file() {
        emit(Progress::layer("pulling", digest, total, total));
        return Ok(());
    }
    let dir = root.join("blobs");
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let partial = store::partial_file(root, digest)?;
    let mut f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&partial)
        .map_err(|e| io(&partial, e))?;
    // Two pulls of the same blob (two processes, or two requests) take turns; the second finds
    // the blob in place when it gets the lock.
    f.lock().map_err(|e| io(&partial, e))?;
    if dest.is_file() {
        let _ = std::fs::remove_file(&partial);
        emit(Progress::layer("pulling", digest, total, total));
        return Ok(());
    }

    let mut have = f.metadata().map_err(|e| io(&partial, e))?.len();
    // A large blob comes in parallel ranges (and one begun that way resumes that way); a
    // single-stream partial file, or a registry without ranges, continues below.
    #[cfg(unix)]
    if total >= parallel_min && (have == 0 || super::parts::record_path(&partial).is_file()) {
        let complete = super::parts::download(t, &f, &partial, digest, total, opts, emit)?;
        have = if complete { total } else { 0 };
    }
    if have > total {
        f.set_len(0).map_err(|e| io(&partial, e))?;
        have = 0;
    }
    // What an earlier attempt left is hashed again rather than trusted from a side file: the
    // bytes on disk are what will be installed.
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_BYTES];
    f.seek(SeekFrom::Start(0)).map_err(|e| io(&partial, e))?;
    let mut left = have;
    while left > 0 {
        let n = f
            .read(&mut buf[..left.min(BUF_BYTES as u64) as usize])
            .map_err(|e| io(&partial, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    emit(Progress::layer("pulling", digest, total, have));

    let url = t.url(&format!("blobs/{digest}"));
    let mut fruitless = 0;
    let mut throttle = Throttle::new();
    while have < total {
        opts.cancelled()?;
        let from = have;
        let resp = t.call("GET", &url, &mut |r| {
            let r = if from > 0 {
                r.set("Range", &format!("bytes={from}-"))
            } else {
                r
            };
            r.call().map_err(Box::new)
        });
        let resp = match resp {
            Ok(r) => r,
            Err(RegistryError::Transport(_)) if fruitless + 1 < MAX_FRUITLESS_ATTEMPTS => {
                fruitless += 1;
                std::thread::sleep(std::time::Duration::from_millis(200 << fruitless));
                continue;
            }
            Err(e) => return Err(e),
        };
        let resumed = resp.status() == 206;
        if from > 0 && !resumed {
            // The registry sent the whole blob: start over.
            f.set_len(0).map_err(|e| io(&partial, e))?;
            hasher = Sha256::new();
            have = 0;
        } else if resumed {
            let start = resp
                .header("content-range")
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if start != Some(from) {
                return Err(RegistryError::Transport(format!(
                    "asked for bytes from {from}, the registry answered Content-Range {:?}",
                    resp.header("content-range").unwrap_or("")
                )));
            }
        }
        f.seek(SeekFrom::Start(have)).map_err(|e| io(&partial, e))?;
        let before = have;
        let mut body = resp.into_reader();
        let outcome = loop {
            if let Err(e) = opts.cancelled() {
                break Err(e);
            }
            let n = match body.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(read_error(t, e)),
            };
            if have + n as u64 > total {
                break Err(RegistryError::Oversized(format!(
                    "the registry sent more than the {total} bytes of {digest}"
                )));
            }
            f.write_all(&buf[..n]).map_err(|e| io(&partial, e))?;
            hasher.update(&buf[..n]);
            have += n as u64;
            if throttle.ready() {
                emit(Progress::layer("pulling", digest, total, have));
            }
        };
        match outcome {
            Ok(()) if have < total => {
                // The body ended early (a dropped connection): continue with a Range request.
                fruitless = if have > before { 0 } else { fruitless + 1 };
                if fruitless >= MAX_FRUITLESS_ATTEMPTS {
                    return Err(RegistryError::Transport(format!(
                        "the connection closed {} bytes into {digest} ({total} bytes)",
                        have
                    )));
                }
            }
            Ok(()) => {}
            Err(RegistryError::Transport(e)) => {
                fruitless = if have > before { 0 } else { fruitless + 1 };
                if fruitless >= MAX_FRUITLESS_ATTEMPTS {
                    return Err(RegistryError::Transport(e));
                }
            }
            Err(e @ RegistryError::Oversized(_)) => {
                drop(f);
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    emit(Progress::layer("pulling", digest, total, have));

    let got = format!("sha256:{:x}", hasher.finalize());
    if got != digest {
        drop(f);
        let _ = std::fs::remove_file(&partial);
        return Err(RegistryError::DigestMismatch {
            want: digest.to_string(),
            got,
        });
    }
    f.sync_all().map_err(|e| io(&partial, e))?;
    store::install_blob(root, &partial, digest)?;
    Ok(())
}

fn io(path: &Path, e: std::io::Error) -> RegistryError {
    RegistryError::Io(format!("{}: {e}", path.display()))
}
