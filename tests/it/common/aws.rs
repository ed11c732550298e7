//! AWS SDK helpers for tests: clients with static fake credentials (region us-east-1) pointed at
//! a local endpoint, stream creation, reading everything back, Firehose → S3 on moto.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use md5::{Digest, Md5};

pub const TEST_ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const TEST_SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const TEST_REGION: &str = "us-east-1";

/// Per-call limit for every SDK operation made by these helpers' clients.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

fn credentials() -> Credentials {
    Credentials::new(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, None, None, "static-test")
}

fn timeouts(op_timeout: Duration) -> TimeoutConfig {
    TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).operation_timeout(op_timeout).build()
}

/// Kinesis client for `endpoint` with the SDK's standard retries (3 attempts).
pub fn kinesis_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    kinesis_client_with(endpoint, 3, OPERATION_TIMEOUT)
}

/// Kinesis client that makes exactly one attempt per call (to observe raw responses).
pub fn kinesis_client_no_retry(endpoint: &str) -> aws_sdk_kinesis::Client {
    kinesis_client_with(endpoint, 1, OPERATION_TIMEOUT)
}

pub fn kinesis_client_with(endpoint: &str, max_attempts: u32, op_timeout: Duration) -> aws_sdk_kinesis::Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(TEST_REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .retry_config(retry(max_attempts))
        .timeout_config(timeouts(op_timeout))
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// A Kinesis client for another region than `TEST_REGION` (moto keeps each region's streams apart).
pub fn kinesis_client_in(endpoint: &str, region: &'static str) -> aws_sdk_kinesis::Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .retry_config(retry(3))
        .timeout_config(timeouts(Duration::from_secs(30)))
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

fn retry(max_attempts: u32) -> RetryConfig {
    if max_attempts <= 1 { RetryConfig::disabled() } else { RetryConfig::standard().with_max_attempts(max_attempts) }
}

pub fn firehose_client(endpoint: &str) -> aws_sdk_firehose::Client {
    firehose_client_with(endpoint, 3)
}

pub fn firehose_client_no_retry(endpoint: &str) -> aws_sdk_firehose::Client {
    firehose_client_with(endpoint, 1)
}

fn firehose_client_with(endpoint: &str, max_attempts: u32) -> aws_sdk_firehose::Client {
    let conf = aws_sdk_firehose::Config::builder()
        .behavior_version(aws_sdk_firehose::config::BehaviorVersion::latest())
        .region(aws_sdk_firehose::config::Region::new(TEST_REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .retry_config(retry(max_attempts))
        .timeout_config(timeouts(OPERATION_TIMEOUT))
        .build();
    aws_sdk_firehose::Client::from_conf(conf)
}

/// S3 client with path-style addressing (required for moto on 127.0.0.1).
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(TEST_REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .retry_config(retry(3))
        .timeout_config(timeouts(OPERATION_TIMEOUT))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Runs `fut`, panicking if it takes longer than `secs`.
pub async fn bounded<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {secs} s"),
    }
}

/// One shard's hash key range (inclusive bounds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRange {
    pub shard_id: String,
    pub start: u128,
    pub end: u128,
}

/// Creates a provisioned stream and waits (≤ 30 s) until it is ACTIVE. Returns its shards.
pub async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) -> Vec<ShardRange> {
    bounded(30, &format!("create_stream {name}"), async {
        client
            .create_stream()
            .stream_name(name)
            .shard_count(shards)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateStream {name}: {}", err_text(&e)));
        loop {
            let out = client
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .unwrap_or_else(|e| panic!("DescribeStreamSummary {name}: {}", err_text(&e)));
            let status = out.stream_description_summary().map(|s| s.stream_status().clone());
            if status == Some(StreamStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let shards_now = list_shards(client, name).await;
        assert_eq!(shards_now.len(), shards as usize, "stream {name}: unexpected shards {shards_now:?}");
        shards_now
    })
    .await
}

/// All shards of a stream (follows NextToken), sorted by starting hash key.
pub async fn list_shards(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<ShardRange> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let page = req.send().await.unwrap_or_else(|e| panic!("ListShards {stream}: {}", err_text(&e)));
        for s in page.shards() {
            let r = s.hash_key_range();
            out.push(ShardRange {
                shard_id: s.shard_id().to_string(),
                start: r.map(|r| r.starting_hash_key().parse().expect("starting hash key")).unwrap_or(0),
                end: r.map(|r| r.ending_hash_key().parse().expect("ending hash key")).unwrap_or(u128::MAX),
            });
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out.sort_by_key(|s| s.start);
    out
}

/// The Kinesis hash key of a partition key: MD5 of its UTF-8 bytes as a big-endian 128-bit integer.
pub fn hash_key(partition_key: &str) -> u128 {
    let digest = Md5::digest(partition_key.as_bytes());
    u128::from_be_bytes(digest.as_slice().try_into().expect("md5 is 16 bytes"))
}

/// The shard (among `shards`, e.g. from `create_stream`) whose hash key range holds `partition_key`.
pub fn shard_for_key<'a>(shards: &'a [ShardRange], partition_key: &str) -> &'a str {
    let h = hash_key(partition_key);
    shards
        .iter()
        .find(|s| s.start <= h && h <= s.end)
        .map(|s| s.shard_id.as_str())
        .unwrap_or_else(|| panic!("no shard holds hash key {h} (key {partition_key:?}): {shards:?}"))
}

/// One PutRecords call with the given (partition key, data) entries; panics on a request error.
pub async fn put_records(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    entries: &[(String, Vec<u8>)],
) -> aws_sdk_kinesis::operation::put_records::PutRecordsOutput {
    let records = entries
        .iter()
        .map(|(k, d)| {
            PutRecordsRequestEntry::builder().partition_key(k).data(Blob::new(d.clone())).build().expect("entry")
        })
        .collect::<Vec<_>>();
    client
        .put_records()
        .stream_name(stream)
        .set_records(Some(records))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutRecords {stream}: {}", err_text(&e)))
}

/// A record read back from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub shard_id: String,
    pub partition_key: String,
    pub data: Vec<u8>,
    pub sequence_number: String,
}

pub fn data_of(records: &[Received]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.data.clone()).collect()
}

/// Reads every shard from TRIM_HORIZON until caught up (an empty page with MillisBehindLatest
/// 0, or no NextShardIterator). Records come back shard by shard, in sequence order within a
/// shard. Bounded: panics after 60 s.
pub async fn read_all(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Received> {
    bounded(60, &format!("read_all {stream}"), read_all_inner(client, stream)).await
}

async fn read_all_inner(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Received> {
    super::e2e::StreamReader::new(client, stream).await.read_new(client).await
}

/// Reads every shard from TRIM_HORIZON, following the shard iterators incrementally (no
/// re-reading), until at least `n` records have arrived or `timeout` passes. Returns everything
/// read so far (possibly fewer than `n`: assert on it), grouped by shard in arrival order. Shards
/// created after the call (resharding) are not followed. To check that nothing extra arrives
/// later, wait a little and compare with `read_all`.
pub async fn wait_for_records(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Received> {
    let deadline = Instant::now() + timeout;
    let mut reader = super::e2e::StreamReader::new(client, stream).await;
    let mut got = Vec::new();
    loop {
        got.extend(reader.read_new(client).await);
        if got.len() >= n || Instant::now() >= deadline {
            // Stable: records stay in arrival order within their shard.
            got.sort_by(|a: &Received, b: &Received| a.shard_id.cmp(&b.shard_id));
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `Debug` of an SDK error including the service error code/message when there is one.
pub fn err_text<E: std::error::Error + 'static>(e: &E) -> String {
    let mut s = format!("{e}");
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

/// Creates an S3 bucket (on moto).
pub async fn create_s3_bucket(s3: &aws_sdk_s3::Client, bucket: &str) {
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateBucket {bucket}: {}", err_text(&e)));
}

/// Creates a DirectPut delivery stream with an ExtendedS3 destination (Uncompressed, which moto
/// needs to echo a parseable description) writing under `prefix`, and waits (≤ 30 s) for ACTIVE.
pub async fn create_delivery_stream_to_s3(firehose: &aws_sdk_firehose::Client, name: &str, bucket: &str, prefix: &str) {
    use aws_sdk_firehose::types::{
        CompressionFormat, DeliveryStreamStatus, DeliveryStreamType, ExtendedS3DestinationConfiguration,
    };
    bounded(30, &format!("create_delivery_stream_to_s3 {name}"), async {
        let dest = ExtendedS3DestinationConfiguration::builder()
            .role_arn("arn:aws:iam::123456789012:role/firehose-test")
            .bucket_arn(format!("arn:aws:s3:::{bucket}"))
            .prefix(prefix)
            .compression_format(CompressionFormat::Uncompressed)
            .build()
            .expect("ExtendedS3DestinationConfiguration");
        firehose
            .create_delivery_stream()
            .delivery_stream_name(name)
            .delivery_stream_type(DeliveryStreamType::DirectPut)
            .extended_s3_destination_configuration(dest)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateDeliveryStream {name}: {}", err_text(&e)));
        loop {
            let out = firehose
                .describe_delivery_stream()
                .delivery_stream_name(name)
                .send()
                .await
                .unwrap_or_else(|e| panic!("DescribeDeliveryStream {name}: {}", err_text(&e)));
            let status = out.delivery_stream_description().map(|d| d.delivery_stream_status().clone());
            if status == Some(DeliveryStreamStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// The bodies of every object in `bucket`, ordered by key (bounded: 60 s). moto writes one object
/// per PutRecord(Batch) call, the records' data concatenated; keys within one second sort
/// randomly, so compare contents as a set (e.g. `split_lines` + `assert_exactly_once`).
pub async fn read_s3_objects(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<Vec<u8>> {
    bounded(60, &format!("read_s3_objects {bucket}"), async {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("ListObjectsV2 {bucket}: {}", err_text(&e)));
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        let mut bodies = BTreeMap::new();
        for key in keys {
            let obj = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GetObject {bucket}/{key}: {}", err_text(&e)));
            let bytes =
                obj.body.collect().await.unwrap_or_else(|e| panic!("GetObject body {bucket}/{key}: {e}")).into_bytes();
            bodies.insert(key, bytes.to_vec());
        }
        bodies.into_values().collect()
    })
    .await
}
