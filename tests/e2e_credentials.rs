//! Credentials from agent.json: static keys, and `assumeRoleARN` through STS (moto's STS, with
//! `sts.endpoint`). The fake Kinesis endpoint records which access key signed each request, so
//! the tests see which credentials were really used.

mod common;

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
