//! Validates the harness against the real peers, independently of the agent: start each peer,
//! create a 2-shard stream, PutRecords 500 records with the SDK, read them all back, check
//! exactly-once delivery and placement by partition-key hash. moto also does Firehose → S3.
//! The peers are installed on first use (`scripts/peers/peers install`).

use crate::common;

use std::collections::HashMap;

use common::*;

const N: u64 = 500;

async fn kinesis_round_trip(kind: PeerKind) {
    let started = std::time::Instant::now();
    let peer = Peer::start(kind);
    let start_time = started.elapsed();
    let client = kinesis_client(&peer.endpoint());
    let stream = unique_name("smoke");
    let shards = bounded(120, "round trip", async {
        let shards = create_stream(&client, &stream, 2).await;
        assert_eq!(shards.len(), 2);

        let entries: Vec<(String, Vec<u8>)> =
            (0..N).map(|i| (format!("pk-{i}"), line_text("smoke", i).into_bytes())).collect();
        let out = put_records(&client, &stream, &entries).await;
        assert_eq!(out.failed_record_count(), Some(0), "{out:?}");
        assert_eq!(out.records().len(), N as usize);
        for ((key, _), res) in entries.iter().zip(out.records()) {
            assert_eq!(res.error_code(), None, "{res:?}");
            assert_eq!(res.shard_id(), Some(shard_for_key(&shards, key)), "PutRecords placed {key:?} elsewhere");
        }

        let got = read_all(&client, &stream).await;
        assert_exactly_once(expected_lines(0..N, "smoke"), &data_of(&got));

        // Placement: every record is in the shard whose hash range holds MD5(key); both shards used.
        let mut per_shard: HashMap<&str, usize> = HashMap::new();
        for r in &got {
            assert_eq!(
                r.shard_id,
                shard_for_key(&shards, &r.partition_key),
                "record with key {:?} read from the wrong shard",
                r.partition_key
            );
            let n: u64 = r.partition_key["pk-".len()..].parse().expect("key");
            assert_eq!(r.data, line_text("smoke", n).into_bytes(), "key/data mismatch");
            *per_shard.entry(r.shard_id.as_str()).or_default() += 1;
        }
        assert_eq!(per_shard.len(), 2, "{per_shard:?}");
        // Sequence numbers are unique per shard (moto repeats them across shards).
        let mut seqs: Vec<(&str, &str)> =
            got.iter().map(|r| (r.shard_id.as_str(), r.sequence_number.as_str())).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), N as usize, "duplicate (shard, sequence number)");

        let waited = wait_for_records(&client, &stream, N as usize, std::time::Duration::from_secs(10)).await;
        assert_eq!(waited.len(), N as usize);
        shards
    })
    .await;
    eprintln!(
        "{}: ready in {:?}, round trip done after {:?} total ({} shards)",
        kind.name(),
        start_time,
        started.elapsed(),
        shards.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesalite_round_trip() {
    kinesis_round_trip(PeerKind::Kinesalite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_local_round_trip() {
    kinesis_round_trip(PeerKind::KinesisLocal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_round_trip() {
    kinesis_round_trip(PeerKind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_firehose_to_s3() {
    use aws_sdk_firehose::primitives::Blob;
    use aws_sdk_firehose::types::Record;

    let peer = Peer::start(PeerKind::Moto);
    let firehose = firehose_client(&peer.endpoint());
    let s3 = s3_client(&peer.endpoint());
    let bucket = unique_name("bucket");
    let stream = unique_name("fh");
    bounded(120, "firehose round trip", async {
        create_s3_bucket(&s3, &bucket).await;
        create_delivery_stream_to_s3(&firehose, &stream, &bucket, "out/").await;

        // Two batches: 500 + 250 records, each record one newline-terminated line.
        for range in [0..500u64, 500..750] {
            let records = range
                .map(|i| {
                    let mut line = line_text("fh", i);
                    line.push('\n');
                    Record::builder().data(Blob::new(line.into_bytes())).build().expect("record")
                })
                .collect::<Vec<_>>();
            let out = firehose
                .put_record_batch()
                .delivery_stream_name(&stream)
                .set_records(Some(records))
                .send()
                .await
                .unwrap_or_else(|e| panic!("PutRecordBatch: {}", err_text(&e)));
            assert_eq!(out.failed_put_count(), 0, "{out:?}");
        }

        let objects = read_s3_objects(&s3, &bucket).await;
        assert_eq!(objects.len(), 2, "moto writes one object per PutRecordBatch");
        let lines = split_lines(&objects);
        assert_exactly_once(expected_lines(0..750, "fh"), &lines);
        let mut numbers = parse_line_numbers(&objects);
        numbers.sort_unstable();
        assert_numbers_exactly_once(0..750, &numbers);
    })
    .await;
}
