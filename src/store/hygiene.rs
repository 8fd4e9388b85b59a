//! Start-up cleaning of a store: temporary files that an interrupted `quiver create` (or any
//! atomic write: `.tmp-<pid>-<n>`, in `blobs/` or a manifest directory) or pull (`*-partial`
//! in `blobs/`) left behind. Done under the store lock, so that no `create` or `remove` of
//! another Quiver process is between writing a temporary file and renaming it.
//!
//! A `.tmp-<pid>-…` file is stale when its process is gone. A partial download is kept for a
//! day, so that an interrupted pull can still resume; after that it is stale.

use super::{lock_root, StoreError};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a partial download may wait for its pull to resume.
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Removes stale temporary files under `root`; returns the paths removed. A root that does
/// not exist is clean.
pub fn clean(root: &Path) -> Result<Vec<PathBuf>, StoreError> {
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let _lock = lock_root(root)?;
    let mut removed = Vec::new();
    let mut dirs = vec![root.join("blobs"), root.join("manifests")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                dirs.push(path);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let age = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if is_stale(&name, age) && std::fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    Ok(removed)
}

/// Whether a file named `name`, last written `age` ago, is a leftover.
fn is_stale(name: &str, age: Duration) -> bool {
    if let Some(rest) = name.strip_prefix(".tmp-") {
        return match rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) {
            Some(pid) => !process_alive(pid),
            // Not ours in form: only when old.
            None => age > PARTIAL_MAX_AGE,
        };
    }
    name.ends_with("-partial") && age > PARTIAL_MAX_AGE
}

fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        // SAFETY: kill with signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_dead_processes_and_old_partials_go_the_rest_stays() {
        let root = std::env::temp_dir().join(format!("quiver-hygiene-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let blobs = root.join("blobs");
        let mdir = root.join("manifests/registry.ollama.ai/library/m");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir_all(&mdir).unwrap();
        // A pid that cannot be alive (above the kernel's pid_max limit of 2^22).
        let dead = 4_194_304 + 17;
        let files = [
            (blobs.join(format!(".tmp-{dead}-0")), true),
            (mdir.join(format!(".tmp-{dead}-3")), true),
            (blobs.join(format!(".tmp-{}-1", std::process::id())), false),
            (blobs.join("sha256-abc-partial"), false), // fresh: a pull may resume it
            (blobs.join("sha256-abc"), false),
            (mdir.join("latest"), false),
        ];
        for (p, _) in &files {
            std::fs::write(p, b"x").unwrap();
        }
        let removed = clean(&root).unwrap();
        for (p, gone) in &files {
            assert_eq!(!p.exists(), *gone, "{}", p.display());
        }
        assert_eq!(removed.len(), 2);
        assert!(is_stale("sha256-abc-partial", PARTIAL_MAX_AGE * 2));
        assert!(!is_stale("sha256-abc", PARTIAL_MAX_AGE * 2));
        assert!(clean(&root.join("missing")).unwrap().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
