//! Ollama's manifest format (an OCI image manifest, schema 2) and blob naming.

use super::StoreError;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
pub const MODEL_MEDIA_TYPE: &str = "application/vnd.ollama.image.model";

/// Manifests are small JSON documents; anything much larger is not one.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Layer {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub config: Layer,
    pub layers: Vec<Layer>,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest, StoreError> {
        let f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
        let mut text = String::new();
        Read::take(f, MAX_MANIFEST_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| StoreError::Corrupt(format!("manifest {}: {e}", path.display())))?;
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(StoreError::Corrupt(format!(
                "manifest {} is too large",
                path.display()
            )));
        }
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("manifest {}: {e}", path.display())))
    }

    /// The layer holding the GGUF file.
    pub fn model_layer(&self) -> Option<&Layer> {
        self.layers
            .iter()
            .find(|l| l.media_type == MODEL_MEDIA_TYPE)
    }

    /// Every blob this manifest refers to (config included).
    pub fn digests(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.config.digest.as_str())
            .chain(self.layers.iter().map(|l| l.digest.as_str()))
    }
}

/// The hex part of `sha256:<64 lower-case hex>`, or `None` if `digest` is not exactly that
/// (a digest becomes a file name, so nothing else may pass).
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .or_else(|| digest.strip_prefix("sha256-"))?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

/// `<root>/blobs/sha256-<hex>` for a validated digest.
pub fn blob_path(root: &Path, digest: &str) -> Result<PathBuf, StoreError> {
    let hex = sha256_hex(digest)
        .ok_or_else(|| StoreError::Corrupt(format!("invalid blob digest {digest:?}")))?;
    Ok(root.join("blobs").join(format!("sha256-{hex}")))
}

pub fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{}: {e}", path.display()))
}

/// Hex sha256 of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A temporary file name in `dir`, unique to this process and call, so that concurrent writers
/// never share one.
fn temp_path(dir: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".tmp-{}-{n}", std::process::id()))
}

/// Copies `src` into a new temporary file in `dir` (synced) and returns its path with the hex
/// sha256 and size of what was written. The caller renames it into place.
fn write_temp(src: &mut dyn Read, dir: &Path) -> Result<(PathBuf, String, u64), StoreError> {
    let tmp = temp_path(dir);
    let result = (|| {
        let mut out = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::Io(e.to_string())),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| io_err(&tmp, e))?;
            size += n as u64;
        }
        out.sync_all().map_err(|e| io_err(&tmp, e))?;
        Ok((hex(&hasher.finalize()), size))
    })();
    match result {
        Ok((digest, size)) => Ok((tmp, digest, size)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn rename_into_place(tmp: &Path, dest: &Path) -> Result<(), StoreError> {
    std::fs::rename(tmp, dest).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        io_err(dest, e)
    })
}

/// Writes `bytes` to `dest` atomically: a temporary file in the same directory, then a rename.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let (tmp, _, _) = write_temp(&mut &bytes[..], dir)?;
    rename_into_place(&tmp, dest)
}

/// Stores `src` as a blob under `<root>/blobs`, named by its sha256, atomically. Returns the
/// digest (`sha256:<hex>`) and size.
pub fn write_blob(root: &Path, src: &mut dyn Read) -> Result<(String, u64), StoreError> {
    let dir = root.join("blobs");
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let (tmp, hex, size) = write_temp(src, &dir)?;
    let digest = format!("sha256:{hex}");
    rename_into_place(&tmp, &blob_path(root, &digest)?)?;
    Ok((digest, size))
}

/// Hex sha256 of everything `src` yields.
pub fn sha256_reader(src: &mut dyn Read) -> Result<String, StoreError> {
    let mut hasher = Sha256::new();
    std::io::copy(src, &mut hasher).map_err(|e| StoreError::Io(e.to_string()))?;
    Ok(hex(&hasher.finalize()))
}
