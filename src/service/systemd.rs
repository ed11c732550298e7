//! systemd's notification protocol (`Type=notify`): one datagram per message to the Unix socket
//! named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). READY=1 once the
//! configuration and checkpoints are loaded and the flows started; STATUS= with per-flow progress;
//! WATCHDOG=1 from the checkpoint writer's loop (when it stops, the agent is wedged and systemd
//! restarts it); RELOADING=1 / READY=1 around a reload; STOPPING=1 on a stop request. Without
//! `NOTIFY_SOCKET` every call does nothing.
//!
//! Ours rather than the `sd-notify` crate: that crate opens a socket for every message, and the
//! watchdog pings come several times a second; here one socket serves the process's life. The
//! protocol itself is a datagram of `KEY=VALUE` lines.

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::time::Duration;

struct Notifier {
    socket: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
    /// Half of `WATCHDOG_USEC`, when systemd asked for pings.
    watchdog_every: Option<Duration>,
}

static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();

/// Read `NOTIFY_SOCKET` and `WATCHDOG_USEC` (once, at start). Problems are logged, not fatal: the
/// agent works without systemd.
pub fn init() {
    NOTIFIER.get_or_init(|| {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        match connect(&path) {
            Ok((socket, addr)) => Some(Notifier { socket, addr, watchdog_every: watchdog_interval() }),
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={}: {e}; systemd will not hear from the agent", path.to_string_lossy());
                None
            }
        }
    });
}

fn connect(path: &std::ffi::OsStr) -> std::io::Result<(UnixDatagram, std::os::unix::net::SocketAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)?
        }
        None => std::os::unix::net::SocketAddr::from_pathname(path)?,
    };
    Ok((UnixDatagram::unbound()?, addr))
}

/// Pings at half the watchdog timeout, as sd_watchdog_enabled(3) advises; only when the watchdog
/// is meant for this process.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

fn send(message: &str) {
    if let Some(Some(n)) = NOTIFIER.get()
        && let Err(e) = n.socket.send_to_addr(message.as_bytes(), &n.addr)
    {
        tracing::debug!("cannot notify systemd ({message:?}): {e}");
    }
}

/// The agent is up: configuration and checkpoints loaded, flows started.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}"));
}

/// A one-line status for `systemctl status`.
pub fn status(status: &str) {
    send(&format!("STATUS={status}"));
}

/// Called from a loop that only turns while the agent works, at least every `watchdog_every`.
pub fn watchdog() {
    if let Some(Some(n)) = NOTIFIER.get()
        && n.watchdog_every.is_some()
    {
        send("WATCHDOG=1");
    }
}

/// How often `watchdog` must be called at the least (`None`: no watchdog).
pub fn watchdog_every() -> Option<Duration> {
    NOTIFIER.get().and_then(|n| n.as_ref()).and_then(|n| n.watchdog_every)
}

pub fn reloading() {
    send("RELOADING=1");
}

pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping: sending what was read");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abstract_and_path_sockets_connect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let (client, addr) = connect(path.as_os_str()).unwrap();
        client.send_to_addr(b"READY=1", &addr).unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("kinesis-agent-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let (client, addr) = connect(std::ffi::OsStr::new(&format!("@{name}"))).unwrap();
        client.send_to_addr(b"WATCHDOG=1", &addr).unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
