//! The Prometheus listener during a real run against kinesalite: the counters match what the
//! stream received, per-file lag falls to 0, `/healthz` answers 200, and the listener stops with
//! the agent.

use crate::common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::json;

/// `GET path` over plain HTTP/1.1: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_what_the_stream_received() {
    let peer = Peer::start(PeerKind::Kinesalite);
    let client = kinesis_client(&peer.endpoint());
    let stream = unique_name("prom");
    bounded(30, "create stream", create_stream(&client, &stream, 2)).await;
    let ws = Workspace::new();
    let log = ws.file("app.log");
    write_lines(&log, 0..3_000, "P");
    let port = free_port();
    ws.write_config(json!({
        "kinesis.endpoint": peer.endpoint(),
        "prometheus.port": port,
        "flows": [{ "filePattern": ws.pattern("*.log"), "kinesisStream": stream,
                    "initialPosition": "START_OF_FILE", "maxBufferAgeMillis": 1000 }]
    }));
    let mut agent = ws.spawn(false, &[]);
    let got = wait_for_records(&client, &stream, 3_000, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 3_000);
    let received_bytes: usize = got.iter().map(|r| r.data.len()).sum();
    // The counters move right after the acknowledgement; give the scrape a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    let flow = format!("flow=\"kinesis:{stream}:{}\"", ws.pattern("*.log"));
    let labels = format!("{{{flow},destination=\"{stream}\"}}");
    assert_eq!(sample(&body, &format!("kinesis_agent_records_sent_total{labels}")), Some(3_000.0), "{body}");
    assert_eq!(sample(&body, &format!("kinesis_agent_bytes_sent_total{labels}")), Some(received_bytes as f64));
    assert_eq!(sample(&body, &format!("kinesis_agent_records_read_total{labels}")), Some(3_000.0));
    assert_eq!(sample(&body, &format!("kinesis_agent_record_send_errors_total{labels}")), Some(0.0));
    assert_eq!(sample(&body, &format!("kinesis_agent_files{labels}")), Some(1.0));
    let lag = format!("kinesis_agent_file_unread_bytes{{{flow},destination=\"{stream}\",path=\"{}\"}}", log.display());
    assert_eq!(sample(&body, &lag), Some(0.0), "{body}");
    assert!(sample(&body, "kinesis_agent_in_flight_bytes").is_some());
    assert!(sample(&body, "kinesis_agent_checkpoint_age_seconds").is_some_and(|a| a < 5.0), "{body}");
    assert!(body.contains("# TYPE kinesis_agent_records_sent_total counter"));
    let (status, body) = get(port, "/healthz");
    assert_eq!((status, body.trim()), (200, "ok: 1 flow(s)"));
    assert_eq!(get(port, "/nothing").0, 404);
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "the listener stops with the agent");
}
