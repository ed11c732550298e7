//! What a tailer does besides reading and following its file: counting what the record steps
//! did, and entering, ending and sealing a compressed archive.

use super::{Tailer, archive, identity};
use crate::metrics::FlowMetrics;
use crate::record::pipeline::Counts;

impl Tailer {
    /// Count what the record steps did to a chunk.
    pub(super) fn count_pipeline(&self, counts: &Counts) {
        let m = &self.metrics;
        FlowMetrics::add(&m.records_skipped, counts.skipped);
        FlowMetrics::add(&m.processing_errors, counts.failed);
        FlowMetrics::add(&m.partition_key_fallbacks, counts.key_fallbacks);
        FlowMetrics::add(&m.explicit_hash_key_invalid, counts.invalid_hash_keys);
        self.count(&counts.oversized, 0);
        if counts.skipped > 0 {
            tracing::debug!("{}: dataProcessingOptions dropped {} record(s)", self.path().display(), counts.skipped);
        }
    }

    /// The decoder of an archive, entered at the tailer's offset, and that offset. An archive
    /// that decompresses to less than its checkpoint says is read again from its start (its
    /// bytes count as possible duplicates). `None`: it cannot be read (said, and counted).
    pub(super) fn open_archive(&self, kind: archive::Kind) -> Option<(archive::Archive, u64)> {
        let open = |offset| {
            self.file.try_clone().map_err(archive::OpenError::Io).and_then(|f| archive::Archive::open(f, kind, offset))
        };
        let failed = |e: &dyn std::fmt::Display| {
            tracing::error!("{}: cannot read the {} archive: {e}", self.path().display(), kind.name());
            FlowMetrics::add(&self.metrics.unreadable, 1);
            None
        };
        match open(self.offset) {
            Ok(a) => Some((a, self.offset)),
            Err(archive::OpenError::Shorter { decoded }) => {
                tracing::warn!(
                    "{}: decompresses to {decoded} bytes, fewer than its checkpoint ({}): reading it again from the start",
                    self.path().display(),
                    self.offset
                );
                FlowMetrics::add(&self.metrics.bytes_maybe_duplicated, decoded);
                match open(0) {
                    Ok(a) => Some((a, 0)),
                    Err(archive::OpenError::Io(e)) => failed(&e),
                    Err(archive::OpenError::Shorter { .. }) => unreachable!("nothing is skipped from 0"),
                }
            }
            Err(archive::OpenError::Io(e)) => failed(&e),
        }
    }

    /// The marker of the bytes before `offset`, for a chunk's checkpoint. An archive's offsets
    /// are decompressed bytes: the file's bytes there are not theirs, so none (a marker in an
    /// archive's checkpoint is its seal, see `end_archive`).
    pub(super) fn marker_at(&self, offset: u64) -> Option<identity::Sample> {
        if self.archive.is_some() { None } else { identity::marker(&self.file, offset) }
    }

    pub(super) fn ended(&self, end: archive::End) {
        *self.handle.archive_end.lock().unwrap() = Some(end);
    }

    /// Whether an archive still has the size and time it had when opened (`opened`).
    pub(super) fn archive_unchanged(&self, opened: Option<archive::Stat>) -> bool {
        opened.is_some() && self.file.metadata().ok().map(|m| archive::Stat::of(&m)) == opened
    }

    /// An archive failed to decode at decompressed byte `decoded`. In the daemon, one that changed
    /// since it was opened was still being written (or was replaced): not an error; it is read
    /// again from its checkpoint once it settles. Otherwise it is damaged: one error naming the
    /// file and about where (`--once` then exits non-zero). Returns whether it is damaged (what
    /// decoded before is then sent, its last record finished).
    pub(super) fn archive_failed(
        &self,
        a: &archive::Archive,
        decoded: u64,
        e: &std::io::Error,
        opened: Option<archive::Stat>,
    ) -> bool {
        if !self.settings.once && !self.archive_unchanged(opened) {
            tracing::info!(
                "{}: the {} data ends early at about compressed byte {} ({e}), but the file changed while \
                 it was read: it is still being written; it is read on from byte {} once it has settled",
                self.path().display(),
                a.kind().name(),
                a.compressed_pos(),
                self.handle.committed.load(std::sync::atomic::Ordering::Relaxed)
            );
            self.ended(archive::End::Changed);
            return false;
        }
        tracing::error!(
            "{}: the {} data is corrupt or truncated at about compressed byte {} ({e}); the {decoded} \
             bytes decoded before it were read, the rest cannot be",
            self.path().display(),
            a.kind().name(),
            a.compressed_pos()
        );
        FlowMetrics::add(&self.metrics.unreadable, 1);
        self.ended(archive::End::Damaged);
        true
    }

    /// An archive decoded to its end. `unchanged`: it kept its size and time since it was opened,
    /// so what was decoded is all of it: its checkpoint is sealed, with one more (empty) chunk
    /// ending at its compressed size and the marker of its last compressed bytes. Once everything
    /// before is acknowledged the checkpoint reads, like a plain file's, "every byte of this file
    /// delivered" (`kinesis-agent status`: shipped), and an archive holding exactly those bytes
    /// is never read again. One that changed keeps its decompressed checkpoint, to be read on from.
    pub(super) fn end_archive(&self, slot: u64, opened: Option<archive::Stat>, unchanged: bool) {
        if !unchanged {
            tracing::debug!("{} changed while it was read: read on once it settles", self.path().display());
            self.ended(archive::End::Changed);
            return;
        }
        if let Some(size) = opened.map(|o| o.size)
            && let Some(marker) = identity::marker(&self.file, size)
        {
            self.tracker.add_chunk(slot, size, 0, Some(marker));
        }
        self.ended(archive::End::Complete);
    }
}
