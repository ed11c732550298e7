//! The in-flight budget: request slots (`maxSendingThreads`) and the record bytes the batchers
//! may hold (`maxInFlightBytes`), shared between flows so that one with a backlog cannot starve
//! the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
pub(super) struct Held {
    permits: Vec<OwnedSemaphorePermit>,
    pub(super) bytes: usize,
}

impl Held {
    pub(super) fn kib(&self) -> usize {
        self.permits.iter().map(OwnedSemaphorePermit::num_permits).sum()
    }

    /// The permits a batch took along, for its `bytes`.
    pub(super) fn of(permits: Vec<OwnedSemaphorePermit>, bytes: usize) -> Self {
        Held { permits, bytes }
    }

    /// Takes over what another holds.
    pub(super) fn absorb(&mut self, other: Held) {
        self.permits.extend(other.permits);
        self.bytes += other.bytes;
    }

    pub(super) fn add(&mut self, permit: OwnedSemaphorePermit, bytes: usize) {
        self.permits.push(permit);
        self.bytes += bytes;
    }

    /// `bytes` leave the batcher: the permits they no longer need. (A chunk larger than a part
    /// of the budget got less than its size; then the pool can be short, and gives what it has.)
    pub(super) fn release(&mut self, bytes: usize) -> Vec<OwnedSemaphorePermit> {
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
pub(super) fn kib_of(bytes: usize) -> u32 {
    bytes.div_ceil(1024).clamp(1, u32::MAX as usize) as u32
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
