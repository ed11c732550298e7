//! The bodies of PutRecords and PutRecordBatch, written straight from our records, and the parts
//! of their 2xx answers we use. The SDK's generic path copied every record three times and made
//! a String per record for keys, sequence numbers and shard ids; here a request is one buffer
//! and an answer is scanned in place.
//!
//! The SDK still makes and sends the request: endpoint, credentials, SigV4, headers
//! (`X-Amz-Target`, content type), timeouts, and every non-2xx answer (error classification
//! relies on its error types). [`Wire`] is an interceptor that swaps our body in before the
//! request is signed, and reads a 2xx answer itself, leaving the SDK an empty output.

use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut, Error, Output,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::client::ser_de::{DeserializeResponse, SharedResponseDeserializer};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use rand::Rng;

use super::client::{EntryFailures, PutResult};
use super::kpl::Entry;
use super::retry::{ErrorClass, Failure, classify};
use crate::config::PartitionKeyOption;
use crate::types::key::{HEX, RecordKey};

/// Fixed bytes of one Kinesis entry besides its data and key:
/// `{"Data":"","PartitionKey":""},` and `,"ExplicitHashKey":""` with 39 digits.
const KINESIS_ENTRY_OVERHEAD: usize = 32;
const EXPLICIT_HASH_OVERHEAD: usize = 21 + 39;

/// The PutRecords body: `{"StreamName":..,"Records":[{"Data":..,"PartitionKey":..,
/// "ExplicitHashKey":..}]}`. Records without a key of their own get the flow's `key`
/// (as `record::key::partition_key` makes it, written in place).
pub fn put_records_body(stream: &str, entries: &[Entry], key: &PartitionKeyOption, rng: &mut impl Rng) -> Vec<u8> {
    let flow_key_len = match key {
        PartitionKeyOption::Deterministic => 32,
        _ => 16,
    };
    let size: usize = entries
        .iter()
        .map(|e| {
            let (data, own) = parts(e);
            KINESIS_ENTRY_OVERHEAD
                + base64_len(data.len())
                + own.map_or(flow_key_len, |k| {
                    k.partition.len() + if k.explicit_hash.is_some() { EXPLICIT_HASH_OVERHEAD } else { 0 }
                })
        })
        .sum();
    let mut out = Vec::with_capacity(32 + stream.len() + size);
    out.extend_from_slice(b"{\"StreamName\":");
    string(&mut out, stream);
    out.extend_from_slice(b",\"Records\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let (data, own) = parts(e);
        out.extend_from_slice(b"{\"Data\":\"");
        base64_simd::STANDARD.encode_append(data, &mut out);
        out.extend_from_slice(b"\",\"PartitionKey\":");
        match own {
            Some(k) => {
                string(&mut out, &k.partition);
                if let Some(h) = k.explicit_hash {
                    let _ = write!(out, ",\"ExplicitHashKey\":\"{h}\"");
                }
            }
            None => {
                out.push(b'"');
                crate::types::key::write_partition_key(&mut out, key, data, rng);
                out.push(b'"');
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

/// The PutRecordBatch body: `{"DeliveryStreamName":..,"Records":[{"Data":..}]}`.
pub fn put_record_batch_body(stream: &str, entries: &[Entry]) -> Vec<u8> {
    let size: usize = entries.iter().map(|e| 12 + base64_len(parts(e).0.len())).sum();
    let mut out = Vec::with_capacity(40 + stream.len() + size);
    out.extend_from_slice(b"{\"DeliveryStreamName\":");
    string(&mut out, stream);
    out.extend_from_slice(b",\"Records\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Data\":\"");
        base64_simd::STANDARD.encode_append(parts(e).0, &mut out);
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"]}");
    out
}

fn parts(e: &Entry) -> (&[u8], Option<&RecordKey>) {
    match e {
        Entry::Plain(r) => (&r.data, r.key.as_deref()),
        Entry::Aggregate(a) => (&a.data, Some(&a.key)),
    }
}

fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// `s` as a JSON string, escaped as the SDK does (quote, backslash and control characters;
/// other characters as UTF-8).
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]],
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// What a 2xx answer must hold: `sent` results under `array` (`Records` for PutRecords,
/// `RequestResponses` for PutRecordBatch), and the shard of each when `shards`.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub array: &'static str,
    pub sent: usize,
    pub shards: bool,
}

fn invalid(message: String) -> Failure {
    Failure { class: ErrorClass::Transient, code: "InvalidResponse".into(), message }
}

/// Reads a 2xx answer: the failed entries (their `ErrorCode` and `ErrorMessage`), and the
/// `ShardId` of each entry when asked. Any other field is skipped unread. An answer that is not
/// JSON, or holds another number of results than records sent, is `InvalidResponse`.
pub fn parse_answer(body: &[u8], expect: Expect) -> Result<PutResult, Failure> {
    let mut p = Scan { b: body, i: 0 };
    let mut out = PutResult { failures: EntryFailures::new(), shards: Vec::new() };
    let mut count = 0usize;
    let parsed = (|| -> Option<()> {
        p.byte(b'{')?;
        if !p.eat(b'}') {
            loop {
                let name = p.string()?;
                p.byte(b':')?;
                if name == expect.array.as_bytes() && !p.eat_null() {
                    count = p.results(expect, &mut out)?;
                } else {
                    p.skip_value(0)?;
                }
                if p.eat(b'}') {
                    break;
                }
                p.byte(b',')?;
            }
        }
        p.ws();
        (p.i == p.b.len()).then_some(())
    })();
    if parsed.is_none() {
        let at = p.i.min(body.len());
        return Err(invalid(format!(
            "the answer is not the JSON expected (at byte {at} of {}): {}",
            body.len(),
            String::from_utf8_lossy(&body[at.saturating_sub(40)..(at + 40).min(body.len())])
        )));
    }
    if count != expect.sent {
        return Err(invalid(format!("the response holds {count} results for {} records", expect.sent)));
    }
    Ok(out)
}

/// A forward-only scanner over JSON text; `None` means malformed.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

/// Nesting allowed in skipped values.
const MAX_DEPTH: u32 = 64;

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let hit = self.b.get(self.i) == Some(&c);
        self.i += hit as usize;
        hit
    }

    fn byte(&mut self, c: u8) -> Option<()> {
        self.eat(c).then_some(())
    }

    fn eat_null(&mut self) -> bool {
        self.ws();
        let hit = self.b[self.i..].starts_with(b"null");
        self.i += 4 * hit as usize;
        hit
    }

    /// A string's raw bytes between its quotes (escapes not decoded).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.byte(b'"')?;
        let start = self.i;
        loop {
            let at = self.i + memchr::memchr2(b'"', b'\\', &self.b[self.i..])?;
            if self.b[at] == b'"' {
                self.i = at + 1;
                return Some(&self.b[start..at]);
            }
            self.i = at + 2;
            if self.i > self.b.len() {
                return None;
            }
        }
    }

    /// A string value, decoded, or `None` for JSON null. Escapes are rare (error messages): only
    /// then does serde_json decode it.
    fn text(&mut self) -> Option<Option<String>> {
        if self.eat_null() {
            return Some(None);
        }
        self.ws();
        let start = self.i;
        let raw = self.string()?;
        if !raw.contains(&b'\\') {
            return Some(Some(std::str::from_utf8(raw).ok()?.to_owned()));
        }
        serde_json::from_slice(&self.b[start..self.i]).ok().map(Some)
    }

    /// Any value, unread.
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        self.ws();
        match *self.b.get(self.i)? {
            b'"' => self.string().map(drop),
            b'{' | b'[' if depth < MAX_DEPTH => {
                let close = if self.b[self.i] == b'{' { b'}' } else { b']' };
                self.i += 1;
                if self.eat(close) {
                    return Some(());
                }
                loop {
                    if close == b'}' {
                        self.string()?;
                        self.byte(b':')?;
                    }
                    self.skip_value(depth + 1)?;
                    if self.eat(close) {
                        return Some(());
                    }
                    self.byte(b',')?;
                }
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                let start = self.i;
                while let Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'E') = self.b.get(self.i) {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
            _ => None,
        }
    }

    /// The results array: one object per record sent, in order. Returns how many there were.
    fn results(&mut self, expect: Expect, out: &mut PutResult) -> Option<usize> {
        self.byte(b'[')?;
        if expect.shards {
            out.shards.reserve(expect.sent);
        }
        let mut n = 0;
        if self.eat(b']') {
            return Some(0);
        }
        loop {
            let (mut code, mut message, mut shard) = (None, None, None);
            self.byte(b'{')?;
            if !self.eat(b'}') {
                loop {
                    let name = self.string()?;
                    self.byte(b':')?;
                    match name {
                        b"ErrorCode" => code = self.text()?,
                        b"ErrorMessage" => message = self.text()?,
                        b"ShardId" if expect.shards => shard = self.text()?,
                        _ => self.skip_value(0)?,
                    }
                    if self.eat(b'}') {
                        break;
                    }
                    self.byte(b',')?;
                }
            }
            if let Some(code) = code.filter(|c| !c.is_empty()) {
                let class = classify(&code, None);
                out.failures.push((n, Failure { class, code, message: message.unwrap_or_default() }));
            }
            if expect.shards {
                out.shards.push(shard);
            }
            n += 1;
            if self.eat(b']') {
                return Some(n);
            }
            self.byte(b',')?;
        }
    }
}

/// What the call's answer said, once it is read (`None` until then).
pub type Answer = Arc<Mutex<Option<Result<PutResult, Failure>>>>;

/// An interceptor for one PutRecords or PutRecordBatch call: sends `body` instead of what the
/// SDK serialized (the SDK is given no records), and reads a 2xx answer into `answer`.
pub struct Wire {
    /// Taken when the request is made: once hyper has written it, it is freed, not held for the
    /// round trip.
    body: Mutex<Option<Bytes>>,
    len: usize,
    expect: Expect,
    answer: Answer,
    /// The operation's output, empty (the SDK downcasts what the deserializer returns).
    empty: fn() -> Output,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").field("bytes", &self.len).field("expect", &self.expect).finish()
    }
}

impl Wire {
    pub fn new(body: Vec<u8>, expect: Expect, empty: fn() -> Output) -> (Wire, Answer) {
        let answer = Answer::default();
        let len = body.len();
        (Wire { body: Mutex::new(Some(body.into())), len, expect, answer: answer.clone(), empty }, answer)
    }
}

impl Intercept for Wire {
    fn name(&self) -> &'static str {
        "Wire"
    }

    /// After serialization, before signing. The body is one that cannot be cloned, so the SDK
    /// keeps no copy to rewind to (its retries are off) and it is freed once written; its hash is
    /// given to the signer, which cannot read such a body itself.
    fn modify_before_retry_loop(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = self.body.lock().unwrap().take().ok_or("the request was made twice")?;
        crate::aws::sign_payload_hash(cfg, &body);
        let request = context.request_mut();
        *request.body_mut() = SdkBody::from_body_1_x(http_body_util::Full::new(body));
        request.headers_mut().insert("Content-Length", self.len.to_string());
        Ok(())
    }

    /// A 2xx answer is ours to read; any other goes to the SDK's deserializer, untouched.
    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if context.response().status().is_success() {
            let own = OwnAnswer { expect: self.expect, answer: self.answer.clone(), empty: self.empty };
            cfg.interceptor_state().store_put(SharedResponseDeserializer::new(own));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct OwnAnswer {
    expect: Expect,
    answer: Answer,
    empty: fn() -> Output,
}

impl DeserializeResponse for OwnAnswer {
    fn deserialize_nonstreaming_with_config(
        &self,
        response: &HttpResponse,
        _: &ConfigBag,
    ) -> Result<Output, OrchestratorError<Error>> {
        let parsed = match response.body().bytes() {
            Some(body) => parse_answer(body, self.expect),
            None => Err(invalid("the answer's body was not read".into())),
        };
        *self.answer.lock().unwrap() = Some(parsed);
        Ok((self.empty)())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::record::{Origin, Record};
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn plain(data: &[u8], key: Option<RecordKey>) -> Entry {
        Entry::Plain(Record {
            data: Bytes::copy_from_slice(data),
            origin: Origin { file: 0, chunk: 0 },
            key: key.map(Box::new),
        })
    }

    fn key(k: &str, hash: Option<u128>) -> Option<RecordKey> {
        Some(RecordKey { partition: k.into(), explicit_hash: hash })
    }

    #[test]
    fn put_records_body_is_the_json_kinesis_takes() {
        let entries = [
            plain(b"hello\n", key("a\"b\\c\n\u{1}é😀", None)),
            plain(b"", key("k", Some(u128::MAX))),
            plain(&[0, 255, 10], None),
        ];
        let mut rng = SmallRng::seed_from_u64(7);
        let body = put_records_body("my\"stream", &entries, &PartitionKeyOption::Random, &mut rng);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let random = crate::types::key::random_key(&mut rng);
        assert_eq!(
            v,
            serde_json::json!({"StreamName": "my\"stream", "Records": [
                {"Data": "aGVsbG8K", "PartitionKey": "a\"b\\c\n\u{1}é😀"},
                {"Data": "", "PartitionKey": "k", "ExplicitHashKey": u128::MAX.to_string()},
                {"Data": "AP8K", "PartitionKey": random},
            ]})
        );
        // Escaped as the SDK escapes: \u00XX for control characters, UTF-8 as it is.
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains(r#""PartitionKey":"a\"b\\c\n\u0001é😀""#), "{text}");
        assert!(text.starts_with(r#"{"StreamName":"my\"stream","Records":[{"Data":"aGVsbG8K","#), "{text}");
    }

    #[test]
    fn flow_keys_are_those_of_partition_key() {
        let data = b"some line\n";
        for opt in [PartitionKeyOption::Random, PartitionKeyOption::Deterministic] {
            let mut rng = SmallRng::seed_from_u64(3);
            let body = put_records_body("s", &[plain(data, None)], &opt, &mut rng);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let mut rng = SmallRng::seed_from_u64(3);
            let expected = crate::types::key::partition_key(&opt, data, &mut rng);
            assert_eq!(v["Records"][0]["PartitionKey"], expected);
        }
    }

    #[test]
    fn body_capacity_is_enough() {
        // Sized up front: no reallocation for flow keys, own keys and explicit hash keys.
        for n in [0usize, 1, 2, 3, 4, 100, 1000] {
            let data = vec![b'x'; n];
            let entries = [plain(&data, None), plain(&data, key("kk", Some(1))), plain(&data, key("k", None))];
            for opt in [PartitionKeyOption::Random, PartitionKeyOption::Deterministic] {
                let body = put_records_body("s", &entries, &opt, &mut SmallRng::seed_from_u64(1));
                assert!(body.capacity() >= body.len());
                assert!(body.capacity() < body.len() + 200, "{} for {}", body.capacity(), body.len());
            }
        }
    }

    /// Through the SDK: our body is sent with the SDK's headers, and signed exactly as the SDK
    /// signs the same body when it holds it itself.
    #[tokio::test]
    async fn sent_and_signed_as_the_sdk_does() {
        use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
        use std::time::{Duration, UNIX_EPOCH};
        let body = put_records_body("s", &[plain(b"x", key("k", None))], &PartitionKeyOption::Random, &mut rand::rng());
        let send = |own: bool| {
            let body = body.clone();
            async move {
                let (http, rx) = aws_smithy_http_client::test_util::capture_request(None);
                let conf = aws_sdk_kinesis::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new("eu-west-1"))
                    .credentials_provider(Credentials::new("AKIDEXAMPLE", "secret", None, None, "t"))
                    .time_source(aws_smithy_async::time::StaticTimeSource::new(
                        UNIX_EPOCH + Duration::from_secs(1_795_000_000),
                    ))
                    .http_client(http)
                    .build();
                let client = aws_sdk_kinesis::Client::from_conf(conf);
                let op = client.put_records().stream_name("s").set_records(Some(Vec::new())).customize();
                let _ = if own {
                    let expect = Expect { array: "Records", sent: 1, shards: false };
                    let (call, _) = Wire::new(body, expect, || {
                        let out = aws_sdk_kinesis::operation::put_records::PutRecordsOutput::builder();
                        Output::erase(out.set_records(Some(Vec::new())).build().unwrap())
                    });
                    op.interceptor(call).send().await
                } else {
                    // The SDK's own signing of an in-memory body (it hashes it itself).
                    let body = Bytes::from(body);
                    op.mutate_request(move |r| {
                        r.headers_mut().insert("Content-Length", body.len().to_string());
                        *r.body_mut() = SdkBody::from(body.clone());
                    })
                    .send()
                    .await
                };
                rx.expect_request()
            }
        };
        let (ours, sdk) = (send(true).await, send(false).await);
        for h in ["authorization", "content-type", "x-amz-target", "content-length", "x-amz-content-sha256"] {
            assert_eq!(ours.headers().get(h), sdk.headers().get(h), "{h}");
        }
        assert_eq!(ours.headers().get("x-amz-target"), Some("Kinesis_20131202.PutRecords"));
        assert_eq!(ours.headers().get("content-type"), Some("application/x-amz-json-1.1"));
        assert_eq!(ours.headers().get("content-length"), Some(body.len().to_string().as_str()));
        let sent = http_body_util::BodyExt::collect(ours.into_body()).await.unwrap().to_bytes();
        assert_eq!(sent, body);
    }

    #[test]
    fn empty_requests() {
        let body = put_records_body("s", &[], &PartitionKeyOption::Random, &mut SmallRng::seed_from_u64(1));
        assert_eq!(body, br#"{"StreamName":"s","Records":[]}"#);
        assert_eq!(put_record_batch_body("d", &[]), br#"{"DeliveryStreamName":"d","Records":[]}"#);
    }

    #[test]
    fn put_record_batch_body_has_data_only() {
        let body = put_record_batch_body("d", &[plain(b"ab", key("ignored", Some(5))), plain(b"abc", None)]);
        assert_eq!(body, br#"{"DeliveryStreamName":"d","Records":[{"Data":"YWI="},{"Data":"YWJj"}]}"#);
    }

    const RECORDS: Expect = Expect { array: "Records", sent: 3, shards: false };

    #[test]
    fn answers_with_failures() {
        let body = br#"{"FailedRecordCount":2,"Records":[
            {"SequenceNumber":"4959","ShardId":"shardId-000000000001"},
            {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for \"shard\" \u00e9"},
            {"ErrorCode":"InternalFailure","ErrorMessage":null,"Extra":{"a":[1,2.5e3,true,null,{}]}}
        ],"EncryptionType":"NONE"}"#;
        let r = parse_answer(body, RECORDS).unwrap();
        assert!(r.shards.is_empty());
        let f: Vec<_> = r.failures.iter().map(|(i, f)| (*i, f.class, f.code.as_str(), f.message.as_str())).collect();
        assert_eq!(
            f,
            [
                (1, ErrorClass::Throttled, "ProvisionedThroughputExceededException", "Rate exceeded for \"shard\" é"),
                (2, ErrorClass::Transient, "InternalFailure", ""),
            ]
        );
        let r = parse_answer(body, Expect { shards: true, ..RECORDS }).unwrap();
        assert_eq!(r.shards, [Some("shardId-000000000001".to_string()), None, None]);
    }

    #[test]
    fn answers_without_failures() {
        // An empty ErrorCode is no error (as the SDK read it); field order does not matter.
        let body = br#" { "Records" : [ {"ShardId":"s-1","SequenceNumber":"1"} , {"ErrorCode":""}, {} ] ,
            "FailedRecordCount" : 0 } "#;
        let r = parse_answer(body, Expect { shards: true, ..RECORDS }).unwrap();
        assert!(r.failures.is_empty());
        assert_eq!(r.shards, [Some("s-1".to_string()), None, None]);
        let batch = br#"{"FailedPutCount":0,"Encrypted":false,"RequestResponses":[{"RecordId":"a"},{"RecordId":"b"}]}"#;
        let r = parse_answer(batch, Expect { array: "RequestResponses", sent: 2, shards: false }).unwrap();
        assert!(r.failures.is_empty() && r.shards.is_empty());
        assert!(parse_answer(b"{}", Expect { sent: 0, ..RECORDS }).unwrap().failures.is_empty());
        assert!(parse_answer(br#"{"Records":[]}"#, Expect { sent: 0, ..RECORDS }).is_ok());
    }

    #[test]
    fn short_or_malformed_answers_are_invalid() {
        let invalid = |body: &[u8]| {
            let f = parse_answer(body, RECORDS).unwrap_err();
            assert_eq!((f.class, f.code.as_str()), (ErrorClass::Transient, "InvalidResponse"), "{f:?}");
            f.message
        };
        let m = invalid(br#"{"Records":[{},{}]}"#);
        assert_eq!(m, "the response holds 2 results for 3 records");
        invalid(br#"{"Records":[{},{},{},{}]}"#);
        invalid(b"{}");
        invalid(br#"{"Records":null}"#);
        invalid(b"");
        invalid(b"not json");
        invalid(br#"{"Records":[{},{},{}]"#);
        invalid(br#"{"Records":[{},{},{}]}x"#);
        invalid(br#"{"Records":[{},{},{"ErrorCode":"unterminated}]}"#);
        invalid(br#"{"Records":[{},{},{"ErrorCode":5}]}"#);
        invalid(br#"{"Records":[{},{},[]]}"#);
        invalid(br#"{"Records":[{},{},{}],"x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#);
        invalid(b"{\"Records\":[{},{},{\"ErrorCode\":\"\\");
    }
}
