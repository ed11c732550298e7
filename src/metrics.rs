//! Counters per flow, read by the status logger (and later by metric publishers). Updated with
//! relaxed atomics: never per-record locking on the data path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct FlowMetrics {
    /// Records the tailers handed on (after `dataProcessingOptions`: dropped ones are not counted;
    /// with `aggregatedRecordSizeBytes`, the joined Firehose records).
    pub records_read: AtomicU64,
    /// File bytes consumed (complete lines, headers included).
    pub bytes_read: AtomicU64,
    /// Records the destination accepted.
    pub records_sent: AtomicU64,
    /// Data bytes the destination accepted.
    pub bytes_sent: AtomicU64,
    /// Record send attempts that failed (one record retried twice counts twice).
    pub record_errors: AtomicU64,
    /// Of those, the ones the destination answered with an error code (partial failures; the
    /// Java agent's `RecordSendErrors`); the others were in requests that failed as a whole.
    pub records_rejected: AtomicU64,
    /// Of those, the ones throttled.
    pub records_throttled: AtomicU64,
    /// Requests that failed as a whole.
    pub request_errors: AtomicU64,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Records sent again after a request whose outcome is unknown (a timeout, or a connection
    /// cut before the answer): each may have been accepted the first time, a possible duplicate.
    pub records_maybe_duplicated: AtomicU64,
    /// File bytes read from the start of a new file that began like a file already read, and
    /// could not be proven a copy of it (possible duplicates; see the README's decision table).
    pub bytes_maybe_duplicated: AtomicU64,
    /// Records given up on (`--once` after a fatal error, or shutdown timeout).
    pub records_undelivered: AtomicU64,
    /// Lines cut to the record limit.
    pub records_truncated: AtomicU64,
    /// Lines over the record limit dropped (`oversizedRecordAction: DROP`).
    pub records_dropped: AtomicU64,
    /// Header lines skipped (`skipHeaderLines`).
    pub header_lines_skipped: AtomicU64,
    /// Records a processing option dropped (LOGTOJSON on a line that does not match): the
    /// Java agent's `TotalRecordsSkipped`.
    pub records_skipped: AtomicU64,
    /// Records a processing option could not convert, sent as read (`TotalDataProcessingErrors`).
    pub processing_errors: AtomicU64,
    /// Records whose derived partition key could not be taken from them (missing field, not
    /// JSON, no regex match, empty value): they got the `fallback` key.
    pub partition_key_fallbacks: AtomicU64,
    /// Records whose `explicitHashKeyField` was missing or not a decimal 128-bit integer: sent
    /// without an explicit hash key.
    pub explicit_hash_key_invalid: AtomicU64,
    /// KPL aggregated records sent (each holds two or more user records).
    pub aggregates_sent: AtomicU64,
    /// Unread bytes of the flow's files at the last discovery pass.
    pub bytes_behind: AtomicU64,
    /// Files being tailed.
    pub files: AtomicU64,
    /// Files or directories that matched but could not be read (counted once per path).
    pub unreadable: AtomicU64,
    /// Checkpoints not trusted because the file changed under them (read again from 0).
    pub checkpoints_distrusted: AtomicU64,
    /// Files with unread bytes not read for `stalledFileWarningMillis` (at the last scan).
    pub files_stalled: AtomicU64,
}

/// A plain copy of the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub records_read: u64,
    pub bytes_read: u64,
    pub records_sent: u64,
    pub bytes_sent: u64,
    pub record_errors: u64,
    pub records_rejected: u64,
    pub records_throttled: u64,
    pub request_errors: u64,
    pub requests: u64,
    pub records_maybe_duplicated: u64,
    pub bytes_maybe_duplicated: u64,
    pub records_undelivered: u64,
    pub records_truncated: u64,
    pub header_lines_skipped: u64,
    pub records_skipped: u64,
    pub processing_errors: u64,
    pub partition_key_fallbacks: u64,
    pub explicit_hash_key_invalid: u64,
    pub aggregates_sent: u64,
    pub bytes_behind: u64,
    pub files: u64,
    pub unreadable: u64,
    pub files_stalled: u64,
}

impl FlowMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            records_read: self.records_read.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            records_sent: self.records_sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            record_errors: self.record_errors.load(Relaxed),
            records_rejected: self.records_rejected.load(Relaxed),
            records_throttled: self.records_throttled.load(Relaxed),
            request_errors: self.request_errors.load(Relaxed),
            requests: self.requests.load(Relaxed),
            records_maybe_duplicated: self.records_maybe_duplicated.load(Relaxed),
            bytes_maybe_duplicated: self.bytes_maybe_duplicated.load(Relaxed),
            records_undelivered: self.records_undelivered.load(Relaxed),
            records_truncated: self.records_truncated.load(Relaxed),
            header_lines_skipped: self.header_lines_skipped.load(Relaxed),
            records_skipped: self.records_skipped.load(Relaxed),
            processing_errors: self.processing_errors.load(Relaxed),
            partition_key_fallbacks: self.partition_key_fallbacks.load(Relaxed),
            explicit_hash_key_invalid: self.explicit_hash_key_invalid.load(Relaxed),
            aggregates_sent: self.aggregates_sent.load(Relaxed),
            bytes_behind: self.bytes_behind.load(Relaxed),
            files: self.files.load(Relaxed),
            unreadable: self.unreadable.load(Relaxed),
            files_stalled: self.files_stalled.load(Relaxed),
        }
    }
}
