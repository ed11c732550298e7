//! Recognising copies (logrotate `copytruncate` with a pattern that matches the copies): a new
//! file whose head fingerprint is that of a tailed file is a copy of it. It is read from where the
//! original had been read when the original was truncated, so the lines written between our last
//! read and the copy are sent, and nothing is sent twice.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{TailHandle, identity};
use crate::ack::FileId;

/// How long a file whose head matches a live tailed file waits for that file's truncation before
/// it is taken for a plain copy (its content is then not sent again).
pub const COPY_HOLD: Duration = Duration::from_secs(30);
/// A copy is recognised within this time after the original's truncation.
pub const COPY_WINDOW: Duration = Duration::from_secs(60);
/// Heads shorter than this are too likely to be shared by unrelated files to identify a copy.
pub const MIN_COPY_HEAD: u32 = 64;
/// A new file found shorter than a full head may be a copy still being written (`cp` creates it
/// empty, then fills it): it is decided on once it holds a full head, or has not grown for this
/// long, or at the latest `SETTLE_MAX` after its first byte. Its handle is open meanwhile.
pub const SETTLE_QUIET: Duration = Duration::from_millis(300);
pub const SETTLE_MAX: Duration = Duration::from_secs(2);

pub enum CopySource {
    /// A tailed file with the same head was truncated in place moments ago, after being read up
    /// to this offset.
    Truncated(u64),
    /// A tailed file with the same head is live: wait for its truncation.
    Live(Arc<TailHandle>),
}

/// Whether the file `id` (`size` bytes, open as `file`) is a copy of one of `tailed`.
pub fn copy_source<'a>(
    file: &File,
    size: u64,
    id: FileId,
    tailed: impl IntoIterator<Item = &'a Arc<TailHandle>>,
) -> Option<CopySource> {
    let head = identity::head(file, size).filter(|h| h.len >= MIN_COPY_HEAD)?;
    for h in tailed.into_iter().filter(|h| h.id != id) {
        let truncated = *h.truncated.lock().unwrap();
        if let Some(t) = truncated.filter(|t| t.head == head && t.at.elapsed() < COPY_WINDOW) {
            return Some(CopySource::Truncated(t.committed));
        }
        if !h.done.load(Ordering::Relaxed) && *h.head.lock().unwrap() == Some(head) {
            return Some(CopySource::Live(h.clone()));
        }
    }
    None
}
