//! `kinesis-agent status`: after a `--once` run against the fake endpoint, files fully sent are
//! `shipped`, and files appended to, deleted or replaced since are not; it reads the checkpoint
//! file beside a running daemon (which holds the lock) without disturbing it; a missing, invalid
//! or unreadable input is said clearly.

use crate::common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `kinesis-agent args...` to its end (killed and panics after 30 s), optionally as `user`.
fn run(args: &[&str], user: Option<(u32, u32)>) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(agent_bin());
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).stdin(Stdio::null());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    let child = cmd.spawn().expect("spawn kinesis-agent");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.expect("wait for kinesis-agent"),
        Err(_) => {
            // SAFETY: our own child, not reaped yet (its waiter is still waiting).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("kinesis-agent {args:?} did not exit within 30 s");
        }
    };
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8 output");
    Output { code: out.status.code(), stdout: text(out.stdout), stderr: text(out.stderr) }
}

/// `status --json` in `ws`: the files by path.
fn status_json(ws: &Workspace) -> (Value, HashMap<String, Value>) {
    let config = ws.config.display().to_string();
    let out = run(&["status", "--json", "-c", &config, "--config-dir", &ws.config_dir.display().to_string()], None);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let files = doc["files"].as_array().expect("files").iter();
    let by_path = files.map(|f| (f["path"].as_str().expect("path").to_owned(), f.clone())).collect();
    (doc, by_path)
}

fn config(ws: &Workspace, fake: &FakeKinesis) -> Value {
    fake_kinesis_config(fake, json!({ "filePattern": ws.pattern("*.log"), "kinesisStream": "status" }), 200, &json!({}))
}

#[test]
fn status_tells_shipped_files_from_appended_deleted_and_replaced_ones() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(config(&ws, &fake));
    let names = ["shipped.log", "behind.log", "gone.log", "replaced.log"];
    for n in names {
        write_lines(&ws.file(n), 0..200, n);
    }
    let (status, log, _) = ws.run_once(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{log}");
    let sent = file_len(&ws.file("behind.log"));

    write_lines(&ws.file("behind.log"), 200..210, "behind.log");
    std::fs::remove_file(ws.file("gone.log")).unwrap();
    // Recreated: a new inode, or a reused one holding other bytes.
    std::fs::remove_file(ws.file("replaced.log")).unwrap();
    write_lines(&ws.file("replaced.log"), 0..300, "new");
    let checkpoints = std::fs::read(&ws.checkpoint_file).unwrap();

    let (doc, files) = status_json(&ws);
    assert_eq!(doc["checkpoint_file"], ws.checkpoint_file.display().to_string());
    let file = |n: &str| &files[&ws.file(n).display().to_string()];
    let shipped = file("shipped.log");
    assert_eq!(
        (&shipped["state"], &shipped["shipped"], &shipped["behind"]),
        (&json!("shipped"), &json!(true), &json!(0))
    );
    assert_eq!(shipped["size"], file_len(&ws.file("shipped.log")));
    assert_eq!(shipped["acknowledged"], shipped["size"]);
    assert!(shipped["flow"].as_str().unwrap().starts_with("kinesis:status:"), "{shipped}");
    assert!(shipped["updated_ms"].as_u64().unwrap() > 0, "{shipped}");
    let behind = file("behind.log");
    assert_eq!((&behind["state"], &behind["shipped"]), (&json!("behind"), &json!(false)));
    assert_eq!(behind["acknowledged"], sent);
    assert_eq!(behind["behind"], file_len(&ws.file("behind.log")) - sent);
    for (n, state) in [("gone.log", "gone"), ("replaced.log", "replaced")] {
        assert_eq!((&file(n)["state"], &file(n)["shipped"]), (&json!(state), &json!(false)), "{}", file(n));
        assert_eq!(file(n)["behind"], Value::Null);
    }
    assert_eq!(doc["summary"]["files"], 4);
    assert_eq!(doc["summary"]["shipped"], 1);

    // The table, with `-c` before the command this time.
    let (config, dir) = (ws.config.display().to_string(), ws.config_dir.display().to_string());
    let out = run(&["-c", &config, "--config-dir", &dir, "status"], None);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let line = |n: &str| {
        let path = ws.file(n).display().to_string();
        out.stdout.lines().find(|l| l.trim_start().starts_with(&format!("{path} "))).map(str::to_owned)
    };
    assert!(line("shipped.log").is_some_and(|l| l.ends_with(" shipped")), "{}", out.stdout);
    assert!(line("behind.log").is_some_and(|l| l.ends_with(" behind")), "{}", out.stdout);
    assert!(line("gone.log").is_some_and(|l| l.ends_with(" gone")), "{}", out.stdout);
    assert!(line("replaced.log").is_some_and(|l| l.contains(" replaced: ")), "{}", out.stdout);
    let extra = file_len(&ws.file("behind.log")) - sent;
    let summary = format!("4 file(s): 1 shipped, 1 behind ({extra} bytes), 1 replaced, 1 gone");
    assert!(out.stdout.ends_with(&format!("{summary}\n")), "{}", out.stdout);

    // Read only.
    assert_eq!(std::fs::read(&ws.checkpoint_file).unwrap(), checkpoints);
    // The daemon's flags still reject a mix.
    let out = run(&["--once", "status", "-c", &config], None);
    assert_eq!(out.code, Some(2), "{}", out.stderr);

    // A configuration broken elsewhere (no flows left) still names the checkpoint file.
    ws.write_config(json!({ "flows": [] }));
    let out = run(&["status", "-c", &config, "--config-dir", &dir], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("the configuration has 1 problem(s)"), "{}", out.stderr);
    assert!(out.stdout.ends_with(&format!("{summary}\n")), "{}", out.stdout);
}

/// The daemon holds the checkpoint directory's lock; `status` does not need it, and the daemon
/// goes on checkpointing.
#[test]
fn status_runs_beside_a_daemon_holding_the_lock() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(config(&ws, &fake));
    let f = ws.file("app.log");
    write_lines(&f, 0..300, "a");
    let mut agent = ws.spawn(false, &[]);
    assert_eq!(ws.wait_checkpoint(&f, file_len(&f), TIMEOUT), Some(file_len(&f)), "{}", agent.log());
    let (_, files) = status_json(&ws);
    assert_eq!(files[&f.display().to_string()]["state"], "shipped", "{files:?}");
    // The premise: the lock is held (another agent is refused).
    let (status, log, _) = ws.run_once(TIMEOUT);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("already uses the checkpoint file"), "{log}");

    write_lines(&f, 300..400, "a");
    assert_eq!(ws.wait_checkpoint(&f, file_len(&f), TIMEOUT), Some(file_len(&f)), "{}", agent.log());
    let (_, files) = status_json(&ws);
    assert_eq!(files[&f.display().to_string()]["acknowledged"], file_len(&f), "{files:?}");
    assert!(agent.is_running(), "{}", agent.log());
    agent.sigterm();
    assert_eq!(agent.wait_exit(TIMEOUT).code(), Some(0), "{}", agent.log());
}

#[test]
fn a_missing_or_invalid_checkpoint_file_is_said_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("checkpoints.json");
    let cp_str = cp.display().to_string();
    let out = run(&["status", "--checkpoint-file", &cp_str], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, format!("no checkpoints yet at {cp_str}\n"));
    let out = run(&["status", "--checkpoint-file", &cp_str, "--json"], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["files"], json!([]));
    assert!(out.stderr.contains("no checkpoints yet"), "{}", out.stderr);

    std::fs::write(&cp, "{ not json").unwrap();
    let out = run(&["status", "--checkpoint-file", &cp_str], None);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stderr.contains(&cp_str) && out.stderr.contains("not valid"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing written beside it");
}

/// A file under a directory the user cannot read is `unreadable`, with the OS error. Root reads
/// anything, so as root `status` runs as nobody.
#[test]
fn a_file_the_user_cannot_reach_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let private = root.join("private");
    std::fs::create_dir(&private).unwrap();
    let f = private.join("app.log");
    write_lines(&f, 0..10, "a");
    let (dev, ino) = file_id(&f);
    let cp = root.join("checkpoints.json");
    let entry = json!({ "flow": "kinesis:s:*", "path": f, "dev": dev, "ino": ino, "offset": 5, "updated_ms": 1 });
    std::fs::write(&cp, json!({ "version": 1, "checkpoints": [entry] }).to_string()).unwrap();
    // SAFETY: plain getter syscall.
    let user = (unsafe { libc::geteuid() } == 0).then_some((65534, 65534));
    let chmod = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    chmod(root, 0o755);
    chmod(&cp, 0o644);
    chmod(&private, if user.is_some() { 0o700 } else { 0o000 });

    let out = run(&["status", "--json", "--checkpoint-file", &cp.display().to_string()], user);
    chmod(&private, 0o755);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let file = &doc["files"][0];
    assert_eq!((&file["state"], &file["shipped"]), (&json!("unreadable"), &json!(false)), "{file}");
    assert!(file["detail"].as_str().unwrap().contains("Permission denied"), "{file}");
}
