//! End-to-end KPL aggregation: the real binary (`--once`, `kplAggregation`) ships 100,000 lines to
//! a 4-shard kinesalite stream (the emulator that stays fast as a stream fills, with ListShards
//! and GetRecords), half with RANDOM keys and half with keys taken from a JSON field (grouped by
//! the ListShards map). The records read back are de-aggregated by AWS's own Python library
//! (`aws-kinesis-agg`, installed by `scripts/peers/peers install kinesis-agg`), not by our code:
//! every line must arrive exactly once, every user record must sit on the shard its key hashes
//! to, and the checkpoints must reach the ends of the files. Prints the Kinesis records and PUT
//! payload units per GB of lines used, with and without aggregation.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

/// A PUT payload unit: 25 KB.
const PAYLOAD_UNIT: usize = 25 * 1024;

fn install_deaggregator() -> std::path::PathBuf {
    let mut child = Command::new("bash")
        .arg(peers_script())
        .args(["install", "kinesis-agg"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/peers/peers");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(900), "peers install kinesis-agg timed out");
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    assert!(status.success(), "peers install kinesis-agg: {}", String::from_utf8_lossy(&out.stderr));
    repo_dir().join(".peers/kinesis-agg/bin/python")
}

/// A user record as AWS's de-aggregator gives it.
struct UserRecord {
    shard: String,
    pk: String,
    ehk: Option<String>,
    data: Vec<u8>,
    aggregated: bool,
}

fn deaggregate(python: &std::path::Path, records: &[Received]) -> Vec<UserRecord> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut input = String::new();
    for r in records {
        input +=
            &json!({"shard": r.shard_id, "pk": r.partition_key, "seq": r.sequence_number, "data": b64.encode(&r.data)})
                .to_string();
        input.push('\n');
    }
    let mut child = Command::new(python)
        .arg(repo_dir().join("tests/scripts/kpl_deaggregate.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the de-aggregator");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "de-aggregator failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            UserRecord {
                shard: v["shard"].as_str().unwrap().to_string(),
                pk: v["pk"].as_str().unwrap().to_string(),
                ehk: v["ehk"].as_str().map(str::to_string),
                data: b64.decode(v["data"].as_str().unwrap()).unwrap(),
                aggregated: v["aggregated"].as_bool().unwrap(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpl_aggregates_de_aggregate_with_aws_library_onto_the_right_shards() {
    let python = install_deaggregator();
    let peer = Peer::start(PeerKind::Kinesalite);
    let client = kinesis_client(&peer.endpoint());
    let stream = unique_name("kpl");
    let shards = bounded(30, "create stream", create_stream(&client, &stream, 4)).await;
    let ws = Workspace::new();
    const HALF: u64 = 50_000;

    // RANDOM keys: numbered lines of 100 bytes.
    let plain = ws.file("random-a.log");
    write_lines(&plain, 0..HALF, "R");
    // Keys from a JSON field: 97 users, lines of about 100 bytes.
    let mut users_text = String::with_capacity(HALF as usize * 100);
    for i in 0..HALF {
        let line = json!({"user": format!("user-{}", i % 97), "n": i, "pad": "x".repeat(40)}).to_string();
        users_text += &line;
        users_text.push('\n');
    }
    let users_file = ws.file("users-a.jsonl");
    std::fs::write(&users_file, &users_text).unwrap();
    let line_bytes = file_len(&plain) + file_len(&users_file);

    let flow = |glob: &str, key: Value| {
        json!({
            "filePattern": ws.pattern(glob),
            "kinesisStream": stream,
            "initialPosition": "START_OF_FILE",
            "maxBufferAgeMillis": 1000,
            "partitionKeyOption": key,
            "kplAggregation": true,
        })
    };
    ws.write_config(json!({
        "kinesis.endpoint": peer.endpoint(),
        "kinesis.region": TEST_REGION,
        "flows": [flow("random-*.log", json!("RANDOM")), flow("users-*.jsonl", json!({"field": "$.user"}))],
    }));
    let (status, log, took) = ws.run_once(Duration::from_secs(300));
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", tail(&log, 8192));
    assert_eq!(ws.checkpoint_of(&plain), Some(file_len(&plain)), "checkpoint of the RANDOM file");
    assert_eq!(ws.checkpoint_of(&users_file), Some(file_len(&users_file)), "checkpoint of the users file");

    let got = read_all(&client, &stream).await;
    let users = deaggregate(&python, &got);

    // Exactly once.
    let data: Vec<Vec<u8>> = users.iter().map(|u| u.data.clone()).collect();
    let expected: Vec<String> = expected_lines(0..HALF, "R").chain(users_text.lines().map(str::to_string)).collect();
    assert_exactly_once(expected.iter(), &data);

    // Each user record on the shard of its own key (or explicit hash key), as the KCL requires.
    let range: HashMap<&str, (u128, u128)> = shards.iter().map(|s| (s.shard_id.as_str(), (s.start, s.end))).collect();
    let mut aggregated = 0;
    for u in &users {
        let h = match &u.ehk {
            Some(e) => e.parse::<u128>().expect("decimal explicit hash key"),
            None => hash_key(&u.pk),
        };
        let (lo, hi) = range[u.shard.as_str()];
        assert!(lo <= h && h <= hi, "user record with key {:?} stored on {} (outside its range)", u.pk, u.shard);
        if u.data.starts_with(b"{") {
            let v: Value = serde_json::from_slice(&u.data).unwrap();
            assert_eq!(u.pk, v["user"].as_str().unwrap(), "each user record keeps its own key");
        } else {
            assert!(is_random_key(&u.pk), "RANDOM key {:?}", u.pk);
        }
        aggregated += u.aggregated as usize;
    }
    assert!(aggregated > users.len() * 9 / 10, "only {aggregated} of {} user records were aggregated", users.len());
    let mut shards_used: HashMap<&str, usize> = HashMap::new();
    for r in &got {
        *shards_used.entry(r.shard_id.as_str()).or_default() += 1;
    }
    assert_eq!(shards_used.len(), 4, "aggregates spread over the shards: {shards_used:?}");

    // The bill: Kinesis records and 25 KB PUT payload units, per GB of lines.
    let units = |sizes: &mut dyn Iterator<Item = usize>| sizes.map(|s| s.div_ceil(PAYLOAD_UNIT)).sum::<usize>();
    let agg_records = got.len();
    let agg_units = units(&mut got.iter().map(|r| r.data.len() + r.partition_key.len()));
    let plain_records = users.len();
    let plain_units = plain_records; // every line alone is far below 25 KB
    let per_gb = |n: usize| n as f64 * 1e9 / line_bytes as f64;
    let max_aggregate = got.iter().map(|r| r.data.len() + r.partition_key.len()).max().unwrap();
    eprintln!(
        "KPL: {} lines ({line_bytes} bytes) in {agg_records} Kinesis records (largest {max_aggregate} bytes), sent in {took:?}",
        users.len()
    );
    eprintln!(
        "per GB of lines: without aggregation {:.0} records and {:.0} PUT payload units; with aggregation {:.0} records and {:.0} PUT payload units",
        per_gb(plain_records),
        per_gb(plain_units),
        per_gb(agg_records),
        per_gb(agg_units)
    );
    assert!(max_aggregate <= 25_000, "an aggregate exceeds kplAggregationMaxBytes: {max_aggregate}");
    assert!(agg_records * 100 < plain_records, "aggregation saves less than 100x: {agg_records} records");
    assert!(log.contains("KPL aggregates sent"), "the summary counts the aggregates:\n{}", tail(&log, 4000));
}
