//! Process-level behaviour: signals. SIGTERM/SIGINT request a graceful stop (a second one exits at
//! once: checkpoints on disk are always consistent, so nothing is lost, only re-sent). SIGHUP
//! asks the daemon to reload its configuration. `systemd`: the notification protocol.

pub mod logfile;
pub mod systemd;

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
