//! The operations: Kinesis (`Kinesis_20131202.*`) and Firehose (`Firehose_20150804.*`) in the
//! AWS JSON 1.1 protocol. Each takes the request body and answers a JSON body or an AWS error.

use std::borrow::Cow;
use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::State;
use crate::shards::{push_padded, push_shard_id};

pub const KINESIS_MAX_RECORDS: usize = 500;
/// Data and partition key of one record.
pub const KINESIS_MAX_RECORD: usize = 1 << 20;
/// Data and partition keys of a whole PutRecords.
pub const KINESIS_MAX_REQUEST: usize = 5 << 20;
pub const FIREHOSE_MAX_RECORDS: usize = 500;
pub const FIREHOSE_MAX_RECORD: usize = 1000 * 1024;
pub const FIREHOSE_MAX_REQUEST: usize = 4 << 20;
const ACCOUNT: &str = "123456789012";

/// What the sink can be asked, by `X-Amz-Target`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    PutRecords,
    PutRecord,
    ListShards,
    DescribeStream,
    DescribeStreamSummary,
    PutRecordBatch,
    FirehosePutRecord,
    DescribeDeliveryStream,
    Unknown,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::PutRecords,
        Op::PutRecord,
        Op::ListShards,
        Op::DescribeStream,
        Op::DescribeStreamSummary,
        Op::PutRecordBatch,
        Op::FirehosePutRecord,
        Op::DescribeDeliveryStream,
        Op::Unknown,
    ];

    pub fn from_target(target: &str) -> Op {
        match target {
            "Kinesis_20131202.PutRecords" => Op::PutRecords,
            "Kinesis_20131202.PutRecord" => Op::PutRecord,
            "Kinesis_20131202.ListShards" => Op::ListShards,
            "Kinesis_20131202.DescribeStream" => Op::DescribeStream,
            "Kinesis_20131202.DescribeStreamSummary" => Op::DescribeStreamSummary,
            "Firehose_20150804.PutRecordBatch" => Op::PutRecordBatch,
            "Firehose_20150804.PutRecord" => Op::FirehosePutRecord,
            "Firehose_20150804.DescribeDeliveryStream" => Op::DescribeDeliveryStream,
            _ => Op::Unknown,
        }
    }

    /// Its key in /stats.
    pub fn name(self) -> &'static str {
        match self {
            Op::PutRecords => "PutRecords",
            Op::PutRecord => "PutRecord",
            Op::ListShards => "ListShards",
            Op::DescribeStream => "DescribeStream",
            Op::DescribeStreamSummary => "DescribeStreamSummary",
            Op::PutRecordBatch => "Firehose.PutRecordBatch",
            Op::FirehosePutRecord => "Firehose.PutRecord",
            Op::DescribeDeliveryStream => "Firehose.DescribeDeliveryStream",
            Op::Unknown => "unknown",
        }
    }

    /// Operations that take records (and wait `--latency-ms`).
    pub fn carries_records(self) -> bool {
        matches!(self, Op::PutRecords | Op::PutRecord | Op::PutRecordBatch | Op::FirehosePutRecord)
    }
}

/// An AWS error answer: HTTP status, `__type` and message.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status: 400, kind, message: message.into() }
    }

    /// A failed constraint, worded as AWS words them.
    fn validation(value: &str, field: &str, constraint: &str) -> ApiError {
        ApiError::new(
            "ValidationException",
            format!(
                "1 validation error detected: Value {value} at '{field}' failed to satisfy constraint: {constraint}"
            ),
        )
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "__type": self.kind, "message": self.message })).unwrap_or_default()
    }
}

type Answer = Result<Vec<u8>, ApiError>;

pub fn handle(state: &State, op: Op, body: &[u8]) -> Answer {
    match op {
        Op::PutRecords => put_records(state, body),
        Op::PutRecord => put_record(state, body),
        Op::ListShards => list_shards(state, body),
        Op::DescribeStream => describe_stream(state, body, false),
        Op::DescribeStreamSummary => describe_stream(state, body, true),
        Op::PutRecordBatch => put_record_batch(state, body),
        Op::FirehosePutRecord => firehose_put_record(state, body),
        Op::DescribeDeliveryStream => describe_delivery_stream(state, body),
        Op::Unknown => Err(ApiError::new("UnknownOperationException", "")),
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::new("SerializationException", e.to_string()))
}

#[derive(Deserialize)]
struct StreamRef<'a> {
    #[serde(rename = "StreamName", borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(rename = "StreamARN", borrow, default)]
    arn: Option<Cow<'a, str>>,
}

impl StreamRef<'_> {
    /// The stream's name, from StreamName or else from the ARN (`…:stream/NAME`).
    fn name(&self) -> Result<String, ApiError> {
        match (&self.name, &self.arn) {
            (Some(n), _) if !n.is_empty() => Ok(n.to_string()),
            (_, Some(arn)) if arn.contains(":stream/") => Ok(arn.rsplit('/').next().unwrap_or("").to_string()),
            (_, Some(arn)) => Err(ApiError::validation(
                &format!("'{arn}'"),
                "streamARN",
                "Member must satisfy regular expression pattern: arn:aws.*:kinesis:.*:\\d{12}:stream/\\S+",
            )),
            _ => Err(ApiError::new("ValidationException", "Neither StreamARN nor StreamName has been provided.")),
        }
    }
}

#[derive(Deserialize)]
struct KinesisEntry<'a> {
    #[serde(rename = "Data", borrow, default)]
    data: Option<Base64<'a>>,
    #[serde(rename = "PartitionKey", borrow, default)]
    key: Option<Cow<'a, str>>,
    #[serde(rename = "ExplicitHashKey", borrow, default)]
    hash_key: Option<Cow<'a, str>>,
}

/// (Not `#[serde(flatten)]` StreamRef: flattening buffers every record before reading it, which
/// took a third of the sink's time.)
#[derive(Deserialize)]
struct PutRecordsIn<'a> {
    #[serde(rename = "StreamName", borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(rename = "StreamARN", borrow, default)]
    arn: Option<Cow<'a, str>>,
    #[serde(rename = "Records", borrow, default)]
    records: Option<Vec<KinesisEntry<'a>>>,
}

#[derive(Deserialize)]
struct PutRecordIn<'a> {
    #[serde(flatten, borrow)]
    stream: StreamRef<'a>,
    #[serde(flatten, borrow)]
    entry: KinesisEntry<'a>,
}

#[derive(Deserialize)]
struct FirehoseEntry<'a> {
    #[serde(rename = "Data", borrow, default)]
    data: Option<Base64<'a>>,
}

#[derive(Deserialize)]
struct PutRecordBatchIn<'a> {
    #[serde(rename = "DeliveryStreamName", borrow, default)]
    stream: Option<Cow<'a, str>>,
    #[serde(rename = "Records", borrow, default)]
    records: Option<Vec<FirehoseEntry<'a>>>,
}

#[derive(Deserialize)]
struct FirehosePutRecordIn<'a> {
    #[serde(rename = "DeliveryStreamName", borrow, default)]
    stream: Option<Cow<'a, str>>,
    #[serde(rename = "Record", borrow, default)]
    record: Option<FirehoseEntry<'a>>,
}

/// Decoded records: their data one after the other, and where each ends. The buffers are kept
/// by the thread from one request to the next (a request is handled without a pause, so the
/// thread's spare set is free at its start).
struct Decoded(Buffers);

#[derive(Default)]
struct Buffers {
    /// Zeroed room for the data; `used` bytes of it hold records.
    data: Vec<u8>,
    used: usize,
    ends: Vec<usize>,
}

thread_local! {
    static SPARE: Cell<Option<Buffers>> = const { Cell::new(None) };
}

impl Decoded {
    /// Room for `records` records whose base64 makes at most `encoded` bytes.
    fn new(records: usize, encoded: usize) -> Decoded {
        let mut d = SPARE.with(|s| s.take()).unwrap_or_default();
        d.used = 0;
        d.ends.clear();
        d.ends.reserve(records);
        // base64 makes 3 bytes of 4; each record's last group may count 3 more in the estimate.
        let room = encoded / 4 * 3 + 3 * records + 16;
        if d.data.len() < room {
            d.data.resize(room, 0);
        }
        Decoded(d)
    }

    /// Decodes one more record's base64 data; its length.
    fn push(&mut self, b64: &[u8], field: Where) -> Result<usize, ApiError> {
        let d = &mut self.0;
        let need = b64.len().div_ceil(4) * 3;
        if d.data.len() - d.used < need {
            d.data.resize(d.used + need, 0);
        }
        let len = B64.decode_slice(b64, &mut d.data[d.used..]).map_err(|e| {
            ApiError::new("SerializationException", format!("'{}' is not valid base64: {e}", field.at("data")))
        })?;
        d.used += len;
        d.ends.push(d.used);
        Ok(len)
    }

    fn get(&self, i: usize) -> &[u8] {
        let d = &self.0;
        let start = if i == 0 { 0 } else { d.ends[i - 1] };
        &d.data[start..d.ends[i]]
    }
}

impl Drop for Decoded {
    /// The buffers go back to the thread for its next request.
    fn drop(&mut self) {
        let buffers = std::mem::take(&mut self.0);
        SPARE.with(|s| s.set(Some(buffers)));
    }
}

/// A base64 string as bytes: its UTF-8 need not be checked, base64 decoding checks every byte.
struct Base64<'a>(Cow<'a, [u8]>);

impl<'de: 'a, 'a> Deserialize<'de> for Base64<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Base64<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Base64<'de>, E> {
                Ok(Base64(Cow::Borrowed(v)))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Base64<'de>, E> {
                Ok(Base64(Cow::Owned(v.to_vec())))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Base64<'de>, E> {
                Ok(Base64(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E>(self, v: &str) -> Result<Base64<'de>, E> {
                Ok(Base64(Cow::Owned(v.as_bytes().to_vec())))
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

/// Where a record is in a request, for messages: the i-th of a batch (`records.1.member.data` for
/// the first's data), or the record of a PutRecord (`data`, or Firehose's `record.data`).
#[derive(Clone, Copy)]
enum Where {
    Batch(usize),
    Single(&'static str),
}

impl Where {
    fn at(self, name: &str) -> String {
        match self {
            Where::Batch(i) => format!("records.{}.member.{name}", i + 1),
            Where::Single(prefix) => format!("{prefix}{name}"),
        }
    }
}

/// Checks a Kinesis record; its explicit hash key as a number.
fn check_kinesis_entry(entry: &KinesisEntry, field: Where) -> Result<Option<u128>, ApiError> {
    let at = |name: &str| field.at(name);
    if entry.data.is_none() {
        return Err(ApiError::validation("null", &at("data"), "Member must not be null"));
    }
    let Some(key) = &entry.key else {
        return Err(ApiError::validation("null", &at("partitionKey"), "Member must not be null"));
    };
    if key.is_empty() {
        return Err(ApiError::validation(
            "''",
            &at("partitionKey"),
            "Member must have length greater than or equal to 1",
        ));
    }
    if key.len() > 256 && key.chars().count() > 256 {
        return Err(ApiError::validation(
            &format!("'{key}'"),
            &at("partitionKey"),
            "Member must have length less than or equal to 256",
        ));
    }
    let Some(hash) = &entry.hash_key else { return Ok(None) };
    let well_formed = hash.len() <= 39
        && hash.bytes().all(|b| b.is_ascii_digit())
        && (hash.as_ref() == "0" || !hash.starts_with('0'))
        && !hash.is_empty();
    if !well_formed {
        return Err(ApiError::validation(
            &format!("'{hash}'"),
            &at("explicitHashKey"),
            "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
        ));
    }
    hash.parse::<u128>().map(Some).map_err(|_| {
        ApiError::new(
            "InvalidArgumentException",
            format!("Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {hash}"),
        )
    })
}

/// A record longer than the limit (data alone, then data and key).
fn check_kinesis_size(data: usize, key: usize, field: Where) -> Result<(), ApiError> {
    if data > KINESIS_MAX_RECORD {
        return Err(ApiError::validation(
            "'java.nio.HeapByteBuffer[pos=0 lim=..]'",
            &field.at("data"),
            &format!("Member must have length less than or equal to {KINESIS_MAX_RECORD}"),
        ));
    }
    if data + key > KINESIS_MAX_RECORD {
        return Err(ApiError::new(
            "InvalidArgumentException",
            format!(
                "Record size ({} bytes) exceeds the limit of {KINESIS_MAX_RECORD} bytes (data and partition key)",
                data + key
            ),
        ));
    }
    Ok(())
}

fn check_count(len: Option<usize>, max: usize) -> Result<usize, ApiError> {
    match len {
        None => Err(ApiError::validation("null", "records", "Member must not be null")),
        Some(0) => Err(ApiError::validation("'[]'", "records", "Member must have length greater than or equal to 1")),
        Some(n) if n > max => Err(ApiError::validation(
            "'[…]'",
            "records",
            &format!("Member must have length less than or equal to {max}"),
        )),
        Some(n) => Ok(n),
    }
}

fn put_records(state: &State, body: &[u8]) -> Answer {
    let req: PutRecordsIn = parse(body)?;
    let stream = StreamRef { name: req.name, arn: req.arn }.name()?;
    let n = check_count(req.records.as_ref().map(Vec::len), KINESIS_MAX_RECORDS)?;
    let records = req.records.unwrap_or_default();
    let mut decoded = Decoded::new(n, body.len());
    // Each entry's shard and size.
    let mut placed = Vec::with_capacity(n);
    let mut total = 0;
    for (i, entry) in records.iter().enumerate() {
        let field = Where::Batch(i);
        let hash = check_kinesis_entry(entry, field)?;
        let key = entry.key.as_deref().unwrap_or("");
        let len = decoded.push(entry.data.as_ref().map_or(&[][..], |d| &d.0), field)?;
        check_kinesis_size(len, key.len(), field)?;
        total += len + key.len();
        placed.push((state.shards.shard_of(key, hash), len + key.len()));
    }
    if total > KINESIS_MAX_REQUEST {
        return Err(ApiError::new(
            "InvalidArgumentException",
            format!("Records size ({total} bytes) exceeds the limit of {KINESIS_MAX_REQUEST} bytes per PutRecords"),
        ));
    }
    state.stats.records_received.fetch_add(n as u64, Relaxed);
    let mut failed = state.draw_failures(n);
    if let Some(limits) = &state.limits {
        limits.charge(&mut failed, |i| placed[i]);
    }
    let failed_count = failed.iter().filter(|&&f| f).count();
    let first_seq = state.seq.fetch_add((n - failed_count) as u64, Relaxed);
    let mut out = Vec::with_capacity(64 + n * 96);
    out.extend_from_slice(b"{\"FailedRecordCount\":");
    out.extend_from_slice(itoa::Buffer::new().format(failed_count).as_bytes());
    out.extend_from_slice(b",\"Records\":[");
    let mut seq = first_seq;
    let mut accepted_bytes = 0;
    for (i, &(shard, _)) in placed.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if failed[i] {
            out.extend_from_slice(
                b"{\"ErrorCode\":\"ProvisionedThroughputExceededException\",\"ErrorMessage\":\"Rate exceeded for shard ",
            );
            push_shard_id(&mut out, shard);
            write!(out, " in stream {stream} under account {ACCOUNT}.\"}}").ok();
        } else {
            out.extend_from_slice(b"{\"SequenceNumber\":\"");
            push_sequence(&mut out, seq);
            seq += 1;
            out.extend_from_slice(b"\",\"ShardId\":\"");
            push_shard_id(&mut out, shard);
            out.extend_from_slice(b"\"}");
            accepted_bytes += decoded.get(i).len();
        }
    }
    out.extend_from_slice(b"],\"EncryptionType\":\"NONE\"}");
    state.accept(|i| decoded.get(i), &failed, accepted_bytes);
    Ok(out)
}

fn put_record(state: &State, body: &[u8]) -> Answer {
    let req: PutRecordIn = parse(body)?;
    let stream = req.stream.name()?;
    let hash = check_kinesis_entry(&req.entry, Where::Single(""))?;
    let key = req.entry.key.as_deref().unwrap_or("");
    let mut decoded = Decoded::new(1, body.len());
    let len = decoded.push(req.entry.data.as_ref().map_or(&[][..], |d| &d.0), Where::Single(""))?;
    check_kinesis_size(len, key.len(), Where::Single(""))?;
    state.stats.records_received.fetch_add(1, Relaxed);
    let shard = state.shards.shard_of(key, hash);
    let mut shard_id = Vec::new();
    push_shard_id(&mut shard_id, shard);
    let shard_id = String::from_utf8_lossy(&shard_id).into_owned();
    if state.draw_failures(1)[0] {
        state.accept(|i| decoded.get(i), &[true], 0);
        return Err(ApiError::new(
            "ProvisionedThroughputExceededException",
            format!("Rate exceeded for shard {shard_id} in stream {stream} under account {ACCOUNT}."),
        ));
    }
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"ShardId\":\"");
    out.extend_from_slice(shard_id.as_bytes());
    out.extend_from_slice(b"\",\"SequenceNumber\":\"");
    push_sequence(&mut out, state.seq.fetch_add(1, Relaxed));
    out.extend_from_slice(b"\",\"EncryptionType\":\"NONE\"}");
    state.accept(|i| decoded.get(i), &[false], len);
    Ok(out)
}

fn shard_json(state: &State, i: usize) -> serde_json::Value {
    let (start, end) = state.shards.range(i);
    let mut id = Vec::new();
    push_shard_id(&mut id, i);
    serde_json::json!({
        "ShardId": String::from_utf8_lossy(&id),
        "HashKeyRange": { "StartingHashKey": start.to_string(), "EndingHashKey": end.to_string() },
        "SequenceNumberRange": { "StartingSequenceNumber": sequence_string(0) },
    })
}

#[derive(Deserialize)]
struct ListShardsIn<'a> {
    #[serde(flatten, borrow)]
    stream: StreamRef<'a>,
    #[serde(rename = "NextToken", borrow, default)]
    next_token: Option<Cow<'a, str>>,
    #[serde(rename = "ExclusiveStartShardId", borrow, default)]
    after: Option<Cow<'a, str>>,
    #[serde(rename = "MaxResults", default)]
    max: Option<usize>,
}

/// All shards, a page of `MaxResults` (default 1,000) at a time; NextToken is where the next
/// page starts.
fn list_shards(state: &State, body: &[u8]) -> Answer {
    let req: ListShardsIn = parse(body)?;
    let start = match (&req.next_token, &req.after) {
        (Some(token), _) => token
            .strip_prefix("bench-sink-page-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ApiError::new("InvalidArgumentException", "NextToken is not one this stream gave"))?,
        (None, after) => {
            req.stream.name()?;
            match after.as_deref().and_then(|id| id.strip_prefix("shardId-")).and_then(|n| n.parse::<usize>().ok()) {
                Some(i) => i + 1,
                None => 0,
            }
        }
    };
    let max = req.max.unwrap_or(1000).clamp(1, 10_000);
    let end = (start + max).min(state.shards.len());
    let shards: Vec<_> = (start.min(end)..end).map(|i| shard_json(state, i)).collect();
    let mut out = serde_json::json!({ "Shards": shards });
    if end < state.shards.len() {
        out["NextToken"] = format!("bench-sink-page-{end}").into();
    }
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}

fn describe_stream(state: &State, body: &[u8], summary: bool) -> Answer {
    let req: StreamRef = parse(body)?;
    let name = req.name()?;
    let arn = format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{name}");
    let mut d = serde_json::json!({
        "StreamName": name,
        "StreamARN": arn,
        "StreamStatus": "ACTIVE",
        "StreamModeDetails": { "StreamMode": "PROVISIONED" },
        "RetentionPeriodHours": 24,
        "StreamCreationTimestamp": state.started_epoch_s,
        "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
        "EncryptionType": "NONE",
    });
    let out = if summary {
        d["OpenShardCount"] = state.shards.len().into();
        d["ConsumerCount"] = 0.into();
        serde_json::json!({ "StreamDescriptionSummary": d })
    } else {
        d["Shards"] = (0..state.shards.len()).map(|i| shard_json(state, i)).collect();
        d["HasMoreShards"] = false.into();
        serde_json::json!({ "StreamDescription": d })
    };
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}

fn delivery_stream_name(name: Option<Cow<str>>) -> Result<String, ApiError> {
    match name {
        Some(n) if !n.is_empty() => Ok(n.into_owned()),
        _ => Err(ApiError::validation("null", "deliveryStreamName", "Member must not be null")),
    }
}

fn firehose_data<'a>(entry: &'a FirehoseEntry, field: Where) -> Result<&'a [u8], ApiError> {
    entry
        .data
        .as_ref()
        .map(|d| &*d.0)
        .ok_or_else(|| ApiError::validation("null", &field.at("data"), "Member must not be null"))
}

fn check_firehose_size(len: usize, field: Where) -> Result<(), ApiError> {
    if len > FIREHOSE_MAX_RECORD {
        return Err(ApiError::validation(
            "'java.nio.HeapByteBuffer[pos=0 lim=..]'",
            &field.at("data"),
            &format!("Member must have length less than or equal to {FIREHOSE_MAX_RECORD}"),
        ));
    }
    Ok(())
}

fn put_record_batch(state: &State, body: &[u8]) -> Answer {
    let req: PutRecordBatchIn = parse(body)?;
    delivery_stream_name(req.stream)?;
    let records = req.records;
    let n = check_count(records.as_ref().map(Vec::len), FIREHOSE_MAX_RECORDS)?;
    let records = records.unwrap_or_default();
    let mut decoded = Decoded::new(n, body.len());
    let mut total = 0;
    for (i, entry) in records.iter().enumerate() {
        let field = Where::Batch(i);
        let len = decoded.push(firehose_data(entry, field)?, field)?;
        check_firehose_size(len, field)?;
        total += len;
    }
    if total > FIREHOSE_MAX_REQUEST {
        return Err(ApiError::new(
            "InvalidArgumentException",
            format!(
                "Records size ({total} bytes) exceeds the limit of {FIREHOSE_MAX_REQUEST} bytes per PutRecordBatch"
            ),
        ));
    }
    state.stats.records_received.fetch_add(n as u64, Relaxed);
    let failed = state.draw_failures(n);
    let failed_count = failed.iter().filter(|&&f| f).count();
    let mut seq = state.seq.fetch_add((n - failed_count) as u64, Relaxed);
    let mut out = Vec::with_capacity(64 + n * 80);
    out.extend_from_slice(b"{\"FailedPutCount\":");
    out.extend_from_slice(itoa::Buffer::new().format(failed_count).as_bytes());
    out.extend_from_slice(b",\"Encrypted\":false,\"RequestResponses\":[");
    let mut accepted_bytes = 0;
    for (i, &fail) in failed.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if fail {
            out.extend_from_slice(b"{\"ErrorCode\":\"ServiceUnavailableException\",\"ErrorMessage\":\"Slow down.\"}");
        } else {
            out.extend_from_slice(b"{\"RecordId\":\"");
            push_record_id(&mut out, seq);
            seq += 1;
            out.extend_from_slice(b"\"}");
            accepted_bytes += decoded.get(i).len();
        }
    }
    out.extend_from_slice(b"]}");
    state.accept(|i| decoded.get(i), &failed, accepted_bytes);
    Ok(out)
}

fn firehose_put_record(state: &State, body: &[u8]) -> Answer {
    let req: FirehosePutRecordIn = parse(body)?;
    delivery_stream_name(req.stream)?;
    let Some(entry) = req.record else {
        return Err(ApiError::validation("null", "record", "Member must not be null"));
    };
    let mut decoded = Decoded::new(1, body.len());
    let field = Where::Single("record.");
    let len = decoded.push(firehose_data(&entry, field)?, field)?;
    check_firehose_size(len, field)?;
    state.stats.records_received.fetch_add(1, Relaxed);
    if state.draw_failures(1)[0] {
        state.accept(|i| decoded.get(i), &[true], 0);
        return Err(ApiError::new("ServiceUnavailableException", "Slow down."));
    }
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"RecordId\":\"");
    push_record_id(&mut out, state.seq.fetch_add(1, Relaxed));
    out.extend_from_slice(b"\",\"Encrypted\":false}");
    state.accept(|i| decoded.get(i), &[false], len);
    Ok(out)
}

fn describe_delivery_stream(state: &State, body: &[u8]) -> Answer {
    #[derive(Deserialize)]
    struct In<'a> {
        #[serde(rename = "DeliveryStreamName", borrow, default)]
        stream: Option<Cow<'a, str>>,
    }
    let name = delivery_stream_name(parse::<In>(body)?.stream)?;
    let out = serde_json::json!({ "DeliveryStreamDescription": {
        "DeliveryStreamName": name,
        "DeliveryStreamARN": format!("arn:aws:firehose:us-east-1:{ACCOUNT}:deliverystream/{name}"),
        "DeliveryStreamStatus": "ACTIVE",
        "DeliveryStreamType": "DirectPut",
        "VersionId": "1",
        "CreateTimestamp": state.started_epoch_s,
        "Destinations": [],
        "HasMoreDestinations": false,
    }});
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}

/// 56 digits, as Kinesis sequence numbers have.
fn push_sequence(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"49");
    push_padded(out, n, 54);
}

fn sequence_string(n: u64) -> String {
    let mut out = Vec::new();
    push_sequence(&mut out, n);
    String::from_utf8_lossy(&out).into_owned()
}

/// A record id of Firehose's length (their content is opaque).
fn push_record_id(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"bench");
    push_padded(out, n, 39);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(fail_rate: f64) -> State {
        State::new(crate::Opts { fail_rate, ..crate::Opts::default() }).unwrap()
    }

    fn b64(s: &str) -> String {
        B64.encode(s)
    }

    fn put(state: &State, records: serde_json::Value) -> Result<serde_json::Value, ApiError> {
        let body = serde_json::json!({ "StreamName": "s", "Records": records });
        put_records(state, &serde_json::to_vec(&body).unwrap()).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn put_records_answers_a_sequence_number_and_a_shard_per_record() {
        let st = state(0.0);
        let out = put(
            &st,
            serde_json::json!([
                { "Data": b64("one"), "PartitionKey": "a" },
                { "Data": b64("two"), "PartitionKey": "b", "ExplicitHashKey": "0" },
            ]),
        )
        .unwrap();
        assert_eq!(out["FailedRecordCount"], 0);
        let recs = out["Records"].as_array().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0]["SequenceNumber"].as_str().unwrap().len(), 56);
        assert_eq!(recs[1]["ShardId"], "shardId-000000000000");
        assert_eq!(st.stats.records_accepted.load(Relaxed), 2);
        assert_eq!(st.stats.bytes_accepted.load(Relaxed), 6);
    }

    #[test]
    fn the_service_limits_are_enforced() {
        let st = state(0.0);
        let one = |data: &str, key: &str| serde_json::json!({ "Data": b64(data), "PartitionKey": key });
        let kind = |r: Result<serde_json::Value, ApiError>| r.unwrap_err().kind;
        assert_eq!(kind(put(&st, serde_json::json!([]))), "ValidationException");
        let many: Vec<_> = (0..501).map(|_| one("x", "k")).collect();
        assert_eq!(kind(put(&st, many.into())), "ValidationException");
        let five_hundred: Vec<_> = (0..500).map(|_| one("x", "k")).collect();
        assert!(put(&st, five_hundred.into()).is_ok());
        assert_eq!(kind(put(&st, serde_json::json!([one("x", "")]))), "ValidationException");
        assert_eq!(kind(put(&st, serde_json::json!([one("x", &"k".repeat(257))]))), "ValidationException");
        assert!(put(&st, serde_json::json!([one("x", &"é".repeat(256))])).is_ok());
        let mib = "x".repeat(1 << 20);
        assert!(put(&st, serde_json::json!([one(&mib[1..], "k")])).is_ok());
        assert_eq!(kind(put(&st, serde_json::json!([one(&mib, "k")]))), "InvalidArgumentException");
        let big: Vec<_> = (0..6).map(|_| one(&mib[10..], "k")).collect();
        assert_eq!(kind(put(&st, big.into())), "InvalidArgumentException");
        let bad = serde_json::json!([{ "Data": "not base64!", "PartitionKey": "k" }]);
        assert_eq!(kind(put(&st, bad)), "SerializationException");
        let hash = serde_json::json!([{ "Data": "", "PartitionKey": "k", "ExplicitHashKey": "0123" }]);
        assert_eq!(kind(put(&st, hash)), "ValidationException");
        let too_big = serde_json::json!([{ "Data": "", "PartitionKey": "k",
            "ExplicitHashKey": "340282366920938463463374607431768211456" }]);
        assert_eq!(kind(put(&st, too_big)), "InvalidArgumentException");
        // Nothing of a refused request counts.
        assert_eq!(st.stats.records_accepted.load(Relaxed), 502);
    }

    #[test]
    fn failures_hit_the_asked_fraction_of_records_and_are_not_accepted() {
        let st = state(0.1);
        let records: Vec<_> =
            (0..500).map(|i| serde_json::json!({ "Data": b64(&i.to_string()), "PartitionKey": "k" })).collect();
        let mut failed = 0;
        for _ in 0..20 {
            let out = put(&st, records.clone().into()).unwrap();
            let n = out["FailedRecordCount"].as_u64().unwrap();
            let listed = out["Records"].as_array().unwrap().iter().filter(|r| r.get("ErrorCode").is_some()).count();
            assert_eq!(n as usize, listed);
            failed += n;
        }
        assert!((800..1200).contains(&failed), "{failed} of 10,000 failed");
        assert_eq!(st.stats.records_accepted.load(Relaxed), 10_000 - failed);
        assert_eq!(st.stats.records_failed.load(Relaxed), failed);
    }

    #[test]
    fn put_record_takes_one_record() {
        let st = state(0.0);
        let body = serde_json::json!({ "StreamName": "s", "Data": b64("one"), "PartitionKey": "k" });
        let out: serde_json::Value =
            serde_json::from_slice(&put_record(&st, &serde_json::to_vec(&body).unwrap()).unwrap()).unwrap();
        assert_eq!(out["ShardId"], "shardId-000000000000");
        let body = serde_json::json!({ "StreamName": "s", "Data": b64("one") });
        assert_eq!(put_record(&st, &serde_json::to_vec(&body).unwrap()).unwrap_err().kind, "ValidationException");
        assert_eq!(st.stats.records_accepted.load(Relaxed), 1);
    }

    #[test]
    fn firehose_batches_get_a_record_id_each() {
        let st = state(0.0);
        let body =
            serde_json::json!({ "DeliveryStreamName": "d", "Records": [{ "Data": b64("a") }, { "Data": b64("b") }] });
        let out = put_record_batch(&st, &serde_json::to_vec(&body).unwrap()).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["FailedPutCount"], 0);
        assert_eq!(out["RequestResponses"].as_array().unwrap().len(), 2);
        let too_big = serde_json::json!({ "DeliveryStreamName": "d", "Records": [{ "Data": b64(&"x".repeat(1000 * 1024 + 1)) }] });
        assert_eq!(
            put_record_batch(&st, &serde_json::to_vec(&too_big).unwrap()).unwrap_err().kind,
            "ValidationException"
        );
    }

    #[test]
    fn list_shards_pages_through_the_shards() {
        let st = State::new(crate::Opts { shards: 3, ..crate::Opts::default() }).unwrap();
        let out: serde_json::Value =
            serde_json::from_slice(&list_shards(&st, br#"{"StreamName":"s","MaxResults":2}"#).unwrap()).unwrap();
        assert_eq!(out["Shards"].as_array().unwrap().len(), 2);
        let token = out["NextToken"].as_str().unwrap();
        let body = serde_json::to_vec(&serde_json::json!({ "NextToken": token })).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&list_shards(&st, &body).unwrap()).unwrap();
        assert_eq!(out["Shards"][0]["ShardId"], "shardId-000000000002");
        assert_eq!(out["Shards"][0]["HashKeyRange"]["EndingHashKey"], u128::MAX.to_string());
        assert!(out.get("NextToken").is_none());
    }
}
