//! The tailer of one file: reads from an offset, splits lines (and builds multi-line records),
//! registers each chunk with the ack tracker, and sends it to the flow's batcher over a bounded
//! channel (a full channel stops the reading: back-pressure). At end of file it waits for a
//! file-system wake-up or the poll interval, and notices truncation (read again from 0), deletion
//! (drain, then stop) and a file moved out of the pattern's reach (drain, then stop once quiet).
//! Whether a new file is a copy of another is not its business: discovery decides that before it
//! starts the tailer.

pub mod archive;
pub mod budget;
mod convert;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ack::AckTracker;
use crate::metrics::FlowMetrics;
use crate::record::multiline::MultiLine;
use crate::record::pipeline::Pipeline;
use crate::record::split::{LineSplitter, SplitStats};
use crate::types::identity::{self, Content, FileId};
use crate::types::record::{Chunk, Origin, Record};

/// Bytes read per system call: big enough to amortise the call, small enough to stay fair
/// between files and keep memory low. The records of a batch in flight pin the buffers they were
/// read in: 128 KiB instead of 256 took the bench's peak from 22 to 20-22 MiB (HTTPS 25-26 to
/// 23-24) at the same CPU per line.
pub const READ_SIZE: usize = 128 * 1024;
/// Longest poll interval of a quiet file that notifications cover (`TailSettings::notified`).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often a tailer re-reads its file's head to notice a rewrite in place; also after it waited
/// `HELD_BACK` for room to hand a chunk on.
const HEAD_CHECK_EVERY: Duration = Duration::from_secs(1);
const HELD_BACK: Duration = Duration::from_millis(50);

/// A flow's tailed files by current path: discovery keeps it, file-system events and copy
/// recognition look handles up in it.
pub type TailedFiles = Arc<Mutex<HashMap<PathBuf, Arc<TailHandle>>>>;

/// What discovery and the tailer share about one tailed file.
#[derive(Debug)]
pub struct TailHandle {
    pub id: FileId,
    pub path: Mutex<PathBuf>,
    /// Woken by file-system events on the file.
    pub wake: Notify,
    /// The pattern matched the file at the last scan.
    pub matched: AtomicBool,
    /// Offset of the next read (for "bytes behind").
    pub read_offset: AtomicU64,
    /// The file's size at the last discovery scan (for the per-file lag metric).
    pub size: AtomicU64,
    /// End of the last complete line handed on: where a new tailer of this file resumes.
    pub committed: AtomicU64,
    /// The marker of the bytes before `committed`: the tailer checks it for a rewrite in place,
    /// a reopen before going on from there.
    pub committed_marker: Mutex<Option<identity::Sample>>,
    /// The tailer closed the file to free a descriptor (`close_now` while it still matched), at
    /// this size; `u64::MAX`: not parked. Reopened when it grows.
    pub parked_at: AtomicU64,
    /// The tailer has stopped.
    pub done: AtomicBool,
    /// The tailer stopped for good (the file was deleted and drained).
    pub retired: AtomicBool,
    /// The file's handle in the ack tracker (a new one after each truncation).
    pub slot: AtomicU64,
    /// The file's head fingerprint as last taken by its tailer.
    pub head: Mutex<Option<identity::Sample>>,
    /// The file's first bytes (up to `decide::START_BYTES`), taken with `head`.
    pub start: Mutex<Vec<u8>>,
    /// When the file was seen truncated or rewritten (by discovery or the tailer) and its tailer
    /// has not started it over yet: what was read of its old content may still be in flight.
    /// With the tracker handle (`slot`) of the content it applies to: a truncation the tailer
    /// has already handled is not taken for a new one.
    pub truncation_seen: Mutex<Option<(u64, Instant)>>,
    /// The last time the file was truncated in place (copytruncate), once what was read of its old
    /// content was acknowledged.
    pub truncated: Mutex<Option<Truncation>>,
    /// Since when the file has been read to its end while no longer matching the pattern.
    pub drained_since: Mutex<Option<Instant>>,
    /// Since when the file has been read to its end (matched or not), for the open-file budget.
    pub quiet_since: Mutex<Option<Instant>>,
    /// Close the file as soon as it is read to its end and acknowledged (too many rotated files
    /// are open, or the open-file budget is spent).
    pub close_now: AtomicBool,
    /// The tailer's open descriptor while it runs (-1 otherwise): where a file rotated out of
    /// the pattern's reach now lives is read from `/proc/self/fd`.
    pub fd: std::sync::atomic::AtomicI32,
    /// How the reading of an archive ended (`None`: not an archive, still reading, or stopped by
    /// a shutdown).
    pub archive_end: Mutex<Option<archive::End>>,
}

/// What a file held when it was truncated in place: a copy of it that appears (logrotate
/// `copytruncate`) and holds those bytes is read from `committed` (every record before it was
/// acknowledged), so the lines written between our last read and the copy are sent, and nothing
/// is sent twice.
#[derive(Debug, Clone)]
pub struct Truncation {
    pub start: Vec<u8>,
    pub head: identity::Sample,
    pub committed: u64,
    /// The bytes just before `committed`.
    pub marker: Option<identity::Sample>,
    /// When the truncation was first seen.
    pub at: Instant,
    /// The ack tracker's handle of the old content: `committed` is acknowledged once it settles.
    pub slot: u64,
}

impl TailHandle {
    pub fn slot(&self) -> u64 {
        self.slot.load(Ordering::Relaxed)
    }

    /// Whether a truncation of the content tracked under `slot` was seen (by discovery).
    pub fn truncation_seen_for(&self, slot: u64) -> bool {
        self.truncation_seen.lock().unwrap().is_some_and(|(s, _)| s == slot)
    }

    /// A file followed from `offset` (`marker`: the bytes before it, when known).
    pub fn new(id: FileId, path: PathBuf, offset: u64, marker: Option<identity::Sample>, slot: u64) -> Self {
        TailHandle {
            id,
            path: Mutex::new(path),
            wake: Notify::new(),
            matched: AtomicBool::new(true),
            read_offset: AtomicU64::new(offset),
            size: AtomicU64::new(offset),
            committed: AtomicU64::new(offset),
            committed_marker: Mutex::new(marker),
            parked_at: AtomicU64::new(u64::MAX),
            done: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            slot: AtomicU64::new(slot),
            head: Mutex::new(None),
            start: Mutex::new(Vec::new()),
            truncation_seen: Mutex::new(None),
            truncated: Mutex::new(None),
            drained_since: Mutex::new(None),
            quiet_since: Mutex::new(None),
            close_now: AtomicBool::new(false),
            fd: std::sync::atomic::AtomicI32::new(-1),
            archive_end: Mutex::new(None),
        }
    }
}

/// Per-flow settings a tailer needs.
#[derive(Debug, Clone)]
pub struct TailSettings {
    pub flow_id: Arc<str>,
    /// What the records of a chunk go through once split (and the record limit the splitter
    /// holds lines to).
    pub pipeline: Pipeline,
    pub skip_header_lines: u64,
    pub poll: Duration,
    /// File-system notifications reach this flow's files (discovery watches their directory):
    /// a quiet file is then polled less often, as a change wakes its tailer at once.
    pub notified: Arc<AtomicBool>,
    /// `--once`: stop at end of file.
    pub once: bool,
    /// `multiLineStartPattern`, anchored (`None`: a record per line).
    pub multi_line: Option<regex::bytes::Regex>,
    /// A multi-line record leaves after its file has been quiet this long.
    pub multi_line_flush: Duration,
    /// A file that no longer matches the pattern is closed once drained and quiet this long.
    pub rotate_wait: Duration,
}

pub struct Tailer {
    pub settings: TailSettings,
    pub file: File,
    pub handle: Arc<TailHandle>,
    pub offset: u64,
    pub tx: mpsc::Sender<Chunk>,
    pub tracker: AckTracker,
    pub metrics: Arc<FlowMetrics>,
    pub shutdown: CancellationToken,
    /// The file's share of the open-file budget, given back when the tailer ends.
    pub permit: Option<budget::Permit>,
    /// A compressed file read through its decoder; offsets are then decompressed bytes.
    pub archive: Option<archive::Kind>,
}

enum Next {
    Continue,
    Stop,
}

/// Records finished by the multi-line builder, the offset after the last, and its counts.
struct Built {
    slot: u64,
    records: Vec<Record>,
    end: u64,
    stats: SplitStats,
}

impl Built {
    fn new(slot: u64) -> Self {
        Built { slot, records: Vec::new(), end: 0, stats: SplitStats::default() }
    }

    fn add(&mut self, data: Bytes, end: u64) {
        self.records.push(Record { data, origin: Origin { file: self.slot, chunk: 0 }, key: None });
        self.end = end;
    }
}

impl Tailer {
    pub async fn run(mut self) {
        use std::os::fd::AsRawFd;
        self.handle.fd.store(self.file.as_raw_fd(), Ordering::Relaxed);
        self.follow().await;
        self.handle.fd.store(-1, Ordering::Relaxed);
        self.handle.done.store(true, Ordering::Relaxed);
    }

    async fn follow(&mut self) {
        let path = self.path();
        let mut slot = self.handle.slot();
        self.handle.done.store(false, Ordering::Relaxed);
        let skip = if self.offset == 0 { self.settings.skip_header_lines } else { 0 };
        let mut splitter =
            LineSplitter::new(self.settings.pipeline.record_limit, self.settings.pipeline.terminator.clone(), skip);
        let mut multi = self.settings.multi_line.clone().map(|re| {
            MultiLine::new(re, self.settings.pipeline.record_limit, self.settings.pipeline.terminator.clone())
        });
        let mut read_pos = self.offset;
        // An archive's size and time when opened: one that changes while read was not settled.
        let opened = self.archive.and(self.file.metadata().ok()).map(|m| archive::Stat::of(&m));
        let mut archive = match self.archive {
            None => None,
            Some(kind) => match self.open_archive(kind) {
                Some((a, from)) => {
                    if from < read_pos {
                        // Another archive: its content is tracked afresh, as after a truncation.
                        slot = self.tracker.supersede(slot);
                        self.handle.slot.store(slot, Ordering::Relaxed);
                        self.handle.committed.store(from, Ordering::Relaxed);
                        splitter.restart(self.settings.skip_header_lines);
                        read_pos = from;
                    }
                    Some(a)
                }
                None => {
                    self.ended(archive::End::Damaged);
                    return;
                }
            },
        };
        let mut archive_counted = 0u64;
        let mut head_len = self.update_head(slot, usize::MAX);
        let mut idle_since: Option<Instant> = None;
        let mut last_data = Instant::now();
        // Polls in a row that found nothing new.
        let mut quiet_polls: u32 = 0;
        let mut read_error_logged = false;
        // The file's line length so far: a read's records are sized from it (a guess of 64 bytes
        // gave 4,000 slots, 230 KB, to a read of 1,500 access-log lines).
        let mut line_len: usize = 64;
        let mut retire = false;
        let mut head_checked = Instant::now();
        tracing::debug!("tailing {} from offset {}", path.display(), read_pos);
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            // A file truncated in place and written again past where we read (copytruncate while a
            // slow destination held this tailer back) never looks shorter: its first bytes tell.
            // Discovery may have seen it first (this tailer held back, or a copy waiting on it).
            let rewritten = !self.settings.once
                && archive.is_none()
                && (self.handle.truncation_seen_for(slot)
                    || (head_checked.elapsed() >= HEAD_CHECK_EVERY && {
                        head_checked = Instant::now();
                        self.rewritten()
                    }));
            // Read only what the file holds beyond `read_pos` (up to READ_SIZE), and only once the
            // batcher has room for the chunk: an idle or held-back tailer holds no buffer, so a
            // thousand files waiting for a slow destination do not pin a thousand buffers.
            let meta = if rewritten || archive.is_some() { None } else { self.file.metadata().ok() };
            // An archive holds more until its decoder says it ends.
            let size = if archive.is_some() {
                read_pos + READ_SIZE as u64
            } else {
                meta.as_ref().map_or(read_pos, |m| m.len())
            };
            // Nothing to read: the end-of-file checks below use this same measurement.
            let at_end = meta.filter(|_| size <= read_pos);
            let mut rewritten = rewritten;
            let mut room = None;
            if size > read_pos {
                let waiting = Instant::now();
                tokio::select! {
                    p = self.tx.clone().reserve_owned() => match p {
                        Ok(p) => room = Some(p),
                        Err(_) => break,
                    },
                    _ = self.shutdown.cancelled() => break,
                }
                // Held back: the file may have been truncated or rewritten meanwhile (an
                // archive's offsets are not the file's: its tailer does not check).
                if waiting.elapsed() >= HELD_BACK && !self.settings.once && archive.is_none() {
                    head_checked = Instant::now();
                    rewritten = self.handle.truncation_seen_for(slot) || self.rewritten();
                }
            }
            let want = (size.saturating_sub(read_pos) as usize).min(READ_SIZE);
            // A buffer per read, of what the file holds: it is handed over with the records.
            let mut buf = BytesMut::new();
            let n = if rewritten || want == 0 {
                Ok(0)
            } else {
                buf = BytesMut::zeroed(want);
                match archive.as_mut() {
                    Some(a) => a.read(&mut buf),
                    None => self.file.read_at(&mut buf, read_pos),
                }
            };
            let n = match n {
                Ok(n) => {
                    read_error_logged = false;
                    n
                }
                Err(e) if archive.is_some() => {
                    drop(room);
                    // Corrupt or truncated: what decoded before is sent. Unless it was still
                    // being written: then it is read again once settled.
                    if self.archive_failed(archive.as_ref().expect("checked"), read_pos, &e, opened) {
                        self.finish_record(slot, &mut multi).await;
                    }
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if !read_error_logged {
                        tracing::warn!("cannot read {}: {e}; retrying", self.path().display());
                        read_error_logged = true;
                    }
                    0
                }
            };
            if n > 0 {
                idle_since = None;
                last_data = Instant::now();
                quiet_polls = 0;
                *self.handle.drained_since.lock().unwrap() = None;
                *self.handle.quiet_since.lock().unwrap() = None;
                let start = read_pos;
                read_pos += n as u64;
                // An archive's progress is in compressed bytes, as its size is.
                let shown = archive.as_ref().map_or(read_pos, archive::Archive::compressed_pos);
                self.handle.read_offset.store(shown, Ordering::Relaxed);
                if head_len < identity::HEAD_BYTES && read_pos > head_len as u64 {
                    head_len = self.update_head(slot, head_len);
                }
                let mut stats = SplitStats::default();
                let mut multi_stats = SplitStats::default();
                let mut records = Vec::with_capacity(n / line_len + n / line_len / 8 + 8);
                // Records are slices of what was read. A read that filled most of its buffer hands
                // it over; a short one is copied out, so that what stays allocated is close to what
                // the in-flight budget counts. Either way the tailer keeps no reference to the
                // buffer (`split_to` would leave one): a thousand tailers waiting for room would
                // otherwise pin a thousand buffers.
                let data = if n >= buf.len() / 4 * 3 {
                    buf.truncate(n);
                    buf.freeze()
                } else {
                    Bytes::copy_from_slice(&buf[..n])
                };
                // Where the records handed on end: after the last complete line, or after the last
                // finished multi-line record.
                let mut end = None;
                let consumed = splitter.feed(&data, &mut stats, |line, at| match multi.as_mut() {
                    None => records.push(Record { data: line, origin: Origin { file: slot, chunk: 0 }, key: None }),
                    Some(m) => m.push(line, start + at as u64, &mut multi_stats, &mut |data, e| {
                        records.push(Record { data, origin: Origin { file: slot, chunk: 0 }, key: None });
                        end = Some(e);
                    }),
                });
                // An archive counts its compressed bytes, as its size does (progress, bytes behind).
                let counted = match archive.as_ref() {
                    Some(a) => {
                        (a.compressed_pos() - std::mem::replace(&mut archive_counted, a.compressed_pos())) as usize
                    }
                    None => consumed,
                };
                self.count(&stats, counted);
                self.count(&multi_stats, 0);
                if consumed > 0 && !records.is_empty() {
                    line_len = (consumed / records.len()).clamp(16, 64 * 1024);
                }
                if multi.is_none() && consumed > 0 {
                    end = Some(start + consumed as u64);
                }
                if let Some(end) = end {
                    // A multi-line record finished by a start line that began in an earlier read
                    // ends before this read: its marker is read from the file.
                    let marker = match end.checked_sub(start).map(|w| w as usize) {
                        // The bytes before an archive's offset are not the file's: no marker.
                        _ if archive.is_some() => None,
                        Some(within) if within >= identity::MARKER_BYTES => {
                            Some(identity::Sample::of(&data[within - identity::MARKER_BYTES..within]))
                        }
                        _ => self.marker_at(end),
                    };
                    if let Next::Stop = self.send_chunk(slot, end, marker, records, room).await {
                        break;
                    }
                }
                tokio::task::yield_now().await;
                continue;
            }
            // End of file.
            drop(room);
            if archive.is_some() {
                // An archive is complete: its unterminated last line is a record too (unless it
                // changed while read: the daemon then reads it again once it settles).
                let unchanged = self.archive_unchanged(opened);
                if unchanged || self.settings.once {
                    self.send_partial(slot, &mut splitter, &mut multi, read_pos).await;
                }
                self.end_archive(slot, opened, unchanged);
                break;
            }
            if self.settings.once {
                // The file is complete as far as this run goes: its last multi-line record is
                // too (an unterminated line still waits for a later run).
                self.finish_record(slot, &mut multi).await;
                break;
            }
            let meta = match at_end.map_or_else(|| self.file.metadata(), Ok) {
                Ok(m) => m,
                Err(_) => break,
            };
            if meta.len() < read_pos || rewritten {
                let at = match *self.handle.truncation_seen.lock().unwrap() {
                    Some((s, at)) if s == slot => at,
                    _ => Instant::now(),
                };
                let how = if meta.len() < read_pos {
                    "truncated"
                } else {
                    "truncated and written again (bytes it had read changed)"
                };
                tracing::warn!(
                    "{} was {how} ({} bytes now, we had read {}): reading it again from the start",
                    self.path().display(),
                    meta.len(),
                    read_pos
                );
                // The old content's last record will get no more lines.
                self.finish_record(slot, &mut multi).await;
                // The old content's records in flight settle under its old tracker handle; a copy
                // of it (copytruncate) resumes at `committed` once they have. The new content is
                // read at once.
                let old_head = *self.handle.head.lock().unwrap();
                if let Some(head) = old_head {
                    let committed = self.handle.committed.load(Ordering::Relaxed);
                    let start = self.handle.start.lock().unwrap().clone();
                    *self.handle.truncated.lock().unwrap() = Some(Truncation {
                        start,
                        head,
                        committed,
                        marker: *self.handle.committed_marker.lock().unwrap(),
                        at,
                        slot,
                    });
                }
                slot = self.tracker.supersede(slot);
                self.handle.slot.store(slot, Ordering::Relaxed);
                *self.handle.truncation_seen.lock().unwrap() = None;
                *self.handle.committed_marker.lock().unwrap() = None;
                splitter.restart(self.settings.skip_header_lines);
                if let Some(m) = multi.as_mut() {
                    m.restart();
                }
                read_pos = 0;
                self.handle.read_offset.store(0, Ordering::Relaxed);
                self.handle.committed.store(0, Ordering::Relaxed);
                head_len = self.update_head(slot, usize::MAX);
                continue;
            }
            if meta.nlink() == 0 {
                // Deleted and drained: its last line will never be completed.
                self.send_partial(slot, &mut splitter, &mut multi, read_pos).await;
                tracing::debug!("{} was deleted and is drained", self.path().display());
                retire = true;
                break;
            }
            self.handle.quiet_since.lock().unwrap().get_or_insert_with(Instant::now);
            if self.handle.matched.load(Ordering::Relaxed) {
                if self.handle.close_now.load(Ordering::Relaxed) && self.tracker.is_settled(slot) {
                    // Closed for the open-file budget: read to its end and acknowledged. Reopened
                    // when it grows, from `committed` (a partial last line is read again then).
                    self.handle.parked_at.store(meta.len(), Ordering::Relaxed);
                    tracing::debug!("{} is closed until it grows (open-file budget)", self.path().display());
                    break;
                }
            } else {
                // Quiet since it was first found drained out of the pattern's reach.
                let since = *idle_since.get_or_insert_with(Instant::now);
                *self.handle.drained_since.lock().unwrap() = Some(since);
                if since.elapsed() >= self.settings.rotate_wait || self.handle.close_now.load(Ordering::Relaxed) {
                    // Rotated out of the pattern's reach and quiet: its last line is complete.
                    self.send_partial(slot, &mut splitter, &mut multi, read_pos).await;
                    tracing::debug!("{} no longer matches the pattern and is drained", self.path().display());
                    break;
                }
            }
            let mut wait = self.settings.poll;
            if self.settings.notified.load(Ordering::Relaxed) {
                // Twice as long after every empty poll, up to a second: only the latency of a
                // missed notification grows, and the next read starts where this one ended.
                wait = (wait * (1 << quiet_polls.min(4))).min(IDLE_POLL.max(wait));
                quiet_polls = quiet_polls.saturating_add(1);
            }
            if multi.as_ref().is_some_and(MultiLine::is_pending) {
                let quiet = last_data.elapsed();
                if quiet >= self.settings.multi_line_flush {
                    self.finish_record(slot, &mut multi).await;
                    continue;
                }
                wait = wait.min(self.settings.multi_line_flush - quiet);
            }
            tokio::select! {
                _ = self.handle.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        if retire {
            self.tracker.retire(slot);
            self.handle.retired.store(true, Ordering::Relaxed);
        }
    }

    fn path(&self) -> PathBuf {
        self.handle.path.lock().unwrap().clone()
    }

    /// Whether the file no longer holds what was handed on of it (its first bytes, or the bytes
    /// before the end of the last chunk): truncated and written again past our offset.
    fn rewritten(&self) -> bool {
        let mark = identity::Mark {
            offset: self.handle.committed.load(Ordering::Relaxed),
            head: *self.handle.head.lock().unwrap(),
            marker: *self.handle.committed_marker.lock().unwrap(),
        };
        identity::OpenFile::measure(&self.file).is_some_and(|f| identity::rewritten(&f, &mark))
    }

    /// Send the unterminated last line and the last record of a file that will not grow any more.
    async fn send_partial(
        &mut self,
        slot: u64,
        splitter: &mut LineSplitter,
        multi: &mut Option<MultiLine>,
        read_pos: u64,
    ) {
        let mut stats = SplitStats::default();
        let partial = splitter.take_partial(&mut stats);
        self.count(&stats, 0);
        if let Some(data) = partial {
            match multi.as_mut() {
                Some(m) => {
                    // A start line finishes the record before it (sent here); the line itself
                    // is finished below.
                    let mut built = Built::new(slot);
                    let mut stats = SplitStats::default();
                    m.push(data, read_pos, &mut stats, &mut |data, e| built.add(data, e));
                    built.stats = stats;
                    if let Next::Stop = self.send_built(built).await {
                        return;
                    }
                }
                None => {
                    let records = vec![Record { data, origin: Origin { file: slot, chunk: 0 }, key: None }];
                    let marker = self.marker_at(read_pos);
                    let _ = self.send_chunk(slot, read_pos, marker, records, None).await;
                }
            }
        }
        self.finish_record(slot, multi).await;
    }

    /// Send the multi-line record being built, if any: its file will not add lines to it.
    async fn finish_record(&mut self, slot: u64, multi: &mut Option<MultiLine>) {
        let Some(m) = multi.as_mut() else { return };
        let mut built = Built::new(slot);
        let mut stats = SplitStats::default();
        m.finish(&mut stats, &mut |data, e| built.add(data, e));
        built.stats = stats;
        let _ = self.send_built(built).await;
    }

    /// Send records the multi-line builder finished outside a read.
    async fn send_built(&mut self, built: Built) -> Next {
        self.count(&built.stats, 0);
        if built.records.is_empty() {
            return Next::Continue;
        }
        let marker = self.marker_at(built.end);
        self.send_chunk(built.slot, built.end, marker, built.records, None).await
    }

    /// Count what the splitter or the multi-line builder did; `consumed`: file bytes of
    /// complete lines.
    fn count(&self, stats: &SplitStats, consumed: usize) {
        let m = &self.metrics;
        FlowMetrics::add(&m.bytes_read, consumed as u64);
        FlowMetrics::add(&m.records_truncated, stats.truncated);
        FlowMetrics::add(&m.records_dropped, stats.dropped);
        FlowMetrics::add(&m.header_lines_skipped, stats.header_lines_skipped);
        if stats.truncated + stats.dropped > 0 {
            tracing::warn!(
                "{}: {} {} longer than {} bytes were {}",
                self.path().display(),
                stats.truncated + stats.dropped,
                if self.settings.multi_line.is_some() { "record(s)" } else { "line(s)" },
                self.settings.pipeline.record_limit,
                if stats.dropped > 0 { "dropped" } else { "truncated" }
            );
        }
    }

    /// Take the head fingerprint again when the file may have grown past the last one (`had`
    /// bytes; `usize::MAX` to force). Returns the fingerprint's length.
    fn update_head(&self, slot: u64, had: usize) -> usize {
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if had != usize::MAX && size <= had as u64 {
            return had;
        }
        match identity::head(&self.file, size) {
            Some(h) => {
                self.tracker.set_head(slot, h);
                *self.handle.head.lock().unwrap() = Some(h);
                *self.handle.start.lock().unwrap() =
                    identity::OpenFile { file: &self.file, size }.start(identity::START_BYTES);
                h.len as usize
            }
            None => had.min(identity::HEAD_BYTES),
        }
    }

    async fn send_chunk(
        &mut self,
        slot: u64,
        end: u64,
        marker: Option<identity::Sample>,
        records: Vec<Record>,
        room: Option<mpsc::OwnedPermit<Chunk>>,
    ) -> Next {
        self.settings.pipeline.ready().await;
        let (mut records, counts) = self.settings.pipeline.run(records, || self.path().display().to_string());
        self.count_pipeline(&counts);
        // The count is of the records sent: dropped ones are not waited for, and a chunk left
        // empty moves the checkpoint over its lines at once.
        let seq = self.tracker.add_chunk(slot, end, records.len() as u64, marker);
        self.handle.committed.store(end, Ordering::Relaxed);
        *self.handle.committed_marker.lock().unwrap() = marker;
        for r in &mut records {
            r.origin.chunk = seq;
        }
        FlowMetrics::add(&self.metrics.records_read, records.len() as u64);
        if records.is_empty() {
            return Next::Continue;
        }
        let bytes = records.iter().map(|r| r.data.len()).sum();
        let chunk = Chunk { file: slot, seq, records, bytes };
        if let Some(room) = room {
            room.send(chunk);
            return Next::Continue;
        }
        tokio::select! {
            r = self.tx.send(chunk) => if r.is_err() { Next::Stop } else { Next::Continue },
            _ = self.shutdown.cancelled() => Next::Stop,
        }
    }
}
