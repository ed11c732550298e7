//! Credentials from agent.json: static keys, and `assumeRoleARN` through STS (moto's STS, with
//! `sts.endpoint`). The fake Kinesis endpoint records which access key signed each request, so
//! the tests see which credentials were really used.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

const LINES: u64 = 1_200;

fn flow(ws: &Workspace) -> serde_json::Value {
    json!({ "filePattern": ws.pattern("*.log"), "kinesisStream": "creds", "maxBufferAgeMillis": 1000 })
}

fn put_keys(fake: &FakeKinesis) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.target.ends_with("PutRecords"))
        .map(|r| r.access_key.unwrap_or_default())
        .collect()
}

#[test]
fn static_keys_in_agent_json_win_over_the_environment() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    write_lines(&ws.file("a.log"), 0..LINES, "S");
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(), "kinesis.region": TEST_REGION,
        "awsAccessKeyId": "AKIACONFIGFILEKEY000", "awsSecretAccessKey": "config-secret",
        "flows": [flow(&ws)]
    }));
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{log}");
    assert_exactly_once(expected_lines(0..LINES, "S"), &fake.record_data());
    let keys = put_keys(&fake);
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k == "AKIACONFIGFILEKEY000"), "{keys:?}");
    assert!(!log.contains("config-secret"), "the secret must never be logged\n{log}");
}

#[test]
fn assume_role_uses_the_role_credentials_from_sts() {
    let moto = Peer::start(PeerKind::Moto);
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    write_lines(&ws.file("a.log"), 0..LINES, "R");
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(), "kinesis.region": TEST_REGION,
        "assumeRoleARN": "arn:aws:iam::123456789012:role/log-shipper",
        "assumeRoleExternalId": "external-42",
        "sts.endpoint": moto.endpoint(),
        "flows": [flow(&ws)]
    }));
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{log}");
    assert_exactly_once(expected_lines(0..LINES, "R"), &fake.record_data());
    let keys = put_keys(&fake);
    assert!(!keys.is_empty());
    // moto hands out temporary keys (ASIA...), never the base key from the environment.
    assert!(keys.iter().all(|k| k.starts_with("ASIA") && k != TEST_ACCESS_KEY_ID), "{keys:?}");
}

/// A container credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, as on ECS; the
/// instance profile works the same way through the SDK's credentials cache) handing out new
/// temporary keys on every call, each valid for `lifetime`. Returns its URL and the number of
/// keys handed out.
fn rotating_credentials_server(lifetime: Duration) -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/creds", listener.local_addr().unwrap());
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = issued.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let expires = aws_smithy_types::DateTime::from(std::time::SystemTime::now() + lifetime)
                .fmt(aws_smithy_types::date_time::Format::DateTime)
                .unwrap();
            let body = json!({
                "AccessKeyId": format!("ASIAROTATING{n:04}"),
                "SecretAccessKey": format!("secret-{n}"),
                "Token": format!("token-{n}"),
                "Expiration": expires,
            })
            .to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes());
        }
    });
    (url, issued)
}

/// Credentials that rotate while the daemon runs are picked up without a restart, and a key
/// that expires early (the service says `ExpiredTokenException` while the SDK still holds it)
/// only delays its records: they are retried, reported once, and every line arrives once.
#[test]
fn rotating_credentials_are_used_without_a_restart_and_an_expiry_loses_nothing() {
    let fake = FakeKinesis::start();
    // The SDK renews keys some seconds before they expire: with 15 s keys, about every 10 s.
    let (url, issued) = rotating_credentials_server(Duration::from_secs(15));
    let ws = Workspace::new();
    let f = ws.file("a.log");
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(), "kinesis.region": TEST_REGION,
        "flows": [{
            "filePattern": ws.pattern("*.log"), "kinesisStream": "creds", "maxBufferAgeMillis": 1000,
            "initialPosition": "START_OF_FILE", "retryInitialBackoffMillis": 100, "retryMaxBackoffMillis": 1000
        }]
    }));
    let env = [
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", url.as_str()),
        ("NO_COLOR", "1"),
    ];
    let mut agent = AgentProcess::spawn_in(&ws.home, ws.args(false, &[]), &env);
    let mut written = 0;
    let mut expired = None;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(24) {
        write_lines(&f, written..written + 50, "C");
        written += 50;
        std::thread::sleep(Duration::from_millis(100));
        // After 2 s, the key handed out last expires early (the SDK renews it a few seconds later).
        if expired.is_none() && start.elapsed() > Duration::from_secs(2) {
            let n = issued.load(std::sync::atomic::Ordering::SeqCst);
            assert!(n > 0 && agent.is_running(), "no credentials fetched; log:\n{}", agent.log());
            let k = format!("ASIAROTATING{:04}", n - 1);
            fake.expire_key(&k);
            eprintln!("expired {k} at {:?}", start.elapsed());
            expired = Some(k);
        }
    }
    let len = file_len(&f);
    assert_eq!(ws.wait_checkpoint(&f, len, Duration::from_secs(30)), Some(len), "not all delivered");
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    let log = agent.log();
    assert_exactly_once(expected_lines(0..written, "C"), &fake.record_data());

    let keys = put_keys(&fake);
    let mut distinct: Vec<&String> = keys.iter().collect();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "keys used, in order: {distinct:?} ({} issued)",
        issued.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert!(keys.iter().all(|k| k.starts_with("ASIAROTATING")), "{keys:?}");
    let expired = expired.expect("a key was expired");
    let rejected = fake.requests().iter().filter(|r| r.error_code.as_deref() == Some("ExpiredTokenException")).count();
    assert!(rejected > 0, "no request was signed with the expired key");
    let after = keys.iter().rposition(|k| *k == expired).map_or(0, |i| keys.len() - 1 - i);
    assert!(after > 0, "the expired key was still the last one used");
    let said = log.lines().filter(|l| l.contains("ExpiredTokenException")).count();
    assert!(
        (1..=3).contains(&said),
        "the expiry must be reported once per episode, said {said} times; log:\n{}",
        tail(&log, 8192)
    );
    assert!(!log.contains("giving up"), "{log}");
    eprintln!(
        "rotating credentials: {} keys used ({} issued), {rejected} requests rejected as expired, {written} lines",
        distinct.len(),
        issued.load(std::sync::atomic::Ordering::SeqCst)
    );
}
