//! A real registry for the pull/push tests: Debian's `docker-registry` (the CNCF distribution
//! registry) on a free loopback port with its storage in a temp dir, killed on drop; and a
//! small loopback TCP proxy in front of it that can slow, corrupt or stall what the registry
//! sends (a test harness between two real programs, not a mock).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "quiver-registry-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The registry binary, or None (the caller prints why it skips).
fn registry_binary() -> Option<PathBuf> {
    let from_env = std::env::var_os("QUIVER_TEST_REGISTRY").map(PathBuf::from);
    from_env
        .into_iter()
        .chain(["/usr/bin/docker-registry", "/usr/local/bin/registry"].map(PathBuf::from))
        .find(|p| p.is_file())
}

impl Registry {
    /// Starts a registry, or returns None after printing why the test skips.
    pub fn start() -> Option<Registry> {
        let Some(bin) = registry_binary() else {
            eprintln!(
                "SKIPPED: no docker-registry binary (apt-get install -y docker-registry, or set \
                 QUIVER_TEST_REGISTRY)"
            );
            return None;
        };
        let dir = TempDir::new("registry");
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let reg = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut head = [0u8; 12];
                if s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") {
                    return Some(reg);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not answer on 127.0.0.1:{port} within 20 s");
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// What the proxy does to the registry's answers.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Passes bytes through at most this many bytes a second.
    Throttle(u64),
    /// Flips one byte at this offset of every registry→client connection that gets that far.
    Corrupt(u64),
    /// Passes this many bytes of each registry→client connection, then sends nothing more.
    Stall(u64),
}

pub struct Proxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl Proxy {
    pub fn start(upstream: u16, mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(c2, s2, None, &AtomicBool::new(false)));
                let stop = s.clone();
                std::thread::spawn(move || pump(server, client, Some(mode), &stop));
            }
        });
        Proxy { port, stop }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Copies `from` → `to`, applying `mode` (None: as is). Stops when either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: Option<Mode>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    let started = Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        match mode {
            Some(Mode::Corrupt(at)) if (offset..offset + n as u64).contains(&at) => {
                chunk[(at - offset) as usize] ^= 0x5a;
            }
            Some(Mode::Stall(after)) if offset + n as u64 > after => {
                let keep = after.saturating_sub(offset) as usize;
                let _ = to.write_all(&chunk[..keep]);
                // Hold the connection open, sending nothing, until the client gives up.
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                    let mut probe = [0u8; 1];
                    to.set_nonblocking(true).ok();
                    match to.peek(&mut probe) {
                        Ok(0) => break,
                        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => break,
                        _ => {}
                    }
                }
                break;
            }
            _ => {}
        }
        if to.write_all(chunk).is_err() {
            break;
        }
        offset += n as u64;
        if let Some(Mode::Throttle(rate)) = mode {
            let due = Duration::from_secs_f64(offset as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
