//! SIGHUP reloads the configuration (real binary, fake endpoint): added flows start, removed flows
//! stop after sending what they read (their checkpoints are kept, so adding them back resumes
//! them), changed flows restart with their new settings, unchanged flows go on undisturbed, and
//! an invalid configuration is rejected with its errors while the running one goes on.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn flow(ws: &Workspace, name: &str) -> Value {
    json!({
        "filePattern": ws.pattern(&format!("{name}*.log")),
        "kinesisStream": format!("stream-{name}"),
        "initialPosition": "START_OF_FILE",
        "maxBufferAgeMillis": 1000,
    })
}

fn config(fake: &FakeKinesis, flows: Vec<Value>) -> Value {
    json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": TEST_REGION,
        "shutdownTimeoutMillis": 5000,
        "flows": flows
    })
}

/// The lines each stream received.
fn lines_of(fake: &FakeKinesis, stream: &str) -> Vec<Vec<u8>> {
    let data: Vec<Vec<u8>> = fake.all_records().into_iter().filter(|r| r.stream == stream).map(|r| r.data).collect();
    split_lines(&data)
}

/// Waits (bounded) until `stream` holds `n` lines.
fn wait_stream(fake: &FakeKinesis, stream: &str, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while lines_of(fake, stream).len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    lines_of(fake, stream)
}

fn hup_and_wait(agent: &mut AgentProcess, needle: &str) {
    let before = count_occurrences(&agent.log(), needle);
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while count_occurrences(&agent.log(), needle) <= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        count_occurrences(&agent.log(), needle) > before,
        "no {needle:?} after SIGHUP; log:\n{}",
        tail(&agent.log(), 4000)
    );
}

#[test]
fn sighup_adds_removes_and_restarts_flows() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let (a, b, c) = (ws.file("a.log"), ws.file("b.log"), ws.file("c.log"));
    write_lines(&a, 0..100, "a");
    write_lines(&b, 0..100, "b");
    write_lines(&c, 0..100, "c");
    ws.write_config(config(&fake, vec![flow(&ws, "a"), flow(&ws, "b")]));
    let mut agent = ws.spawn(false, &[]);
    assert_eq!(wait_stream(&fake, "stream-a", 100).len(), 100);
    assert_eq!(wait_stream(&fake, "stream-b", 100).len(), 100);

    // B removed, C added, A unchanged.
    ws.write_config(config(&fake, vec![flow(&ws, "a"), flow(&ws, "c")]));
    hup_and_wait(&mut agent, "1 flow(s) added, 1 removed, 0 changed, 1 unchanged");
    assert_eq!(wait_stream(&fake, "stream-c", 100).len(), 100, "the added flow starts (START_OF_FILE)");
    write_lines(&a, 100..200, "a");
    write_lines(&b, 100..200, "b");
    write_lines(&c, 100..200, "c");
    assert_eq!(wait_stream(&fake, "stream-a", 200).len(), 200);
    assert_eq!(wait_stream(&fake, "stream-c", 200).len(), 200);
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(lines_of(&fake, "stream-b").len(), 100, "the removed flow does not read on");

    // A changed (a new batch age): it restarts from its checkpoint; B added back resumes at its
    // checkpoint, so the lines written while it was removed arrive, once.
    let mut a_changed = flow(&ws, "a");
    a_changed["maxBufferAgeMillis"] = json!(2000);
    ws.write_config(config(&fake, vec![a_changed, flow(&ws, "c"), flow(&ws, "b")]));
    hup_and_wait(&mut agent, "1 flow(s) added, 0 removed, 1 changed, 1 unchanged");
    write_lines(&a, 200..300, "a");
    assert_eq!(wait_stream(&fake, "stream-b", 200).len(), 200);
    assert_eq!(wait_stream(&fake, "stream-a", 300).len(), 300);
    std::thread::sleep(Duration::from_millis(2500));
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0), "log:\n{}", tail(&agent.log(), 4000));
    assert_exactly_once(expected_lines(0..300, "a"), &lines_of(&fake, "stream-a"));
    assert_exactly_once(expected_lines(0..200, "b"), &lines_of(&fake, "stream-b"));
    assert_exactly_once(expected_lines(0..200, "c"), &lines_of(&fake, "stream-c"));
}

#[test]
fn sighup_with_an_invalid_configuration_keeps_the_running_one() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let a = ws.file("a.log");
    write_lines(&a, 0..100, "a");
    ws.write_config(config(&fake, vec![flow(&ws, "a")]));
    let mut agent = ws.spawn(false, &[]);
    assert_eq!(wait_stream(&fake, "stream-a", 100).len(), 100);
    let mut bad = flow(&ws, "b");
    bad["maxBufferAgeMilis"] = json!(1000);
    ws.write_config(config(&fake, vec![flow(&ws, "a"), bad]));
    hup_and_wait(&mut agent, "it was not applied and the running one goes on");
    let log = agent.log();
    assert!(log.contains("flows[1].maxBufferAgeMilis"), "the error names the key; log:\n{}", tail(&log, 4000));
    write_lines(&a, 100..200, "a");
    assert_eq!(wait_stream(&fake, "stream-a", 200).len(), 200, "the running flow goes on");
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_exactly_once(expected_lines(0..200, "a"), &lines_of(&fake, "stream-a"));
}

/// A flow changed by one reload and removed by the next while its previous version is still
/// draining (its stream is missing) stays removed: it does not start again once the drain ends.
#[test]
fn a_flow_removed_while_waiting_to_restart_stays_removed() {
    let fake = FakeKinesis::start();
    fake.set_known_streams(Some(&["stream-b"]));
    let ws = Workspace::new();
    let (a, b) = (ws.file("a.log"), ws.file("b.log"));
    write_lines(&a, 0..100, "a");
    write_lines(&b, 0..100, "b");
    let mut fa = flow(&ws, "a");
    fa["retryMaxBackoffMillis"] = json!(200);
    ws.write_config(config(&fake, vec![fa.clone(), flow(&ws, "b")]));
    let mut agent = ws.spawn(false, &[]);
    assert_eq!(wait_stream(&fake, "stream-b", 100).len(), 100);
    assert!(agent.wait_for_log("ResourceNotFoundException", Duration::from_secs(20)), "{}", agent.log());
    // Reload 1: a changed; it restarts once its old version has drained, which cannot happen yet.
    let mut fa2 = fa.clone();
    fa2["maxBufferAgeMillis"] = json!(2000);
    ws.write_config(config(&fake, vec![fa2, flow(&ws, "b")]));
    hup_and_wait(&mut agent, "0 flow(s) added, 0 removed, 1 changed, 1 unchanged");
    // Reload 2: a removed.
    ws.write_config(config(&fake, vec![flow(&ws, "b")]));
    hup_and_wait(&mut agent, "was removed before its restart");
    // The old version drains once the stream exists; then a is not started again.
    fake.set_known_streams(None);
    assert_eq!(wait_stream(&fake, "stream-a", 100).len(), 100);
    write_lines(&a, 100..150, "a");
    write_lines(&b, 100..150, "b");
    assert_eq!(wait_stream(&fake, "stream-b", 150).len(), 150);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lines_of(&fake, "stream-a").len(), 100, "the removed flow started again; log:\n{}", agent.log());
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0), "{}", agent.log());
}
