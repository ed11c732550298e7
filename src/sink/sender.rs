//! Delivery of one batch: send, acknowledge what was accepted, back off, re-send only what
//! failed. Throttling and transient errors are retried for ever; a fatal error is reported once
//! and retried at the slowest pace by the daemon, or given up by `--once`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use tokio_util::sync::CancellationToken;

use super::client::SinkClient;
use super::retry::{ErrorClass, Failure, backoff, hint};
use crate::ack::AckTracker;
use crate::metrics::FlowMetrics;
use crate::record::{Origin, Record};

/// Everything a flow's send tasks share.
pub struct FlowSender {
    /// `flows[0] (kinesis stream app-logs in us-east-1)`, for log lines.
    pub label: String,
    pub client: SinkClient,
    pub tracker: AckTracker,
    pub metrics: Arc<FlowMetrics>,
    /// `--once`: give up on fatal errors instead of retrying them.
    pub once: bool,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A fatal error was seen (for the exit code of `--once`).
    pub saw_fatal: AtomicBool,
    /// Cancelled by `--once` on a fatal error: the flow's tailers stop reading.
    pub give_up: CancellationToken,
    /// The error code currently being reported; cleared by the next success, so a persistent
    /// problem is logged once, not once per request.
    reporting: Mutex<Option<String>>,
    /// Throttling is normal under load: said once, then counted in the status lines.
    throttle_reported: AtomicBool,
}

impl FlowSender {
    pub fn new(
        label: String,
        client: SinkClient,
        tracker: AckTracker,
        metrics: Arc<FlowMetrics>,
        once: bool,
        (initial_backoff, max_backoff): (Duration, Duration),
        give_up: CancellationToken,
    ) -> Self {
        FlowSender {
            label,
            client,
            tracker,
            metrics,
            once,
            initial_backoff,
            max_backoff,
            saw_fatal: AtomicBool::new(false),
            give_up,
            reporting: Mutex::new(None),
            throttle_reported: AtomicBool::new(false),
        }
    }

    fn report(&self, f: &Failure, records: usize) {
        if f.class == ErrorClass::Throttled {
            if !self.throttle_reported.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "{}: throttled ({}) on {records} record(s); backing off and retrying only what failed \
                     (further throttling is counted in the status lines)",
                    self.label,
                    f.code
                );
            }
            return;
        }
        let mut cur = self.reporting.lock().unwrap();
        if cur.as_deref() == Some(f.code.as_str()) {
            return;
        }
        *cur = Some(f.code.clone());
        match f.class {
            ErrorClass::Fatal => tracing::error!(
                "{}: {}: {} ({}); {}",
                self.label,
                f.code,
                f.message,
                hint(&f.code),
                if self.once { "giving up" } else { "retrying slowly until it is fixed" }
            ),
            ErrorClass::Throttled => {}
            ErrorClass::Transient => {
                tracing::warn!("{}: {}: {}; retrying with backoff", self.label, f.code, f.message)
            }
        }
    }

    fn recovered(&self) {
        let mut cur = self.reporting.lock().unwrap();
        if let Some(code) = cur.take() {
            tracing::info!("{}: sending again after {code}", self.label);
        }
    }

    /// Acknowledge the accepted records; `failed[i]` marks the ones to keep.
    fn acknowledge(&self, records: &[Record], failed: Option<&[bool]>) {
        let mut runs: Vec<(Origin, u64)> = Vec::new();
        let mut bytes = 0u64;
        let mut count = 0u64;
        for (i, r) in records.iter().enumerate() {
            if failed.is_some_and(|f| f[i]) {
                continue;
            }
            count += 1;
            bytes += r.data.len() as u64;
            match runs.last_mut() {
                Some((o, n)) if *o == r.origin => *n += 1,
                _ => runs.push((r.origin, 1)),
            }
        }
        self.tracker.ack_runs(&runs);
        FlowMetrics::add(&self.metrics.records_sent, count);
        FlowMetrics::add(&self.metrics.bytes_sent, bytes);
    }

    /// Deliver `records` until every one is accepted (or given up in `--once` on a fatal error).
    /// Returns the number of records given up.
    pub async fn deliver(&self, mut records: Vec<Record>, rng: &mut SmallRng) -> u64 {
        let mut attempt: u32 = 0;
        loop {
            if self.once && self.give_up.is_cancelled() {
                // A fatal error already ended this flow: do not send what is left.
                let n = records.len() as u64;
                FlowMetrics::add(&self.metrics.records_undelivered, n);
                return n;
            }
            attempt += 1;
            FlowMetrics::add(&self.metrics.requests, 1);
            let failure = match self.client.put(&records, rng).await {
                Ok(failures) if failures.is_empty() => {
                    self.acknowledge(&records, None);
                    self.recovered();
                    return 0;
                }
                Ok(failures) => {
                    let mut failed = vec![false; records.len()];
                    let mut worst: Option<Failure> = None;
                    let mut throttled = 0;
                    for (i, f) in failures {
                        failed[i] = true;
                        if f.class == ErrorClass::Throttled {
                            throttled += 1;
                        }
                        if worst.as_ref().is_none_or(|w| rank(f.class) > rank(w.class)) {
                            worst = Some(f);
                        }
                    }
                    self.acknowledge(&records, Some(&failed));
                    let n_failed = failed.iter().filter(|f| **f).count();
                    FlowMetrics::add(&self.metrics.record_errors, n_failed as u64);
                    FlowMetrics::add(&self.metrics.records_throttled, throttled);
                    let mut keep = failed.into_iter();
                    records.retain(|_| keep.next().unwrap_or(false));
                    worst.expect("at least one failure")
                }
                Err(f) => {
                    FlowMetrics::add(&self.metrics.request_errors, 1);
                    FlowMetrics::add(&self.metrics.record_errors, records.len() as u64);
                    if f.class == ErrorClass::Throttled {
                        FlowMetrics::add(&self.metrics.records_throttled, records.len() as u64);
                    }
                    f
                }
            };
            self.report(&failure, records.len());
            let delay = if failure.class == ErrorClass::Fatal {
                self.saw_fatal.store(true, Ordering::Relaxed);
                if self.once {
                    self.give_up.cancel();
                    let n = records.len() as u64;
                    FlowMetrics::add(&self.metrics.records_undelivered, n);
                    return n;
                }
                self.max_backoff
            } else {
                backoff(attempt, self.initial_backoff, self.max_backoff)
            };
            tokio::time::sleep(delay).await;
        }
    }
}

fn rank(c: ErrorClass) -> u8 {
    match c {
        ErrorClass::Throttled => 0,
        ErrorClass::Transient => 1,
        ErrorClass::Fatal => 2,
    }
}
