//! End-to-end derived partition keys: the real binary (`--once`) ships four flows into one
//! 4-shard kinesalite stream (kinesalite: strict validation, multi-shard streams, ListShards and
//! GetRecords, and it stays fast as the stream fills). Every record read back must carry the key
//! its flow's rule gives its line, and sit on the shard whose hash key range holds MD5(key), or
//! its explicit hash key.
//!
//! - `csv-*.csv`: CSVTOJSON, then `{"field": "$.user"}`: the key is a column, read after
//!   conversion; lines without that column fall back to DETERMINISTIC (MD5 of the converted
//!   record) and are counted in the summary.
//! - `tenant-*.log`: `{"regex": "tenant=(?P<t>[a-z0-9-]+)", "group": "t"}` on the raw line; lines
//!   without a tenant get a RANDOM key (counted).
//! - `const-*.log`: `{"constant": "one-key"}`: every record on one shard.
//! - `route-*.jsonl`: a constant key, with `explicitHashKeyField`: records land on the shard of
//!   their explicit hash key, not their key's; invalid ones (counted) on the key's shard.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn shard_of_hash(shards: &[ShardRange], h: u128) -> &str {
    shards.iter().find(|s| s.start <= h && h <= s.end).map(|s| s.shard_id.as_str()).expect("a shard holds every hash")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_keys_put_each_record_on_the_shard_of_its_key() {
    let peer = Peer::start(PeerKind::Kinesalite);
    let client = kinesis_client(&peer.endpoint());
    let stream = unique_name("keys");
    let shards = bounded(30, "create stream", create_stream(&client, &stream, 4)).await;
    let ws = Workspace::new();
    const N: u64 = 2_000;

    // CSV: id,user,text; every 10th line has no user column.
    let mut csv = String::new();
    for i in 0..N {
        if i % 10 == 9 {
            csv += &format!("{i},\n");
        } else {
            csv += &format!("{i},user-{},csv line {i}\n", i % 53);
        }
    }
    std::fs::write(ws.file("csv-a.csv"), &csv).unwrap();
    // Tenant lines; every 7th has no tenant.
    let mut tenant = String::new();
    for i in 0..N {
        if i % 7 == 6 {
            tenant += &format!("line {i} without one\n");
        } else {
            tenant += &format!("line {i} tenant=t-{} rest\n", i % 31);
        }
    }
    std::fs::write(ws.file("tenant-a.log"), &tenant).unwrap();
    write_lines(&ws.file("const-a.log"), 0..N, "K");
    // Explicit hash keys: record i goes to shard i % 4, at an offset inside its range; every 11th
    // has an invalid one (2^128, or not digits).
    let mut route = String::new();
    for i in 0..N {
        let s = &shards[(i % 4) as usize];
        let h = s.start + (s.end - s.start) / 1000 * (i as u128 % 1000);
        let hash = match i % 11 {
            10 if i % 2 == 0 => json!("340282366920938463463374607431768211456"),
            10 => json!("12ab"),
            _ => json!(h.to_string()),
        };
        route += &format!("{}\n", json!({"n": i, "h": hash}));
    }
    std::fs::write(ws.file("route-a.jsonl"), &route).unwrap();

    let flow = |glob: &str, key: Value, extra: Value| {
        let mut f = json!({
            "filePattern": ws.pattern(glob),
            "kinesisStream": stream,
            "initialPosition": "START_OF_FILE",
            "maxBufferAgeMillis": 1000,
            "partitionKeyOption": key,
        });
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        f
    };
    ws.write_config(json!({
        "kinesis.endpoint": peer.endpoint(),
        "kinesis.region": TEST_REGION,
        "flows": [
            flow("csv-*.csv", json!({"field": "$.user", "fallback": "DETERMINISTIC"}), json!({
                "dataProcessingOptions": [{"optionName": "CSVTOJSON", "customFieldNames": ["id", "user", "text"]}]
            })),
            flow("tenant-*.log", json!({"regex": "tenant=(?P<t>[a-z0-9-]+)", "group": "t"}), json!({})),
            flow("const-*.log", json!({"constant": "one-key"}), json!({})),
            flow("route-*.jsonl", json!({"constant": "routed", "explicitHashKeyField": "$.h"}), json!({})),
        ],
    }));
    let (status, log, _) = ws.run_once(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", tail(&log, 8192));
    // The fallbacks are counted: 200 CSV lines without a user, 285 lines without a tenant.
    assert!(log.contains("partition key fallbacks 200"), "CSV fallbacks not reported:\n{}", tail(&log, 4000));
    assert!(log.contains("partition key fallbacks 285"), "regex fallbacks not reported:\n{}", tail(&log, 4000));
    let invalid = (0..N).filter(|i| i % 11 == 10).count();
    assert!(
        log.contains(&format!("invalid explicit hash keys {invalid}")),
        "invalid explicit hash keys not reported:\n{}",
        tail(&log, 4000)
    );

    let got = read_all(&client, &stream).await;
    assert_eq!(got.len() as u64, 4 * N, "records read back");
    let mut per_flow_shards: HashMap<&str, HashSet<String>> = HashMap::new();
    let (mut csv_seen, mut tenant_seen, mut const_seen, mut route_seen) = (0, 0, 0, 0);
    for r in &got {
        let text = String::from_utf8(r.data.clone()).expect("UTF-8");
        let line = text.trim_end_matches('\n');
        let key_shard = shard_for_key(&shards, &r.partition_key);
        if line.starts_with("{\"id\"") {
            // Converted CSV.
            csv_seen += 1;
            let v: Value = serde_json::from_str(line).expect("CSVTOJSON output");
            let expected = match v["user"].as_str() {
                Some(u) if !u.is_empty() => u.to_string(),
                _ => md5_hex(text.as_bytes()),
            };
            assert_eq!(r.partition_key, expected, "key of {line}");
            assert_eq!(r.shard_id, key_shard, "shard of {line}");
            per_flow_shards.entry("csv").or_default().insert(r.shard_id.clone());
        } else if line.starts_with("line ") {
            tenant_seen += 1;
            match line.split("tenant=").nth(1) {
                Some(rest) => assert_eq!(r.partition_key, rest.split(' ').next().unwrap(), "key of {line}"),
                None => assert!(is_random_key(&r.partition_key), "fallback key of {line}: {}", r.partition_key),
            }
            assert_eq!(r.shard_id, key_shard, "shard of {line}");
            per_flow_shards.entry("tenant").or_default().insert(r.shard_id.clone());
        } else if line.starts_with("K ") {
            const_seen += 1;
            assert_eq!(r.partition_key, "one-key");
            assert_eq!(r.shard_id, key_shard, "shard of {line}");
            per_flow_shards.entry("const").or_default().insert(r.shard_id.clone());
        } else {
            route_seen += 1;
            let v: Value = serde_json::from_str(line).expect("route line");
            assert_eq!(r.partition_key, "routed");
            let expected = match v["h"].as_str().and_then(|h| h.parse::<u128>().ok()) {
                Some(h) => shard_of_hash(&shards, h),
                None => key_shard,
            };
            assert_eq!(r.shard_id, expected, "shard of {line}");
            per_flow_shards.entry("route").or_default().insert(r.shard_id.clone());
        }
    }
    assert_eq!((csv_seen, tenant_seen, const_seen, route_seen), (N, N, N, N));
    // Field and regex keys spread over the shards; a constant key uses one; explicit hash keys
    // reach every shard although the key is constant.
    assert_eq!(per_flow_shards["csv"].len(), 4, "{per_flow_shards:?}");
    assert_eq!(per_flow_shards["tenant"].len(), 4, "{per_flow_shards:?}");
    assert_eq!(per_flow_shards["const"].len(), 1, "{per_flow_shards:?}");
    assert_eq!(per_flow_shards["route"].len(), 4, "{per_flow_shards:?}");
    // Every line exactly once.
    let expected: Vec<String> = csv
        .lines()
        .map(|l| l.to_string())
        .chain(tenant.lines().map(str::to_string))
        .chain(expected_lines(0..N, "K"))
        .chain(route.lines().map(str::to_string))
        .collect();
    let originals: Vec<Vec<u8>> = got
        .iter()
        .map(|r| {
            let line = String::from_utf8_lossy(&r.data).trim_end().to_string();
            if line.starts_with("{\"id\"") {
                // Back to the CSV line it came from.
                let v: Value = serde_json::from_str(&line).unwrap();
                let cols: Vec<String> =
                    ["id", "user", "text"].iter().map(|c| v[c].as_str().unwrap_or("").to_string()).collect();
                let mut s = cols.join(",");
                while s.ends_with(",,") {
                    s.pop();
                }
                s.into_bytes()
            } else {
                line.into_bytes()
            }
        })
        .collect();
    assert_exactly_once(expected.iter(), &originals);
}

/// `--check-config` names the file, the flow and the key of a bad rule.
#[test]
fn a_bad_key_rule_is_reported_with_its_place() {
    let ws = Workspace::new();
    ws.write_config(json!({
        "kinesis.region": TEST_REGION,
        "flows": [
            {"filePattern": ws.pattern("a.log"), "kinesisStream": "s"},
            {"filePattern": ws.pattern("b.log"), "kinesisStream": "s", "partitionKeyOption": {"regex": "user=\\w+"}},
        ],
    }));
    let mut p = ws.spawn(false, &["--check-config"]);
    let status = p.wait_exit(Duration::from_secs(30));
    let log = p.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("agent.json: flows[1].partitionKeyOption.regex: `regex` \"user=\\\\w+\" has no capture group"),
        "{log}"
    );
}

/// The fallback and invalid explicit hash key counters, and the KPL aggregates, in the daemon's
/// status line and in Prometheus.
#[test]
fn fallbacks_are_counted_in_the_status_line_and_prometheus() {
    use std::io::{Read as _, Write as _};
    let fake = FakeKinesis::start_with_shards(4);
    let ws = Workspace::new();
    let file = ws.file("events.jsonl");
    let mut text = String::new();
    for i in 0..100u64 {
        let mut v = json!({"n": i, "h": (i * 1_000_000_007).to_string()});
        if i % 10 != 0 {
            v["user"] = json!(format!("u{}", i % 7));
        }
        if i % 20 == 5 {
            v["h"] = json!("not a number");
        }
        text += &format!("{v}\n");
    }
    std::fs::write(&file, &text).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": TEST_REGION,
        "prometheus.port": port,
        "log.statusReportingPeriodSeconds": 1,
        "flows": [{
            "filePattern": ws.pattern("*.jsonl"),
            "kinesisStream": "events",
            "initialPosition": "START_OF_FILE",
            "maxBufferAgeMillis": 1000,
            "partitionKeyOption": {"field": "$.user", "explicitHashKeyField": "$.h"},
            "kplAggregation": true,
        }],
    }));
    let mut agent = ws.spawn(false, &[]);
    let len = file_len(&file);
    assert_eq!(ws.wait_checkpoint(&file, len, Duration::from_secs(30)), Some(len), "{}", tail(&agent.log(), 4000));
    assert!(
        agent.wait_for_log("partition key fallbacks 10 (+", Duration::from_secs(10)),
        "status line: {}",
        tail(&agent.log(), 4000)
    );
    assert!(agent.log().contains("invalid explicit hash keys 5 (+"), "{}", tail(&agent.log(), 4000));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let value = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(&format!("kinesis_agent_{name}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
    };
    assert_eq!(value("partition_key_fallbacks_total"), 10.0);
    assert_eq!(value("explicit_hash_key_invalid_total"), 5.0);
    assert_eq!(value("records_sent_total"), 100.0);
    let aggregates = value("kpl_aggregates_sent_total");
    assert!(aggregates >= 1.0 && (aggregates as usize) <= fake.record_count(), "{aggregates} aggregates");
    // Aggregates grouped by explicit hash key are sent with their first record's.
    assert!(fake.all_records().iter().any(|r| r.explicit_hash_key.is_some()));
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
}
