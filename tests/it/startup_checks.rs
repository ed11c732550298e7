//! `--check-config --check-destinations` against real emulators: an existing stream is ACTIVE
//! with its shards and the credentials' identity is shown (moto, also STS); a missing stream and a
//! wrong region are one clear error each, naming the flow, stream, region and keys, with exit
//! code 2 (moto and kinesis-local). At a normal start the same check is logged once.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn config(ws: &Workspace, peer: &Peer, stream: &str, extra: Value) -> Value {
    let mut cfg = json!({
        "kinesis.endpoint": peer.endpoint(),
        "kinesis.region": TEST_REGION,
        "flows": [{ "filePattern": ws.pattern("*.log"), "kinesisStream": stream }]
    });
    for (k, v) in extra.as_object().expect("object") {
        cfg[k] = v.clone();
    }
    cfg
}

/// Runs `--check-config --check-destinations`: (exit code, stdout, stderr).
fn check(ws: &Workspace) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(agent_bin())
        .args(["-c"])
        .arg(&ws.config)
        .args(["--config-dir"])
        .arg(&ws.config_dir)
        .args(["--check-config", "--check-destinations"])
        .envs(agent_env(&ws.home))
        .output()
        .expect("run the agent");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_existing_missing_and_wrong_region() {
    let moto = Peer::start(PeerKind::Moto);
    let client = kinesis_client(&moto.endpoint());
    let stream = unique_name("checked");
    bounded(30, "create stream", create_stream(&client, &stream, 3)).await;
    let ws = Workspace::new();

    // Existing: ACTIVE with its shards, and who the credentials are.
    ws.write_config(config(&ws, &moto, &stream, json!({ "sts.endpoint": moto.endpoint() })));
    let (code, out, err) = check(&ws);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!("ok: flows[0] (kinesis stream {stream} in us-east-1): ACTIVE, 3 open shard(s)")),
        "{out}"
    );
    assert!(out.contains("ok: credentials: arn:aws:"), "{out}");

    // Missing stream.
    let missing = unique_name("missing");
    ws.write_config(config(&ws, &moto, &missing, json!({})));
    let (code, out, err) = check(&ws);
    assert_eq!(code, Some(2), "stdout:\n{out}\nstderr:\n{err}");
    let line = err.lines().find(|l| l.contains(&missing)).unwrap_or_else(|| panic!("no line names the stream:\n{err}"));
    assert!(
        line.starts_with(&format!(
            "error: flows[0] (kinesis stream {missing} in us-east-1) does not exist in this region: check `kinesisStream` and `kinesis.region`"
        )),
        "{line}"
    );
    assert!(line.contains("ResourceNotFoundException"), "{line}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "one error:\n{err}");

    // Wrong region: the stream lives in us-east-1.
    ws.write_config(config(&ws, &moto, &stream, json!({ "kinesis.region": "eu-west-1" })));
    let (code, out, err) = check(&ws);
    assert_eq!(code, Some(2), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains(&format!("error: flows[0] (kinesis stream {stream} in eu-west-1) does not exist in this region")),
        "{err}"
    );

    // At a normal start, the problem is logged once, at once, without waiting for a line to send.
    ws.write_config(config(&ws, &moto, &missing, json!({})));
    let mut agent = ws.spawn(false, &[]);
    assert!(
        agent.wait_for_log("check at start: flows[0]", Duration::from_secs(15)),
        "log:\n{}",
        tail(&agent.log(), 3000)
    );
    let log = agent.log();
    let line = log.lines().find(|l| l.contains("check at start")).expect("a check line");
    assert!(line.contains("ERROR") && line.contains("does not exist in this region"), "{line}");
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_local_existing_and_missing() {
    let peer = Peer::start(PeerKind::KinesisLocal);
    let client = kinesis_client(&peer.endpoint());
    let stream = unique_name("checked");
    bounded(30, "create stream", create_stream(&client, &stream, 2)).await;
    let ws = Workspace::new();
    ws.write_config(config(&ws, &peer, &stream, json!({})));
    let (code, out, err) = check(&ws);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!("ok: flows[0] (kinesis stream {stream} in us-east-1): ACTIVE, 2 open shard(s)")),
        "{out}"
    );
    assert!(!out.contains("credentials:"), "no identity check against a local endpoint without sts.endpoint: {out}");

    let missing = unique_name("missing");
    ws.write_config(config(&ws, &peer, &missing, json!({})));
    let (code, _, err) = check(&ws);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("error: flows[0] (kinesis stream {missing} in us-east-1) does not exist in this region")),
        "{err}"
    );
}

/// With every flow's region in the configuration and static keys, a start asks nothing of the
/// instance metadata service (off EC2 it may never answer: each start waited for it). Without a
/// configured region the region chain does ask it, which shows the listener would see it.
#[test]
fn a_configured_region_keeps_the_start_off_instance_metadata() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fake = FakeKinesis::start();
    // A metadata endpoint that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let imds = format!("http://{}", listener.local_addr().unwrap());
    let asked = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    let ws = Workspace::new();
    write_lines(&ws.file("a.log"), 0..100, "R");
    let run = |region: Option<&str>| {
        let mut cfg = serde_json::json!({
            "kinesis.endpoint": fake.endpoint(),
            "awsAccessKeyId": "AKIASTATICKEY0000000", "awsSecretAccessKey": "static-secret-key",
            "flows": [{ "filePattern": ws.pattern("*.log"), "kinesisStream": "s", "initialPosition": "START_OF_FILE" }]
        });
        if let Some(r) = region {
            cfg["kinesis.region"] = r.into();
        }
        ws.write_config(cfg);
        std::process::Command::new(agent_bin())
            .args(ws.args(true, &["--no-progress"]))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &ws.home)
            .env("AWS_CONFIG_FILE", ws.home.join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", ws.home.join("none"))
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)
            .current_dir(&ws.home)
            .output()
            .unwrap()
    };
    let out = run(Some("eu-west-1"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(asked.load(Ordering::SeqCst), 0, "instance metadata was asked although the region is set");
    assert_eq!(fake.record_count(), 100);
    let out = run(None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(asked.load(Ordering::SeqCst) > 0, "the region chain did not ask instance metadata: the test sees nothing");
}
