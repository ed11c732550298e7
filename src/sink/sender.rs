//! Delivery of one batch: send, acknowledge what was accepted, back off, re-send only what
//! failed. Throttling and transient errors are retried for ever; a fatal error is reported once
//! and retried at the slowest pace by the daemon, or given up by `--once`. Every attempt waits
//! for the flow's pace (`pace::Pacer`) and holds a global request slot only while it is sent.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::client::SinkClient;
use super::kpl::{Aggregate, Entry};
use super::pace::{PaceChange, Pacer};
use super::retry::{ErrorClass, Failure, backoff, hint};
use super::shards::Shards;
use crate::ack::AckTracker;
use crate::metrics::FlowMetrics;
use crate::types::key::RecordKey;
use crate::types::record::{Origin, Record};

/// Everything a flow's send tasks share.
pub struct FlowSender {
    /// `flows[0] (kinesis stream app-logs in us-east-1)`, for log lines.
    pub label: String,
    pub client: SinkClient,
    pub tracker: AckTracker,
    pub metrics: Arc<FlowMetrics>,
    /// `--once`: give up on fatal errors instead of retrying them.
    pub once: bool,
    /// `--once`: give up on the flow when nothing has been accepted for this long (retries of
    /// throttling and transient errors included); set after `new`.
    pub give_up_after: Duration,
    /// When the destination last accepted a record of this flow (or the flow started).
    last_accepted: Mutex<tokio::time::Instant>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A fatal error was seen (for the exit code of `--once`).
    pub saw_fatal: AtomicBool,
    /// Cancelled by `--once` on a fatal error: the flow's tailers stop reading.
    pub give_up: CancellationToken,
    /// The pace of this flow's sends, set by throttling.
    pub pacer: Pacer,
    /// Error codes already reported in the current episode, so a problem is logged once, not
    /// once per request; the status logger ends the episode after a period without failures.
    reported: Mutex<Vec<String>>,
    /// The last attempt succeeded (an episode can only end then).
    last_ok: AtomicBool,
    /// The shard map KPL aggregates are grouped by (Kinesis flows aggregating by shard).
    pub shards: Option<Arc<Shards>>,
    /// `ordering: PER_KEY`: records taken out of a misplaced aggregate are sent one per key per
    /// attempt (the batcher's gate keeps every other batch at one entry per key).
    pub ordered: bool,
}

/// `--give-up-after` unless set.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(300);

/// The least a retry waits, whatever `retryInitialBackoffMillis` / `retryMaxBackoffMillis` say.
const MIN_BACKOFF: Duration = Duration::from_millis(10);

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
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            last_accepted: Mutex::new(tokio::time::Instant::now()),
            // Never 0 (the keys allow it): a retry loop without a pause would spin and hammer.
            initial_backoff: initial_backoff.max(MIN_BACKOFF),
            max_backoff: max_backoff.max(MIN_BACKOFF),
            saw_fatal: AtomicBool::new(false),
            give_up,
            pacer: Pacer::new(),
            reported: Mutex::new(Vec::new()),
            last_ok: AtomicBool::new(true),
            shards: None,
            ordered: false,
        }
    }

    fn report(&self, f: &Failure) {
        if f.class == ErrorClass::Throttled {
            // Throttling is summarised by the pacer's changes and the status lines.
            return;
        }
        let mut reported = self.reported.lock().unwrap();
        if reported.contains(&f.code) {
            return;
        }
        reported.push(f.code.clone());
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
            ErrorClass::Transient => tracing::warn!(
                "{}: {}: {}{}; retrying with backoff (further failures are counted in the status lines)",
                self.label,
                f.code,
                f.message,
                match hint(&f.code) {
                    "see the message" => String::new(),
                    h => format!(" ({h})"),
                }
            ),
        }
    }

    /// Called by the status logger after a period without failures: if the last attempt
    /// succeeded, the problems reported are over (said once).
    pub fn quiet_period(&self) {
        if !self.last_ok.load(Ordering::Relaxed) {
            return;
        }
        let codes = std::mem::take(&mut *self.reported.lock().unwrap());
        if !codes.is_empty() {
            tracing::info!("{}: sending normally again after {}", self.label, codes.join(", "));
        }
    }

    /// Periodic: notices a return to full speed while the flow is idle.
    pub fn pace_tick(&self) {
        self.pace_change(self.pacer.tick());
    }

    fn pace_change(&self, change: Option<PaceChange>) {
        match change {
            Some(PaceChange::Slowed { to, code }) => tracing::warn!(
                "{}: throttled ({code}): slowing down to {to:.0} records/s, and back up as the stream allows \
                 (throttling is counted in the status lines)",
                self.label
            ),
            Some(PaceChange::Full { after }) => tracing::info!(
                "{}: no longer throttled: back to full speed {:.1} s after the last throttling",
                self.label,
                after.as_secs_f64()
            ),
            None => {}
        }
    }

    /// Acknowledge the accepted entries (every user record of an aggregate); `failed[i]` marks
    /// the ones to keep.
    fn acknowledge(&self, entries: &[Entry], failed: Option<&[bool]>) {
        let mut runs: Vec<(Origin, u64)> = Vec::new();
        let mut bytes = 0u64;
        let mut count = 0u64;
        let mut aggregates = 0u64;
        let mut add = |origin: Origin| match runs.last_mut() {
            Some((o, n)) if *o == origin => *n += 1,
            _ => runs.push((origin, 1)),
        };
        for (i, e) in entries.iter().enumerate() {
            if failed.is_some_and(|f| f[i]) {
                continue;
            }
            count += e.user_records();
            bytes += e.user_bytes();
            match e {
                Entry::Plain(r) => add(r.origin),
                Entry::Aggregate(a) => {
                    aggregates += 1;
                    a.origins.iter().for_each(|o| add(*o));
                }
            }
        }
        if count > 0 {
            *self.last_accepted.lock().unwrap() = tokio::time::Instant::now();
        }
        self.tracker.ack_runs(&runs);
        FlowMetrics::add(&self.metrics.records_sent, count);
        FlowMetrics::add(&self.metrics.bytes_sent, bytes);
        FlowMetrics::add(&self.metrics.aggregates_sent, aggregates);
    }

    /// Aggregates stored on another shard than the one they were grouped for: the stream was
    /// resharded and the shard map is stale. Consumers drop the user records of an aggregate whose
    /// hash key lies outside its shard, so those are taken out of the aggregate and returned, as
    /// plain records, to be sent again (the others count as delivered). Marks the entries handled
    /// in `handled`.
    async fn misplaced(&self, entries: &[Entry], shards: &[Option<String>], handled: &mut [bool]) -> Vec<Entry> {
        let Some(map) = &self.shards else { return Vec::new() };
        let landed: Vec<(usize, &Aggregate, &str)> = entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !handled[*i])
            .filter_map(|(i, e)| match (e, shards.get(i).and_then(|s| s.as_deref())) {
                (Entry::Aggregate(a), Some(actual)) if a.shard.as_deref().is_some_and(|p| p != actual) => {
                    Some((i, &**a, actual))
                }
                _ => None,
            })
            .collect();
        if landed.is_empty() {
            return Vec::new();
        }
        map.mark_stale();
        if let SinkClient::Kinesis { client, stream, .. } = &self.client {
            map.refresh(client, stream, &self.label).await;
        }
        let current = map.current().unwrap_or_default();
        let mut resend = Vec::new();
        let mut moved = 0usize;
        for (i, a, actual) in landed {
            let Some(m) = super::kpl::decode(&a.data) else { continue };
            let range = current.range_of(actual);
            let mut inside = Vec::new();
            for (u, origin) in m.records.into_iter().zip(&a.origins) {
                let key = RecordKey {
                    partition: m
                        .partition_key_table
                        .get(u.partition_key_index as usize)
                        .cloned()
                        .unwrap_or_default()
                        .into(),
                    explicit_hash: u
                        .explicit_hash_key_index
                        .and_then(|j| m.explicit_hash_key_table.get(j as usize))
                        .and_then(|h| h.parse().ok()),
                };
                let hash = key.hash();
                if range.is_some_and(|(lo, hi)| lo <= hash && hash <= hi) {
                    inside.push(Entry::Plain(Record { data: u.data, origin: *origin, key: None }));
                } else {
                    moved += 1;
                    resend.push(Entry::Plain(Record { data: u.data, origin: *origin, key: Some(Box::new(key)) }));
                }
            }
            self.acknowledge(&inside, None);
            handled[i] = true;
        }
        if moved > 0 {
            tracing::warn!(
                "{}: the stream was resharded: {moved} record(s) of KPL aggregates stored on a shard that no longer \
                 holds their hash key are sent again",
                self.label
            );
        }
        resend
    }

    /// Deliver `records` until every one is accepted (or given up in `--once` on a fatal error).
    /// `permit` is a slot of `requests` already held for the first attempt (the batcher waited
    /// for the pace and the slot); retries wait for both again, and no slot is held while
    /// backing off, so a flow that is throttled or failing does not hold the slots of others.
    /// `attempts`: the attempts its records already had (retries handed back and batched again).
    ///
    /// With `hand_back`, when a request is partly accepted and at most a tenth of its entries
    /// failed (and not fatally), the failed ones are returned instead of retried alone: the
    /// batcher sends them with its next batch, at the latest after the backoff. Retrying each
    /// batch's few failed records in a request of its own cost a request (and a batch slot held
    /// through the backoff) per batch: at 2 % throttled, twice the requests and three times the
    /// wall time of a clean run. Not for more: in a fleet sharing a stream (most requests a
    /// third to all throttled), batches swollen with retries made the shares less even (least
    /// share 47-63 % of a fair one, against 62-84 %).
    pub async fn deliver(
        &self,
        mut records: Vec<Entry>,
        permit: OwnedSemaphorePermit,
        requests: &Arc<Semaphore>,
        rng: &mut SmallRng,
        (attempts, hand_back): (u32, bool),
    ) -> Delivered {
        let mut attempt: u32 = attempts;
        let mut permit = Some(permit);
        // Records of one key beyond the first, when a resend may repeat keys (ordered flows).
        let mut later: Vec<Entry> = Vec::new();
        let mut repeats = false;
        loop {
            if repeats {
                records.append(&mut later);
                later = defer_repeated_keys(&mut records);
                repeats = !later.is_empty();
            }
            if self.once && self.give_up.is_cancelled() {
                records.append(&mut later);
                // A fatal error already ended this flow: do not send what is left.
                return self.undelivered(&records);
            }
            let slot = match permit.take() {
                Some(p) => p,
                None => {
                    // `--once` giving up does not wait for the pace (at the slowest, the batches
                    // queued there would hold the exit for seconds each).
                    tokio::select! {
                        _ = self.pacer.acquire(records.len()) => {}
                        _ = self.give_up.cancelled(), if self.once => continue,
                    }
                    requests.clone().acquire_owned().await.expect("never closed")
                }
            };
            attempt += 1;
            FlowMetrics::add(&self.metrics.requests, 1);
            let result = self.client.put(&records, rng, self.shards.is_some()).await;
            drop(slot);
            // A tenth or less of the request failed: what failed may go with the next batch.
            let mut few_failed = false;
            let failure = match result {
                Ok(put) if put.failures.is_empty() => {
                    self.last_ok.store(true, Ordering::Relaxed);
                    let change = self.pacer.record(records.len(), 0, None);
                    self.pace_change(change);
                    let mut handled = vec![false; records.len()];
                    let resend = self.misplaced(&records, &put.shards, &mut handled).await;
                    self.acknowledge(&records, Some(&handled));
                    repeats |= self.ordered && !resend.is_empty();
                    records = resend;
                    if records.is_empty() && later.is_empty() {
                        return Delivered::default();
                    }
                    continue;
                }
                Ok(put) => {
                    let failures = put.failures;
                    let mut failed = vec![false; records.len()];
                    let mut worst: Option<Failure> = None;
                    let mut throttled = 0;
                    let mut throttle_code: Option<String> = None;
                    for (i, f) in failures {
                        failed[i] = true;
                        if f.class == ErrorClass::Throttled {
                            throttled += 1;
                            if throttle_code.is_none() {
                                throttle_code = Some(f.code.clone());
                            }
                        }
                        if worst.as_ref().is_none_or(|w| rank(f.class) > rank(w.class)) {
                            worst = Some(f);
                        }
                    }
                    let change = self.pacer.record(records.len(), throttled, throttle_code.as_deref());
                    self.pace_change(change);
                    let mut handled = failed.clone();
                    let resend = self.misplaced(&records, &put.shards, &mut handled).await;
                    self.acknowledge(&records, Some(&handled));
                    let n_failed = failed.iter().filter(|f| **f).count();
                    FlowMetrics::add(&self.metrics.record_errors, n_failed as u64);
                    FlowMetrics::add(&self.metrics.records_rejected, n_failed as u64);
                    FlowMetrics::add(&self.metrics.records_throttled, throttled as u64);
                    let sent = records.len();
                    let mut keep = failed.into_iter();
                    records.retain(|_| keep.next().unwrap_or(false));
                    // A record is a slice of the buffer its file was read in (up to 128 KiB), and
                    // keeps all of it alive while it waits to be sent again: the few that failed
                    // get their own copy.
                    for e in records.iter_mut() {
                        if let Entry::Plain(r) = e {
                            r.data = bytes::Bytes::copy_from_slice(&r.data);
                        }
                    }
                    records.shrink_to_fit();
                    repeats |= self.ordered && !resend.is_empty();
                    records.extend(resend);
                    few_failed = 10 * n_failed <= sent && later.is_empty();
                    worst.expect("at least one failure")
                }
                Err(f) => {
                    FlowMetrics::add(&self.metrics.request_errors, 1);
                    FlowMetrics::add(&self.metrics.record_errors, records.len() as u64);
                    if super::client::outcome_unknown(&f) {
                        let n = records.iter().map(Entry::user_records).sum();
                        FlowMetrics::add(&self.metrics.records_maybe_duplicated, n);
                    }
                    if f.class == ErrorClass::Throttled {
                        FlowMetrics::add(&self.metrics.records_throttled, records.len() as u64);
                        let change = self.pacer.record(records.len(), records.len(), Some(&f.code));
                        self.pace_change(change);
                    }
                    f
                }
            };
            self.last_ok.store(false, Ordering::Relaxed);
            self.report(&failure);
            // Not while paced: the pace already spaces every attempt, and in a fleet sharing a
            // stream (paced nearly all the time) retries joining the next batch made the shares
            // less even (a least share of 49 % of a fair one in a CI run, under the test's 50 %).
            if hand_back && few_failed && failure.class != ErrorClass::Fatal && self.pacer.rate().is_none() {
                let within = self.retry_delay(&failure, attempt);
                return Delivered { given_up: 0, again: records, attempts: attempt, within };
            }
            if self.once && failure.class != ErrorClass::Fatal && self.nothing_accepted_for_too_long() {
                // The destination took nothing for `give_up_after`: stop the flow (exit 2), say it once.
                if !self.give_up.is_cancelled() {
                    self.give_up.cancel();
                    tracing::error!(
                        "{}: nothing accepted for {} s (last error {}: {}); giving up: the records left are not \
                         delivered, and a later run sends them from the checkpoint",
                        self.label,
                        self.give_up_after.as_secs(),
                        failure.code,
                        failure.message
                    );
                }
                records.append(&mut later);
                return self.undelivered(&records);
            }
            let delay = if failure.class == ErrorClass::Fatal {
                self.saw_fatal.store(true, Ordering::Relaxed);
                if self.once {
                    self.give_up.cancel();
                    records.append(&mut later);
                    return self.undelivered(&records);
                }
                self.max_backoff
            } else {
                self.retry_delay(&failure, attempt)
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// The backoff before the next attempt after a throttled or transient failure.
    fn retry_delay(&self, failure: &Failure, attempt: u32) -> Duration {
        if failure.class == ErrorClass::Throttled && self.pacer.rate().is_some() {
            // The pace already spaces the attempts of every batch of the flow: backing off
            // further, more for the batches throttled more often, only made the flows of a
            // fleet sharing a stream get unequal shares.
            backoff(1, self.initial_backoff, self.max_backoff)
        } else {
            backoff(attempt, self.initial_backoff, self.max_backoff)
        }
    }

    /// `records` are given up (`--once`): counted, and their number returned.
    fn undelivered(&self, records: &[Entry]) -> Delivered {
        let n = records.iter().map(Entry::user_records).sum();
        FlowMetrics::add(&self.metrics.records_undelivered, n);
        Delivered { given_up: n, ..Delivered::default() }
    }
}

/// How a send task ends.
#[derive(Default)]
pub struct Delivered {
    /// Records given up (`--once`).
    pub given_up: u64,
    /// Records handed back to be sent again with the next batch (see `deliver`).
    pub again: Vec<Entry>,
    /// The attempts they had.
    pub attempts: u32,
    /// They go at the latest after this long (their backoff).
    pub within: Duration,
}

impl FlowSender {
    fn nothing_accepted_for_too_long(&self) -> bool {
        self.last_accepted.lock().unwrap().elapsed() >= self.give_up_after
    }
}

/// Takes out of `records` every plain record whose key an earlier entry already has, in order:
/// one entry per key per attempt, since a partial failure can accept a later record and reject
/// an earlier one.
fn defer_repeated_keys(records: &mut Vec<Entry>) -> Vec<Entry> {
    let mut seen = std::collections::HashSet::new();
    let mut later = Vec::new();
    let mut kept = Vec::with_capacity(records.len());
    for e in records.drain(..) {
        let lane = match &e {
            Entry::Plain(r) => super::order::record_lane(r),
            Entry::Aggregate(_) => None,
        };
        match lane {
            Some(l) if !seen.insert(l) => later.push(e),
            _ => kept.push(e),
        }
    }
    *records = kept;
    later
}

fn rank(c: ErrorClass) -> u8 {
    match c {
        ErrorClass::Throttled => 0,
        ErrorClass::Transient => 1,
        ErrorClass::Fatal => 2,
    }
}
