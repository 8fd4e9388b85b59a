//! `push`: every blob the registry lacks (HEAD, then a monolithic upload: POST for an upload
//! URL, PUT `?digest=` with the bytes), then the manifest.

use super::progress::{Progress, Throttle};
use super::transport::Transport;
use super::{Options, RegistryError};
use crate::store::{Layer, ModelName, Store, StoredManifest, MANIFEST_MEDIA_TYPE};
use std::fs::File;
use std::io::Read;

/// Pushes `name` from `store` to the registry its name points at, reporting as Ollama's
/// `/api/push` does.
pub fn push(
    store: &Store,
    name: &str,
    opts: &Options,
    emit: &mut dyn FnMut(Progress),
) -> Result<(), RegistryError> {
    emit(Progress::status("retrieving manifest"));
    if name.starts_with("http://") && !opts.insecure {
        return Err(RegistryError::InsecureProtocol);
    }
    let parsed = ModelName::parse(name)?;
    let stored = store.manifest(name).inspect_err(|_| {
        emit(Progress::status("couldn't retrieve manifest"));
    })?;
    let t = Transport::new(&parsed, opts);
    let mut layers: Vec<&Layer> = stored.manifest.layers.iter().collect();
    layers.push(&stored.manifest.config);
    for layer in layers {
        upload_blob(&t, &stored, layer, opts, emit)?;
    }
    emit(Progress::status("pushing manifest"));
    let media_type = if stored.manifest.media_type.is_empty() {
        MANIFEST_MEDIA_TYPE
    } else {
        stored.manifest.media_type.as_str()
    };
    let url = t.url(&format!("manifests/{}", parsed.tag));
    t.call("PUT", &url, &mut |r| {
        r.set("Content-Type", media_type)
            .send_bytes(&stored.bytes)
            .map_err(Box::new)
    })?;
    emit(Progress::status("success"));
    Ok(())
}

fn upload_blob(
    t: &Transport,
    stored: &StoredManifest,
    layer: &Layer,
    opts: &Options,
    emit: &mut dyn FnMut(Progress),
) -> Result<(), RegistryError> {
    opts.cancelled()?;
    let digest = layer.digest.as_str();
    let path = stored.blob(digest)?;
    let size = std::fs::metadata(&path)
        .map_err(|e| RegistryError::Io(format!("{}: {e}", path.display())))?
        .len();
    emit(Progress::layer("pushing", digest, size, 0));
    match t.call("HEAD", &t.url(&format!("blobs/{digest}")), &mut |r| {
        r.call().map_err(Box::new)
    }) {
        Ok(_) => {
            emit(Progress::layer("pushing", digest, size, size));
            return Ok(());
        }
        Err(RegistryError::NotFound) => {}
        Err(e) => return Err(e),
    }
    let resp = t.call("POST", &t.url("blobs/uploads/"), &mut |r| {
        r.set("Content-Length", "0")
            .send_bytes(&[])
            .map_err(Box::new)
    })?;
    let location = resp.header("location").ok_or_else(|| {
        RegistryError::Status(resp.status(), "upload answer without a Location".into())
    })?;
    let mut url = t.absolute(location);
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("digest=");
    url.push_str(digest);

    // The body is re-opened if a bearer challenge makes the request go twice.
    let mut open_error = None;
    let mut throttle = Throttle::new();
    let result = t.call("PUT", &url, &mut |r| {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                open_error = Some(format!("{}: {e}", path.display()));
                return r.send_bytes(&[]).map_err(Box::new);
            }
        };
        let counting = Counting {
            inner: file,
            done: 0,
            report: &mut |done| {
                if throttle.ready() {
                    emit(Progress::layer("pushing", digest, size, done));
                }
                !opts.cancel.load(std::sync::atomic::Ordering::Relaxed)
            },
        };
        r.set("Content-Type", "application/octet-stream")
            .set("Content-Length", &size.to_string())
            .send(counting)
            .map_err(Box::new)
    });
    if let Some(e) = open_error {
        return Err(RegistryError::Io(e));
    }
    opts.cancelled()?;
    result?;
    emit(Progress::layer("pushing", digest, size, size));
    Ok(())
}

/// Counts what is read through it and reports; the report's `false` stops the upload.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    report: &'a mut dyn FnMut(u64) -> bool,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !(self.report)(self.done) {
            return Err(std::io::Error::other("interrupted"));
        }
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        Ok(n)
    }
}
