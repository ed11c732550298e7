//! The Java agent's logging keys: `log.file` takes the log instead of standard error and rotates
//! by `log.maxFileSize`, keeping `log.maxBackupIndex` files; `log.level` sets the level (`-L`
//! wins); a bad value names the key.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn log_file_rotates_and_log_level_applies() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    for i in 0..40 {
        write_lines(&ws.file(&format!("f{i:02}.log")), 0..10, "L");
    }
    let log = ws.root.join("agent.log");
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": TEST_REGION,
        "log.file": log,
        "log.level": "debug",
        "log.maxFileSize": "2KB",
        "log.maxBackupIndex": "2",
        "flows": [{ "filePattern": ws.pattern("*.log"), "kinesisStream": "s" }]
    }));
    let (status, stderr, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(fake.record_count(), 400);
    assert!(!stderr.contains("tailing"), "the log goes to the file, not stderr:\n{stderr}");
    let text = std::fs::read_to_string(&log).expect("agent.log");
    let backup = |n: u32| ws.root.join(format!("agent.log.{n}"));
    assert!(backup(1).exists() && backup(2).exists(), "two backups");
    assert!(!backup(3).exists(), "no more than log.maxBackupIndex backups");
    assert!(std::fs::metadata(&log).unwrap().len() <= 2048);
    let all = std::fs::read_to_string(backup(2)).unwrap() + &std::fs::read_to_string(backup(1)).unwrap() + &text;
    assert!(all.contains("DEBUG"), "log.level debug applies:\n{all}");
    assert!(all.contains("400 sent") || all.contains("record(s) read"), "{all}");

    // -L wins over log.level.
    let _ = std::fs::remove_file(&log);
    let mut agent = ws.spawn(true, &["-L", "warn"]);
    assert_eq!(agent.wait_exit(Duration::from_secs(60)).code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("DEBUG") && !text.contains("INFO"), "{text}");
}

#[test]
fn bad_logging_values_name_the_key() {
    let ws = Workspace::new();
    ws.write_config(json!({
        "log.level": "LOUD",
        "log.maxFileSize": "10XB",
        "flows": [{ "filePattern": ws.pattern("*.log"), "kinesisStream": "s" }]
    }));
    let mut agent = ws.spawn(false, &["--check-config"]);
    let status = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let out = agent.log();
    assert!(out.contains("log.level: must be TRACE, DEBUG, INFO, WARN or ERROR, found \"LOUD\""), "{out}");
    assert!(out.contains("log.maxFileSize: must be a size such as 10MB"), "{out}");
}

/// A `log.file` that cannot be opened (the Java agent's legacy path, say, which the systemd unit
/// keeps read-only) does not stop the agent: the log goes to standard error, with a warning naming
/// the file. The Java agent's log4j fell back the same way.
#[test]
fn an_unopenable_log_file_falls_back_to_stderr() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    write_lines(&ws.file("a.log"), 0..10, "L");
    // A directory where the log file's parent should be: cannot be opened, even as root.
    let blocker = ws.root.join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let log = blocker.join("agent.log");
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": TEST_REGION,
        "log.file": log,
        "flows": [{ "filePattern": ws.pattern("*.log"), "kinesisStream": "s" }]
    }));
    let (status, stderr, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(fake.record_count(), 10);
    assert!(
        stderr.contains(&format!("log.file: cannot open the log file {}", log.display()))
            && stderr.contains("logging to standard error instead"),
        "{stderr}"
    );
    assert!(stderr.contains("record(s) read"), "the log goes on on stderr:\n{stderr}");
}
