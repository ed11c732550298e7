//! The counters of each flow, declared once (`metrics!` below): the status line, the `--once`
//! summary, the Prometheus exposition and the CloudWatch publisher are all made from this one list,
//! so a counter cannot be counted and then shown nowhere. Updated with relaxed atomics: never
//! per-record locking on the data path.

pub mod cloudwatch;
pub mod prometheus;
pub mod status;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Prometheus type: a counter only grows; a gauge is a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Where a metric shows in the status line and the `--once` summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// In the status line's fixed start (`status::line` writes it; a test checks every one is).
    Head,
    /// Appended as `; <phrase> N (+d)` when it grew since the last line (gauges: when not 0),
    /// and a line of the `--once` summary when not 0.
    Tail(&'static str),
    /// Not in the status line: the volume in another unit of what the head shows (Prometheus
    /// and CloudWatch have it).
    Quiet,
}

/// The Java agent's CloudWatch metrics a counter adds to (`cloudwatch.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Java {
    BytesSent,
    RecordSendAttempts,
    RecordSendErrors,
    ServiceErrors,
    RecordsSent,
}

/// One metric of the list.
pub struct Metric {
    /// The field of `FlowMetrics` and `Snapshot`.
    pub field: &'static str,
    pub kind: Kind,
    /// `kinesis_agent_<prometheus>`.
    pub prometheus: &'static str,
    pub help: &'static str,
    pub line: Line,
    pub cloudwatch: &'static [Java],
    pub get: fn(&Snapshot) -> u64,
}

macro_rules! metrics {
    ($($field:ident: $kind:ident, $prom:literal, $line:expr, [$($java:ident),*], $help:literal;)*) => {
        /// The counters of one flow.
        #[derive(Debug, Default)]
        pub struct FlowMetrics {
            $(#[doc = $help] pub $field: AtomicU64,)*
        }

        /// A plain copy of the counters.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Snapshot {
            $(#[doc = $help] pub $field: u64,)*
        }

        impl FlowMetrics {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($field: self.$field.load(Relaxed),)* }
            }
        }

        /// Every metric, in the order they are shown.
        pub const METRICS: &[Metric] = &[$(Metric {
            field: stringify!($field),
            kind: Kind::$kind,
            prometheus: $prom,
            help: $help,
            line: $line,
            cloudwatch: &[$(Java::$java),*],
            get: |m| m.$field,
        },)*];
    };
}

use Line::{Head, Quiet, Tail};

metrics! {
    files: Gauge, "files", Head, [], "Files being tailed.";
    records_read: Counter, "records_read_total", Head, [],
        "Records read from the files (after processing options; joined Firehose records count once).";
    records_sent: Counter, "records_sent_total", Head, [RecordsSent, RecordSendAttempts],
        "Records the destination accepted.";
    record_errors: Counter, "record_send_errors_total", Head, [RecordSendAttempts],
        "Record send attempts that failed and are retried (one record retried twice counts twice).";
    records_throttled: Counter, "records_throttled_total", Head, [], "Record send attempts throttled.";
    bytes_behind: Gauge, "bytes_behind", Head, [], "Unread bytes of the flow's files (at the last scan).";
    files_stalled: Gauge, "files_stalled", Head, [],
        "Files with unread bytes not read for stalledFileWarningMillis (at the last scan).";
    bytes_read: Counter, "bytes_read_total", Quiet, [], "File bytes read (complete lines, headers included).";
    bytes_sent: Counter, "bytes_sent_total", Quiet, [BytesSent], "Record data bytes the destination accepted.";
    requests: Counter, "requests_total", Quiet, [], "Requests sent.";
    records_rejected: Counter, "records_rejected_total", Quiet, [RecordSendErrors],
        "Record send attempts the destination answered with an error code (partial failures; throttling included).";
    request_errors: Counter, "request_errors_total", Tail("requests failed as a whole"), [ServiceErrors],
        "Requests that failed as a whole (retried).";
    records_maybe_duplicated: Counter, "records_maybe_duplicated_total",
        Tail("records sent again after an unknown outcome (possible duplicates)"), [],
        "Records sent again after a request whose outcome is unknown (a timeout, or a connection cut before the answer): each may arrive twice.";
    bytes_maybe_duplicated: Counter, "bytes_maybe_duplicated_total",
        Tail("file bytes read again, not proven sent (possible duplicates)"), [],
        "File bytes read from the start of a new file that began like one already read and could not be proven its copy.";
    records_undelivered: Counter, "records_undelivered_total", Tail("records given up, NOT delivered"), [],
        "Records given up on (--once after a fatal error or --give-up-after, or the shutdown timeout).";
    records_truncated: Counter, "records_truncated_total", Tail("records cut to the record limit"), [],
        "Lines cut to the record limit.";
    records_dropped: Counter, "records_dropped_total", Tail("records over the record limit dropped"), [],
        "Lines over the record limit dropped (oversizedRecordAction DROP).";
    records_held_for_order: Counter, "records_held_for_order_total",
        Tail("records held back behind an earlier record of their key"), [],
        "Records that waited for an earlier record of their partition key to be accepted (ordering PER_KEY).";
    order_wait_ms: Counter, "order_wait_milliseconds_total", Quiet, [],
        "Milliseconds records held back for their key's order waited, in total (divide by records_held_for_order_total for the mean).";
    header_lines_skipped: Counter, "header_lines_skipped_total", Tail("header lines skipped"), [],
        "Header lines skipped (skipHeaderLines).";
    records_skipped: Counter, "records_skipped_total", Tail("dataProcessingOptions dropped"), [],
        "Records a processing option dropped (LOGTOJSON on a line that does not match).";
    processing_errors: Counter, "processing_errors_total", Tail("conversion errors"), [],
        "Records a processing option could not convert, sent as read.";
    partition_key_fallbacks: Counter, "partition_key_fallbacks_total", Tail("partition key fallbacks"), [],
        "Records whose partition key could not be derived from them and got the fallback key.";
    explicit_hash_key_invalid: Counter, "explicit_hash_key_invalid_total", Tail("invalid explicit hash keys"), [],
        "Records whose explicit hash key field was missing or invalid (sent without one).";
    aggregates_sent: Counter, "kpl_aggregates_sent_total", Tail("KPL aggregates sent"), [],
        "KPL aggregated records accepted (each holds two or more user records).";
    unreadable: Counter, "unreadable_total", Tail("files or directories that could not be read"), [],
        "Files or directories that matched but could not be read (counted once per path).";
    checkpoints_distrusted: Counter, "checkpoints_distrusted_total",
        Tail("checkpoints not trusted (files read again from the start)"), [],
        "Checkpoints not trusted because their file changed under them: the file is read again from its start.";
}

impl FlowMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_once() {
        let mut names: Vec<_> = METRICS.iter().map(|m| m.prometheus).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), METRICS.len());
        for m in METRICS {
            assert_eq!(m.kind == Kind::Counter, m.prometheus.ends_with("_total"), "{}", m.field);
        }
    }

    /// The README's metric table and status-line description name every metric of the list.
    #[test]
    fn the_readme_names_every_metric() {
        let readme = include_str!("../../README.md");
        for m in METRICS {
            let name = format!("`kinesis_agent_{}`", m.prometheus);
            assert!(readme.contains(&name), "README.md does not document {name}");
            if let Line::Tail(phrase) = m.line {
                assert!(readme.replace('\n', " ").contains(phrase), "README.md does not show `{phrase}`");
            }
        }
    }
}
