//! The model test: a simulated file system and clock drive the identity decisions the daemon
//! makes (`decide::copy_verdict`, `decide::still_matched`, `identity::checkpoint_trust`,
//! `identity::rewritten`) through random sequences of create, append, rename, copy, copytruncate,
//! truncate, delete, failed scans, a slow destination and crashes. A small agent here follows the
//! daemon's rules (discovery's `update`/`decide_pending`, the tailer's truncation handling, the
//! ack watermark and the checkpoint) step by step and calls those functions for every decision.
//!
//! Each line carries a unique id; copies keep the ids. After each sequence the agent runs until
//! it is idle, then: every line that was in a matched file (or a file the agent held open) when the
//! agent looked is delivered at least once, except lines that were only in deleted files at a
//! crash, and lines a proven copy skipped, which must equal, line for line, what was delivered of
//! its original (a new file that starts with the same lines as a file truncated moments before
//! is, by the rule, taken for its copy); a line delivered twice was in flight or not yet
//! checkpointed at a crash, or was copied (a copy is read again unless proven). `MODEL_CASES`
//! sets the number of sequences (default 256).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;

mod archives;
mod fs;
mod reading;
use archives::{ArcOp, Arcs, arc_op};
use fs::{Fs, Mem, head_of, marker_of};

use super::decide::{self, Original, Seen, Verdict};
use crate::types::identity::{self, Content, HEAD_BYTES, Mark, START_BYTES, Sample};

const LINE: u64 = 16;
/// The text of header lines: files created with one start with the same bytes.
const HEADER: u64 = 0xC5F;
const NAMES: [&str; 6] = ["app.log", "app.log.1", "app.log.2", "b.csv", "c.csv", "x.old"];

/// Only `x.old` is outside the pattern.
fn matched(name: &str) -> bool {
    !name.starts_with('x')
}

#[derive(Clone)]
struct Chunk {
    end: u64,
    uids: Vec<u64>,
    /// Where the lines were: (inode, line index, text).
    at: Vec<(u64, usize, u64)>,
    marker: Option<Sample>,
    acked: bool,
}

#[derive(Clone)]
struct Truncation {
    /// The texts of the lines before `committed` (what a copy may skip must equal).
    texts: Vec<u64>,
    at: Instant,
    start: Vec<u8>,
    head: Sample,
    committed: u64,
    marker: Option<Sample>,
    /// Index of the old content's chunks in `Tail::old`.
    generation: usize,
}

/// A tailed file: the tailer's and the ack tracker's state.
struct Tail {
    /// The texts of the lines read, from the start of the file.
    texts: Vec<u64>,
    read: u64,
    marker: Option<Sample>,
    head: Option<Sample>,
    start: Vec<u8>,
    chunks: VecDeque<Chunk>,
    /// Chunks of contents it had before truncations, still in flight (the tracker's superseded
    /// handles).
    old: Vec<VecDeque<Chunk>>,
    watermark: u64,
    wm_marker: Option<Sample>,
    seen: Option<Instant>,
    truncated: Option<Truncation>,
    matched: bool,
    absent: u32,
    done: bool,
    retired: bool,
}

impl Tail {
    fn new(offset: u64, marker: Option<Sample>) -> Tail {
        Tail {
            texts: Vec::new(),
            read: offset,
            marker,
            head: None,
            start: Vec::new(),
            chunks: VecDeque::new(),
            old: Vec::new(),
            watermark: offset,
            wm_marker: marker,
            seen: None,
            truncated: None,
            matched: true,
            absent: 0,
            done: false,
            retired: false,
        }
    }
}

#[derive(Clone)]
struct Entry {
    texts: Vec<u64>,
    offset: u64,
    head: Option<Sample>,
    marker: Option<Sample>,
}

#[derive(Default)]
struct Agent {
    tails: HashMap<u64, Tail>,
    /// New files waiting for the copy verdict: when they were seen, their size and lines.
    pending: HashMap<u64, (Seen, u64, Vec<u64>)>,
    startup: Vec<(u64, Original, Vec<u64>)>,
    /// Truncations of files no longer followed (discovery's `closed`).
    closed: Vec<(u64, Truncation)>,
    first: bool,
    had_checkpoints: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Create(usize, usize),
    Append(usize, usize),
    Rename(usize, usize),
    Copy(usize, usize),
    CopyTruncate(usize, usize),
    Truncate(usize),
    Delete(usize),
    Tick(u64),
    ScanError,
    Slow(bool),
    Crash,
    Arc(ArcOp),
}

fn op() -> impl Strategy<Value = Op> {
    let n = || 0..NAMES.len();
    prop_oneof![
        2 => (n(), 0usize..3).prop_map(|(a, h)| Op::Create(a, h)),
        6 => (n(), 1usize..90).prop_map(|(a, k)| Op::Append(a, k)),
        2 => (n(), n()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (n(), n()).prop_map(|(a, b)| Op::Copy(a, b)),
        2 => (n(), n()).prop_map(|(a, b)| Op::CopyTruncate(a, b)),
        1 => n().prop_map(Op::Truncate),
        1 => n().prop_map(Op::Delete),
        8 => (0u64..4_000).prop_map(Op::Tick),
        1 => Just(Op::ScanError),
        1 => any::<bool>().prop_map(Op::Slow),
        1 => Just(Op::Crash),
    ]
}

struct World {
    fs: Fs,
    agent: Agent,
    store: HashMap<u64, Entry>,
    now: Instant,
    rng: u64,
    slow: bool,
    scan_error: bool,
    crashed: bool,
    delivered: HashMap<u64, u32>,
    /// Lines the agent saw in a matched or open file, and where it first saw them.
    required: HashSet<u64>,
    required_at: HashMap<u64, HashSet<(u64, usize, u64)>>,
    /// The text last delivered from each (inode, line index): a file rewritten in place with the
    /// same bytes looks unchanged, so its lines count as delivered.
    delivered_at: HashSet<(u64, usize, u64)>,
    /// Lines lost with a crash: only in deleted or unmatched files that were open.
    excused: HashSet<u64>,
    /// Lines that may be delivered twice: in flight or not yet checkpointed at a crash, or copied.
    may_repeat: HashSet<u64>,
    /// Lines a proven copy skipped; `wrong_skips`: those that differed from what was delivered.
    covered: HashSet<u64>,
    wrong_skips: Vec<u64>,
    /// `MODEL_TRACE` set: say what happens.
    trace: bool,
    /// The compressed files the pattern names (`archives.rs`).
    arcs: Arcs,
}

impl World {
    fn new(seed: u64) -> World {
        World {
            fs: Fs::default(),
            agent: Agent { first: true, ..Agent::default() },
            store: HashMap::new(),
            now: Instant::now(),
            rng: seed | 1,
            slow: false,
            scan_error: false,
            crashed: false,
            delivered: HashMap::new(),
            required: HashSet::new(),
            required_at: HashMap::new(),
            delivered_at: HashSet::new(),
            excused: HashSet::new(),
            may_repeat: HashSet::new(),
            covered: HashSet::new(),
            wrong_skips: Vec::new(),
            trace: std::env::var_os("MODEL_TRACE").is_some(),
            arcs: Arcs::default(),
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % 100 < percent
    }

    fn apply(&mut self, op: &Op) {
        if self.trace {
            eprintln!("op {op:?}; names {:?}", self.fs.names);
        }
        match *op {
            Op::Create(a, h) => {
                if let Some(old) = self.fs.names.get(NAMES[a]).copied() {
                    self.fs.names.remove(NAMES[a]);
                    let _ = old;
                }
                self.fs.create(NAMES[a], h);
            }
            Op::Append(a, k) => {
                if let Some(&ino) = self.fs.names.get(NAMES[a]) {
                    for _ in 0..k {
                        let l = self.fs.fresh(None);
                        self.fs.inodes.get_mut(&ino).unwrap().push(l);
                    }
                }
            }
            Op::Rename(a, b) => {
                if a != b
                    && let Some(ino) = self.fs.names.remove(NAMES[a])
                {
                    self.fs.names.insert(NAMES[b], ino);
                }
            }
            Op::Copy(a, b) | Op::CopyTruncate(a, b) => {
                if a == b {
                    return;
                }
                let Some(_) = self.fs.copy(NAMES[a], NAMES[b]) else { return };
                let src = self.fs.names[NAMES[a]];
                self.may_repeat.extend(self.fs.inodes[&src].iter().map(|l| l.uid));
                if matches!(op, Op::CopyTruncate(..)) {
                    self.fs.inodes.get_mut(&src).unwrap().clear();
                }
            }
            Op::Truncate(a) => {
                if let Some(&ino) = self.fs.names.get(NAMES[a]) {
                    self.fs.inodes.get_mut(&ino).unwrap().clear();
                }
            }
            Op::Delete(a) => {
                self.fs.names.remove(NAMES[a]);
            }
            Op::Tick(ms) => {
                self.now += Duration::from_millis(ms);
                self.step();
            }
            Op::ScanError => self.scan_error = true,
            Op::Slow(s) => self.slow = s,
            Op::Crash => self.crash(),
            Op::Arc(ref a) => self.apply_arc(a),
        }
    }

    fn uids(&self, ino: u64, from: u64, to: u64) -> Vec<u64> {
        self.fs.inodes[&ino][(from / LINE) as usize..(to / LINE) as usize].iter().map(|l| l.uid).collect()
    }

    /// The agent is killed and started again: what it held in memory is gone.
    fn crash(&mut self) {
        for (&ino, t) in &self.agent.tails {
            if !self.fs.inodes.contains_key(&ino) {
                continue;
            }
            // What the restarted agent reads again: from the checkpoint, or from 0 when the
            // checkpoint no longer matches the file (it lagged behind a truncation).
            let bytes = Mem(self.fs.bytes(ino));
            let from = match self.store.get(&ino) {
                Some(e)
                    if identity::checkpoint_trust(
                        &Mark { offset: e.offset, head: e.head, marker: e.marker },
                        &bytes,
                    )
                    .is_ok() =>
                {
                    e.offset
                }
                _ => 0,
            };
            let to = bytes.size();
            if from < to {
                self.may_repeat.extend(self.uids(ino, from, to));
            }
            for c in t.chunks.iter().chain(t.old.iter().flatten()) {
                self.may_repeat.extend(&c.uids);
            }
        }
        self.arc_crash();
        // A flow has checkpoints when any of its files has one, archives too.
        let had_checkpoints = !self.store.is_empty() || self.arcs.has_checkpoints();
        self.agent = Agent { first: true, had_checkpoints, ..Agent::default() };
        self.crashed = true;
    }

    /// At the first clean scan after a crash: what was read but not delivered, and is in no
    /// matched file any more (deleted or moved away while the agent was down or could not scan),
    /// is lost by nature.
    fn excuse_crash(&mut self) {
        let reachable: HashSet<u64> = self
            .fs
            .names
            .iter()
            .filter(|(n, _)| matched(n))
            .flat_map(|(_, i)| self.fs.inodes[i].iter().map(|l| l.uid))
            .collect();
        for &u in &self.required {
            if !self.delivered.contains_key(&u) && !reachable.contains(&u) {
                self.excused.insert(u);
            }
        }
    }

    /// One turn of the agent: acknowledgements, a scan with its decisions, reads, a checkpoint.
    fn step(&mut self) {
        self.acks();
        let now = self.now;
        let (first, had_checkpoints) = (self.agent.first, self.agent.had_checkpoints);
        let clean = !std::mem::take(&mut self.scan_error);
        // After a crash, the agent sees the files again at its first clean scan.
        if clean && std::mem::take(&mut self.crashed) {
            self.excuse_crash();
        }
        let mut found: Vec<u64> = Vec::new();
        for (name, &ino) in &self.fs.names {
            if matched(name) && (clean || ino % 2 == 0) && !found.contains(&ino) {
                found.push(ino);
            }
        }
        found.sort();
        // What the agent sees now must arrive, but for files that wait: a new file waiting for
        // the verdict on whether it is a copy (at most `decide::DECIDE_MAX` after its first byte)
        // and a truncated file waiting for its old content to settle read nothing meanwhile.
        // What they hold once they are read is required (`read_all`).
        for &ino in found.iter().chain(self.agent.tails.iter().filter(|(_, t)| !t.done).map(|(i, _)| i)) {
            let waiting = self.agent.tails.get(&ino).is_none_or(|t| t.seen.is_some());
            if !waiting {
                for (i, l) in self.fs.inodes[&ino].iter().enumerate() {
                    self.required.insert(l.uid);
                    self.required_at.entry(l.uid).or_default().insert((ino, i, l.text));
                }
            }
        }
        if self.agent.first {
            self.agent.startup = self.truncated_while_stopped(&found);
        }
        for t in self.agent.tails.values_mut() {
            t.matched = decide::still_matched(false, clean, &mut t.absent);
        }
        for &ino in &found {
            if let Some(t) = self.agent.tails.get_mut(&ino) {
                t.matched = decide::still_matched(true, clean, &mut t.absent);
                if t.done && !t.retired {
                    // Back in the pattern's reach: resume where it was read.
                    let (read, marker) = (t.read, t.marker);
                    let mut n = Tail::new(read, marker);
                    n.texts = std::mem::take(&mut t.texts);
                    n.chunks = std::mem::take(&mut t.chunks);
                    n.old = std::mem::take(&mut t.old);
                    n.truncated = t.truncated.take();
                    n.head = t.head;
                    n.start = t.start.clone();
                    n.watermark = t.watermark;
                    n.wm_marker = t.wm_marker;
                    *t = n;
                }
                continue;
            }
            if self.agent.pending.contains_key(&ino) {
                continue;
            }
            let bytes = Mem(self.fs.bytes(ino));
            match self.store.get(&ino) {
                Some(e)
                    if identity::checkpoint_trust(
                        &Mark { offset: e.offset, head: e.head, marker: e.marker },
                        &bytes,
                    )
                    .is_ok() =>
                {
                    let mut t = Tail::new(e.offset, e.marker);
                    t.texts = self.texts(ino, e.offset);
                    self.agent.tails.insert(ino, t);
                }
                None if self.agent.first && !self.agent.had_checkpoints => {
                    self.agent.tails.insert(ino, Tail::new(0, None));
                }
                _ => {
                    let lines = self.uids(ino, 0, bytes.size());
                    self.agent.pending.insert(ino, (Seen::new(now, bytes.size()), bytes.size(), lines));
                }
            }
        }
        self.agent.first = false;
        self.decide_pending();
        self.read_all();
        if self.chance(60) {
            self.checkpoint();
        }
        self.arc_step(clean, first, had_checkpoints);
    }

    fn texts(&self, ino: u64, to: u64) -> Vec<u64> {
        self.fs.inodes[&ino][..(to / LINE) as usize].iter().map(|l| l.text).collect()
    }

    fn truncated_while_stopped(&self, found: &[u64]) -> Vec<(u64, Original, Vec<u64>)> {
        let mut out = Vec::new();
        for (&ino, e) in &self.store {
            let Some(head) = e.head.filter(|_| e.offset > 0 && found.contains(&ino)) else { continue };
            let mark = Mark { offset: e.offset, head: e.head, marker: e.marker };
            if identity::checkpoint_trust(&mark, &Mem(self.fs.bytes(ino))).is_err() {
                let o = Original::Truncated { at: self.now, start: None, head, settled: Some((e.offset, e.marker)) };
                out.push((ino, o, e.texts.clone()));
            }
        }
        out
    }

    fn decide_pending(&mut self) {
        let now = self.now;
        let ids: Vec<u64> = self.agent.pending.keys().copied().collect();
        for &id in &ids {
            let size = self.fs.inodes[&id].len() as u64 * LINE;
            let now_lines = self.uids(id, 0, size);
            let (seen, before, lines) = self.agent.pending.get_mut(&id).unwrap();
            seen.observe(now, *before, size);
            *before = size;
            // The known window: lines truncated away from a file while it waits for the verdict
            // (at most `decide::DECIDE_MAX`) are not read.
            if !now_lines.starts_with(lines) {
                let gone: Vec<u64> = lines.iter().filter(|u| !now_lines.contains(u)).copied().collect();
                self.excused.extend(gone);
            }
            *lines = now_lines;
        }
        // Live files a waiting file starts like are checked for a truncation their tailer has not
        // seen (as discovery's `look_for_truncations`).
        for (&ino, t) in self.agent.tails.iter_mut() {
            if t.done || t.seen.is_some() || !self.fs.inodes.contains_key(&ino) {
                continue;
            }
            let read = Mark { offset: t.read, head: t.head, marker: None };
            if self.fs.linked(ino) && identity::rewritten(&Mem(self.fs.bytes(ino)), &read) {
                t.seen = Some(now);
            }
        }
        let mut all: Vec<(u64, Original, Vec<u64>)> = Vec::new();
        for (&ino, t) in &self.agent.tails {
            if let Some(tr) = &t.truncated {
                let settled = t.old[tr.generation].iter().all(|c| c.acked);
                let o = Original::Truncated {
                    at: tr.at,
                    start: Some(tr.start.clone()),
                    head: tr.head,
                    settled: settled.then_some((tr.committed, tr.marker)),
                };
                all.push((ino, o, tr.texts.clone()));
            }
            if let (Some(at), Some(head)) = (t.seen, t.head) {
                let settled = t.chunks.is_empty().then_some((t.watermark, t.wm_marker));
                let texts = t.texts[..(t.watermark / LINE) as usize].to_vec();
                all.push((ino, Original::Truncated { at, start: Some(t.start.clone()), head, settled }, texts));
            } else if !t.done {
                all.push((ino, Original::Live { start: t.start.clone(), head: t.head }, Vec::new()));
            }
        }
        all.extend(self.agent.startup.iter().cloned());
        for (ino, tr) in &self.agent.closed {
            let o = Original::Truncated {
                at: tr.at,
                start: Some(tr.start.clone()),
                head: tr.head,
                settled: Some((tr.committed, tr.marker)),
            };
            all.push((*ino, o, tr.texts.clone()));
        }
        for id in ids {
            let bytes = Mem(self.fs.bytes(id));
            let (originals, texts): (Vec<Original>, Vec<Vec<u64>>) =
                all.iter().filter(|(o, _, _)| *o != id).map(|(_, x, t)| (x.clone(), t.clone())).unzip();
            let seen = self.agent.pending[&id].0;
            let (offset, marker) = match decide::copy_verdict(now, &bytes, &seen, &originals, true) {
                Verdict::Wait => continue,
                Verdict::Copy { original, offset } => {
                    // What is skipped must be, line for line, what was delivered of the original.
                    let mine = self.texts(id, offset);
                    let skipped = self.uids(id, 0, offset);
                    if texts[original].get(..mine.len()) == Some(&mine[..]) {
                        self.covered.extend(skipped);
                        for (i, &text) in mine.iter().enumerate() {
                            self.delivered_at.insert((id, i, text));
                        }
                    } else {
                        self.wrong_skips.extend(skipped);
                    }
                    (offset, marker_of(&bytes.0, offset))
                }
                Verdict::Distinct => (0, None),
            };
            if self.trace {
                eprintln!("  verdict for ino {id}: from {offset}");
            }
            self.agent.pending.remove(&id);
            let mut t = Tail::new(offset, marker);
            t.texts = self.texts(id, offset);
            self.agent.tails.insert(id, t);
        }
    }

    /// Run without file-system changes until everything is read and acknowledged.
    fn settle(&mut self) {
        self.slow = false;
        for _ in 0..40 {
            self.now += Duration::from_secs(1);
            self.step();
        }
        self.checkpoint();
    }
}

fn cases() -> u32 {
    std::env::var("MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

/// The plain files' checks (see the module's doc).
fn check_plain(w: &World) -> Result<(), TestCaseError> {
    prop_assert!(w.wrong_skips.is_empty(), "a copy skipped lines unlike its original's: {:?}", w.wrong_skips);
    let lost: Vec<u64> = w
        .required
        .iter()
        .filter(|u| !w.delivered.contains_key(u) && !w.excused.contains(u) && !w.covered.contains(u))
        .filter(|u| w.required_at.get(u).is_none_or(|at| at.iter().all(|p| !w.delivered_at.contains(p))))
        .copied()
        .collect();
    prop_assert!(lost.is_empty(), "{} line(s) never delivered, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    let archived: HashSet<u64> = w.arcs.uids();
    let repeated: Vec<u64> = w
        .delivered
        .iter()
        .filter(|&(u, &n)| n > 1 && !w.may_repeat.contains(u) && !archived.contains(u))
        .map(|(u, _)| *u)
        .collect();
    prop_assert!(
        repeated.is_empty(),
        "{} line(s) delivered twice without a crash or a copy, e.g. {:?}",
        repeated.len(),
        &repeated[..repeated.len().min(5)]
    );
    Ok(())
}

/// Archives appearing (moved in whole, or written in pieces), growing (another member),
/// settling, renamed, copied, deleted and damaged, among a few plain files, with crashes, failed
/// scans and a slow destination.
fn archive_case() -> impl Strategy<Value = Op> {
    let n = || 0..NAMES.len();
    prop_oneof![
        10 => arc_op().prop_map(Op::Arc),
        1 => (n(), 0usize..3).prop_map(|(a, h)| Op::Create(a, h)),
        2 => (n(), 1usize..40).prop_map(|(a, k)| Op::Append(a, k)),
        8 => (0u64..4_000).prop_map(Op::Tick),
        1 => Just(Op::ScanError),
        1 => any::<bool>().prop_map(Op::Slow),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Every line that decodes from a settled archive is delivered, none twice but after a
    /// crash, a copy or a change of a sealed archive; nothing is read before it settled; a
    /// damaged archive is said once; END_OF_FILE skips what is there at the first start.
    #[test]
    fn archives_are_read_once_settled_and_never_resent(
        ops in proptest::collection::vec(archive_case(), 1..120),
        seed in any::<u64>(),
        start_of_file in any::<bool>(),
    ) {
        let mut w = World::new(seed);
        w.arcs.start_of_file = start_of_file;
        for op in &ops {
            w.apply(op);
        }
        w.settle();
        check_plain(&w)?;
        if let Err(e) = w.arc_check() {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn no_line_is_skipped(ops in proptest::collection::vec(op(), 1..120), seed in any::<u64>()) {
        let mut w = World::new(seed);
        for op in &ops {
            w.apply(op);
        }
        w.settle();
        check_plain(&w)?;
    }
}
