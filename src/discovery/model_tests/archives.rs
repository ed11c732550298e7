//! The model test's archives: compressed files the pattern names, beside the plain files of
//! `model_tests.rs`, in the same world (clock, crashes, failed scans, a slow destination). An
//! archive here is a list of members, each a header, lines and a trailer, so that what is written
//! of it so far decodes like a real half-written archive: complete lines, then "truncated"; a
//! corrupt archive has a line of garbage. The agent follows the daemon's rules (`archives.rs`:
//! first sight, settling, reading through the decoder, sealing, waiting for the previous read's
//! records) and calls the same decisions (`decide::ArchiveTrack`, `decide::archive_start`,
//! `decide::still_matched`).
//!
//! Checked (see `check`): every line that decodes from an archive present at the end is delivered
//! (unless `initialPosition` END_OF_FILE skipped it at a first start and it did not change since);
//! every line read is delivered unless a crash dropped it; no line is delivered twice but after a
//! crash, a copy, or a change of an archive after its read began; no archive is read before it
//! has kept its size and time for the settle time; a damaged one is reported only when its read
//! began and ended on the same bytes, and once per agent run and content.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::World;
use super::fs::{Line, Mem, head_of};
use crate::discovery::decide::{self, ArchiveEnd, ArchivePhase, ArchiveStart, ArchiveTrack, Stat};
use crate::types::identity::{MARKER_BYTES, Mark, Sample};

/// Archive names; only `x.gz` is outside the pattern.
pub const ANAMES: [&str; 4] = ["app.log.1.gz", "app.log.2.gz", "app.log.3.gz", "x.gz"];
const HEADER: usize = 8;
const LINE: usize = 16;
const TRAILER: &[u8] = b"\0END";
const GARBAGE: &[u8; LINE] = b"!!!!!!!!!!!!!!!\n";
/// Lines an archive's tailer decodes per step.
const READ_LINES: usize = 8;
/// `rotateWaitMillis` of the model's flow.
const ROTATE_WAIT: Duration = Duration::from_millis(5000);

fn matched(name: &str) -> bool {
    !name.starts_with('x')
}

#[derive(Clone, Debug)]
pub enum ArcOp {
    /// A new archive of this many lines at a name (replacing what was there): written whole
    /// (moved in), or created empty to be written piece by piece; corrupt: a line of garbage.
    New {
        name: usize,
        lines: usize,
        whole: bool,
        corrupt: bool,
    },
    /// Write this many more bytes of it.
    Write(usize, usize),
    /// Append another member of this many lines (written piece by piece).
    Grow(usize, usize),
    Rename(usize, usize),
    Copy(usize, usize),
    Delete(usize),
}

pub fn arc_op() -> impl Strategy<Value = ArcOp> {
    let n = || 0..ANAMES.len();
    prop_oneof![
        3 => (n(), 0usize..60, any::<bool>(), proptest::bool::weighted(0.15))
            .prop_map(|(name, lines, whole, corrupt)| ArcOp::New { name, lines, whole, corrupt }),
        6 => (n(), 1usize..400).prop_map(|(a, b)| ArcOp::Write(a, b)),
        1 => (n(), 1usize..30).prop_map(|(a, k)| ArcOp::Grow(a, k)),
        2 => (n(), n()).prop_map(|(a, b)| ArcOp::Rename(a, b)),
        1 => (n(), n()).prop_map(|(a, b)| ArcOp::Copy(a, b)),
        1 => n().prop_map(ArcOp::Delete),
    ]
}

/// One archive inode.
#[derive(Clone)]
struct Archive {
    members: Vec<Vec<Line>>,
    salt: u64,
    /// (member, line) of the garbage line.
    corrupt: Option<(usize, usize)>,
    /// Bytes of `encoding()` written so far.
    written: usize,
    mtime: Instant,
}

/// What decodes from an archive's bytes: its lines (as (member, line) indices) and whether the
/// bytes end cleanly (`Err`: truncated or garbage at that byte).
struct Decoded {
    lines: Vec<(usize, usize)>,
    end: Result<(), usize>,
}

impl Archive {
    fn encoding(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (m, lines) in self.members.iter().enumerate() {
            out.extend(format!("ARC{:05x}", (self.salt + m as u64) & 0xfffff).into_bytes());
            for (i, l) in lines.iter().enumerate() {
                if self.corrupt == Some((m, i)) {
                    out.extend_from_slice(GARBAGE);
                } else {
                    out.extend(format!("{:015x}\n", l.text).into_bytes());
                }
            }
            out.extend_from_slice(TRAILER);
        }
        out
    }

    fn bytes(&self) -> Vec<u8> {
        self.encoding()[..self.written].to_vec()
    }

    fn full(&self) -> usize {
        self.encoding().len()
    }

    fn decode(&self) -> Decoded {
        let b = self.bytes();
        let mut lines = Vec::new();
        let mut pos = 0;
        let mut member = 0;
        loop {
            if pos == b.len() {
                return Decoded { lines, end: Ok(()) };
            }
            if b.len() - pos < HEADER || &b[pos..pos + 3] != b"ARC" {
                return Decoded { lines, end: Err(pos) };
            }
            pos += HEADER;
            let mut i = 0;
            loop {
                if b[pos..].starts_with(TRAILER) {
                    pos += TRAILER.len();
                    break;
                }
                if b.len() - pos < LINE || &b[pos..pos + LINE] == GARBAGE {
                    return Decoded { lines, end: Err(pos) };
                }
                lines.push((member, i));
                pos += LINE;
                i += 1;
            }
            member += 1;
        }
    }

    fn uid(&self, (m, i): (usize, usize)) -> u64 {
        self.members[m][i].uid
    }
}

#[derive(Clone)]
struct AChunk {
    end: u64,
    marker: Option<Sample>,
    uids: Vec<u64>,
    acked: bool,
}

/// An archive's tailer and its ack tracker handle (kept, released, until its records are
/// acknowledged and its last watermark checkpointed).
struct Reader {
    ino: u64,
    opened: Stat,
    head: Sample,
    /// Decoded lines read so far (the next one to read).
    next: usize,
    chunks: VecDeque<AChunk>,
    watermark: (u64, Option<Sample>),
    dirty: bool,
    end: Option<ArchiveEnd>,
    released: bool,
}

struct Track {
    track: ArchiveTrack,
    reading: bool,
    absent: u32,
}

#[derive(Default)]
struct Agent {
    tracks: HashMap<u64, Track>,
    readers: Vec<Reader>,
    /// Damaged reports of this run, by inode and size.
    reports: HashSet<(u64, u64, i128)>,
}

#[derive(Default)]
pub struct Arcs {
    inodes: HashMap<u64, Archive>,
    names: HashMap<&'static str, u64>,
    agent: Agent,
    store: HashMap<u64, Mark>,
    pub start_of_file: bool,
    /// Archives recorded as done by END_OF_FILE at a first start, with their stat then.
    skipped: HashMap<u64, Stat>,
    /// Archives sealed (read to their end, or skipped), and those that changed after that: read
    /// again from their start, their lines may be sent again.
    sealed: HashSet<u64>,
    changed_after_seal: HashSet<u64>,
    /// Every line put in a chunk, and those a crash dropped in flight.
    read: HashSet<u64>,
    dropped: HashSet<u64>,
    pub violations: Vec<String>,
    t0: Option<Instant>,
}

impl Arcs {
    pub fn has_checkpoints(&self) -> bool {
        !self.store.is_empty()
    }

    /// Every line of every archive.
    pub fn uids(&self) -> HashSet<u64> {
        self.inodes.values().flat_map(|a| a.members.iter().flatten().map(|l| l.uid)).collect()
    }
}

impl World {
    fn stat(&self, ino: u64) -> Stat {
        let a = &self.arcs.inodes[&ino];
        let t0 = self.arcs.t0.expect("set");
        Stat { size: a.written as u64, mtime: a.mtime.duration_since(t0).as_nanos() as i128 }
    }

    pub(super) fn apply_arc(&mut self, op: &ArcOp) {
        let now = self.now;
        self.arcs.t0.get_or_insert(now);
        let arcs = &mut self.arcs;
        match *op {
            ArcOp::New { name, lines, whole, corrupt } => {
                let members = vec![(0..lines).map(|_| self.fs.fresh(None)).collect::<Vec<_>>()];
                let ino = self.fs.next_ino + 1;
                self.fs.next_ino = ino;
                let corrupt = (corrupt && lines > 0).then_some((0, lines / 2));
                let mut a = Archive { members, salt: ino * 7, corrupt, written: 0, mtime: now };
                if whole {
                    a.written = a.full();
                }
                arcs.inodes.insert(ino, a);
                arcs.names.insert(ANAMES[name], ino);
            }
            ArcOp::Write(name, n) => {
                if let Some(&ino) = arcs.names.get(ANAMES[name]) {
                    let a = arcs.inodes.get_mut(&ino).unwrap();
                    let to = (a.written + n).min(a.full());
                    if to > a.written {
                        a.written = to;
                        a.mtime = now;
                        if arcs.sealed.contains(&ino) {
                            arcs.changed_after_seal.insert(ino);
                        }
                    }
                }
            }
            ArcOp::Grow(name, k) => {
                if let Some(&ino) = arcs.names.get(ANAMES[name]) {
                    let lines = (0..k).map(|_| self.fs.fresh(None)).collect();
                    arcs.inodes.get_mut(&ino).unwrap().members.push(lines);
                }
            }
            ArcOp::Rename(a, b) => {
                if a != b
                    && let Some(ino) = arcs.names.remove(ANAMES[a])
                {
                    arcs.names.insert(ANAMES[b], ino);
                }
            }
            ArcOp::Copy(a, b) => {
                if a == b {
                    return;
                }
                let Some(&src) = arcs.names.get(ANAMES[a]) else { return };
                let mut copy = arcs.inodes[&src].clone();
                copy.mtime = now;
                let ino = self.fs.next_ino + 1;
                self.fs.next_ino = ino;
                for m in &copy.members {
                    self.may_repeat.extend(m.iter().map(|l| l.uid));
                }
                arcs.inodes.insert(ino, copy);
                arcs.names.insert(ANAMES[b], ino);
            }
            ArcOp::Delete(a) => {
                arcs.names.remove(ANAMES[a]);
            }
        }
    }

    /// The agent is killed: its readers and what they had in flight are gone.
    pub(super) fn arc_crash(&mut self) {
        for r in &self.arcs.agent.readers {
            for c in &r.chunks {
                self.may_repeat.extend(&c.uids);
                self.arcs.dropped.extend(c.uids.iter().filter(|_| !c.acked));
            }
            // What the restarted agent reads again: from the checkpoint on.
            let a = &self.arcs.inodes[&r.ino];
            let from = match self.arcs.store.get(&r.ino) {
                Some(m) if m.marker.is_some() => usize::MAX,
                Some(m) => m.offset as usize / LINE,
                None => 0,
            };
            let d = a.decode();
            self.may_repeat.extend(d.lines.iter().skip(from).map(|&p| a.uid(p)));
        }
        self.arcs.agent = Agent::default();
    }

    /// One turn of the agent over archives (after the plain files'): acknowledgements, the scan
    /// and its decisions, reads, a checkpoint.
    pub(super) fn arc_step(&mut self, clean: bool, first: bool, had_checkpoints: bool) {
        let now = self.now;
        self.arcs.t0.get_or_insert(now);
        self.arc_acks();
        let settle = decide::archive_settle(ROTATE_WAIT);
        // Readers that ended.
        for r in self.arcs.agent.readers.iter_mut().filter(|r| !r.released && r.end.is_some()) {
            r.released = true;
            let t = self.arcs.agent.tracks.get_mut(&r.ino).expect("tracked");
            t.track.ended(now, r.end.expect("ended"));
            t.reading = false;
        }
        let mut found: Vec<u64> = Vec::new();
        for (name, &ino) in &self.arcs.names {
            if matched(name) && (clean || ino % 2 == 0) && !found.contains(&ino) {
                found.push(ino);
            }
        }
        found.sort();
        let busy: HashSet<u64> = self.arcs.agent.readers.iter().map(|r| r.ino).collect();
        self.arcs.agent.tracks.retain(|ino, t| {
            decide::still_matched(found.contains(ino), clean, &mut t.absent) || t.reading || busy.contains(ino)
        });
        let initial_skip = first && !had_checkpoints && !self.arcs.start_of_file;
        for &ino in &found {
            let stat = self.stat(ino);
            let bytes = Mem(self.arcs.inodes[&ino].bytes());
            if !self.arcs.agent.tracks.contains_key(&ino) {
                let mut t = Track { track: ArchiveTrack::new(now, stat), reading: false, absent: 0 };
                let checkpoint = self.arcs.store.get(&ino).copied();
                if initial_skip || checkpoint.is_some_and(|c| c.marker.is_some()) {
                    match decide::archive_start(checkpoint.as_ref(), &bytes, initial_skip) {
                        ArchiveStart::Finished => t.track.phase = ArchivePhase::Done,
                        ArchiveStart::Skip => {
                            t.track.phase = ArchivePhase::Done;
                            self.arcs.skipped.insert(ino, stat);
                            self.arcs.sealed.insert(ino);
                            let size = stat.size;
                            self.arcs.agent.readers.push(Reader {
                                ino,
                                opened: stat,
                                head: head_of(&bytes.0),
                                next: 0,
                                chunks: VecDeque::new(),
                                watermark: (size, Some(seal_marker(&bytes.0))),
                                dirty: true,
                                end: Some(ArchiveEnd::Complete),
                                released: true,
                            });
                        }
                        ArchiveStart::Read { .. } => {}
                    }
                }
                self.arcs.agent.tracks.insert(ino, t);
            }
            let t = self.arcs.agent.tracks.get_mut(&ino).unwrap();
            if !t.track.scan(now, stat, settle) || self.arcs.agent.readers.iter().any(|r| r.ino == ino) {
                continue;
            }
            // Read only what has kept its size and time for the settle time.
            let a = &self.arcs.inodes[&ino];
            if now.duration_since(a.mtime) < settle {
                self.arcs.violations.push(format!("ino {ino} read {:?} after its last write", now - a.mtime));
            }
            let checkpoint = self.arcs.store.get(&ino).copied();
            let offset = match decide::archive_start(checkpoint.as_ref(), &bytes, false) {
                ArchiveStart::Finished | ArchiveStart::Skip => {
                    t.track.phase = ArchivePhase::Done;
                    continue;
                }
                ArchiveStart::Read { offset, .. } => offset,
            };
            t.track.phase = ArchivePhase::Reading;
            t.reading = true;
            let mut r = Reader {
                ino,
                opened: stat,
                head: head_of(&bytes.0),
                next: offset as usize / LINE,
                chunks: VecDeque::new(),
                watermark: (offset, None),
                dirty: true,
                end: None,
                released: false,
            };
            // `Archive::open` skips what was delivered: an archive that decodes to less is
            // damaged before it (an error) or shorter (read from its start).
            let d = a.decode();
            if d.lines.len() < r.next {
                match d.end {
                    Err(_) => r.end = Some(ArchiveEnd::Damaged),
                    Ok(()) => (r.next, r.watermark) = (0, (0, None)),
                }
            }
            self.arcs.agent.readers.push(r);
        }
        self.arc_read();
        if self.chance(60) {
            self.arc_write_checkpoints();
        }
    }

    /// Each running reader decodes up to `READ_LINES` lines of what its archive holds now, unless
    /// held back (a slow destination, or its turn not come).
    fn arc_read(&mut self) {
        let t0 = self.arcs.t0.expect("set");
        let turns: Vec<bool> = (0..self.arcs.agent.readers.len()).map(|_| !self.slow && self.chance(60)).collect();
        for (r, _) in self.arcs.agent.readers.iter_mut().zip(turns).filter(|(r, turn)| r.end.is_none() && *turn) {
            let a = &self.arcs.inodes[&r.ino];
            let d = a.decode();
            let to = d.lines.len().min(r.next + READ_LINES);
            if to > r.next {
                let uids: Vec<u64> = d.lines[r.next..to].iter().map(|&p| a.uid(p)).collect();
                self.arcs.read.extend(&uids);
                r.next = to;
                r.chunks.push_back(AChunk { end: (to * LINE) as u64, marker: None, uids, acked: false });
                continue;
            }
            let now = Stat { size: a.written as u64, mtime: a.mtime.duration_since(t0).as_nanos() as i128 };
            let unchanged = now == r.opened;
            r.end = Some(match (d.end, unchanged) {
                (_, false) => ArchiveEnd::Changed,
                (Ok(()), true) => {
                    self.arcs.sealed.insert(r.ino);
                    let bytes = a.bytes();
                    r.chunks.push_back(AChunk {
                        end: bytes.len() as u64,
                        marker: Some(seal_marker(&bytes)),
                        uids: Vec::new(),
                        acked: true,
                    });
                    ArchiveEnd::Complete
                }
                (Err(_), true) => {
                    if !self.arcs.agent.reports.insert((r.ino, now.size, now.mtime)) {
                        self.arcs.violations.push(format!("ino {} reported damaged twice unchanged", r.ino));
                    }
                    ArchiveEnd::Damaged
                }
            });
        }
    }

    fn arc_acks(&mut self) {
        let slow = self.slow;
        let n = self.arcs.agent.readers.len();
        for i in 0..n {
            for j in 0..self.arcs.agent.readers[i].chunks.len() {
                if slow || !self.chance(70) {
                    continue;
                }
                let c = &mut self.arcs.agent.readers[i].chunks[j];
                if !c.acked {
                    c.acked = true;
                    for &u in &c.uids {
                        *self.delivered.entry(u).or_default() += 1;
                    }
                }
            }
            let r = &mut self.arcs.agent.readers[i];
            while r.chunks.front().is_some_and(|c| c.acked) {
                let c = r.chunks.pop_front().unwrap();
                r.watermark = (c.end, c.marker);
                r.dirty = true;
            }
        }
    }

    /// The checkpoint writer: every reader's watermark; a released one fully acknowledged leaves.
    fn arc_write_checkpoints(&mut self) {
        for r in self.arcs.agent.readers.iter_mut().filter(|r| r.dirty) {
            r.dirty = false;
            let (offset, marker) = r.watermark;
            self.arcs.store.insert(r.ino, Mark { offset, head: Some(r.head), marker });
        }
        self.arcs.agent.readers.retain(|r| !(r.released && r.chunks.is_empty()));
    }

    /// After the final settling: what must have arrived did, nothing else twice.
    pub(super) fn arc_check(&self) -> Result<(), String> {
        if let Some(v) = self.arcs.violations.first() {
            return Err(v.clone());
        }
        let mut required = HashSet::new();
        for (name, &ino) in &self.arcs.names {
            if !matched(name) || self.arcs.skipped.get(&ino) == Some(&self.stat(ino)) {
                continue;
            }
            let a = &self.arcs.inodes[&ino];
            required.extend(a.decode().lines.iter().map(|&p| a.uid(p)));
        }
        let mut read_lost: HashSet<u64> = self.arcs.read.difference(&self.arcs.dropped).copied().collect();
        read_lost.retain(|u| !self.delivered.contains_key(u));
        if let Some(u) = read_lost.iter().next() {
            return Err(format!("line {u} was read from an archive and never delivered"));
        }
        let lost: Vec<u64> = required.iter().filter(|u| !self.delivered.contains_key(u)).copied().collect();
        if !lost.is_empty() {
            return Err(format!(
                "{} archived line(s) never delivered, e.g. {:?}",
                lost.len(),
                &lost[..lost.len().min(5)]
            ));
        }
        // A line of an archive changed after it was sealed may come again (read from the start).
        let changed: HashSet<u64> = self
            .arcs
            .changed_after_seal
            .iter()
            .flat_map(|i| self.arcs.inodes[i].members.iter().flatten().map(|l| l.uid))
            .collect();
        let twice: Vec<u64> = self
            .arcs
            .inodes
            .values()
            .flat_map(|a| a.members.iter().flatten().map(|l| l.uid))
            .filter(|u| self.delivered.get(u).is_some_and(|&n| n > 1))
            .filter(|u| !self.may_repeat.contains(u) && !changed.contains(u))
            .collect();
        if !twice.is_empty() {
            return Err(format!(
                "{} archived line(s) delivered twice, e.g. {:?}",
                twice.len(),
                &twice[..twice.len().min(5)]
            ));
        }
        // END_OF_FILE: what was recorded as done and did not change is never sent.
        for (&ino, stat) in &self.arcs.skipped {
            if *stat != self.stat(ino) {
                continue;
            }
            let a = &self.arcs.inodes[&ino];
            if let Some(u) = a
                .members
                .iter()
                .flatten()
                .map(|l| l.uid)
                .find(|u| self.delivered.contains_key(u) && !self.may_repeat.contains(u))
            {
                return Err(format!("line {u} of an archive skipped by END_OF_FILE was sent"));
            }
        }
        Ok(())
    }
}

/// The marker of an archive's last bytes (its seal).
fn seal_marker(b: &[u8]) -> Sample {
    Sample::of(&b[b.len().saturating_sub(MARKER_BYTES)..])
}
