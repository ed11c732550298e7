//! End-to-end KPL aggregation: the real binary (`--once`, `kplAggregation`) ships 100,000 lines to
//! a 4-shard kinesalite stream (the emulator that stays fast as a stream fills, with ListShards
//! and GetRecords), half with RANDOM keys and half with keys taken from a JSON field (grouped by
//! the ListShards map). The records read back are de-aggregated by AWS's own Python library
//! (`aws-kinesis-agg`, installed by `scripts/peers/peers install kinesis-agg`), not by our code:
//! every line must arrive exactly once, every user record must sit on the shard its key hashes
//! to, and the checkpoints must reach the ends of the files. Prints the Kinesis records and PUT
//! payload units per GB of lines used, with and without aggregation.

use crate::common;

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

/// `n` JSON lines keyed by 97 users, as text.
fn user_lines(range: std::ops::Range<u64>) -> String {
    let mut text = String::new();
    for i in range {
        text += &json!({"user": format!("user-{}", i % 97), "n": i, "pad": "y".repeat(30)}).to_string();
        text.push('\n');
    }
    text
}

/// The user records a KCL consumer would deliver: those whose hash key lies in the range of the
/// shard they were stored on (the KCL drops the others).
fn kept_by_consumers<'a>(users: &'a [UserRecord], shards: &[ShardRange]) -> (Vec<&'a UserRecord>, usize) {
    let range: HashMap<&str, (u128, u128)> = shards.iter().map(|s| (s.shard_id.as_str(), (s.start, s.end))).collect();
    let mut dropped = 0;
    let kept = users
        .iter()
        .filter(|u| {
            let h = match &u.ehk {
                Some(e) => e.parse::<u128>().expect("decimal explicit hash key"),
                None => hash_key(&u.pk),
            };
            let (lo, hi) = range[u.shard.as_str()];
            let ok = lo <= h && h <= hi;
            dropped += !ok as usize;
            ok
        })
        .collect();
    (kept, dropped)
}

/// Entries failing at random (InternalFailure, throttling) make whole aggregates go again: every
/// line still arrives exactly once, on its key's shard, and the checkpoint reaches the end of the
/// file only once every record inside every aggregate is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_aggregates_are_sent_again_whole() {
    let python = install_deaggregator();
    let fake = FakeKinesis::start_with_shards(4);
    fake.set_entry_failure(0.3, "InternalFailure");
    let client = kinesis_client(&fake.endpoint());
    let shards = list_shards(&client, "faulty").await;
    let ws = Workspace::new();
    let file = ws.file("users-a.jsonl");
    let text = user_lines(0..20_000);
    std::fs::write(&file, &text).unwrap();
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": TEST_REGION,
        "flows": [{
            "filePattern": ws.pattern("users-*.jsonl"),
            "kinesisStream": "faulty",
            "initialPosition": "START_OF_FILE",
            "maxBufferAgeMillis": 1000,
            "retryInitialBackoffMillis": 10,
            "retryMaxBackoffMillis": 100,
            "partitionKeyOption": {"field": "$.user"},
            "kplAggregation": true,
            "kplAggregationMaxBytes": 4000,
        }],
    }));
    let (status, log, _) = ws.run_once(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", tail(&log, 8192));
    assert!(fake.failed_entry_count() > 10, "the faults were not injected");
    assert_eq!(ws.checkpoint_of(&file), Some(file_len(&file)));
    let got: Vec<Received> = fake
        .all_records()
        .into_iter()
        .map(|r| {
            assert_eq!(r.explicit_hash_key, None);
            Received {
                shard_id: r.shard_id,
                partition_key: r.partition_key,
                data: r.data,
                sequence_number: r.sequence_number,
            }
        })
        .collect();
    let users = deaggregate(&python, &got);
    let (kept, dropped) = kept_by_consumers(&users, &shards);
    assert_eq!(dropped, 0, "user records outside their shard's range");
    let data: Vec<Vec<u8>> = kept.iter().map(|u| u.data.clone()).collect();
    assert_exactly_once(text.lines(), &data);
    assert!(got.iter().all(|r| r.data.len() + r.partition_key.len() <= 4000));
}

/// Resharding while the agent runs (kinesis-local: UpdateShardCount closes the parent shards and
/// opens children with new ids, as Kinesis does): aggregates grouped by the old shard map land on
/// children that do not cover all their records. The agent notices (the put's ShardId is not the
/// one it grouped for), refreshes the map, and sends again the records a consumer would drop, so
/// a KCL consumer still sees every line exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_loses_no_aggregated_record() {
    let python = install_deaggregator();
    let peer = Peer::start(PeerKind::KinesisLocal);
    let client = kinesis_client(&peer.endpoint());
    let stream = unique_name("reshard");
    bounded(30, "create stream", create_stream(&client, &stream, 2)).await;
    let ws = Workspace::new();
    let file = ws.file("users-a.jsonl");
    let first = user_lines(0..2_000);
    std::fs::write(&file, &first).unwrap();
    ws.write_config(json!({
        "kinesis.endpoint": peer.endpoint(),
        "kinesis.region": TEST_REGION,
        "flows": [{
            "filePattern": ws.pattern("users-*.jsonl"),
            "kinesisStream": stream,
            "initialPosition": "START_OF_FILE",
            "maxBufferAgeMillis": 1000,
            "partitionKeyOption": {"field": "$.user"},
            "kplAggregation": true,
            "kplAggregationMaxBytes": 8000,
        }],
    }));
    let mut agent = ws.spawn(false, &[]);
    let len1 = file_len(&file);
    assert_eq!(ws.wait_checkpoint(&file, len1, Duration::from_secs(60)), Some(len1), "{}", tail(&agent.log(), 4000));

    bounded(30, "UpdateShardCount", async {
        client
            .update_shard_count()
            .stream_name(&stream)
            .target_shard_count(4)
            .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
            .send()
            .await
            .unwrap_or_else(|e| panic!("UpdateShardCount: {}", err_text(&e)));
        loop {
            let out = client.describe_stream_summary().stream_name(&stream).send().await.unwrap();
            let s = out.stream_description_summary().unwrap();
            if s.stream_status() == &aws_sdk_kinesis::types::StreamStatus::Active && s.open_shard_count() == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    let second = user_lines(2_000..4_000);
    append_bytes(&file, second.as_bytes());
    let len2 = file_len(&file);
    assert_eq!(ws.wait_checkpoint(&file, len2, Duration::from_secs(90)), Some(len2), "{}", tail(&agent.log(), 4000));
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(30));
    let log = agent.log();

    let shards = list_shards(&client, &stream).await;
    assert!(shards.len() >= 6, "parents and children: {shards:?}");
    let got = read_all(&client, &stream).await;
    let users = deaggregate(&python, &got);
    let (kept, dropped) = kept_by_consumers(&users, &shards);
    let data: Vec<Vec<u8>> = kept.iter().map(|u| u.data.clone()).collect();
    assert_exactly_once(first.lines().chain(second.lines()), &data);
    // `ordering` is PER_KEY (a field key): read as a consumer does (parent shards, then their
    // children, each in sequence order), each user's records come in line order, the records
    // sent again included.
    let mut last: HashMap<String, u64> = HashMap::new();
    for u in &kept {
        let v: serde_json::Value = serde_json::from_slice(&u.data).expect("JSON");
        let (user, n) = (v["user"].as_str().unwrap().to_owned(), v["n"].as_u64().unwrap());
        if let Some(prev) = last.insert(user.clone(), n) {
            assert!(prev < n, "{user}: line {n} after line {prev} (shard {})", u.shard);
        }
    }
    eprintln!("resharding: {dropped} user record(s) stored outside their shard's range were sent again");
    assert!(dropped > 0, "the resharding did not strand any record: the test did not test anything");
    assert!(log.contains("the stream was resharded"), "{}", tail(&log, 4000));
}
