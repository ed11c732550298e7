//! The shard map of a Kinesis stream (ListShards): which open shard's hash key range holds a
//! hash key. KPL aggregation groups records by it so that an aggregate never spans shards. The map
//! is cached, and refreshed when it is older than `MAX_AGE`, or at once when a put lands on
//! another shard than the map predicted (the stream was resharded).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A map older than this is refreshed before the next records are grouped.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// Open shards by hash key range, sorted by range start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardMap {
    ranges: Vec<(u128, u128, Arc<str>)>,
}

impl ShardMap {
    /// From (shard id, starting hash key, ending hash key) of open shards.
    pub fn new(ranges: Vec<(u128, u128, String)>) -> Self {
        let mut ranges: Vec<(u128, u128, Arc<str>)> = ranges.into_iter().map(|(s, e, id)| (s, e, id.into())).collect();
        ranges.sort();
        ShardMap { ranges }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The shard whose range holds `hash`.
    pub fn shard_of(&self, hash: u128) -> Option<&Arc<str>> {
        let i = self.ranges.partition_point(|(start, _, _)| *start <= hash);
        let (start, end, id) = self.ranges.get(i.checked_sub(1)?)?;
        (*start <= hash && hash <= *end).then_some(id)
    }

    /// The hash key range of `shard`.
    pub fn range_of(&self, shard: &str) -> Option<(u128, u128)> {
        self.ranges.iter().find(|(_, _, id)| &**id == shard).map(|(s, e, _)| (*s, *e))
    }
}

/// A flow's cached map, shared by its batcher (which groups by it) and its senders (which notice
/// when it is stale).
#[derive(Debug, Default)]
pub struct Shards {
    map: Mutex<Option<(Arc<ShardMap>, Instant)>>,
    stale: AtomicBool,
    /// ListShards failed at the last attempt (then records are grouped by key).
    failed_at: Mutex<Option<Instant>>,
    /// Serializes refreshes.
    refreshing: tokio::sync::Mutex<()>,
}

impl Shards {
    /// The current map, if one was fetched.
    pub fn current(&self) -> Option<Arc<ShardMap>> {
        self.map.lock().unwrap().as_ref().map(|(m, _)| m.clone())
    }

    #[cfg(test)]
    pub fn set_for_test(&self, map: ShardMap) {
        *self.map.lock().unwrap() = Some((Arc::new(map), Instant::now()));
    }

    /// A put landed on an unexpected shard: refresh before grouping more records.
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// Whether the map should be fetched again before it is used.
    pub fn needs_refresh(&self) -> bool {
        if self.stale.load(Ordering::Relaxed) {
            return true;
        }
        let failed = *self.failed_at.lock().unwrap();
        if let Some(at) = failed {
            return at.elapsed() >= MAX_AGE;
        }
        self.map.lock().unwrap().as_ref().is_none_or(|(_, at)| at.elapsed() >= MAX_AGE)
    }

    /// Fetch the map (one refresh at a time; a caller that waited for another's refresh gets
    /// its result). Failures are logged once per episode and leave the old map in place.
    pub async fn refresh(&self, client: &aws_sdk_kinesis::Client, stream: &str, label: &str) {
        let _guard = self.refreshing.lock().await;
        if !self.needs_refresh() {
            return;
        }
        self.stale.store(false, Ordering::Relaxed);
        match list_shards(client, stream).await {
            Ok(map) => {
                let old = self.current();
                if old.as_ref().is_some_and(|o| **o != map) {
                    tracing::info!("{label}: the stream's shards changed: {} open shard(s) now", map.ranges.len());
                }
                *self.map.lock().unwrap() = Some((Arc::new(map), Instant::now()));
                *self.failed_at.lock().unwrap() = None;
            }
            Err(e) => {
                let first = self.failed_at.lock().unwrap().replace(Instant::now()).is_none();
                if first {
                    tracing::warn!(
                        "{label}: ListShards failed ({e}): KPL aggregates hold records of one partition key each until it \
                         works (grant kinesis:ListShards for fuller aggregates)"
                    );
                }
            }
        }
    }
}

/// Why the shard map could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListShardsError {
    #[error("{code}: {message}")]
    Request { code: String, message: String },
    #[error("shard {0} has no valid hash key range")]
    BadRange(String),
    #[error("stream {0} has no open shard")]
    NoOpenShard(String),
}

/// The open shards of `stream`.
pub async fn list_shards(client: &aws_sdk_kinesis::Client, stream: &str) -> Result<ShardMap, ListShardsError> {
    let mut ranges = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let out = req.send().await.map_err(|e| {
            let f = super::client::request_failure(e);
            ListShardsError::Request { code: f.code, message: f.message }
        })?;
        for s in out.shards() {
            let open = s.sequence_number_range().is_none_or(|r| r.ending_sequence_number().is_none());
            if !open {
                continue;
            }
            let range = s.hash_key_range();
            let parse = |v: Option<&str>| v.and_then(|v| v.parse::<u128>().ok());
            let (Some(start), Some(end)) =
                (parse(range.map(|r| r.starting_hash_key())), parse(range.map(|r| r.ending_hash_key())))
            else {
                return Err(ListShardsError::BadRange(s.shard_id().to_owned()));
            };
            ranges.push((start, end, s.shard_id().to_owned()));
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    if ranges.is_empty() {
        return Err(ListShardsError::NoOpenShard(stream.to_owned()));
    }
    Ok(ShardMap::new(ranges))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn four() -> ShardMap {
        let q = u128::MAX / 4;
        ShardMap::new(vec![
            (3 * q + 3, u128::MAX, "s3".into()),
            (0, q, "s0".into()),
            (q + 1, 2 * q + 1, "s1".into()),
            (2 * q + 2, 3 * q + 2, "s2".into()),
        ])
    }

    #[test]
    fn hash_keys_find_their_shard() {
        let m = four();
        let q = u128::MAX / 4;
        let of = |h| m.shard_of(h).map(|s| s.to_string());
        assert_eq!(of(0).as_deref(), Some("s0"));
        assert_eq!(of(q).as_deref(), Some("s0"));
        assert_eq!(of(q + 1).as_deref(), Some("s1"));
        assert_eq!(of(2 * q + 2).as_deref(), Some("s2"));
        assert_eq!(of(u128::MAX).as_deref(), Some("s3"));
        assert_eq!(m.range_of("s1"), Some((q + 1, 2 * q + 1)));
        // A gap (a shard being split) holds nothing.
        let gap = ShardMap::new(vec![(0, 10, "a".into()), (20, 30, "b".into())]);
        assert_eq!(gap.shard_of(15), None);
        assert_eq!(gap.shard_of(31), None);
    }

    #[test]
    fn staleness() {
        let s = Shards::default();
        assert!(s.needs_refresh(), "no map yet");
        *s.map.lock().unwrap() = Some((Arc::new(four()), Instant::now()));
        assert!(!s.needs_refresh());
        s.mark_stale();
        assert!(s.needs_refresh());
    }
}
