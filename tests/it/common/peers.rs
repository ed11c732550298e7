//! Real Kinesis-compatible servers (kinesalite, kinesis-local, moto), one process per test.
//!
//! Installation goes through `scripts/peers/peers install NAME` (idempotent, serialized with
//! flock). The server itself is spawned directly (`scripts/peers/peers exec NAME PORT`, which
//! `exec`s the server, so our child pid *is* the server) in its own process group; Drop kills
//! the group. `PEERS_PARENT_PID` makes the script start a watcher that kills the server if this
//! test process dies without running destructors.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bound for `scripts/peers/peers install` (moto's pip install takes ~1 min here; a
/// clean CI machine may be slower, and another test may hold the install lock).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(1800);
/// Upper bound from spawn to readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const START_ATTEMPTS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerKind {
    Kinesalite,
    KinesisLocal,
    Moto,
}

impl PeerKind {
    pub const ALL: [PeerKind; 3] = [PeerKind::Kinesalite, PeerKind::KinesisLocal, PeerKind::Moto];

    /// The name used by `scripts/peers/peers`.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Kinesalite => "kinesalite",
            PeerKind::KinesisLocal => "kinesis-local",
            PeerKind::Moto => "moto",
        }
    }

    /// HTTP path that answers (with any status) once the server is up.
    fn ready_path(self) -> &'static str {
        match self {
            PeerKind::Kinesalite => "/", // unsigned GET → 403, which counts as up
            PeerKind::KinesisLocal => "/healthcheck",
            PeerKind::Moto => "/moto-api/",
        }
    }
}

pub fn peers_script() -> PathBuf {
    super::repo_dir().join("scripts/peers/peers")
}

/// Runs `scripts/peers/peers install NAME` once per process and kind (bounded). Panics with the
/// script's output on failure.
pub fn ensure_installed(kind: PeerKind) {
    // One lock per kind: holding it serializes installs of that peer inside this process (the
    // script's flock does the same across processes), while other peers install in parallel.
    static DONE: [Mutex<bool>; 3] = [Mutex::new(false), Mutex::new(false), Mutex::new(false)];
    let idx = PeerKind::ALL.iter().position(|k| *k == kind).expect("kind");
    let mut done = DONE[idx].lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out_path = out_dir.path().join("install.log");
    let out = File::create(&out_path).expect("create install log");
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(peers_script())
        .arg("install")
        .arg(kind.name())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone fd"))
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("spawn scripts/peers/peers install");
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > INSTALL_TIMEOUT {
            kill_group(child.id(), libc::SIGKILL);
            let _ = child.wait();
            panic!(
                "`peers install {}` did not finish within {:?}:\n{}",
                kind.name(),
                INSTALL_TIMEOUT,
                read_lossy(&out_path)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        panic!("`peers install {}` failed ({status}):\n{}", kind.name(), read_lossy(&out_path));
    }
    *done = true;
}

/// A running peer. Dropping it kills the server's whole process group.
pub struct Peer {
    kind: PeerKind,
    port: u16,
    child: Child,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// Installs if needed, starts on a free 127.0.0.1 port and waits until ready.
    /// Panics (with the peer's log) if that does not work within the time limits.
    pub fn start(kind: PeerKind) -> Peer {
        Self::start_with_env(kind, &[])
    }

    /// Like `start`, with extra environment variables for the server (e.g. kinesis-local's
    /// `LOG_LEVEL=TRACE`, `KINESALITE_ARGS`).
    pub fn start_with_env(kind: PeerKind, env: &[(&str, &str)]) -> Peer {
        ensure_installed(kind);
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start_once(kind, env) {
                Ok(peer) => return peer,
                Err(e) => {
                    // Most likely cause of an early exit: someone took the port between our
                    // probe and the server's bind. Try another port.
                    failures.push_str(&format!("--- attempt {attempt} ---\n{e}\n"));
                }
            }
        }
        panic!("could not start {} in {START_ATTEMPTS} attempts:\n{failures}", kind.name());
    }

    fn try_start_once(kind: PeerKind, env: &[(&str, &str)]) -> Result<Peer, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("peer-{}-", kind.name()))
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let log_path = dir.path().join("peer.log");
        let log = File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
        let port = free_port();
        let mut cmd = Command::new("bash");
        cmd.arg(peers_script()).arg("exec").arg(kind.name()).arg(port.to_string());
        if kind == PeerKind::KinesisLocal {
            cmd.arg("0"); // TLS port: ephemeral, so parallel instances never collide
        }
        cmd.current_dir(dir.path())
            .env("PEERS_PARENT_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        let mut peer = Peer { kind, port, child, log_path, _dir: dir };
        let started = Instant::now();
        loop {
            match peer.child.try_wait() {
                Ok(Some(status)) => {
                    return Err(format!(
                        "{} exited with {status} before it was ready (port {port}); log:\n{}",
                        kind.name(),
                        peer.log()
                    ));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("try_wait: {e}")),
            }
            if http_answers(port, kind.ready_path()) {
                return Ok(peer);
            }
            if started.elapsed() > READY_TIMEOUT {
                // `peer` is dropped here, which kills it.
                return Err(format!(
                    "{} was not ready on port {port} within {READY_TIMEOUT:?}; log:\n{}",
                    kind.name(),
                    peer.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn kind(&self) -> PeerKind {
        self.kind
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's stdout+stderr so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Kills the server (same as dropping it).
    pub fn stop(self) {}
}

impl Drop for Peer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== {} log (port {}), last 16 KiB ====\n{}\n==== end of {} log ====",
                self.kind.name(),
                self.port,
                super::tail(&self.log(), 16 * 1024),
                self.kind.name()
            );
        }
        // In-memory servers: nothing to flush, so SIGKILL the group (server + watcher) at once.
        kill_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn kill_group(pid: u32, sig: libc::c_int) {
    // SAFETY: plain syscall; a negative pid addresses the process group we created.
    unsafe {
        libc::kill(-(pid as libc::pid_t), sig);
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

/// True if anything answers an HTTP/1.0 GET on 127.0.0.1:port with an HTTP status line.
pub fn http_answers(port: u16, path: &str) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    &buf == b"HTTP/"
}

pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}
