//! The periodic checkpoint writer: folds the acknowledgement tracker's watermarks into the store
//! every `CHECKPOINT_EVERY` (coalesced, atomic, fsynced), and is the agent's heartbeat for the
//! systemd watchdog and `/healthz`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::CheckpointStore;
use crate::service::systemd;

/// Where the acknowledged progress comes from (the ack tracker, `ack.rs`): a trait, so that the
/// checkpoint stage does not import the stage before it.
pub trait Progress: Clone + Send + Sync + 'static {
    /// The watermarks and forgotten files, if anything changed since the last call.
    fn snapshot_if_dirty(&self) -> Option<(Vec<super::Watermark>, super::Forgotten)>;
    /// Make the next `snapshot_if_dirty` return a snapshot even if nothing moved.
    fn mark_dirty(&self);
    /// Whether `snapshot_if_dirty` would return one (a cheap check, so that an idle agent does
    /// not hand work to a blocking thread for nothing).
    fn is_dirty(&self) -> bool;
    /// Notified when the progress becomes dirty.
    fn changed(&self) -> Arc<tokio::sync::Notify>;
}

/// Acknowledged progress reaches the checkpoint file within this long (writes are coalesced: at
/// most one per period, none when nothing moved), which bounds what a crash sends again.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// The loop turns at least this often, progress or not (`/healthz`, the systemd watchdog).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Fold the tracker's watermarks into the store and write it if anything changed. Errors are
/// logged and retried at the next call: the agent keeps running (the checkpoint only lags).
pub fn flush_checkpoints(store: &Mutex<CheckpointStore>, tracker: &impl Progress, last: bool) -> bool {
    let Some((marks, forgotten)) = tracker.snapshot_if_dirty() else { return true };
    let mut s = store.lock().unwrap();
    s.update(&marks, &forgotten);
    match s.write() {
        Ok(()) => true,
        Err(e) => {
            // Make the next snapshot write again.
            tracker.mark_dirty();
            if last {
                tracing::error!("{e}; the last checkpoint could not be saved, so some lines will be sent again");
            }
            tracing::debug!("{e}");
            false
        }
    }
}

/// When the checkpoint loop last turned and last wrote (ms since `start`), for `/healthz` and the
/// checkpoint-age metric.
#[derive(Clone)]
pub struct Heartbeat {
    pub start: std::time::Instant,
    pub tick_ms: Arc<AtomicU64>,
    pub written_ms: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { start: std::time::Instant::now(), tick_ms: Arc::default(), written_ms: Arc::default() }
    }
}

impl Heartbeat {
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn age(&self, at: &AtomicU64) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(at.load(Ordering::Relaxed)))
    }
}

pub async fn checkpoint_writer(
    store: Arc<Mutex<CheckpointStore>>,
    tracker: impl Progress,
    stop: CancellationToken,
    beat: Heartbeat,
) {
    let mut failing = false;
    // This loop is the agent's heartbeat for systemd's watchdog: it needs the tracker and the
    // store, which a wedged agent would not give it.
    // It turns when progress is made (at most once per CHECKPOINT_EVERY: acknowledgements
    // arriving meanwhile join the same write), and at least once per heartbeat: an idle agent is
    // not woken five times a second for nothing.
    let heartbeat = systemd::watchdog_every().map_or(HEARTBEAT, |w| w.min(HEARTBEAT));
    let changed = tracker.changed();
    let mut last_turn = tokio::time::Instant::now();
    let mut touched = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = changed.notified() => {
                tokio::select! {
                    _ = tokio::time::sleep_until(last_turn + CHECKPOINT_EVERY) => {}
                    _ = stop.cancelled() => return,
                }
            }
            _ = tokio::time::sleep(heartbeat) => {}
            _ = stop.cancelled() => return,
        }
        last_turn = tokio::time::Instant::now();
        // Now and then also when nothing moved, so that the checkpoints of quiet files are
        // touched (`checkpointTimeToLiveDays` drops only files no longer tailed).
        if touched.elapsed() >= super::TOUCH_EVERY {
            touched = std::time::Instant::now();
            tracker.mark_dirty();
        }
        let ok = if tracker.is_dirty() {
            let (st, tr) = (store.clone(), tracker.clone());
            tokio::task::spawn_blocking(move || flush_checkpoints(&st, &tr, false)).await.unwrap_or(false)
        } else {
            // Nothing to write: as healthy as the last write (a failed one left it dirty).
            true
        };
        systemd::watchdog();
        beat.tick_ms.store(beat.now_ms(), Ordering::Relaxed);
        if ok {
            beat.written_ms.store(beat.now_ms(), Ordering::Relaxed);
        }
        if !ok && !failing {
            let path = store.lock().unwrap().path().to_path_buf();
            tracing::error!(
                "cannot write checkpoints to {}; retrying every second (delivery goes on; after a crash more lines would be sent again)",
                path.display()
            );
        } else if ok && failing {
            tracing::info!("checkpoints are being written again");
        }
        failing = !ok;
    }
}
