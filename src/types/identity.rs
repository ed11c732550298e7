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
/// Bytes of a file's start kept to tell whether a short new file may be a copy in the making.
pub const START_BYTES: usize = 64;

/// Identity of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

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

/// What can be read of a file (a real one, or one of the model test).
pub trait Content {
    /// Its size now.
    fn size(&self) -> u64;
    /// Whether it holds `sample` at its start (`at == None`) or just before `at`.
    fn holds(&self, sample: Sample, at: Option<u64>) -> bool;
    /// Its first bytes, at most `n`.
    fn start(&self, n: usize) -> Vec<u8>;
}

/// A checkpoint of a file (or what a tailer has read of it): the offset, the fingerprint of the
/// file's first bytes and the marker of the bytes just before the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub offset: u64,
    pub head: Option<Sample>,
    pub marker: Option<Sample>,
}

/// Why a checkpoint is not trusted (the file is then read from its start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distrust {
    Shorter { offset: u64, size: u64 },
    Head,
    Marker { offset: u64 },
}

impl std::fmt::Display for Distrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Distrust::Shorter { offset, size } => {
                write!(f, "the checkpoint is at byte {offset} but the file holds {size}")
            }
            Distrust::Head => {
                f.write_str("the file no longer starts with the bytes it had (a new file reusing the inode)")
            }
            Distrust::Marker { offset } => write!(f, "the bytes before the checkpoint (byte {offset}) changed"),
        }
    }
}

/// Whether `file` (found under the checkpoint's device and inode) still holds what the checkpoint
/// says was delivered: it is at least as long, starts with the same bytes and holds the same
/// bytes before the offset.
pub fn checkpoint_trust(mark: &Mark, file: &impl Content) -> Result<(), Distrust> {
    let size = file.size();
    if mark.offset > size {
        return Err(Distrust::Shorter { offset: mark.offset, size });
    }
    if mark.head.is_some_and(|h| !file.holds(h, None)) {
        return Err(Distrust::Head);
    }
    if mark.marker.is_some_and(|m| !file.holds(m, Some(mark.offset))) {
        return Err(Distrust::Marker { offset: mark.offset });
    }
    Ok(())
}

/// Whether a tailed file no longer holds what was read of it: proof that it was truncated in
/// place (or rewritten). `read` must be taken before `file` is measured: a file only shrinks when
/// truncated, so a size below what was read before is proof.
pub fn rewritten(file: &impl Content, read: &Mark) -> bool {
    file.size() < read.offset || checkpoint_trust(read, file).is_err()
}

/// An open file as `Content`, measured once: its size is what `fstat` said when it was wrapped.
pub struct OpenFile<'a> {
    pub file: &'a File,
    pub size: u64,
}

impl<'a> OpenFile<'a> {
    /// `None` when the file cannot be measured.
    pub fn measure(file: &'a File) -> Option<OpenFile<'a>> {
        file.metadata().ok().map(|m| OpenFile { file, size: m.len() })
    }
}

impl Content for OpenFile<'_> {
    fn size(&self) -> u64 {
        self.size
    }
    fn holds(&self, sample: Sample, at: Option<u64>) -> bool {
        at.is_none_or(|at| at <= self.size) && still_matches(self.file, sample, at)
    }
    fn start(&self, n: usize) -> Vec<u8> {
        let n = (self.size as usize).min(n);
        read_exact_at(self.file, n, 0).unwrap_or_default()
    }
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
