//! Grouping for KPL aggregation (`kplAggregation`): records become aggregates that never span
//! shards. RANDOM flows: one open aggregate whose records all get its own random key (any shard
//! will do). Other flows (DETERMINISTIC, derived keys): one open aggregate per shard, by the shard
//! map's hash key ranges; without a map (ListShards refused), one per partition key and explicit
//! hash key, which is always safe.

use std::collections::HashMap;
use std::sync::Arc;

use rand::rngs::SmallRng;
use tokio::time::Instant;

use super::kpl::{Builder, Entry};
use super::order::{Lane, key_lane, shard_lane};
use super::shards::{ShardMap, Shards};
use crate::config::PartitionKeyOption;
use crate::types::key::{RecordKey, hash_of, partition_key, random_key};
use crate::types::record::Record;

/// Most aggregates open at once (grouping by key without a shard map can make many): beyond it,
/// all are closed.
const MAX_OPEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Group {
    /// RANDOM keys: one group.
    Any,
    Shard(Arc<str>),
    Key(Box<str>, Option<u128>),
}

pub struct Aggregator {
    /// Largest aggregate, data plus partition key.
    max_bytes: usize,
    key: PartitionKeyOption,
    pub shards: Arc<Shards>,
    open: HashMap<Group, Builder>,
    /// When the oldest record still in an open aggregate arrived.
    oldest: Option<Instant>,
    rng: SmallRng,
    /// The shard map records were last grouped by, and how many times it changed: aggregates
    /// carry the generation they were grouped in (ordered flows wait for the older ones).
    map: Option<Arc<ShardMap>>,
    generation: u64,
}

impl Aggregator {
    pub fn new(max_bytes: usize, key: PartitionKeyOption, shards: Arc<Shards>) -> Self {
        Aggregator {
            max_bytes,
            key,
            shards,
            open: HashMap::new(),
            oldest: None,
            rng: rand::make_rng(),
            map: None,
            generation: 0,
        }
    }

    /// Whether records are grouped by shard (and so need the shard map).
    pub fn by_shard(&self) -> bool {
        !matches!(self.key, PartitionKeyOption::Random)
    }

    pub fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    /// Add `r`; aggregates it closes go to `out`.
    pub fn add(&mut self, mut r: Record, out: &mut Vec<Closed>) {
        let group = if self.by_shard() {
            if r.key.is_none() {
                // DETERMINISTIC: the key the record would be sent with.
                let k = partition_key(&self.key, &r.data, &mut self.rng);
                r.key = Some(Box::new(RecordKey { partition: k.into(), explicit_hash: None }));
            }
            let k = r.key.as_ref().expect("set above");
            let hash = k.explicit_hash.unwrap_or_else(|| hash_of(&k.partition));
            let map = self.shards.current();
            if !same_map(&map, &self.map) {
                // Aggregates open under the old map close first: a key may now be grouped
                // under another shard.
                self.flush(out);
                self.map = map.clone();
                self.generation += 1;
            }
            let shard = map.and_then(|m| m.shard_of(hash).cloned());
            match shard {
                Some(s) => Group::Shard(s),
                None => Group::Key(k.partition.clone(), k.explicit_hash),
            }
        } else {
            Group::Any
        };
        if self.open.len() >= MAX_OPEN && !self.open.contains_key(&group) {
            self.flush(out);
        }
        let max = self.max_bytes;
        let generation = self.generation;
        if let Some(b) = self.open.get(&group)
            && !b.fits(&r, max)
        {
            out.push(finish(&group, self.open.remove(&group).expect("present"), generation));
        }
        let rng = &mut self.rng;
        let b = self.open.entry(group.clone()).or_insert_with(|| match &group {
            Group::Any => Builder::new(Some(random_key(rng).into()), None),
            Group::Shard(s) => Builder::new(None, Some(s.to_string())),
            Group::Key(..) => Builder::new(None, None),
        });
        b.push(r);
        self.oldest.get_or_insert_with(Instant::now);
        if b.kinesis_size() >= max {
            out.push(finish(&group, self.open.remove(&group).expect("present"), generation));
        }
        if self.open.is_empty() {
            self.oldest = None;
        }
    }

    /// Close every open aggregate.
    pub fn flush(&mut self, out: &mut Vec<Closed>) {
        let generation = self.generation;
        out.extend(self.open.drain().map(|(g, b)| finish(&g, b, generation)));
        self.oldest = None;
    }
}

/// An aggregate closed (or a lone record: an aggregate of one is sent plain), with what ordered
/// flows need to keep its keys' order.
pub struct Closed {
    pub entry: Entry,
    /// One aggregate per lane in flight: its group's.
    pub lane: Lane,
    /// The shard map generation it was grouped in (a newer one means the map changed).
    pub generation: u64,
}

fn finish(group: &Group, b: Builder, generation: u64) -> Closed {
    let lane = match group {
        Group::Any => 0,
        Group::Shard(s) => shard_lane(generation, s),
        Group::Key(k, h) => key_lane(k, *h),
    };
    Closed { entry: b.finish(), lane, generation }
}

/// Whether two fetches of the shard map hold the same shards (a refresh makes a new map even
/// when nothing changed).
fn same_map(a: &Option<Arc<ShardMap>>, b: &Option<Arc<ShardMap>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DerivedKey, KeyFallback};
    use crate::sink::kpl::decode;
    use crate::types::record::Origin;

    fn rec(data: &str, key: Option<&str>) -> Record {
        Record {
            data: bytes::Bytes::copy_from_slice(data.as_bytes()),
            origin: Origin { file: 0, chunk: 0 },
            key: key.map(|k| Box::new(RecordKey { partition: k.into(), explicit_hash: None })),
        }
    }

    fn derived() -> PartitionKeyOption {
        PartitionKeyOption::Derived(DerivedKey {
            source: crate::config::compile::field_key("k"),
            fallback: KeyFallback::Random,
            explicit_hash_key_field: None,
        })
    }

    fn four_shards() -> Arc<Shards> {
        let q = u128::MAX / 4;
        let map = ShardMap::new(vec![
            (0, q, "s0".into()),
            (q + 1, 2 * q + 1, "s1".into()),
            (2 * q + 2, 3 * q + 2, "s2".into()),
            (3 * q + 3, u128::MAX, "s3".into()),
        ]);
        let s = Shards::default();
        s.set_for_test(map);
        Arc::new(s)
    }

    /// Every user record of every aggregate hashes into the shard the aggregate is sent to.
    #[tokio::test]
    async fn aggregates_never_span_shards() {
        let shards = four_shards();
        let map = shards.current().unwrap();
        let mut agg = Aggregator::new(2_000, derived(), shards);
        let mut out = Vec::new();
        for i in 0..2_000 {
            agg.add(rec(&format!("line {i}\n"), Some(&format!("user-{}", i % 37))), &mut out);
        }
        agg.flush(&mut out);
        let mut users = 0;
        let mut aggregates = 0;
        for e in out.iter().map(|c| &c.entry) {
            match e {
                Entry::Aggregate(a) => {
                    aggregates += 1;
                    assert!(a.data.len() + a.key.partition.len() <= 2_000);
                    let landing = map.shard_of(a.key.hash()).unwrap();
                    assert_eq!(a.shard.as_deref(), Some(&**landing));
                    let m = decode(&a.data).unwrap();
                    for u in &m.records {
                        let k = &m.partition_key_table[u.partition_key_index as usize];
                        assert_eq!(map.shard_of(hash_of(k)), Some(landing), "record of key {k} in another shard");
                        users += 1;
                    }
                }
                Entry::Plain(_) => users += 1,
            }
        }
        assert_eq!(users, 2_000);
        // 37 keys over 4 shards: aggregates hold several keys each, far fewer than the records.
        assert!(aggregates < 200, "{aggregates} aggregates");
    }

    /// DETERMINISTIC flows: each record's key is the MD5 of its data, and aggregates are grouped
    /// by the shard of that key.
    #[tokio::test]
    async fn deterministic_keys_are_grouped_by_shard() {
        let shards = four_shards();
        let map = shards.current().unwrap();
        let mut agg = Aggregator::new(3_000, PartitionKeyOption::Deterministic, shards);
        let mut out = Vec::new();
        for i in 0..1_000 {
            agg.add(rec(&format!("line {i}\n"), None), &mut out);
        }
        agg.flush(&mut out);
        let mut users = 0;
        for e in out.iter().map(|c| &c.entry) {
            let Entry::Aggregate(a) = e else { panic!("aggregate") };
            let landing = map.shard_of(a.key.hash()).unwrap();
            let m = decode(&a.data).unwrap();
            for u in &m.records {
                let k = &m.partition_key_table[u.partition_key_index as usize];
                assert_eq!(k, &crate::types::key::hex(&<md5::Md5 as md5::Digest>::digest(&u.data)));
                assert_eq!(map.shard_of(hash_of(k)), Some(landing));
                users += 1;
            }
        }
        assert_eq!(users, 1_000);
    }

    #[tokio::test]
    async fn without_a_map_records_are_grouped_by_key() {
        let mut agg = Aggregator::new(10_000, derived(), Arc::new(Shards::default()));
        let mut out = Vec::new();
        for i in 0..100 {
            agg.add(rec(&format!("{i}\n"), Some(if i % 2 == 0 { "even" } else { "odd" })), &mut out);
        }
        agg.flush(&mut out);
        assert_eq!(out.len(), 2);
        for e in out.iter().map(|c| &c.entry) {
            let Entry::Aggregate(a) = e else { panic!("aggregate") };
            assert_eq!(decode(&a.data).unwrap().partition_key_table.len(), 1);
        }
    }

    #[tokio::test]
    async fn random_flows_get_one_key_per_aggregate() {
        let mut agg = Aggregator::new(1_000, PartitionKeyOption::Random, Arc::new(Shards::default()));
        let mut out = Vec::new();
        for i in 0..500 {
            agg.add(rec(&format!("record number {i}\n"), None), &mut out);
        }
        assert!(agg.oldest().is_some());
        agg.flush(&mut out);
        assert!(agg.oldest().is_none());
        let mut keys = std::collections::HashSet::new();
        let mut n = 0;
        for e in out.iter().map(|c| &c.entry) {
            let Entry::Aggregate(a) = e else { panic!("aggregate") };
            let m = decode(&a.data).unwrap();
            assert_eq!(m.partition_key_table, [a.key.partition.to_string()]);
            assert!(keys.insert(a.key.partition.clone()), "a new key per aggregate");
            assert!(a.data.len() + a.key.partition.len() <= 1_000);
            n += m.records.len();
        }
        assert_eq!(n, 500);
    }
}
