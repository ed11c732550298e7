//! Checkpoints are tied to file content, not only to (device, inode): a file rewritten in place
//! while the agent was stopped (same inode, as after inode reuse or a refill past the old size)
//! is read again from its start, instead of resuming in the middle of other content.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn config(ws: &Workspace, fake: &FakeKinesis) -> serde_json::Value {
    json!({
        "kinesis.endpoint": fake.endpoint(), "kinesis.region": TEST_REGION,
        "flows": [{ "filePattern": ws.pattern("*.log"), "kinesisStream": "ident" }]
    })
}

#[test]
fn a_file_rewritten_in_place_is_read_from_its_start() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(config(&ws, &fake));
    let f = ws.file("app.log");
    write_lines(&f, 0..500, "old");
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{log}");
    let ino = file_id(&f).1;

    // Same inode, new content longer than the old checkpoint offset.
    std::fs::OpenOptions::new().write(true).truncate(true).open(&f).unwrap();
    write_lines(&f, 0..800, "new");
    assert_eq!(file_id(&f).1, ino, "the test needs the same inode");
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("no longer starts with the bytes it had"), "{log}");
    let mut expected: Vec<String> = expected_lines(0..500, "old").collect();
    expected.extend(expected_lines(0..800, "new"));
    assert_exactly_once(expected, &split_lines(&fake.record_data()));
}

#[test]
fn a_file_that_only_grew_resumes_at_its_checkpoint() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(config(&ws, &fake));
    let f = ws.file("app.log");
    write_lines(&f, 0..10, "a");
    assert_eq!(ws.run_once(Duration::from_secs(60)).0.code(), Some(0));
    // The head fingerprint of a short file is re-taken as it grows, and still matches.
    write_lines(&f, 10..900, "a");
    assert_eq!(ws.run_once(Duration::from_secs(60)).0.code(), Some(0));
    write_lines(&f, 900..1000, "a");
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains("reading it from the start"), "{log}");
    assert_exactly_once(expected_lines(0..1000, "a"), &split_lines(&fake.record_data()));
    let cp = ws.checkpoints();
    assert!(cp.iter().all(|e| e.offset == file_len(&f)), "{cp:?}");
}
