//! The daemon's periodic status line and the `--once` summary, made
//! from the list in `metrics/mod.rs`: the head names the main counters, and every other counter
//! of the list that grew is appended, so a new counter shows without touching this file.

use super::{Kind, Line, METRICS, Snapshot};

/// The status line of one flow: `m` now, `prev` at the last line.
pub fn line(label: &str, m: &Snapshot, prev: &Snapshot) -> String {
    let mut out = format!(
        "{label}: {} file(s); records read {} (+{}), sent {} (+{}), failed attempts {} (+{}, throttled +{}); {} bytes behind",
        m.files,
        m.records_read,
        m.records_read.saturating_sub(prev.records_read),
        m.records_sent,
        m.records_sent.saturating_sub(prev.records_sent),
        m.record_errors,
        m.record_errors.saturating_sub(prev.record_errors),
        m.records_throttled.saturating_sub(prev.records_throttled),
        m.bytes_behind,
    );
    if m.files_stalled > 0 {
        out += &format!(" ({} file(s) stalled)", m.files_stalled);
    }
    for metric in METRICS {
        let Line::Tail(phrase) = metric.line else { continue };
        let (now, before) = ((metric.get)(m), (metric.get)(prev));
        match metric.kind {
            Kind::Counter if now > before => out += &format!("; {phrase} {now} (+{})", now - before),
            Kind::Gauge if now > 0 => out += &format!("; {phrase} {now}"),
            _ => {}
        }
    }
    out
}

/// The `--once` summary of one flow beyond its records read and sent: `<phrase> N` for every
/// counter of the list's tail that is not 0.
pub fn summary(m: &Snapshot) -> Vec<String> {
    METRICS
        .iter()
        .filter_map(|metric| match metric.line {
            Line::Tail(phrase) if (metric.get)(m) > 0 => Some(format!("{phrase} {}", (metric.get)(m))),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::FlowMetrics;
    use std::sync::atomic::Ordering::Relaxed;

    /// Every counter of the list shows: the head ones in the head, the others when they grow.
    #[test]
    fn every_metric_reaches_the_status_line() {
        let f = FlowMetrics::default();
        let prev = f.snapshot();
        // A distinct value per metric, by setting each field through the list's order.
        let values: Vec<u64> = (0..METRICS.len() as u64).map(|i| 1_000_003 + i * 7_919).collect();
        let fields = [
            &f.files,
            &f.records_read,
            &f.records_sent,
            &f.record_errors,
            &f.records_throttled,
            &f.bytes_behind,
            &f.files_stalled,
            &f.bytes_read,
            &f.bytes_sent,
            &f.requests,
            &f.records_rejected,
            &f.request_errors,
            &f.records_maybe_duplicated,
            &f.bytes_maybe_duplicated,
            &f.records_undelivered,
            &f.records_truncated,
            &f.records_dropped,
            &f.records_held_for_order,
            &f.order_wait_ms,
            &f.header_lines_skipped,
            &f.records_skipped,
            &f.processing_errors,
            &f.partition_key_fallbacks,
            &f.explicit_hash_key_invalid,
            &f.aggregates_sent,
            &f.unreadable,
            &f.checkpoints_distrusted,
        ];
        assert_eq!(fields.len(), METRICS.len(), "a metric was added: add it here too");
        for (a, v) in fields.iter().zip(&values) {
            a.store(*v, Relaxed);
        }
        let m = f.snapshot();
        let text = line("flows[0]", &m, &prev);
        let summary = summary(&m).join("\n");
        for (metric, v) in METRICS.iter().zip(&values) {
            assert_eq!((metric.get)(&m), *v, "{} is not where the list says", metric.field);
            match metric.line {
                Line::Head => {
                    // The throttled count shows as its growth.
                    assert!(text.contains(&v.to_string()), "{} missing from {text}", metric.field)
                }
                Line::Tail(phrase) => {
                    assert!(text.contains(&format!("; {phrase} {v}")), "{} missing from {text}", metric.field);
                    assert!(summary.contains(&format!("{phrase} {v}")), "{} missing from {summary}", metric.field);
                }
                Line::Quiet => assert!(!text.contains(&v.to_string()), "{}", metric.field),
            }
        }
        // Nothing grew: the head only.
        let again = line("flows[0]", &m, &m);
        assert!(!again.contains("possible duplicates"), "{again}");
    }
}
