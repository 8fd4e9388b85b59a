//! The store reads and writes Ollama's on-disk layout: `manifests/<host>/<ns>/<model>/<tag>`
//! and `blobs/sha256-<hex>`.

mod common;

use common::files;
use quiver::store::{ModelSource, Store, StoreError};
use std::path::{Path, PathBuf};

const Q8: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-q8_0.gguf");
const F16: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/all-minilm-f16.gguf");

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "quiver-store-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Lays out a model the way `ollama pull` does: the GGUF as a blob, a config blob, a manifest.
fn write_like_ollama(
    root: &Path,
    host: &str,
    ns: &str,
    model: &str,
    tag: &str,
    gguf: &[u8],
) -> String {
    let hex = sha256_hex(gguf);
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::write(root.join("blobs").join(format!("sha256-{hex}")), gguf).unwrap();
    let config = br#"{"model_format":"gguf","model_family":"bert","model_families":["bert"],"model_type":"23M","file_type":"F16","architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let chex = sha256_hex(config);
    std::fs::write(root.join("blobs").join(format!("sha256-{chex}")), config).unwrap();
    let license = b"Apache License 2.0";
    let lhex = sha256_hex(license);
    std::fs::write(root.join("blobs").join(format!("sha256-{lhex}")), license).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{chex}","size":{}}},"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{hex}","size":{}}},{{"mediaType":"application/vnd.ollama.image.license","digest":"sha256:{lhex}","size":{}}}]}}"#,
        config.len(),
        gguf.len(),
        license.len()
    );
    let dir = root.join("manifests").join(host).join(ns).join(model);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(tag), manifest).unwrap();
    hex
}

#[test]
fn create_then_resolve_reads_the_model_back() {
    let tmp = TempDir::new("create");
    let store = Store::new(vec![tmp.path().to_path_buf()], None);
    let bytes = std::fs::read(Q8).unwrap();
    let created = store.create("mini:q8", Path::new(Q8)).unwrap();
    assert_eq!(created.digest, sha256_hex(&bytes));
    assert_eq!(created.size, bytes.len() as u64);

    // Ollama's layout: the manifest under the full name, the GGUF as a content-addressed blob.
    let manifest_path = tmp
        .path()
        .join("manifests/registry.ollama.ai/library/mini/q8");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    let layer = &manifest["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.ollama.image.model");
    assert_eq!(layer["digest"], format!("sha256:{}", created.digest));
    assert_eq!(layer["size"], bytes.len() as u64);
    let blob = tmp.path().join(format!("blobs/sha256-{}", created.digest));
    assert_eq!(std::fs::read(&blob).unwrap(), bytes);

    // The config blob says what Ollama's would.
    let cdigest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .replace(':', "-");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("blobs").join(cdigest)).unwrap())
            .unwrap();
    assert_eq!(config["model_format"], "gguf");
    assert_eq!(config["model_family"], "bert");
    assert_eq!(config["file_type"], "Q8_0");
    assert_eq!(config["model_type"], "22.57M");

    // No temporary files left behind.
    assert!(
        files(tmp.path()).iter().all(|f| !f.contains(".tmp")),
        "{:?}",
        files(tmp.path())
    );

    let e = store.resolve("mini:q8").unwrap();
    assert_eq!(e.digest, created.digest);
    assert!(matches!(&e.source, ModelSource::File(p) if *p == blob));
    let file = e.open().unwrap();
    assert_eq!(file.len(), bytes.len());
    assert_eq!(file.header.architecture(), Some("bert"));

    // Letter case does not matter, and the full form is the same model.
    assert_eq!(store.resolve("MINI:Q8").unwrap().digest, created.digest);
    assert_eq!(
        store
            .resolve("registry.ollama.ai/library/mini:q8")
            .unwrap()
            .digest,
        created.digest
    );
    assert!(matches!(
        store.resolve("mini"),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn create_refuses_a_file_that_is_not_gguf() {
    let tmp = TempDir::new("notgguf");
    let junk = tmp.path().join("junk.gguf");
    std::fs::write(&junk, b"definitely not a gguf file").unwrap();
    let root = tmp.path().join("store");
    let store = Store::new(vec![root.clone()], None);
    assert!(matches!(
        store.create("junk", &junk),
        Err(StoreError::Corrupt(_))
    ));
    assert!(!root.exists(), "nothing may be written for a bad file");
}

#[test]
fn resolves_a_manifest_written_by_ollama() {
    let tmp = TempDir::new("ollama");
    let bytes = std::fs::read(Q8).unwrap();
    let hex = write_like_ollama(
        tmp.path(),
        "registry.ollama.ai",
        "library",
        "all-minilm",
        "33m",
        &bytes,
    );
    write_like_ollama(
        tmp.path(),
        "example.com:5000",
        "team",
        "Mixed-Case",
        "V1",
        &bytes,
    );
    let store = Store::new(vec![tmp.path().to_path_buf()], None);

    let e = store.resolve("all-minilm:33m").unwrap();
    assert_eq!(e.digest, hex);
    assert_eq!(e.name.display_short(), "all-minilm:33m");
    assert_eq!(
        e.open().unwrap().header.get_u64("general.file_type"),
        Some(7)
    );

    // An older Ollama kept the case the user typed; any case finds it.
    let e = store
        .resolve("example.com:5000/team/mixed-case:v1")
        .unwrap();
    assert_eq!(
        e.name.display_short(),
        "example.com:5000/team/Mixed-Case:V1"
    );

    let names: Vec<String> = store
        .list()
        .unwrap()
        .iter()
        .map(|e| e.name.display_short())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"all-minilm:33m".to_string()));
}

#[test]
fn a_manifest_whose_blob_is_missing_is_corrupt_and_left_out_of_the_list() {
    let tmp = TempDir::new("missing");
    let bytes = std::fs::read(Q8).unwrap();
    let hex = write_like_ollama(
        tmp.path(),
        "registry.ollama.ai",
        "library",
        "gone",
        "latest",
        &bytes,
    );
    std::fs::remove_file(tmp.path().join(format!("blobs/sha256-{hex}"))).unwrap();
    let store = Store::new(vec![tmp.path().to_path_buf()], None);
    assert!(matches!(store.resolve("gone"), Err(StoreError::Corrupt(_))));
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_manifest_with_a_hostile_digest_is_corrupt() {
    let tmp = TempDir::new("digest");
    let dir = tmp.path().join("manifests/registry.ollama.ai/library/evil");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("latest"),
        r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:00","size":1},
            "layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:../../../etc/passwd","size":1}]}"#,
    )
    .unwrap();
    let store = Store::new(vec![tmp.path().to_path_buf()], None);
    assert!(matches!(store.resolve("evil"), Err(StoreError::Corrupt(_))));
}

#[test]
fn the_first_root_wins() {
    let first = TempDir::new("first");
    let second = TempDir::new("second");
    let q8 = std::fs::read(Q8).unwrap();
    let f16 = std::fs::read(F16).unwrap();
    let q8_hex = write_like_ollama(
        first.path(),
        "registry.ollama.ai",
        "library",
        "all-minilm",
        "latest",
        &q8,
    );
    let f16_hex = write_like_ollama(
        second.path(),
        "registry.ollama.ai",
        "library",
        "all-minilm",
        "latest",
        &f16,
    );
    write_like_ollama(
        second.path(),
        "registry.ollama.ai",
        "library",
        "only-second",
        "latest",
        &f16,
    );
    let store = Store::new(
        vec![first.path().to_path_buf(), second.path().to_path_buf()],
        None,
    );
    assert_eq!(store.resolve("all-minilm").unwrap().digest, q8_hex);
    assert_eq!(store.resolve("only-second").unwrap().digest, f16_hex);

    let list = store.list().unwrap();
    assert_eq!(list.len(), 2);
    let minilm = list.iter().find(|e| e.name.model == "all-minilm").unwrap();
    assert_eq!(minilm.digest, q8_hex);

    // Swapped, the other copy wins.
    let store = Store::new(
        vec![second.path().to_path_buf(), first.path().to_path_buf()],
        None,
    );
    assert_eq!(store.resolve("all-minilm").unwrap().digest, f16_hex);
}

#[test]
fn the_bundled_model_answers_last() {
    // The bytes must live for the whole process, as they do in the binary.
    let bundled: &'static [u8] = Box::leak(std::fs::read(F16).unwrap().into_boxed_slice());
    let empty = TempDir::new("bundled");
    let store = Store::new(vec![empty.path().join("does-not-exist")], Some(bundled));

    let e = store.resolve("all-minilm").unwrap();
    assert!(matches!(e.source, ModelSource::Bundled(_)));
    assert_eq!(e.digest, sha256_hex(bundled));
    assert_eq!(e.size, bundled.len() as u64);
    assert_eq!(store.resolve("ALL-MINILM:latest").unwrap().digest, e.digest);
    assert!(matches!(
        store.resolve("all-minilm:33m"),
        Err(StoreError::NotFound(_))
    ));
    let file = e.open().unwrap();
    assert_eq!(file.header.get_u64("general.file_type"), Some(1));

    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name.display_short(), "all-minilm:latest");

    // A store copy of the same name shadows it.
    let q8 = std::fs::read(Q8).unwrap();
    let hex = write_like_ollama(
        empty.path(),
        "registry.ollama.ai",
        "library",
        "all-minilm",
        "latest",
        &q8,
    );
    let store = Store::new(vec![empty.path().to_path_buf()], Some(bundled));
    assert_eq!(store.resolve("all-minilm").unwrap().digest, hex);
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(matches!(store.remove("all-minilm"), Ok(())));
    assert!(matches!(
        store.resolve("all-minilm").unwrap().source,
        ModelSource::Bundled(_)
    ));
    assert!(
        store.remove("all-minilm").is_err(),
        "the bundled model cannot be removed"
    );
}

#[test]
fn remove_keeps_blobs_another_manifest_uses() {
    let tmp = TempDir::new("remove");
    let store = Store::new(vec![tmp.path().to_path_buf()], None);
    let a = store.create("a", Path::new(Q8)).unwrap();
    let b = store.create("ns/b:v1", Path::new(Q8)).unwrap();
    assert_eq!(a.digest, b.digest);
    let blob = tmp.path().join(format!("blobs/sha256-{}", a.digest));

    store.remove("a").unwrap();
    assert!(matches!(store.resolve("a"), Err(StoreError::NotFound(_))));
    assert!(blob.exists(), "ns/b:v1 still uses the blob");
    assert!(
        !tmp.path()
            .join("manifests/registry.ollama.ai/library")
            .exists(),
        "empty dirs pruned"
    );

    store.remove("NS/B:V1").unwrap();
    assert!(!blob.exists());
    assert_eq!(
        files(tmp.path()),
        [".quiver-lock"],
        "only the lock file is left"
    );
    assert!(matches!(store.remove("a"), Err(StoreError::NotFound(_))));
}

#[test]
fn create_over_an_existing_name_replaces_it() {
    let tmp = TempDir::new("replace");
    let store = Store::new(vec![tmp.path().to_path_buf()], None);
    let old = store.create("m", Path::new(Q8)).unwrap();
    let new = store.create("M", Path::new(F16)).unwrap();
    assert_ne!(old.digest, new.digest);
    assert_eq!(store.resolve("m").unwrap().digest, new.digest);
    assert!(
        !tmp.path()
            .join(format!("blobs/sha256-{}", old.digest))
            .exists(),
        "old blob collected"
    );
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn hostile_names_never_touch_the_filesystem_outside_the_root() {
    let outer = TempDir::new("hostile");
    let root = outer.path().join("root");
    std::fs::create_dir_all(root.join("manifests/registry.ollama.ai/library")).unwrap();
    // A planted model outside the root that a path-traversing name would reach.
    let q8 = std::fs::read(Q8).unwrap();
    write_like_ollama(
        outer.path(),
        "registry.ollama.ai",
        "library",
        "secret",
        "latest",
        &q8,
    );
    let before = files(outer.path());
    let store = Store::new(vec![root.clone()], None);
    let hostile = [
        "../../secret",
        "../manifests/registry.ollama.ai/library/secret",
        "registry.ollama.ai/../../secret",
        "a/../../b",
        "..%2f..%2fsecret",
        "%2e%2e/%2e%2e/secret",
        "/etc/passwd",
        "..\\..\\secret",
        "secret\0",
        "library/..",
        "../../../../../../etc/passwd",
    ];
    let src = Path::new(Q8);
    for name in hostile {
        assert!(
            matches!(store.resolve(name), Err(StoreError::InvalidName(_))),
            "{name:?}"
        );
        assert!(
            matches!(store.remove(name), Err(StoreError::InvalidName(_))),
            "{name:?}"
        );
        assert!(
            matches!(store.create(name, src), Err(StoreError::InvalidName(_))),
            "{name:?}"
        );
    }
    assert_eq!(
        files(outer.path()),
        before,
        "nothing outside (or inside) the root changed"
    );
}

#[test]
fn from_env_orders_quiver_then_ollama() {
    // Only this test in this binary touches the environment.
    std::env::set_var("QUIVER_MODELS", "/q");
    std::env::set_var("OLLAMA_MODELS", "/o");
    assert_eq!(
        Store::from_env(None).roots,
        vec![PathBuf::from("/q"), PathBuf::from("/o")]
    );
    std::env::remove_var("QUIVER_MODELS");
    std::env::remove_var("OLLAMA_MODELS");
    std::env::set_var("HOME", "/home/x");
    assert_eq!(
        Store::from_env(None).roots,
        vec![PathBuf::from("/home/x/.ollama/models")]
    );
}

#[test]
fn concurrent_create_and_remove_never_lose_a_blob_in_use() {
    let tmp = TempDir::new("race");
    let root = tmp.path().to_path_buf();
    let stores: Vec<Store> = (0..2)
        .map(|_| Store::new(vec![root.clone()], None))
        .collect();
    std::thread::scope(|s| {
        // One writer keeps re-creating `keep`; the other creates and removes `churn`, whose
        // removal collects the shared blob whenever it thinks nothing else uses it.
        s.spawn(|| {
            for _ in 0..8 {
                stores[0].create("keep", Path::new(Q8)).unwrap();
            }
        });
        s.spawn(|| {
            for _ in 0..8 {
                stores[1].create("churn", Path::new(Q8)).unwrap();
                stores[1].remove("churn").unwrap();
            }
        });
    });
    let e = stores[0].resolve("keep").unwrap();
    assert!(e.open().is_ok(), "the blob `keep` refers to is still there");
}
