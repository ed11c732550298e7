//! End-to-end multi-line records (`multiLineStartPattern`) with the real binary: stack traces
//! become one record each (against kinesalite), a record written in bursts stays whole and leaves
//! after the flush timeout, the checkpoint never splits a record across a restart, and the last
//! record of a rotated or deleted file is sent when the file is drained.

use crate::common;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Event `n` as the application writes it: a timestamped first line and `n % 4` frames.
fn event(n: u64) -> String {
    let mut s = format!(
        "2026-11-22 12:{:02}:{:02}.{:03} ERROR request {n} failed: boom\n",
        n / 3600 % 60,
        n / 60 % 60,
        n % 1000
    );
    for k in 0..n % 4 {
        let _ = writeln!(s, "\tat com.example.Handler{k}.handle(Handler.java:{})", 10 + k);
    }
    s
}

const START: &str = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}";

fn append(path: &Path, text: &str) {
    append_bytes(path, text.as_bytes());
}

fn as_strings(records: &[Vec<u8>]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect()
}

/// Waits (bounded) until `fake` holds at least `n` records and returns them all.
fn wait_records(fake: &FakeKinesis, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    while fake.record_count() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    as_strings(&fake.record_data())
}

fn fake_flow(ws: &Workspace, fake: &FakeKinesis, extra: Value) -> Value {
    let flow = json!({ "filePattern": ws.pattern("*.log"), "kinesisStream": "multi", "multiLineStartPattern": START });
    fake_kinesis_config(fake, with_keys(flow, &extra), 1000, &json!({ "shutdownTimeoutMillis": 5000 }))
}

/// `--once` over files of stack traces: each event is one record, the lines before a file's
/// first event are a record of their own, and the last event of each file is sent at the end
/// of the run (its lines are complete). Checked record by record in kinesalite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_sends_one_record_per_event() {
    let peer = Peer::start(PeerKind::Kinesalite);
    let client = kinesis_client(&peer.endpoint());
    let stream = unique_name("multi");
    bounded(30, "create stream", create_stream(&client, &stream, 2)).await;
    let ws = Workspace::new();
    let mut expected = Vec::new();
    for (name, range) in [("a.log", 0..400u64), ("b.log", 400..700)] {
        let preamble = format!("preamble of {name}\n  with two lines\n");
        let mut text = preamble.clone();
        expected.push(preamble);
        for n in range {
            text.push_str(&event(n));
            expected.push(event(n));
        }
        std::fs::write(ws.file(name), text).expect("write log");
    }
    ws.write_config(json!({
        "kinesis.endpoint": peer.endpoint(),
        "flows": [{
            "filePattern": ws.pattern("*.log"),
            "kinesisStream": stream,
            "multiLineStartPattern": START,
        }]
    }));
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "agent log:\n{}", tail(&log, 4000));
    let got = bounded(60, "read stream", read_all(&client, &stream)).await;
    let mut got = as_strings(&data_of(&got));
    got.sort();
    expected.sort();
    assert_eq!(got.len(), expected.len(), "records: one per event and one per preamble");
    assert_eq!(got, expected);
}

/// A record written in two bursts within the flush timeout stays whole; the file's last record
/// leaves once the file has been quiet for the flush timeout, without a next start line.
#[test]
fn bursts_stay_whole_and_the_last_record_leaves_after_the_flush_timeout() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(fake_flow(&ws, &fake, json!({ "multiLineFlushTimeoutMillis": 1500 })));
    let log = ws.file("app.log");
    append(&log, "");
    let mut agent = ws.spawn(false, &[]);
    let e1 = event(3);
    let (first, rest) = e1.split_at(e1.find('\t').expect("a frame"));
    append(&log, first);
    std::thread::sleep(Duration::from_millis(600));
    append(&log, rest);
    let written = Instant::now();
    let got = wait_records(&fake, 1, Duration::from_secs(10));
    let took = written.elapsed();
    assert_eq!(got, vec![e1.clone()], "agent log:\n{}", tail(&agent.log(), 4000));
    // Quiet for 1.5 s, then the batch's age (1 s): not before the flush timeout.
    assert!(took >= Duration::from_millis(1400), "the record left after {took:?}, before the flush timeout");
    eprintln!("last record sent {took:?} after its last line");

    // The next event then arrives on its own.
    append(&log, &event(7));
    let got = wait_records(&fake, 2, Duration::from_secs(10));
    assert_eq!(got, vec![e1, event(7)]);
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

/// The next event's first line written in two parts (a writer flushing mid-line): the event
/// before it is finished by a line that began in an earlier read, and leaves whole; so does the
/// next one. (The record's end then lies before the read that finished it.)
#[test]
fn a_start_line_split_across_reads_finishes_the_record_before_it() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(fake_flow(&ws, &fake, json!({ "multiLineFlushTimeoutMillis": 1000 })));
    let log = ws.file("app.log");
    append(&log, "");
    let mut agent = ws.spawn(false, &[]);
    let (e1, e2) = (event(3), event(5));
    let (head, tail_part) = e2.split_at(10);
    append(&log, &format!("{e1}{head}"));
    std::thread::sleep(Duration::from_millis(600));
    append(&log, tail_part);
    let got = wait_records(&fake, 2, Duration::from_secs(10));
    assert_eq!(got, vec![e1, e2], "agent log:\n{}", tail(&agent.log(), 4000));
    assert!(agent.is_running(), "{}", agent.log());
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0), "{}", agent.log());
}

/// SIGTERM while an event is still being built: the checkpoint stays at the event's first line,
/// and after a restart the event arrives whole, with the lines added while the agent was down.
#[test]
fn the_checkpoint_never_splits_a_record() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(fake_flow(&ws, &fake, json!({ "multiLineFlushTimeoutMillis": 60000 })));
    let log = ws.file("app.log");
    let mut text = String::new();
    for n in 0..50 {
        text.push_str(&event(n));
    }
    append(&log, &text);
    let open_start = file_len(&log);
    let e50 = event(51).replace("request 51", "request 50"); // three frames
    let (head, frames) = e50.split_at(e50.find('\t').expect("a frame"));
    append(&log, head);
    let mut agent = ws.spawn(false, &[]);
    let got = wait_records(&fake, 50, Duration::from_secs(15));
    assert_eq!(got.len(), 50, "agent log:\n{}", tail(&agent.log(), 4000));
    std::thread::sleep(Duration::from_millis(1500));
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_eq!(ws.checkpoint_of(&log), Some(open_start), "checkpoint at the first line of the open record");
    assert_eq!(fake.record_count(), 50, "the open record was not sent");

    append(&log, frames);
    append(&log, &event(52));
    let mut agent = ws.spawn(false, &[]);
    let got = wait_records(&fake, 51, Duration::from_secs(15));
    let mut expected: Vec<String> = (0..50).map(event).collect();
    expected.push(e50);
    assert_eq!(got, expected, "agent log:\n{}", tail(&agent.log(), 4000));
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_eq!(fake.record_count(), 51, "event 52 is still open at the exit");
}

/// The last record of a file rotated out of the pattern's reach is sent once the file is quiet
/// for `rotateWaitMillis`; that of a deleted file as soon as it is drained. Neither waits for the
/// (long) flush timeout.
#[test]
fn rotated_and_deleted_files_send_their_last_record() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(fake_flow(
        &ws,
        &fake,
        json!({ "multiLineFlushTimeoutMillis": 120000, "rotateWaitMillis": 500, "maxBufferAgeMillis": 1000 }),
    ));
    let (a, b) = (ws.file("a.log"), ws.file("b.log"));
    append(&a, &(event(1) + &event(2)));
    append(&b, &(event(11) + &event(12)));
    let mut agent = ws.spawn(false, &[]);
    let got = wait_records(&fake, 2, Duration::from_secs(10));
    assert_eq!(got.len(), 2, "the first event of each file; agent log:\n{}", tail(&agent.log(), 4000));
    std::fs::rename(&a, ws.file("a.log.1")).expect("rotate a.log");
    std::fs::remove_file(&b).expect("delete b.log");
    let got = wait_records(&fake, 4, Duration::from_secs(10));
    let mut got = got;
    got.sort();
    let mut expected = vec![event(1), event(2), event(11), event(12)];
    expected.sort();
    assert_eq!(got, expected, "agent log:\n{}", tail(&agent.log(), 4000));
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
}
