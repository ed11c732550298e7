//! Compressed backfill: `--once` reads `.gz`, `.zst`, `.xz` and `.bz2` files when the
//! `filePattern` names them (and keeps skipping them when it does not), resumes an interrupted
//! archive from its checkpoint (decompressed offset) after a `kill -9`, never sends a finished one
//! again, and on a damaged archive ships what decoded, names the file and the compressed offset,
//! and exits non-zero. The daemon reads an archive once it has stopped changing (its size and time
//! unchanged for `rotateWaitMillis`), once: not while it is being written, not again after a
//! restart or a rename; a damaged one is one error, its good lines shipped, and the daemon goes
//! on; `initialPosition` decides whether the archives present at its very first start are sent.

use crate::common;

use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn text(range: Range<u64>) -> Vec<u8> {
    range.flat_map(|n| format!("{}\n", line_text("Z", n)).into_bytes()).collect()
}

fn compressed(path: &Path, data: &[u8]) {
    let name = path.to_string_lossy().to_string();
    let bytes = if name.ends_with(".gz") {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    } else if name.ends_with(".zst") {
        zstd::stream::encode_all(data, 3).unwrap()
    } else if name.ends_with(".xz") {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    } else {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    std::fs::write(path, bytes).unwrap();
}

fn config(ws: &Workspace, fake: &FakeKinesis, pattern: &str) -> serde_json::Value {
    json!({
        "kinesis.endpoint": fake.endpoint(), "kinesis.region": TEST_REGION,
        "flows": [{ "filePattern": ws.pattern(pattern), "kinesisStream": "backfill", "maxBufferAgeMillis": 1000 }]
    })
}

/// The daemon's archives wait this long unchanged before they are read.
const SETTLE_MS: u64 = 2500;

/// A daemon flow over `pattern`, archives settling for `SETTLE_MS`, with `extra` flow keys.
fn daemon_config(ws: &Workspace, fake: &FakeKinesis, pattern: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut cfg = config(ws, fake, pattern);
    let flow = cfg["flows"][0].as_object_mut().unwrap();
    flow.insert("rotateWaitMillis".into(), json!(SETTLE_MS));
    flow.extend(extra.as_object().unwrap().clone());
    cfg
}

/// `kinesis-agent status --json` in `ws`: the state of each checkpointed file, by path.
fn states(ws: &Workspace) -> std::collections::HashMap<String, String> {
    let out = std::process::Command::new(agent_bin())
        .args(["status", "--json", "-c"])
        .arg(&ws.config)
        .arg("--config-dir")
        .arg(&ws.config_dir)
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = doc["files"].as_array().unwrap().iter();
    files.map(|f| (f["path"].as_str().unwrap().to_owned(), f["state"].as_str().unwrap().to_owned())).collect()
}

/// What the fake holds once it stopped growing for 300 ms (requests it held when the agent was
/// killed are stored late).
fn quiet_count(fake: &FakeKinesis) -> u64 {
    let mut before = fake.record_count() as u64;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = fake.record_count() as u64;
        if now == before {
            return now;
        }
        before = now;
    }
}

/// Waits until the fake holds `n` records; panics with the agent's log otherwise.
fn wait_records(fake: &FakeKinesis, agent: &AgentProcess, n: usize, timeout: Duration) {
    let got = fake.wait_for_count(n, timeout);
    assert!(got >= n, "{got} of {n} records arrived:\n{}", tail(&agent.log(), 6000));
}

/// Waits until the daemon's discovery has made its first scan.
fn wait_started(agent: &mut AgentProcess) {
    assert!(agent.wait_for_log("names compressed files", Duration::from_secs(20)), "{}", agent.log());
}

/// Each format, the last line unterminated in one of them; a pattern that does not name the
/// suffixes keeps skipping them; a second run sends nothing again.
#[test]
fn once_reads_the_archives_the_pattern_names_and_never_sends_them_twice() {
    const N: u64 = 20_000;
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    compressed(&ws.file("app.log.1.gz"), &text(0..N));
    compressed(&ws.file("app.log.2.zst"), &text(N..2 * N));
    compressed(&ws.file("app.log.3.xz"), &text(2 * N..3 * N));
    let mut last = text(3 * N..4 * N);
    last.pop(); // an archive is complete: its last line is sent without its newline
    compressed(&ws.file("app.log.4.bz2"), &last);
    std::fs::write(ws.file("app.log"), text(4 * N..4 * N + 10)).unwrap();

    // `app.log*` does not name a compressed suffix: only the plain file is read.
    ws.write_config(config(&ws, &fake, "app.log*"));
    let (status, log, _) = ws.run_once(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{}", tail(&log, 4000));
    assert_numbers_exactly_once(4 * N..4 * N + 10, &parse_line_numbers(&fake.record_data()));

    fake.reset_observations();
    ws.write_config(config(&ws, &fake, "app.log.*.{gz,zst,xz,bz2}"));
    let (status, log, _) = ws.run_once(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{}", tail(&log, 4000));
    assert_numbers_exactly_once(0..4 * N, &parse_line_numbers(&fake.record_data()));
    // Each finished archive's checkpoint is sealed: its compressed size, shown as shipped.
    let states = states(&ws);
    for name in ["app.log.1.gz", "app.log.2.zst", "app.log.3.xz", "app.log.4.bz2"] {
        let path = ws.file(name);
        assert_eq!(ws.checkpoint_of(&path), Some(file_len(&path)), "{name}");
        assert_eq!(states.get(&path.display().to_string()).map(String::as_str), Some("shipped"), "{name}");
    }
    let (status, log, _) = ws.run_once(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{}", tail(&log, 4000));
    assert_eq!(fake.record_count() as u64, 4 * N, "a finished archive was sent again:\n{}", tail(&log, 4000));
}

/// A backfill killed mid-archive resumes where the checkpoint says: every line arrives, and the
/// duplicates are at most what was sent after the last checkpoint.
#[test]
fn an_interrupted_backfill_resumes_from_its_checkpoint() {
    const N: u64 = 300_000;
    let fake = FakeKinesis::start();
    // Slow enough to stop it halfway.
    fake.set_delay(Duration::from_millis(20));
    let ws = Workspace::new();
    let archive = ws.file("big.log.gz");
    compressed(&archive, &text(0..N));
    ws.write_config(config(&ws, &fake, "*.log.gz"));
    let mut agent = ws.spawn(true, &[]);
    wait_records(&fake, &agent, N as usize / 3, Duration::from_secs(60));
    let killed = kill_mid_archive(&mut agent, &fake, &ws, &archive, N);
    fake.set_delay(Duration::ZERO);
    let (status, log, _) = ws.run_once(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{}", tail(&log, 4000));
    assert_resumed(&fake, N, killed);
}

/// SIGKILLs `agent` in the middle of `archive` (of `n` lines): the lines the fake holds once it
/// stops growing, and the lines below the checkpoint (a decompressed offset: acknowledged).
fn kill_mid_archive(
    agent: &mut AgentProcess,
    fake: &FakeKinesis,
    ws: &Workspace,
    archive: &Path,
    n: u64,
) -> (u64, u64) {
    agent.sigkill();
    agent.wait_exit(Duration::from_secs(10));
    let before = quiet_count(fake);
    assert!(before < n, "it finished before the kill");
    let checkpointed = ws.checkpoint_of(archive).unwrap_or(0) / text(0..1).len() as u64;
    assert!(checkpointed > 0, "the checkpoint did not move before the kill");
    (before, checkpointed)
}

/// After a resume: every line of `0..n` arrived, and no more duplicates than the lines sent after
/// the checkpoint at the kill.
fn assert_resumed(fake: &FakeKinesis, n: u64, (before, checkpointed): (u64, u64)) {
    let mut seen = std::collections::HashSet::new();
    let duplicates = parse_line_numbers(&fake.record_data()).into_iter().filter(|l| !seen.insert(*l)).count() as u64;
    assert!((0..n).all(|l| seen.contains(&l)), "lines are missing after the resume");
    assert!(
        duplicates <= before - checkpointed,
        "{duplicates} duplicates, more than the {} lines sent after the checkpoint",
        before - checkpointed
    );
}

/// A truncated archive: what decoded before the damage arrives, the error names the file and
/// the compressed offset, and the run exits non-zero.
#[test]
fn a_damaged_archive_ships_what_decoded_and_fails_the_run() {
    const N: u64 = 50_000;
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let archive = ws.file("cut.log.gz");
    compressed(&archive, &text(0..N));
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
    ws.write_config(config(&ws, &fake, "*.log.gz"));
    let (status, log, _) = ws.run_once(Duration::from_secs(120));
    assert_eq!(status.code(), Some(2), "a damaged archive must fail the run:\n{}", tail(&log, 4000));
    let line = log.lines().find(|l| l.contains("corrupt or truncated")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains(&archive.display().to_string()) && line.contains("compressed byte"), "{line}");
    let mut numbers = parse_line_numbers(&fake.record_data());
    numbers.sort_unstable();
    let k = numbers.len() as u64;
    assert!(k > N / 4 && k < N, "{k} lines arrived");
    assert_numbers_exactly_once(0..k, &numbers);
}

/// An archive written slowly while the daemon runs (logrotate's `compress`, a copy) is not read
/// while it grows, even in pauses shorter than the settle time: it would decode as truncated.
/// Once settled it is read, every line once, and its checkpoint is sealed (`status`: shipped). A
/// restart, after a rename of the archive (the next rotation), sends none of it again, and a new
/// archive after the restart is read.
#[test]
fn the_daemon_reads_an_archive_once_it_has_settled_and_never_again() {
    const N: u64 = 30_000;
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(daemon_config(&ws, &fake, "app.log.*.gz", json!({})));
    let mut agent = ws.spawn(false, &[]);
    wait_started(&mut agent);
    let archive = ws.file("app.log.1.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&text(0..N)).unwrap();
    let packed = e.finish().unwrap();
    // Four pieces, 1.5 s apart (the settle time is 2.5 s): a half-written gzip, three times.
    let mut last_write = Instant::now();
    for piece in packed.chunks(packed.len() / 4 + 1) {
        append_bytes(&archive, piece);
        last_write = Instant::now();
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(fake.record_count(), 0, "an archive being written was read:\n{}", agent.log());
    }
    while fake.record_count() == 0 {
        assert!(last_write.elapsed() < Duration::from_secs(30), "never read:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let first_record = last_write.elapsed();
    assert!(first_record >= Duration::from_millis(SETTLE_MS - 300), "read {first_record:?} after its last write");
    wait_records(&fake, &agent, N as usize, Duration::from_secs(60));
    // Sealed: the checkpoint is the archive's compressed size, as for a plain file fully sent.
    let len = file_len(&archive);
    assert_eq!(ws.wait_checkpoint(&archive, len, Duration::from_secs(10)), Some(len), "{}", agent.log());
    assert_eq!(states(&ws).get(&archive.display().to_string()).map(String::as_str), Some("shipped"));
    let log = agent.log();
    assert!(!log.contains("corrupt or truncated") && !log.contains("ERROR"), "{log}");
    assert_eq!(log.matches("reading the gzip archive").count(), 1, "{log}");
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(30)).code(), Some(0));

    // The next rotation renames it; the daemon restarts; a new archive appears.
    let rotated = ws.file("app.log.2.gz");
    std::fs::rename(&archive, &rotated).unwrap();
    let mut agent = ws.spawn(false, &[]);
    wait_started(&mut agent);
    compressed(&archive, &text(N..N + 1000));
    wait_records(&fake, &agent, N as usize + 1000, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(SETTLE_MS + 1500));
    assert_numbers_exactly_once(0..N + 1000, &parse_line_numbers(&fake.record_data()));
    assert!(!agent.log().contains(&format!("archive {}", rotated.display())), "{}", agent.log());
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

/// A daemon killed in the middle of an archive resumes it after the restart from its decompressed
/// checkpoint: every line arrives, the duplicates at most what was sent after the checkpoint.
#[test]
fn a_daemon_killed_mid_archive_resumes_it() {
    const N: u64 = 100_000;
    let fake = FakeKinesis::start();
    fake.set_delay(Duration::from_millis(10));
    let ws = Workspace::new();
    let archive = ws.file("big.log.1.xz");
    compressed(&archive, &text(0..N));
    // START_OF_FILE: it is present at the first start.
    ws.write_config(daemon_config(&ws, &fake, "*.xz", json!({ "initialPosition": "START_OF_FILE" })));
    let mut agent = ws.spawn(false, &[]);
    wait_records(&fake, &agent, N as usize / 4, Duration::from_secs(90));
    let killed = kill_mid_archive(&mut agent, &fake, &ws, &archive, N);
    fake.set_delay(Duration::ZERO);
    let agent = ws.spawn(false, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let complete = || {
        let seen: std::collections::HashSet<u64> = parse_line_numbers(&fake.record_data()).into_iter().collect();
        (0..N).all(|n| seen.contains(&n))
    };
    while !complete() {
        assert!(Instant::now() < deadline, "lines are missing after the restart:\n{}", tail(&agent.log(), 6000));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agent.log().contains("on from decompressed byte"), "{}", agent.log());
    assert_resumed(&fake, N, killed);
    let len = file_len(&archive);
    assert_eq!(ws.wait_checkpoint(&archive, len, Duration::from_secs(10)), Some(len), "not sealed");
}

/// A damaged `.zst` in the daemon: one error naming the file and the compressed byte where it
/// breaks, the lines before it shipped, no retry while it stays as it is; the daemon goes on and
/// reads an archive that appears after it. `status` does not call it shipped.
#[test]
fn a_damaged_archive_is_one_error_and_the_daemon_goes_on() {
    const N: u64 = 20_000;
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(daemon_config(&ws, &fake, "*.zst", json!({})));
    let mut agent = ws.spawn(false, &[]);
    wait_started(&mut agent);
    // A good frame, then garbage where the next frame should start.
    let good = zstd::stream::encode_all(&text(0..N)[..], 3).unwrap();
    let mut bytes = good.clone();
    bytes.extend([0x55u8; 5000]);
    let bad = ws.file("bad.log.1.zst");
    std::fs::write(&bad, &bytes).unwrap();
    wait_records(&fake, &agent, N as usize, Duration::from_secs(30));
    assert!(agent.wait_for_log("corrupt or truncated", Duration::from_secs(10)), "{}", agent.log());
    // Several settle times later: still one error.
    std::thread::sleep(Duration::from_millis(2 * SETTLE_MS + 1000));
    let log = agent.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("corrupt or truncated")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains(&bad.display().to_string()), "{}", errors[0]);
    let at: u64 = errors[0]
        .split("compressed byte ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte offset: {}", errors[0]));
    assert!(at >= good.len() as u64 && at <= bytes.len() as u64, "breaks at {at} of {}", bytes.len());
    assert_numbers_exactly_once(0..N, &parse_line_numbers(&fake.record_data()));
    assert!(agent.is_running());

    compressed(&ws.file("good.log.2.zst"), &text(N..N + 500));
    wait_records(&fake, &agent, N as usize + 500, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1000));
    assert_numbers_exactly_once(0..N + 500, &parse_line_numbers(&fake.record_data()));
    let states = states(&ws);
    assert_ne!(states.get(&bad.display().to_string()).map(String::as_str), Some("shipped"), "{states:?}");
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(30));
}

/// `initialPosition` for the archives present at the very first start: END_OF_FILE (the default)
/// records them as done without sending them (a restart does not send them either), and reads
/// those that appear later; START_OF_FILE reads them.
#[test]
fn archives_present_at_the_first_start_follow_initial_position() {
    const N: u64 = 5_000;
    // END_OF_FILE.
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let old = ws.file("app.log.1.bz2");
    compressed(&old, &text(0..N));
    ws.write_config(daemon_config(&ws, &fake, "app.log.*.bz2", json!({})));
    let mut agent = ws.spawn(false, &[]);
    assert!(agent.wait_for_log("recorded as done without being read", Duration::from_secs(20)), "{}", agent.log());
    let len = file_len(&old);
    assert_eq!(ws.wait_checkpoint(&old, len, Duration::from_secs(10)), Some(len), "{}", agent.log());
    compressed(&ws.file("app.log.2.bz2"), &text(N..2 * N));
    wait_records(&fake, &agent, N as usize, Duration::from_secs(30));
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(30));
    let mut agent = ws.spawn(false, &[]);
    wait_started(&mut agent);
    std::thread::sleep(Duration::from_millis(SETTLE_MS + 1500));
    assert_numbers_exactly_once(N..2 * N, &parse_line_numbers(&fake.record_data()));
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(30));

    // START_OF_FILE.
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    compressed(&ws.file("app.log.1.bz2"), &text(0..N));
    ws.write_config(daemon_config(&ws, &fake, "app.log.*.bz2", json!({ "initialPosition": "START_OF_FILE" })));
    let agent = ws.spawn(false, &[]);
    wait_records(&fake, &agent, N as usize, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    assert_numbers_exactly_once(0..N, &parse_line_numbers(&fake.record_data()));
}
