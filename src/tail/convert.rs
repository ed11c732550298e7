//! What a tailer does besides reading and following its file: converting records with the
//! flow's processing options, and entering a compressed archive at its offset.

use bytes::Bytes;

use super::{Tailer, archive};
use crate::metrics::FlowMetrics;
use crate::record::Record;
use crate::record::process::{Applied, Processor};
use crate::record::split::SplitStats;

impl Tailer {
    /// Applies the processing options: a converted record is a new buffer with the same origin;
    /// a dropped one is removed and counted. One too big for the destination once converted is
    /// cut to the limit and ends with the terminator, as the Java agent does (or, with
    /// `oversizedRecordAction` DROP, dropped), and counted like a long line.
    pub(super) fn process(&self, processor: &Processor, records: &mut Vec<Record>) {
        let limit = self.settings.record_limit;
        let (mut skipped, mut failed) = (0u64, 0u64);
        let mut oversized = SplitStats::default();
        // Where and when these records were read, for ADDSOURCEMETADATA (made only if used).
        let (file, read_time) = if processor.needs_context() {
            let now = crate::record::process::simple::utc_millis(std::time::SystemTime::now());
            (self.path().display().to_string(), now)
        } else {
            Default::default()
        };
        let context = crate::record::process::Context { file: &file, read_time: &read_time };
        records.retain_mut(|r| match processor.convert_in(&r.data, &context) {
            Applied::Converted(mut out) => {
                if out.len() > limit {
                    let Some(t) = &self.settings.terminator else {
                        oversized.dropped += 1;
                        return false;
                    };
                    out.truncate(limit - t.len());
                    out.extend_from_slice(t);
                    oversized.truncated += 1;
                }
                r.data = Bytes::from(out);
                true
            }
            Applied::Failed => {
                failed += 1;
                true
            }
            Applied::Dropped => {
                skipped += 1;
                false
            }
        });
        FlowMetrics::add(&self.metrics.records_skipped, skipped);
        FlowMetrics::add(&self.metrics.processing_errors, failed);
        self.count(&oversized, 0);
        if skipped > 0 {
            tracing::debug!("{}: dataProcessingOptions dropped {skipped} record(s)", self.path().display());
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
}
