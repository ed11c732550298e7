//! Wiring: for each flow a discovery loop (which starts a tailer per file), a batcher and its
//! send tasks; plus the checkpoint writer, the status logger and the file-system watcher.
//! `run` returns when `--once` has delivered everything, or after a shutdown request.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::ack::{AckTracker, FileId};
use crate::aws::{self, AwsSetupError};
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{AgentConfig, Destination, FlowConfig, InitialPosition, OversizedRecordAction};
use crate::discovery::{Found, Pattern};
use crate::metrics::FlowMetrics;
use crate::record::Chunk;
use crate::record::key::key_len;
use crate::sink::batcher::{self, BatchLimits, InFlight};
use crate::sink::client::SinkClient;
use crate::sink::sender::FlowSender;
use crate::tail::{TailHandle, TailSettings, Tailer, identity};

/// Chunks (each up to `tail::READ_SIZE` of lines) queued between a flow's tailers and batcher.
const CHANNEL_CHUNKS: usize = 4;
/// Re-glob at least this often, even without file-system events.
const RESCAN: Duration = Duration::from_secs(1);
/// Checkpoints are written at most this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Daemon,
    Once,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Aws(#[from] AwsSetupError),
    #[error("flows[{index}].filePattern {pattern:?} is not a valid glob: {source}")]
    Pattern { index: usize, pattern: String, source: globset::Error },
}

/// How a run ended, per flow and overall.
#[derive(Debug, Default)]
pub struct Outcome {
    pub flows: Vec<FlowOutcome>,
    /// A shutdown request ended the run before `--once` had read everything.
    pub interrupted: bool,
}

#[derive(Debug)]
pub struct FlowOutcome {
    pub label: String,
    pub metrics: crate::metrics::Snapshot,
    /// Records read but not acknowledged when the run ended.
    pub undelivered: u64,
    /// A fatal error (missing stream, access denied, bad credentials) was seen.
    pub fatal: bool,
}

impl Outcome {
    pub fn all_delivered(&self) -> bool {
        !self.interrupted && self.flows.iter().all(|f| f.undelivered == 0 && f.metrics.unreadable == 0)
    }
    pub fn any_fatal(&self) -> bool {
        self.flows.iter().any(|f| f.fatal)
    }
}

/// What the watcher and discovery of one flow share.
struct FlowWatch {
    pattern: Pattern,
    /// Wakes discovery (a file appeared, moved or vanished).
    rescan: Notify,
    /// Tailed files by current path, to wake the right tailer on a change.
    files: Mutex<HashMap<PathBuf, Arc<TailHandle>>>,
}

pub fn flow_label(flow: &FlowConfig, region: Option<&str>) -> String {
    let kind = match &flow.destination {
        Destination::Kinesis { stream } => format!("kinesis stream {stream}"),
        Destination::Firehose { stream } => format!("firehose delivery stream {stream}"),
    };
    match region {
        Some(r) => format!("flows[{}] ({} in {r})", flow.index, kind),
        None => format!("flows[{}] ({})", flow.index, kind),
    }
}

pub async fn run(cfg: AgentConfig, mode: Mode, shutdown: CancellationToken) -> Result<Outcome, RunError> {
    let (store, notes) = CheckpointStore::open(&cfg.checkpoint_file, cfg.checkpoint_ttl_days)?;
    for n in notes {
        tracing::warn!("{n}");
    }
    tracing::debug!("checkpoints in {}", store.path().display());
    let mut patterns = Vec::new();
    for f in &cfg.flows {
        let p = Pattern::new(&f.file_pattern).map_err(|source| RunError::Pattern {
            index: f.index,
            pattern: f.file_pattern.clone(),
            source,
        })?;
        patterns.push(p);
    }
    let clients = aws::build(&cfg).await?;
    let had_flow: Vec<bool> = cfg.flows.iter().map(|f| store.has_flow(&f.id)).collect();
    let store = Arc::new(Mutex::new(store));
    let tracker = AckTracker::new();
    // `maxInFlightBytes` of record data; requests being sent hold up to about three times their
    // share in memory (records, request entries, encoded body).
    let inflight = InFlight::new(cfg.max_sending_threads, cfg.max_in_flight_bytes, cfg.flows.len());
    let watches: Arc<Mutex<Vec<Arc<FlowWatch>>>> = Arc::new(Mutex::new(Vec::new()));
    let watcher = if mode == Mode::Daemon { start_watcher(watches.clone()) } else { None };
    let watcher = Arc::new(Mutex::new(watcher));
    // Tailers stop on this; batchers then flush what was read and finish their sends.
    let stop_reading = shutdown.child_token();

    let mut batchers = Vec::new();
    let mut senders = Vec::new();
    for (flow, pattern) in cfg.flows.iter().zip(patterns) {
        let (client, region) = match &flow.destination {
            Destination::Kinesis { stream } => (
                SinkClient::Kinesis {
                    client: clients.kinesis.clone().expect("built for kinesis flows"),
                    stream: stream.clone(),
                    key: flow.partition_key,
                },
                clients.kinesis_region.clone(),
            ),
            Destination::Firehose { stream } => (
                SinkClient::Firehose {
                    client: clients.firehose.clone().expect("built for firehose flows"),
                    stream: stream.clone(),
                },
                clients.firehose_region.clone(),
            ),
        };
        let label = flow_label(flow, region.as_deref());
        // The flow's tailers stop on shutdown, or when `--once` gives up after a fatal error
        // (`give_up`; a shutdown alone must not make the senders abandon their retries).
        let flow_stop = stop_reading.child_token();
        let give_up = CancellationToken::new();
        tokio::spawn({
            let (give_up, flow_stop) = (give_up.clone(), flow_stop.clone());
            async move {
                tokio::select! {
                    _ = give_up.cancelled() => flow_stop.cancel(),
                    _ = flow_stop.cancelled() => {}
                }
            }
        });
        let metrics = Arc::new(FlowMetrics::default());
        let sender = Arc::new(FlowSender::new(
            label,
            client,
            tracker.clone(),
            metrics.clone(),
            mode == Mode::Once,
            (flow.retry_initial_backoff, flow.retry_max_backoff),
            give_up,
        ));
        let overhead = match flow.destination {
            Destination::Kinesis { .. } => key_len(flow.partition_key),
            Destination::Firehose { .. } => 0,
        };
        let limits = BatchLimits {
            max_records: flow.max_buffer_size_records,
            max_bytes: flow.max_buffer_size_bytes,
            per_record_overhead: overhead,
            max_age: flow.max_buffer_age,
            max_batches: flow.publish_queue_capacity,
        };
        let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
        batchers.push(tokio::spawn(batcher::run(rx, sender.clone(), limits, inflight.clone(), inflight.flow_budget())));
        let watch = Arc::new(FlowWatch { pattern, rescan: Notify::new(), files: Mutex::new(HashMap::new()) });
        watches.lock().unwrap().push(watch.clone());
        let settings = TailSettings {
            flow_id: Arc::from(flow.id.as_str()),
            // Room for the longest partition key, which counts towards the Kinesis record limit.
            record_limit: flow.destination.max_record_bytes() - 256,
            terminator: match flow.oversized_record_action {
                OversizedRecordAction::Truncate => Some(flow.truncated_record_terminator.clone()),
                OversizedRecordAction::Drop => None,
            },
            skip_header_lines: flow.skip_header_lines,
            poll: flow.min_time_between_file_polls,
            once: mode == Mode::Once,
        };
        let disc = Discovery {
            flow: flow.clone(),
            watch,
            settings,
            tx,
            store: store.clone(),
            tracker: tracker.clone(),
            metrics: metrics.clone(),
            shutdown: flow_stop,
            had_checkpoints: had_flow[flow.index],
            mode,
            watcher: watcher.clone(),
        };
        tokio::spawn(disc.run());
        senders.push(sender);
    }

    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(checkpoint_writer(store.clone(), tracker.clone(), writer_stop.clone()));
    let status_stop = CancellationToken::new();
    let status = tokio::spawn(status_logger(senders.clone(), cfg.status_period, status_stop.clone()));

    // Wait for the batchers: they end when their tailers are done (`--once`, or shutdown) and
    // their sends are finished. After a shutdown request, wait at most `shutdownTimeoutMillis`.
    let aborts: Vec<_> = batchers.iter().map(|b| b.abort_handle()).collect();
    let wait_all = async {
        for b in batchers {
            let _ = b.await;
        }
    };
    let timeout = cfg.shutdown_timeout;
    let mut timed_out = false;
    tokio::select! {
        _ = wait_all => {}
        _ = async { shutdown.cancelled().await; tokio::time::sleep(timeout).await } => {
            timed_out = true;
            for a in &aborts {
                a.abort();
            }
        }
    }
    let pending = tracker.pending_records();
    if timed_out {
        tracing::warn!(
            "shutdown: {pending} record(s) were still being sent after {} ms; they will be sent again at the next start",
            timeout.as_millis()
        );
    }
    status_stop.cancel();
    let _ = status.await;
    writer_stop.cancel();
    let _ = writer.await;
    // Final checkpoint.
    flush_checkpoints(&store, &tracker, true);
    drop(watcher.lock().unwrap().take());

    let mut outcome = Outcome { flows: Vec::new(), interrupted: shutdown.is_cancelled() };
    for s in &senders {
        let m = s.metrics.snapshot();
        outcome.flows.push(FlowOutcome {
            label: s.label.clone(),
            metrics: m,
            undelivered: m.records_read.saturating_sub(m.records_sent),
            fatal: s.saw_fatal.load(Ordering::Relaxed),
        });
    }
    Ok(outcome)
}

/// Fold the tracker's watermarks into the store and write it if anything changed. Errors are
/// logged and retried at the next call: the agent keeps running (the checkpoint only lags).
fn flush_checkpoints(store: &Mutex<CheckpointStore>, tracker: &AckTracker, last: bool) -> bool {
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

async fn checkpoint_writer(store: Arc<Mutex<CheckpointStore>>, tracker: AckTracker, stop: CancellationToken) {
    let mut failing = false;
    let mut interval = tokio::time::interval(CHECKPOINT_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.cancelled() => return,
        }
        let (st, tr) = (store.clone(), tracker.clone());
        let ok = tokio::task::spawn_blocking(move || flush_checkpoints(&st, &tr, false)).await.unwrap_or(false);
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

async fn status_logger(senders: Vec<Arc<FlowSender>>, period: Duration, stop: CancellationToken) {
    let mut interval = tokio::time::interval(period);
    interval.tick().await;
    let mut last: Vec<crate::metrics::Snapshot> = vec![Default::default(); senders.len()];
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.cancelled() => return,
        }
        for (s, prev) in senders.iter().zip(last.iter_mut()) {
            let m = s.metrics.snapshot();
            tracing::info!(
                "{}: {} file(s); records read {} (+{}), sent {} (+{}), failed attempts {} (+{}, throttled +{}); {} bytes behind",
                s.label,
                m.files,
                m.records_read,
                m.records_read - prev.records_read,
                m.records_sent,
                m.records_sent - prev.records_sent,
                m.record_errors,
                m.record_errors - prev.record_errors,
                m.records_throttled - prev.records_throttled,
                m.bytes_behind
            );
            s.pace_tick();
            // Throttling: one line per period, with the counts and the pace.
            let (codes, requests) = s.pacer.take_counts();
            if !codes.is_empty() {
                let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c} x{n}")).collect();
                let pace = match s.pacer.rate() {
                    Some(r) => format!("sending at most {r:.0} records/s"),
                    None => "sending at full speed".to_string(),
                };
                tracing::warn!(
                    "{}: throttled in the last {} s: {} in {requests} request(s); {pace}",
                    s.label,
                    period.as_secs(),
                    codes.join(", ")
                );
            }
            if m.record_errors == prev.record_errors {
                s.quiet_period();
            }
            *prev = m;
        }
    }
}

fn start_watcher(watches: Arc<Mutex<Vec<Arc<FlowWatch>>>>) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        let structural =
            matches!(event.kind, EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other)
                || matches!(event.kind, EventKind::Modify(notify::event::ModifyKind::Name(_)));
        for w in watches.lock().unwrap().iter() {
            for p in &event.paths {
                if !p.starts_with(w.pattern.base()) {
                    continue;
                }
                let known = w.files.lock().unwrap().get(p).cloned();
                if let Some(h) = &known {
                    h.wake.notify_one();
                }
                if structural || (known.is_none() && w.pattern.matches(p)) {
                    w.rescan.notify_one();
                }
            }
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("file-system notifications are unavailable ({e}); polling instead");
            None
        }
    }
}

struct Discovery {
    flow: FlowConfig,
    watch: Arc<FlowWatch>,
    settings: TailSettings,
    tx: mpsc::Sender<Chunk>,
    store: Arc<Mutex<CheckpointStore>>,
    tracker: AckTracker,
    metrics: Arc<FlowMetrics>,
    shutdown: CancellationToken,
    had_checkpoints: bool,
    mode: Mode,
    watcher: Arc<Mutex<Option<notify::RecommendedWatcher>>>,
}

impl Discovery {
    async fn run(self) {
        let mut tailers: HashMap<FileId, Arc<TailHandle>> = HashMap::new();
        let mut reported: HashSet<PathBuf> = HashSet::new();
        let mut watching = false;
        let mut first = true;
        let mut warned_empty = false;
        let rescan = RESCAN.min(self.flow.max_time_between_file_tracker_refresh);
        loop {
            if !watching {
                watching = self.try_watch();
            }
            let mut problems = Vec::new();
            let pattern = self.watch.pattern.clone();
            let found = tokio::task::spawn_blocking(move || {
                let f = pattern.scan(&mut problems);
                (f, problems)
            })
            .await;
            let Ok((found, problems)) = found else { return };
            for (path, e) in problems {
                if reported.insert(path.clone()) {
                    FlowMetrics::add(&self.metrics.unreadable, 1);
                    tracing::warn!("flows[{}]: cannot read {}: {e}", self.flow.index, path.display());
                }
            }
            if found.is_empty() && !warned_empty {
                match self.mode {
                    Mode::Daemon => tracing::warn!(
                        "flows[{}]: no file matches {} yet; waiting for one to appear",
                        self.flow.index,
                        self.flow.file_pattern
                    ),
                    Mode::Once => {
                        tracing::warn!("flows[{}]: no file matches {}", self.flow.index, self.flow.file_pattern)
                    }
                }
                warned_empty = true;
            }
            if !found.is_empty() {
                warned_empty = false;
            }
            self.update(&found, &mut tailers, &mut reported, first);
            first = false;
            if self.mode == Mode::Once {
                return; // Dropping `tx` here: the batcher ends when the tailers do.
            }
            tokio::select! {
                _ = self.watch.rescan.notified() => {
                    // Let a burst of events settle into one scan.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ = tokio::time::sleep(rescan) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    fn try_watch(&self) -> bool {
        let mut guard = self.watcher.lock().unwrap();
        let Some(w) = guard.as_mut() else { return true };
        let base = self.watch.pattern.base();
        if !base.is_dir() {
            return false;
        }
        let mode = if self.watch.pattern.recursive() { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
        match w.watch(base, mode) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("cannot watch {}: {e}; polling", base.display());
                false
            }
        }
    }

    fn update(
        &self,
        found: &[Found],
        tailers: &mut HashMap<FileId, Arc<TailHandle>>,
        reported: &mut HashSet<PathBuf>,
        first: bool,
    ) {
        // Forget tailers of deleted files, and of files that left the pattern's reach and were
        // drained (their checkpoints stay: a file that comes back resumes from its checkpoint).
        tailers.retain(|_, h| {
            let done = h.done.load(Ordering::Relaxed);
            if done && !h.retired.load(Ordering::Relaxed) && !h.matched.load(Ordering::Relaxed) {
                self.tracker.release(h.slot);
                return false;
            }
            !(done && h.retired.load(Ordering::Relaxed))
        });
        let seen: HashSet<FileId> = found.iter().map(|f| f.id).collect();
        for (id, h) in tailers.iter() {
            h.matched.store(seen.contains(id), Ordering::Relaxed);
        }
        let mut behind = 0u64;
        for f in found {
            if let Some(h) = tailers.get(&f.id) {
                let mut p = h.path.lock().unwrap();
                if *p != f.path {
                    *p = f.path.clone();
                    self.tracker.set_path(h.slot, f.path.clone());
                }
                drop(p);
                behind += f.size.saturating_sub(h.read_offset.load(Ordering::Relaxed));
                if !h.done.load(Ordering::Relaxed) {
                    continue;
                }
                // Its tailer stopped (the file had left the pattern's reach) and it is back.
                let offset = h.committed.load(Ordering::Relaxed);
                let h2 = Arc::new(TailHandle::new(f.id, f.path.clone(), offset, h.slot));
                if let Some(file) = self.open(&f.path, reported).filter(|file| is_same_file(file, f.id)) {
                    tailers.insert(f.id, h2.clone());
                    tokio::spawn(self.tailer(file, h2, offset).run());
                }
                continue;
            }
            let Some(file) = self.open(&f.path, reported) else { continue };
            if !is_same_file(&file, f.id) {
                continue; // Rotated between the scan and the open: the next scan sees it right.
            }
            let Some((mut offset, marker)) = self.start_offset(f, &file, first) else { continue };
            let mut copy_of = None;
            if offset == 0 && self.mode == Mode::Daemon {
                match copy_source(&file, f, tailers) {
                    Some(CopySource::Truncated(committed)) => offset = committed.min(f.size),
                    Some(CopySource::Live(original)) => copy_of = Some(original),
                    None => {}
                }
            }
            let slot = self.tracker.register_file(self.settings.flow_id.clone(), f.path.clone(), f.id, offset, marker);
            let h = Arc::new(TailHandle::new(f.id, f.path.clone(), offset, slot));
            behind += f.size.saturating_sub(offset);
            tailers.insert(f.id, h.clone());
            let mut t = self.tailer(file, h, offset);
            t.copy_of = copy_of;
            tokio::spawn(t.run());
        }
        let mut files = self.watch.files.lock().unwrap();
        files.clear();
        for h in tailers.values() {
            files.insert(h.path.lock().unwrap().clone(), h.clone());
        }
        self.metrics
            .files
            .store(tailers.values().filter(|h| !h.done.load(Ordering::Relaxed)).count() as u64, Ordering::Relaxed);
        self.metrics.bytes_behind.store(behind, Ordering::Relaxed);
    }

    /// Open a matched file; a failure is reported once per path (and retried at the next scan).
    fn open(&self, path: &Path, reported: &mut HashSet<PathBuf>) -> Option<File> {
        match File::open(path) {
            Ok(f) => {
                if reported.remove(path) {
                    tracing::info!("flows[{}]: {} is readable now", self.flow.index, path.display());
                }
                Some(f)
            }
            Err(e) => {
                if reported.insert(path.to_path_buf()) {
                    FlowMetrics::add(&self.metrics.unreadable, 1);
                    let then = match self.mode {
                        Mode::Daemon => "other files keep flowing, and it is retried at every scan",
                        Mode::Once => "it is skipped",
                    };
                    tracing::warn!("flows[{}]: cannot open {}: {e}; {then}", self.flow.index, path.display());
                }
                None
            }
        }
    }

    fn tailer(&self, file: File, handle: Arc<TailHandle>, offset: u64) -> Tailer {
        Tailer {
            settings: self.settings.clone(),
            file,
            handle,
            offset,
            tx: self.tx.clone(),
            tracker: self.tracker.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            copy_of: None,
        }
    }

    /// Where a newly found file starts, and the marker of the bytes before that: its checkpoint
    /// if the file still holds the same bytes there; else `initialPosition` for files present at
    /// the first start of a daemon flow; else 0 (files that appear later, and `--once`).
    fn start_offset(&self, f: &Found, file: &File, first: bool) -> Option<(u64, Option<identity::Sample>)> {
        let store = self.store.lock().unwrap();
        if let Some(e) = store.get(&self.flow.id, f.id) {
            let why = if e.offset > f.size {
                Some(format!("the checkpoint is at byte {} but the file holds {}", e.offset, f.size))
            } else if e.head.is_some_and(|h| !identity::still_matches(file, h, None)) {
                Some("the file no longer starts with the bytes it had (a new file reusing the inode)".to_string())
            } else if e.marker.is_some_and(|m| !identity::still_matches(file, m, Some(e.offset))) {
                Some(format!("the bytes before the checkpoint (byte {}) changed", e.offset))
            } else {
                None
            };
            return match why {
                None => Some((e.offset, e.marker)),
                Some(why) => {
                    FlowMetrics::add(&self.metrics.checkpoints_distrusted, 1);
                    tracing::warn!(
                        "{}: {why}: it was replaced or truncated, reading it from the start",
                        f.path.display()
                    );
                    Some((0, None))
                }
            };
        }
        drop(store);
        if self.mode == Mode::Daemon && first && !self.had_checkpoints {
            return match self.flow.initial_position {
                InitialPosition::StartOfFile => Some((0, None)),
                InitialPosition::EndOfFile => end_of_last_line(file, f.size).map(|o| (o, identity::marker(file, o))),
            };
        }
        Some((0, None))
    }
}

/// Whether an opened file is the one a scan found (the path may have been rotated in between).
fn is_same_file(file: &File, id: FileId) -> bool {
    use std::os::unix::fs::MetadataExt;
    file.metadata().is_ok_and(|m| FileId { dev: m.dev(), ino: m.ino() } == id)
}

enum CopySource {
    /// A tailed file with the same head was truncated in place moments ago, after being read up
    /// to this offset.
    Truncated(u64),
    /// A tailed file with the same head is live: wait for its truncation.
    Live(Arc<TailHandle>),
}

/// Whether a new file `f` is a copy of a tailed file (logrotate `copytruncate` with a pattern that
/// matches the copies): it then starts where the original was read, instead of at 0.
fn copy_source(file: &File, f: &Found, tailers: &HashMap<FileId, Arc<TailHandle>>) -> Option<CopySource> {
    use crate::tail::{COPY_WINDOW, MIN_COPY_HEAD};
    let head = identity::head(file, f.size).filter(|h| h.len >= MIN_COPY_HEAD)?;
    for h in tailers.values().filter(|h| h.id != f.id) {
        let truncated = *h.truncated.lock().unwrap();
        if let Some(t) = truncated.filter(|t| t.head == head && t.at.elapsed() < COPY_WINDOW) {
            return Some(CopySource::Truncated(t.committed));
        }
        if !h.done.load(Ordering::Relaxed) && *h.head.lock().unwrap() == Some(head) {
            return Some(CopySource::Live(h.clone()));
        }
    }
    None
}

/// The offset just after the last newline of the file (so a partial last line is still sent
/// once completed). Looks back at most 1 MiB; a file with no newline there starts at its end.
fn end_of_last_line(file: &File, size: u64) -> Option<u64> {
    const BACK: u64 = 1024 * 1024;
    let from = size.saturating_sub(BACK);
    let mut buf = vec![0u8; (size - from) as usize];
    let n = file.read_at(&mut buf, from).ok()?;
    match memchr::memrchr(b'\n', &buf[..n]) {
        Some(i) => Some(from + i as u64 + 1),
        None if from == 0 => Some(0),
        None => Some(size),
    }
}
