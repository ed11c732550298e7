//! KPL aggregation (Kinesis flows, `kplAggregation`): many user records packed into one Kinesis
//! record in the format of the Kinesis Producer Library, which the KCL, Lambda's and AWS's
//! de-aggregators and Flink unpack transparently:
//!
//! `F3 89 9A C2` magic, a protobuf `AggregatedRecord` (partition key table, explicit hash key
//! table, records indexing into them), and the MD5 of the protobuf bytes.
//!
//! A consumer drops the user records of an aggregate whose hash key lies outside the shard the
//! aggregate landed on, so an aggregate must never span shards. `Aggregator` groups records: with
//! RANDOM keys, every record of an aggregate gets the aggregate's own random key; otherwise records
//! are grouped by the shard whose hash range holds their hash key (`shards::ShardMap`), and the
//! aggregate is sent with its first record's key (and explicit hash key), so it lands on that shard.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};
use prost::Message;

use crate::types::key::RecordKey;
use crate::types::record::{Origin, Record};

/// The first bytes of an aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Magic plus MD5 trailer.
pub const OVERHEAD: usize = MAGIC.len() + 16;

/// `AggregatedRecord` of the KPL's `messages.proto` (proto2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<UserRecord>,
}

/// `Record` of `messages.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserRecord {
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "bytes", required, tag = "3")]
    pub data: Bytes,
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// `Tag` of `messages.proto` (never written by us; here so that decoding is complete).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tag {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// Bytes of a varint.
fn varint_len(n: u64) -> usize {
    prost::encoding::encoded_len_varint(n)
}

/// Bytes of a length-delimited field of `len` bytes (tags here are all one byte).
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// What one entry of a request holds: a plain record, or an aggregate of several (boxed: a
/// batch holds 500 entries, and a plain one is less than half an aggregate's size).
#[derive(Debug, Clone)]
pub enum Entry {
    Plain(Record),
    Aggregate(Box<Aggregate>),
}

impl Entry {
    /// User records inside.
    pub fn user_records(&self) -> u64 {
        match self {
            Entry::Plain(_) => 1,
            Entry::Aggregate(a) => a.origins.len() as u64,
        }
    }

    /// User record bytes inside.
    pub fn user_bytes(&self) -> u64 {
        match self {
            Entry::Plain(r) => r.data.len() as u64,
            Entry::Aggregate(a) => a.user_bytes,
        }
    }

    /// Bytes sent: data (and the partition key, for `kinesis_size`).
    pub fn data_len(&self) -> usize {
        match self {
            Entry::Plain(r) => r.data.len(),
            Entry::Aggregate(a) => a.data.len(),
        }
    }

    /// Data plus partition key, as Kinesis counts it (`default_key`: the key length of a plain
    /// record without a key of its own).
    pub fn kinesis_size(&self, default_key: usize) -> usize {
        match self {
            Entry::Plain(r) => r.kinesis_size(default_key),
            Entry::Aggregate(a) => a.data.len() + a.key.partition.len(),
        }
    }
}

/// An encoded aggregated record ready to send.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// Magic, protobuf, MD5.
    pub data: Bytes,
    /// The Kinesis record's partition key (and explicit hash key): those of its first record.
    pub key: RecordKey,
    /// The shard it was grouped for (`None` with RANDOM keys: any shard will do).
    pub shard: Option<String>,
    /// Where each user record came from, in order, for acknowledgements.
    pub origins: Vec<Origin>,
    pub user_bytes: u64,
}

/// Records being packed into one aggregate, with the exact size it will have.
#[derive(Debug)]
pub struct Builder {
    records: Vec<Record>,
    keys: HashMap<Box<str>, u64>,
    hash_keys: HashMap<u128, u64>,
    /// Encoded size: magic + protobuf + MD5.
    size: usize,
    /// The key every record gets (RANDOM flows), instead of their own.
    shared_key: Option<Box<str>>,
    /// The shard the records were grouped for.
    shard: Option<String>,
}

impl Builder {
    /// An aggregate whose records all get `shared_key` (RANDOM), or keep their own (`None`).
    pub fn new(shared_key: Option<Box<str>>, shard: Option<String>) -> Self {
        Builder {
            records: Vec::new(),
            keys: HashMap::new(),
            hash_keys: HashMap::new(),
            size: OVERHEAD,
            shared_key,
            shard,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// The size of the Kinesis record this would make: data plus outer partition key.
    pub fn kinesis_size(&self) -> usize {
        self.size + self.outer_key_len()
    }

    fn outer_key_len(&self) -> usize {
        match (&self.shared_key, self.records.first()) {
            (Some(k), _) => k.len(),
            (None, Some(r)) => r.key.as_ref().map_or(0, |k| k.partition.len()),
            (None, None) => 0,
        }
    }

    fn key_of<'a>(&'a self, r: &'a Record) -> (&'a str, Option<u128>) {
        match (&self.shared_key, &r.key) {
            (Some(k), _) => (k, None),
            (None, Some(k)) => (&k.partition, k.explicit_hash),
            (None, None) => ("", None),
        }
    }

    /// Bytes `r` would add to the encoded aggregate.
    pub fn added_size(&self, r: &Record) -> usize {
        let (pk, ehk) = self.key_of(r);
        let mut add = 0;
        let pk_index = match self.keys.get(pk) {
            Some(&i) => i,
            None => {
                add += field_len(pk.len());
                self.keys.len() as u64
            }
        };
        let mut inner = 1 + varint_len(pk_index) + field_len(r.data.len());
        if let Some(h) = ehk {
            let index = match self.hash_keys.get(&h) {
                Some(&i) => i,
                None => {
                    add += field_len(decimal_len(h));
                    self.hash_keys.len() as u64
                }
            };
            inner += 1 + varint_len(index);
        }
        add + field_len(inner)
    }

    /// Would the Kinesis record stay within `max` bytes (data plus key) with `r` added?
    pub fn fits(&self, r: &Record, max: usize) -> bool {
        let outer = if self.records.is_empty() { self.key_of(r).0.len() } else { self.outer_key_len() };
        self.size + self.added_size(r) + outer <= max
    }

    pub fn push(&mut self, r: Record) {
        self.size += self.added_size(&r);
        let (pk, ehk) = self.key_of(&r);
        let (pk, ehk) = (Box::<str>::from(pk), ehk);
        let n = self.keys.len() as u64;
        self.keys.entry(pk).or_insert(n);
        if let Some(h) = ehk {
            let n = self.hash_keys.len() as u64;
            self.hash_keys.entry(h).or_insert(n);
        }
        self.records.push(r);
    }

    /// The entry to send: the record itself when it is alone (no envelope), else the aggregate.
    pub fn finish(self) -> Entry {
        let Builder { mut records, keys, hash_keys, size, shared_key, shard } = self;
        if records.len() == 1 {
            let mut r = records.pop().expect("one record");
            if let Some(k) = shared_key {
                r.key = Some(Box::new(RecordKey { partition: k, explicit_hash: None }));
            }
            return Entry::Plain(r);
        }
        let mut partition_key_table = vec![String::new(); keys.len()];
        for (k, i) in &keys {
            partition_key_table[*i as usize] = k.to_string();
        }
        let mut explicit_hash_key_table = vec![String::new(); hash_keys.len()];
        for (h, i) in &hash_keys {
            explicit_hash_key_table[*i as usize] = h.to_string();
        }
        let first_key = match (&shared_key, &records[0].key) {
            (Some(k), _) => RecordKey { partition: k.clone(), explicit_hash: None },
            (None, Some(k)) => (**k).clone(),
            (None, None) => RecordKey { partition: "a".into(), explicit_hash: None },
        };
        let mut user_bytes = 0u64;
        let mut origins = Vec::with_capacity(records.len());
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            user_bytes += r.data.len() as u64;
            origins.push(r.origin);
            let (pk, ehk) = match (&shared_key, &r.key) {
                (Some(k), _) => (&**k, None),
                (None, Some(k)) => (&*k.partition, k.explicit_hash),
                (None, None) => ("", None),
            };
            out.push(UserRecord {
                partition_key_index: keys[pk],
                explicit_hash_key_index: ehk.map(|h| hash_keys[&h]),
                data: r.data,
                tags: Vec::new(),
            });
        }
        let message = AggregatedRecord { partition_key_table, explicit_hash_key_table, records: out };
        let data = encode(&message);
        debug_assert_eq!(data.len(), size, "aggregate size accounting");
        Entry::Aggregate(Box::new(Aggregate { data, key: first_key, shard, origins, user_bytes }))
    }
}

/// Digits of `n` in decimal.
fn decimal_len(mut n: u128) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// Magic, protobuf, MD5 of the protobuf.
pub fn encode(message: &AggregatedRecord) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(len + OVERHEAD);
    buf.extend_from_slice(&MAGIC);
    message.encode(&mut buf).expect("capacity reserved");
    let digest = Md5::digest(&buf[MAGIC.len()..]);
    buf.extend_from_slice(&digest);
    buf.freeze()
}

/// The message inside an aggregated record, if `data` is one (magic present, MD5 right, protobuf
/// valid); `None` for a plain record.
pub fn decode(data: &[u8]) -> Option<AggregatedRecord> {
    let body = data.strip_prefix(&MAGIC)?;
    if body.len() <= 16 {
        return None;
    }
    let (proto, digest) = body.split_at(body.len() - 16);
    if Md5::digest(proto).as_slice() != digest {
        return None;
    }
    AggregatedRecord::decode(proto).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::key::hash_of;
    use proptest::prelude::*;

    fn rec(data: &[u8], key: Option<(&str, Option<u128>)>, n: u64) -> Record {
        Record {
            data: Bytes::copy_from_slice(data),
            origin: Origin { file: 1, chunk: n },
            key: key.map(|(k, h)| Box::new(RecordKey { partition: k.into(), explicit_hash: h })),
        }
    }

    #[test]
    fn round_trip_with_own_keys_and_hash_keys() {
        let mut b = Builder::new(None, Some("shardId-000000000001".into()));
        let records = [
            rec(b"one\n", Some(("alice", None)), 0),
            rec(b"two\n", Some(("bob", Some(42))), 1),
            rec(b"", Some(("alice", None)), 2),
            rec("日本\n".as_bytes(), Some(("carol", Some(u128::MAX))), 3),
            rec(b"five\n", Some(("bob", Some(42))), 4),
        ];
        for r in records.iter().cloned() {
            b.push(r);
        }
        let expected_size = b.kinesis_size();
        let Entry::Aggregate(a) = b.finish() else { panic!("an aggregate") };
        assert_eq!(a.data.len() + a.key.partition.len(), expected_size, "size accounting is exact");
        assert_eq!(&a.data[..4], &MAGIC);
        // MD5 trailer of the protobuf bytes.
        let proto = &a.data[4..a.data.len() - 16];
        assert_eq!(&a.data[a.data.len() - 16..], Md5::digest(proto).as_slice());
        let m = AggregatedRecord::decode(proto).unwrap();
        assert_eq!(m.partition_key_table, ["alice", "bob", "carol"]);
        assert_eq!(m.explicit_hash_key_table, ["42".to_string(), u128::MAX.to_string()]);
        assert_eq!(m.records.len(), 5);
        for (u, r) in m.records.iter().zip(&records) {
            let k = r.key.as_ref().unwrap();
            assert_eq!(u.data, r.data);
            assert_eq!(m.partition_key_table[u.partition_key_index as usize], &*k.partition);
            let ehk = u.explicit_hash_key_index.map(|i| m.explicit_hash_key_table[i as usize].parse::<u128>().unwrap());
            assert_eq!(ehk, k.explicit_hash);
        }
        assert_eq!(decode(&a.data), Some(m));
        assert_eq!((&*a.key.partition, a.key.explicit_hash), ("alice", None), "the first record's key");
        assert_eq!(a.origins.iter().map(|o| o.chunk).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(a.user_bytes, 4 + 4 + 7 + 5, "the third record is empty");
        assert_eq!(a.shard.as_deref(), Some("shardId-000000000001"));
    }

    #[test]
    fn random_flows_share_one_key_per_aggregate() {
        let mut b = Builder::new(Some("0123456789abcdef".into()), None);
        b.push(rec(b"a\n", None, 0));
        b.push(rec(b"b\n", None, 0));
        let Entry::Aggregate(a) = b.finish() else { panic!("an aggregate") };
        let m = decode(&a.data).unwrap();
        assert_eq!(m.partition_key_table, ["0123456789abcdef"]);
        assert!(m.explicit_hash_key_table.is_empty());
        assert!(m.records.iter().all(|r| r.partition_key_index == 0 && r.explicit_hash_key_index.is_none()));
        assert_eq!(&*a.key.partition, "0123456789abcdef");
    }

    #[test]
    fn a_single_record_is_sent_plain() {
        let mut b = Builder::new(Some("k".into()), None);
        b.push(rec(b"alone\n", None, 0));
        let Entry::Plain(r) = b.finish() else { panic!("plain") };
        assert_eq!(&r.data[..], b"alone\n");
        assert_eq!(&*r.key.unwrap().partition, "k");
        let mut b = Builder::new(None, None);
        b.push(rec(b"alone\n", Some(("mine", Some(7))), 0));
        let Entry::Plain(r) = b.finish() else { panic!("plain") };
        assert_eq!(r.key.unwrap().explicit_hash, Some(7));
    }

    #[test]
    fn plain_records_are_not_taken_for_aggregates() {
        assert_eq!(decode(b"hello world, this is a plain record\n"), None);
        let mut b = Builder::new(Some("k".into()), None);
        b.push(rec(b"a", None, 0));
        b.push(rec(b"b", None, 0));
        let Entry::Aggregate(a) = b.finish() else { panic!("an aggregate") };
        let mut bad = a.data.to_vec();
        bad[6] ^= 1;
        assert_eq!(decode(&bad), None, "an MD5 mismatch is not an aggregate");
        assert_eq!(hash_of("k"), hash_of("k"));
    }

    proptest! {
        /// Whatever the records, the size announced before encoding is the size encoded, and
        /// `fits` never lets an aggregate grow past its limit.
        #[test]
        fn size_accounting_is_exact(
            items in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..300), 0usize..6, proptest::option::of(any::<u128>())),
                1..60,
            ),
            max in 200usize..5000,
        ) {
            let keys = ["a", "bb", "ccc", "日本語", "x".repeat(200).leak(), "k"];
            let mut b = Builder::new(None, None);
            for (i, (data, k, h)) in items.iter().enumerate() {
                let r = rec(data, Some((keys[*k], *h)), i as u64);
                if !b.is_empty() && !b.fits(&r, max) {
                    break;
                }
                b.push(r);
            }
            let size = b.kinesis_size();
            let n = b.len();
            prop_assert!(n == 1 || size <= max);
            match b.finish() {
                Entry::Aggregate(a) => {
                    prop_assert_eq!(a.data.len() + a.key.partition.len(), size);
                    prop_assert_eq!(decode(&a.data).unwrap().records.len(), n);
                }
                Entry::Plain(_) => prop_assert_eq!(n, 1),
            }
        }
    }
}
