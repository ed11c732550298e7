//! Content checks on top of (device, inode): an inode can be reused by a new file after a delete,
//! and a file can be replaced or truncated and refilled while the agent is down. A checkpoint is
//! only trusted when the file still starts with the same bytes (the head fingerprint, taken over
//! the first `HEAD_BYTES` and length-prefixed, so a short file has one too) and still holds the same
//! bytes just before the checkpointed offset (the offset marker).

use std::fs::File;
use std::os::unix::fs::FileExt;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// Bytes of a file's head that make its fingerprint.
pub const HEAD_BYTES: usize = 1024;
/// Bytes before an offset that make its marker.
pub const MARKER_BYTES: usize = 64;

/// A hash of `len` bytes of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub len: u32,
    pub hash: u64,
}

impl Sample {
    pub fn of(bytes: &[u8]) -> Sample {
        let d = Md5::new().chain_update((bytes.len() as u32).to_le_bytes()).chain_update(bytes).finalize();
        let mut h = [0u8; 8];
        h.copy_from_slice(&d[..8]);
        Sample { len: bytes.len() as u32, hash: u64::from_le_bytes(h) }
    }
}

fn read_exact_at(file: &File, len: usize, at: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => return None,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(buf)
}

/// The head fingerprint of a file of `size` bytes.
pub fn head(file: &File, size: u64) -> Option<Sample> {
    let len = (size as usize).min(HEAD_BYTES);
    read_exact_at(file, len, 0).map(|b| Sample::of(&b))
}

/// The marker of the bytes before `offset`.
pub fn marker(file: &File, offset: u64) -> Option<Sample> {
    let len = (offset as usize).min(MARKER_BYTES);
    read_exact_at(file, len, offset - len as u64).map(|b| Sample::of(&b))
}

/// Whether `file` still holds `sample` at the head (`at == None`) or just before `at`.
pub fn still_matches(file: &File, sample: Sample, at: Option<u64>) -> bool {
    let start = match at {
        None => 0,
        Some(offset) => match offset.checked_sub(u64::from(sample.len)) {
            Some(s) => s,
            None => return false,
        },
    };
    read_exact_at(file, sample.len as usize, start).is_some_and(|b| Sample::of(&b) == sample)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        let f = File::open(t.path()).unwrap();
        (t, f)
    }

    #[test]
    fn short_files_have_a_length_prefixed_fingerprint() {
        let (_t, f) = file_with(b"ab");
        let h = head(&f, 2).unwrap();
        assert_eq!(h.len, 2);
        assert!(still_matches(&f, h, None));
        let (_t2, g) = file_with(b"abc");
        // A longer file starting with the same bytes matches the short fingerprint...
        assert!(still_matches(&g, h, None));
        // ...but has its own, different one.
        assert_ne!(head(&g, 3).unwrap(), h);
        assert_ne!(Sample::of(b""), Sample::of(b"\0"));
    }

    proptest! {
        /// A file that only grew keeps matching its fingerprint and its marker; a file whose
        /// bytes changed anywhere in the sampled ranges does not.
        #[test]
        fn growth_keeps_matching_and_rewrites_do_not(
            content in proptest::collection::vec(any::<u8>(), 1..3000),
            extra in proptest::collection::vec(any::<u8>(), 0..500),
            offset_frac in 0.0f64..=1.0,
            flip in any::<usize>(),
        ) {
            let offset = ((content.len() as f64) * offset_frac) as u64;
            let (_t, f) = file_with(&content);
            let h = head(&f, content.len() as u64).unwrap();
            let m = marker(&f, offset).unwrap();
            let mut grown = content.clone();
            grown.extend_from_slice(&extra);
            let (_t2, g) = file_with(&grown);
            prop_assert!(still_matches(&g, h, None));
            prop_assert!(still_matches(&g, m, Some(offset)));
            // Flip one byte inside the head sample: the fingerprint no longer matches.
            let i = flip % (h.len as usize);
            let mut changed = grown.clone();
            changed[i] ^= 0xff;
            let (_t3, c) = file_with(&changed);
            prop_assert!(!still_matches(&c, h, None));
            // Flip one byte inside the marker range: the marker no longer matches.
            if m.len > 0 {
                let j = offset as usize - 1 - (flip % m.len as usize);
                let mut changed = grown.clone();
                changed[j] ^= 0xff;
                let (_t4, c) = file_with(&changed);
                prop_assert!(!still_matches(&c, m, Some(offset)));
            }
            // A file shorter than the offset cannot hold the marker.
            if offset > 0 {
                let (_t5, e) = file_with(&content[..offset as usize - 1]);
                prop_assert!(!still_matches(&e, m, Some(offset)));
            }
        }
    }
}
