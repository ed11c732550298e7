//! Process-level behaviour: signals. SIGTERM/SIGINT request a graceful stop (a second one exits at
//! once: checkpoints on disk are always consistent, so nothing is lost, only re-sent). SIGHUP
//! asks the daemon to reload its configuration. `systemd`: the notification protocol.

pub mod logfile;
pub mod memory;
pub mod proxy;
pub mod systemd;
pub mod trust;

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What to add to an error writing `path`'s directory when it is read-only or not ours: under the
/// systemd unit (`ProtectSystem=strict`) only the state and logs directories are writable.
pub fn sandbox_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem if under_systemd() => {
            " (under the kinesis-agent systemd unit only /var/lib/kinesis-agent and /var/log/kinesis-agent are writable: use those, or `systemctl edit kinesis-agent` and add `ReadWritePaths=-/that/directory` under [Service])"
        }
        std::io::ErrorKind::ReadOnlyFilesystem => " (the file system is read-only here)",
        std::io::ErrorKind::PermissionDenied => {
            " (give the agent's user, `kinesis-agent` under the systemd unit, write access to the directory)"
        }
        _ => "",
    }
}

/// Started by systemd (the unit sets `INVOCATION_ID` for every service it starts).
fn under_systemd() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
}

/// Exit status after a second stop signal.
pub const EXIT_FORCED: i32 = 130;

/// Cancels `shutdown` on the first SIGTERM or SIGINT; exits the process on the second. Notifies
/// `reload` on SIGHUP.
pub fn install(shutdown: CancellationToken, reload: Arc<Notify>) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut stopping = false;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    systemd::reloading();
                    reload.notify_one();
                    continue;
                }
            };
            if stopping {
                tracing::warn!("{name} again: exiting now; unacknowledged lines will be sent again at the next start");
                std::process::exit(EXIT_FORCED);
            }
            stopping = true;
            systemd::stopping();
            tracing::info!("{name}: stopping (flushing batches and waiting for requests in flight)");
            shutdown.cancel();
        }
    });
    Ok(())
}

/// The host's name (`gethostname`), or `localhost` when it cannot be read: ADDSOURCEMETADATA's
/// `hostname`, and the CloudWatch `Instance` dimension off EC2. Eight lines of libc rather than a
/// crate: the `libc` crate is here anyway.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}
