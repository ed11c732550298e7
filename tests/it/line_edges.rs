//! Lines at the edges: the unterminated last line of a file that will not grow any more is sent
//! once the file is drained (a deleted file at once, a file rotated out of the pattern's reach
//! after it has been quiet for a few seconds; a live file's partial line waits for its newline),
//! and lines over the record limit are truncated or dropped as configured.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn wait_for(fake: &FakeKinesis, n: usize, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if fake.record_count() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn partial_last_lines_of_rotated_and_deleted_files_are_sent() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(), "kinesis.region": TEST_REGION,
        "flows": [
            { "filePattern": ws.pattern("moved.log"), "kinesisStream": "p", "initialPosition": "START_OF_FILE", "maxBufferAgeMillis": 1000 },
            { "filePattern": ws.pattern("deleted.log"), "kinesisStream": "p", "initialPosition": "START_OF_FILE", "maxBufferAgeMillis": 1000 },
            { "filePattern": ws.pattern("live.log"), "kinesisStream": "p", "initialPosition": "START_OF_FILE", "maxBufferAgeMillis": 1000 }
        ]
    }));
    for name in ["moved", "deleted", "live"] {
        write_lines(&ws.file(&format!("{name}.log")), 0..10, name);
        append_bytes(&ws.file(&format!("{name}.log")), format!("{name} unterminated").as_bytes());
    }
    let mut agent = ws.spawn(false, &[]);
    assert!(wait_for(&fake, 30, 30), "the complete lines arrive\n{}", agent.log());
    // Rotated out of reach (the pattern names only the live file), and deleted.
    std::fs::rename(ws.file("moved.log"), ws.file("moved.log.1")).unwrap();
    std::fs::remove_file(ws.file("deleted.log")).unwrap();
    assert!(wait_for(&fake, 32, 20), "both partial lines arrive\n{}", agent.log());
    std::thread::sleep(Duration::from_millis(1500));
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let got = fake.record_data();
    assert!(got.contains(&b"moved unterminated".to_vec()), "{}", agent.log());
    assert!(got.contains(&b"deleted unterminated".to_vec()), "{}", agent.log());
    assert!(!got.iter().any(|r| r.starts_with(b"live unterminated")), "a live file's partial line waits");
    assert_eq!(got.len(), 32);
}

#[test]
fn oversized_lines_are_truncated_or_dropped_as_configured() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(), "kinesis.region": TEST_REGION,
        "flows": [
            { "filePattern": ws.pattern("cut.log"), "kinesisStream": "o", "truncatedRecordTerminator": "...\n" },
            { "filePattern": ws.pattern("drop.log"), "kinesisStream": "o", "oversizedRecordAction": "DROP" }
        ]
    }));
    let huge = vec![b'x'; 1_200_000];
    for name in ["cut", "drop"] {
        let f = ws.file(&format!("{name}.log"));
        write_lines(&f, 0..5, name);
        append_bytes(&f, &huge);
        append_bytes(&f, b"\n");
        write_lines(&f, 5..10, name);
    }
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{log}");
    let got = fake.record_data();
    let cut: Vec<&Vec<u8>> = got.iter().filter(|r| r.starts_with(b"xxx")).collect();
    assert_eq!(cut.len(), 1, "one truncated record, from cut.log only");
    assert!(cut[0].ends_with(b"...\n") && cut[0].len() <= 1024 * 1024);
    let mut expected: Vec<String> = expected_lines(0..10, "cut").collect();
    expected.extend(expected_lines(0..10, "drop"));
    let normal: Vec<Vec<u8>> = got.iter().filter(|r| !r.starts_with(b"xxx")).cloned().collect();
    assert_exactly_once(expected, &normal);
    assert!(log.contains("were dropped") && log.contains("were truncated"), "{log}");
    // Both files are checkpointed to their end: the oversized lines are not retried.
    for name in ["cut", "drop"] {
        let f = ws.file(&format!("{name}.log"));
        assert_eq!(ws.checkpoint_of(&f), Some(file_len(&f)));
    }
}
