//! HTTP proxies from the environment, through a real proxy (Debian's tinyproxy, started here on
//! 127.0.0.1 with basic authentication) to kinesalite: every line arrives and the proxy's log shows
//! the requests; `NO_PROXY` bypasses it; the instance metadata service is never proxied; the
//! proxy's password never appears in the agent's output, at any log level, nor in
//! `--check-config`; a proxy that is down is one clear error per flow, and nothing is lost once
//! it is back.

use crate::common;
use crate::ec2_metadata::Imds;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const USER: &str = "shipper";
const PASSWORD: &str = "s3cr3t-Pr0xy-pw";

/// tinyproxy, installed with apt-get when missing (`scripts/test` installs it beforehand).
fn tinyproxy_bin() -> Option<PathBuf> {
    let found = || ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"].map(PathBuf::from).into_iter().find(|p| p.exists());
    if let Some(p) = found() {
        return Some(p);
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root {
        return None;
    }
    let install = "flock /tmp/kinesis-agent-tinyproxy.lock sh -c 'command -v tinyproxy >/dev/null || \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q tinyproxy >/dev/null 2>&1 || \
        (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q tinyproxy >/dev/null)'";
    let _ = Command::new("timeout").args(["600", "sh", "-c", install]).status();
    found()
}

struct Tinyproxy {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Tinyproxy {
    fn start(bin: &Path, dir: &Path, port: u16) -> Tinyproxy {
        let log = dir.join(format!("tinyproxy-{port}.log"));
        let conf = dir.join(format!("tinyproxy-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\nMaxClients 100\n\
                 Allow 127.0.0.1\nBasicAuth {USER} {PASSWORD}\nDisableViaHeader Yes\n",
                log.display()
            ),
        )
        .unwrap();
        // Run as root it would switch to `nobody`: let that user write the log.
        std::fs::write(&log, "").unwrap();
        let _ = Command::new("chmod").args(["0777", &dir.display().to_string()]).status();
        let _ = Command::new("chmod").args(["0666", &log.display().to_string()]).status();
        let child = Command::new(bin)
            .args(["-d", "-c", &conf.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tinyproxy");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tinyproxy { child, log, port }
    }

    fn url(&self) -> String {
        format!("http://{USER}:{PASSWORD}@127.0.0.1:{}", self.port)
    }

    /// The requests it forwarded to `port` (its log's "Request" lines).
    fn requests_to(&self, port: u16) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter(|l| l.contains("Request") && l.contains(&format!("127.0.0.1:{port}"))).count()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn kinesalite_stream(name: &str) -> (Peer, aws_sdk_kinesis::Client, tokio::runtime::Runtime) {
    let peer = Peer::start(PeerKind::Kinesalite);
    let client = kinesis_client(&peer.endpoint());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(create_stream(&client, name, 1));
    (peer, client, rt)
}

fn assert_no_secret(text: &str) {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    for secret in [PASSWORD, &basic] {
        assert!(!text.contains(secret), "the proxy's credentials appear in the output:\n{}", tail(text, 3000));
    }
}

/// Through the proxy, with its credentials in `HTTP_PROXY`: every line arrives, the proxy saw the
/// requests, the instance metadata service was reached directly, and nothing shows the password,
/// not even at the trace level. `--check-config` names the proxy, credentials masked.
#[test]
fn lines_go_through_the_proxy_and_its_password_is_never_shown() {
    let Some(bin) = tinyproxy_bin() else {
        skip_without("tinyproxy (installed by scripts/test as root)");
        return;
    };
    let (peer, client, rt) = kinesalite_stream("proxied");
    rt.block_on(create_stream(&client, "enriched", 1));
    let imds = Imds::start();
    let ws = Workspace::new();
    let proxy = Tinyproxy::start(&bin, &ws.home, free_port());
    write_lines(&ws.file("a.log"), 0..2_000, "P");
    std::fs::write(ws.file("b.json"), "{\"n\":1}\n{\"n\":2}\n").unwrap();
    ws.write_config(json!({
        "kinesis.endpoint": peer.endpoint(), "kinesis.region": TEST_REGION,
        "ec2.metadataEndpoint": imds.endpoint(),
        "flows": [
            { "filePattern": ws.pattern("*.log"), "kinesisStream": "proxied", "initialPosition": "START_OF_FILE" },
            { "filePattern": ws.pattern("*.json"), "kinesisStream": "enriched", "initialPosition": "START_OF_FILE",
              "dataProcessingOptions": [{ "optionName": "ADDEC2METADATA" }] }
        ]
    }));
    let url = proxy.url();
    let mut agent = AgentProcess::spawn_in(&ws.home, ws.args(true, &["-L", "trace"]), &[("HTTP_PROXY", &url)]);
    let status = agent.wait_exit(Duration::from_secs(120));
    let log = agent.log();
    assert_eq!(status.code(), Some(0), "{}", tail(&log, 4000));
    let got = rt.block_on(read_all(&client, "proxied"));
    assert_exactly_once(expected_lines(0..2_000, "P"), &data_of(&got));
    let kinesalite_port = peer.port();
    assert!(
        proxy.requests_to(kinesalite_port) >= 2,
        "the proxy forwarded nothing:\n{}",
        std::fs::read_to_string(&proxy.log).unwrap()
    );
    // ADDEC2METADATA read the (test) instance metadata service, and not through the proxy.
    let enriched = rt.block_on(read_all(&client, "enriched"));
    assert_eq!(enriched.len(), 2);
    assert!(enriched.iter().all(|r| String::from_utf8_lossy(&r.data).contains("\"instanceId\"")), "{enriched:?}");
    assert!(imds.counts().1 > 0);
    let imds_port: u16 = imds.endpoint().rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
    assert_eq!(proxy.requests_to(imds_port), 0, "instance metadata went through the proxy");
    assert_no_secret(&log);

    let check = Command::new(agent_bin())
        .args(ws.args(true, &[]).iter().filter(|a| *a != "--once"))
        .arg("--check-config")
        .env("HTTP_PROXY", proxy.url())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);
    assert!(out.contains(&format!("HTTP: proxy http://127.0.0.1:{} (with credentials)", proxy.port)), "{out}");
    assert_no_secret(&out);
}

/// `NO_PROXY` naming the destination bypasses the proxy.
#[test]
fn no_proxy_bypasses_the_proxy() {
    let Some(bin) = tinyproxy_bin() else {
        skip_without("tinyproxy (installed by scripts/test as root)");
        return;
    };
    let (peer, client, rt) = kinesalite_stream("direct");
    let ws = Workspace::new();
    let proxy = Tinyproxy::start(&bin, &ws.home, free_port());
    write_lines(&ws.file("a.log"), 0..1_000, "D");
    ws.write_config(json!({
        "kinesis.endpoint": peer.endpoint(), "kinesis.region": TEST_REGION,
        "flows": [{ "filePattern": ws.pattern("*.log"), "kinesisStream": "direct", "initialPosition": "START_OF_FILE" }]
    }));
    let url = proxy.url();
    let env = [("HTTPS_PROXY", url.as_str()), ("http_proxy", url.as_str()), ("no_proxy", "localhost,127.0.0.1")];
    let mut agent = AgentProcess::spawn_in(&ws.home, ws.args(true, &[]), &env);
    let status = agent.wait_exit(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{}", tail(&agent.log(), 4000));
    assert_exactly_once(expected_lines(0..1_000, "D"), &data_of(&rt.block_on(read_all(&client, "direct"))));
    assert_eq!(proxy.requests_to(peer.port()), 0, "NO_PROXY was not honoured");
}

/// A proxy that is down: one error per flow (not one per request), nothing lost once it is up.
#[test]
fn a_proxy_that_is_down_is_one_error_per_flow_and_loses_nothing() {
    let Some(bin) = tinyproxy_bin() else {
        skip_without("tinyproxy (installed by scripts/test as root)");
        return;
    };
    let (peer, client, rt) = kinesalite_stream("later");
    rt.block_on(create_stream(&client, "later2", 1));
    let ws = Workspace::new();
    let port = free_port();
    write_lines(&ws.file("a.log"), 0..500, "A");
    write_lines(&ws.file("b.txt"), 0..500, "B");
    ws.write_config(json!({
        "kinesis.endpoint": peer.endpoint(), "kinesis.region": TEST_REGION,
        "flows": [
            { "filePattern": ws.pattern("*.log"), "kinesisStream": "later", "initialPosition": "START_OF_FILE",
              "maxBufferAgeMillis": 1000, "retryInitialBackoffMillis": 100, "retryMaxBackoffMillis": 1000 },
            { "filePattern": ws.pattern("*.txt"), "kinesisStream": "later2", "initialPosition": "START_OF_FILE",
              "maxBufferAgeMillis": 1000, "retryInitialBackoffMillis": 100, "retryMaxBackoffMillis": 1000 }
        ]
    }));
    let url = format!("http://{USER}:{PASSWORD}@127.0.0.1:{port}");
    let mut agent = AgentProcess::spawn_in(&ws.home, ws.args(false, &[]), &[("HTTP_PROXY", &url)]);
    for stream in ["later", "later2"] {
        let needle = format!("(kinesis stream {stream} in {TEST_REGION}): ");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent.log().lines().any(|l| l.contains(&needle) && l.contains("retrying")) {
            assert!(Instant::now() < deadline, "no error for {stream}:\n{}", tail(&agent.log(), 4000));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let log = agent.log();
    for stream in ["later", "later2"] {
        let needle = format!("(kinesis stream {stream} in {TEST_REGION}): ");
        let errors = log.lines().filter(|l| l.contains(&needle) && (l.contains("WARN") || l.contains("ERROR"))).count();
        assert_eq!(errors, 1, "one error line per flow:\n{}", tail(&log, 4000));
    }
    let proxy = Tinyproxy::start(&bin, &ws.home, port);
    let a = rt.block_on(wait_for_records(&client, "later", 500, Duration::from_secs(60)));
    let b = rt.block_on(wait_for_records(&client, "later2", 500, Duration::from_secs(60)));
    assert_exactly_once(expected_lines(0..500, "A"), &data_of(&a));
    assert_exactly_once(expected_lines(0..500, "B"), &data_of(&b));
    assert!(proxy.requests_to(peer.port()) > 0);
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(30));
    assert_no_secret(&agent.log());
}
