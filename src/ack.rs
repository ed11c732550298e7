//! Acknowledgement tracking: the per-file watermark. A tailer registers every chunk it reads
//! (its end offset and record count) before sending it; senders acknowledge records as the
//! destination accepts them. A file's watermark moves over a chunk only when that chunk and every
//! chunk before it are fully acknowledged, so a checkpoint never passes a record still being
//! retried, however batches complete.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::checkpoint::writer::Progress;
use crate::checkpoint::{Forgotten, Watermark};
use crate::types::identity::FileId;
use crate::types::identity::Sample;
use crate::types::record::Origin;

#[derive(Debug)]
struct PendingChunk {
    end: u64,
    remaining: u64,
    /// The bytes just before `end`, for the checkpoint's offset marker.
    marker: Option<Sample>,
}

#[derive(Debug)]
struct FileProgress {
    flow: Arc<str>,
    path: PathBuf,
    /// The path it had when it was first tracked, once it has moved (rotated).
    was: Option<PathBuf>,
    id: FileId,
    watermark: u64,
    /// Marker of the bytes just before `watermark`.
    marker: Option<Sample>,
    /// Fingerprint of the file's head.
    head: Option<Sample>,
    /// Sequence number of `chunks[0]`.
    first_seq: u64,
    chunks: VecDeque<PendingChunk>,
    /// The tailer is done with the file (deleted and drained): forget it once fully acknowledged.
    retired: bool,
    /// The file left the pattern's reach and its tailer stopped: stop tracking it once fully
    /// acknowledged, keeping its checkpoint (it is found again by identity if it comes back).
    released: bool,
    /// The file was truncated and its new content is tracked under another handle: this one only
    /// waits for its records in flight, and no longer speaks for the file's checkpoint.
    superseded: bool,
}

impl FileProgress {
    fn new(flow: Arc<str>, path: PathBuf, id: FileId, watermark: u64, marker: Option<Sample>) -> FileProgress {
        FileProgress {
            flow,
            path,
            was: None,
            id,
            watermark,
            marker,
            head: None,
            first_seq: 0,
            chunks: VecDeque::new(),
            retired: false,
            released: false,
            superseded: false,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<u64, FileProgress>,
    next_file: u64,
    /// Some watermark moved, or a file was added or dropped, since the last `snapshot`.
    dirty: bool,
    /// Files retired and fully acknowledged since the last snapshot, to drop from checkpoints.
    forgotten: Forgotten,
    /// Told when `dirty` becomes true: the checkpoint writer waits on it instead of a timer.
    changed: Arc<tokio::sync::Notify>,
}

impl Inner {
    fn set_dirty(&mut self) {
        if !self.dirty {
            self.dirty = true;
            self.changed.notify_one();
        }
    }
}

/// Shared by every tailer and sender of the agent; every call holds the lock briefly.
#[derive(Debug, Clone, Default)]
pub struct AckTracker {
    inner: Arc<Mutex<Inner>>,
}

impl AckTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start tracking a file whose records begin at `offset` (`marker`: the bytes before it, when
    /// known). Returns its handle for `Origin`.
    pub fn register_file(&self, flow: Arc<str>, path: PathBuf, id: FileId, offset: u64, marker: Option<Sample>) -> u64 {
        let mut g = self.inner.lock().unwrap();
        let handle = g.next_file;
        g.next_file += 1;
        g.files.insert(handle, FileProgress::new(flow, path, id, offset, marker));
        g.set_dirty();
        handle
    }

    /// The file now lives at `path` (renamed while tailed).
    pub fn set_path(&self, file: u64, path: PathBuf) {
        let mut g = self.inner.lock().unwrap();
        if let Some(f) = g.files.get_mut(&file)
            && f.path != path
        {
            let old = std::mem::replace(&mut f.path, path);
            f.was.get_or_insert(old);
            g.set_dirty();
        }
    }

    /// The file was truncated (or rewritten) in place: its new content is tracked from 0 under a
    /// new handle, which is returned. The old handle keeps the old content's records in flight
    /// until they are acknowledged (`is_settled`), without a say in the checkpoint any more, so
    /// the new content is read at once, whatever the destination's pace.
    pub fn supersede(&self, file: u64) -> u64 {
        let mut g = self.inner.lock().unwrap();
        let Some(old) = g.files.get_mut(&file) else { return file };
        old.superseded = true;
        let (flow, path, id) = (old.flow.clone(), old.path.clone(), old.id);
        let handle = g.next_file;
        g.next_file += 1;
        g.files.insert(handle, FileProgress::new(flow, path, id, 0, None));
        g.set_dirty();
        handle
    }

    /// The file's head fingerprint (it changes while the file is shorter than the sample).
    pub fn set_head(&self, file: u64, head: Sample) {
        let mut g = self.inner.lock().unwrap();
        if let Some(f) = g.files.get_mut(&file)
            && f.head != Some(head)
        {
            f.head = Some(head);
            g.set_dirty();
        }
    }

    /// Register the next chunk of `file`, ending at `end` (`marker`: the bytes just before it) and
    /// holding `records` records. Returns the chunk's sequence number.
    pub fn add_chunk(&self, file: u64, end: u64, records: u64, marker: Option<Sample>) -> u64 {
        let mut g = self.inner.lock().unwrap();
        let g = &mut *g;
        let f = g.files.get_mut(&file).expect("chunk of an unregistered file");
        let seq = f.first_seq + f.chunks.len() as u64;
        f.chunks.push_back(PendingChunk { end, remaining: records, marker });
        if records == 0 && advance(f) {
            g.set_dirty();
        }
        seq
    }

    /// Acknowledge `count` records of one chunk.
    pub fn ack(&self, origin: Origin, count: u64) {
        self.ack_runs(&[(origin, count)]);
    }

    /// Acknowledge several runs of records at once (one lock for a whole response).
    pub fn ack_runs(&self, runs: &[(Origin, u64)]) {
        let mut g = self.inner.lock().unwrap();
        let g = &mut *g;
        for &(origin, count) in runs {
            let Some(f) = g.files.get_mut(&origin.file) else { continue };
            let Some(idx) = origin.chunk.checked_sub(f.first_seq) else { continue };
            let Some(c) = f.chunks.get_mut(idx as usize) else { continue };
            debug_assert!(c.remaining >= count, "more acknowledgements than records");
            c.remaining = c.remaining.saturating_sub(count);
            if c.remaining == 0 && idx == 0 && advance(f) {
                g.set_dirty();
            }
        }
        forget_finished(g);
    }

    /// The tailer is done with `file`; drop it from checkpoints once everything is acknowledged.
    pub fn retire(&self, file: u64) {
        let mut g = self.inner.lock().unwrap();
        if let Some(f) = g.files.get_mut(&file) {
            f.retired = true;
        }
        forget_finished(&mut g);
    }

    /// Stop tracking `file` once everything is acknowledged and its last watermark went into a
    /// snapshot; its checkpoint stays.
    pub fn release(&self, file: u64) {
        let mut g = self.inner.lock().unwrap();
        if let Some(f) = g.files.get_mut(&file) {
            f.released = true;
            g.set_dirty();
        }
    }

    /// Current watermark of `file`.
    pub fn watermark(&self, file: u64) -> Option<u64> {
        self.inner.lock().unwrap().files.get(&file).map(|f| f.watermark)
    }

    /// The watermark of `file` and the marker there, when every record read of it is acknowledged.
    pub fn settled_mark(&self, file: u64) -> Option<(u64, Option<Sample>)> {
        let g = self.inner.lock().unwrap();
        g.files.get(&file).filter(|f| f.chunks.is_empty()).map(|f| (f.watermark, f.marker))
    }

    /// True when every registered record of `file` is acknowledged.
    pub fn is_settled(&self, file: u64) -> bool {
        self.inner.lock().unwrap().files.get(&file).is_none_or(|f| f.chunks.is_empty())
    }
}

impl Progress for AckTracker {
    /// All watermarks and the files to forget, if anything changed since the last call.
    fn snapshot_if_dirty(&self) -> Option<(Vec<Watermark>, Forgotten)> {
        let mut g = self.inner.lock().unwrap();
        if !g.dirty {
            return None;
        }
        g.dirty = false;
        let marks = g
            .files
            .values()
            .filter(|f| !f.superseded)
            .map(|f| Watermark {
                flow: f.flow.clone(),
                path: f.path.clone(),
                was: f.was.clone(),
                id: f.id,
                offset: f.watermark,
                head: f.head,
                marker: f.marker,
            })
            .collect();
        g.files.retain(|_, f| !((f.released || f.superseded) && f.chunks.is_empty()));
        Some((marks, std::mem::take(&mut g.forgotten)))
    }

    /// Make the next `snapshot_if_dirty` return a snapshot (a write failed and must be retried).
    fn mark_dirty(&self) {
        self.inner.lock().unwrap().set_dirty();
    }

    fn is_dirty(&self) -> bool {
        self.inner.lock().unwrap().dirty
    }

    fn changed(&self) -> Arc<tokio::sync::Notify> {
        self.inner.lock().unwrap().changed.clone()
    }
}

impl AckTracker {
    /// Records registered but not yet acknowledged, over all files.
    pub fn pending_records(&self) -> u64 {
        let g = self.inner.lock().unwrap();
        g.files.values().flat_map(|f| f.chunks.iter()).map(|c| c.remaining).sum()
    }
}

/// Pop fully acknowledged chunks off the front; returns whether the watermark moved.
fn advance(f: &mut FileProgress) -> bool {
    let mut moved = false;
    while let Some(c) = f.chunks.front() {
        if c.remaining != 0 {
            break;
        }
        f.watermark = c.end;
        f.marker = c.marker;
        f.chunks.pop_front();
        f.first_seq += 1;
        moved = true;
    }
    moved
}

fn forget_finished(g: &mut Inner) {
    let done: Vec<u64> =
        g.files.iter().filter(|(_, f)| f.retired && !f.superseded && f.chunks.is_empty()).map(|(k, _)| *k).collect();
    for k in done {
        if let Some(f) = g.files.remove(&k) {
            g.forgotten.push((f.flow, f.id));
            g.set_dirty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tracker() -> (AckTracker, u64) {
        let t = AckTracker::new();
        let f = t.register_file("flow".into(), "/x".into(), FileId { dev: 1, ino: 2 }, 100, None);
        (t, f)
    }

    #[test]
    fn watermark_waits_for_earlier_chunks() {
        let (t, f) = tracker();
        let a = t.add_chunk(f, 200, 2, None);
        let b = t.add_chunk(f, 300, 1, None);
        t.ack(Origin { file: f, chunk: b }, 1);
        assert_eq!(t.watermark(f), Some(100));
        t.ack(Origin { file: f, chunk: a }, 1);
        assert_eq!(t.watermark(f), Some(100));
        t.ack(Origin { file: f, chunk: a }, 1);
        assert_eq!(t.watermark(f), Some(300));
        assert!(t.is_settled(f));
    }

    #[test]
    fn empty_chunks_move_the_watermark_when_in_front() {
        let (t, f) = tracker();
        t.add_chunk(f, 150, 0, None);
        assert_eq!(t.watermark(f), Some(150));
        let a = t.add_chunk(f, 200, 1, None);
        t.add_chunk(f, 250, 0, None);
        assert_eq!(t.watermark(f), Some(150));
        t.ack(Origin { file: f, chunk: a }, 1);
        assert_eq!(t.watermark(f), Some(250));
    }

    #[test]
    fn released_files_keep_their_last_watermark() {
        let (t, f) = tracker();
        let a = t.add_chunk(f, 200, 1, None);
        t.release(f);
        let (marks, _) = t.snapshot_if_dirty().unwrap();
        assert_eq!(marks[0].offset, 100);
        t.ack(Origin { file: f, chunk: a }, 1);
        let (marks, forgotten) = t.snapshot_if_dirty().unwrap();
        assert_eq!((marks.len(), marks[0].offset), (1, 200));
        assert!(forgotten.is_empty());
        assert_eq!(t.watermark(f), None);
    }

    /// A truncated file's new content is tracked at once; the old content's records settle on
    /// their own and never touch the checkpoint.
    #[test]
    fn superseded_content_settles_apart() {
        let (t, f) = tracker();
        let a = t.add_chunk(f, 200, 1, None);
        let g = t.supersede(f);
        assert_ne!(f, g);
        assert!(!t.is_settled(f));
        t.add_chunk(g, 50, 0, None);
        let (marks, _) = t.snapshot_if_dirty().unwrap();
        assert_eq!(marks.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![50]);
        t.ack(Origin { file: f, chunk: a }, 1);
        assert!(t.is_settled(f));
        t.retire(g);
        let (marks, forgotten) = t.snapshot_if_dirty().unwrap();
        assert!(marks.is_empty() && forgotten.len() == 1, "{marks:?} {forgotten:?}");
        assert_eq!(t.watermark(f), None);
    }

    #[test]
    fn retired_files_are_forgotten_once_settled() {
        let (t, f) = tracker();
        let a = t.add_chunk(f, 200, 1, None);
        t.retire(f);
        assert!(t.snapshot_if_dirty().unwrap().1.is_empty());
        t.ack(Origin { file: f, chunk: a }, 1);
        let (marks, forgotten) = t.snapshot_if_dirty().unwrap();
        assert!(marks.is_empty());
        assert_eq!(forgotten.len(), 1);
    }

    proptest! {
        /// Whatever order records are acknowledged in, the watermark is exactly the end of the
        /// longest fully acknowledged prefix of chunks: it never passes an unacknowledged record.
        #[test]
        fn watermark_never_passes_an_unacknowledged_record(
            sizes in proptest::collection::vec(0u64..5, 1..30),
            order_seed in any::<u64>(),
        ) {
            let (t, f) = tracker();
            let mut records = Vec::new(); // (chunk seq, chunk index)
            let mut ends = Vec::new();
            let mut end = 100;
            for (i, &n) in sizes.iter().enumerate() {
                end += 10;
                let seq = t.add_chunk(f, end, n, None);
                ends.push(end);
                for _ in 0..n { records.push((seq, i)); }
            }
            // Deterministic shuffle.
            let mut s = order_seed | 1;
            for i in (1..records.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                records.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut acked = vec![0u64; sizes.len()];
            for &(seq, idx) in &records {
                t.ack(Origin { file: f, chunk: seq }, 1);
                acked[idx] += 1;
                let prefix = sizes.iter().zip(&acked).take_while(|(n, a)| *n == *a).count();
                let expected = if prefix == 0 { 100 } else { ends[prefix - 1] };
                prop_assert_eq!(t.watermark(f), Some(expected));
            }
            prop_assert_eq!(t.watermark(f), Some(*ends.last().unwrap()));
        }
    }
}
