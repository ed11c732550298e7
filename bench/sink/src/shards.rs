//! The stream's shards: N equal slices of the 128-bit hash key space, as Kinesis lays out a new
//! stream of N shards, and which of them a record lands in (MD5 of its partition key read as a
//! big-endian number, or its explicit hash key).

use std::sync::Mutex;
use std::time::Instant;

use md5::{Digest, Md5};

pub struct Shards {
    /// The first hash key of each shard; shard i ends where shard i + 1 starts (the last at 2^128 - 1).
    starts: Vec<u128>,
}

impl Shards {
    pub fn new(count: u32) -> Shards {
        let count = count.max(1) as u128;
        if count == 1 {
            return Shards { starts: vec![0] };
        }
        // floor(2^128 / count), without 2^128.
        let width = u128::MAX / count + u128::from(u128::MAX % count == count - 1);
        Shards { starts: (0..count).map(|i| i * width).collect() }
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// The hash key range of shard `i`, both ends included.
    pub fn range(&self, i: usize) -> (u128, u128) {
        let end = self.starts.get(i + 1).map_or(u128::MAX, |next| next - 1);
        (self.starts[i], end)
    }

    /// The shard that holds a record with this partition key, or this explicit hash key.
    pub fn shard_of(&self, key: &str, explicit: Option<u128>) -> usize {
        if self.starts.len() == 1 {
            return 0;
        }
        let hash = explicit.unwrap_or_else(|| u128::from_be_bytes(Md5::digest(key.as_bytes()).into()));
        self.starts.partition_point(|&start| start <= hash) - 1
    }
}

/// Kinesis's write limits per shard (records and bytes per second): a bucket per shard, empty
/// at first (as if other producers had just used it) and holding at most a second's worth;
/// an entry whose shard's bucket cannot pay for it is throttled, one by one, as Kinesis does.
pub struct Limits {
    records: f64,
    bytes: f64,
    /// (records, bytes) each shard may take now, and when that was computed.
    buckets: Mutex<Vec<(f64, f64, Instant)>>,
}

impl Limits {
    pub fn new(shards: usize, records: f64, bytes: f64) -> Limits {
        let now = Instant::now();
        Limits { records, bytes, buckets: Mutex::new(vec![(0.0, 0.0, now); shards]) }
    }

    /// Marks in `failed` the entries over their shard's limits; `entry(i)` is entry i's
    /// (shard, size). Entries already failed take nothing.
    pub fn charge(&self, failed: &mut [bool], entry: impl Fn(usize) -> (usize, usize)) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for b in buckets.iter_mut() {
            let dt = (now - b.2).as_secs_f64();
            *b = ((b.0 + self.records * dt).min(self.records), (b.1 + self.bytes * dt).min(self.bytes), now);
        }
        for (i, f) in failed.iter_mut().enumerate().filter(|(_, f)| !**f) {
            let (shard, size) = entry(i);
            let b = &mut buckets[shard];
            if b.0 >= 1.0 && b.1 >= size as f64 {
                b.0 -= 1.0;
                b.1 -= size as f64;
            } else {
                *f = true;
            }
        }
    }
}

/// `shardId-` and the index on 12 digits, as Kinesis names shards.
pub fn push_shard_id(out: &mut Vec<u8>, i: usize) {
    out.extend_from_slice(b"shardId-");
    push_padded(out, i, 12);
}

/// `n` in decimal, left-padded with zeros to `width` digits.
pub fn push_padded(out: &mut Vec<u8>, n: impl itoa::Integer, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    out.resize(out.len() + width.saturating_sub(digits.len()), b'0');
    out.extend_from_slice(digits.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ranges_cover_the_whole_key_space_without_overlap() {
        for n in [1, 2, 3, 4, 7, 16] {
            let s = Shards::new(n);
            assert_eq!(s.range(0).0, 0);
            assert_eq!(s.range(s.len() - 1).1, u128::MAX);
            for i in 1..s.len() {
                assert_eq!(s.range(i).0, s.range(i - 1).1 + 1);
            }
        }
        // Two shards split at 2^127, as Kinesis does.
        assert_eq!(Shards::new(2).range(1).0, 1 << 127);
    }

    #[test]
    fn a_record_goes_to_the_shard_whose_range_holds_its_hash() {
        let s = Shards::new(4);
        assert_eq!(s.shard_of("x", Some(0)), 0);
        assert_eq!(s.shard_of("x", Some(u128::MAX)), 3);
        assert_eq!(s.shard_of("x", Some(s.range(2).0)), 2);
        assert_eq!(s.shard_of("x", Some(s.range(2).0 - 1)), 1);
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661: first quarter.
        assert_eq!(s.shard_of("a", None), 0);
        // MD5("b") = 92eb5ffee6ae2fec3ad71c777531578f: third quarter.
        assert_eq!(s.shard_of("b", None), 2);
    }

    #[test]
    fn limits_throttle_what_a_shard_cannot_take_in_the_second() {
        let limits = Limits::new(2, 10.0, 1000.0);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        // Shard 0 holds a second's worth (10 records, 1,000 bytes), not more.
        let mut failed = vec![false; 12];
        limits.charge(&mut failed, |_| (0, 10));
        assert_eq!(failed.iter().filter(|f| **f).count(), 2);
        // Shard 1: the bytes run out first; an entry failed already takes nothing.
        let mut failed = vec![true, false, false];
        limits.charge(&mut failed, |_| (1, 600));
        assert_eq!(failed, [true, false, true]);
    }

    #[test]
    fn shard_ids_have_twelve_digits() {
        let mut out = Vec::new();
        push_shard_id(&mut out, 7);
        assert_eq!(out, b"shardId-000000000007");
    }
}
