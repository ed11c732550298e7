//! Partition keys as the destination sees them: a record's own key, the RANDOM and DETERMINISTIC
//! keys of records without one (computed when a request is built), and the hash Kinesis places
//! keys by.

use md5::{Digest, Md5};
use rand::Rng;

use crate::config::PartitionKeyOption;

/// Length of a RANDOM key: 16 hex digits (64 random bits); Kinesis hashes keys with MD5, so this
/// spreads records evenly over shards.
pub const RANDOM_KEY_LEN: usize = 16;
/// Length of a DETERMINISTIC key: hex MD5.
pub const DETERMINISTIC_KEY_LEN: usize = 32;
use crate::config::compile::MAX_KEY_CHARS;
/// Most bytes a partition key can take (256 characters of up to 4 UTF-8 bytes).
pub const MAX_KEY_BYTES: usize = 4 * MAX_KEY_CHARS;

/// Lower-case hexadecimal digits.
pub const HEX: &[u8; 16] = b"0123456789abcdef";

/// The key a derived-key record carries: its partition key and, when configured and valid, its
/// explicit hash key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    pub partition: Box<str>,
    pub explicit_hash: Option<u128>,
}

impl RecordKey {
    /// Where Kinesis places the record: its explicit hash key, or MD5 of its partition key.
    pub fn hash(&self) -> u128 {
        self.explicit_hash.unwrap_or_else(|| hash_of(&self.partition))
    }
}

/// The hash key Kinesis derives from a partition key: MD5 read as a big-endian 128-bit integer.
pub fn hash_of(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// The key length a flow's records will have when they carry none, counted in the batch byte
/// limit (derived keys count their own length).
pub fn key_len(opt: &PartitionKeyOption) -> usize {
    match opt {
        PartitionKeyOption::Random => RANDOM_KEY_LEN,
        PartitionKeyOption::Deterministic => DETERMINISTIC_KEY_LEN,
        PartitionKeyOption::Derived(_) => MAX_KEY_BYTES,
    }
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    write_hex(&mut out, bytes);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Lower-case hexadecimal of `bytes`, appended to `out`.
pub fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
    }
}

/// A random key (RANDOM).
pub fn random_key(rng: &mut impl Rng) -> String {
    hex(&rng.next_u64().to_be_bytes())
}

/// The partition key for `data` of a record that carries no key of its own.
pub fn partition_key(opt: &PartitionKeyOption, data: &[u8], rng: &mut impl Rng) -> String {
    let mut out = Vec::with_capacity(DETERMINISTIC_KEY_LEN);
    write_partition_key(&mut out, opt, data, rng);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// `partition_key`, appended to `out` (a request body: no String per record).
pub fn write_partition_key(out: &mut Vec<u8>, opt: &PartitionKeyOption, data: &[u8], rng: &mut impl Rng) {
    match opt {
        PartitionKeyOption::Random | PartitionKeyOption::Derived(_) => write_hex(out, &rng.next_u64().to_be_bytes()),
        PartitionKeyOption::Deterministic => write_hex(out, &Md5::digest(data)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_is_md5_of_the_record() {
        let mut rng = rand::rng();
        // md5("hello\n")
        assert_eq!(
            partition_key(&PartitionKeyOption::Deterministic, b"hello\n", &mut rng),
            "b1946ac92492d2347c6235b4d2611184"
        );
    }

    #[test]
    fn random_keys_are_ascii_hex_and_differ() {
        let mut rng = rand::rng();
        let a = partition_key(&PartitionKeyOption::Random, b"x", &mut rng);
        let b = partition_key(&PartitionKeyOption::Random, b"x", &mut rng);
        assert_eq!(a.len(), RANDOM_KEY_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
