//! Writing into the store from outside: the registry client's partial downloads, atomic
//! installation of verified blobs and of manifests, and reading a manifest's raw bytes back for
//! a push or a copy.
//!
//! A download is written to `blobs/sha256-<hex>-partial` (Ollama's naming, so start-up cleanup
//! and people recognise it) and renamed to `blobs/sha256-<hex>` only after its sha256 has been
//! checked, so `list` and `serve` never see half a blob. A manifest is renamed into place only
//! after every blob it names is there.

use super::manifest::{self, io_err, Manifest};
use super::{find_manifest, lock_root, manifest_dir, ModelName, Store, StoreError};
use std::path::{Path, PathBuf};

/// The suffix of a partial download in `blobs/`.
pub const PARTIAL_SUFFIX: &str = "-partial";

/// `<root>/blobs/sha256-<hex>` for a validated digest.
pub fn blob_file(root: &Path, digest: &str) -> Result<PathBuf, StoreError> {
    manifest::blob_path(root, digest)
}

/// `<root>/blobs/sha256-<hex>-partial`: where a download of `digest` accumulates.
pub fn partial_file(root: &Path, digest: &str) -> Result<PathBuf, StoreError> {
    let mut p = manifest::blob_path(root, digest)?.into_os_string();
    p.push(PARTIAL_SUFFIX);
    Ok(PathBuf::from(p))
}

/// Every partial download under `root` and the range records beside them
/// (`sha256-<hex>-partial`, `sha256-<hex>-partial-parts`), for start-up cleanup of old ones.
pub fn partial_files(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root.join("blobs")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("sha256-") && name.contains(PARTIAL_SUFFIX)
        })
        .map(|e| e.path())
        .collect()
}

/// Moves a finished, verified download into place as the blob `digest`.
pub fn install_blob(root: &Path, partial: &Path, digest: &str) -> Result<(), StoreError> {
    let dest = blob_file(root, digest)?;
    std::fs::rename(partial, &dest).map_err(|e| io_err(&dest, e))
}

/// A stored model's manifest, as its bytes on disk and parsed.
pub struct StoredManifest {
    pub root: PathBuf,
    pub name: ModelName,
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

impl StoredManifest {
    /// Where the blob `digest` of this model lies.
    pub fn blob(&self, digest: &str) -> Result<PathBuf, StoreError> {
        blob_file(&self.root, digest)
    }
}

impl Store {
    /// The root new models are written to.
    pub fn write_root(&self) -> Result<&Path, StoreError> {
        self.roots.first().map(PathBuf::as_path).ok_or_else(|| {
            StoreError::Io("no model directory: set QUIVER_MODELS or HOME".to_string())
        })
    }

    /// Stores what `src` yields as a blob in the write root; returns its digest and size.
    pub fn write_blob(&self, src: &mut dyn std::io::Read) -> Result<(String, u64), StoreError> {
        let root = self.write_root()?;
        manifest::write_blob(root, src)
    }

    /// `<write root>/blobs/sha256-<hex>`, or an error for a digest that is not one.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        blob_file(self.write_root()?, digest)
    }

    /// `name`'s manifest from the first root that has one (the bundled model has none).
    pub fn manifest(&self, name: &str) -> Result<StoredManifest, StoreError> {
        let parsed = ModelName::parse(name)?;
        for root in &self.roots {
            if let Some((found, path)) = find_manifest(root, &parsed) {
                let manifest = Manifest::read(&path)?;
                let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
                return Ok(StoredManifest {
                    root: root.clone(),
                    name: found,
                    bytes,
                    manifest,
                });
            }
        }
        Err(StoreError::NotFound(name.to_string()))
    }

    /// Writes `bytes` (a manifest) as `name` in the write root, atomically, once every blob it
    /// names is in that root; an older manifest under the name in another letter case is
    /// replaced, and blobs only it used are deleted.
    pub fn install_manifest(&self, name: &ModelName, bytes: &[u8]) -> Result<(), StoreError> {
        let root = self.write_root()?;
        // Under the lock a concurrent `remove` cannot collect a blob between the check that it
        // is there and the rename that makes the manifest refer to it.
        let _lock = lock_root(root)?;
        install_manifest_locked(root, name, bytes)
    }

    /// Ollama's `copy`: `dst` gets `src`'s manifest (same blobs, no bytes copied when both are
    /// in the write root; otherwise the blobs are copied there first).
    pub fn copy(&self, src: &str, dst: &str) -> Result<(), StoreError> {
        let dst = ModelName::parse(dst)?;
        let from = self.manifest(src)?;
        let root = self.write_root()?;
        if from.root != root {
            for d in from.manifest.digests() {
                let target = blob_file(root, d)?;
                if !target.is_file() {
                    let source = from.blob(d)?;
                    let f = std::fs::File::open(&source).map_err(|e| io_err(&source, e))?;
                    let (got, _) = manifest::write_blob(root, &mut std::io::BufReader::new(f))?;
                    if got != d {
                        return Err(StoreError::Corrupt(format!(
                            "blob {d} of {} has sha256 {got}",
                            from.name
                        )));
                    }
                }
            }
        }
        self.install_manifest(&dst, &from.bytes)
    }
}

/// [`Store::install_manifest`] for a caller that holds `root`'s lock.
pub(super) fn install_manifest_locked(
    root: &Path,
    name: &ModelName,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let parsed = name.to_lowercase();
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("manifest of {parsed}: {e}")))?;
    for d in m.digests() {
        if !blob_file(root, d)?.is_file() {
            return Err(StoreError::Corrupt(format!(
                "manifest of {parsed} names blob {d}, which is not in {}",
                root.display()
            )));
        }
    }
    let old = find_manifest(root, &parsed).map(|(_, p)| {
        let m = Manifest::read(&p).ok();
        (p, m)
    });
    let dir = manifest_dir(root, &parsed);
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let path = dir.join(&parsed.tag);
    manifest::write_atomic(&path, bytes)?;
    if let Some((old_path, old_manifest)) = old {
        if old_path != path {
            let _ = std::fs::remove_file(&old_path);
            super::prune_empty_dirs(root, &old_path);
        }
        if let Some(old_manifest) = old_manifest {
            super::collect_garbage(root, &old_manifest);
        }
    }
    Ok(())
}
