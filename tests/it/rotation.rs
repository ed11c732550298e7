//! End-to-end rotation matrix: the real agent binary (daemon) tails files that a writer thread
//! keeps appending numbered lines to while they are rotated in every common way (logrotate
//! `create`, with the archives inside or outside the pattern or in an `olddir`; a new file per
//! period; truncation; deletion; fast rotation; a restart between rotations; `copytruncate`).
//! Each test waits (bounded) until every line reached `FakeKinesis`, stops the agent with SIGTERM
//! and checks that every line arrived exactly once, printing the lost / duplicated counts.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const PREFIX: &str = "R";
/// How long a test waits for the lines to arrive once the writer has stopped.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Give up waiting earlier when nothing arrived for this long (something was lost).
const NO_PROGRESS: Duration = Duration::from_secs(7);

/// agent.json for one Kinesis flow over `pattern` on the fake, with short backoffs.
fn fake_config(ws: &Workspace, fake: &FakeKinesis, pattern: &str) -> Value {
    json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": TEST_REGION,
        "flows": [{
            "filePattern": ws.pattern(pattern),
            "kinesisStream": unique_name("rotation"),
            "initialPosition": "START_OF_FILE",
            "maxBufferAgeMillis": 1000,
            "retryInitialBackoffMillis": 50,
            "retryMaxBackoffMillis": 1000
        }]
    })
}

/// A fake endpoint and a workspace whose agent.json tails `pattern` (relative to `logs/`).
fn setup(pattern: &str) -> (FakeKinesis, Workspace) {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(fake_config(&ws, &fake, pattern));
    (fake, ws)
}

// ---------------------------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------------------------

struct WriterState {
    file: File,
    path: PathBuf,
    next: u64,
}

struct WriterShared {
    state: Mutex<WriterState>,
    stop: AtomicBool,
    paused: AtomicBool,
    written: AtomicU64,
}

/// A thread appending `line_text(PREFIX, n)` lines (n = 0, 1, 2…) at a steady rate, in bursts
/// every few milliseconds, each burst one `write` through an `O_APPEND` handle, as a logging
/// application does. The handle stays on the file it opened until `reopen` (the application's
/// reaction to logrotate's postrotate signal), so lines keep landing in a renamed file until then.
struct Writer {
    shared: Arc<WriterShared>,
    thread: Option<JoinHandle<()>>,
}

fn open_append(path: &Path) -> File {
    OpenOptions::new().create(true).append(true).open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

impl Writer {
    fn start(path: &Path, lines_per_sec: u64) -> Writer {
        let shared = Arc::new(WriterShared {
            state: Mutex::new(WriterState { file: open_append(path), path: path.to_path_buf(), next: 0 }),
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            written: AtomicU64::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let rate = lines_per_sec as f64;
            let mut credit = 0.0f64;
            let mut last = Instant::now();
            while !s.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                let now = Instant::now();
                // At most 50 ms worth of lines per burst, even after a stall.
                credit = (credit + rate * (now - last).as_secs_f64()).min(rate / 20.0 + 1.0);
                last = now;
                let n = credit.floor() as u64;
                if n == 0 {
                    continue;
                }
                let mut st = s.state.lock().unwrap();
                if s.paused.load(Ordering::Relaxed) {
                    credit = 0.0;
                    continue;
                }
                credit -= n as f64;
                let mut buf = String::with_capacity(n as usize * (DEFAULT_LINE_LEN + 1));
                for i in st.next..st.next + n {
                    buf.push_str(&line_text(PREFIX, i));
                    buf.push('\n');
                }
                let path = st.path.clone();
                st.file.write_all(buf.as_bytes()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                st.next += n;
                s.written.store(st.next, Ordering::Relaxed);
            }
        });
        Writer { shared, thread: Some(thread) }
    }

    /// Lines written so far.
    fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Switch to `path` (created if needed) for the next lines.
    fn reopen(&self, path: &Path) {
        let mut st = self.shared.state.lock().unwrap();
        st.file = open_append(path);
        st.path = path.to_path_buf();
    }

    /// Runs `f` while no line is being written (the writer waits).
    fn locked<R>(&self, f: impl FnOnce() -> R) -> R {
        let _st = self.shared.state.lock().unwrap();
        f()
    }

    /// No more lines until `resume`; returns once no write is in progress.
    fn pause(&self) -> u64 {
        self.shared.paused.store(true, Ordering::Relaxed);
        let st = self.shared.state.lock().unwrap();
        st.next
    }

    fn resume(&self) {
        self.shared.paused.store(false, Ordering::Relaxed);
    }

    /// Stops the thread; returns how many lines were written.
    fn finish(mut self) -> u64 {
        self.stop_thread();
        self.written()
    }

    fn stop_thread(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread panicked");
        }
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
// Rotations
// ---------------------------------------------------------------------------------------------

/// `archive(keep)` is deleted, `archive(i)` → `archive(i + 1)`, `live` → `archive(1)` (logrotate
/// `rotate keep`, `create`); with `keep == 0` nothing is ever deleted (archives shift forever).
/// Then a new empty `live` is created (the writer still writes to the renamed file until its
/// `reopen`). `archive`'s directory must exist.
fn rotate_rename(live: &Path, archive: impl Fn(u32) -> PathBuf, keep: u32) {
    let top = if keep == 0 { (1..).find(|&i| !archive(i).exists()).unwrap() } else { keep };
    if keep > 0 && archive(keep).exists() {
        std::fs::remove_file(archive(keep)).expect("delete the oldest archive");
    }
    for i in (1..top).rev() {
        if archive(i).exists() {
            std::fs::rename(archive(i), archive(i + 1)).expect("shift an archive");
        }
    }
    std::fs::rename(live, archive(1)).expect("rename the live file");
    OpenOptions::new().create_new(true).write(true).open(live).expect("create the new live file");
}

/// `logs/<name>.<i>`.
fn numbered(dir: &Path, name: &str) -> impl Fn(u32) -> PathBuf {
    let dir = dir.to_path_buf();
    let name = name.to_string();
    move |i| dir.join(format!("{name}.{i}"))
}

fn truncate(path: &Path) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(0))
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

/// Whether process `pid` has `path` open (per /proc/PID/fd).
fn has_open(pid: u32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
}

/// Polls until the agent has `path` open; false after `timeout`.
fn wait_open(agent: &AgentProcess, path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if has_open(agent.pid(), path) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Waiting and checking
// ---------------------------------------------------------------------------------------------

/// Waits until the fake holds at least `expected` records (the count stops growing for
/// `NO_PROGRESS`, or `DELIVERY_TIMEOUT` passes: then something was lost); returns the count.
fn wait_for_count(fake: &FakeKinesis, expected: u64) -> u64 {
    wait_for_progress(expected, NO_PROGRESS, DELIVERY_TIMEOUT, "records", || fake.record_count() as u64)
}

/// Waits for everything, then a little longer (late duplicates: lines re-read after a rotation
/// would leave within `maxBufferAgeMillis`), then stops the agent with SIGTERM (exit 0).
fn wait_and_stop(fake: &FakeKinesis, agent: &mut AgentProcess, expected: u64) {
    wait_for_count(fake, expected);
    std::thread::sleep(Duration::from_millis(1_500));
    stop(agent);
}

fn stop(agent: &mut AgentProcess) {
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM; log:\n{}", tail(&agent.log(), 8192));
}

/// What arrived, compared with lines `0..written`.
struct Tally {
    written: u64,
    received: usize,
    /// Line numbers that never arrived.
    lost: Vec<u64>,
    /// Extra copies (a line received 3 times counts 2).
    duplicated: u64,
    /// Numbers received more than once.
    duplicated_lines: u64,
    /// Lines that are not exactly one of the written lines (spliced, cut, out of range).
    corrupt: Vec<String>,
    report: Result<(), String>,
}

impl Tally {
    fn of(records: &[Vec<u8>], written: u64) -> Tally {
        let mut numbers = Vec::new();
        let mut corrupt = Vec::new();
        for line in split_lines(records) {
            let text = String::from_utf8_lossy(&line);
            let n = text.split(' ').nth(1).and_then(|t| t.parse::<u64>().ok());
            match n {
                Some(n) if n < written && text == line_text(PREFIX, n) => numbers.push(n),
                _ => corrupt.push(text.chars().take(120).collect()),
            }
        }
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for &n in &numbers {
            *counts.entry(n).or_insert(0) += 1;
        }
        let lost: Vec<u64> = (0..written).filter(|n| !counts.contains_key(n)).collect();
        let duplicated = counts.values().map(|c| c - 1).sum();
        let duplicated_lines = counts.values().filter(|&&c| c > 1).count() as u64;
        let report = check_numbers_exactly_once(0..written, &numbers);
        Tally { written, received: records.len(), lost, duplicated, duplicated_lines, corrupt, report }
    }

    fn print(&self, kind: &str) {
        eprintln!(
            "ROTATION {kind}: written {}, received {}, lost {}, duplicated {} ({} lines), corrupt {}",
            self.written,
            self.received,
            self.lost.len(),
            self.duplicated,
            self.duplicated_lines,
            self.corrupt.len()
        );
        if let Err(msg) = &self.report {
            eprintln!("ROTATION {kind}: {msg}");
        }
        if !self.corrupt.is_empty() {
            eprintln!("ROTATION {kind}: first corrupt lines: {:?}", &self.corrupt[..self.corrupt.len().min(5)]);
        }
    }

    fn assert_exactly_once(&self, kind: &str, agent: &AgentProcess) {
        assert!(
            self.lost.is_empty() && self.duplicated == 0 && self.corrupt.is_empty(),
            "{kind}: {} lost, {} duplicated, {} corrupt: {}\nagent log:\n{}",
            self.lost.len(),
            self.duplicated,
            self.corrupt.len(),
            self.report.as_ref().err().map(String::as_str).unwrap_or(""),
            tail(&agent.log(), 6000)
        );
    }
}

/// Wait, stop, tally and print (with, when something went wrong, which of the files still in
/// `logs` were not received exactly once).
fn finish(kind: &str, fake: &FakeKinesis, agent: &mut AgentProcess, ws: &Workspace, written: u64) -> Tally {
    wait_and_stop(fake, agent, written);
    let records = fake.record_data();
    let t = Tally::of(&records, written);
    t.print(kind);
    if t.report.is_err() {
        per_file_report(kind, &ws.logs, &records);
    }
    t
}

/// For each file under `dir` (one level) whose lines were not all received exactly once: its
/// line range and how many times its lines were received.
fn per_file_report(kind: &str, dir: &Path, records: &[Vec<u8>]) {
    let mut counts: HashMap<u64, u32> = HashMap::new();
    for line in split_lines(records) {
        let text = String::from_utf8_lossy(&line);
        if let Some(n) = text.split(' ').nth(1).and_then(|t| t.parse::<u64>().ok()) {
            *counts.entry(n).or_insert(0) += 1;
        }
    }
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    paths.sort();
    for p in paths {
        let Ok(bytes) = std::fs::read(&p) else { continue };
        let nums: Vec<u64> = split_lines(&[bytes])
            .iter()
            .filter_map(|l| String::from_utf8_lossy(l).split(' ').nth(1).and_then(|t| t.parse().ok()))
            .collect();
        let mut times: Vec<u32> = nums.iter().map(|n| counts.get(n).copied().unwrap_or(0)).collect();
        times.sort_unstable();
        times.dedup();
        if times != [1] && !nums.is_empty() {
            eprintln!(
                "ROTATION {kind}: {}: lines {}..={} received {times:?} times",
                p.file_name().unwrap_or_default().to_string_lossy(),
                nums[0],
                nums[nums.len() - 1]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------------------------

/// A writer at 1,000 lines/s on `app.log` while it is renamed `rotations` times, `every` apart,
/// into `archive_dir` (archives shift up to `.3`, the oldest is deleted) and re-created; the
/// writer reopens `reopen_after` later (lines keep landing in the renamed file until then).
/// Asserts every line arrived exactly once.
fn rename_rotation(
    kind: &str,
    pattern: &str,
    archive_subdir: Option<&str>,
    rotations: u32,
    every: u64,
    reopen_after: u64,
) {
    let (fake, ws) = setup(pattern);
    let live = ws.file("app.log");
    let archive_dir = match archive_subdir {
        Some(d) => {
            let dir = ws.logs.join(d);
            std::fs::create_dir(&dir).unwrap();
            dir
        }
        None => ws.logs.clone(),
    };
    let writer = Writer::start(&live, 1_000);
    let mut agent = ws.spawn(false, &[]);
    for _ in 0..rotations {
        std::thread::sleep(Duration::from_millis(every));
        rotate_rename(&live, numbered(&archive_dir, "app.log"), 3);
        std::thread::sleep(Duration::from_millis(reopen_after));
        writer.reopen(&live);
    }
    std::thread::sleep(Duration::from_millis(500));
    let written = writer.finish();
    let t = finish(kind, &fake, &mut agent, &ws, written);
    t.assert_exactly_once(kind, &agent);
}

/// logrotate `create` (the default): `app.log` → `app.log.1`, a new `app.log`, the writer
/// reopens 30 ms later. Pattern `app.log*`: the archives match too.
#[test]
fn rename_create_pattern_matches_archives() {
    rename_rotation("rename, pattern app.log*", "app.log*", None, 7, 700, 30);
}

/// logrotate `create` with a pattern that matches only the live name (`app.log`): a renamed file
/// no longer matches and must be drained through its open handle, including the lines the writer
/// adds before it reopens (100 ms). Rotations 2 s apart, so an archive is deleted after its
/// tailer closed it (5 s grace) and its inode may be reused by the next `app.log`.
#[test]
fn rename_create_pattern_matches_live_name_only() {
    rename_rotation("rename, pattern app.log only", "app.log", None, 6, 2_000, 100);
}

/// logrotate `olddir`: `logs/app.log` → `logs/old/app.log.1` (shifting up to `.3`), a new
/// `logs/app.log`; pattern `logs/*.log` does not reach `old/`.
#[test]
fn rename_into_olddir() {
    rename_rotation("rename into olddir", "*.log", Some("old"), 7, 700, 50);
}

/// A new file per period (`app-<n>.log`, the writer switches to it); files three periods old are
/// deleted. Pattern `app-*.log`.
#[test]
fn create_new_file_per_period() {
    let (fake, ws) = setup("app-*.log");
    let name = |n: u32| ws.file(&format!("app-{n:04}.log"));
    let writer = Writer::start(&name(0), 1_000);
    let mut agent = ws.spawn(false, &[]);
    for n in 1..=8 {
        std::thread::sleep(Duration::from_millis(700));
        writer.reopen(&name(n));
        if n >= 3 {
            std::fs::remove_file(name(n - 3)).expect("delete an old file");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let written = writer.finish();
    let t = finish("create app-<n>.log", &fake, &mut agent, &ws, written);
    t.assert_exactly_once("create app-<n>.log", &agent);
}

/// Truncation without a copy: the writer stops, everything written so far arrives, the file is
/// truncated to 0 and the writer resumes (through its `O_APPEND` handle, so from 0). Three times.
#[test]
fn truncate_after_everything_was_read() {
    let (fake, ws) = setup("app.log");
    let live = ws.file("app.log");
    let writer = Writer::start(&live, 1_000);
    let mut agent = ws.spawn(false, &[]);
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(1_500));
        let written = writer.pause();
        let got = wait_for_count(&fake, written);
        assert!(got >= written, "round {round}: only {got} of {written} lines arrived before the truncation");
        truncate(&live);
        writer.resume();
    }
    std::thread::sleep(Duration::from_millis(1_500));
    let written = writer.finish();
    let t = finish("truncate", &fake, &mut agent, &ws, written);
    t.assert_exactly_once("truncate", &agent);
}

/// Deletion: a batch of lines is written to `app.log`, deleted as soon as the agent has opened it
/// (so usually before it was all read), and a new `app.log` is created with the next batch, after
/// a varying pause (the deleted file's inode may be free again by then, and reused). The deleted
/// files are drained through their open handles.
#[test]
fn delete_and_recreate_same_name() {
    const BATCH: u64 = 20_000;
    let (fake, ws) = setup("app.log");
    let live = ws.file("app.log");
    let mut agent = ws.spawn(false, &[]);
    let pauses_ms = [0u64, 300, 1_000, 0, 1_500, 600, 2_000, 100];
    let mut written = 0;
    let mut inodes = Vec::new();
    for (i, pause) in pauses_ms.iter().enumerate() {
        write_lines(&live, written..written + BATCH, PREFIX);
        written += BATCH;
        inodes.push(file_id(&live).1);
        assert!(wait_open(&agent, &live, Duration::from_secs(10)), "batch {i}: the agent never opened app.log");
        std::fs::remove_file(&live).expect("delete app.log");
        std::thread::sleep(Duration::from_millis(*pause));
    }
    let distinct: HashSet<u64> = inodes.iter().copied().collect();
    eprintln!("delete: {} files, {} distinct inodes: {inodes:?}", inodes.len(), distinct.len());
    let t = finish("delete + recreate", &fake, &mut agent, &ws, written);
    t.assert_exactly_once("delete + recreate", &agent);
}

/// Fast rotation: logrotate `create` 10 times a second for 3 s (archives up to `.3`, the oldest
/// deleted, so a file lives about 0.4 s) while writing 2,000 lines/s; pattern `app.log*`.
#[test]
fn fast_rename_rotation() {
    let (fake, ws) = setup("app.log*");
    let live = ws.file("app.log");
    let writer = Writer::start(&live, 2_000);
    let mut agent = ws.spawn(false, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut rotations = 0;
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(95));
        rotate_rename(&live, numbered(&ws.logs, "app.log"), 3);
        std::thread::sleep(Duration::from_millis(5));
        writer.reopen(&live);
        rotations += 1;
    }
    std::thread::sleep(Duration::from_millis(300));
    let written = writer.finish();
    eprintln!("fast rotation: {rotations} rotations in {:?}", started.elapsed());
    let t = finish("fast rename rotation", &fake, &mut agent, &ws, written);
    t.assert_exactly_once("fast rename rotation", &agent);
}

/// Restart while rotated: the daemon runs, is stopped with SIGTERM, `app.log` is rotated twice
/// (rename, `create`) while the writer goes on, and a new daemon starts: the old files resume at
/// their checkpoints, the new ones are read from 0.
#[test]
fn restart_after_rotations_while_stopped() {
    let (fake, ws) = setup("app.log*");
    let live = ws.file("app.log");
    let writer = Writer::start(&live, 500);
    let mut agent = ws.spawn(false, &[]);
    std::thread::sleep(Duration::from_millis(2_000));
    stop(&mut agent);
    let before = fake.record_count();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(600));
        rotate_rename(&live, numbered(&ws.logs, "app.log"), 0);
        std::thread::sleep(Duration::from_millis(20));
        writer.reopen(&live);
    }
    std::thread::sleep(Duration::from_millis(600));
    let mut agent = ws.spawn(false, &[]);
    std::thread::sleep(Duration::from_millis(2_000));
    let written = writer.finish();
    eprintln!("restart: {before} records before the restart, {written} lines written");
    let t = finish("restart while rotated", &fake, &mut agent, &ws, written);
    t.assert_exactly_once("restart while rotated", &agent);
}

/// copytruncate while the agent is stopped (the copy matches the pattern), the writer going on:
/// at the restart the copy is read from where its original had been read (the lines written
/// after the stop and before the copy are in it), and the live file, holding new lines, from 0.
/// Everything exactly once.
#[test]
fn copytruncate_while_stopped() {
    let (fake, ws) = setup("app.log*");
    let live = ws.file("app.log");
    let writer = Writer::start(&live, 500);
    let mut agent = ws.spawn(false, &[]);
    std::thread::sleep(Duration::from_millis(2_000));
    stop(&mut agent);
    std::thread::sleep(Duration::from_millis(500));
    writer.locked(|| {
        std::fs::copy(&live, ws.file("app.log.1")).expect("copy app.log");
        truncate(&live);
    });
    std::thread::sleep(Duration::from_millis(700));
    let mut agent = ws.spawn(false, &[]);
    std::thread::sleep(Duration::from_millis(2_000));
    let written = writer.finish();
    let t = finish("copytruncate while stopped", &fake, &mut agent, &ws, written);
    t.assert_exactly_once("copytruncate while stopped", &agent);
    assert!(
        agent.log().contains("made while the agent was stopped"),
        "the copy was recognised; log:\n{}",
        tail(&agent.log(), 4000)
    );
}

/// 100,000 lines (10 MB, ten times the in-flight budget) in `app.log*` while the destination
/// refuses connections for `down`, so the agent is held back; 3 s in, `app.log` is copied to
/// `app.log.1` and truncated, and lines `100_000..end` are written to it. Exactly once.
fn copytruncate_while_held_back(kind: &str, down: Duration, end: u64) {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let mut config = fake_config(&ws, &fake, "app.log*");
    config["maxInFlightBytes"] = json!(1_048_576);
    ws.write_config(config);
    let live = ws.file("app.log");
    write_lines(&live, 0..100_000, PREFIX);
    fake.set_down_for(DownMode::Refuse, down);
    let mut agent = ws.spawn(false, &[]);
    std::thread::sleep(Duration::from_secs(3));
    std::fs::copy(&live, ws.file("app.log.1")).expect("copy app.log");
    truncate(&live);
    write_lines(&live, 100_000..end, PREFIX);
    // Until the destination is back (nothing can arrive before).
    std::thread::sleep(down.saturating_sub(Duration::from_secs(2)));
    let t = finish(kind, &fake, &mut agent, &ws, end);
    t.assert_exactly_once(kind, &agent);
}

/// copytruncate while the destination is down for longer than a copy waits for its original to
/// be truncated (30 s): the original's tailer is held back and cannot see the truncation until
/// the destination is back. The copy waits for it (it used to give up and start at its own end,
/// losing the backlog).
#[test]
fn copytruncate_while_the_destination_is_down() {
    copytruncate_while_held_back("copytruncate while the destination is down", Duration::from_secs(36), 100_100);
}

/// The application writes more after the truncation (6 MB) than the agent had read before it
/// (the budget, plus a few reads): the file never looks shorter than the agent's offset. Its
/// changed first bytes give the truncation away; the copy resumes where the original was read,
/// the new content is read from its start.
#[test]
fn copytruncate_regrown_past_the_offset_while_held_back() {
    copytruncate_while_held_back(
        "copytruncate regrown past the offset while held back",
        Duration::from_secs(8),
        160_000,
    );
}

/// copytruncate (`app.log` copied to `app.log.1`, archives shifting, then truncated in place; the
/// writer is held during the copy and truncation so that no line falls between them).
fn copytruncate_run(pattern: &str, kind: &str) -> (Tally, AgentProcess, Workspace) {
    let (fake, ws) = setup(pattern);
    let live = ws.file("app.log");
    let writer = Writer::start(&live, 1_000);
    let mut agent = ws.spawn(false, &[]);
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1_000));
        writer.locked(|| {
            let archive = numbered(&ws.logs, "app.log");
            let top = (1..).find(|&i| !archive(i).exists()).unwrap();
            for i in (1..top).rev() {
                std::fs::rename(archive(i), archive(i + 1)).expect("shift an archive");
            }
            std::fs::copy(&live, archive(1)).expect("copy app.log");
            truncate(&live);
        });
    }
    std::thread::sleep(Duration::from_millis(1_000));
    let written = writer.finish();
    let t = finish(kind, &fake, &mut agent, &ws, written);
    (t, agent, ws)
}

/// The lines in `logs/app.log.*` (the copies).
fn lines_in_copies(ws: &Workspace) -> HashSet<u64> {
    let mut copies = Vec::new();
    for e in std::fs::read_dir(&ws.logs).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("app.log.") {
            copies.push(std::fs::read(e.path()).unwrap());
        }
    }
    parse_line_numbers(&copies).into_iter().collect()
}

/// copytruncate with pattern `app.log` (the copies do not match): the lines the agent had not
/// read when the file was truncated are lost (inherent: they are only in the copy); none may be
/// duplicated, and every lost line must be in a copy.
#[test]
fn copytruncate_copy_not_matched() {
    let kind = "copytruncate, pattern app.log";
    let (t, agent, ws) = copytruncate_run("app.log", kind);
    let in_copies = lines_in_copies(&ws);
    let lost_elsewhere: Vec<u64> = t.lost.iter().copied().filter(|n| !in_copies.contains(n)).collect();
    eprintln!("ROTATION {kind}: {} lost (inherent: unread at the truncation)", t.lost.len());
    assert!(
        t.duplicated == 0 && t.corrupt.is_empty() && lost_elsewhere.is_empty(),
        "{kind}: {} duplicated, {} corrupt, {} lost that are in no copy ({:?}…): {}\nagent log:\n{}",
        t.duplicated,
        t.corrupt.len(),
        lost_elsewhere.len(),
        &lost_elsewhere[..lost_elsewhere.len().min(5)],
        t.report.as_ref().err().map(String::as_str).unwrap_or(""),
        tail(&agent.log(), 6000)
    );
}

/// copytruncate with pattern `app.log*` (the copies match): each copy is recognised by its head
/// fingerprint as the content of the live file and read only from where the live file had been
/// read before its truncation, so nothing is sent twice.
#[test]
fn copytruncate_copy_matched() {
    let kind = "copytruncate, pattern app.log*";
    let (t, agent, _ws) = copytruncate_run("app.log*", kind);
    t.assert_exactly_once(kind, &agent);
}

/// Faster than logrotate can go, to widen a race: `app.log` renamed to `app.log.<k>` (dateext
/// style: nothing shifts, nothing is deleted, so every line stays readable) and re-created every
/// 10 ms for 2 s while writing 2,000 lines/s; pattern `app.log*`.
///
/// Discovery stats `app.log` during its scan, then opens it by path; a rotation in between must
/// not make it tail the next file under the previous one's identity (which once lost one file
/// and duplicated the next): the opened file's (device, inode) is checked.
#[test]
fn very_fast_dateext_rotation() {
    let kind = "very fast dateext rotation";
    let (fake, ws) = setup("app.log*");
    let live = ws.file("app.log");
    let writer = Writer::start(&live, 2_000);
    let mut agent = ws.spawn(false, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut k = 0;
    while started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
        k += 1;
        std::fs::rename(&live, ws.file(&format!("app.log.{k:05}"))).expect("rename app.log");
        OpenOptions::new().create_new(true).write(true).open(&live).expect("create app.log");
        writer.reopen(&live);
    }
    std::thread::sleep(Duration::from_millis(300));
    let written = writer.finish();
    eprintln!("{kind}: {k} rotations");
    let t = finish(kind, &fake, &mut agent, &ws, written);
    t.assert_exactly_once(kind, &agent);
}

/// Creates `dir/<stem>-<i>.tmp` files until one gets inode `ino` (ext4 hands out the lowest free
/// inode of the directory's group; the others are kept so that it moves on). None after 3,000
/// (another file system, or another process took it).
fn create_with_inode(dir: &Path, stem: &str, ino: u64) -> Option<PathBuf> {
    for i in 0..3_000 {
        let p = dir.join(format!("{stem}-{i}.tmp"));
        File::create(&p).expect("create a file");
        if file_id(&p).1 == ino {
            return Some(p);
        }
    }
    None
}

/// Pattern `app.log` (live name only): `app.log` is renamed to `app.log.1`, which is drained and
/// closed after the unmatched grace (5 s), then deleted; a new `app.log` is moved into place with
/// its content already written (an atomic `mv`), on the freed inode. It must be read from 0.
/// (Before 5fd1643 discovery kept the closed tailer's handle under that inode and resumed the new
/// file at the old one's offset, 101,000 bytes: its first 1,000 lines were lost.)
#[test]
fn reused_inode_of_closed_unmatched_archive() {
    let kind = "inode reused after unmatched archive deleted";
    let (fake, ws) = setup("app.log");
    let live = ws.file("app.log");
    write_lines(&live, 0..1_000, PREFIX);
    let mut agent = ws.spawn(false, &[]);
    assert_eq!(wait_for_count(&fake, 1_000), 1_000, "the first file was not delivered");
    let archive = ws.file("app.log.1");
    std::fs::rename(&live, &archive).expect("rename app.log");
    // Drained, then closed after the 5 s grace.
    std::thread::sleep(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(15);
    while has_open(agent.pid(), &archive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!has_open(agent.pid(), &archive), "the agent did not close the unmatched archive");
    let old_ino = file_id(&archive).1;
    std::fs::remove_file(&archive).expect("delete the archive");
    let Some(tmp) = create_with_inode(&ws.logs, "incoming", old_ino) else {
        eprintln!("{kind}: inode {old_ino} was not reused; scenario not exercised");
        stop(&mut agent);
        return;
    };
    write_lines(&tmp, 1_000..3_000, PREFIX);
    std::fs::rename(&tmp, &live).expect("move the new file into place");
    let t = finish(kind, &fake, &mut agent, &ws, 3_000);
    t.assert_exactly_once(kind, &agent);
}

/// A file rotated out of the pattern's reach is named in its checkpoint where it is now, with the
/// live name it had: three rotations do not leave three entries that all say `app.log`.
#[test]
fn checkpoints_of_rotated_files_name_where_they_are_and_what_they_were() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let live = ws.file("app.log");
    write_lines(&live, 0..10, "A");
    ws.write_config(serde_json::json!({
        "kinesis.endpoint": fake.endpoint(), "kinesis.region": TEST_REGION,
        "flows": [{ "filePattern": live.display().to_string(), "kinesisStream": "s",
                    "initialPosition": "START_OF_FILE", "maxBufferAgeMillis": 1000 }]
    }));
    let mut agent = ws.spawn(false, &[]);
    for round in 1..=2u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while fake.record_count() < (10 * round) as usize {
            assert!(std::time::Instant::now() < deadline, "{}", agent.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::rename(&live, ws.file(&format!("app.log.{round}"))).unwrap();
        write_lines(&live, 10 * round..10 * (round + 1), "A");
    }
    let want = |name: &str| {
        let path = ws.file(name);
        let id = file_id(&path);
        (path.display().to_string(), id)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let entries = ws.checkpoints();
        let named = |name: &str| {
            let (path, (dev, ino)) = want(name);
            entries.iter().any(|e| {
                e.dev == dev && e.ino == ino && e.path == path && e.was.as_deref() == Some(live.to_str().unwrap())
            })
        };
        if named("app.log.1") && named("app.log.2") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "checkpoints: {entries:#?}\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(15));
}
