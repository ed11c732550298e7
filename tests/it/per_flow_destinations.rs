//! Destination settings per flow (`kinesis.region`, `kinesis.endpoint`, `assumeRoleARN` inside a
//! flow): one agent ships to a stream of the same name in two regions of moto, and to a third
//! endpoint (the fake, which records the access key of each request) with a role assumed through
//! moto's STS, beside a flow with the agent's own credentials. Every line lands where its flow
//! says, and only the flow with the role uses the role's keys.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

const LINES: u64 = 500;

#[test]
fn flows_ship_to_their_own_region_endpoint_and_account() {
    let moto = Peer::start(PeerKind::Moto);
    let fake = FakeKinesis::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let us = kinesis_client(&moto.endpoint());
    let eu = kinesis_client_in(&moto.endpoint(), "eu-west-1");
    rt.block_on(async {
        create_stream(&us, "shared", 1).await;
        create_stream(&eu, "shared", 1).await;
    });
    let ws = Workspace::new();
    for (file, prefix) in [("us.log", "US"), ("eu.log", "EU"), ("role.log", "ROLE"), ("own.log", "OWN")] {
        write_lines(&ws.file(file), 0..LINES, prefix);
    }
    let flow = |file: &str| json!({ "filePattern": ws.pattern(file), "initialPosition": "START_OF_FILE" });
    let with = |mut f: serde_json::Value, extra: serde_json::Value| {
        f.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        f
    };
    ws.write_config(json!({
        "kinesis.endpoint": moto.endpoint(), "kinesis.region": TEST_REGION, "sts.endpoint": moto.endpoint(),
        "flows": [
            with(flow("us.log"), json!({ "kinesisStream": "shared" })),
            with(flow("eu.log"), json!({ "kinesisStream": "shared", "kinesis.region": "eu-west-1" })),
            with(flow("role.log"), json!({
                "kinesisStream": "other-account", "kinesis.endpoint": fake.endpoint(),
                "assumeRoleARN": "arn:aws:iam::210987654321:role/log-shipper", "assumeRoleExternalId": "ext-7"
            })),
            with(flow("own.log"), json!({ "kinesisStream": "own-account", "kinesis.endpoint": fake.endpoint() })),
        ]
    }));
    let (status, log, _) = ws.run_once(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("(kinesis stream shared in eu-west-1)"), "flows are labelled with their region:\n{log}");

    let (us_got, eu_got) = rt.block_on(async { (read_all(&us, "shared").await, read_all(&eu, "shared").await) });
    assert_exactly_once(expected_lines(0..LINES, "US"), &data_of(&us_got));
    assert_exactly_once(expected_lines(0..LINES, "EU"), &data_of(&eu_got));

    let by_stream = |stream: &str| -> (Vec<Vec<u8>>, Vec<String>) {
        let records = fake.all_records().into_iter().filter(|r| r.stream == stream).map(|r| r.data).collect::<Vec<_>>();
        let keys = fake
            .requests()
            .into_iter()
            .filter(|r| r.target.ends_with("PutRecords") && r.stream.as_deref() == Some(stream))
            .map(|r| r.access_key.unwrap_or_default())
            .collect();
        (records, keys)
    };
    let (role_data, role_keys) = by_stream("other-account");
    assert_exactly_once(expected_lines(0..LINES, "ROLE"), &role_data);
    // moto's STS hands out temporary keys (ASIA...): the role's, never the agent's own.
    assert!(!role_keys.is_empty() && role_keys.iter().all(|k| k.starts_with("ASIA")), "{role_keys:?}");
    let (own_data, own_keys) = by_stream("own-account");
    assert_exactly_once(expected_lines(0..LINES, "OWN"), &own_data);
    assert!(!own_keys.is_empty() && own_keys.iter().all(|k| k == TEST_ACCESS_KEY_ID), "{own_keys:?}");
}
