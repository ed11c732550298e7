//! ADDEC2METADATA with the real binary: a small IMDSv2 server in the test (token PUT, then GETs
//! that must carry the token), the Kinesis side on the in-repo fake. Records are checked byte for
//! byte against the Java agent's output for the same input; a change of the server's answer shows
//! in the records after `metadataTTL`; off EC2 (nothing listening) records pass unchanged with one
//! warning; a slow IMDS holds the first records only briefly. `cloudwatch.tagInstance` takes the
//! instance id from the same server.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

const TOKEN: &str = "AQAEAtest-token==";

struct ImdsState {
    document: Value,
    /// Tag key → value; `None`: tags not allowed in instance metadata (404).
    tags: Option<Vec<(String, String)>>,
    /// Answers are held this long.
    delay: Duration,
    token_puts: usize,
    gets: usize,
    /// GETs without the token (answered 401).
    unauthorized: usize,
}

/// A minimal IMDSv2: `PUT /latest/api/token`, then token-authenticated GETs of the identity
/// document, the instance id and the instance tags.
pub(crate) struct Imds {
    server: HttpServer,
    state: Arc<Mutex<ImdsState>>,
}

fn identity(instance_type: &str) -> Value {
    json!({
        "accountId": "123456789012",
        "architecture": "x86_64",
        "availabilityZone": "eu-west-1b",
        "billingProducts": null,
        "devpayProductCodes": null,
        "marketplaceProductCodes": null,
        "imageId": "ami-0abcdef1234567890",
        "instanceId": "i-0123456789abcdef0",
        "instanceType": instance_type,
        "kernelId": null,
        "pendingTime": "2026-11-01T10:00:00Z",
        "privateIp": "10.0.1.23",
        "ramdiskId": null,
        "region": "eu-west-1",
        "version": "2017-09-30"
    })
}

impl Imds {
    pub(crate) fn start() -> Imds {
        let state = Arc::new(Mutex::new(ImdsState {
            document: identity("m5.large"),
            tags: Some(vec![("Name".into(), "web-1".into()), ("Team".into(), "ops".into())]),
            delay: Duration::ZERO,
            token_puts: 0,
            gets: 0,
            unauthorized: 0,
        }));
        let st = state.clone();
        let server = HttpServer::start("fake-imds", move |req| answer(st.clone(), req));
        Imds { server, state }
    }

    pub(crate) fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    fn set(&self, f: impl FnOnce(&mut ImdsState)) {
        f(&mut self.state.lock().unwrap());
    }

    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let s = self.state.lock().unwrap();
        (s.token_puts, s.gets, s.unauthorized)
    }
}

async fn answer(state: Arc<Mutex<ImdsState>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let delay = state.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let text = |status: StatusCode, body: String| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
            .body(Full::new(Bytes::from(body)))
            .unwrap())
    };
    let path = req.uri().path().to_string();
    let mut s = state.lock().unwrap();
    if req.method() == Method::PUT && path == "/latest/api/token" {
        if req.headers().get("x-aws-ec2-metadata-token-ttl-seconds").is_none() {
            return text(StatusCode::BAD_REQUEST, String::new());
        }
        s.token_puts += 1;
        return text(StatusCode::OK, TOKEN.into());
    }
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, String::new());
    }
    if req.headers().get("x-aws-ec2-metadata-token").is_none_or(|t| t.as_bytes() != TOKEN.as_bytes()) {
        s.unauthorized += 1;
        return text(StatusCode::UNAUTHORIZED, String::new());
    }
    s.gets += 1;
    match path.as_str() {
        "/latest/dynamic/instance-identity/document" => {
            text(StatusCode::OK, serde_json::to_string_pretty(&s.document).unwrap())
        }
        "/latest/meta-data/instance-id" => {
            text(StatusCode::OK, s.document["instanceId"].as_str().unwrap_or_default().to_string())
        }
        "/latest/meta-data/tags/instance" => match &s.tags {
            Some(tags) => text(StatusCode::OK, tags.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join("\n")),
            None => text(StatusCode::NOT_FOUND, String::new()),
        },
        p => match (p.strip_prefix("/latest/meta-data/tags/instance/"), &s.tags) {
            (Some(key), Some(tags)) => match tags.iter().find(|(k, _)| k == key) {
                Some((_, v)) => text(StatusCode::OK, v.clone()),
                None => text(StatusCode::NOT_FOUND, String::new()),
            },
            _ => text(StatusCode::NOT_FOUND, String::new()),
        },
    }
}

fn config(ws: &Workspace, fake: &FakeKinesis, stream: &str, ttl: u64, extra: Value) -> Value {
    let mut c = json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": TEST_REGION,
        "shutdownTimeoutMillis": 5000,
        "flows": [{ "filePattern": ws.pattern("*.log"), "kinesisStream": stream,
                    "initialPosition": "START_OF_FILE", "maxBufferAgeMillis": 1000,
                    "dataProcessingOptions": [
                        { "optionName": "ADDEC2METADATA", "logFormat": "RFC3339SYSLOG", "metadataTTL": ttl }
                    ] }]
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn received(fake: &FakeKinesis, stream: &str) -> Vec<String> {
    fake.all_records()
        .into_iter()
        .filter(|r| r.stream == stream)
        .map(|r| String::from_utf8(r.data).expect("UTF-8 records"))
        .collect()
}

fn wait_records(fake: &FakeKinesis, stream: &str, n: usize, secs: u64) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = received(fake, stream);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Java agent's output for `input` (a JSON object line) with the test instance's identity.
fn expected(input_fields: &str, instance_type: &str, timestamp: &str) -> String {
    format!(
        "{{{input_fields},\"privateIp\":\"10.0.1.23\",\"availabilityZone\":\"eu-west-1b\",\
         \"instanceId\":\"i-0123456789abcdef0\",\"instanceType\":\"{instance_type}\",\"accountId\":\"123456789012\",\
         \"amiId\":\"ami-0abcdef1234567890\",\"region\":\"eu-west-1\",\"metadataTimestamp\":\"{timestamp}\",\
         \"tags\":{{\"name\":\"web-1\",\"team\":\"ops\"}}}}\n"
    )
}

fn timestamp_of(record: &str) -> String {
    let v: Value = serde_json::from_str(record).unwrap_or_else(|e| panic!("{e}: {record}"));
    let ts = v["metadataTimestamp"].as_str().unwrap_or_else(|| panic!("no metadataTimestamp in {record}")).to_string();
    let re = regex::Regex::new(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}\z").unwrap();
    assert!(re.is_match(&ts), "metadataTimestamp {ts:?} is not yyyy-MM-ddTHH:mm:ssZ");
    ts
}

#[test]
fn records_get_the_instance_identity_and_follow_the_ttl() {
    let fake = FakeKinesis::start();
    let imds = Imds::start();
    let cw = FakeCloudWatch::start();
    let ws = Workspace::new();
    let log = ws.file("app.log");
    std::fs::write(
        &log,
        concat!(
            "{\"msg\":\"hello 1\",\"level\":\"INFO\"}\n",
            "{\"region\":\"mine\",\"n\":1.50,\"nested\":{\"a\":[1,2]},\"s\":\"é\\u0001\"}\n",
            "not json at all\n",
        ),
    )
    .unwrap();
    ws.write_config(config(
        &ws,
        &fake,
        "ec2",
        1,
        json!({ "ec2.metadataEndpoint": imds.endpoint(), "cloudwatch.endpoint": cw.endpoint(),
                "cloudwatch.tagInstance": true, "cloudwatch.metricsBufferTimeMillis": 200 }),
    ));
    let mut agent = ws.spawn(false, &[]);
    let got = wait_records(&fake, "ec2", 3, 30);
    assert_eq!(got.len(), 3, "{got:#?}\n{}", tail(&agent.log(), 4000));
    let ts = timestamp_of(&got[0]);
    assert_eq!(got[0], expected("\"msg\":\"hello 1\",\"level\":\"INFO\"", "m5.large", &ts));
    // A field of the same name takes the instance's value in place; numbers and escapes as Jackson.
    assert_eq!(
        got[1],
        format!(
            "{{\"region\":\"eu-west-1\",\"n\":1.5,\"nested\":{{\"a\":[1,2]}},\"s\":\"é\\u0001\",\"privateIp\":\"10.0.1.23\",\
             \"availabilityZone\":\"eu-west-1b\",\"instanceId\":\"i-0123456789abcdef0\",\"instanceType\":\"m5.large\",\
             \"accountId\":\"123456789012\",\"amiId\":\"ami-0abcdef1234567890\",\"metadataTimestamp\":\"{}\",\
             \"tags\":{{\"name\":\"web-1\",\"team\":\"ops\"}}}}\n",
            timestamp_of(&got[1])
        )
    );
    // Not a JSON object: sent as read, as the Java agent does.
    assert_eq!(got[2], "not json at all\n");
    let (puts, gets, unauthorized) = imds.counts();
    assert!(puts >= 1 && gets >= 1, "IMDSv2: a token, then GETs ({puts}, {gets})");
    assert_eq!(unauthorized, 0, "every GET carried the token");

    // The server's answer changes: records written after the TTL show it.
    imds.set(|s| {
        s.document = identity("m5.xlarge");
    });
    std::thread::sleep(Duration::from_millis(2500));
    append_bytes(&log, b"{\"msg\":\"hello 2\"}\n");
    let got = wait_records(&fake, "ec2", 4, 30);
    assert_eq!(got.len(), 4, "{}", tail(&agent.log(), 4000));
    let ts2 = timestamp_of(&got[3]);
    assert_eq!(got[3], expected("\"msg\":\"hello 2\"", "m5.xlarge", &ts2));
    assert!(ts2 >= ts, "the metadata was read again: {ts} then {ts2}");

    // `cloudwatch.tagInstance` uses the instance id from the same server.
    let dims = [("Destination", "KinesisStream:ec2"), ("Instance", "i-0123456789abcdef0")];
    let deadline = Instant::now() + Duration::from_secs(10);
    while cw.sum("RecordsSent", &dims) < 4.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(cw.sum("RecordsSent", &dims), 4.0, "{:#?}", cw.datums());
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    let text = agent.log();
    assert_eq!(count_occurrences(&text, "is not a JSON object"), 1, "{}", tail(&text, 4000));
    assert!(!text.contains("no EC2 instance metadata"), "{}", tail(&text, 4000));
}

#[test]
fn off_ec2_records_pass_unchanged_with_one_warning() {
    let fake = FakeKinesis::start();
    // Nothing listens there: IMDS is unreachable, as off EC2.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let ws = Workspace::new();
    let log = ws.file("app.log");
    let lines: Vec<String> = (0..200).map(|i| format!("{{\"n\":{i},\"msg\":\"line {i}\"}}\n")).collect();
    std::fs::write(&log, lines[..100].concat()).unwrap();
    ws.write_config(config(&ws, &fake, "off", 1, json!({ "ec2.metadataEndpoint": format!("http://{closed}") })));
    let mut agent = ws.spawn(false, &[]);
    let got = wait_records(&fake, "off", 100, 30);
    assert_eq!(got, lines[..100], "{}", tail(&agent.log(), 4000));
    // More records and more failed refreshes later: still one warning.
    std::thread::sleep(Duration::from_millis(2500));
    append_bytes(&log, lines[100..].concat().as_bytes());
    let got = wait_records(&fake, "off", 200, 30);
    assert_eq!(got, lines, "{}", tail(&agent.log(), 4000));
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    let text = agent.log();
    assert_eq!(count_occurrences(&text, "ADDEC2METADATA: no EC2 instance metadata from"), 1, "{}", tail(&text, 4000));
    assert!(text.contains(&format!("http://{closed}")), "the warning names the endpoint");
}

#[test]
fn a_slow_imds_holds_the_first_records_only_briefly() {
    let fake = FakeKinesis::start();
    let imds = Imds::start();
    imds.set(|s| s.delay = Duration::from_secs(30));
    let ws = Workspace::new();
    std::fs::write(ws.file("app.log"), "{\"a\":1}\n{\"a\":2}\n").unwrap();
    ws.write_config(config(&ws, &fake, "slow", 3600, json!({ "ec2.metadataEndpoint": imds.endpoint() })));
    let started = Instant::now();
    let mut agent = ws.spawn(false, &[]);
    let got = wait_records(&fake, "slow", 2, 30);
    let took = started.elapsed();
    assert_eq!(got, ["{\"a\":1}\n", "{\"a\":2}\n"], "{}", tail(&agent.log(), 4000));
    // At most the 3 s first wait, plus the batch age (1 s) and start-up.
    assert!(took < Duration::from_secs(8), "the first records waited {took:?}");
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn imds_disabled_by_the_environment_is_said_once() {
    // The harness sets AWS_EC2_METADATA_DISABLED=true; without `ec2.metadataEndpoint` that wins.
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    std::fs::write(ws.file("app.log"), "{\"a\":1}\n{\"a\":2}\n").unwrap();
    let mut cfg = config(&ws, &fake, "dis", 3600, json!({}));
    cfg.as_object_mut().unwrap().remove("ec2.metadataEndpoint");
    ws.write_config(cfg);
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert!(status.success(), "{}", tail(&log, 4000));
    assert_eq!(received(&fake, "dis"), ["{\"a\":1}\n", "{\"a\":2}\n"]);
    assert_eq!(count_occurrences(&log, "instance metadata is disabled (AWS_EC2_METADATA_DISABLED=true)"), 1, "{log}");
}

#[test]
fn the_standard_environment_variable_points_at_imds() {
    // No `ec2.metadataEndpoint`: the SDK's AWS_EC2_METADATA_SERVICE_ENDPOINT is used.
    let fake = FakeKinesis::start();
    let imds = Imds::start();
    let ws = Workspace::new();
    std::fs::write(ws.file("app.log"), "{\"a\":1}\n").unwrap();
    ws.write_config(config(&ws, &fake, "env", 3600, json!({})));
    let endpoint = imds.endpoint();
    let env = [("AWS_EC2_METADATA_DISABLED", "false"), ("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str())];
    let mut agent = AgentProcess::spawn_in(&ws.home, ws.args(true, &[]), &env);
    let status = agent.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", tail(&agent.log(), 4000));
    let got = received(&fake, "env");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0], expected("\"a\":1", "m5.large", &timestamp_of(&got[0])));
}
