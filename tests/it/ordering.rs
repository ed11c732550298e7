//! Order per key (`ordering`, default `PER_KEY` for keys taken from the records): the real binary
//! (`--once`) ships JSON lines keyed by a field. For every key, no record may be accepted before
//! an earlier record of that key that was not accepted yet (redeliveries of records already
//! accepted are allowed where an answer was lost). Checked on the fault endpoint through per-record
//! throttling, whole-request 500s, connections cut after the records were stored and answers
//! later than the socket timeout, with the acceptance order the endpoint recorded; and on
//! kinesalite and kinesis-local by reading each shard back in sequence order. A control run with
//! `ordering: NONE` shows the check does catch reordering.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Line `n` of a file keyed by `keys` keys: `{"k":"key-<n % keys>","n":<n>,"pad":"…"}`.
fn write_keyed(path: &std::path::Path, lines: u64, keys: u64) {
    let mut text = String::with_capacity(lines as usize * 80);
    for n in 0..lines {
        text += &format!("{{\"k\":\"key-{}\",\"n\":{n},\"pad\":\"{}\"}}\n", n % keys, "x".repeat((n % 40) as usize));
    }
    std::fs::write(path, text).unwrap();
}

/// (key, line number) of each record, in the order given.
fn keyed(records: impl IntoIterator<Item = Vec<u8>>) -> Vec<(String, u64)> {
    records
        .into_iter()
        .map(|d| {
            let v: Value = serde_json::from_slice(&d).expect("a JSON record");
            (v["k"].as_str().expect("k").to_owned(), v["n"].as_u64().expect("n"))
        })
        .collect()
}

/// Checks acceptances in order: every line arrived, and none was accepted while an earlier line of
/// its key had not been. Returns (violations, duplicates); a violation names its lines.
fn order_violations(accepted: &[(String, u64)], lines: u64, keys: u64) -> (Vec<String>, u64) {
    // The next line of each key not accepted yet.
    let mut next: HashMap<&str, u64> = HashMap::new();
    let mut seen = vec![0u32; lines as usize];
    let mut violations = Vec::new();
    for (k, n) in accepted {
        let expected = next.entry(k.as_str()).or_insert(n % keys);
        seen[*n as usize] += 1;
        if *n > *expected {
            violations.push(format!("{k}: line {n} accepted before line {expected}"));
        }
        // Move past every line of the key accepted so far.
        while (*expected as usize) < seen.len() && seen[*expected as usize] > 0 {
            *expected += keys;
        }
    }
    let missing: Vec<u64> = (0..lines).filter(|n| seen[*n as usize] == 0).take(10).collect();
    assert!(missing.is_empty(), "lines never accepted, e.g. {missing:?}");
    (violations, seen.iter().map(|c| u64::from(c.saturating_sub(1))).sum())
}

/// A run on the fault endpoint: (violations, duplicates, log).
fn fake_run(
    what: &str,
    lines: u64,
    keys: u64,
    flow: Value,
    faults: impl FnOnce(&FakeKinesis),
) -> (Vec<String>, u64, String) {
    let fake = FakeKinesis::start_with_shards(4);
    faults(&fake);
    let ws = Workspace::new();
    write_keyed(&ws.file("keyed.log"), lines, keys);
    let flow = with_keys(
        json!({
            "filePattern": ws.pattern("keyed.log"),
            "kinesisStream": unique_name("ordered"),
            "partitionKeyOption": {"field": "k"},
            "retryInitialBackoffMillis": 10,
        }),
        &flow,
    );
    ws.write_config(fake_kinesis_config(&fake, flow, 200, &json!({ "socketTimeoutMillis": 1000 })));
    let (status, log, took) = ws.run_once(Duration::from_secs(240));
    assert_eq!(status.code(), Some(0), "{what}: exit status; log:\n{}", tail(&log, 8192));
    let accepted: Vec<Vec<u8>> = fake.all_records().into_iter().map(|r| r.data).collect();
    let (violations, duplicates) = order_violations(&keyed(accepted), lines, keys);
    eprintln!(
        "{what}: {lines} lines, {keys} key(s) in {took:?}: {} requests, {} entries failed, {} order violation(s), \
         {duplicates} duplicate(s)",
        fake.request_count(),
        fake.failed_entry_count(),
        violations.len()
    );
    (violations, duplicates, log)
}

fn assert_in_order(what: &str, (violations, _, log): &(Vec<String>, u64, String)) {
    assert!(
        violations.is_empty(),
        "{what}: {} violations, e.g. {:?}\n{}",
        violations.len(),
        &violations[..violations.len().min(5)],
        tail(log, 4096)
    );
}

#[test]
fn throttling_keeps_each_keys_order() {
    for (rate, keys, lines) in [(0.02, 50, 20_000), (0.10, 10_000, 40_000), (0.10, 1, 600)] {
        let what = format!("{}% throttled, {keys} key(s)", rate * 100.0);
        let run = fake_run(&what, lines, keys, json!({}), |f| f.set_throttle_fraction(rate));
        assert_in_order(&what, &run);
        assert_eq!(run.1, 0, "{what}: throttling alone duplicates nothing");
        if keys < 10_000 {
            assert!(
                run.2.contains("records held back behind an earlier record of their key"),
                "{what}: nothing held back?"
            );
        }
    }
}

#[test]
fn failed_requests_and_lost_answers_keep_each_keys_order() {
    let what = "500s, cut connections and late answers";
    let run = fake_run(what, 8_000, 50, json!({ "maxBufferSizeRecords": 100 }), |f| {
        f.set_http500_fraction(0.05);
        f.set_reset(0.05, true);
        f.set_response_delay(0.03, Duration::from_millis(1500));
        f.set_throttle_fraction(0.02);
    });
    assert_in_order(what, &run);
    // Lost answers are sent again: duplicates are allowed, bounded by the records of those
    // requests (at most 100 each).
    assert!(run.1 <= 8_000 / 4, "{what}: {} duplicates", run.1);
}

/// The control: without ordering the same faults do reorder, so the check above can fail.
#[test]
fn without_ordering_throttling_reorders() {
    let what = "ordering NONE, 10% throttled";
    let (violations, _, _) =
        fake_run(what, 20_000, 50, json!({ "ordering": "NONE" }), |f| f.set_throttle_fraction(0.10));
    assert!(!violations.is_empty(), "{what}: no reordering seen, so the check proves nothing");
}

/// KPL aggregation keeps order with one aggregate per shard in flight, also through throttling.
#[test]
fn aggregates_keep_each_keys_order() {
    let what = "kplAggregation, 10% throttled";
    let fake = FakeKinesis::start_with_shards(4);
    fake.set_throttle_fraction(0.10);
    let ws = Workspace::new();
    let lines = 30_000;
    write_keyed(&ws.file("keyed.log"), lines, 200);
    let flow = json!({
        "filePattern": ws.pattern("keyed.log"),
        "kinesisStream": unique_name("ordered-kpl"),
        "partitionKeyOption": {"field": "k"},
        "kplAggregation": true,
        "retryInitialBackoffMillis": 10,
    });
    ws.write_config(fake_kinesis_config(&fake, flow, 200, &json!({})));
    let (status, log, _) = ws.run_once(Duration::from_secs(240));
    assert_eq!(status.code(), Some(0), "{what}: exit status; log:\n{}", tail(&log, 8192));
    let mut accepted = Vec::new();
    for r in fake.all_records() {
        accepted.extend(deaggregate(&r.data));
    }
    let (violations, duplicates) = order_violations(&keyed(accepted), lines, 200);
    assert!(violations.is_empty(), "{what}: {:?}", &violations[..violations.len().min(5)]);
    assert_eq!(duplicates, 0);
}

/// The user records of a KPL aggregate, in order (a plain record is itself).
fn deaggregate(data: &[u8]) -> Vec<Vec<u8>> {
    const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
    if !data.starts_with(&MAGIC) {
        return vec![data.to_vec()];
    }
    let body = &data[4..data.len() - 16];
    // AggregatedRecord: field 3 (records), each a Record whose field 3 is the data.
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let (tag, n) = varint(&body[i..]);
        i += n;
        let (len, n) = varint(&body[i..]);
        i += n;
        let field = &body[i..i + len as usize];
        i += len as usize;
        if tag >> 3 == 3 {
            let mut j = 0;
            while j < field.len() {
                let (t, n) = varint(&field[j..]);
                j += n;
                if t & 7 == 0 {
                    j += varint(&field[j..]).1;
                    continue;
                }
                let (l, n) = varint(&field[j..]);
                j += n;
                if t >> 3 == 3 {
                    out.push(field[j..j + l as usize].to_vec());
                }
                j += l as usize;
            }
        }
    }
    out
}

fn varint(b: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate() {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    panic!("truncated varint")
}

/// Kinesalite and kinesis-local: each shard read back in sequence order holds every key's
/// records in line order, with one key, 50 and 10,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulators_store_each_keys_records_in_order() {
    for kind in [PeerKind::Kinesalite, PeerKind::KinesisLocal] {
        let peer = Peer::start(kind);
        let client = kinesis_client(&peer.endpoint());
        for (keys, lines) in [(1u64, 300u64), (50, 5_000), (10_000, 20_000)] {
            let what = format!("{} with {keys} key(s)", kind.name());
            let stream = unique_name("order");
            bounded(30, "create stream", create_stream(&client, &stream, 4)).await;
            let ws = Workspace::new();
            write_keyed(&ws.file("keyed.log"), lines, keys);
            ws.write_config(json!({
                "kinesis.endpoint": peer.endpoint(),
                "kinesis.region": TEST_REGION,
                "flows": [{
                    "filePattern": ws.pattern("keyed.log"),
                    "kinesisStream": stream,
                    "initialPosition": "START_OF_FILE",
                    "maxBufferAgeMillis": 1000,
                    "partitionKeyOption": {"field": "$.k"},
                }],
            }));
            let (status, log, took) = ws.run_once(Duration::from_secs(180));
            assert_eq!(status.code(), Some(0), "{what}: exit status; log:\n{}", tail(&log, 8192));
            // Shard by shard, in sequence order; a key lives on one shard.
            let got = read_all(&client, &stream).await;
            let mut last: HashMap<String, u64> = HashMap::new();
            for r in &got {
                let (k, n) = keyed([r.data.clone()]).pop().unwrap();
                assert_eq!(r.partition_key, k, "{what}: key of line {n}");
                if let Some(prev) = last.insert(k.clone(), n) {
                    assert!(prev < n, "{what}: {k}: line {n} stored after line {prev} in {}", r.shard_id);
                }
            }
            let numbers: Vec<u64> = keyed(data_of(&got)).into_iter().map(|(_, n)| n).collect();
            assert_numbers_exactly_once(0..lines, &numbers);
            eprintln!("{what}: {lines} lines in order in {took:?}");
        }
    }
}
