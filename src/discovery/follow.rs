//! One flow's discovery loop: scan, decide where each new file starts (its checkpoint, the
//! initial position, or, for a copy proven by `decide::copy_verdict`, where its original was
//! acknowledged), start a tailer per file, and tell tailers whether their file still matches.
//! Compressed files the pattern names go to `archives.rs`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::decide::{self, Original, Seen};
use super::pattern::{Found, Pattern};
use crate::ack::AckTracker;
use crate::checkpoint::CheckpointStore;
use crate::config::{FlowConfig, InitialPosition};
use crate::metrics::FlowMetrics;
use crate::tail::budget::{self, OpenFiles, Permit};
use crate::tail::{TailHandle, TailSettings, TailedFiles, Tailer, Truncation};
use crate::types::identity::FileId;
use crate::types::identity::{self, Mark, OpenFile, Sample};
use crate::types::record::Chunk;

/// Re-glob at least this often, even without file-system events.
const RESCAN: Duration = Duration::from_secs(1);
/// ... and this often while a new file waits for the verdict on whether it is a copy, or for a
/// descriptor.
const RESCAN_PENDING: Duration = Duration::from_millis(100);

/// What the watcher and discovery of one flow share.
pub struct FlowWatch {
    pub pattern: Pattern,
    /// Wakes discovery (a file appeared, moved or vanished).
    pub rescan: Notify,
    /// Tailed files by current path, to wake the right tailer on a change.
    pub files: TailedFiles,
}

impl FlowWatch {
    pub fn new(pattern: Pattern) -> FlowWatch {
        FlowWatch { pattern, rescan: Notify::new(), files: TailedFiles::default() }
    }
}

pub struct Discovery {
    pub flow: FlowConfig,
    pub watch: Arc<FlowWatch>,
    pub settings: TailSettings,
    pub tx: mpsc::Sender<Chunk>,
    pub store: Arc<Mutex<CheckpointStore>>,
    pub tracker: AckTracker,
    pub metrics: Arc<FlowMetrics>,
    pub shutdown: CancellationToken,
    /// The flow has checkpoints from an earlier run (`initialPosition` applies only without).
    pub had_checkpoints: bool,
    /// `--once`: one scan, and no waiting for verdicts.
    pub once: bool,
    /// The agent's open-file budget, shared by every flow.
    pub files: Arc<OpenFiles>,
    pub watcher: Arc<Mutex<Option<notify::RecommendedWatcher>>>,
}

/// A new file without a checkpoint of its own, kept open (so nothing is lost if it is rotated
/// away) until `decide::copy_verdict` says where it starts.
pub(super) struct Pending {
    pub(super) file: File,
    pub(super) permit: Permit,
    pub(super) path: PathBuf,
    pub(super) size: u64,
    pub(super) seen: Seen,
    /// The live files it starts like (for the log line when it is read from its start).
    pub(super) waited_on: Option<PathBuf>,
}

/// The loop's state across scans.
#[derive(Default)]
pub(super) struct State {
    pub(super) tailers: HashMap<FileId, Arc<TailHandle>>,
    pub(super) pending: HashMap<FileId, Pending>,
    /// Paths that could not be opened (said once, until they can).
    pub(super) unopened: HashSet<PathBuf>,
    /// Scan problems already said (path and kind), until a clean scan.
    pub(super) scan_problems: HashSet<(PathBuf, std::io::ErrorKind)>,
    /// Clean scans in a row that missed each tailed file.
    pub(super) absent: HashMap<FileId, u32>,
    stalls: HashMap<FileId, Stall>,
    /// Checkpointed files found truncated or rewritten at the start: a copy of one made while
    /// the agent was stopped resumes where it was acknowledged.
    pub(super) startup: Vec<(FileId, PathBuf, Original)>,
    /// Truncations of files no longer followed (deleted, or out of the pattern's reach): a copy
    /// of one still resumes where it was acknowledged, once its records in flight settle.
    pub(super) closed: Vec<(FileId, PathBuf, Truncation)>,
    /// Files that could not be opened at this scan for want of descriptors, and whether that was
    /// said.
    pub(super) fd_waiting: usize,
    pub(super) fd_warned: bool,
    /// Compressed files the pattern names (`archives.rs`), and whether the daemon said how it
    /// reads them.
    pub(super) archives: HashMap<FileId, super::archives::Archived>,
    pub(super) archives_said: bool,
    /// The tailer tasks, waited for when the flow stops.
    pub(super) tasks: tokio_util::task::TaskTracker,
}

impl Discovery {
    pub async fn run(self) {
        let mut st = State::default();
        // The watched base directory's identity: when it is deleted (or replaced) and comes back,
        // the new one is watched.
        let mut watching: Option<FileId> = None;
        let mut first = true;
        let mut warned_empty = false;
        let rescan = RESCAN.min(self.flow.max_time_between_file_tracker_refresh);
        loop {
            let base = dir_id(self.watch.pattern.base());
            if base.is_some() && watching != base {
                watching = if self.try_watch() { base } else { None };
            }
            let live = base.is_some() && watching == base && self.watcher.lock().unwrap().is_some();
            self.settings.notified.store(live, Ordering::Relaxed);
            let pattern = self.watch.pattern.clone();
            let scanned = tokio::task::spawn_blocking(move || {
                let mut problems = Vec::new();
                let f = pattern.scan(&mut problems);
                (f, problems)
            })
            .await;
            let Ok((found, problems)) = scanned else { return };
            let clean = problems.is_empty();
            self.report_problems(problems, &mut st);
            if found.is_empty() && !warned_empty && clean {
                if self.once {
                    tracing::warn!("flows[{}]: no file matches {}", self.flow.index, self.flow.file_pattern)
                } else {
                    tracing::warn!(
                        "flows[{}]: no file matches {} yet; waiting for one to appear",
                        self.flow.index,
                        self.flow.file_pattern
                    )
                }
                warned_empty = true;
            }
            if !found.is_empty() {
                warned_empty = false;
            }
            // Files found are there, whatever else failed; only a clean scan shows which are gone.
            self.store.lock().unwrap().saw(&self.flow.id, found.iter().map(|f| f.id), clean);
            // Archives (the compressed files the pattern names) are read apart; a file followed
            // as a plain one stays so whatever its name.
            let (archives, plain): (Vec<Found>, Vec<Found>) = found.iter().cloned().partition(|f| {
                st.archives.contains_key(&f.id)
                    || (self.watch.pattern.names_archive(&f.path)
                        && !st.tailers.contains_key(&f.id)
                        && !st.pending.contains_key(&f.id))
            });
            if first {
                st.startup = self.truncated_while_stopped(&plain);
            }
            self.update(&plain, clean, &mut st, first);
            let waiting = st.fd_waiting;
            self.update_archives(&archives, clean, &mut st, first);
            if st.fd_waiting != waiting {
                self.say_fd_shortage(&mut st);
            }
            let (archives_behind, archives_read) = self.archives_behind(&st, &archives);
            FlowMetrics::add(&self.metrics.bytes_behind, archives_behind);
            FlowMetrics::add(&self.metrics.files, archives_read);
            if st.archives.values().any(|a| a.reading.is_some()) {
                let mut all = st.tailers.clone();
                all.extend(st.archives.values().filter_map(|a| a.reading.clone().map(|h| (h.id, h))));
                self.check_stalls(&found, &all, &mut st.stalls);
            } else {
                self.check_stalls(&found, &st.tailers, &mut st.stalls);
            }
            first = false;
            if self.once {
                return; // Dropping `tx` here: the batcher ends when the tailers do.
            }
            let mut wait =
                if st.pending.is_empty() && st.fd_waiting == 0 { rescan } else { rescan.min(RESCAN_PENDING) };
            if let Some(ready) = self.next_archive_ready(&st) {
                wait = wait.min(ready);
            }
            tokio::select! {
                _ = self.watch.rescan.notified() => {
                    // Let a burst of events settle into one scan.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        // Stopped (shutdown, or a reload removed the flow): once the tailers are done, stop
        // tracking the files when what was read is acknowledged; their checkpoints stay, for
        // a flow added again later.
        st.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), st.tasks.wait()).await;
        let reading: Vec<Arc<TailHandle>> = st.archives.values().filter_map(|a| a.reading.clone()).collect();
        for h in st.tailers.values().chain(&reading) {
            self.tracker.release(h.slot());
        }
        self.files.set_waiting(self.flow.index, 0);
    }

    /// Each scan problem is said once (per path and kind of error) until a clean scan. A scan with
    /// a problem proves nothing about the files it did not find.
    fn report_problems(&self, problems: Vec<(PathBuf, std::io::Error)>, st: &mut State) {
        if problems.is_empty() {
            if !st.scan_problems.is_empty() {
                tracing::info!("flows[{}]: {} can be scanned again", self.flow.index, self.flow.file_pattern);
                st.scan_problems.clear();
            }
            return;
        }
        for (path, e) in problems {
            if st.scan_problems.insert((path.clone(), e.kind())) {
                FlowMetrics::add(&self.metrics.unreadable, 1);
                tracing::warn!(
                    "flows[{}]: cannot read {}: {e}; files already followed are kept (a failed scan is not taken for a rotation), and the scan is retried",
                    self.flow.index,
                    path.display()
                );
            }
        }
    }

    fn try_watch(&self) -> bool {
        let mut guard = self.watcher.lock().unwrap();
        let Some(w) = guard.as_mut() else { return true };
        let base = self.watch.pattern.base();
        let mode = if self.watch.pattern.recursive() { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
        match w.watch(base, mode) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("cannot watch {}: {e}; polling", base.display());
                false
            }
        }
    }

    fn update(&self, found: &[Found], clean: bool, st: &mut State, first: bool) {
        // Forget tailers of deleted files, and of files that left the pattern's reach and were
        // drained (their checkpoints stay: a file that comes back resumes from its checkpoint).
        let window = decide::COPY_WINDOW;
        st.closed.retain(|(_, _, t)| t.at.elapsed() <= window);
        st.tailers.retain(|_, h| {
            let done = h.done.load(Ordering::Relaxed);
            let retired = h.retired.load(Ordering::Relaxed);
            let keep = !(done && (retired || !h.matched.load(Ordering::Relaxed)));
            if !keep {
                if !retired {
                    self.tracker.release(h.slot());
                }
                if let Some(t) = h.truncated.lock().unwrap().clone().filter(|t| t.at.elapsed() <= window) {
                    st.closed.push((h.id, h.path.lock().unwrap().clone(), t));
                }
            }
            keep
        });
        let seen: HashSet<FileId> = found.iter().map(|f| f.id).collect();
        st.absent.retain(|id, _| st.tailers.contains_key(id));
        for (id, h) in st.tailers.iter() {
            let absent = st.absent.entry(*id).or_default();
            h.matched.store(decide::still_matched(seen.contains(id), clean, absent), Ordering::Relaxed);
            if !seen.contains(id) {
                self.follow_rename(h);
            }
        }
        self.limit_rotated(&st.tailers);
        if self.files.waiting() > 0 {
            self.make_room(&st.tailers);
        }
        st.fd_waiting = 0;
        let mut behind = 0u64;
        for f in found {
            if let Some(h) = st.tailers.get(&f.id) {
                let mut p = h.path.lock().unwrap();
                if *p != f.path {
                    *p = f.path.clone();
                    self.tracker.set_path(h.slot(), f.path.clone());
                }
                drop(p);
                behind += f.size.saturating_sub(h.read_offset.load(Ordering::Relaxed));
                h.size.store(f.size, Ordering::Relaxed);
                if !h.done.load(Ordering::Relaxed) || h.parked_at.load(Ordering::Relaxed) == f.size {
                    continue;
                }
                // Its tailer stopped (closed for the open-file budget) and the file grew.
                let h = h.clone();
                self.resume(st, &h, f);
                continue;
            }
            if let Some(p) = st.pending.get_mut(&f.id) {
                p.path = f.path.clone();
                behind += f.size;
                continue;
            }
            let Some((file, permit)) = self.open(&f.path, st) else { continue };
            if !is_same_file(&file, f.id) {
                continue; // Rotated between the scan and the open: the next scan sees it right.
            }
            match self.start_offset(f, &file, first) {
                Some((offset, marker)) => {
                    behind += f.size.saturating_sub(offset);
                    self.start(st, f.id, &f.path, (file, permit), offset, marker);
                }
                None => {
                    behind += f.size;
                    let now = Instant::now().into_std();
                    st.pending.insert(
                        f.id,
                        Pending {
                            file,
                            permit,
                            path: f.path.clone(),
                            size: f.size,
                            seen: Seen::new(now, f.size),
                            waited_on: None,
                        },
                    );
                }
            }
        }
        self.decide_pending(st);
        self.say_fd_shortage(st);
        let mut files = self.watch.files.lock().unwrap();
        files.clear();
        for h in st.tailers.values() {
            files.insert(h.path.lock().unwrap().clone(), h.clone());
        }
        self.metrics
            .files
            .store(st.tailers.values().filter(|h| !h.done.load(Ordering::Relaxed)).count() as u64, Ordering::Relaxed);
        self.metrics.bytes_behind.store(behind, Ordering::Relaxed);
    }

    /// Register a file with the ack tracker at `offset` and start its tailer.
    pub(super) fn start(
        &self,
        st: &mut State,
        id: FileId,
        path: &Path,
        file: (File, Permit),
        offset: u64,
        marker: Option<Sample>,
    ) {
        let slot = self.tracker.register_file(self.settings.flow_id.clone(), path.to_path_buf(), id, offset, marker);
        let h = Arc::new(TailHandle::new(id, path.to_path_buf(), offset, marker, slot));
        st.tailers.insert(id, h.clone());
        st.tasks.spawn(self.tailer(file, h, offset, None).run());
    }

    /// Open again a file whose tailer closed it, and go on where it stopped if the file still
    /// holds what was read; else read it from its start (its old records settle apart).
    fn resume(&self, st: &mut State, h: &TailHandle, f: &Found) {
        let Some((file, permit)) = self.open(&f.path, st) else { return };
        if !is_same_file(&file, f.id) {
            return;
        }
        let committed = h.committed.load(Ordering::Relaxed);
        let mark =
            Mark { offset: committed, head: *h.head.lock().unwrap(), marker: *h.committed_marker.lock().unwrap() };
        let (slot, offset, marker) = match OpenFile::measure(&file).map(|c| identity::checkpoint_trust(&mark, &c)) {
            Some(Ok(())) => (h.slot(), committed, mark.marker),
            Some(Err(why)) => {
                tracing::warn!("{}: {why} while it was closed: reading it from the start", f.path.display());
                (self.tracker.supersede(h.slot()), 0, None)
            }
            None => return,
        };
        let h2 = Arc::new(TailHandle::new(f.id, f.path.clone(), offset, marker, slot));
        st.tailers.insert(f.id, h2.clone());
        st.tasks.spawn(self.tailer((file, permit), h2, offset, None).run());
    }

    /// The open-file budget is spent and files wait: close files read to their end and
    /// acknowledged, idle for a second, those no longer matched first, then the longest idle.
    /// Their tailers close them once settled; a closed file that grows is opened again.
    fn make_room(&self, tailers: &HashMap<FileId, Arc<TailHandle>>) {
        let mut idle: Vec<_> = tailers
            .values()
            .filter(|h| !h.done.load(Ordering::Relaxed) && !h.close_now.load(Ordering::Relaxed))
            .filter_map(|h| h.quiet_since.lock().unwrap().map(|since| (h.matched.load(Ordering::Relaxed), since, h)))
            .filter(|(_, since, _)| since.elapsed() >= Duration::from_secs(1))
            .collect();
        idle.sort_by_key(|(matched, since, _)| (*matched, *since));
        for (_, _, h) in idle.into_iter().take(self.files.waiting().max(8)) {
            h.close_now.store(true, Ordering::Relaxed);
            h.wake.notify_one();
        }
    }

    /// Files left unopened for want of descriptors: said once per episode, with what to do.
    fn say_fd_shortage(&self, st: &mut State) {
        self.files.set_waiting(self.flow.index, st.fd_waiting);
        if st.fd_waiting > 0 && !st.fd_warned {
            st.fd_warned = true;
            tracing::warn!(
                "flows[{}]: {} file(s) wait to be opened: the agent has {} files open, all it may ({}); files read to their end and acknowledged are being closed to make room (rotated ones first). Raise the limit on open files (LimitNOFILE= in the unit, or ulimit -n)",
                self.flow.index,
                st.fd_waiting,
                self.files.open(),
                self.files.limit()
            );
        } else if st.fd_waiting == 0 && st.fd_warned {
            st.fd_warned = false;
            tracing::info!("flows[{}]: every matched file could be opened again", self.flow.index);
        }
    }

    /// Open a matched file with a share of the open-file budget. Without one (or with the
    /// system out of descriptors) the file waits for the next scan; another failure is reported
    /// once per path (and retried at the next scan).
    pub(super) fn open(&self, path: &Path, st: &mut State) -> Option<(File, Permit)> {
        let Some(permit) = self.files.take() else {
            st.fd_waiting += 1;
            return None;
        };
        match File::open(path) {
            Ok(f) => {
                if st.unopened.remove(path) {
                    tracing::info!("flows[{}]: {} is readable now", self.flow.index, path.display());
                }
                Some((f, permit))
            }
            Err(e) if budget::out_of_descriptors(&e) => {
                st.fd_waiting += 1;
                None
            }
            Err(e) => {
                if st.unopened.insert(path.to_path_buf()) {
                    FlowMetrics::add(&self.metrics.unreadable, 1);
                    let then = if self.once {
                        "it is skipped"
                    } else {
                        "other files keep flowing, and it is retried at every scan"
                    };
                    tracing::warn!("flows[{}]: cannot open {}: {e}; {then}", self.flow.index, path.display());
                }
                None
            }
        }
    }

    /// The tailer of a file (`archive`: a compressed file, read through its decoder).
    pub(super) fn tailer(
        &self,
        (file, permit): (File, Permit),
        handle: Arc<TailHandle>,
        offset: u64,
        archive: Option<crate::tail::archive::Kind>,
    ) -> Tailer {
        Tailer {
            archive,
            settings: self.settings.clone(),
            file,
            permit: Some(permit),
            handle,
            offset,
            tx: self.tx.clone(),
            tracker: self.tracker.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// A file with unread bytes whose read offset has not moved for `stalledFileWarningMillis`
    /// is stalled: the destination is slow or down (the tailer waits for room), or the tailer is
    /// stuck. Said once per flow and scan for the files newly stalled, again when they move, and
    /// counted in the status line.
    fn check_stalls(
        &self,
        found: &[Found],
        tailers: &HashMap<FileId, Arc<TailHandle>>,
        stalls: &mut HashMap<FileId, Stall>,
    ) {
        let now = Instant::now();
        let mut newly = Vec::new();
        let mut stalled = 0;
        stalls.retain(|id, _| tailers.contains_key(id));
        for f in found {
            let Some(h) = tailers.get(&f.id).filter(|h| !h.done.load(Ordering::Relaxed)) else { continue };
            let offset = h.read_offset.load(Ordering::Relaxed);
            let unread = f.size.saturating_sub(offset);
            let st = stalls.entry(f.id).or_insert(Stall { offset, since: now, warned: false });
            if offset != st.offset || unread == 0 {
                if st.warned {
                    tracing::info!("flows[{}]: {} is being read again", self.flow.index, f.path.display());
                }
                *st = Stall { offset, since: now, warned: false };
                continue;
            }
            if !st.warned && now.duration_since(st.since) >= self.flow.stalled_file_warning {
                st.warned = true;
                newly.push(format!("{} ({unread} bytes unread at byte {offset})", f.path.display()));
            }
            if st.warned {
                stalled += 1;
            }
        }
        self.metrics.files_stalled.store(stalled, Ordering::Relaxed);
        if !newly.is_empty() {
            tracing::warn!(
                "flows[{}]: {} file(s) not read for {} s although they have unread bytes: {}; the destination is slow or down (see the status and error lines), or reading is stuck",
                self.flow.index,
                newly.len(),
                self.flow.stalled_file_warning.as_secs(),
                newly.join(", ")
            );
        }
    }

    /// Files that left the pattern's reach stay open while they may still be written to
    /// (`rotateWaitMillis`); beyond `maxOpenRotatedFiles` of them read to their end, the ones
    /// quiet the longest are closed now.
    fn limit_rotated(&self, tailers: &HashMap<FileId, Arc<TailHandle>>) {
        let mut drained: Vec<_> = tailers
            .values()
            .filter(|h| !h.matched.load(Ordering::Relaxed) && !h.done.load(Ordering::Relaxed))
            .filter_map(|h| h.drained_since.lock().unwrap().map(|since| (since, h)))
            .collect();
        let Some(excess) = drained.len().checked_sub(self.flow.max_open_rotated_files).filter(|&n| n > 0) else {
            return;
        };
        drained.sort_by_key(|(since, _)| *since);
        for (_, h) in &drained[..excess] {
            if !h.close_now.swap(true, Ordering::Relaxed) {
                h.wake.notify_one();
            }
        }
        tracing::debug!(
            "flows[{}]: {} rotated file(s) read to their end are open, more than maxOpenRotatedFiles ({}): closing {excess}",
            self.flow.index,
            drained.len(),
            self.flow.max_open_rotated_files
        );
    }

    /// Where a newly found file starts, and the marker of the bytes before that: its checkpoint
    /// if the file still holds the same bytes there; `initialPosition` for files present at the
    /// first start of a daemon flow. `None`: a new file, which may be a copy (see
    /// `decide_pending`); it is read from 0 unless proven one.
    /// A tailed file the scan did not find may have been renamed out of the pattern's reach
    /// (rotated): its path is taken from the tailer's open descriptor, so that its checkpoint
    /// names it where it is now (and, as `was`, the live file it was). Informational only: files
    /// are found by identity.
    fn follow_rename(&self, h: &TailHandle) {
        let fd = h.fd.load(Ordering::Relaxed);
        if fd < 0 || h.done.load(Ordering::Relaxed) {
            return;
        }
        let Ok(now) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else { return };
        // A deleted file has no path any more; a descriptor reused since is no file of ours.
        let deleted = now.as_os_str().as_encoded_bytes().ends_with(b" (deleted)");
        if deleted || !is_same_file_at(&now, h.id) {
            return;
        }
        let mut p = h.path.lock().unwrap();
        if *p != now {
            *p = now.clone();
            self.tracker.set_path(h.slot(), now);
        }
    }

    fn start_offset(&self, f: &Found, file: &File, first: bool) -> Option<(u64, Option<Sample>)> {
        let store = self.store.lock().unwrap();
        if let Some(e) = store.get(&self.flow.id, f.id) {
            let mark = Mark { offset: e.offset, head: e.head, marker: e.marker };
            let content = OpenFile { file, size: f.size };
            return match identity::checkpoint_trust(&mark, &content) {
                Ok(()) => Some((e.offset, e.marker)),
                Err(why) => {
                    FlowMetrics::add(&self.metrics.checkpoints_distrusted, 1);
                    tracing::warn!(
                        "{}: {why}: it was replaced or truncated, reading it from the start",
                        f.path.display()
                    );
                    None
                }
            };
        }
        drop(store);
        if !self.once && first && !self.had_checkpoints {
            return match self.flow.initial_position {
                InitialPosition::StartOfFile => Some((0, None)),
                InitialPosition::EndOfFile => end_of_last_line(file, f.size).map(|o| (o, identity::marker(file, o))),
            };
        }
        None
    }
}

fn dir_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().filter(|m| m.is_dir()).map(|m| FileId { dev: m.dev(), ino: m.ino() })
}

/// Progress of a tailed file as seen by discovery, for the stall warning.
struct Stall {
    offset: u64,
    since: Instant,
    warned: bool,
}

/// Whether the file at `path` is `id`.
fn is_same_file_at(path: &Path, id: FileId) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| FileId { dev: m.dev(), ino: m.ino() } == id)
}

/// Whether an opened file is the one a scan found (the path may have been rotated in between).
pub(super) fn is_same_file(file: &File, id: FileId) -> bool {
    use std::os::unix::fs::MetadataExt;
    file.metadata().is_ok_and(|m| FileId { dev: m.dev(), ino: m.ino() } == id)
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
