//! The batcher of one flow: packs the records of incoming chunks into requests bounded by the
//! flow's record and byte limits, flushes a batch when its oldest record reaches
//! `maxBufferAgeMillis`, and hands each batch to a send task once its pace and a sending slot
//! allow. A chunk's bytes are taken from the flow's in-flight budget when the batcher takes the
//! chunk, and given back when the send task of their batch ends: the open batch and KPL aggregates
//! still being built count, not only requests being sent. While it waits for budget or a slot it
//! reads no more chunks, so the bounded channel fills and the tailers stop reading: the files are
//! the buffer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::aggregate::Aggregator;
use super::client::SinkClient;
use super::kpl::Entry;
use super::sender::FlowSender;
use crate::record::Chunk;

/// Shared limits on what is in flight across all flows: request slots (`maxSendingThreads`) and
/// the record bytes budget (`maxInFlightBytes`).
///
/// The budget is shared so that a flow with a backlog cannot starve the others: half of it is
/// split into a reserve per flow, which only that flow uses; the other half is first come, first
/// served. A flow whose destination is down fills its reserve and the shared half, and stops
/// there; every other flow still has its reserve. One busy flow alone gets its reserve plus the
/// shared half (all of it when it is the only flow). A flow added by a reload carves its reserve
/// out of the shared half, and a flow that ends gives its reserve to it, so the budget holds
/// whatever reloads do.
#[derive(Clone)]
pub struct InFlight {
    /// Requests being sent (`maxSendingThreads`). Held only during the HTTP call.
    pub requests: Arc<Semaphore>,
    /// Record bytes being sent now, for the metrics.
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
    shared: Arc<Shared>,
    reserve_kib: u32,
    /// Reserves of the flows counted at the start not handed out yet.
    initial_reserves: Arc<AtomicU32>,
}

/// The shared half, and its current size in KiB (reserves move in and out of it).
struct Shared {
    permits: Arc<Semaphore>,
    kib: AtomicU32,
}

impl InFlight {
    /// `bytes` of record data in flight at most, shared by `flows` flows.
    pub fn new(requests: usize, bytes: usize, flows: usize) -> Self {
        let total = (bytes / 1024).clamp(2, u32::MAX as usize >> 4);
        let reserve = (total / 2 / flows.max(1)).max(1);
        let shared = total.saturating_sub(reserve * flows.max(1)).max(1);
        InFlight {
            requests: Arc::new(Semaphore::new(requests.max(1))),
            bytes: Arc::default(),
            shared: Arc::new(Shared { permits: Arc::new(Semaphore::new(shared)), kib: AtomicU32::new(shared as u32) }),
            reserve_kib: reserve as u32,
            initial_reserves: Arc::new(AtomicU32::new(flows as u32)),
        }
    }

    /// The budget of one more flow: its own reserve, plus the shared part.
    pub fn flow_budget(&self) -> FlowBudget {
        let initial = self.initial_reserves.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        let reserve_kib = if initial.is_ok() {
            self.reserve_kib
        } else {
            // Added by a reload: what the shared half can spare now, keeping at least 1 KiB there.
            let spare = (self.shared.kib.load(Ordering::SeqCst).saturating_sub(1)).min(self.reserve_kib);
            let taken = self.shared.permits.forget_permits(spare as usize) as u32;
            self.shared.kib.fetch_sub(taken, Ordering::SeqCst);
            taken.max(1)
        };
        FlowBudget { reserve: Arc::new(Semaphore::new(reserve_kib as usize)), reserve_kib, shared: self.shared.clone() }
    }

    /// KiB of the shared half now (for tests).
    #[cfg(test)]
    fn shared_kib(&self) -> u32 {
        self.shared.kib.load(Ordering::SeqCst)
    }
}

/// What one flow may hold in flight: see `InFlight`. Dropped when the flow's batcher ends (its
/// sends done): the reserve then goes to the shared half.
pub struct FlowBudget {
    reserve: Arc<Semaphore>,
    reserve_kib: u32,
    shared: Arc<Shared>,
}

impl Drop for FlowBudget {
    fn drop(&mut self) {
        self.shared.kib.fetch_add(self.reserve_kib, Ordering::SeqCst);
        self.shared.permits.add_permits(self.reserve_kib as usize);
    }
}

impl FlowBudget {
    /// `kib` KiB from the flow's reserve or else the shared part, if either has them now. A
    /// request larger than a part takes all of it (it is never refused).
    pub fn try_acquire(&self, kib: u32) -> Option<OwnedSemaphorePermit> {
        let own = kib.clamp(1, self.reserve_kib);
        let shared = kib.clamp(1, self.shared.kib.load(Ordering::SeqCst).max(1));
        self.reserve
            .clone()
            .try_acquire_many_owned(own)
            .or_else(|_| self.shared.permits.clone().try_acquire_many_owned(shared))
            .ok()
    }

    /// Waits for `kib` KiB from the flow's reserve or else the shared part, whichever frees
    /// first (see `try_acquire`).
    pub async fn acquire(&self, kib: u32) -> OwnedSemaphorePermit {
        if let Some(p) = self.try_acquire(kib) {
            return p;
        }
        let own = kib.clamp(1, self.reserve_kib);
        let shared = kib.clamp(1, self.shared.kib.load(Ordering::SeqCst).max(1));
        tokio::select! {
            p = self.reserve.clone().acquire_many_owned(own) => p,
            p = self.shared.permits.clone().acquire_many_owned(shared) => p,
        }
        .expect("never closed")
    }
}

/// The budget taken for the record bytes the batcher holds: chunks taken from the channel whose
/// records are in the open batch or in KPL aggregates being built. A batch leaving for its send
/// task takes its bytes' share along; the pool keeps what the rest needs, rounded up to KiB.
#[derive(Default)]
struct Held {
    permits: Vec<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Held {
    fn kib(&self) -> usize {
        self.permits.iter().map(OwnedSemaphorePermit::num_permits).sum()
    }

    fn add(&mut self, permit: OwnedSemaphorePermit, bytes: usize) {
        self.permits.push(permit);
        self.bytes += bytes;
    }

    /// `bytes` leave the batcher: the permits they no longer need. (A chunk larger than a part
    /// of the budget got less than its size; then the pool can be short, and gives what it has.)
    fn release(&mut self, bytes: usize) -> Vec<OwnedSemaphorePermit> {
        self.bytes = self.bytes.saturating_sub(bytes);
        let mut give = self.kib().saturating_sub(self.bytes.div_ceil(1024));
        let mut out = Vec::new();
        while give > 0 {
            let Some(mut p) = self.permits.pop() else { break };
            let n = p.num_permits();
            if n > give {
                out.push(p.split(give).expect("fewer than held"));
                self.permits.push(p);
                break;
            }
            give -= n;
            out.push(p);
        }
        out
    }
}

/// KiB of budget for `bytes` of records.
fn kib_of(bytes: usize) -> u32 {
    bytes.div_ceil(1024).clamp(1, u32::MAX as usize) as u32
}

pub struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    /// Bytes a record without a key of its own costs besides its data (the partition key for
    /// Kinesis).
    pub per_record_overhead: usize,
    pub max_age: Duration,
    /// Batches of this flow in flight at once (`publishQueueCapacity`).
    pub max_batches: usize,
}

struct Batch {
    records: Vec<Entry>,
    bytes: usize,
    data_bytes: usize,
    opened: Instant,
}

/// The batch being filled, and what it takes to send full ones.
struct Filler<'a> {
    batch: Option<Batch>,
    ctx: &'a FlowCtx<'a>,
    tasks: &'a mut JoinSet<u64>,
    held: &'a mut Held,
}

/// What every batch of a flow is sent with.
struct FlowCtx<'a> {
    limits: &'a BatchLimits,
    sender: &'a Arc<FlowSender>,
    inflight: &'a InFlight,
    flow_slots: &'a Arc<Semaphore>,
}

impl Filler<'_> {
    /// Add one entry, sending the batch first if the entry would not fit in it.
    async fn push(&mut self, e: Entry) {
        let limits = self.ctx.limits;
        let size = e.kinesis_size(limits.per_record_overhead);
        let full = self
            .batch
            .as_ref()
            .is_some_and(|b| b.records.len() >= limits.max_records || b.bytes + size > limits.max_bytes);
        if full {
            self.send().await;
        }
        let b = self.batch.get_or_insert_with(|| Batch {
            records: Vec::with_capacity(limits.max_records.min(512)),
            bytes: 0,
            data_bytes: 0,
            opened: Instant::now(),
        });
        b.bytes += size;
        b.data_bytes += e.user_bytes() as usize;
        b.records.push(e);
        if b.records.len() >= limits.max_records {
            self.send().await;
        }
    }

    async fn send(&mut self) {
        if let Some(b) = self.batch.take() {
            let c = self.ctx;
            let mem = self.held.release(b.data_bytes);
            dispatch(b, mem, c.sender, c.inflight, c.flow_slots, self.tasks).await;
        }
    }

    /// Close the aggregator's open aggregates and send everything held. The batcher then holds
    /// no records, and no budget.
    async fn flush(&mut self, aggregator: Option<&mut Aggregator>, closed: &mut Vec<Entry>) {
        if let Some(agg) = aggregator {
            agg.flush(closed);
            for e in closed.drain(..) {
                self.push(e).await;
            }
        }
        self.send().await;
        self.held.bytes = 0;
        drop(self.held.release(0));
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
    mut aggregator: Option<Aggregator>,
) -> u64 {
    let flow_slots = Arc::new(Semaphore::new(limits.max_batches.max(1)));
    let mut tasks: JoinSet<u64> = JoinSet::new();
    let mut given_up = 0u64;
    let mut batch: Option<Batch> = None;
    let mut closed: Vec<Entry> = Vec::new();
    let mut held = Held::default();
    let ctx = FlowCtx { limits: &limits, sender: &sender, inflight: &inflight, flow_slots: &flow_slots };
    loop {
        let oldest = [batch.as_ref().map(|b| b.opened), aggregator.as_ref().and_then(Aggregator::oldest)];
        let deadline = oldest.into_iter().flatten().min().map(|t| t + limits.max_age);
        tokio::select! {
            chunk = rx.recv() => {
                let Some(chunk) = chunk else { break };
                // The chunk's bytes are taken from the budget before its records come in.
                let kib = kib_of(chunk.bytes);
                let permit = loop {
                    if let Some(p) = budget.try_acquire(kib) {
                        break p;
                    }
                    if tasks.is_empty() {
                        if held.kib() == 0 {
                            break budget.acquire(kib).await;
                        }
                        // No send gives budget back: what the batcher holds may be all there is.
                        let mut f = Filler { batch: batch.take(), ctx: &ctx, tasks: &mut tasks, held: &mut held };
                        f.flush(aggregator.as_mut(), &mut closed).await;
                        continue;
                    }
                    tokio::select! {
                        p = budget.acquire(kib) => break p,
                        Some(done) = tasks.join_next() => given_up += done.unwrap_or(0),
                    }
                };
                held.add(permit, chunk.bytes);
                if let Some(agg) = aggregator.as_mut()
                    && agg.by_shard()
                    && agg.shards.needs_refresh()
                    && let SinkClient::Kinesis { client, stream, .. } = &sender.client
                {
                    agg.shards.refresh(client, stream, &sender.label).await;
                }
                let mut f = Filler { batch: batch.take(), ctx: &ctx, tasks: &mut tasks, held: &mut held };
                for r in chunk.records {
                    match aggregator.as_mut() {
                        Some(agg) => {
                            let since = agg.oldest();
                            agg.add(r, &mut closed);
                            if closed.is_empty() {
                                continue;
                            }
                            for e in closed.drain(..) {
                                f.push(e).await;
                            }
                            // The records of those aggregates waited in the aggregator: the
                            // batch is as old as the oldest of them.
                            if let (Some(b), Some(since)) = (f.batch.as_mut(), since) {
                                b.opened = b.opened.min(since);
                            }
                        }
                        None => f.push(Entry::Plain(r)).await,
                    }
                }
                batch = f.batch.take();
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                let mut f = Filler { batch: batch.take(), ctx: &ctx, tasks: &mut tasks, held: &mut held };
                f.flush(aggregator.as_mut(), &mut closed).await;
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                given_up += done.unwrap_or(0);
            }
        }
    }
    let mut f = Filler { batch: batch.take(), ctx: &ctx, tasks: &mut tasks, held: &mut held };
    f.flush(aggregator.as_mut(), &mut closed).await;
    while let Some(done) = tasks.join_next().await {
        given_up += done.unwrap_or(0);
    }
    given_up
}

/// Hands batch `b` to a send task, with `mem`, its share of the budget (given back when the task
/// ends).
async fn dispatch(
    b: Batch,
    mem: Vec<OwnedSemaphorePermit>,
    sender: &Arc<FlowSender>,
    inflight: &InFlight,
    flow_slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<u64>,
) {
    let slot: OwnedSemaphorePermit = flow_slots.clone().acquire_owned().await.expect("never closed");
    sender.pacer.acquire(b.records.len()).await;
    let req = inflight.requests.clone().acquire_owned().await.expect("never closed");
    let sender = sender.clone();
    let requests = inflight.requests.clone();
    let bytes = inflight.bytes.clone();
    let data_bytes = b.data_bytes as u64;
    bytes.fetch_add(data_bytes, std::sync::atomic::Ordering::Relaxed);
    tasks.spawn(async move {
        let mut rng: rand::rngs::SmallRng = rand::make_rng();
        let n = sender.deliver(b.records, req, &requests, &mut rng).await;
        bytes.fetch_sub(data_bytes, std::sync::atomic::Ordering::Relaxed);
        drop((slot, mem));
        n
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A flow whose destination is down holds all it can and never releases it: another flow
    /// still gets its reserve, and a flow alone can use more than its reserve.
    #[tokio::test(start_paused = true)]
    async fn a_stuck_flow_does_not_starve_another() {
        let inflight = InFlight::new(4, 8 * 1024 * 1024, 2);
        let (stuck, other) = (inflight.flow_budget(), inflight.flow_budget());
        // The stuck flow takes 512 KiB batches until it is blocked.
        let mut held = Vec::new();
        while let Ok(p) = tokio::time::timeout(Duration::from_secs(1), stuck.acquire(512)).await {
            held.push(p);
        }
        let stuck_kib: u32 = held.iter().map(|p| p.num_permits() as u32).sum();
        // Its reserve (2 MiB) and the shared half (4 MiB), not the other's reserve.
        assert_eq!(stuck_kib, 6 * 1024);
        // The other flow still sends, batch after batch, from its reserve.
        for _ in 0..20 {
            let p = tokio::time::timeout(Duration::from_secs(1), other.acquire(512)).await;
            assert!(p.is_ok(), "the other flow is starved");
        }
        // Once the stuck flow's batches complete, the shared part is free again.
        drop(held);
        let big = tokio::time::timeout(Duration::from_secs(1), other.acquire(4 * 1024)).await;
        assert!(big.is_ok());
    }

    /// KPL aggregates being built count against the budget: with a destination that never
    /// answers, the batcher stops taking chunks once the budget is held, although four open
    /// aggregates (one per shard) could each grow to 1 MiB.
    #[tokio::test]
    async fn aggregates_being_built_count_against_the_budget() {
        use crate::config::{DerivedKey, KeyFallback, KeySource, PartitionKeyOption};
        use crate::record::key::RecordKey;
        use crate::record::{Origin, Record};
        use crate::sink::shards::{ShardMap, Shards};

        // Accepts connections (the kernel does) and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let conf = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://{}", silent.local_addr().unwrap()))
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new("x", "y", None, None, "test"))
            .build();
        let key = PartitionKeyOption::Derived(DerivedKey {
            source: KeySource::Field("k".into()),
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

    #[test]
    fn held_budget_follows_the_bytes() {
        let sem = Arc::new(Semaphore::new(100));
        let mut held = Held::default();
        held.add(sem.clone().try_acquire_many_owned(10).unwrap(), 10 * 1024);
        held.add(sem.clone().try_acquire_many_owned(3).unwrap(), 2 * 1024 + 1);
        assert_eq!(held.kib(), 13);
        // 4.5 KiB leave: the rest (7.5 KiB + 1 byte) keeps 8 KiB.
        let out = held.release(4 * 1024 + 512);
        assert_eq!(out.iter().map(|p| p.num_permits()).sum::<usize>(), 5);
        assert_eq!(held.kib(), 8);
        drop(out);
        assert_eq!(sem.available_permits(), 92);
        let out = held.release(held.bytes);
        assert_eq!(out.iter().map(|p| p.num_permits()).sum::<usize>(), 8);
        assert_eq!(held.kib(), 0);
    }

    #[test]
    fn budget_parts() {
        let one = InFlight::new(1, 64 * 1024 * 1024, 1);
        assert_eq!((one.reserve_kib, one.shared_kib()), (32 * 1024, 32 * 1024));
        let many = InFlight::new(1, 1024 * 1024, 1000);
        assert!(many.reserve_kib >= 1 && many.shared_kib() >= 1);
    }

    /// Flows added by reloads take their reserve from the shared half, and flows that end give
    /// theirs to it: the total stays the budget.
    #[test]
    fn reloads_keep_the_budget() {
        let inflight = InFlight::new(1, 8 * 1024 * 1024, 2);
        let total = |budgets: &[FlowBudget]| inflight.shared_kib() + budgets.iter().map(|b| b.reserve_kib).sum::<u32>();
        let mut budgets = vec![inflight.flow_budget(), inflight.flow_budget()];
        assert_eq!(total(&budgets), 8 * 1024);
        // Two more flows from reloads: 2 MiB each out of the 4 MiB shared half.
        budgets.push(inflight.flow_budget());
        budgets.push(inflight.flow_budget());
        assert_eq!(budgets[3].reserve_kib, 2 * 1024 - 1, "the shared half keeps 1 KiB");
        assert_eq!(total(&budgets), 8 * 1024);
        // Yet another: only a token reserve is left to take.
        budgets.push(inflight.flow_budget());
        assert!(total(&budgets) <= 8 * 1024 + 1);
        budgets.truncate(1);
        assert!(total(&budgets) <= 8 * 1024 + 1 && total(&budgets) >= 8 * 1024);
        assert!(inflight.shared_kib() >= 6 * 1024 - 1);
    }

    /// A reload-added flow can still send while the shared half is in use by another.
    #[tokio::test(start_paused = true)]
    async fn a_flow_added_while_the_shared_half_is_busy_still_sends() {
        let inflight = InFlight::new(1, 4 * 1024 * 1024, 1);
        let first = inflight.flow_budget();
        let mut held = Vec::new();
        while let Ok(p) = tokio::time::timeout(Duration::from_secs(1), first.acquire(512)).await {
            held.push(p);
        }
        let added = inflight.flow_budget();
        assert_eq!(added.reserve_kib, 1, "nothing spare: a token reserve");
        let p = tokio::time::timeout(Duration::from_secs(1), added.acquire(64)).await;
        assert!(p.is_ok(), "the added flow is starved");
    }
}
