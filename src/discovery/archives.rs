//! Compressed archives the pattern names (`*.gz`, `*.{gz,zst,xz,bz2}`). Each is read once, from
//! its start to its end, through its decoder, by a tailer of its own, once it has stopped changing
//! (`decide::ArchiveTrack`: its size and time unchanged for the settle time; `--once` reads at
//! once), from where its checkpoint proves (`decide::archive_start`). A finished archive's
//! checkpoint is sealed: it is not read again while it holds the same bytes, across restarts too.

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::decide::{self, ArchiveEnd, ArchivePhase, ArchiveStart, ArchiveTrack, Stat};
use super::follow::{Discovery, State, is_same_file};
use super::pattern::Found;
use crate::config::InitialPosition;
use crate::metrics::FlowMetrics;
use crate::tail::TailHandle;
use crate::tail::archive::Kind;
use crate::types::identity::FileId;
use crate::types::identity::{self, Mark, OpenFile};

/// One archive the flow found.
pub(super) struct Archived {
    pub(super) track: ArchiveTrack,
    pub(super) path: PathBuf,
    pub(super) kind: Kind,
    /// Its tailer, while it reads.
    pub(super) reading: Option<Arc<TailHandle>>,
    /// The ack tracker's handle of its last read (or seal): a new read waits until it has left the
    /// tracker, so that the checkpoint it starts from is its last one.
    pub(super) slot: Option<u64>,
    /// Clean scans in a row that missed it.
    pub(super) absent: u32,
}

impl Discovery {
    /// The archives a scan found (`found` holds only them; `clean`: the scan had no error).
    pub(super) fn update_archives(&self, found: &[Found], clean: bool, st: &mut State, first: bool) {
        let now = Instant::now();
        let settle = self.archive_settle();
        if self.watch.pattern.wants_archives() && !self.once && !st.archives_said {
            st.archives_said = true;
            tracing::info!(
                "flows[{}]: {} names compressed files: each is read once, from its start to its end, when it has kept \
                 its size and modification time for {} ms (rotateWaitMillis, at least 1 s)",
                self.flow.index,
                self.flow.file_pattern,
                settle.as_millis()
            );
        }
        // Tailers that ended: what comes next depends on how.
        for a in st.archives.values_mut() {
            let Some(h) = a.reading.take_if(|h| h.done.load(Ordering::Relaxed)) else { continue };
            let end = h.archive_end.lock().unwrap().take();
            tracing::debug!("{}: read ended ({end:?})", a.path.display());
            // Stopped without an outcome (a shutdown): read on from its checkpoint when settled.
            a.track.ended(now, end.unwrap_or(ArchiveEnd::Changed));
            a.slot = Some(h.slot());
            self.tracker.release(h.slot());
        }
        // Those clean scans no longer find are forgotten (their checkpoints stay), unless read or
        // with records in flight (one that comes back waits for its last checkpoint).
        let seen: HashSet<FileId> = found.iter().map(|f| f.id).collect();
        st.archives.retain(|id, a| {
            let busy = a.reading.is_some() || a.slot.is_some_and(|s| self.tracker.watermark(s).is_some());
            decide::still_matched(seen.contains(id), clean, &mut a.absent) || busy
        });
        let mut skipped = 0;
        for f in found {
            let stat = f.stat;
            let Some(a) = st.archives.get_mut(&f.id) else {
                let Some(kind) = Kind::of(&f.path) else { continue };
                let mut a = Archived {
                    track: ArchiveTrack::new(now, stat),
                    path: f.path.clone(),
                    kind,
                    reading: None,
                    slot: None,
                    absent: 0,
                };
                skipped += u64::from(self.at_first_sight(f, &mut a, st, first));
                st.archives.insert(f.id, a);
                self.archive_scanned(f, st, now, settle);
                continue;
            };
            if let Some(h) = &a.reading {
                let mut p = h.path.lock().unwrap();
                if *p != f.path {
                    *p = f.path.clone();
                    self.tracker.set_path(h.slot(), f.path.clone());
                }
            }
            a.path = f.path.clone();
            self.archive_scanned(f, st, now, settle);
        }
        if skipped > 0 {
            tracing::info!(
                "flows[{}]: {skipped} compressed file(s) present at the first start were recorded as done without \
                 being read (initialPosition END_OF_FILE; START_OF_FILE reads them)",
                self.flow.index
            );
        }
    }

    /// Archives that are read wait this long unchanged (0 for `--once`).
    fn archive_settle(&self) -> Duration {
        if self.once { Duration::ZERO } else { decide::archive_settle(self.flow.rotate_wait) }
    }

    /// A scan saw an archive with `f.stat`: read it if it is ready.
    fn archive_scanned(&self, f: &Found, st: &mut State, now: Instant, settle: Duration) {
        let a = st.archives.get_mut(&f.id).expect("tracked");
        if !a.track.scan(now, f.stat, settle) {
            return;
        }
        // What its last read left in flight is acknowledged, and in the checkpoint store.
        if a.slot.is_some_and(|s| self.tracker.watermark(s).is_some()) {
            return;
        }
        let Some((file, permit)) = self.open(&f.path, st) else { return };
        let a = st.archives.get_mut(&f.id).expect("tracked");
        if !is_same_file(&file, f.id) {
            return; // Renamed or replaced since the scan: the next one sees it right.
        }
        // What is read is what settled.
        let Some(stat) = file.metadata().ok().map(|m| Stat::of(&m)) else { return };
        if stat != a.track.stat {
            a.track = ArchiveTrack::new(now, stat);
            return;
        }
        let Some(content) = OpenFile::measure(&file) else { return };
        let checkpoint = self.archive_checkpoint(f.id);
        let (offset, why) = match decide::archive_start(checkpoint.as_ref(), &content, false) {
            ArchiveStart::Finished | ArchiveStart::Skip => {
                a.track.phase = ArchivePhase::Done;
                return;
            }
            ArchiveStart::Read { offset, distrust } => (offset, distrust),
        };
        if let Some(why) = why {
            FlowMetrics::add(&self.metrics.checkpoints_distrusted, 1);
            let old = checkpoint.as_ref().expect("a checkpoint was distrusted");
            // A sealed archive that grew holds what was sent: possible duplicates (counted in
            // compressed bytes); another archive under the inode is new content.
            let same_start = identity::checkpoint_trust(&Mark { offset: 0, marker: None, ..*old }, &content).is_ok();
            if why == decide::ArchiveDistrust::Changed && same_start {
                FlowMetrics::add(&self.metrics.bytes_maybe_duplicated, old.offset.min(content.size));
            }
            tracing::warn!("{}: {why}: reading it from the start", f.path.display());
        }
        match offset {
            0 => tracing::info!("reading the {} archive {} from its start", a.kind.name(), f.path.display()),
            n => tracing::info!(
                "reading the {} archive {} on from decompressed byte {n}, where everything before was delivered",
                a.kind.name(),
                f.path.display()
            ),
        }
        let kind = a.kind;
        let slot = self.tracker.register_file(self.settings.flow_id.clone(), f.path.clone(), f.id, offset, None);
        let h = Arc::new(TailHandle::new(f.id, f.path.clone(), offset, None, slot));
        // Its progress is in compressed bytes, from the start whatever the offset.
        h.read_offset.store(0, Ordering::Relaxed);
        st.tasks.spawn(self.tailer((file, permit), h.clone(), offset, Some(kind)).run());
        let a = st.archives.get_mut(&f.id).expect("tracked");
        a.track.phase = ArchivePhase::Reading;
        a.reading = Some(h);
        a.slot = Some(slot);
    }

    /// An archive just found may be decided without waiting for it to settle: a sealed one that
    /// still holds the bytes sealed is done; at the first start of a daemon flow with
    /// END_OF_FILE, one without a checkpoint is existing content: recorded as done (sealed)
    /// without being read. Returns whether it was recorded so.
    fn at_first_sight(&self, f: &Found, a: &mut Archived, st: &mut State, first: bool) -> bool {
        let initial_skip =
            !self.once && first && !self.had_checkpoints && self.flow.initial_position == InitialPosition::EndOfFile;
        let checkpoint = self.archive_checkpoint(f.id);
        if !initial_skip && checkpoint.is_none_or(|c| c.marker.is_none()) {
            return false; // To be read: once it settles.
        }
        let Some((file, _permit)) = self.open(&f.path, st) else { return false };
        let Some(content) = OpenFile::measure(&file).filter(|_| is_same_file(&file, f.id)) else { return false };
        let Ok(stat) = file.metadata().map(|m| Stat::of(&m)) else { return false };
        match decide::archive_start(checkpoint.as_ref(), &content, initial_skip) {
            ArchiveStart::Finished => {
                tracing::debug!("{}: read to its end before (its checkpoint is sealed)", f.path.display());
                a.track = ArchiveTrack { stat, phase: ArchivePhase::Done };
                false
            }
            ArchiveStart::Skip => {
                let Some(slot) = self.seal_unread(f, &file, content.size) else { return false };
                a.track = ArchiveTrack { stat, phase: ArchivePhase::Done };
                a.slot = Some(slot);
                true
            }
            ArchiveStart::Read { .. } => false,
        }
    }

    /// The checkpoint of an archive, as a mark.
    fn archive_checkpoint(&self, id: FileId) -> Option<Mark> {
        let store = self.store.lock().unwrap();
        store.get(&self.flow.id, id).map(|e| Mark { offset: e.offset, head: e.head, marker: e.marker })
    }

    /// Record an archive as done without reading it: its checkpoint sealed at `size`.
    fn seal_unread(&self, f: &Found, file: &File, size: u64) -> Option<u64> {
        let head = identity::head(file, size)?;
        let marker = identity::marker(file, size)?;
        let slot = self.tracker.register_file(self.settings.flow_id.clone(), f.path.clone(), f.id, size, Some(marker));
        self.tracker.set_head(slot, head);
        self.tracker.release(slot);
        Some(slot)
    }

    /// When the next scan should come for an archive settling to be read as soon as it is ready.
    pub(super) fn next_archive_ready(&self, st: &State) -> Option<Duration> {
        let settle = self.archive_settle();
        let at = st.archives.values().filter_map(|a| a.track.ready_at(settle)).min()?;
        Some(at.saturating_duration_since(Instant::now()) + Duration::from_millis(10))
    }

    /// Bytes of archives not read yet (compressed: archives being read count what their decoder
    /// has not taken), and how many are being read.
    pub(super) fn archives_behind(&self, st: &State, found: &[Found]) -> (u64, u64) {
        let (mut behind, mut reading) = (0, 0);
        for f in found {
            let Some(a) = st.archives.get(&f.id) else { continue };
            match (&a.reading, a.track.phase) {
                (Some(h), _) => {
                    reading += 1;
                    behind += f.size.saturating_sub(h.read_offset.load(Ordering::Relaxed));
                }
                (None, ArchivePhase::Settling { .. }) => behind += f.size,
                _ => {}
            }
        }
        (behind, reading)
    }
}
