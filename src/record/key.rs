//! Partition keys. Computed when a request is built, so records carry no key of their own:
//! RANDOM needs no stability across retries, and DETERMINISTIC is a function of the data.

use md5::{Digest, Md5};
use rand::Rng;

use crate::config::PartitionKeyOption;

/// Length of a RANDOM key: 16 hex digits (64 random bits); Kinesis hashes keys with MD5, so this
/// spreads records evenly over shards.
pub const RANDOM_KEY_LEN: usize = 16;
/// Length of a DETERMINISTIC key: hex MD5.
pub const DETERMINISTIC_KEY_LEN: usize = 32;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The key length a flow's records will have, counted in the batch byte limit.
pub fn key_len(opt: PartitionKeyOption) -> usize {
    match opt {
        PartitionKeyOption::Random => RANDOM_KEY_LEN,
        PartitionKeyOption::Deterministic => DETERMINISTIC_KEY_LEN,
    }
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// The partition key for `data`.
pub fn partition_key(opt: PartitionKeyOption, data: &[u8], rng: &mut impl Rng) -> String {
    match opt {
        PartitionKeyOption::Random => hex(&rng.next_u64().to_be_bytes()),
        PartitionKeyOption::Deterministic => hex(&Md5::digest(data)),
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
            partition_key(PartitionKeyOption::Deterministic, b"hello\n", &mut rng),
            "b1946ac92492d2347c6235b4d2611184"
        );
    }

    #[test]
    fn random_keys_are_ascii_hex_and_differ() {
        let mut rng = rand::rng();
        let a = partition_key(PartitionKeyOption::Random, b"x", &mut rng);
        let b = partition_key(PartitionKeyOption::Random, b"x", &mut rng);
        assert_eq!(a.len(), RANDOM_KEY_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
