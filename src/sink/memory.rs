//! An in-memory destination for unit tests of the batcher and the sender (`SinkClient::Memory`):
//! requests take a random time (so concurrent ones finish out of order), entries fail at random
//! (throttling), whole requests fail, and answers are lost after the records were stored (the
//! outcome is unknown to the sender). It records what it accepted, in acceptance order. Driven by
//! a paused clock, a run is deterministic for its seed.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::client::PutResult;
use super::kpl::Entry;
use super::retry::{ErrorClass, Failure};

#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Fraction of entries throttled.
    pub throttle: f64,
    /// Fraction of requests failed as a whole (nothing stored).
    pub request_error: f64,
    /// Fraction of requests whose records are stored but whose answer is lost.
    pub lost_answer: f64,
    /// Most time a request takes (uniform from zero).
    pub latency: Duration,
}

/// A user record as stored: its partition key and data.
pub type Stored = (String, bytes::Bytes);

pub struct MemorySink {
    faults: Faults,
    state: Mutex<(SmallRng, Vec<Stored>)>,
}

impl MemorySink {
    pub fn new(seed: u64, faults: Faults) -> Self {
        MemorySink { faults, state: Mutex::new((SmallRng::seed_from_u64(seed), Vec::new())) }
    }

    /// Every user record accepted, in the order the destination accepted them (aggregates
    /// unpacked in order).
    pub fn accepted(&self) -> Vec<Stored> {
        self.state.lock().unwrap().1.clone()
    }

    pub async fn put(&self, entries: &[Entry]) -> Result<PutResult, Failure> {
        let f = self.faults;
        let latency = {
            let rng = &mut self.state.lock().unwrap().0;
            f.latency.mul_f64(rng.random::<f64>())
        };
        tokio::time::sleep(latency).await;
        let mut guard = self.state.lock().unwrap();
        let (rng, stored) = &mut *guard;
        if rng.random::<f64>() < f.request_error {
            return Err(failure(ErrorClass::Transient, "InternalFailure"));
        }
        let lost = rng.random::<f64>() < f.lost_answer;
        let mut failures = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if rng.random::<f64>() < f.throttle {
                failures.push((i, failure(ErrorClass::Throttled, "ProvisionedThroughputExceededException")));
                continue;
            }
            match e {
                Entry::Plain(r) => {
                    let key = r.key.as_ref().map_or_else(String::new, |k| k.partition.to_string());
                    stored.push((key, r.data.clone()));
                }
                Entry::Aggregate(a) => {
                    let m = super::kpl::decode(&a.data).expect("a valid aggregate");
                    for u in m.records {
                        let key = m.partition_key_table[u.partition_key_index as usize].clone();
                        stored.push((key, u.data));
                    }
                }
            }
        }
        if lost {
            return Err(failure(ErrorClass::Transient, "Timeout"));
        }
        Ok(PutResult { failures, shards: Vec::new() })
    }
}

fn failure(class: ErrorClass, code: &str) -> Failure {
    Failure { class, code: code.into(), message: format!("{code} (in-memory sink)") }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use proptest::prelude::*;
    use tokio::sync::mpsc;

    use super::*;
    use crate::config::{DerivedKey, KeyFallback, PartitionKeyOption};
    use crate::sink::aggregate::Aggregator;
    use crate::sink::batcher::{BatchLimits, run};
    use crate::sink::budget::InFlight;
    use crate::sink::client::SinkClient;
    use crate::sink::sender::FlowSender;
    use crate::sink::shards::{ShardMap, Shards};
    use crate::types::key::RecordKey;
    use crate::types::record::{Chunk, Origin, Record};

    struct Case {
        seed: u64,
        keys: u64,
        lines: u64,
        faults: Faults,
        ordered: bool,
        aggregate: bool,
        max_records: usize,
        max_batches: usize,
    }

    /// Ships `lines` lines keyed `k<n % keys>` through a batcher and its senders into the sink;
    /// returns what the sink accepted, as (key, line number), in acceptance order.
    fn ship(c: &Case) -> Vec<(String, u64)> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let sink = Arc::new(MemorySink::new(c.seed, c.faults));
            let key = PartitionKeyOption::Derived(DerivedKey {
                source: crate::config::compile::field_key("k"),
                fallback: KeyFallback::Random,
                explicit_hash_key_field: None,
            });
            let mut sender = FlowSender::new(
                "test".into(),
                SinkClient::Memory(sink.clone()),
                crate::ack::AckTracker::new(),
                Default::default(),
                false,
                (Duration::from_millis(10), Duration::from_millis(200)),
                Default::default(),
            );
            sender.ordered = c.ordered;
            let aggregator = c.aggregate.then(|| {
                let shards = Shards::default();
                let q = u128::MAX / 2;
                shards.set_for_test(ShardMap::new(vec![(0, q, "s0".into()), (q + 1, u128::MAX, "s1".into())]));
                Aggregator::new(2_000, key.clone(), Arc::new(shards))
            });
            let limits = BatchLimits {
                max_records: c.max_records,
                max_bytes: 5 * 1024 * 1024,
                per_record_overhead: 0,
                max_age: Duration::from_millis(50),
                max_batches: c.max_batches,
                ordered: c.ordered,
            };
            let inflight = InFlight::new(4, 1024 * 1024, 1);
            let budget = inflight.flow_budget();
            let (tx, rx) = mpsc::channel::<Chunk>(2);
            let batcher = tokio::spawn(run(rx, Arc::new(sender), limits, inflight, budget, aggregator));
            let per_chunk = 37;
            for (seq, start) in (0..c.lines).step_by(per_chunk).enumerate() {
                let records: Vec<Record> = (start..(start + per_chunk as u64).min(c.lines))
                    .map(|n| {
                        let k = format!("k{}", n % c.keys);
                        Record {
                            data: bytes::Bytes::from(format!("{n}\n")),
                            origin: Origin { file: 0, chunk: seq as u64 },
                            key: Some(Box::new(RecordKey { partition: k.into(), explicit_hash: None })),
                        }
                    })
                    .collect();
                let bytes = records.iter().map(|r| r.data.len()).sum();
                tx.send(Chunk { file: 0, seq: seq as u64, records, bytes }).await.unwrap();
            }
            drop(tx);
            let given_up = tokio::time::timeout(Duration::from_secs(24 * 3600), batcher).await.unwrap().unwrap();
            assert_eq!(given_up, 0);
            sink.accepted()
                .into_iter()
                .map(|(k, d)| (k, std::str::from_utf8(&d).unwrap().trim_end().parse().unwrap()))
                .collect()
        })
    }

    /// Every line arrived; returns the lines of a key accepted while an earlier line of that key
    /// was not accepted yet.
    fn violations(accepted: &[(String, u64)], lines: u64, keys: u64) -> Vec<String> {
        let mut seen = vec![false; lines as usize];
        let mut next: HashMap<&str, u64> = HashMap::new();
        let mut out = Vec::new();
        for (k, n) in accepted {
            let expected = next.entry(k.as_str()).or_insert(n % keys);
            seen[*n as usize] = true;
            if n > expected {
                out.push(format!("{k}: {n} before {expected}"));
            }
            while (*expected as usize) < seen.len() && seen[*expected as usize] {
                *expected += keys;
            }
        }
        let missing: Vec<u64> = (0..lines).filter(|n| !seen[*n as usize]).collect();
        assert!(missing.is_empty(), "never accepted: {missing:?}");
        out
    }

    fn faults() -> impl Strategy<Value = Faults> {
        (0.0..0.3f64, 0.0..0.2f64, 0.0..0.1f64, 1u64..40).prop_map(|(t, r, l, ms)| Faults {
            throttle: t,
            request_error: r,
            lost_answer: l,
            latency: Duration::from_millis(ms),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Ordered flows, plain or aggregated, through random throttling, failed requests, lost
        /// answers and requests finishing out of order: every line arrives, and no line of a key
        /// is accepted before an earlier line of that key.
        #[test]
        fn ordered_flows_keep_each_keys_order(
            seed in any::<u64>(),
            keys in prop_oneof![Just(1u64), 2u64..8, 50u64..500],
            lines in 50u64..600,
            faults in faults(),
            aggregate in any::<bool>(),
            max_records in prop_oneof![Just(500usize), 1usize..20],
            max_batches in 1usize..8,
        ) {
            let case = Case { seed, keys, lines, faults, ordered: true, aggregate, max_records, max_batches };
            let accepted = ship(&case);
            let v = violations(&accepted, lines, keys);
            prop_assert!(v.is_empty(), "{} violations, e.g. {:?}", v.len(), &v[..v.len().min(3)]);
        }
    }

    /// The control: the same faults reorder a flow without ordering, so the check above can fail.
    #[test]
    fn unordered_flows_do_reorder() {
        let faults =
            Faults { throttle: 0.1, request_error: 0.05, lost_answer: 0.0, latency: Duration::from_millis(20) };
        let case = Case {
            seed: 7,
            keys: 5,
            lines: 500,
            faults,
            ordered: false,
            aggregate: false,
            max_records: 10,
            max_batches: 4,
        };
        let v = violations(&ship(&case), 500, 5);
        assert!(!v.is_empty(), "no reordering without ordering: the model test would prove nothing");
    }
}
