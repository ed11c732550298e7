//! "Never skip a line": the identity decisions that could skip bytes, end to end, every line
//! checked by its number.
//! - Files that start with the same bytes (a CSV header) are distinct files, created together or
//!   apart: each is read in full (they were once taken for copies of each other and mostly lost).
//! - A copytruncate copy whose original is deleted while its lines are in flight resumes where
//!   the original was acknowledged, and a `kill -9` then loses nothing.
//! - Checkpoints older than `checkpointTimeToLiveDays` (by the wall clock: the host was stopped)
//!   are kept: nothing is sent twice.
//! - A directory unreadable for a few seconds is not a rotation: its files are kept open and no
//!   line is cut in two.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const HEADER: &str =
    "order_id,customer_id,product_sku,quantity,unit_price,currency,created_at,shipped_at,warehouse,status";

/// Waits until `n` records are in the stream (or 60 s), then a little longer for late duplicates.
async fn wait_stream(client: &aws_sdk_kinesis::Client, stream: &str, n: usize) -> Vec<Received> {
    let got = wait_for_records(client, stream, n, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = bounded(60, "read stream", read_all(client, stream)).await;
    eprintln!("{} records (waited for {n}, had {})", all.len(), got.len());
    all
}

fn header_then_rows(path: &Path, prefix: &str, rows: std::ops::Range<u64>) {
    append_bytes(path, format!("{HEADER}\n").as_bytes());
    std::thread::sleep(Duration::from_millis(1_000));
    write_lines(path, rows, prefix);
}

/// Several CSV files under one pattern, each opened with the same 100-byte header and its rows
/// a second later: two created together, one before them, one after the first had rows, one
/// while the agent was stopped. Every row and every header arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_with_the_same_first_bytes_are_each_read_in_full() {
    let peer = Peer::start(PeerKind::Kinesalite);
    let client = kinesis_client(&peer.endpoint());
    let stream = unique_name("samehead");
    bounded(30, "create stream", create_stream(&client, &stream, 2)).await;
    let ws = Workspace::new();
    ws.write_config(json!({
        "kinesis.endpoint": peer.endpoint(),
        "log.statusReportingPeriodSeconds": 1,
        "flows": [{ "filePattern": ws.pattern("*.csv"), "kinesisStream": stream, "maxBufferAgeMillis": 1000 }]
    }));
    let mut agent = ws.spawn(false, &[]);
    assert!(agent.wait_for_log("no file matches", Duration::from_secs(30)), "{}", agent.log());
    let (a, b, c, d, e) = (ws.file("a.csv"), ws.file("b.csv"), ws.file("c.csv"), ws.file("d.csv"), ws.file("e.csv"));
    let t = std::thread::spawn({
        let (a, b, c, d) = (a.clone(), b.clone(), c.clone(), d.clone());
        move || {
            let first = std::thread::spawn(move || header_then_rows(&a, "a", 0..20_000));
            std::thread::sleep(Duration::from_millis(300));
            let (b2, c2) = (b.clone(), c.clone());
            let together = [
                std::thread::spawn(move || header_then_rows(&b2, "b", 0..20_000)),
                std::thread::spawn(move || header_then_rows(&c2, "c", 0..20_000)),
            ];
            first.join().unwrap();
            // `a` has rows now.
            header_then_rows(&d, "d", 0..20_000);
            for t in together {
                t.join().unwrap();
            }
        }
    });
    tokio::task::spawn_blocking(move || t.join().unwrap()).await.unwrap();
    let got = wait_stream(&client, &stream, 4 + 80_000).await;
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(30));
    let first_log = agent.log();
    // The files created after `a` started like it: each waited for a truncation of `a` that would
    // have made it a copy, then was read from its start, its bytes counted as possible duplicates.
    assert!(first_log.contains("is a file of its own, read from its start"), "{first_log}");
    assert!(first_log.contains("possible duplicates"), "{first_log}");
    // One more file while stopped, also starting with the header: read in full at the restart.
    header_then_rows(&e, "e", 0..5_000);
    let mut agent = ws.spawn(false, &[]);
    let got2 = wait_stream(&client, &stream, 5 + 85_000).await;
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(30));
    let log = agent.log();
    let mut expected: Vec<String> = vec![HEADER.to_string(); 5];
    for p in ["a", "b", "c", "d"] {
        expected.extend(expected_lines(0..20_000, p));
    }
    expected.extend(expected_lines(0..5_000, "e"));
    assert!(got.len() <= got2.len());
    if let Err(e) = check_exactly_once(expected.iter(), &data_of(&got2)) {
        panic!("{e}\nagent log:\n{}", tail(&log, 6000));
    }
    assert!(!log.contains("is a copy of") && !first_log.contains("is a copy of"), "no file is a copy here:\n{log}");
}

/// logrotate `copytruncate` into a matched name while the destination holds its answers (lines
/// in flight), then the original is deleted: the copy waits until the original's lines are
/// acknowledged and resumes there, so without a crash every line arrives exactly once. Then the
/// same with `kill -9` while the copy waits: every line arrives at least once, and what is sent
/// twice is at most what the copy holds.
#[test]
fn a_copy_of_a_deleted_original_resumes_where_it_was_acknowledged() {
    for kill in [false, true] {
        let fake = FakeKinesis::start();
        let ws = Workspace::new();
        let flow = json!({ "filePattern": ws.pattern("app.log*"), "kinesisStream": "s", "maxBufferAgeMillis": 1000 });
        ws.write_config(fake_kinesis_config(&fake, flow, 500, &json!({})));
        let live = ws.file("app.log");
        write_lines(&live, 0..5_000, "L");
        let mut agent = ws.spawn(false, &[]);
        assert_eq!(fake.wait_for_count(5_000, Duration::from_secs(30)), 5_000, "{}", agent.log());
        // Answers held for 4 s: what is read now stays in flight.
        fake.set_response_delay(1.0, Duration::from_secs(4));
        write_lines(&live, 5_000..10_000, "L");
        std::thread::sleep(Duration::from_millis(800));
        std::fs::copy(&live, ws.file("app.log.1")).expect("copy");
        std::fs::OpenOptions::new().write(true).truncate(true).open(&live).expect("truncate");
        std::fs::remove_file(&live).expect("delete the original");
        if kill {
            std::thread::sleep(Duration::from_millis(1_000));
            agent.sigkill();
            let _ = agent.wait_exit(Duration::from_secs(10));
            fake.set_response_delay(0.0, Duration::ZERO);
            agent = ws.spawn(false, &[]);
        }
        fake.wait_for_count(10_000, Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(5));
        agent.sigterm();
        agent.wait_exit(Duration::from_secs(30));
        let got = split_lines(&fake.record_data());
        let numbers = parse_line_numbers(&got);
        let mut counts = std::collections::HashMap::new();
        for n in numbers {
            *counts.entry(n).or_insert(0u64) += 1;
        }
        let lost: Vec<u64> = (0..10_000).filter(|n| !counts.contains_key(n)).collect();
        let duplicated: u64 = counts.values().map(|c| c - 1).sum();
        eprintln!("kill {kill}: {} records, {} lost, {duplicated} duplicated", got.len(), lost.len());
        let log = agent.log();
        assert!(
            lost.is_empty(),
            "kill {kill}: {} lines lost, e.g. {:?}\n{}",
            lost.len(),
            &lost[..lost.len().min(5)],
            tail(&log, 6000)
        );
        if kill {
            assert!(duplicated <= 10_000, "at most the copy's lines are sent twice: {duplicated}\n{log}");
        } else {
            assert_eq!(duplicated, 0, "exactly once without a crash\n{log}");
            assert!(log.contains("is a copy of"), "{log}");
        }
    }
}

/// The host was stopped for a month: checkpoints older than `checkpointTimeToLiveDays` by the wall
/// clock (and written by an agent that did not count running time) are kept, and nothing is sent
/// twice; a file gone is kept too, since the agent has not run for a day since.
#[test]
fn checkpoints_older_than_the_ttl_by_the_wall_clock_are_kept() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let flow = json!({ "filePattern": ws.pattern("*.log"), "kinesisStream": "s" });
    ws.write_config(fake_kinesis_config(&fake, flow, 500, &json!({ "checkpointTimeToLiveDays": 1 })));
    let (a, b) = (ws.file("a.log"), ws.file("b.log"));
    write_lines(&a, 0..1_000, "a");
    write_lines(&b, 0..1_000, "b");
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{log}");
    // A month passes; the file format of an older agent (no running time).
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&ws.checkpoint_file).unwrap()).unwrap();
    let month_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
        - 30 * 86_400_000;
    v.as_object_mut().unwrap().remove("running_ms");
    for e in v["checkpoints"].as_array_mut().unwrap() {
        e["updated_ms"] = json!(month_ago);
        e.as_object_mut().unwrap().remove("seen_run_ms");
    }
    std::fs::write(&ws.checkpoint_file, serde_json::to_vec(&v).unwrap()).unwrap();
    write_lines(&a, 1_000..1_500, "a");
    let moved = ws.root.join("b.log.away");
    std::fs::rename(&b, &moved).unwrap();
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains("dropped"), "{log}");
    // b comes back: it resumes at its checkpoint.
    std::fs::rename(&moved, &b).unwrap();
    write_lines(&b, 1_000..1_200, "b");
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{log}");
    let mut expected: Vec<String> = expected_lines(0..1_500, "a").collect();
    expected.extend(expected_lines(0..1_200, "b"));
    assert_exactly_once(expected, &split_lines(&fake.record_data()));
}

/// A directory made unreadable for a few seconds (longer than `rotateWaitMillis`) while its file
/// has an unterminated last line: the file is not taken for rotated away, so it stays open and
/// the line is sent whole once completed. The agent runs as `nobody` (root reads anything).
#[test]
fn an_unreadable_directory_is_not_a_rotation() {
    // SAFETY: plain getter syscall.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root to run the agent as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let sub = ws.logs.join("app");
    std::fs::create_dir(&sub).unwrap();
    let file = sub.join("app.log");
    let flow = json!({
        "filePattern": ws.pattern("*/app.log"), "kinesisStream": "s", "maxBufferAgeMillis": 1000,
        "initialPosition": "START_OF_FILE", "rotateWaitMillis": 500
    });
    ws.write_config(fake_kinesis_config(&fake, flow, 500, &json!({})));
    write_lines(&file, 0..100, "u");
    let everyone = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    for p in [&ws.root, &ws.logs, &ws.home, &sub, &ws.config_dir] {
        everyone(p, 0o777);
    }
    std::fs::create_dir_all(ws.checkpoint_file.parent().unwrap()).unwrap();
    everyone(ws.checkpoint_file.parent().unwrap(), 0o777);
    everyone(&ws.config, 0o644);
    everyone(&file, 0o666);
    let mut agent = AgentProcess::spawn_in_as(&ws.home, ws.args(false, &[]), &[], Some((65534, 65534)));
    fake.wait_for_count(100, Duration::from_secs(30));
    let half = line_text("u", 100);
    append_bytes(&file, &half.as_bytes()[..20]);
    std::thread::sleep(Duration::from_millis(300));
    everyone(&sub, 0o000);
    std::thread::sleep(Duration::from_millis(3_000));
    everyone(&sub, 0o777);
    append_bytes(&file, &half.as_bytes()[20..]);
    append_bytes(&file, b"\n");
    write_lines(&file, 101..200, "u");
    fake.wait_for_count(200, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1_000));
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(30));
    let log = agent.log();
    if let Err(e) = check_exactly_once(expected_lines(0..200, "u"), &fake.record_data()) {
        panic!("{e}\n{log}");
    }
    assert_eq!(count_occurrences(&log, "Permission denied"), 1, "said once:\n{log}");
    assert!(log.contains("not taken for a rotation"), "{log}");
}

/// `ulimit -n 256` and 2,000 files under one glob, each then rotated (renamed to `.1`, a new one
/// created), 4,000 files in all: the agent raises nothing (the hard limit is 256 too), opens what
/// its budget allows, closes files read to their end and acknowledged to make room, says so once,
/// and loses nothing.
#[test]
fn more_files_than_descriptors_wait_their_turn() {
    const FILES: u64 = 2_000;
    const LINES: u64 = 10;
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let flow = json!({ "filePattern": ws.pattern("*.log*"), "kinesisStream": "s" });
    ws.write_config(fake_kinesis_config(&fake, flow, 500, &json!({ "maxSendingThreads": 4 })));
    let name = |i: u64| ws.file(&format!("f-{i:04}.log"));
    for i in 0..FILES {
        write_lines(&name(i), 0..LINES, &format!("f{i:04}a"));
    }
    let mut agent = AgentProcess::spawn_limited(&ws.home, ws.args(false, &[]), &[], None, Some(256));
    assert!(agent.wait_for_log("wait to be opened", Duration::from_secs(30)), "{}", agent.log());
    // Rotate every file while most wait for a descriptor.
    for i in 0..FILES {
        let live = name(i);
        std::fs::rename(&live, live.with_extension("log.1")).unwrap();
        write_lines(&live, 0..LINES, &format!("f{i:04}b"));
    }
    let want = (2 * FILES * LINES) as usize;
    let deadline = Instant::now() + Duration::from_secs(240);
    let started = Instant::now();
    while fake.record_count() < want && Instant::now() < deadline && agent.is_running() {
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{} of {want} records after {:?}", fake.record_count(), started.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(30));
    let log = agent.log();
    let mut expected = Vec::new();
    for i in 0..FILES {
        expected.extend(expected_lines(0..LINES, &format!("f{i:04}a")));
        expected.extend(expected_lines(0..LINES, &format!("f{i:04}b")));
    }
    if let Err(e) = check_exactly_once(expected.iter(), &fake.record_data()) {
        panic!("{e}\n{}", tail(&log, 6000));
    }
    // Said once when files started to wait, once when none waited any more.
    assert_eq!(count_occurrences(&log, "wait to be opened"), 1, "{log}");
    assert_eq!(count_occurrences(&log, "could be opened again"), 1, "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
}
