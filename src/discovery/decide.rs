//! The decisions about file identity that could skip bytes, as plain functions over what was
//! observed: sizes, fingerprints, markers, truncations seen, scan results and the clock. The
//! daemon and the model test (`model_tests.rs`) call the same functions.
//!
//! The rule: a decision that skips bytes needs positive proof. Short of it the bytes are read
//! (again), and at worst sent twice; they are never skipped. Equal first bytes, a failed scan, an
//! error or elapsed time prove nothing.

use std::time::{Duration, Instant};

pub use crate::tail::archive::{End as ArchiveEnd, Stat};
use crate::types::identity::{Content, Mark, START_BYTES, Sample, checkpoint_trust};

/// A new file is taken for a copy of a file seen truncated at most this long before.
pub const COPY_WINDOW: Duration = Duration::from_secs(60);
/// A new file that may be a copy of a live file (it starts with the same bytes) waits this long
/// after its first byte for that file's truncation (logrotate `copytruncate` copies, then
/// truncates) ...
pub const DECIDE: Duration = Duration::from_secs(3);
/// ... and, while it grows (a copy being written), until it has been quiet this long ...
pub const QUIET: Duration = Duration::from_secs(1);
/// ... but never longer than this after its first byte. It is then read from its start.
pub const DECIDE_MAX: Duration = Duration::from_secs(10);
/// A tailed file counts as moved out of the pattern's reach only when this many clean scans in a
/// row did not find it (a scan with an error, or one racing a rename, proves nothing).
pub const ABSENT_SCANS: u32 = 2;

/// A file a new file may be a copy of.
#[derive(Debug, Clone)]
pub enum Original {
    /// Tailed, not seen truncated. `start`: its first bytes (up to `START_BYTES`); `head` its head
    /// fingerprint.
    Live { start: Vec<u8>, head: Option<Sample> },
    /// Seen truncated or rewritten at `at`. `start` and `head`: the first bytes and fingerprint of
    /// the content it had (`start` unknown when found truncated at a restart). `settled`: the
    /// offset up to which every record of that content was acknowledged, and the marker there;
    /// `None` while some are still in flight.
    Truncated { at: Instant, start: Option<Vec<u8>>, head: Sample, settled: Option<(u64, Option<Sample>)> },
}

/// When a new, undecided file got its first byte and last grew.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub first_byte: Option<Instant>,
    pub last_growth: Instant,
}

impl Seen {
    pub fn new(now: Instant, size: u64) -> Seen {
        Seen { first_byte: (size > 0).then_some(now), last_growth: now }
    }

    /// Note the file's size at `now` (it had `before` bytes).
    pub fn observe(&mut self, now: Instant, before: u64, size: u64) {
        if size != before {
            self.last_growth = now;
        }
        if size > 0 && self.first_byte.is_none() {
            self.first_byte = Some(now);
        }
    }

    /// Whether a file that may be a copy of a live one may still wait for its truncation.
    fn patient(&self, now: Instant) -> bool {
        match self.first_byte {
            None => true, // Empty: nothing to send yet.
            Some(first) => {
                let growing = (self.last_growth + QUIET).min(first + DECIDE_MAX);
                now < (first + DECIDE).max(growing)
            }
        }
    }
}

/// What to do with a new file that has no checkpoint of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not shown to be a copy: read it from its start.
    Distinct,
    /// A copy of `originals[original]` holding its content up to `offset`, all of which was
    /// acknowledged: read it from there.
    Copy { original: usize, offset: u64 },
    /// Not decided yet: keep it open, read nothing, ask again later.
    Wait,
}

/// Whether the new file `file` is a copy of one of `originals`. It is one only when that original
/// was seen truncated within `COPY_WINDOW` and `file` holds what the original held up to the
/// offset it resumes from (the head fingerprint, and the marker before the offset when it lies
/// past the head). A file that starts like a live original waits (`Seen::patient`) for that
/// original's truncation, then is read from its start. `may_wait`: false for `--once`.
pub fn copy_verdict(now: Instant, file: &impl Content, seen: &Seen, originals: &[Original], may_wait: bool) -> Verdict {
    let size = file.size();
    let start = file.start(START_BYTES);
    // Whether `file` starts with the bytes the original started with (as far as both are known).
    let same_start = |theirs: &Option<Vec<u8>>| theirs.as_ref().is_none_or(|t| same_start(&start, t));
    let mut maybe = false;
    let mut settling = false;
    for (i, o) in originals.iter().enumerate() {
        match o {
            Original::Truncated { at, start: theirs, head, settled }
                if now.saturating_duration_since(*at) <= COPY_WINDOW =>
            {
                if size < u64::from(head.len) {
                    // Perhaps a copy still being written.
                    maybe |= same_start(theirs);
                    continue;
                }
                if !file.holds(*head, None) {
                    continue;
                }
                let Some((offset, marker)) = *settled else {
                    // A copy; where it resumes waits until what was read of the original is
                    // acknowledged.
                    settling = true;
                    continue;
                };
                if size < offset {
                    maybe = true; // Still being written.
                    continue;
                }
                let proven = offset <= u64::from(head.len) || marker.is_some_and(|m| file.holds(m, Some(offset)));
                if proven {
                    return Verdict::Copy { original: i, offset };
                }
            }
            Original::Truncated { .. } => {}
            // Nothing was read of it: a copy of it would be read from its start anyway.
            Original::Live { start: theirs, .. } if theirs.is_empty() => {}
            Original::Live { start: theirs, head } => {
                let head_agrees = head.is_none_or(|h| size < u64::from(h.len) || file.holds(h, None));
                maybe |= head_agrees && same_start(&Some(theirs.clone()));
            }
        }
    }
    if may_wait && (settling || (maybe && seen.patient(now))) { Verdict::Wait } else { Verdict::Distinct }
}

/// Whether two files' first bytes agree as far as both are known (the shorter is a prefix of the
/// longer).
pub fn same_start(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Whether a tailed file still counts as matched after a scan. `found`: the scan found it;
/// `clean`: the scan had no error; `absent`: clean scans in a row that missed it (updated).
pub fn still_matched(found: bool, clean: bool, absent: &mut u32) -> bool {
    if found {
        *absent = 0;
        return true;
    }
    if !clean {
        return true; // A scan error proves nothing about the file.
    }
    *absent += 1;
    *absent < ABSENT_SCANS
}

pub use crate::checkpoint::expired;

/// An archive is read once its size and modification time have stayed the same this long at
/// least (the daemon waits `rotateWaitMillis`, and never less than this; `--once` does not wait).
pub const ARCHIVE_SETTLE_MIN: Duration = Duration::from_secs(1);

/// How long an archive must stay unchanged before the daemon reads it.
pub fn archive_settle(rotate_wait: Duration) -> Duration {
    rotate_wait.max(ARCHIVE_SETTLE_MIN)
}

/// Where an archive stands between scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchivePhase {
    /// Not read yet: it has had its `stat` since `since`.
    Settling { since: Instant },
    /// Its tailer reads it.
    Reading,
    /// Read to its end while it had its `stat` (or proven so by its checkpoint, or recorded as
    /// done by `initialPosition`): not read again while it keeps it.
    Done,
    /// Settled, then failed to decode (corrupt or truncated; said once): read again only when
    /// its `stat` changes.
    Failed,
}

/// What discovery knows of one archive.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveTrack {
    pub stat: Stat,
    pub phase: ArchivePhase,
}

impl ArchiveTrack {
    /// An archive first seen at `now`.
    pub fn new(now: Instant, stat: Stat) -> ArchiveTrack {
        ArchiveTrack { stat, phase: ArchivePhase::Settling { since: now } }
    }

    /// A scan saw the archive with `stat` at `now`. Returns whether it is ready to be read: it
    /// has kept its size and time for `settle` (a half-written archive, whose size still changes,
    /// is never read, so never taken for a truncated one). One done or failed is ready again
    /// only after it changed and settled again.
    pub fn scan(&mut self, now: Instant, stat: Stat, settle: Duration) -> bool {
        match self.phase {
            ArchivePhase::Reading => false,
            ArchivePhase::Done | ArchivePhase::Failed if stat == self.stat => false,
            ArchivePhase::Settling { since } if stat == self.stat => now.saturating_duration_since(since) >= settle,
            _ => {
                *self = ArchiveTrack::new(now, stat);
                settle.is_zero()
            }
        }
    }

    /// Its tailer ended at `now`. One that changed while read settles again (and is read on
    /// from its checkpoint).
    pub fn ended(&mut self, now: Instant, end: ArchiveEnd) {
        self.phase = match end {
            ArchiveEnd::Complete => ArchivePhase::Done,
            ArchiveEnd::Damaged => ArchivePhase::Failed,
            ArchiveEnd::Changed => ArchivePhase::Settling { since: now },
        };
    }

    /// When it will be ready if it stays unchanged (for the next scan's timing).
    pub fn ready_at(&self, settle: Duration) -> Option<Instant> {
        match self.phase {
            ArchivePhase::Settling { since } => Some(since + settle),
            _ => None,
        }
    }
}

/// Where reading an archive starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveStart {
    /// Its checkpoint is sealed and the archive holds exactly the bytes sealed (the same size,
    /// first bytes and last bytes, under the same device and inode): every byte of it was
    /// delivered. Nothing is read.
    Finished,
    /// Present at the first start of a daemon flow with `initialPosition` END_OF_FILE, without a
    /// checkpoint: existing content, recorded as done (sealed) without being read.
    Skip,
    /// Decode it, skipping the first `offset` decompressed bytes (acknowledged before).
    /// `distrust`: a checkpoint that could not be trusted, why (it is read from its start, and
    /// what it held counts as possible duplicates).
    Read { offset: u64, distrust: Option<ArchiveDistrust> },
}

/// Why an archive's checkpoint is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveDistrust {
    /// Sealed, but the archive's bytes are no longer those sealed (it changed after it was read
    /// to its end, or another archive reuses the inode).
    Changed,
    /// Not sealed, and the archive does not start with the bytes it had (or the checkpoint has
    /// no fingerprint to prove it).
    Head,
}

impl std::fmt::Display for ArchiveDistrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArchiveDistrust::Changed => {
                "it was read to its end, but its bytes changed since (or another archive reuses the inode)"
            }
            ArchiveDistrust::Head => "it no longer starts with the bytes it had (another archive reusing the inode)",
        })
    }
}

/// Where reading an archive starts, given its checkpoint (`None`: it has none) and what the file
/// holds now. An archive's checkpoint is either in progress, the decompressed offset acknowledged
/// and no marker (the bytes before a decompressed offset are not the file's), or sealed once read
/// to its end: its compressed size and the marker of its last bytes, as a plain file fully
/// delivered. Skipping bytes needs proof: the same first bytes to resume (decoding then shows the
/// archive holds at least that much, see `Archive::open`), the exact sealed bytes to skip it all.
/// `initial_skip`: the first start of a daemon flow with END_OF_FILE.
pub fn archive_start(checkpoint: Option<&Mark>, file: &impl Content, initial_skip: bool) -> ArchiveStart {
    let Some(mark) = checkpoint else {
        return if initial_skip { ArchiveStart::Skip } else { ArchiveStart::Read { offset: 0, distrust: None } };
    };
    if mark.marker.is_some() {
        let same = mark.head.is_some() && file.size() == mark.offset && checkpoint_trust(mark, file).is_ok();
        return if same {
            ArchiveStart::Finished
        } else {
            ArchiveStart::Read { offset: 0, distrust: Some(ArchiveDistrust::Changed) }
        };
    }
    let head = Mark { offset: 0, head: mark.head, marker: None };
    if mark.head.is_some() && checkpoint_trust(&head, file).is_ok() {
        ArchiveStart::Read { offset: mark.offset, distrust: None }
    } else {
        ArchiveStart::Read { offset: 0, distrust: Some(ArchiveDistrust::Head) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::identity::{Distrust, Mark, checkpoint_trust, rewritten};

    /// A file in memory.
    pub struct Mem(pub Vec<u8>);

    impl Content for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn holds(&self, s: Sample, at: Option<u64>) -> bool {
            let end = match at {
                None => u64::from(s.len),
                Some(at) => at,
            };
            let Some(start) = end.checked_sub(u64::from(s.len)) else { return false };
            end <= self.size() && Sample::of(&self.0[start as usize..end as usize]) == s
        }
        fn start(&self, n: usize) -> Vec<u8> {
            self.0[..n.min(self.0.len())].to_vec()
        }
    }

    fn head(b: &[u8]) -> Sample {
        Sample::of(&b[..b.len().min(1024)])
    }

    fn lines(from: u32, to: u32) -> Vec<u8> {
        (from..to).flat_map(|i| format!("line {i:08}\n").into_bytes()).collect()
    }

    #[test]
    fn a_live_original_with_the_same_first_bytes_proves_nothing() {
        let t0 = Instant::now();
        let header = b"id,name,price,quantity,customer,region,created,updated,status,comment\n".to_vec();
        let mut a = header.clone();
        a.extend(lines(0, 100));
        let mut b = header.clone();
        b.extend(lines(100, 102));
        let live = vec![Original::Live { start: a[..START_BYTES].to_vec(), head: Some(head(&a)) }];
        let seen = Seen::new(t0, b.len() as u64);
        // Same first bytes: it waits a little for a truncation that could make it a copy ...
        assert_eq!(copy_verdict(t0, &Mem(b.clone()), &seen, &live, true), Verdict::Wait);
        // ... and none came: read from the start.
        assert_eq!(copy_verdict(t0 + DECIDE, &Mem(b.clone()), &seen, &live, true), Verdict::Distinct);
        // --once never waits.
        assert_eq!(copy_verdict(t0, &Mem(b), &seen, &live, false), Verdict::Distinct);
        // Long enough to compare whole heads, and they differ: no copy, no waiting.
        let mut long = header.clone();
        long.extend(lines(100, 200));
        assert_eq!(copy_verdict(t0, &Mem(long), &seen, &live, true), Verdict::Distinct);
        // A live file nothing was read of makes no file wait.
        let empty = vec![Original::Live { start: Vec::new(), head: None }];
        assert_eq!(copy_verdict(t0, &Mem(header), &seen, &empty, true), Verdict::Distinct);
    }

    #[test]
    fn a_copy_of_a_truncated_file_resumes_where_it_was_acknowledged() {
        let t0 = Instant::now();
        let content = lines(0, 1000);
        let offset = 5_000u64;
        let marker = Sample::of(&content[offset as usize - 64..offset as usize]);
        let truncated = |settled| {
            vec![Original::Truncated {
                at: t0,
                start: Some(content[..START_BYTES].to_vec()),
                head: head(&content),
                settled,
            }]
        };
        let seen = Seen::new(t0, content.len() as u64);
        let copy = Mem(content.clone());
        assert_eq!(
            copy_verdict(t0, &copy, &seen, &truncated(Some((offset, Some(marker)))), true),
            Verdict::Copy { original: 0, offset }
        );
        // Records of the original still in flight: wait, however long.
        assert_eq!(copy_verdict(t0 + DECIDE_MAX, &copy, &seen, &truncated(None), true), Verdict::Wait);
        // A file with the same head but other bytes before the offset is no copy.
        let mut other = content.clone();
        other[offset as usize - 10] = b'X';
        assert_eq!(
            copy_verdict(t0, &Mem(other), &seen, &truncated(Some((offset, Some(marker)))), true),
            Verdict::Distinct
        );
        // Without a marker, only an offset inside the head is proven.
        assert_eq!(copy_verdict(t0, &copy, &seen, &truncated(Some((offset, None))), true), Verdict::Distinct);
        assert_eq!(
            copy_verdict(t0, &copy, &seen, &truncated(Some((1000, None))), true),
            Verdict::Copy { original: 0, offset: 1000 }
        );
        // Too long after the truncation.
        assert_eq!(
            copy_verdict(
                t0 + COPY_WINDOW + Duration::from_secs(1),
                &copy,
                &seen,
                &truncated(Some((offset, Some(marker)))),
                true
            ),
            Verdict::Distinct
        );
        // A copy still being written waits while it grows, then gives up.
        let partial = Mem(content[..4000].to_vec());
        let s = Seen::new(t0, 4000);
        assert_eq!(copy_verdict(t0, &partial, &s, &truncated(Some((offset, Some(marker)))), true), Verdict::Wait);
        assert_eq!(
            copy_verdict(t0 + DECIDE, &partial, &s, &truncated(Some((offset, Some(marker)))), true),
            Verdict::Distinct
        );
    }

    #[test]
    fn an_empty_file_waits_and_a_growing_one_waits_longer() {
        let t0 = Instant::now();
        let mut s = Seen::new(t0, 0);
        assert!(s.patient(t0 + Duration::from_secs(3600)));
        s.observe(t0 + Duration::from_secs(10), 0, 5);
        assert!(s.patient(t0 + Duration::from_secs(12)));
        assert!(!s.patient(t0 + Duration::from_secs(13)));
        let mut g = Seen::new(t0, 5);
        for i in 1..20 {
            g.observe(t0 + Duration::from_secs(i), 5 * i, 5 * (i + 1));
        }
        assert!(!g.patient(t0 + DECIDE_MAX));
    }

    #[test]
    fn checkpoints_and_rewrites() {
        let content = lines(0, 200);
        let file = Mem(content.clone());
        let at = 1500u64;
        let mark = Mark {
            offset: at,
            head: Some(head(&content)),
            marker: Some(Sample::of(&content[at as usize - 64..at as usize])),
        };
        assert_eq!(checkpoint_trust(&mark, &file), Ok(()));
        assert!(!rewritten(&file, &mark));
        assert_eq!(
            checkpoint_trust(&mark, &Mem(content[..1000].to_vec())),
            Err(Distrust::Shorter { offset: at, size: 1000 })
        );
        let mut changed = content.clone();
        changed[3] = b'!';
        assert_eq!(checkpoint_trust(&mark, &Mem(changed)), Err(Distrust::Head));
        let mut changed = content.clone();
        changed[at as usize - 1] = b'!';
        assert!(rewritten(&Mem(changed), &mark));
    }

    #[test]
    fn an_archive_is_ready_once_unchanged_for_the_settle_time_and_then_only_when_it_changes() {
        let t0 = Instant::now();
        let s = |t: u64| t0 + Duration::from_millis(t);
        let settle = archive_settle(Duration::from_millis(5000));
        let at = |size, mtime| Stat { size, mtime };
        let mut a = ArchiveTrack::new(s(0), at(10, 1));
        assert!(!a.scan(s(4000), at(10, 1), settle));
        // Written again 4 s in: it settles from then on.
        assert!(!a.scan(s(4500), at(20, 2), settle));
        assert!(!a.scan(s(9000), at(20, 2), settle));
        assert_eq!(a.ready_at(settle), Some(s(9500)));
        assert!(a.scan(s(9500), at(20, 2), settle));
        a.phase = ArchivePhase::Reading;
        assert!(!a.scan(s(20_000), at(30, 3), settle), "a change while read is the tailer's to see");
        a.ended(s(20_000), ArchiveEnd::Complete);
        assert!(!a.scan(s(60_000), at(20, 2), settle), "done: never read again while unchanged");
        assert_eq!(a.ready_at(settle), None);
        // It changed after it was read: read again once it settles.
        assert!(!a.scan(s(61_000), at(40, 4), settle));
        assert!(a.scan(s(66_000), at(40, 4), settle));
        a.phase = ArchivePhase::Reading;
        a.ended(s(66_000), ArchiveEnd::Damaged);
        assert!(!a.scan(s(600_000), at(40, 4), settle), "a damaged archive is not retried in a loop");
        assert!(!a.scan(s(600_000), at(40, 5), settle), "... only once it changed and settled");
        assert!(a.scan(s(605_000), at(40, 5), settle));
        a.phase = ArchivePhase::Reading;
        a.ended(s(606_000), ArchiveEnd::Changed);
        assert!(!a.scan(s(607_000), at(40, 5), settle));
        assert!(a.scan(s(611_000), at(40, 5), settle));
        // --once does not wait; the daemon waits 1 s at least.
        assert!(ArchiveTrack::new(s(0), at(1, 1)).scan(s(0), at(1, 1), Duration::ZERO));
        assert_eq!(archive_settle(Duration::ZERO), ARCHIVE_SETTLE_MIN);
    }

    #[test]
    fn an_archive_is_skipped_only_on_proof_and_resumed_only_on_its_first_bytes() {
        let archive: Vec<u8> = (0..3000u32).flat_map(|i| (i * 7919).to_le_bytes()).collect();
        let file = Mem(archive.clone());
        let size = archive.len() as u64;
        let head = Some(head(&archive));
        let seal = |b: &[u8]| Mark {
            offset: b.len() as u64,
            head: Some(Sample::of(&b[..b.len().min(1024)])),
            marker: Some(Sample::of(&b[b.len() - 64..])),
        };
        let read = |offset, distrust| ArchiveStart::Read { offset, distrust };
        // No checkpoint: read from the start, or recorded as done at a first start with END_OF_FILE.
        assert_eq!(archive_start(None, &file, false), read(0, None));
        assert_eq!(archive_start(None, &file, true), ArchiveStart::Skip);
        // Sealed, and it holds exactly those bytes: done.
        assert_eq!(archive_start(Some(&seal(&archive)), &file, true), ArchiveStart::Finished);
        // Sealed, but it grew (another member appended), or its last bytes changed: from the start.
        let changed = read(0, Some(ArchiveDistrust::Changed));
        assert_eq!(archive_start(Some(&seal(&archive[..8000])), &file, false), changed);
        let mut other = archive.clone();
        other[size as usize - 3] ^= 1;
        assert_eq!(archive_start(Some(&seal(&archive)), &Mem(other), false), changed);
        assert_eq!(archive_start(Some(&Mark { head: None, ..seal(&archive) }), &file, false), changed);
        // In progress: resumed at its decompressed offset (past its compressed size) on the proof
        // of its first bytes; without them (another archive, or no fingerprint) from the start.
        let progress = Mark { offset: 50_000, head, marker: None };
        assert_eq!(archive_start(Some(&progress), &file, false), read(50_000, None));
        let mut other = archive.clone();
        other[5] ^= 1;
        let head_differs = read(0, Some(ArchiveDistrust::Head));
        assert_eq!(archive_start(Some(&progress), &Mem(other), false), head_differs);
        assert_eq!(archive_start(Some(&Mark { head: None, ..progress }), &file, false), head_differs);
    }

    #[test]
    fn only_clean_scans_unmatch_and_only_running_time_expires() {
        let mut absent = 0;
        assert!(still_matched(false, false, &mut absent));
        assert!(still_matched(false, false, &mut absent));
        assert!(still_matched(false, true, &mut absent));
        assert!(still_matched(true, true, &mut absent));
        assert!(still_matched(false, true, &mut absent));
        assert!(!still_matched(false, true, &mut absent));
        let day = Duration::from_secs(86_400);
        assert!(!expired(day, 7 * day, 7 * day));
        assert!(expired(day, 8 * day, 7 * day));
    }
}
