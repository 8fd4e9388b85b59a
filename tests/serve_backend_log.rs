//! The real `quiver serve` on a machine without a Vulkan driver (`VK_ICD_FILENAMES` points at
//! nothing) and `QUIVER_BACKEND=auto`: it says it serves on the CPU, answers, and a SIGTERM
//! stops it cleanly (exit 0).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_quiver");

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("quiver-serve-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the server if the test fails before it stopped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The response to `GET /`, or None while nothing answers.
fn get_root(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn serve_without_a_vulkan_driver_says_cpu_and_stops_on_sigterm() {
    let store = TempDir::new();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(BIN)
        .arg("serve")
        .env("QUIVER_HOST", addr.to_string())
        .env("QUIVER_MODELS", &store.0)
        .env("OLLAMA_MODELS", store.0.join("ollama-none"))
        .env("QUIVER_BACKEND", "auto")
        // No Vulkan driver at all: the loader finds no ICD (both the old and new variable).
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .env_remove("QUIVER_GPU_ALLOW_CPU_ADAPTER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run quiver serve");
    let mut server = Server(child);

    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        if let Some(r) = get_root(addr) {
            break r;
        }
        if let Some(status) = server.0.try_wait().unwrap() {
            let mut err = String::new();
            server
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("quiver serve exited early ({status}):\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "quiver serve never answered on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Ollama is running"), "{answer}");

    let pid = server.0.id() as libc::pid_t;
    // SAFETY: kill(2) on the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "quiver serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    eprintln!("quiver serve stderr:\n{err}");
    assert!(status.success(), "exit {status}:\n{err}");
    assert!(
        err.contains("backend: cpu"),
        "no 'backend: cpu' line:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(&format!("listening on {addr}")), "{err}");
    assert!(err.contains("quiver: stopped"), "{err}");
}
