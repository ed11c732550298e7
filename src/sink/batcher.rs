//! The batcher of one flow: packs the records of incoming chunks into requests bounded by the
//! flow's record and byte limits, flushes a batch when its oldest record reaches
//! `maxBufferAgeMillis`, and hands each batch to a send task once its pace and a sending slot
//! allow. A chunk's bytes are taken from the flow's in-flight budget when the batcher takes the
//! chunk, and given back when the send task of their batch ends: the open batch, KPL aggregates
//! still being built and records waiting for their key's turn count, not only requests being
//! sent. While it waits for budget or a slot it reads no more chunks, so the bounded channel fills
//! and the tailers stop reading: the files are the buffer.
//!
//! Ordered flows (`ordering: PER_KEY`) pass every entry through the gate of `order.rs`: one
//! entry per key (or per aggregate group) in flight, the later ones waiting, in order, for the
//! send task of the earlier one to end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use super::aggregate::{Aggregator, Closed};
use super::budget::{FlowBudget, Held, InFlight, kib_of};
use super::client::SinkClient;
use super::kpl::Entry;
use super::order::{Gate, Lane, record_lane};
use super::sender::{Delivered, FlowSender};
use crate::metrics::FlowMetrics;
use crate::types::record::{Chunk, Record};

pub struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    /// Bytes a record without a key of its own costs besides its data (the partition key for
    /// Kinesis).
    pub per_record_overhead: usize,
    pub max_age: Duration,
    /// Batches of this flow in flight at once (`publishQueueCapacity`).
    pub max_batches: usize,
    /// `ordering: PER_KEY`.
    pub ordered: bool,
}

struct Batch {
    records: Vec<Entry>,
    bytes: usize,
    data_bytes: usize,
    opened: Instant,
    /// The lanes of its entries (ordered flows), released when its send task ends.
    lanes: Vec<Lane>,
    /// It holds records not sent before.
    fresh: bool,
    /// Records handed back by send tasks: the most attempts they had, and when they must go.
    retried: Option<(u32, Instant)>,
}

impl Batch {
    /// The attempts its records had: those of the retried records when it holds nothing else
    /// (a record failing again and again waits longer each time); none beside fresh records (the
    /// flow is busy: sending them with its next batches costs nothing, and a count carried over
    /// from batch to batch would make every record wait the longest backoff).
    fn attempts(&self) -> u32 {
        match self.retried {
            Some((n, _)) if !self.fresh => n,
            _ => 0,
        }
    }
}

/// Ordered flows stop taking chunks while this many batches' worth of records wait for their
/// keys.
const HELD_BATCHES: usize = 8;

/// What a send task returns: the records given up, the lanes its batch held, and the records it
/// handed back with their share of the budget.
type Sent = (u64, Vec<Lane>, Option<(Delivered, Held)>);

struct Batcher {
    limits: BatchLimits,
    sender: Arc<FlowSender>,
    inflight: InFlight,
    budget: FlowBudget,
    flow_slots: Arc<Semaphore>,
    tasks: JoinSet<Sent>,
    batch: Option<Batch>,
    /// The budget taken for the records the batcher holds.
    held: Held,
    aggregator: Option<Aggregator>,
    /// Aggregates the aggregator closed, to be pushed.
    closed: Vec<Closed>,
    /// Ordered flows.
    gate: Option<Gate>,
    /// The shard map generation of the last aggregate admitted: a newer one raises a barrier.
    generation: u64,
    given_up: u64,
}

impl Batcher {
    /// Add a plain record, through the gate of ordered flows.
    async fn push(&mut self, r: Record) {
        let lane = self.gate.as_ref().and_then(|_| record_lane(&r));
        self.push_lane(Entry::Plain(r), lane).await;
    }

    /// Add what the aggregator closed, through the gate of ordered flows.
    async fn push_closed(&mut self, c: Closed) {
        if let Some(gate) = self.gate.as_mut()
            && c.generation > self.generation
        {
            // The shard map changed: a key may now be grouped under another shard than its
            // aggregates in flight.
            self.generation = c.generation;
            gate.barrier();
        }
        let lane = self.gate.as_ref().map(|_| c.lane);
        self.push_lane(c.entry, lane).await;
    }

    async fn push_lane(&mut self, e: Entry, lane: Option<Lane>) {
        match (lane, self.gate.as_mut()) {
            (Some(lane), Some(gate)) => {
                if let Some(e) = gate.admit(lane, e) {
                    self.add(e, Some(lane), None).await;
                }
            }
            _ => self.add(e, None, None).await,
        }
    }

    /// Add one entry to the batch, sending the batch first if the entry would not fit in it.
    /// `again`: the entry was handed back after this many attempts, and must go by then.
    async fn add(&mut self, e: Entry, lane: Option<Lane>, again: Option<(u32, Instant)>) {
        let limits = &self.limits;
        let size = e.kinesis_size(limits.per_record_overhead);
        let full = self
            .batch
            .as_ref()
            .is_some_and(|b| b.records.len() >= limits.max_records || b.bytes + size > limits.max_bytes);
        if full {
            self.send().await;
        }
        let limits = &self.limits;
        let b = self.batch.get_or_insert_with(|| Batch {
            records: Vec::with_capacity(limits.max_records.min(512)),
            bytes: 0,
            data_bytes: 0,
            opened: Instant::now(),
            lanes: Vec::new(),
            fresh: false,
            retried: None,
        });
        match (again, &mut b.retried) {
            (None, _) => b.fresh = true,
            (Some(a), None) => b.retried = Some(a),
            (Some((n, due)), Some((m, t))) => (*m, *t) = (n.max(*m), due.min(*t)),
        }
        b.bytes += size;
        b.data_bytes += e.user_bytes() as usize;
        b.records.push(e);
        b.lanes.extend(lane);
        if b.records.len() >= limits.max_records {
            self.send().await;
        }
    }

    async fn send(&mut self) {
        if let Some(b) = self.batch.take() {
            let mem = self.held.release(b.data_bytes);
            self.dispatch(b, mem).await;
        }
    }

    /// Close the aggregator's open aggregates and send everything that may go. The batcher then
    /// holds only records waiting for their key's turn, and their budget.
    async fn flush(&mut self) {
        if let Some(agg) = self.aggregator.as_mut() {
            agg.flush(&mut self.closed);
            for c in std::mem::take(&mut self.closed) {
                self.push_closed(c).await;
            }
        }
        self.send().await;
        self.held.bytes = self.gate.as_ref().map_or(0, Gate::held_bytes);
        drop(self.held.release(0));
    }

    /// Ordered flows: records wait for their key, so the batch cannot grow by itself; with no
    /// batch in flight to end and let them in, send it now.
    async fn send_if_waiting(&mut self) {
        if self.gate.as_ref().is_some_and(Gate::is_holding) && self.tasks.is_empty() {
            self.send().await;
        }
    }

    /// A send task ended: its keys' next records may go.
    async fn done(&mut self, result: Result<Sent, JoinError>) {
        let (given_up, lanes, again) = result.unwrap_or_default();
        self.given_up += given_up;
        if let Some((d, held)) = again {
            self.take_back(d, held).await;
        }
        let Some(gate) = self.gate.as_mut() else { return };
        let mut next = Vec::new();
        for lane in lanes {
            gate.release(lane, &mut next);
        }
        let stats = gate.take_stats();
        let m = &self.sender.metrics;
        FlowMetrics::add(&m.records_held_for_order, stats.records);
        FlowMetrics::add(&m.order_wait_ms, stats.waited.as_millis() as u64);
        for (lane, e) in next {
            self.add(e, Some(lane), None).await;
        }
        self.send_if_waiting().await;
    }

    /// Takes `kib` of budget for a chunk. With no send in flight to give budget back, what the
    /// batcher holds may be all there is: it is sent first, so the batcher never waits on itself.
    async fn take_budget(&mut self, kib: u32) -> OwnedSemaphorePermit {
        loop {
            if let Some(p) = self.budget.try_acquire(kib) {
                return p;
            }
            if self.tasks.is_empty() {
                if self.held.kib() == 0 {
                    return self.budget.acquire(kib).await;
                }
                self.flush().await;
                continue;
            }
            let done = tokio::select! {
                p = self.budget.acquire(kib) => return p,
                Some(done) = self.tasks.join_next() => done,
            };
            self.done(done).await;
        }
    }

    async fn take(&mut self, chunk: Chunk) {
        // The chunk's bytes are taken from the budget before its records come in.
        let permit = self.take_budget(kib_of(chunk.bytes)).await;
        self.held.add(permit, chunk.bytes);
        if let Some(agg) = self.aggregator.as_mut()
            && agg.by_shard()
            && agg.shards.needs_refresh()
            && let SinkClient::Kinesis { client, stream, .. } = &self.sender.client
        {
            agg.shards.refresh(client, stream, &self.sender.label).await;
        }
        for r in chunk.records {
            let Some(agg) = self.aggregator.as_mut() else {
                self.push(r).await;
                continue;
            };
            let since = agg.oldest();
            agg.add(r, &mut self.closed);
            if self.closed.is_empty() {
                continue;
            }
            for c in std::mem::take(&mut self.closed) {
                self.push_closed(c).await;
            }
            // The records of those aggregates waited in the aggregator: the batch is as old as
            // the oldest of them.
            if let (Some(b), Some(since)) = (self.batch.as_mut(), since) {
                b.opened = b.opened.min(since);
            }
        }
        self.send_if_waiting().await;
    }

    /// Ordered flows: enough records wait for their keys to fill many batches. More would not
    /// send faster (the keys in flight are the limit) and would hold memory beyond the records'
    /// own bytes, so no chunk is taken until some go: the files are the buffer.
    fn waiting_enough(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.held_entries() >= HELD_BATCHES * self.limits.max_records.max(1))
    }

    /// Records a send task handed back (a few failed in a request mostly accepted) join the open
    /// batch, which goes when full, or at the latest when their backoff ends.
    async fn take_back(&mut self, d: Delivered, held: Held) {
        self.held.absorb(held);
        let due = Instant::now() + d.within;
        for e in d.again {
            self.add(e, None, Some((d.attempts, due))).await;
        }
    }

    /// When the open batch or aggregate must be flushed.
    fn deadline(&self) -> Option<Instant> {
        let oldest = [self.batch.as_ref().map(|b| b.opened), self.aggregator.as_ref().and_then(Aggregator::oldest)];
        let aged = oldest.into_iter().flatten().min().map(|t| t + self.limits.max_age);
        let due = self.batch.as_ref().and_then(|b| b.retried.map(|r| r.1));
        aged.into_iter().chain(due).min()
    }

    /// Hands batch `b` to a send task, with `mem`, its share of the budget (given back when the
    /// task ends).
    async fn dispatch(&mut self, b: Batch, mem: Vec<OwnedSemaphorePermit>) {
        let slot: OwnedSemaphorePermit = self.flow_slots.clone().acquire_owned().await.expect("never closed");
        self.sender.pacer.acquire(b.records.len()).await;
        let req = self.inflight.requests.clone().acquire_owned().await.expect("never closed");
        let sender = self.sender.clone();
        let requests = self.inflight.requests.clone();
        let bytes = self.inflight.bytes.clone();
        let data_bytes = b.data_bytes as u64;
        bytes.fetch_add(data_bytes, std::sync::atomic::Ordering::Relaxed);
        // Ordered flows retry within the task: its lanes hold the later records of its keys.
        let hand_back = !self.limits.ordered;
        let attempts = b.attempts();
        self.tasks.spawn(async move {
            let mut rng: rand::rngs::SmallRng = rand::make_rng();
            let d = sender.deliver(b.records, req, &requests, &mut rng, (attempts, hand_back)).await;
            bytes.fetch_sub(data_bytes, std::sync::atomic::Ordering::Relaxed);
            drop(slot);
            let given_up = d.given_up;
            let again = (!d.again.is_empty()).then(|| {
                // The records handed back keep their share of the budget.
                let kept: usize = d.again.iter().map(|e| e.user_bytes() as usize).sum();
                let mut held = Held::of(mem, data_bytes as usize);
                drop(held.release(data_bytes as usize - kept.min(data_bytes as usize)));
                (d, held)
            });
            (given_up, b.lanes, again)
        });
    }
}

/// Runs until `rx` closes (every tailer of the flow is done), then flushes and waits for every
/// send to finish. Returns the number of records given up. With `aggregator`, records are packed
/// into KPL aggregates first.
pub async fn run(
    mut rx: mpsc::Receiver<Chunk>,
    sender: Arc<FlowSender>,
    limits: BatchLimits,
    inflight: InFlight,
    budget: FlowBudget,
    aggregator: Option<Aggregator>,
) -> u64 {
    let mut b = Batcher {
        flow_slots: Arc::new(Semaphore::new(limits.max_batches.max(1))),
        gate: limits.ordered.then(Gate::default),
        limits,
        sender,
        inflight,
        budget,
        tasks: JoinSet::new(),
        batch: None,
        held: Held::default(),
        aggregator,
        closed: Vec::new(),
        generation: 0,
        given_up: 0,
    };
    loop {
        // Every send task that ended, not one per turn: with chunks always ready, ended tasks
        // (6.5 KB each, and what they hand back) piled up by the thousand.
        while let Some(done) = b.tasks.try_join_next() {
            b.done(done).await;
        }
        let deadline = b.deadline();
        tokio::select! {
            chunk = rx.recv(), if !b.waiting_enough() => match chunk {
                Some(chunk) => b.take(chunk).await,
                None => break,
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => b.flush().await,
            Some(done) = b.tasks.join_next(), if !b.tasks.is_empty() => b.done(done).await,
            // Not reached (records wait only behind a batch open or in flight); never stall.
            else => b.flush().await,
        }
    }
    b.flush().await;
    // Sends in flight may hand records back (sent when their backoff ends); in ordered flows each
    // batch that ends lets the next records of its keys go.
    loop {
        let deadline = b.deadline();
        tokio::select! {
            Some(done) = b.tasks.join_next(), if !b.tasks.is_empty() => {
                b.done(done).await;
                if b.gate.is_some() {
                    b.flush().await;
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => b.flush().await,
            else => break,
        }
    }
    b.given_up
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// KPL aggregates being built count against the budget: with a destination that never
    /// answers, the batcher stops taking chunks once the budget is held, although four open
    /// aggregates (one per shard) could each grow to 1 MiB.
    #[tokio::test]
    async fn aggregates_being_built_count_against_the_budget() {
        use crate::config::{DerivedKey, KeyFallback, PartitionKeyOption};
        use crate::sink::shards::{ShardMap, Shards};
        use crate::types::key::RecordKey;
        use crate::types::record::{Origin, Record};

        // Accepts connections (the kernel does) and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let conf = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://{}", silent.local_addr().unwrap()))
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new("x", "y", None, None, "test"))
            .build();
        let key = PartitionKeyOption::Derived(DerivedKey {
            source: crate::config::compile::field_key("k"),
            fallback: KeyFallback::Random,
            explicit_hash_key_field: None,
        });
        let client = SinkClient::Kinesis {
            client: aws_sdk_kinesis::Client::from_conf(conf),
            stream: "s".into(),
            key: key.clone(),
        };
        let sender = Arc::new(FlowSender::new(
            "test".into(),
            client,
            crate::ack::AckTracker::new(),
            Default::default(),
            false,
            (Duration::from_millis(10), Duration::from_millis(100)),
            Default::default(),
        ));
        let q = u128::MAX / 4;
        let shards = Shards::default();
        shards.set_for_test(ShardMap::new(vec![
            (0, q, "s0".into()),
            (q + 1, 2 * q + 1, "s1".into()),
            (2 * q + 2, 3 * q + 2, "s2".into()),
            (3 * q + 3, u128::MAX, "s3".into()),
        ]));
        let aggregator = Aggregator::new(1024 * 1024, key, Arc::new(shards));
        let budget_bytes = 256 * 1024;
        let inflight = InFlight::new(4, budget_bytes, 1);
        let limits = BatchLimits {
            max_records: 500,
            max_bytes: 5 * 1024 * 1024,
            per_record_overhead: 0,
            max_age: Duration::from_secs(3600),
            max_batches: 100,
            ordered: false,
        };
        let (tx, rx) = mpsc::channel::<Chunk>(4);
        let budget = inflight.flow_budget();
        let batcher = tokio::spawn(run(rx, sender, limits, inflight, budget, Some(aggregator)));
        let chunk_bytes = 100 * 100;
        let mut taken = 0usize;
        for seq in 0..2_000u64 {
            let records: Vec<Record> = (0..100)
                .map(|i| Record {
                    data: bytes::Bytes::from(vec![b'x'; 100]),
                    origin: Origin { file: 0, chunk: seq },
                    key: Some(Box::new(RecordKey { partition: format!("user-{i}").into(), explicit_hash: None })),
                })
                .collect();
            let chunk = Chunk { file: 0, seq, records, bytes: chunk_bytes };
            if tokio::time::timeout(Duration::from_millis(300), tx.send(chunk)).await.is_err() {
                break;
            }
            taken += chunk_bytes;
        }
        // The budget, the channel's chunks and the one being taken in.
        assert!(taken <= budget_bytes + 6 * chunk_bytes, "took {taken} bytes with a budget of {budget_bytes}");
        batcher.abort();
    }
}
