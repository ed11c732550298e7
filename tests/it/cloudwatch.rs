//! CloudWatch metrics with the real binary: the Kinesis side on the in-repo fake, CloudWatch on
//! the in-repo CBOR endpoint (`common::cloudwatch`; moto cannot decode the CBOR protocol the
//! current SDK speaks, see the README's development notes). The published data points must add
//! up to what the stream received, and a CloudWatch that hangs or fails must not slow delivery.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

fn config(ws: &Workspace, fake: &FakeKinesis, stream: &str, extra: Value) -> Value {
    let mut c = json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": TEST_REGION,
        "shutdownTimeoutMillis": 5000,
        "flows": [{ "filePattern": ws.pattern("*.log"), "kinesisStream": stream,
                    "initialPosition": "START_OF_FILE", "maxBufferAgeMillis": 1000,
                    "retryInitialBackoffMillis": 50, "retryMaxBackoffMillis": 200 }]
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// Polls `cond` every 100 ms for up to `secs`.
fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

#[test]
fn published_sums_match_what_the_stream_received() {
    let fake = FakeKinesis::start();
    let cw = FakeCloudWatch::start();
    let ws = Workspace::new();
    let log = ws.file("app.log");
    write_lines(&log, 0..2_000, "CW");
    ws.write_config(config(
        &ws,
        &fake,
        "metrics",
        json!({
            "cloudwatch.endpoint": cw.endpoint(),
            "cloudwatch.metricsBufferTimeMillis": 300,
            "cloudwatch.tagInstance": true,
        }),
    ));
    let mut agent = ws.spawn(false, &[]);
    let host = hostname();
    let dims = [("Destination", "KinesisStream:metrics"), ("Instance", host.as_str())];
    assert!(wait_until(30, || fake.record_count() >= 2_000), "{}", tail(&agent.log(), 4000));
    assert!(
        wait_until(10, || cw.sum("RecordsSent", &dims) >= 2_000.0),
        "RecordsSent = {}\n{:#?}\n{}",
        cw.sum("RecordsSent", &dims),
        cw.datums().iter().take(10).collect::<Vec<_>>(),
        tail(&agent.log(), 4000)
    );
    let bytes: usize = fake.records().iter().map(|(_, d)| d.len()).sum();
    assert_eq!(cw.sum("RecordsSent", &dims), 2_000.0);
    assert_eq!(cw.sum("BytesSent", &dims), bytes as f64);
    assert_eq!(cw.sum("RecordSendAttempts", &dims), 2_000.0);
    assert_eq!(cw.sum("RecordSendErrors", &dims), 0.0);
    assert_eq!(cw.sum("ServiceErrors", &dims), 0.0);

    // Partial failures: every failed entry is an attempt and a RecordSendError, then a success.
    fake.set_entry_failure(0.2, "InternalFailure");
    write_lines(&log, 2_000..3_000, "CW");
    assert!(wait_until(30, || fake.record_count() >= 3_000), "{}", tail(&agent.log(), 4000));
    fake.clear_faults();
    let failed = fake.failed_entry_count() as f64;
    assert!(failed > 0.0);
    assert!(wait_until(10, || cw.sum("RecordsSent", &dims) >= 3_000.0), "{}", tail(&agent.log(), 4000));
    assert!(wait_until(5, || cw.sum("RecordSendErrors", &dims) >= failed));
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0), "{}", tail(&agent.log(), 4000));

    // After the last flush at exit: nothing counted twice, nothing missing.
    let bytes: usize = fake.records().iter().map(|(_, d)| d.len()).sum();
    assert_eq!(fake.record_count(), 3_000);
    assert_eq!(cw.sum("RecordsSent", &dims), 3_000.0);
    assert_eq!(cw.sum("BytesSent", &dims), bytes as f64);
    assert_eq!(cw.sum("RecordSendErrors", &dims), failed);
    assert_eq!(cw.sum("RecordSendAttempts", &dims), 3_000.0 + failed);
    assert_eq!(cw.sum("ServiceErrors", &dims), 0.0);
    let requests = cw.requests();
    assert!(requests.iter().all(|r| r.namespace == "AWSKinesisAgent"));
    let datums = cw.datums();
    let mut names: Vec<_> = datums.iter().map(|d| d.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names, ["BytesSent", "RecordSendAttempts", "RecordSendErrors", "RecordsSent", "ServiceErrors"]);
    assert!(datums.iter().all(|d| d.unit == if d.name == "BytesSent" { "Bytes" } else { "Count" }));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(
        datums.iter().all(|d| d.timestamp > now - 300.0 && d.timestamp <= now + 1.0),
        "timestamps are the periods'"
    );
    // Data points for the whole run, not one per record or per request.
    assert!(datums.len() < 5 * 200, "{} data points", datums.len());
}

#[test]
fn whole_request_failures_are_service_errors() {
    let fake = FakeKinesis::start();
    let cw = FakeCloudWatch::start();
    let ws = Workspace::new();
    write_lines(&ws.file("app.log"), 0..500, "SE");
    fake.fail_next_requests(2, "InternalFailure");
    ws.write_config(config(
        &ws,
        &fake,
        "svc",
        json!({ "cloudwatch.endpoint": cw.endpoint(), "cloudwatch.namespace": "Custom/Agent",
                "cloudwatch.emitMetrics": "true" }),
    ));
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert!(status.success(), "{}", tail(&log, 4000));
    let dims = [("Destination", "KinesisStream:svc")];
    let failed_requests =
        fake.requests().iter().filter(|r| r.target.ends_with(".PutRecords") && r.status != 200).count() as f64;
    assert!(failed_requests >= 1.0, "{:#?}", fake.requests());
    // `--once` publishes everything at exit.
    assert_eq!(cw.sum("RecordsSent", &dims), 500.0, "{}", tail(&log, 4000));
    assert_eq!(cw.sum("ServiceErrors", &dims), failed_requests);
    assert_eq!(cw.sum("RecordSendErrors", &dims), 0.0, "whole-request failures have no per-record error code");
    assert!(cw.sum("RecordSendAttempts", &dims) >= 500.0 + failed_requests);
    assert!(cw.requests().iter().all(|r| r.namespace == "Custom/Agent"));
}

/// Time for the agent to deliver `n` lines with `extra` settings, and the agent (still running).
fn deliver(n: u64, extra: Value) -> (Duration, AgentProcess, FakeKinesis, Workspace) {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    write_lines(&ws.file("app.log"), 0..n, "D");
    ws.write_config(config(&ws, &fake, "down", extra));
    let started = Instant::now();
    let agent = ws.spawn(false, &[]);
    assert!(wait_until(60, || fake.record_count() as u64 >= n), "{}", tail(&agent.log(), 4000));
    (started.elapsed(), agent, fake, ws)
}

#[test]
fn a_down_cloudwatch_does_not_slow_delivery() {
    const N: u64 = 30_000;
    let (baseline, mut agent, _fake, _ws) = deliver(N, json!({ "cloudwatch.emitMetrics": false }));
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(15));
    assert!(agent.log().contains("CloudWatch metrics are off: cloudwatch.emitMetrics is false"));

    // CloudWatch accepts connections and never answers.
    let cw = FakeCloudWatch::start();
    cw.set_mode(CwMode::Hang);
    let (elapsed, mut agent, fake, _ws) = deliver(
        N,
        json!({ "cloudwatch.endpoint": cw.endpoint(), "cloudwatch.metricsBufferTimeMillis": 100,
                "cloudwatch.metricsQueueSize": 10 }),
    );
    assert!(cw.received() >= 1, "the agent did try to publish");
    assert!(
        elapsed < baseline * 2 + Duration::from_secs(3),
        "delivery took {elapsed:?} with CloudWatch hanging, {baseline:?} without"
    );
    assert_eq!(fake.record_count() as u64, N);

    // Now it fails fast: said once, however many attempts; the full queue said once too.
    cw.set_mode(CwMode::Error);
    assert!(agent.wait_for_log("PutMetricData to namespace AWSKinesisAgent", Duration::from_secs(20)));
    write_lines(&_ws.file("app.log"), N..N + 100, "D");
    assert!(agent.wait_for_log("the queue is full", Duration::from_secs(20)), "{}", tail(&agent.log(), 4000));
    std::thread::sleep(Duration::from_secs(4));
    let log = agent.log();
    assert_eq!(count_occurrences(&log, "PutMetricData to namespace"), 1, "{}", tail(&log, 4000));
    assert_eq!(count_occurrences(&log, "the queue is full"), 1, "{}", tail(&log, 4000));
    assert_eq!(fake.record_count() as u64, N + 100, "delivery went on");

    // Back up: said once, with the count of what was dropped.
    cw.set_mode(CwMode::Ok);
    assert!(
        agent.wait_for_log("CloudWatch metrics: publishing again (", Duration::from_secs(20)),
        "{}",
        tail(&agent.log(), 4000)
    );
    assert!(agent.log().contains("data point(s) were dropped while it failed"));
    // A CloudWatch that fails does not hold the exit either.
    cw.set_mode(CwMode::Hang);
    std::thread::sleep(Duration::from_millis(500));
    let stop = Instant::now();
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert!(stop.elapsed() < Duration::from_secs(5), "exit took {:?}", stop.elapsed());
}

#[test]
fn once_does_not_wait_for_a_hanging_cloudwatch() {
    let fake = FakeKinesis::start();
    let cw = FakeCloudWatch::start();
    cw.set_mode(CwMode::Hang);
    let ws = Workspace::new();
    write_lines(&ws.file("app.log"), 0..1_000, "O");
    ws.write_config(config(
        &ws,
        &fake,
        "once",
        json!({ "cloudwatch.endpoint": cw.endpoint(), "cloudwatch.metricsBufferTimeMillis": 100 }),
    ));
    let (status, log, elapsed) = ws.run_once(Duration::from_secs(60));
    assert!(status.success(), "{}", tail(&log, 4000));
    assert_eq!(fake.record_count(), 1_000);
    // At most the bounded last attempt (3 s) on top of the run.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}\n{}", tail(&log, 4000));
}

#[test]
fn local_emulators_do_not_publish_unless_asked() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    write_lines(&ws.file("app.log"), 0..10, "L");
    ws.write_config(config(&ws, &fake, "local", json!({})));
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert!(status.success(), "{}", tail(&log, 4000));
    assert!(log.contains("CloudWatch metrics are off: every destination endpoint is a local address"), "{log}");
}

#[test]
fn more_than_1000_data_points_go_in_several_requests() {
    // 210 destinations × 5 metrics = 1,050 data points at the exit of a `--once` run.
    const FLOWS: usize = 210;
    let fake = FakeKinesis::start();
    let cw = FakeCloudWatch::start();
    let ws = Workspace::new();
    let mut flows = Vec::new();
    for i in 0..FLOWS {
        let name = format!("f{i:03}.log");
        write_lines(&ws.file(&name), 0..(i as u64 % 3 + 1), "M");
        flows.push(json!({ "filePattern": ws.pattern(&name), "kinesisStream": format!("s{i:03}"),
                           "initialPosition": "START_OF_FILE", "maxBufferAgeMillis": 1000 }));
    }
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": TEST_REGION,
        "cloudwatch.endpoint": cw.endpoint(),
        "flows": flows,
    }));
    let (status, log, _) = ws.run_once(Duration::from_secs(120));
    assert!(status.success(), "{}", tail(&log, 4000));
    let requests = cw.requests();
    let sizes: Vec<usize> = requests.iter().map(|r| r.data.len()).collect();
    assert!(sizes.iter().all(|n| *n <= 1000), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), FLOWS * 5, "{sizes:?}");
    assert!(requests.iter().any(|r| r.gzip), "large requests are compressed, and decoded by the test endpoint");
    for i in 0..FLOWS {
        let stream = format!("KinesisStream:s{i:03}");
        assert_eq!(cw.sum("RecordsSent", &[("Destination", &stream)]), (i % 3 + 1) as f64, "{stream}");
    }
    assert_eq!(fake.record_count(), (0..FLOWS).map(|i| i % 3 + 1).sum::<usize>());
}
