//! Torture tests of the real agent binary (daemon) against `FakeKinesis`: many files written
//! fast while they are rotated in mixed ways, and SIGKILL + restart while rotating.
//!
//! Writer `k` writes `line_text("W<k>", n)` (n = 0, 1, 2…) into `logs/s<k>/`, so every loss or
//! duplicate is attributable to a writer and, through the writer's segment history (which file,
//! from which line to which, ended by which rotation), to a file and a rotation kind. The pattern
//! is `logs/*/app.log*`, which matches every live file, archive, copy and left-over file.
//!
//! Rotation kinds (each on the writer's current file `cur`):
//! - rename: logrotate `create` with a chain `app.log.1..=3` (the oldest is deleted), a new
//!   live file, the writer reopens 0–30 ms later (lines land in the renamed file until then);
//! - create: the writer switches to a new file `app.log.n<i>` (a file per period); the old one
//!   stays (left over);
//! - copytruncate: `cur` copied to `app.log.c<i>` and truncated, the writer held meanwhile, once
//!   a line of `cur` arrived (so that the agent will notice the truncation; a rename if none
//!   does within 3 s). The copy is written under a name outside the pattern and renamed into
//!   place (a copy the agent finds before its first KiB is written is sent again, see
//!   `copy_found_before_it_is_filled_is_not_sent_again`);
//! - truncate: the writer held until every line it wrote arrived, then `cur` truncated;
//! - delete-after-rename: `cur` renamed to `app.log.d<i>`, a new live file, the writer
//!   reopens, then the renamed file is deleted (the agent must drain it through its handle).
//!
//! Left-over files and copies beyond 3 per writer are deleted, oldest first. A file is only
//! deleted once the agent has it open (or after 5 s, noted: its unread lines would then be lost
//! by nature). After a copytruncate or a truncation the writer is held until the agent logged
//! that it noticed the truncation (bounded, noted): a file that grows back past the agent's read
//! offset before the agent looks at it cannot be told from an appended one by its size, which no
//! tailer can avoid, so the test does not provoke that.
//!
//! Set `TORTURE_SECS` for the writing duration (default 20) and `E2E_SEED` to replay the random
//! choices (rotation kinds, pauses, kill moments; thread timing is not replayable). The tests run
//! one at a time (each loads both cores), about 23 s each with the default duration.
//!
//! The last two tests reproduce agent bugs these stress tests ran into (both fixed): a copy found
//! while still empty, and lines in flight at a copytruncate.

use crate::common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Bytes per line, newline included.
const LINE_BYTES: u64 = DEFAULT_LINE_LEN as u64 + 1;
/// The live file's name in each writer's directory.
const LIVE: &str = "app.log";
/// The agent's log filter: the tailer's per-file debug lines are the evidence when a test fails.
const LOG_FILTER: &str = "info,kinesis_agent=debug";
/// How long the final wait for every line may take, and how long it may see no progress.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(40);
const NO_PROGRESS: Duration = Duration::from_secs(12);

/// The tests of this file each load both cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn torture_secs() -> u64 {
    std::env::var("TORTURE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20)
}

/// `E2E_SEED`, or the clock; printed so that a failing run's choices can be replayed.
fn seed() -> u64 {
    let seed = std::env::var("E2E_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("random seed {seed} (set E2E_SEED={seed} to replay)");
    seed
}

/// Tiny deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in [lo, hi) milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn open_append(path: &Path) -> File {
    OpenOptions::new().create(true).append(true).open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn create_new(path: &Path) {
    OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
}

fn truncate(path: &Path) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(0))
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

fn rename(from: &Path, to: &Path) {
    std::fs::rename(from, to).unwrap_or_else(|e| panic!("rename {} to {}: {e}", from.display(), to.display()));
}

/// Whether process `pid` has `path` open (per /proc/PID/fd).
fn has_open(pid: u32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
}

/// The process's peak resident set size (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `a..=b, c..=d, …` for sorted numbers (at most `max` ranges, then how many more).
fn ranges(numbers: &[u64], max: usize) -> String {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &n in numbers {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => out.push((n, n)),
        }
    }
    let mut text: Vec<String> =
        out.iter().take(max).map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}..={b}") }).collect();
    if out.len() > max {
        text.push(format!("… {} more ranges", out.len() - max));
    }
    text.join(", ")
}

// ---------------------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------------------

/// A stretch of one writer's lines in one file: from the file's creation (or truncation) to the
/// rotation that ended it.
#[derive(Clone, Debug)]
struct Segment {
    /// The file's path under `logs/` when the stretch began.
    name: String,
    ino: u64,
    first: u64,
    /// One past the last line (`u64::MAX` while open).
    end: u64,
    /// What ended it.
    ended: String,
}

struct WState {
    file: File,
    path: PathBuf,
    /// The next line number.
    next: u64,
    segments: Vec<Segment>,
}

impl WState {
    /// The first line of the current file's content.
    fn first_in_file(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.first)
    }

    fn end_segment(&mut self, how: String) {
        let next = self.next;
        if let Some(s) = self.segments.last_mut() {
            s.end = next;
            s.ended = how;
        }
    }

    fn begin_segment(&mut self, logs: &Path) {
        let name = self.path.strip_prefix(logs).unwrap_or(&self.path).display().to_string();
        let ino = file_id(&self.path).1;
        self.segments.push(Segment { name, ino, first: self.next, end: u64::MAX, ended: String::new() });
    }

    /// The next lines go to `path` (created if needed).
    fn switch(&mut self, path: &Path, how: String, logs: &Path) {
        self.end_segment(how);
        self.file = open_append(path);
        self.path = path.to_path_buf();
        self.begin_segment(logs);
    }

    /// The current file was truncated: its next lines start a new segment.
    fn truncated(&mut self, how: String, logs: &Path) {
        self.end_segment(how);
        self.begin_segment(logs);
    }
}

struct WShared {
    prefix: String,
    logs: PathBuf,
    state: Mutex<WState>,
    stop: AtomicBool,
}

impl WShared {
    fn lock(&self) -> MutexGuard<'_, WState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A thread appending its numbered lines at a steady rate, in bursts every 5 ms, each one
/// `write` through an `O_APPEND` handle that stays on its file until switched (as a logging
/// application does). While a rotation holds its state, it waits; then catches up (at most 6 s
/// worth of lines in one burst).
struct Writer {
    shared: Arc<WShared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(id: usize, logs: &Path, path: &Path, lines_per_sec: u64) -> Writer {
        let mut state = WState { file: open_append(path), path: path.to_path_buf(), next: 0, segments: Vec::new() };
        state.begin_segment(logs);
        let shared = Arc::new(WShared {
            prefix: format!("W{id:02}"),
            logs: logs.to_path_buf(),
            state: Mutex::new(state),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let rate = lines_per_sec as f64;
            let mut credit = 0.0f64;
            let mut last = Instant::now();
            let mut buf = String::new();
            while !s.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                let now = Instant::now();
                credit = (credit + rate * (now - last).as_secs_f64()).min(rate * 6.0);
                last = now;
                let n = credit.floor() as u64;
                if n == 0 {
                    continue;
                }
                let mut st = s.lock();
                credit -= n as f64;
                buf.clear();
                for i in st.next..st.next + n {
                    buf.push_str(&line_text(&s.prefix, i));
                    buf.push('\n');
                }
                let path = st.path.clone();
                st.file.write_all(buf.as_bytes()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                st.next += n;
            }
        });
        Writer { shared, thread: Some(thread) }
    }

    /// Stops the thread; returns how many lines were written.
    fn finish(&mut self) -> u64 {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread panicked");
        }
        let mut st = self.shared.lock();
        st.end_segment("end of the test".to_string());
        st.next
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What arrived
// ---------------------------------------------------------------------------------------------

/// Every line the fake accepted so far, per writer and line number.
struct Seen {
    /// Records absorbed (an index into the fake's acceptance order).
    from: usize,
    /// Times each line was received, per writer (saturating).
    counts: Vec<Vec<u8>>,
    /// Distinct lines received, per writer.
    distinct: Vec<u64>,
    /// Per extra copy of a line (a line received 3 times has 2): its writer, its number and the
    /// index of the record that brought it.
    dup_at: Vec<(usize, u64, usize)>,
    corrupt: u64,
    corrupt_examples: Vec<String>,
}

impl Seen {
    fn new(writers: usize) -> Seen {
        Seen {
            from: 0,
            counts: vec![Vec::new(); writers],
            distinct: vec![0; writers],
            dup_at: Vec::new(),
            corrupt: 0,
            corrupt_examples: Vec::new(),
        }
    }

    /// `"W<k> <n> …"` → (k, n) when the line is exactly writer k's line n.
    fn parse(&self, line: &[u8]) -> Option<(usize, u64)> {
        let text = std::str::from_utf8(line).ok()?;
        let mut parts = text.splitn(3, ' ');
        let prefix = parts.next()?;
        let w: usize = prefix.strip_prefix('W')?.parse().ok()?;
        let n: u64 = parts.next()?.parse().ok()?;
        (w < self.counts.len() && text == line_text(prefix, n)).then_some((w, n))
    }

    fn absorb(&mut self, records: &[Vec<u8>]) {
        for (i, r) in records.iter().enumerate() {
            for line in r.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let Some((w, n)) = self.parse(line) else {
                    self.corrupt += 1;
                    if self.corrupt_examples.len() < 5 {
                        self.corrupt_examples.push(String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned());
                    }
                    continue;
                };
                let counts = &mut self.counts[w];
                if counts.len() <= n as usize {
                    counts.resize(n as usize + 1, 0);
                }
                let c = &mut counts[n as usize];
                *c = c.saturating_add(1);
                if *c == 1 {
                    self.distinct[w] += 1;
                } else {
                    self.dup_at.push((w, n, self.from + i));
                }
            }
        }
        self.from += records.len();
    }

    fn count(&self, w: usize, n: u64) -> u8 {
        self.counts[w].get(n as usize).copied().unwrap_or(0)
    }

    fn any_in(&self, w: usize, lines: std::ops::Range<u64>) -> bool {
        lines.into_iter().any(|n| self.count(w, n) > 0)
    }
}

/// A thread moving what the fake accepted into a `Seen`, every 20 ms.
struct Collector {
    fake: Arc<FakeKinesis>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn absorb_new(fake: &FakeKinesis, seen: &Mutex<Seen>) {
    let from = seen.lock().unwrap().from;
    let records = fake.record_data_since(from);
    if !records.is_empty() {
        seen.lock().unwrap().absorb(&records);
    }
}

impl Collector {
    fn start(fake: Arc<FakeKinesis>, writers: usize) -> Collector {
        let seen = Arc::new(Mutex::new(Seen::new(writers)));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s, st) = (fake.clone(), seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                absorb_new(&f, &s);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Collector { fake, seen, stop, thread: Some(thread) }
    }

    /// Stops the thread and absorbs what is left.
    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("collector thread panicked");
        }
        absorb_new(&self.fake, &self.seen);
    }

    /// Waits until every line `0..written[w]` of every writer arrived (false when the count
    /// stops growing for `NO_PROGRESS`, or after `DELIVERY_TIMEOUT`).
    fn wait_delivered(&self, written: &[u64]) -> bool {
        let started = Instant::now();
        let total: u64 = written.iter().sum();
        let got = wait_for_progress(total, NO_PROGRESS, DELIVERY_TIMEOUT, "lines", || {
            let s = self.seen.lock().unwrap();
            written.iter().zip(&s.distinct).map(|(&w, &d)| d.min(w)).sum()
        });
        if got >= total {
            eprintln!("every line arrived {:?} after the writers stopped", started.elapsed());
        }
        got >= total
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Lost and duplicated lines, with the segments (files) they were written to.
struct Damage {
    written: u64,
    lost: u64,
    duplicated: u64,
    corrupt: u64,
    /// One line per damaged segment, and the lost ranges per writer.
    details: Vec<String>,
    /// `logs/s<k>` of the writers with damage.
    dirs: Vec<String>,
}

fn damage(seen: &Seen, writers: &[Arc<WShared>], written: &[u64]) -> Damage {
    let mut d = Damage {
        written: written.iter().sum(),
        lost: 0,
        duplicated: 0,
        corrupt: seen.corrupt,
        details: Vec::new(),
        dirs: Vec::new(),
    };
    for (w, shared) in writers.iter().enumerate() {
        let total = written[w];
        let lost: Vec<u64> = (0..total).filter(|&n| seen.count(w, n) == 0).collect();
        let dup: u64 = (0..total).map(|n| u64::from(seen.count(w, n).saturating_sub(1))).sum();
        let beyond = seen.counts[w].len() as u64 > total;
        d.lost += lost.len() as u64;
        d.duplicated += dup;
        if lost.is_empty() && dup == 0 && !beyond {
            continue;
        }
        d.dirs.push(format!("/logs/s{w}/"));
        if !lost.is_empty() {
            d.details.push(format!("W{w:02}: {} lost: {}", lost.len(), ranges(&lost, 12)));
        }
        if beyond {
            d.details.push(format!("W{w:02}: lines received beyond the {total} written"));
        }
        for s in shared.lock().segments.iter() {
            let end = s.end.min(total);
            let lost = (s.first..end).filter(|&n| seen.count(w, n) == 0).count();
            let dup: u64 = (s.first..end).map(|n| u64::from(seen.count(w, n).saturating_sub(1))).sum();
            if lost > 0 || dup > 0 {
                d.details.push(format!(
                    "W{w:02}: {} (inode {}) lines {}..{} [{}]: {lost} lost, {dup} duplicated",
                    s.name, s.ino, s.first, end, s.ended
                ));
            }
        }
    }
    d
}

impl Damage {
    fn print(&self, what: &str) {
        eprintln!(
            "{what}: written {}, lost {}, duplicated {}, corrupt {}",
            self.written, self.lost, self.duplicated, self.corrupt
        );
        for line in self.details.iter().take(40) {
            eprintln!("{what}:   {line}");
        }
        if self.details.len() > 40 {
            eprintln!("{what}:   … {} more", self.details.len() - 40);
        }
    }

    /// The agent log lines about the damaged writers' directories (at most `max`).
    fn evidence(&self, logs: &[String], max: usize) -> String {
        let mut out = Vec::new();
        for (i, log) in logs.iter().enumerate() {
            for line in log.lines().filter(|l| self.dirs.iter().any(|d| l.contains(d.as_str()))) {
                out.push(format!("[agent {i}] {line}"));
            }
        }
        let skip = out.len().saturating_sub(max);
        out[skip..].join("\n")
    }
}

// ---------------------------------------------------------------------------------------------
// Rotations
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rename,
    Create,
    CopyTruncate,
    Truncate,
    DeleteAfterRename,
}

const ALL_KINDS: [Kind; 5] = [Kind::Rename, Kind::Create, Kind::CopyTruncate, Kind::Truncate, Kind::DeleteAfterRename];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rename => "rename",
            Kind::Create => "create",
            Kind::CopyTruncate => "copytruncate",
            Kind::Truncate => "truncate",
            Kind::DeleteAfterRename => "delete-after-rename",
        }
    }
    fn index(self) -> usize {
        ALL_KINDS.iter().position(|&k| k == self).unwrap()
    }
}

/// The agent process the rotations deal with (the current one, across restarts).
#[derive(Clone, Debug)]
struct AgentNow {
    pid: u32,
    log: PathBuf,
    /// 0 for the first process, +1 per restart.
    generation: usize,
    up: bool,
}

/// Lines appended to a log since a cursor was taken.
struct LogCursor {
    path: PathBuf,
    pos: u64,
}

impl LogCursor {
    fn at_end(path: &Path) -> LogCursor {
        LogCursor { path: path.to_path_buf(), pos: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) }
    }

    /// Waits until a line appended since the cursor was taken contains `needle` (false after
    /// `timeout`, or as soon as `cancel` says so).
    fn wait_for(&mut self, needle: &str, timeout: Duration, cancel: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = Vec::new();
        loop {
            if let Ok(mut f) = File::open(&self.path) {
                buf.clear();
                if f.seek(SeekFrom::Start(self.pos)).is_ok()
                    && f.read_to_end(&mut buf).is_ok()
                    && let Some(last) = buf.iter().rposition(|&b| b == b'\n')
                {
                    self.pos += last as u64 + 1;
                    if String::from_utf8_lossy(&buf[..=last]).contains(needle) {
                        return true;
                    }
                }
            }
            if Instant::now() >= deadline || cancel() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// One writer's directory, as its rotator thread sees it.
struct Dir {
    w: usize,
    dir: PathBuf,
    /// For unique names (`app.log.n<i>`, `.c<i>`, `.d<i>`).
    seq: u32,
    /// Left-over files and copies, oldest first.
    leftovers: VecDeque<PathBuf>,
    rng: Rng,
}

impl Dir {
    fn unique(&mut self, tag: &str) -> PathBuf {
        self.seq += 1;
        self.dir.join(format!("{LIVE}.{tag}{}", self.seq))
    }

    /// `app.log` if free, else a new `app.log.n<i>` (when `app.log` was left over by `create`).
    fn fresh_live(&mut self) -> PathBuf {
        let live = self.dir.join(LIVE);
        if live.exists() { self.unique("n") } else { live }
    }

    fn archive(&self, i: u32) -> PathBuf {
        self.dir.join(format!("{LIVE}.{i}"))
    }
}

fn short(path: &Path) -> String {
    path.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

/// What the rotator threads share.
struct Rig {
    writers: Vec<Arc<WShared>>,
    seen: Arc<Mutex<Seen>>,
    agent: Mutex<AgentNow>,
    /// Held (read) by a rotation while it changes files, (write) by the test while it kills the
    /// agent and measures what was not checkpointed.
    gate: RwLock<()>,
    stop: AtomicBool,
    /// Rotations done, per kind.
    done: [AtomicU64; 5],
    /// Rotations replaced by a rename, waits that timed out, files deleted unopened…
    notes: Mutex<BTreeMap<&'static str, u64>>,
    /// Archives kept by `rename` (0: none is ever deleted).
    keep: u32,
    /// Left-over files and copies kept per writer (None: none is ever deleted).
    max_leftovers: Option<usize>,
    /// Lines in copies made while the agent was down, per the generation that started next.
    copied_while_down: Mutex<BTreeMap<usize, u64>>,
}

impl Rig {
    fn new(
        writers: &[Writer],
        seen: Arc<Mutex<Seen>>,
        agent: &AgentProcess,
        keep: u32,
        max_leftovers: Option<usize>,
    ) -> Rig {
        Rig {
            writers: writers.iter().map(|w| w.shared.clone()).collect(),
            seen,
            agent: Mutex::new(AgentNow {
                pid: agent.pid(),
                log: agent.log_path().to_path_buf(),
                generation: 0,
                up: true,
            }),
            gate: RwLock::new(()),
            stop: AtomicBool::new(false),
            done: Default::default(),
            notes: Mutex::new(BTreeMap::new()),
            keep,
            max_leftovers,
            copied_while_down: Mutex::new(BTreeMap::new()),
        }
    }

    fn note(&self, what: &'static str) {
        *self.notes.lock().unwrap().entry(what).or_insert(0) += 1;
    }

    fn agent(&self) -> AgentNow {
        self.agent.lock().unwrap().clone()
    }

    fn writer(&self, w: usize) -> MutexGuard<'_, WState> {
        self.writers[w].lock()
    }

    fn logs(&self, w: usize) -> &Path {
        &self.writers[w].logs
    }

    fn rotations(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.done[i].load(Ordering::Relaxed))
    }

    /// Deletes `path` once the agent has it open (noted if it still has not after 5 s).
    fn delete(&self, path: &Path) {
        let a = self.agent();
        if !(a.up && wait_until(Duration::from_secs(5), || has_open(a.pid, path))) {
            self.note("file deleted before the agent had it open");
        }
        std::fs::remove_file(path).unwrap_or_else(|e| panic!("delete {}: {e}", path.display()));
    }

    fn trim_leftovers(&self, d: &mut Dir) {
        while let Some(max) = self.max_leftovers
            && d.leftovers.len() > max
        {
            let oldest = d.leftovers.pop_front().unwrap();
            let _gate = self.gate.read().unwrap();
            self.delete(&oldest);
        }
    }

    /// Rotates writer `d.w`'s current file; returns the kind done (a rename when `kind` could
    /// not be done safely).
    fn rotate(&self, d: &mut Dir, kind: Kind) -> Kind {
        match kind {
            Kind::Rename => self.rename_chain(d),
            Kind::Create => self.create(d),
            Kind::DeleteAfterRename => self.delete_after_rename(d),
            Kind::CopyTruncate => {
                if !self.copytruncate(d) {
                    return self.rotate(d, Kind::Rename);
                }
            }
            Kind::Truncate => {
                if !self.truncate_drained(d) {
                    return self.rotate(d, Kind::Rename);
                }
            }
        }
        kind
    }

    /// logrotate `create`: the chain shifts (the oldest archive deleted when `keep` > 0), `cur`
    /// becomes `app.log.1`, a new live file; the writer reopens 0–30 ms later.
    fn rename_chain(&self, d: &mut Dir) {
        let new = {
            let _gate = self.gate.read().unwrap();
            let top = if self.keep == 0 { (1..).find(|&i| !d.archive(i).exists()).unwrap() } else { self.keep };
            if self.keep > 0 && d.archive(self.keep).exists() {
                self.delete(&d.archive(self.keep));
            }
            let st = self.writer(d.w);
            for i in (1..top).rev() {
                if d.archive(i).exists() {
                    rename(&d.archive(i), &d.archive(i + 1));
                }
            }
            rename(&st.path, &d.archive(1));
            let new = d.fresh_live();
            create_new(&new);
            new
        };
        std::thread::sleep(d.rng.millis(0, 30));
        self.writer(d.w).switch(&new, format!("renamed to {LIVE}.1"), self.logs(d.w));
    }

    /// A file per period: the writer switches to a new `app.log.n<i>`; the old file is left.
    fn create(&self, d: &mut Dir) {
        {
            let _gate = self.gate.read().unwrap();
            let new = d.unique("n");
            create_new(&new);
            let mut st = self.writer(d.w);
            let old = st.path.clone();
            st.switch(&new, format!("left for {}", short(&new)), self.logs(d.w));
            d.leftovers.push_back(old);
        }
        self.trim_leftovers(d);
    }

    /// `cur` renamed to `app.log.d<i>`, a new live file, the writer reopens 0–30 ms later, then
    /// the renamed file is deleted.
    fn delete_after_rename(&self, d: &mut Dir) {
        let doomed = d.unique("d");
        let new = {
            let _gate = self.gate.read().unwrap();
            let st = self.writer(d.w);
            rename(&st.path, &doomed);
            let new = d.fresh_live();
            create_new(&new);
            new
        };
        std::thread::sleep(d.rng.millis(0, 30));
        self.writer(d.w).switch(&new, format!("renamed to {}, deleted", short(&doomed)), self.logs(d.w));
        let _gate = self.gate.read().unwrap();
        self.delete(&doomed);
    }

    /// While the agent runs: waits (3 s at most) until a line of the current file arrived, so
    /// that the agent has read some of it and will notice its truncation. False if none did.
    fn wait_read_some(&self, w: usize) -> bool {
        wait_until(Duration::from_secs(3), || {
            let lines = {
                let st = self.writer(w);
                st.first_in_file()..st.next
            };
            self.seen.lock().unwrap().any_in(w, lines)
        })
    }

    /// After a truncation of `cur` (the writer still held): waits (5 s at most, or until that
    /// agent process is gone) until the agent reports it noticed.
    fn wait_noticed(&self, mut cursor: LogCursor, cur: &Path, generation: usize) {
        let needle = format!("{} was truncated", cur.display());
        let gone = || {
            let a = self.agent();
            !a.up || a.generation != generation
        };
        if !cursor.wait_for(&needle, Duration::from_secs(5), gone) && !gone() {
            self.note("truncation not reported by the agent within 5 s");
        }
    }

    /// logrotate `copytruncate` (the writer held meanwhile): `cur` copied to `app.log.c<i>`,
    /// then truncated. False (nothing done) when the agent has read nothing of it yet.
    fn copytruncate(&self, d: &mut Dir) -> bool {
        if self.agent().up && !self.wait_read_some(d.w) {
            self.note("copytruncate: nothing of the file arrived within 3 s (renamed instead)");
            return false;
        }
        let gate = self.gate.read().unwrap();
        let a = self.agent();
        let mut st = self.writer(d.w);
        let lines = st.next - st.first_in_file();
        if lines == 0 || (a.up && !self.seen.lock().unwrap().any_in(d.w, st.first_in_file()..st.next)) {
            return false;
        }
        let cur = st.path.clone();
        let copy = d.unique("c");
        let cursor = LogCursor::at_end(&a.log);
        let tmp = d.dir.join("copy.tmp");
        std::fs::copy(&cur, &tmp).unwrap_or_else(|e| panic!("copy {}: {e}", cur.display()));
        rename(&tmp, &copy);
        truncate(&cur);
        st.truncated(format!("copytruncate to {}", short(&copy)), self.logs(d.w));
        if !a.up {
            *self.copied_while_down.lock().unwrap().entry(a.generation + 1).or_insert(0) += lines;
        }
        drop(gate);
        if a.up {
            self.wait_noticed(cursor, &cur, a.generation);
        }
        drop(st);
        d.leftovers.push_back(copy);
        self.trim_leftovers(d);
        true
    }

    /// Truncation without a copy, only once every line the writer wrote arrived (the writer
    /// held meanwhile). False (nothing done) when that takes more than 10 s, or the agent is down.
    fn truncate_drained(&self, d: &mut Dir) -> bool {
        let gate = self.gate.read().unwrap();
        let a = self.agent();
        let mut st = self.writer(d.w);
        let upto = st.next;
        if !a.up || upto == st.first_in_file() {
            return false;
        }
        if !wait_until(Duration::from_secs(10), || self.seen.lock().unwrap().distinct[d.w] >= upto) {
            self.note("truncate: not every line arrived within 10 s (renamed instead)");
            return false;
        }
        let cur = st.path.clone();
        let cursor = LogCursor::at_end(&a.log);
        truncate(&cur);
        st.truncated("truncated once drained".to_string(), self.logs(d.w));
        drop(gate);
        self.wait_noticed(cursor, &cur, a.generation);
        true
    }
}

/// A thread rotating writer `w`'s files every `every` (a random pause in that range, ms), by a
/// kind picked at random from `kinds`, until `rig.stop`.
fn spawn_rotator(
    rig: &Arc<Rig>,
    w: usize,
    dir: PathBuf,
    kinds: &'static [Kind],
    every: (u64, u64),
    seed: u64,
) -> JoinHandle<()> {
    let rig = rig.clone();
    std::thread::spawn(move || {
        let mut d = Dir { w, dir, seq: 0, leftovers: VecDeque::new(), rng: Rng::new(seed) };
        loop {
            let until = Instant::now() + d.rng.millis(every.0, every.1);
            while Instant::now() < until && !rig.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if rig.stop.load(Ordering::Relaxed) {
                return;
            }
            let kind = kinds[d.rng.below(kinds.len() as u64) as usize];
            let done = rig.rotate(&mut d, kind);
            rig.done[done.index()].fetch_add(1, Ordering::Relaxed);
        }
    })
}

fn stop_rotators(rig: &Rig, rotators: Vec<JoinHandle<()>>) {
    rig.stop.store(true, Ordering::Relaxed);
    for r in rotators {
        r.join().expect("rotator thread panicked");
    }
}

fn rotation_summary(rig: &Rig, secs: f64) -> String {
    let done = rig.rotations();
    let total: u64 = done.iter().sum();
    let kinds: Vec<String> = ALL_KINDS.iter().map(|k| format!("{} {}", k.name(), done[k.index()])).collect();
    format!(
        "{total} rotations ({:.1}/s): {}; notes {:?}",
        total as f64 / secs,
        kinds.join(", "),
        rig.notes.lock().unwrap()
    )
}

// ---------------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------------

/// agent.json: one Kinesis flow over `logs/*/app.log*` on the fake.
fn config(ws: &Workspace, fake: &FakeKinesis) -> Value {
    json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": TEST_REGION,
        "flows": [{
            "filePattern": ws.pattern(&format!("*/{LIVE}*")),
            "kinesisStream": unique_name("torture"),
            "initialPosition": "START_OF_FILE",
            "maxBufferAgeMillis": 1000
        }]
    })
}

/// `logs/s<k>/` for each writer, and a writer on each `app.log`.
fn start_writers(ws: &Workspace, n: usize, lines_per_sec: u64) -> (Vec<PathBuf>, Vec<Writer>) {
    let dirs: Vec<PathBuf> = (0..n).map(|k| ws.logs.join(format!("s{k}"))).collect();
    for d in &dirs {
        std::fs::create_dir(d).expect("create a writer's directory");
    }
    let writers =
        dirs.iter().enumerate().map(|(k, d)| Writer::start(k, &ws.logs, &d.join(LIVE), lines_per_sec)).collect();
    (dirs, writers)
}

fn sigterm(agent: &mut AgentProcess) {
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM; log:\n{}", tail(&agent.log(), 8192));
}

/// What a restarted agent may send again, right after a kill.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    /// Lines between each file's checkpoint and its end, over every file under `logs/*/` (a file
    /// without a checkpoint, or with one past its end or over other first bytes, counts whole).
    lines: u64,
    /// Of those, the lines of copies (`app.log.c<i>`) without a checkpoint yet: the restarted
    /// agent reads them from 0 although the killed one had started them past what the original
    /// had sent.
    unrecorded_copies: u64,
}

/// The agent's head fingerprint (`tail::identity::Sample::hash`) of `bytes`: the first 8 bytes
/// of MD5(length as u32 LE ‖ bytes), little-endian.
fn head_hash(bytes: &[u8]) -> u64 {
    use md5::{Digest, Md5};
    let d = Md5::new().chain_update((bytes.len() as u32).to_le_bytes()).chain_update(bytes).finalize();
    u64::from_le_bytes(d[..8].try_into().unwrap())
}

/// The checkpoint file's offsets by (device, inode), with the head fingerprint (length, hash)
/// each was taken with.
type Checkpoints = HashMap<(u64, u64), (u64, Option<(u64, u64)>)>;

fn checkpoints_with_heads(ws: &Workspace) -> Checkpoints {
    let Ok(text) = std::fs::read(&ws.checkpoint_file) else { return HashMap::new() };
    let v: Value = serde_json::from_slice(&text).expect("the checkpoint file is JSON");
    let num = |e: &Value, k: &str| e[k].as_u64().unwrap_or_else(|| panic!("checkpoint entry without {k}: {e}"));
    v["checkpoints"]
        .as_array()
        .expect("checkpoints array")
        .iter()
        .map(|e| {
            let head = e.get("head").filter(|h| !h.is_null()).map(|h| (num(h, "len"), num(h, "hash")));
            ((num(e, "dev"), num(e, "ino")), (num(e, "offset"), head))
        })
        .collect()
}

/// Whether `path` still starts with the bytes `head` (length, hash) was taken over.
fn head_matches(path: &Path, (len, hash): (u64, u64)) -> bool {
    let mut buf = vec![0u8; len as usize];
    File::open(path).and_then(|mut f| f.read_exact(&mut buf)).is_ok() && head_hash(&buf) == hash
}

fn uncheckpointed(ws: &Workspace) -> Window {
    let ck = checkpoints_with_heads(ws);
    let mut w = Window::default();
    for dir in std::fs::read_dir(&ws.logs).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let Ok(m) = f.metadata() else { continue };
            // Trusted as the agent does: within the file and over the same head.
            let offset = ck
                .get(&(m.dev(), m.ino()))
                .filter(|(o, head)| *o <= m.len() && head.is_none_or(|h| head_matches(&f.path(), h)))
                .map(|&(o, _)| o);
            let lines = (m.len() - offset.unwrap_or(0)).div_ceil(LINE_BYTES);
            w.lines += lines;
            if offset.is_none() && f.file_name().to_string_lossy().starts_with(&format!("{LIVE}.c")) {
                w.unrecorded_copies += lines;
            }
        }
    }
    w
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// 10 writers at 2,000 lines/s each (20,000 lines/s) in `logs/s0..9/`, each directory rotated
/// about once a second (10 rotations/s in all) by a kind picked at random among rename (chain of
/// 3), create, copytruncate, truncate once drained and delete-after-rename, for `TORTURE_SECS`.
/// Then the writers stop, every line must arrive, SIGTERM: 0 lost, 0 duplicated, 0 corrupt.
/// Prints lines/s, rotations per kind and the agent's peak RSS.
#[test]
fn torture_mixed_rotation() {
    const WRITERS: usize = 10;
    const LINES_PER_SEC: u64 = 2_000;
    let _serial = serial();
    let what = "TORTURE mixed";
    let secs = torture_secs();
    let mut rng = Rng::new(seed());
    let fake = Arc::new(FakeKinesis::start());
    let ws = Workspace::new();
    ws.write_config(config(&ws, &fake));
    let (dirs, mut writers) = start_writers(&ws, WRITERS, LINES_PER_SEC);
    let started = Instant::now();
    let mut agent = ws.spawn(false, &["-L", LOG_FILTER]);
    let mut collector = Collector::start(fake.clone(), WRITERS);
    let rig = Arc::new(Rig::new(&writers, collector.seen.clone(), &agent, 3, Some(3)));
    let rotators: Vec<JoinHandle<()>> = dirs
        .iter()
        .enumerate()
        .map(|(w, d)| spawn_rotator(&rig, w, d.clone(), &ALL_KINDS, (500, 1_500), rng.next()))
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop_rotators(&rig, rotators);
    let written: Vec<u64> = writers.iter_mut().map(Writer::finish).collect();
    let elapsed = started.elapsed().as_secs_f64();
    let total: u64 = written.iter().sum();

    let delivered = collector.wait_delivered(&written);
    // Late duplicates (a line read again after a rotation) would leave within maxBufferAgeMillis.
    std::thread::sleep(Duration::from_millis(1_500));
    let rss = peak_rss_kib(agent.pid());
    sigterm(&mut agent);
    collector.finish();

    let seen = collector.seen.lock().unwrap();
    let d = damage(&seen, &rig.writers, &written);
    eprintln!(
        "{what}: {WRITERS} writers, {total} lines in {elapsed:.1} s = {:.0} lines/s; {}; agent peak RSS (VmHWM) {} KiB; \
         {} records",
        total as f64 / elapsed,
        rotation_summary(&rig, elapsed),
        rss.map_or("?".to_string(), |k| k.to_string()),
        seen.from
    );
    d.print(what);
    assert!(
        d.lost == 0 && d.duplicated == 0 && d.corrupt == 0 && delivered,
        "{what}: {} lost, {} duplicated, {} corrupt (e.g. {:?})\n{}\nagent log about the damaged files:\n{}",
        d.lost,
        d.duplicated,
        d.corrupt,
        seen.corrupt_examples,
        d.details.join("\n"),
        d.evidence(&[agent.log()], 80)
    );
}

/// 3 writers at 1,000 lines/s each, each directory rotated every 1–2 s (2 rotations/s in all) by
/// rename (a chain that is never deleted: a deletion while the agent is down would lose unread
/// lines by nature) or copytruncate, while the agent is SIGKILLed every 2–5 s (seeded) and
/// restarted 0.1–1.5 s later, for `TORTURE_SECS`. Then the writers stop, every line must arrive,
/// SIGTERM.
///
/// Nothing may be lost, and nothing duplicated before the first kill. The duplicates that arrive
/// from each restarted process are counted against its kill. They are what the killed process
/// had sent but not checkpointed (lines are acknowledged in 500-record batches and checkpointed
/// every second: the e2e_daemon SIGKILL test sees 500–1,500 per kill at 2,000 lines/s from one
/// file; here 3 files at 3,000 lines/s), plus whole copies the restarted agent has no checkpoint
/// for: those made while it was down, and those the killed one had not checkpointed yet (both
/// read from 0, although the original's lines up to its checkpoint were sent already; an
/// agent's limitation: nothing in the checkpoints ties a copy to its original). Asserted per kill:
/// - measured: duplicates ≤ the lines uncheckpointed at the kill (every file, copies included)
///   + the lines of copies made while down;
/// - documented: duplicates ≤ 5,000 + the lines of those copies (unrecorded at the kill, or
///   made while down).
#[test]
fn crash_while_rotating() {
    const WRITERS: usize = 3;
    const LINES_PER_SEC: u64 = 1_000;
    const PER_KILL_BOUND: u64 = 5_000;
    let _serial = serial();
    let what = "CRASH while rotating";
    let secs = torture_secs();
    let mut rng = Rng::new(seed());
    let fake = Arc::new(FakeKinesis::start());
    let ws = Workspace::new();
    ws.write_config(config(&ws, &fake));
    let (dirs, mut writers) = start_writers(&ws, WRITERS, LINES_PER_SEC);
    let started = Instant::now();
    let mut agent = ws.spawn(false, &["-L", LOG_FILTER]);
    let mut log_paths = vec![agent.log_path().to_path_buf()];
    let mut collector = Collector::start(fake.clone(), WRITERS);
    let rig = Arc::new(Rig::new(&writers, collector.seen.clone(), &agent, 0, None));
    const KINDS: [Kind; 2] = [Kind::Rename, Kind::CopyTruncate];
    let rotators: Vec<JoinHandle<()>> = dirs
        .iter()
        .enumerate()
        .map(|(w, d)| spawn_rotator(&rig, w, d.clone(), &KINDS, (1_000, 2_000), rng.next()))
        .collect();

    // Generation g's records start at index marks[g] of the fake's acceptance order.
    let mut marks = vec![0usize];
    let mut windows = Vec::new();
    let until = Duration::from_secs(secs);
    loop {
        let pause = rng.millis(2_000, 5_000);
        if started.elapsed() + pause + Duration::from_millis(1_500) > until {
            std::thread::sleep(until.saturating_sub(started.elapsed()));
            break;
        }
        std::thread::sleep(pause);
        {
            let _gate = rig.gate.write().unwrap();
            agent.sigkill();
            let status = agent.wait_exit(Duration::from_secs(5));
            assert_eq!(status.code(), None, "killed by a signal");
            rig.agent.lock().unwrap().up = false;
            windows.push(uncheckpointed(&ws));
        }
        std::thread::sleep(rng.millis(100, 1_500));
        {
            let _gate = rig.gate.write().unwrap();
            marks.push(fake.record_count());
            agent = ws.spawn(false, &["-L", LOG_FILTER]);
            log_paths.push(agent.log_path().to_path_buf());
            let mut a = rig.agent.lock().unwrap();
            *a = AgentNow {
                pid: agent.pid(),
                log: agent.log_path().to_path_buf(),
                generation: a.generation + 1,
                up: true,
            };
        }
    }
    stop_rotators(&rig, rotators);
    let written: Vec<u64> = writers.iter_mut().map(Writer::finish).collect();
    let elapsed = started.elapsed().as_secs_f64();
    let total: u64 = written.iter().sum();

    let delivered = collector.wait_delivered(&written);
    std::thread::sleep(Duration::from_millis(1_500));
    sigterm(&mut agent);
    collector.finish();

    let seen = collector.seen.lock().unwrap();
    let d = damage(&seen, &rig.writers, &written);
    let kills = windows.len();
    let mut dups_per_gen = vec![0u64; marks.len()];
    // Writer and line of each duplicate that arrived before the first restart.
    let mut early: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for &(w, n, at) in &seen.dup_at {
        let generation = marks.partition_point(|&m| m <= at) - 1;
        dups_per_gen[generation] += 1;
        if generation == 0 {
            early.entry(w).or_default().push(n);
        }
    }
    for (w, lines) in early.iter_mut() {
        lines.sort_unstable();
        eprintln!("{what}: W{w:02} duplicated before the first kill: {}", ranges(lines, 12));
    }
    let copied = rig.copied_while_down.lock().unwrap().clone();
    let copied_while_down = |k: usize| copied.get(&k).copied().unwrap_or(0);
    let measured_bound = |k: usize| windows[k - 1].lines + copied_while_down(k);
    let documented_bound = |k: usize| PER_KILL_BOUND + windows[k - 1].unrecorded_copies + copied_while_down(k);
    eprintln!(
        "{what}: {WRITERS} writers, {total} lines in {elapsed:.1} s = {:.0} lines/s; {}; {kills} kills",
        total as f64 / elapsed,
        rotation_summary(&rig, elapsed),
    );
    for (k, &dups) in dups_per_gen.iter().enumerate().skip(1) {
        eprintln!(
            "{what}: kill {k}: {} lines uncheckpointed at the kill ({} in unrecorded copies), {} lines in \
             copies made while down; {} duplicates from the restarted agent (bounds: measured {}, documented {})",
            windows[k - 1].lines,
            windows[k - 1].unrecorded_copies,
            copied_while_down(k),
            dups,
            measured_bound(k),
            documented_bound(k)
        );
    }
    eprintln!("{what}: {} duplicates before the first kill", dups_per_gen[0]);
    d.print(what);
    let logs: Vec<String> = log_paths.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect();
    assert!(
        d.lost == 0 && d.corrupt == 0 && delivered,
        "{what}: {} lost, {} corrupt (e.g. {:?})\n{}\nagent logs about the damaged files:\n{}",
        d.lost,
        d.corrupt,
        seen.corrupt_examples,
        d.details.join("\n"),
        d.evidence(&logs, 120)
    );
    assert_eq!(
        dups_per_gen[0],
        0,
        "{what}: duplicates before any kill:\n{}\nagent logs about the damaged files:\n{}",
        d.details.join("\n"),
        d.evidence(&logs, 120)
    );
    for (k, &dups) in dups_per_gen.iter().enumerate().skip(1) {
        // The measured window is read from the checkpoint file just before the kill, while the
        // agent still sends: it can undercount, so it is printed above, not asserted.
        let bound = documented_bound(k);
        assert!(dups <= bound, "{what}: kill {k}: {dups} duplicates, more than {bound}\n{}", d.details.join("\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// Reproducers of agent bugs the stress tests ran into
// ---------------------------------------------------------------------------------------------

/// `logs/s0/` with `app.log` holding lines 0..n of writer 0, and the agent tailing it; returns
/// once every line arrived.
fn one_delivered_file(n: u64) -> (Arc<FakeKinesis>, Workspace, PathBuf, AgentProcess, Collector) {
    let fake = Arc::new(FakeKinesis::start());
    let ws = Workspace::new();
    ws.write_config(config(&ws, &fake));
    std::fs::create_dir(ws.logs.join("s0")).expect("create s0");
    let live = ws.logs.join("s0").join(LIVE);
    write_lines(&live, 0..n, "W00");
    let agent = ws.spawn(false, &["-L", LOG_FILTER]);
    let collector = Collector::start(fake.clone(), 1);
    assert!(collector.wait_delivered(&[n]), "the first lines were not delivered");
    (fake, ws, live, agent, collector)
}

/// Lost and duplicated lines of writer 0 among `0..written`, printed.
fn tally_one(what: &str, collector: &mut Collector, written: u64) -> (Vec<u64>, Vec<u64>) {
    collector.finish();
    let seen = collector.seen.lock().unwrap();
    let lost: Vec<u64> = (0..written).filter(|&n| seen.count(0, n) == 0).collect();
    let mut dups: Vec<u64> = seen.dup_at.iter().map(|&(_, n, _)| n).collect();
    dups.sort_unstable();
    eprintln!("{what}: lost {} [{}], duplicated {} [{}]", lost.len(), ranges(&lost, 5), dups.len(), ranges(&dups, 5));
    (lost, dups)
}

/// logrotate `copytruncate` creates the copy, then fills it. A copy found while still empty is
/// taken for a new file (its head is too short to compare with the live file's) and read from
/// 0: every line the live file had already delivered is sent again (about once in 15 stress runs
/// with `std::fs::copy`; the stress tests rename a filled copy into place instead). Deferring
/// small new files fixed this but lost files rotated away before they were opened (olddir
/// rotation at 700 ms): the fix must keep the new file's handle open while it waits.
#[test]
fn copy_found_before_it_is_filled_is_not_sent_again() {
    let _serial = serial();
    let what = "copy found before it is filled";
    let (_fake, _ws, live, mut agent, mut collector) = one_delivered_file(2_000);
    let copy = live.with_file_name(format!("{LIVE}.1"));
    let mut f = File::create(&copy).expect("create the copy");
    // The agent sees the empty copy (an inotify event and a scan) before it is filled.
    std::thread::sleep(Duration::from_millis(500));
    f.write_all(&std::fs::read(&live).expect("read app.log")).expect("fill the copy");
    truncate(&live);
    // After the truncation was noticed (the agent had read 202,000 bytes), the next lines.
    std::thread::sleep(Duration::from_millis(500));
    write_lines(&live, 2_000..2_100, "W00");
    collector.wait_delivered(&[2_100]);
    std::thread::sleep(Duration::from_millis(2_000));
    sigterm(&mut agent);
    let (lost, dups) = tally_one(what, &mut collector, 2_100);
    assert!(lost.is_empty() && dups.is_empty(), "{what}: agent log:\n{}", tail(&agent.log(), 4_000));
}

/// copytruncate while lines are in flight (sent, not yet acknowledged: here the endpoint hangs),
/// then SIGKILL: the lines in flight must not be lost. (The copy was once checkpointed where the
/// live file had been *read*; the live file now waits until what it read is acknowledged before
/// starting over, and only then is the copy started there.)
#[test]
fn kill_after_copytruncate_keeps_lines_in_flight() {
    let _serial = serial();
    let what = "kill after copytruncate";
    let (fake, ws, live, mut agent, mut collector) = one_delivered_file(2_000);
    // Lines 2000..2300 are read and sent, never acknowledged.
    fake.set_down(Some(DownMode::Hang));
    write_lines(&live, 2_000..2_300, "W00");
    std::thread::sleep(Duration::from_millis(1_500));
    let copy = live.with_file_name(format!("{LIVE}.1"));
    let tmp = live.with_file_name("copy.tmp");
    let mut cursor = LogCursor::at_end(agent.log_path());
    std::fs::copy(&live, &tmp).expect("copy app.log");
    rename(&tmp, &copy);
    truncate(&live);
    // The agent notices the truncation; the copy must not get a checkpoint past line 2000 while
    // lines 2000..2300 are unacknowledged.
    let needle = format!("{} was truncated", live.display());
    assert!(cursor.wait_for(&needle, Duration::from_secs(5), || false), "{what}: the truncation was not noticed");
    std::thread::sleep(Duration::from_millis(1_500));
    let ck = ws.checkpoint_of(&copy);
    eprintln!("{what}: checkpoint of the copy {ck:?} while lines 2000..2300 are unacknowledged");
    assert!(ck.is_none_or(|o| o <= 2_000 * LINE_BYTES), "{what}: the copy's checkpoint passes unacknowledged lines");
    agent.sigkill();
    agent.wait_exit(Duration::from_secs(5));
    fake.set_down(None);
    let mut agent = ws.spawn(false, &["-L", LOG_FILTER]);
    write_lines(&live, 2_300..2_400, "W00");
    collector.wait_delivered(&[2_400]);
    std::thread::sleep(Duration::from_millis(1_500));
    sigterm(&mut agent);
    let (lost, _) = tally_one(what, &mut collector, 2_400);
    assert!(lost.is_empty(), "{what}: {} lines lost; agent log after the restart:\n{}", lost.len(), agent.log());
}
