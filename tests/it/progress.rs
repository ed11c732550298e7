//! `--once` progress: plain log lines without a terminal, bars on one (a pseudo-terminal made
//! by `script`), nothing with `--no-progress`. The fake endpoint answers slowly so the run lasts
//! a few seconds.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const LINES: u64 = 20_000;

/// A workspace with one file of `LINES` lines and a flow to the fake, in 100-record requests.
fn setup(fake: &FakeKinesis) -> (Workspace, std::path::PathBuf) {
    let ws = Workspace::new();
    let f = ws.file("big.log");
    write_lines(&f, 0..LINES, "G");
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": TEST_REGION,
        "maxSendingThreads": 1,
        "flows": [{
            "filePattern": ws.pattern("big.log"),
            "kinesisStream": unique_name("progress"),
            "maxBufferSizeRecords": 100
        }]
    }));
    // 200 requests of 15 ms: about 3 s.
    fake.set_delay(Duration::from_millis(15));
    (ws, f)
}

#[test]
fn without_a_terminal_progress_is_logged_as_lines() {
    let fake = FakeKinesis::start();
    let (ws, f) = setup(&fake);
    let mut agent = ws.spawn(true, &["--progress-every", "1s"]);
    let status = agent.wait_exit(Duration::from_secs(60));
    let log = agent.log();
    assert_eq!(status.code(), Some(0), "log:\n{}", tail(&log, 8192));
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" delivered (") && l.contains("records sent")).collect();
    assert!(lines.len() >= 2, "progress lines every second of a 3 s run; log:\n{}", tail(&log, 8192));
    let of = format!(" of {:.1} MiB delivered", file_len(&f) as f64 / (1 << 20) as f64);
    assert!(lines.iter().all(|l| l.contains("flows[0]") && l.contains(&of)), "{of}: {lines:#?}");
    // The shares grow with what was sent: the first line is not already near the end.
    let shares: Vec<u64> = lines
        .iter()
        .map(|l| l.split(" delivered (").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(shares.windows(2).all(|w| w[0] <= w[1]), "{shares:?}");
    assert!(shares[0] < 70, "{shares:?}: progress must follow delivery, not reading");
    eprintln!("{} progress lines, e.g. {}", lines.len(), lines[0]);
    assert_eq!(fake.record_count(), LINES as usize);

    // --no-progress: none.
    let (ws, _) = setup(&fake);
    let mut agent = ws.spawn(true, &["--progress-every", "1s", "--no-progress"]);
    assert_eq!(agent.wait_exit(Duration::from_secs(60)).code(), Some(0));
    assert!(!agent.log().lines().any(|l| l.contains(" delivered (")), "{}", agent.log());
}

#[test]
fn on_a_terminal_bars_are_drawn() {
    let fake = FakeKinesis::start();
    let (ws, _) = setup(&fake);
    let mut cmd = vec![agent_bin().display().to_string()];
    cmd.extend(ws.args(true, &[]));
    // `script` runs the agent on a pseudo-terminal and copies what it draws to its output.
    let mut child = Command::new("script")
        .args(["-qefc", &cmd.join(" "), "/dev/null"])
        .env_clear()
        .envs(agent_env(&ws.home))
        .env("TERM", "xterm")
        .current_dir(&ws.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let started = Instant::now();
    let out = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            break (status, String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("--once on a terminal did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (status, screen) = out;
    assert_eq!(status.code(), Some(0), "screen:\n{}", tail(&screen, 8192));
    assert!(screen.contains("flows[0] progress-"), "no bar prefix; screen:\n{}", tail(&screen, 8192));
    assert!(screen.contains("[=") && screen.contains("records sent"), "no bar; screen:\n{}", tail(&screen, 8192));
    assert!(screen.contains(&format!("{LINES} records sent")), "the final bar shows every record sent");
    // Log lines still get through, whole.
    assert!(screen.contains("record(s) read,"), "summary missing; screen:\n{}", tail(&screen, 8192));
    assert_eq!(fake.record_count(), LINES as usize);
}
