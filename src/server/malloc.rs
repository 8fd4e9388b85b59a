//! glibc's per-thread allocation caches (tcache) and a long-running server.
//!
//! Every worker thread keeps up to 7 freed chunks of each small size for itself. With 64
//! workers and the scheduler's threads, those caches fill slowly, size by size, over the whole
//! life of the process: under 32 keep-alive clients the heap in use and the RSS climbed
//! 0.06–0.15 MiB a minute for 25 minutes and did not level off. With the caches off, both are
//! flat from the second minute, at the same request rate and 3 MiB lower (`scripts/soak.py`,
//! two servers side by side). No leak was found (heaptrack).
//!
//! The caches can only be sized before the process starts (`GLIBC_TUNABLES`), so `quiver
//! serve` executes itself again, once, with `glibc.malloc.tcache_count=0` added. A
//! `GLIBC_TUNABLES` that already sets the count is left alone (that is also what stops a
//! second exec).

/// Re-executes the running binary with glibc's thread caches off; returns only when that is
/// not needed or not possible (then the server runs as it is), with the `GLIBC_TUNABLES`
/// that sets the count, if one does.
pub fn exec_without_thread_caches() -> Option<String> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        const SETTING: &str = "glibc.malloc.tcache_count";
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if tunables.contains(SETTING) {
            return Some(tunables);
        }
        let exe = std::env::current_exe().ok()?;
        let value = if tunables.is_empty() {
            format!("{SETTING}=0")
        } else {
            format!("{tunables}:{SETTING}=0")
        };
        // `exec` returns only on failure (say the binary was replaced on disk): run as is.
        let _ = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", value)
            .exec();
    }
    None
}
