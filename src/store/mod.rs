//! Model names → GGUF files. Sources, first match wins: `QUIVER_MODELS` (Ollama's layout),
//! `OLLAMA_MODELS` or `~/.ollama/models` (models an Ollama user already pulled), then the
//! bundled default. Names are validated before they ever become paths.
//!
//! On disk the layout is Ollama's: `manifests/<host>/<namespace>/<model>/<tag>` (a JSON
//! manifest) and `blobs/sha256-<hex>` (the layer whose media type is
//! `application/vnd.ollama.image.model` is the GGUF file).

pub mod bundled;
pub mod hygiene;
mod install;
mod manifest;
mod name;

pub use install::{
    blob_file, install_blob, partial_file, partial_files, StoredManifest, PARTIAL_SUFFIX,
};
pub use manifest::{
    sha256_hex, Layer, Manifest, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, MODEL_MEDIA_TYPE,
};
pub use name::{DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG};

use crate::gguf::{GgufError, GgufFile, ModelBytes};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A model name as Ollama parses it: `[host/][namespace/]model[:tag]`, defaults
/// `registry.ollama.ai`, `library`, `latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelName {
    pub host: String,
    pub namespace: String,
    pub model: String,
    pub tag: String,
}

impl ModelName {
    /// Parses and validates `s`; a name that could escape the store (`..`, `/` in the wrong
    /// place, control characters, …) is an error.
    pub fn parse(s: &str) -> Result<ModelName, StoreError> {
        name::parse(s)
    }

    /// The short form Ollama shows: `all-minilm:latest`, `user/model:tag`, `host/ns/model:tag`.
    pub fn display_short(&self) -> String {
        name::display_short(self)
    }
}

/// Where a model's bytes are.
#[derive(Clone, Debug)]
pub enum ModelSource {
    File(PathBuf),
    Bundled(&'static [u8]),
}

/// A model the store can serve.
#[derive(Clone, Debug)]
pub struct ModelEntry {
    pub name: ModelName,
    pub source: ModelSource,
    /// sha256 of the GGUF blob, lower-case hex without a prefix.
    pub digest: String,
    pub size: u64,
    pub modified: SystemTime,
}

impl ModelEntry {
    /// Maps (or wraps) and parses the GGUF file.
    pub fn open(&self) -> Result<GgufFile, GgufError> {
        match &self.source {
            ModelSource::File(path) => GgufFile::open(path),
            ModelSource::Bundled(bytes) => GgufFile::from_bytes(ModelBytes::Static(bytes)),
        }
    }
}

#[derive(Debug)]
pub enum StoreError {
    /// The name is not a valid model name (the message says why).
    InvalidName(String),
    /// No source has this model.
    NotFound(String),
    Io(String),
    /// A manifest or blob that is not what Ollama's layout says it should be.
    Corrupt(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::InvalidName(why) => write!(f, "invalid model name: {why}"),
            StoreError::NotFound(name) => {
                write!(f, "model {name:?} not found, try pulling it first")
            }
            StoreError::Io(e) => write!(f, "{e}"),
            StoreError::Corrupt(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub struct Store {
    /// Ollama-layout roots searched in order (each has `manifests/` and `blobs/`).
    pub roots: Vec<PathBuf>,
    /// The bundled default model's bytes, if this binary carries them.
    pub bundled: Option<&'static [u8]>,
}

impl Store {
    /// Roots from `QUIVER_MODELS`, then `OLLAMA_MODELS` or `~/.ollama/models`.
    pub fn from_env(bundled: Option<&'static [u8]>) -> Store {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let mut roots = Vec::new();
        roots.extend(var("QUIVER_MODELS"));
        match var("OLLAMA_MODELS") {
            Some(dir) => roots.push(dir),
            None => roots.extend(var("HOME").map(|h| h.join(".ollama").join("models"))),
        }
        Store::new(roots, bundled)
    }

    pub fn new(roots: Vec<PathBuf>, bundled: Option<&'static [u8]>) -> Store {
        Store { roots, bundled }
    }

    /// The model `name` names, from the first source that has it. A path to a `.gguf` file is
    /// not a name: see [`Store::resolve_path`].
    pub fn resolve(&self, name: &str) -> Result<ModelEntry, StoreError> {
        let parsed = ModelName::parse(name)?;
        for root in &self.roots {
            if let Some((found, path)) = find_manifest(root, &parsed) {
                return entry_from_manifest(root, found, &path);
            }
        }
        match self.bundled_entry() {
            Some(entry) if entry.name.eq_fold(&parsed) => Ok(entry),
            _ => Err(StoreError::NotFound(name.to_string())),
        }
    }

    /// A `.gguf` file given by path (the CLI accepts these; the server does not).
    pub fn resolve_path(&self, path: &Path) -> Result<ModelEntry, StoreError> {
        let meta = std::fs::metadata(path).map_err(|e| manifest::io_err(path, e))?;
        if !meta.is_file() {
            return Err(StoreError::Io(format!("{}: not a file", path.display())));
        }
        let f = std::fs::File::open(path).map_err(|e| manifest::io_err(path, e))?;
        let digest = manifest::sha256_reader(&mut std::io::BufReader::new(f))?;
        Ok(ModelEntry {
            name: name_for_file(path),
            source: ModelSource::File(path.to_path_buf()),
            digest,
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    /// Every model available, for `/api/tags` and `quiver list`: the manifests of every root
    /// (the first root wins when two hold the same name) and the bundled model, newest first.
    /// A manifest that cannot be read is left out, as Ollama does.
    pub fn list(&self) -> Result<Vec<ModelEntry>, StoreError> {
        let mut out: Vec<ModelEntry> = Vec::new();
        for root in &self.roots {
            for (name, path) in walk_manifests(root) {
                if out.iter().any(|e| e.name.eq_fold(&name)) {
                    continue;
                }
                if let Ok(entry) = entry_from_manifest(root, name, &path) {
                    out.push(entry);
                }
            }
        }
        if let Some(entry) = self.bundled_entry() {
            if !out.iter().any(|e| e.name.eq_fold(&entry.name)) {
                out.push(entry);
            }
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.modified));
        Ok(out)
    }

    /// Writes `gguf` into the first root as `name`, in Ollama's layout.
    pub fn create(&self, name: &str, gguf: &Path) -> Result<ModelEntry, StoreError> {
        let parsed = ModelName::parse(name)?.to_lowercase();
        let root = self.roots.first().ok_or_else(|| {
            StoreError::Io("no model directory: set QUIVER_MODELS or HOME".to_string())
        })?;
        // The file must be a GGUF that parses before anything is written.
        let file = GgufFile::open(gguf)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", gguf.display())))?;
        let config = config_json(&file);
        drop(file);

        let _lock = lock_root(root)?;
        let src = std::fs::File::open(gguf).map_err(|e| manifest::io_err(gguf, e))?;
        let (model_digest, model_size) =
            manifest::write_blob(root, &mut std::io::BufReader::new(src))?;
        let config = serde_json::json!({
            "model_format": "gguf",
            "model_family": config.0,
            "model_families": [config.0],
            "model_type": config.1,
            "file_type": config.2,
            "rootfs": {"type": "layers", "diff_ids": [model_digest]},
        });
        let config_bytes =
            serde_json::to_vec(&config).map_err(|e| StoreError::Io(e.to_string()))?;
        let (config_digest, config_size) = manifest::write_blob(root, &mut &config_bytes[..])?;
        let m = Manifest {
            schema_version: 2,
            media_type: manifest::MANIFEST_MEDIA_TYPE.to_string(),
            config: Layer {
                media_type: manifest::CONFIG_MEDIA_TYPE.to_string(),
                digest: config_digest,
                size: config_size,
            },
            layers: vec![Layer {
                media_type: MODEL_MEDIA_TYPE.to_string(),
                digest: model_digest,
                size: model_size,
            }],
        };
        let json = serde_json::to_vec(&m).map_err(|e| StoreError::Io(e.to_string()))?;
        install::install_manifest_locked(root, &parsed, &json)?;
        let path = manifest_dir(root, &parsed).join(&parsed.tag);
        entry_from_manifest(root, parsed, &path)
    }

    /// Removes `name`'s manifest (and its blob when nothing else refers to it) from the first
    /// root that has it: the one [`Store::resolve`] would serve it from.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let parsed = ModelName::parse(name)?;
        for root in &self.roots {
            if let Some((_, path)) = find_manifest(root, &parsed) {
                let _lock = lock_root(root)?;
                let m = Manifest::read(&path);
                std::fs::remove_file(&path).map_err(|e| manifest::io_err(&path, e))?;
                prune_empty_dirs(root, &path);
                if let Ok(m) = m {
                    collect_garbage(root, &m);
                }
                return Ok(());
            }
        }
        match self.bundled_entry() {
            Some(entry) if entry.name.eq_fold(&parsed) => Err(StoreError::Io(format!(
                "{} is built into quiver and cannot be removed",
                entry.name.display_short()
            ))),
            _ => Err(StoreError::NotFound(name.to_string())),
        }
    }

    /// Removes what interrupted creates and pulls left in the root Quiver writes to (the
    /// first; see [`hygiene`]); returns the paths removed.
    pub fn clean_stale(&self) -> Vec<PathBuf> {
        self.roots
            .first()
            .map(|r| hygiene::clean(r).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The bundled default model, if this binary carries one.
    pub fn bundled_entry(&self) -> Option<ModelEntry> {
        let bytes = self.bundled?;
        Some(ModelEntry {
            name: ModelName::parse(bundled::NAME).expect("the bundled name is valid"),
            source: ModelSource::Bundled(bytes),
            digest: bundled::digest(bytes),
            size: bytes.len() as u64,
            modified: bundled::modified(),
        })
    }
}

/// Holds `<root>/.quiver-lock` exclusively until the returned file is dropped, so that one
/// Quiver process's `remove` (which prunes directories and collects unreferenced blobs) cannot
/// run between another's writing a blob and writing the manifest that refers to it.
fn lock_root(root: &Path) -> Result<std::fs::File, StoreError> {
    std::fs::create_dir_all(root).map_err(|e| manifest::io_err(root, e))?;
    let path = root.join(".quiver-lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| manifest::io_err(&path, e))?;
    f.lock().map_err(|e| manifest::io_err(&path, e))?;
    Ok(f)
}

/// `<root>/manifests/<host>/<namespace>/<model>` for a validated name.
fn manifest_dir(root: &Path, name: &ModelName) -> PathBuf {
    let mut p = root.join("manifests");
    for part in &name.parts()[..3] {
        p.push(part);
    }
    p
}

/// The manifest of `name` under `root`, matching each path part without regard to letter case
/// (Ollama's rule; older Ollama versions kept the case the user typed). Returns the name as it
/// is spelled on disk. Only validated parts are ever joined to `root`.
fn find_manifest(root: &Path, name: &ModelName) -> Option<(ModelName, PathBuf)> {
    let mut dir = root.join("manifests");
    let mut found: Vec<String> = Vec::with_capacity(4);
    for (i, part) in name.parts().into_iter().enumerate() {
        let want_file = i == 3;
        let is_kind = |p: &Path| if want_file { p.is_file() } else { p.is_dir() };
        let exact = dir.join(part);
        let hit = if is_kind(&exact) {
            Some(part.to_string())
        } else {
            std::fs::read_dir(&dir).ok()?.flatten().find_map(|e| {
                let n = e.file_name().into_string().ok()?;
                (n.eq_ignore_ascii_case(part) && is_kind(&dir.join(&n))).then_some(n)
            })
        }?;
        dir.push(&hit);
        found.push(hit);
    }
    let [host, namespace, model, tag]: [String; 4] = found.try_into().ok()?;
    Some((
        ModelName {
            host,
            namespace,
            model,
            tag,
        },
        dir,
    ))
}

/// Every `(name, manifest path)` under `<root>/manifests`, skipping entries whose path does
/// not spell a valid name.
fn walk_manifests(root: &Path) -> Vec<(ModelName, PathBuf)> {
    fn subdirs(dir: &Path, want_files: bool) -> Vec<(String, PathBuf)> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut v: Vec<(String, PathBuf)> = rd
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                let p = e.path();
                let ok = if want_files { p.is_file() } else { p.is_dir() };
                ok.then_some((n, p))
            })
            .collect();
        v.sort();
        v
    }
    let mut out = Vec::new();
    for (host, hp) in subdirs(&root.join("manifests"), false) {
        for (ns, np) in subdirs(&hp, false) {
            for (model, mp) in subdirs(&np, false) {
                for (tag, tp) in subdirs(&mp, true) {
                    if let Ok(name) = ModelName::parse(&format!("{host}/{ns}/{model}:{tag}")) {
                        // The parse must give back exactly these parts (no scheme stripped,
                        // nothing re-split), or the entry is not a model's manifest.
                        if name.parts()
                            == [host.as_str(), ns.as_str(), model.as_str(), tag.as_str()]
                        {
                            out.push((name, tp));
                        }
                    }
                }
            }
        }
    }
    out
}

fn entry_from_manifest(
    root: &Path,
    name: ModelName,
    path: &Path,
) -> Result<ModelEntry, StoreError> {
    let m = Manifest::read(path)?;
    let layer = m.model_layer().ok_or_else(|| {
        StoreError::Corrupt(format!("manifest {} has no model layer", path.display()))
    })?;
    let blob = manifest::blob_path(root, &layer.digest)?;
    let meta = std::fs::metadata(&blob).map_err(|e| {
        StoreError::Corrupt(format!("model blob {} of {}: {e}", blob.display(), name))
    })?;
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let digest = manifest::sha256_hex(&layer.digest)
        .unwrap_or_default()
        .to_string();
    Ok(ModelEntry {
        name,
        source: ModelSource::File(blob),
        digest,
        size: meta.len(),
        modified,
    })
}

/// Removes the manifest's now-empty model, namespace and host directories.
fn prune_empty_dirs(root: &Path, manifest_path: &Path) {
    let top = root.join("manifests");
    let mut dir = manifest_path.parent();
    while let Some(d) = dir {
        if d == top || !d.starts_with(&top) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Deletes the blobs of `removed` that no manifest under `root` still refers to. If any
/// manifest cannot be read, nothing is deleted: a blob it might name is kept.
fn collect_garbage(root: &Path, removed: &Manifest) {
    let mut in_use = std::collections::HashSet::new();
    for (_, path) in walk_manifests(root) {
        match Manifest::read(&path) {
            Ok(m) => in_use.extend(m.digests().map(str::to_string)),
            Err(_) => return,
        }
    }
    for d in removed.digests() {
        if !in_use.contains(d) {
            if let Ok(blob) = manifest::blob_path(root, d) {
                let _ = std::fs::remove_file(blob);
            }
        }
    }
}

/// (family, parameter size, file type) for the config blob, as Ollama fills them.
fn config_json(file: &GgufFile) -> (String, String, String) {
    let h = &file.header;
    (
        h.architecture().unwrap_or("unknown").to_string(),
        crate::model::human_number(h.parameter_count()),
        crate::model::file_type_name(h.get_u64("general.file_type")).to_string(),
    )
}

/// A name for a model given by file path: its file stem with anything Ollama would not accept
/// turned into `-`.
fn name_for_file(path: &Path) -> ModelName {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut model: String = stem
        .chars()
        .take(80)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !model.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        model.insert(0, '_');
        model.truncate(80);
    }
    ModelName::parse(&model).unwrap_or_else(|_| ModelName {
        host: DEFAULT_HOST.to_string(),
        namespace: DEFAULT_NAMESPACE.to_string(),
        model: "model".to_string(),
        tag: DEFAULT_TAG.to_string(),
    })
}
