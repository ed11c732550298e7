//! Compressed backfill: `--once` reads `.gz`, `.zst`, `.xz` and `.bz2` files when the
//! `filePattern` names them (and keeps skipping them when it does not), resumes an interrupted
//! archive from its checkpoint (decompressed offset) after a `kill -9`, never sends a finished one
//! again, and on a damaged archive ships what decoded, names the file and the compressed offset,
//! and exits non-zero. The daemon leaves archives to `--once`, saying so once.

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
    let deadline = Instant::now() + Duration::from_secs(60);
    while (fake.record_count() as u64) < N / 3 {
        assert!(Instant::now() < deadline, "too slow:\n{}", tail(&agent.log(), 4000));
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.sigkill();
    agent.wait_exit(Duration::from_secs(10));
    // Requests the fake was holding (its 20 ms delay) are stored after the kill: wait for them.
    let mut before = fake.record_count() as u64;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = fake.record_count() as u64;
        if now == before {
            break;
        }
        before = now;
    }
    assert!(before < N, "it finished before the kill");
    // Lines below the checkpoint (a decompressed offset) were acknowledged.
    let line_len = text(0..1).len() as u64;
    let checkpointed = ws.checkpoint_of(&archive).unwrap_or(0) / line_len;
    fake.set_delay(Duration::ZERO);
    let (status, log, _) = ws.run_once(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{}", tail(&log, 4000));
    let numbers = parse_line_numbers(&fake.record_data());
    let mut seen = std::collections::HashSet::new();
    let duplicates = numbers.iter().filter(|n| !seen.insert(**n)).count() as u64;
    assert!((0..N).all(|n| seen.contains(&n)), "lines are missing after the resume");
    assert!(
        duplicates <= before - checkpointed,
        "{duplicates} duplicates, more than the {} lines sent after the checkpoint",
        before - checkpointed
    );
    assert!(checkpointed > 0, "the checkpoint did not move during the first run");
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

/// The daemon does not read archives: it says so once, and reads the plain files.
#[test]
fn the_daemon_leaves_archives_to_once() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    compressed(&ws.file("old.log.gz"), &text(0..100));
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(), "kinesis.region": TEST_REGION,
        "flows": [{ "filePattern": ws.pattern("*.log.gz"), "kinesisStream": "backfill",
                    "initialPosition": "START_OF_FILE", "maxBufferAgeMillis": 1000 }]
    }));
    let mut agent = ws.spawn(false, &[]);
    assert!(agent.wait_for_log("read by `kinesis-agent --once`", Duration::from_secs(10)), "{}", agent.log());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fake.record_count(), 0);
    assert_eq!(agent.log().matches("read by `kinesis-agent --once`").count(), 1, "{}", agent.log());
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(30));
}
