//! The batcher of one flow: packs the records of incoming chunks into requests bounded by the
//! flow's record and byte limits, flushes a batch when its oldest record reaches
//! `maxBufferAgeMillis`, and hands each batch to a send task once a sending slot and in-flight
//! byte budget are free. While it waits for them it reads no more chunks, so the bounded channel
//! fills and the tailers stop reading: the files are the buffer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::sender::FlowSender;
use crate::record::{Chunk, Record};

/// Shared limits on what is in flight across all flows.
#[derive(Clone)]
pub struct InFlight {
    /// Requests in flight (`maxSendingThreads`).
    pub requests: Arc<Semaphore>,
    /// Record bytes in flight, in KiB.
    pub kib: Arc<Semaphore>,
    pub kib_total: u32,
}

impl InFlight {
    pub fn new(requests: usize, bytes: usize) -> Self {
        let kib_total = (bytes / 1024).clamp(1, u32::MAX as usize >> 4) as u32;
        InFlight {
            requests: Arc::new(Semaphore::new(requests.max(1))),
            kib: Arc::new(Semaphore::new(kib_total as usize)),
            kib_total,
        }
    }
}

pub struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    /// Bytes a record costs besides its data (the partition key for Kinesis).
    pub per_record_overhead: usize,
    pub max_age: Duration,
    /// Batches of this flow in flight at once (`publishQueueCapacity`).
    pub max_batches: usize,
}

struct Batch {
    records: Vec<Record>,
    bytes: usize,
    data_bytes: usize,
    opened: Instant,
}

/// Runs until `rx` closes (every tailer of the flow is done), then flushes and waits for every
/// send to finish. Returns the number of records given up.
pub async fn run(
    mut rx: mpsc::Receiver<Chunk>,
    sender: Arc<FlowSender>,
    limits: BatchLimits,
    inflight: InFlight,
) -> u64 {
    let flow_slots = Arc::new(Semaphore::new(limits.max_batches.max(1)));
    let mut tasks: JoinSet<u64> = JoinSet::new();
    let mut given_up = 0u64;
    let mut batch: Option<Batch> = None;
    loop {
        let deadline = batch.as_ref().map(|b| b.opened + limits.max_age);
        tokio::select! {
            chunk = rx.recv() => {
                let Some(chunk) = chunk else { break };
                for r in chunk.records {
                    let size = r.data.len() + limits.per_record_overhead;
                    let full = batch.as_ref().is_some_and(|b| {
                        b.records.len() >= limits.max_records || b.bytes + size > limits.max_bytes
                    });
                    if full {
                        let b = batch.take().expect("full batch");
                        dispatch(b, &sender, &inflight, &flow_slots, &mut tasks).await;
                    }
                    let b = batch.get_or_insert_with(|| Batch {
                        records: Vec::with_capacity(limits.max_records.min(512)),
                        bytes: 0,
                        data_bytes: 0,
                        opened: Instant::now(),
                    });
                    b.bytes += size;
                    b.data_bytes += r.data.len();
                    b.records.push(r);
                }
                if batch.as_ref().is_some_and(|b| b.records.len() >= limits.max_records) {
                    let b = batch.take().expect("full batch");
                    dispatch(b, &sender, &inflight, &flow_slots, &mut tasks).await;
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if let Some(b) = batch.take() {
                    dispatch(b, &sender, &inflight, &flow_slots, &mut tasks).await;
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                given_up += done.unwrap_or(0);
            }
        }
    }
    if let Some(b) = batch.take() {
        dispatch(b, &sender, &inflight, &flow_slots, &mut tasks).await;
    }
    while let Some(done) = tasks.join_next().await {
        given_up += done.unwrap_or(0);
    }
    given_up
}

async fn dispatch(
    b: Batch,
    sender: &Arc<FlowSender>,
    inflight: &InFlight,
    flow_slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<u64>,
) {
    let kib = ((b.data_bytes / 1024) as u32 + 1).min(inflight.kib_total);
    let slot: OwnedSemaphorePermit = flow_slots.clone().acquire_owned().await.expect("never closed");
    let req = inflight.requests.clone().acquire_owned().await.expect("never closed");
    let mem = inflight.kib.clone().acquire_many_owned(kib).await.expect("never closed");
    let sender = sender.clone();
    tasks.spawn(async move {
        let mut rng: rand::rngs::SmallRng = rand::make_rng();
        let n = sender.deliver(b.records, &mut rng).await;
        drop((slot, req, mem));
        n
    });
}
