//! Drives `FakeKinesis` with the real AWS SDK, to show the fake answers the way the SDK (and so
//! the agent) expects: per-entry failures, whole-request errors with the right codes, limit
//! enforcement, down modes. Also checks the line helpers' reports.

use crate::common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use common::*;

/// (partition key, data) pairs.
type Entries = Vec<(String, Vec<u8>)>;

fn entries(n: u64, prefix: &str) -> Entries {
    (0..n).map(|i| (format!("pk-{i}"), line_text(prefix, i).into_bytes())).collect()
}

fn sized(n: usize, key: &str, data_len: usize) -> Entries {
    (0..n).map(|_| (key.to_string(), vec![b'x'; data_len])).collect()
}

async fn try_put(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    entries: &[(String, Vec<u8>)],
) -> Result<
    aws_sdk_kinesis::operation::put_records::PutRecordsOutput,
    SdkError<aws_sdk_kinesis::operation::put_records::PutRecordsError>,
> {
    let records = entries
        .iter()
        .map(|(k, d)| {
            PutRecordsRequestEntry::builder().partition_key(k).data(Blob::new(d.clone())).build().expect("entry")
        })
        .collect::<Vec<_>>();
    client.put_records().stream_name(stream).set_records(Some(records)).send().await
}

/// Failing entry indices of one PutRecords of 500 entries against a fresh fake with `seed`.
async fn failing_indices(seed: u64) -> Vec<usize> {
    let fake = FakeKinesis::start();
    fake.set_seed(seed);
    fake.set_throttle_fraction(0.3);
    let client = kinesis_client_no_retry(&fake.endpoint());
    let out = try_put(&client, "s", &entries(500, "det")).await.expect("put");
    out.records().iter().enumerate().filter(|(_, r)| r.error_code().is_some()).map(|(i, _)| i).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failures_come_back_per_entry() {
    bounded(60, "test", async {
        let fake = FakeKinesis::start();
        fake.set_throttle_fraction(0.3);
        let client = kinesis_client_no_retry(&fake.endpoint());
        let shards = list_shards(&client, "s").await;
        let input = entries(500, "pf");
        let out = try_put(&client, "s", &input).await.expect("put");

        let failed = out.failed_record_count().unwrap_or(0) as usize;
        assert!((100..=200).contains(&failed), "failed {failed} of 500 at 0.3");
        assert_eq!(failed as u64, fake.failed_entry_count());
        assert_eq!(fake.request_count(), 2); // ListShards + PutRecords
        let mut accepted = Vec::new();
        for ((key, data), r) in input.iter().zip(out.records()) {
            match r.error_code() {
                Some(code) => {
                    assert_eq!(code, "ProvisionedThroughputExceededException");
                    assert!(r.error_message().unwrap_or("").contains("Rate exceeded"));
                    assert_eq!(r.sequence_number(), None);
                }
                None => {
                    assert!(r.sequence_number().is_some());
                    assert_eq!(r.shard_id(), Some(shard_for_key(&shards, key)));
                    accepted.push(data.clone());
                }
            }
        }
        assert_eq!(fake.records().len(), 500 - failed);
        assert_exactly_once(accepted.iter(), &fake.record_data());

        // Another code, and retrying only the failed ones eventually delivers everything.
        fake.set_entry_failure(0.5, "InternalFailure");
        let out = try_put(&client, "s", &input[..10]).await.expect("put");
        for r in out.records() {
            if let Some(code) = r.error_code() {
                assert_eq!(code, "InternalFailure");
            }
        }
        fake.set_entry_failure(0.0, "InternalFailure");
        fake.reset_observations();
        try_put(&client, "s", &input).await.expect("put");
        assert_exactly_once(input.iter().map(|(_, d)| d), &fake.record_data());
        let log = fake.requests();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].entries, 500);
        assert_eq!(log[0].target, "Kinesis_20131202.PutRecords");
        assert_eq!(log[0].stream.as_deref(), Some("s"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failures_are_deterministic_for_a_seed() {
    bounded(60, "test", async {
        let a = failing_indices(7).await;
        let b = failing_indices(7).await;
        let c = failing_indices(8).await;
        assert_eq!(a, b);
        assert_ne!(a, c);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500_is_a_service_error_and_retried_by_the_sdk() {
    bounded(60, "test", async {
        let fake = FakeKinesis::start();
        fake.set_http500_fraction(1.0);
        let client = kinesis_client_no_retry(&fake.endpoint());
        let err = try_put(&client, "s", &entries(3, "e")).await.unwrap_err();
        let raw = err.raw_response().map(|r| r.status().as_u16());
        assert_eq!(raw, Some(500));
        let svc = err.into_service_error();
        assert_eq!(svc.code(), Some("InternalFailure"), "{svc:?}");
        assert_eq!(fake.request_count(), 1);
        assert!(fake.records().is_empty());

        // The SDK's standard retry treats it as transient: 3 attempts.
        let retrying = kinesis_client(&fake.endpoint());
        let err = try_put(&retrying, "s", &entries(3, "e")).await.unwrap_err();
        assert_eq!(err.into_service_error().code(), Some("InternalFailure"));
        assert_eq!(fake.request_count(), 4);

        // A fraction of requests.
        fake.set_http500_fraction(0.5);
        fake.reset_observations();
        let mut errors = 0;
        for _ in 0..40 {
            if try_put(&client, "s", &entries(1, "f")).await.is_err() {
                errors += 1;
            }
        }
        assert!((8..=32).contains(&errors), "{errors} of 40 at 0.5");
        assert_eq!(fake.records().len(), 40 - errors);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_request_errors_have_the_right_code() {
    bounded(60, "test", async {
        let fake = FakeKinesis::start();
        let client = kinesis_client_no_retry(&fake.endpoint());

        fake.set_request_error(Some("ResourceNotFoundException"));
        let err = try_put(&client, "s", &entries(2, "e")).await.unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
        let svc = err.into_service_error();
        assert!(svc.is_resource_not_found_exception(), "{svc:?}");
        assert_eq!(svc.code(), Some("ResourceNotFoundException"));
        assert_eq!(svc.message(), Some("Stream s under account 123456789012 not found."));

        fake.set_request_error(Some("AccessDeniedException"));
        let svc = try_put(&client, "s", &entries(2, "e")).await.unwrap_err().into_service_error();
        assert!(svc.is_access_denied_exception(), "{svc:?}");
        let m = svc.message().unwrap_or("");
        assert!(m.contains("not authorized to perform: kinesis:PutRecords") && m.contains("stream/s "), "{m}");
        assert_eq!(svc.code(), Some("AccessDeniedException"));

        // Works for other operations too.
        let err = client.describe_stream_summary().stream_name("s").send().await.unwrap_err().into_service_error();
        assert_eq!(err.code(), Some("AccessDeniedException"));

        // Only the next N requests.
        fake.fail_next_requests(2, "LimitExceededException");
        for _ in 0..2 {
            let svc = try_put(&client, "s", &entries(1, "n")).await.unwrap_err().into_service_error();
            assert_eq!(svc.code(), Some("LimitExceededException"));
        }
        try_put(&client, "s", &entries(1, "n")).await.expect("third succeeds");

        // Unknown streams.
        fake.set_known_streams(Some(&["known"]));
        try_put(&client, "known", &entries(1, "k")).await.expect("known stream");
        let svc = try_put(&client, "other", &entries(1, "k")).await.unwrap_err().into_service_error();
        assert!(svc.is_resource_not_found_exception(), "{svc:?}");
        let svc = client.describe_stream_summary().stream_name("other").send().await.unwrap_err().into_service_error();
        assert!(svc.is_resource_not_found_exception(), "{svc:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_enforced_with_validation_exception() {
    bounded(120, "test", async {
        let fake = FakeKinesis::start();
        let client = kinesis_client_no_retry(&fake.endpoint());
        let mib = 1024 * 1024;
        let bad: Vec<(&str, Entries)> = vec![
            ("501 records", entries(501, "l")),
            ("0 records", Vec::new()),
            ("empty key", sized(1, "", 10)),
            ("257-char key", sized(1, &"k".repeat(257), 10)),
            ("record data+key 1 MiB + 1", sized(1, "kk", mib - 1)),
            ("request > 5 MiB", sized(6, "k", 1_000_000 - 1)),
        ];
        for (what, input) in bad {
            let err = try_put(&client, "s", &input).await.unwrap_err();
            let svc = err.into_service_error();
            assert_eq!(svc.code(), Some("ValidationException"), "{what}: {svc:?}");
        }
        assert!(fake.records().is_empty());

        // Exactly at the limits: accepted.
        let good: Vec<(&str, Entries)> = vec![
            ("500 records", entries(500, "l")),
            ("256-char key", sized(1, &"k".repeat(256), 10)),
            ("record data+key = 1 MiB", sized(1, "kk", mib - 2)),
            ("request = 5 MiB", sized(5, "k", mib - 1)),
        ];
        let mut expected = 0;
        for (what, input) in good {
            let out = try_put(&client, "s", &input).await.unwrap_or_else(|e| panic!("{what}: {}", err_text(&e)));
            assert_eq!(out.failed_record_count(), Some(0), "{what}");
            expected += input.len();
        }
        assert_eq!(fake.records().len(), expected);

        // Off: anything goes.
        fake.set_enforce_limits(false);
        try_put(&client, "s", &entries(501, "l")).await.expect("unenforced");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_list_shards_parse_in_the_sdk() {
    bounded(60, "test", async {
        let fake = FakeKinesis::start();
        let client = kinesis_client_no_retry(&fake.endpoint());
        let sum = client
            .describe_stream_summary()
            .stream_name("s")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}", err_text(&e)));
        let d = sum.stream_description_summary().expect("summary");
        assert_eq!(d.stream_name(), "s");
        assert_eq!(d.open_shard_count(), 2);
        let full =
            client.describe_stream().stream_name("s").send().await.unwrap_or_else(|e| panic!("{}", err_text(&e)));
        assert_eq!(full.stream_description().expect("desc").shards().len(), 2);

        let shards = list_shards(&client, "s").await;
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].start, 0);
        assert_eq!(shards[1].end, u128::MAX);
        assert_eq!(shards[0].end + 1, shards[1].start);

        fake.set_shard_count(1);
        assert_eq!(list_shards(&client, "s").await.len(), 1);
        // By StreamARN as well.
        let out = client
            .list_shards()
            .stream_arn("arn:aws:kinesis:us-east-1:123456789012:stream/s")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}", err_text(&e)));
        assert_eq!(out.shards().len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firehose_put_record_batch() {
    use aws_sdk_firehose::primitives::Blob as FBlob;
    use aws_sdk_firehose::types::Record;
    bounded(60, "test", async {
        let fake = FakeKinesis::start();
        let fh = firehose_client_no_retry(&fake.endpoint());
        let batch = |range: std::ops::Range<u64>| {
            range
                .map(|i| Record::builder().data(FBlob::new(line_text("fh", i).into_bytes())).build().expect("record"))
                .collect::<Vec<_>>()
        };
        let out = fh
            .put_record_batch()
            .delivery_stream_name("d")
            .set_records(Some(batch(0..500)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}", err_text(&e)));
        assert_eq!(out.failed_put_count(), 0);
        assert!(out.request_responses().iter().all(|r| r.record_id().is_some()));
        assert_exactly_once(expected_lines(0..500, "fh"), &fake.firehose_records());
        assert!(fake.records().is_empty(), "Firehose data is kept apart");

        fake.set_throttle_fraction(0.5);
        let out = fh
            .put_record_batch()
            .delivery_stream_name("d")
            .set_records(Some(batch(500..600)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}", err_text(&e)));
        assert!(out.failed_put_count() > 0);
        for r in out.request_responses() {
            if let Some(code) = r.error_code() {
                assert_eq!(code, "ServiceUnavailableException");
                assert!(r.record_id().is_none());
            }
        }
        assert_eq!(fake.failed_entry_count(), out.failed_put_count() as u64);
        fake.set_throttle_fraction(0.0);

        let err =
            fh.put_record_batch().delivery_stream_name("d").set_records(Some(batch(0..501))).send().await.unwrap_err();
        assert_eq!(err.into_service_error().code(), Some("ValidationException"));

        let desc = fh
            .describe_delivery_stream()
            .delivery_stream_name("d")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}", err_text(&e)));
        assert_eq!(desc.delivery_stream_description().map(|d| d.delivery_stream_name()), Some("d"));

        fake.set_request_error(Some("ResourceNotFoundException"));
        let err = fh
            .put_record_batch()
            .delivery_stream_name("d")
            .set_records(Some(batch(0..1)))
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_resource_not_found_exception(), "{err:?}");
    })
    .await;
}

/// Connection resets (before or after storing), responses held past the client's timeout (records
/// stored), and a down period that ends by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_response_delay_and_timed_down() {
    bounded(60, "test", async {
        let fake = FakeKinesis::start();
        let client = kinesis_client_no_retry(&fake.endpoint());
        for after in [false, true] {
            fake.reset_observations();
            fake.set_reset(1.0, after);
            let err = try_put(&client, "s", &entries(3, "r")).await.unwrap_err();
            assert!(matches!(err, SdkError::DispatchFailure(_) | SdkError::ResponseError(_)), "{}", err_text(&err));
            let text = err_text(&err);
            assert!(text.contains("reset") || text.contains("closed"), "after {after}: {text}");
            assert_eq!(fake.reset_counts(), (1, if after { 3 } else { 0 }));
            assert_eq!(fake.record_count(), if after { 3 } else { 0 });
        }
        fake.set_reset(0.0, false);
        try_put(&client, "s", &entries(1, "ok")).await.expect("after resets");

        fake.reset_observations();
        fake.set_response_delay(1.0, Duration::from_millis(1500));
        let short = kinesis_client_with(&fake.endpoint(), 1, Duration::from_millis(300));
        let err = try_put(&short, "s", &entries(2, "d")).await.unwrap_err();
        assert!(matches!(err, SdkError::TimeoutError(_)), "{}", err_text(&err));
        assert_eq!(fake.record_count(), 2, "stored although the answer was late");
        assert_eq!(fake.delayed_response_counts(), (1, 2));
        let t = Instant::now();
        try_put(&client, "s", &entries(1, "slow")).await.expect("a patient client gets it");
        assert!(t.elapsed() >= Duration::from_millis(1500));
        fake.set_response_delay(0.0, Duration::ZERO);

        fake.set_down_for(DownMode::Refuse, Duration::from_millis(800));
        let fresh = kinesis_client_no_retry(&fake.endpoint());
        assert!(try_put(&fresh, "s", &entries(1, "x")).await.is_err(), "down");
        let t = Instant::now();
        loop {
            match try_put(&fresh, "s", &entries(1, "up")).await {
                Ok(_) => break,
                Err(e) if t.elapsed() > Duration::from_secs(5) => panic!("not back up: {}", err_text(&e)),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        assert!(fake.faults().down.is_none());
        // The late one, the patient one, and the first after the down period.
        assert!(fake.received_count() >= 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_and_down_modes() {
    bounded(90, "test", async {
        let fake = FakeKinesis::start();
        let client = kinesis_client_no_retry(&fake.endpoint());
        try_put(&client, "s", &entries(1, "d")).await.expect("up");

        fake.set_delay(Duration::from_millis(300));
        let t = Instant::now();
        try_put(&client, "s", &entries(1, "d")).await.expect("delayed");
        assert!(t.elapsed() >= Duration::from_millis(300));
        fake.set_delay(Duration::ZERO);

        for mode in [DownMode::Reset, DownMode::Refuse] {
            fake.set_down(Some(mode));
            // Kept-alive connection first, then fresh ones.
            for _ in 0..2 {
                let err = try_put(&client, "s", &entries(1, "x")).await.unwrap_err();
                assert!(
                    matches!(err, SdkError::DispatchFailure(_) | SdkError::ResponseError(_)),
                    "{mode:?}: {}",
                    err_text(&err)
                );
            }
            let fresh = kinesis_client_no_retry(&fake.endpoint());
            let err = try_put(&fresh, "s", &entries(1, "x")).await.unwrap_err();
            assert!(
                matches!(err, SdkError::DispatchFailure(_) | SdkError::ResponseError(_)),
                "{mode:?}: {}",
                err_text(&err)
            );
            fake.set_down(None);
            let t = Instant::now();
            loop {
                match try_put(&client, "s", &entries(1, "up")).await {
                    Ok(_) => break,
                    Err(e) if t.elapsed() > Duration::from_secs(5) => {
                        panic!("{mode:?}: not back up: {}", err_text(&e))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }

        // Hang: the client's timeout fires; the fake answers again once the mode is cleared.
        fake.set_down(Some(DownMode::Hang));
        let short = kinesis_client_with(&fake.endpoint(), 1, Duration::from_millis(500));
        let t = Instant::now();
        let err = try_put(&short, "s", &entries(1, "h")).await.unwrap_err();
        assert!(matches!(err, SdkError::TimeoutError(_)), "{}", err_text(&err));
        assert!(t.elapsed() < Duration::from_secs(5));
        fake.set_down(None);
        try_put(&client, "s", &entries(1, "after")).await.expect("after hang");
        // The records accepted while up: "d" x2, "up" x2, "after".
        assert_eq!(fake.records().len(), 5);
    })
    .await;
}

/// The fake runs its own runtime: usable from a plain #[test] with raw HTTP.
#[test]
fn fake_works_from_sync_tests_with_raw_json() {
    let fake = FakeKinesis::start_with_shards(1);
    let body = r#"{"StreamName":"raw","Records":[{"Data":"aGVsbG8=","PartitionKey":"a"},{"Data":"d29ybGQ=","PartitionKey":"b"}]}"#;
    let (status, headers, resp) = raw_post(&fake, "Kinesis_20131202.PutRecords", body);
    assert_eq!(status, 200, "{resp}");
    assert!(headers.to_ascii_lowercase().contains("content-type: application/x-amz-json-1.1"));
    let v: serde_json::Value = serde_json::from_str(&resp).expect("json");
    assert_eq!(v["FailedRecordCount"], 0);
    assert_eq!(v["Records"][0]["ShardId"], "shardId-000000000000");
    assert_eq!(fake.records(), vec![("a".to_string(), b"hello".to_vec()), ("b".to_string(), b"world".to_vec())]);

    fake.set_request_error(Some("AccessDeniedException"));
    let (status, headers, resp) = raw_post(&fake, "Kinesis_20131202.PutRecords", body);
    assert_eq!(status, 400);
    assert!(headers.to_ascii_lowercase().contains("x-amzn-errortype: accessdeniedexception"));
    let v: serde_json::Value = serde_json::from_str(&resp).expect("json");
    assert_eq!(v["__type"], "AccessDeniedException");
    fake.set_request_error(None);

    fake.set_http500_fraction(1.0);
    let (status, _, resp) = raw_post(&fake, "Kinesis_20131202.PutRecords", body);
    assert_eq!(status, 500);
    assert!(resp.contains("InternalFailure"));
    fake.set_http500_fraction(0.0);

    let (status, _, resp) = raw_post(&fake, "Kinesis_20131202.MergeShards", "{}");
    assert_eq!(status, 400);
    assert!(resp.contains("UnknownOperationException"));
    assert_eq!(fake.request_count(), 4);
}

fn raw_post(fake: &FakeKinesis, target: &str, body: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(fake.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {}\r\nX-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        fake.addr(),
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("http response");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status");
    (status, head.to_string(), body.to_string())
}

#[test]
fn line_helpers_report_compactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.log");
    write_lines(&path, 0..3, "p");
    write_lines(&path, 3..5, "p");
    let content = std::fs::read(&path).unwrap();
    let lines: Vec<Vec<u8>> = content.split_inclusive(|&b| b == b'\n').map(|l| l.to_vec()).collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0].len(), DEFAULT_LINE_LEN + 1);
    assert!(lines[2].starts_with(b"p 00000002 "));
    assert_exactly_once(expected_lines(0..5, "p"), &lines);
    assert_eq!(parse_line_numbers(std::slice::from_ref(&content)), vec![0, 1, 2, 3, 4]);

    // 150k expected, a few missing/duplicated/unexpected: short report.
    let mut got: Vec<Vec<u8>> = expected_lines(0..150_000, "q").map(String::into_bytes).collect();
    got.retain(|l| !l.starts_with(b"q 00000007 ") && !l.starts_with(b"q 00100000 "));
    got.push(line_text("q", 42).into_bytes());
    got.push(b"garbage".to_vec());
    let err = check_exactly_once(expected_lines(0..150_000, "q"), &got).unwrap_err();
    assert!(err.contains("2 missing, 1 extra duplicates, 1 unexpected"), "{err}");
    assert!(err.contains("q 00000007"), "{err}");
    assert!(err.len() < 2000, "report too long: {} bytes", err.len());

    let nums: Vec<u64> = (0..100).filter(|n| !(10..20).contains(n)).chain([5]).collect();
    let msg = check_numbers_exactly_once(0..100, &nums).unwrap_err();
    assert!(msg.contains("10 missing [10..=19]"), "{msg}");
    assert!(msg.contains("1 duplicated"), "{msg}");
}

/// `AgentProcess` runs the real binary with the isolated environment and captures its output.
#[test]
fn agent_process_helper_runs_the_binary() {
    assert!(agent_bin().exists(), "{}", agent_bin().display());
    let mut agent = AgentProcess::spawn(["--version"], &[("EXTRA_VAR", "1")]);
    let status = agent.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", agent.log());
    assert!(!agent.log().trim().is_empty());
    assert!(!agent.is_running());
    agent.sigterm(); // no-op once it has exited
    let env = agent_env(agent.dir());
    assert!(env.contains(&("AWS_EC2_METADATA_DISABLED".into(), "true".into())));
    assert!(env.iter().any(|(k, v)| k == "HOME" && v == &agent.dir().display().to_string()));
}
