//! Order per key (`ordering: PER_KEY`). Kinesis keeps the order in which a shard *accepts*
//! records; the agent sends several requests at once and retries failed entries later, so to keep
//! each key's order it must never let a record be accepted while an earlier record of its key is
//! still unaccepted. Within one request that cannot be promised either: a partial failure may
//! reject an entry and accept a later one. So the gate lets at most one entry per *lane* be in
//! flight (in the open batch, being sent or being retried), and queues the later entries of that
//! lane, in order, until the batch holding it is done.
//!
//! A lane is a hash of the partition key and explicit hash key of a plain record, so one key is
//! one lane (two keys sharing a lane only wait for each other: a collision costs speed, never
//! order). A KPL aggregate is accepted or rejected as a whole and keeps its records in order, so
//! for aggregated flows the lane is the aggregate's group: its shard, or its key without a shard
//! map. A key moves to another shard only when the shard map changes; then `barrier` holds every
//! new entry until all entries grouped by the old map are done.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::time::Duration;

use tokio::time::Instant;

use super::kpl::Entry;

/// What must not overtake itself: see the module comment.
pub type Lane = u64;

const SEED: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x6b69_6e65_7369_7321);

/// The lane of records with this partition key and explicit hash key.
pub fn key_lane(partition: &str, explicit_hash: Option<u128>) -> Lane {
    SEED.hash_one((partition, explicit_hash))
}

/// The lane of aggregates grouped for `shard` with the shard map of generation `generation`.
pub fn shard_lane(generation: u64, shard: &str) -> Lane {
    SEED.hash_one((generation, shard, "shard"))
}

/// The lane of a plain record of an ordered flow (`None`: it has no key of its own).
pub fn record_lane(r: &crate::types::record::Record) -> Option<Lane> {
    r.key.as_ref().map(|k| key_lane(&k.partition, k.explicit_hash))
}

struct Waiting {
    lane: Lane,
    entry: Entry,
    since: Instant,
}

/// What the gate held, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeldStats {
    /// User records that had to wait for an earlier record of their key.
    pub records: u64,
    /// How long the released ones waited, in total.
    pub waited: Duration,
}

/// The lanes in flight and the entries waiting for them.
#[derive(Default)]
pub struct Gate {
    /// A lane present here is busy; its queue holds the entries waiting for it, in order.
    lanes: foldhash::HashMap<Lane, VecDeque<Waiting>>,
    /// Entries that arrived after a change of the shard map, waiting for every lane to be done.
    barrier: Option<VecDeque<Waiting>>,
    /// User record bytes waiting.
    held_bytes: usize,
    held_entries: usize,
    stats: HeldStats,
}

impl Gate {
    /// `entry` of `lane` arrives: returned if it may go into a batch now (its lane is then busy),
    /// kept if it must wait.
    pub fn admit(&mut self, lane: Lane, entry: Entry) -> Option<Entry> {
        if let Some(queue) = &mut self.barrier {
            Self::hold(&mut self.held_bytes, &mut self.held_entries, &mut self.stats, queue, lane, entry);
            return None;
        }
        match self.lanes.entry(lane) {
            std::collections::hash_map::Entry::Occupied(mut q) => {
                Self::hold(&mut self.held_bytes, &mut self.held_entries, &mut self.stats, q.get_mut(), lane, entry);
                None
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(VecDeque::new());
                Some(entry)
            }
        }
    }

    fn hold(
        bytes: &mut usize,
        entries: &mut usize,
        stats: &mut HeldStats,
        queue: &mut VecDeque<Waiting>,
        lane: Lane,
        entry: Entry,
    ) {
        *bytes += entry.user_bytes() as usize;
        *entries += 1;
        stats.records += entry.user_records();
        queue.push_back(Waiting { lane, entry, since: Instant::now() });
    }

    /// The shard map changed: entries that arrive from now on wait until every busy lane is done.
    pub fn barrier(&mut self) {
        if self.barrier.is_none() && !self.lanes.is_empty() {
            self.barrier = Some(VecDeque::new());
        }
    }

    /// The batch holding `lane`'s entry is done (accepted, or given up): the next entry waiting
    /// for the lane, if any, goes to `out` with its lane (which stays busy); otherwise the lane is
    /// free. Once no lane is busy, the entries behind a barrier are admitted in order.
    pub fn release(&mut self, lane: Lane, out: &mut Vec<(Lane, Entry)>) {
        let Some(queue) = self.lanes.get_mut(&lane) else { return };
        match queue.pop_front() {
            Some(w) => {
                self.held_bytes -= w.entry.user_bytes() as usize;
                self.held_entries -= 1;
                self.stats.waited += w.since.elapsed();
                out.push((w.lane, w.entry));
            }
            None => {
                self.lanes.remove(&lane);
            }
        }
        if self.lanes.is_empty()
            && let Some(queue) = self.barrier.take()
        {
            for w in queue {
                self.held_bytes -= w.entry.user_bytes() as usize;
                self.held_entries -= 1;
                self.stats.waited += w.since.elapsed();
                let (lane, n) = (w.lane, w.entry.user_records());
                match self.admit(lane, w.entry) {
                    Some(e) => out.push((lane, e)),
                    // It waits once more, for its lane: counted once.
                    None => self.stats.records -= n,
                }
            }
        }
    }

    /// Whether entries are waiting: the flow's keys, not the batch size, bound the batches now,
    /// so a batch is sent as soon as it holds anything.
    pub fn is_holding(&self) -> bool {
        self.held_entries > 0
    }

    /// Entries waiting.
    pub fn held_entries(&self) -> usize {
        self.held_entries
    }

    /// User record bytes waiting (they keep their share of the in-flight budget).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// What was held since the last call.
    pub fn take_stats(&mut self) -> HeldStats {
        std::mem::take(&mut self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::key::RecordKey;
    use crate::types::record::{Origin, Record};
    use proptest::prelude::*;

    fn rec(key: &str, n: u64) -> Entry {
        Entry::Plain(Record {
            data: bytes::Bytes::from(format!("{key}:{n}\n")),
            origin: Origin { file: 0, chunk: n },
            key: Some(Box::new(RecordKey { partition: key.into(), explicit_hash: None })),
        })
    }

    fn seq(e: &Entry) -> u64 {
        match e {
            Entry::Plain(r) => r.origin.chunk,
            Entry::Aggregate(_) => unreachable!(),
        }
    }

    #[test]
    fn one_entry_per_key_in_flight() {
        let mut g = Gate::default();
        let (a, b) = (key_lane("a", None), key_lane("b", None));
        assert!(g.admit(a, rec("a", 0)).is_some());
        assert!(g.admit(b, rec("b", 1)).is_some());
        assert!(g.admit(a, rec("a", 2)).is_none());
        assert!(g.admit(a, rec("a", 3)).is_none());
        assert!(g.is_holding());
        let mut out = Vec::new();
        g.release(a, &mut out);
        assert_eq!(out.iter().map(|(_, e)| seq(e)).collect::<Vec<_>>(), [2]);
        out.clear();
        g.release(a, &mut out);
        assert_eq!(out.iter().map(|(_, e)| seq(e)).collect::<Vec<_>>(), [3]);
        out.clear();
        g.release(a, &mut out);
        g.release(b, &mut out);
        assert!(out.is_empty() && !g.is_holding() && g.lanes.is_empty());
        assert_eq!(g.take_stats().records, 2);
    }

    #[test]
    fn a_barrier_waits_for_every_busy_lane() {
        let mut g = Gate::default();
        let (a, b) = (shard_lane(1, "s0"), shard_lane(1, "s1"));
        assert!(g.admit(a, rec("x", 0)).is_some());
        assert!(g.admit(b, rec("y", 1)).is_some());
        g.barrier();
        let c = shard_lane(2, "s0");
        assert!(g.admit(c, rec("x", 2)).is_none(), "a new lane waits behind the barrier");
        let mut out = Vec::new();
        g.release(a, &mut out);
        assert!(out.is_empty(), "s1 of the old map is still in flight");
        g.release(b, &mut out);
        assert_eq!(out.iter().map(|(l, e)| (*l, seq(e))).collect::<Vec<_>>(), [(c, 2)]);
        assert!(!g.is_holding());
        // Without busy lanes a barrier is not needed.
        g.release(c, &mut out);
        g.barrier();
        assert!(g.admit(a, rec("x", 3)).is_some());
    }

    proptest! {
        /// Random arrivals and completions of batches: every entry is admitted exactly once, a
        /// key never has two entries in flight, and each key's entries leave in arrival order.
        #[test]
        fn keys_leave_in_order_one_at_a_time(ops in proptest::collection::vec((0u8..3, 0u8..6), 1..300)) {
            let mut g = Gate::default();
            let mut in_flight: Vec<(Lane, String, u64)> = Vec::new();
            let mut next = 0u64;
            let mut sent: Vec<(String, u64)> = Vec::new();
            let mut out = Vec::new();
            let admitted = |lane: Lane, e: Entry, in_flight: &mut Vec<(Lane, String, u64)>, sent: &mut Vec<(String, u64)>| {
                let Entry::Plain(r) = &e else { unreachable!() };
                let key = r.key.as_ref().unwrap().partition.to_string();
                assert!(!in_flight.iter().any(|(_, k, _)| *k == key), "two entries of {key} in flight");
                in_flight.push((lane, key.clone(), seq(&e)));
                sent.push((key, seq(&e)));
            };
            for (op, k) in ops {
                match op {
                    0 | 1 => {
                        let key = format!("k{k}");
                        let lane = key_lane(&key, None);
                        if let Some(e) = g.admit(lane, rec(&key, next)) {
                            admitted(lane, e, &mut in_flight, &mut sent);
                        }
                        next += 1;
                    }
                    _ if !in_flight.is_empty() => {
                        let (lane, _, _) = in_flight.remove(k as usize % in_flight.len());
                        g.release(lane, &mut out);
                        for (l, e) in out.drain(..) {
                            admitted(l, e, &mut in_flight, &mut sent);
                        }
                    }
                    _ => {}
                }
            }
            // Finish everything.
            while let Some((lane, _, _)) = in_flight.pop() {
                g.release(lane, &mut out);
                for (l, e) in out.drain(..) {
                    admitted(l, e, &mut in_flight, &mut sent);
                }
            }
            prop_assert!(!g.is_holding());
            prop_assert_eq!(g.held_bytes(), 0);
            prop_assert_eq!(sent.len() as u64, next);
            for k in 0..6 {
                let key = format!("k{k}");
                let order: Vec<u64> = sent.iter().filter(|(s, _)| *s == key).map(|(_, n)| *n).collect();
                prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "{key}: {order:?}");
            }
        }
    }
}
