//! End-to-end file-system races with the real binary and the fake endpoint: the bound on files
//! kept open after they left the pattern's reach, a watched directory that disappears and comes
//! back, symbolic links in the pattern, and a full disk under the checkpoint file.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn config(ws: &Workspace, fake: &FakeKinesis, pattern: &str, extra: Value) -> Value {
    let flow = json!({ "filePattern": ws.pattern(pattern), "kinesisStream": "races" });
    fake_kinesis_config(fake, with_keys(flow, &extra), 500, &json!({ "shutdownTimeoutMillis": 5000 }))
}

/// Waits (bounded) until `fake` holds at least `n` records; returns its lines.
fn wait_lines(fake: &FakeKinesis, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    while fake.record_count() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    split_lines(&fake.record_data())
}

fn open_paths(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).collect())
        .unwrap_or_default()
}

fn stop(agent: &mut AgentProcess) {
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "exit after SIGTERM; log:\n{}", tail(&agent.log(), 4000));
}

/// Six files leave the pattern's reach (renamed to `*.old`) while their writer still holds them:
/// with `maxOpenRotatedFiles: 2` only the two quiet the shortest stay open; the others are closed,
/// their unterminated last line sent. Lines written to an open one still arrive.
#[test]
fn only_max_open_rotated_files_stay_open() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    ws.write_config(config(&ws, &fake, "*.log", json!({ "rotateWaitMillis": 600000, "maxOpenRotatedFiles": 2 })));
    let names: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    for n in &names {
        write_lines(&ws.file(&format!("{n}.log")), 0..100, n);
        append_bytes(&ws.file(&format!("{n}.log")), format!("{n} unterminated").as_bytes());
    }
    let mut agent = ws.spawn(false, &[]);
    let got = wait_lines(&fake, 600, Duration::from_secs(15));
    assert_eq!(got.len(), 600, "agent log:\n{}", tail(&agent.log(), 4000));
    let old: Vec<PathBuf> = names.iter().map(|n| ws.file(&format!("{n}.old"))).collect();
    for (n, to) in names.iter().zip(&old) {
        std::fs::rename(ws.file(&format!("{n}.log")), to).expect("rotate");
        // Each read to its end at a different time: f5 is quiet the shortest.
        std::thread::sleep(Duration::from_millis(300));
    }
    // The four quiet the longest are closed, with their last line.
    let got = wait_lines(&fake, 604, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    let still_open = |pid| old.iter().filter(|p| open_paths(pid).contains(p)).cloned().collect::<Vec<_>>();
    while still_open(agent.pid()).len() > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(still_open(agent.pid()), old[4..].to_vec(), "agent log:\n{}", tail(&agent.log(), 4000));
    let closed_last: Vec<String> = (0..4).map(|i| format!("f{i} unterminated")).collect();
    let mut expected: Vec<String> = names.iter().flat_map(|n| expected_lines(0..100, n)).collect();
    expected.extend(closed_last);
    assert_exactly_once(expected.clone(), &got);
    // The open ones are still followed.
    write_lines(&old[5], 100..110, "late");
    let got = wait_lines(&fake, 605, Duration::from_secs(10));
    let late = got.iter().filter(|l| l.starts_with(b"f5 unterminatedlate")).count();
    assert_eq!(late, 1, "the open file's completed line arrived; agent log:\n{}", tail(&agent.log(), 4000));
    stop(&mut agent);
}

/// The pattern's directory is deleted with its files, then created again with new files: the new
/// files are found (and watched again) and read from the start.
#[test]
fn a_directory_that_disappears_and_comes_back() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let dir = ws.file("app");
    std::fs::create_dir(&dir).unwrap();
    ws.write_config(config(&ws, &fake, "app/*.log", json!({})));
    write_lines(&dir.join("a.log"), 0..200, "first");
    let mut agent = ws.spawn(false, &[]);
    assert_eq!(wait_lines(&fake, 200, Duration::from_secs(15)).len(), 200);
    std::fs::remove_dir_all(&dir).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::create_dir(&dir).unwrap();
    write_lines(&dir.join("a.log"), 0..150, "second");
    write_lines(&dir.join("b.log"), 0..50, "second-b");
    let got = wait_lines(&fake, 400, Duration::from_secs(15));
    let mut expected: Vec<String> = expected_lines(0..200, "first").collect();
    expected.extend(expected_lines(0..150, "second"));
    expected.extend(expected_lines(0..50, "second-b"));
    assert_exactly_once(expected.clone(), &got);
    // Appends after the comeback are seen too.
    write_lines(&dir.join("a.log"), 150..200, "second");
    expected.extend(expected_lines(150..200, "second"));
    let got = wait_lines(&fake, 450, Duration::from_secs(15));
    stop(&mut agent);
    assert_exactly_once(expected, &got);
}

/// Symbolic links: the pattern runs through a linked directory; a linked file that matches the
/// pattern as its target does is tailed once; a `current.log` link re-pointed to a new file each
/// rotation (the only name the pattern matches) is followed to every target, nothing lost.
#[test]
fn symbolic_links_in_the_pattern() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let real = ws.file("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, ws.file("linked")).unwrap();
    // Two flows: through the directory link; and the `current.log` link alone.
    let mut cfg = config(&ws, &fake, "linked/*.log", json!({}));
    let mut current = cfg["flows"][0].clone();
    current["filePattern"] = json!(ws.pattern("current.log"));
    current["kinesisStream"] = json!("current");
    cfg["flows"].as_array_mut().unwrap().push(current);
    ws.write_config(cfg);
    write_lines(&real.join("a.log"), 0..100, "a");
    std::os::unix::fs::symlink(real.join("a.log"), real.join("also-a.log")).unwrap();
    let day = |d: u32| ws.file(&format!("app-{d}.txt"));
    write_lines(&day(1), 0..50, "day1");
    std::os::unix::fs::symlink(day(1), ws.file("current.log")).unwrap();
    let mut agent = ws.spawn(false, &[]);
    assert_eq!(wait_lines(&fake, 150, Duration::from_secs(15)).len(), 150);
    let mut expected: Vec<String> = expected_lines(0..100, "a").collect();
    expected.extend(expected_lines(0..50, "day1"));
    for d in 2..5u32 {
        // The application writes its last lines to the old file, then the link moves on.
        write_lines(&day(d - 1), 50..60, &format!("day{}", d - 1));
        expected.extend(expected_lines(50..60, &format!("day{}", d - 1)));
        write_lines(&day(d), 0..50, &format!("day{d}"));
        expected.extend(expected_lines(0..50, &format!("day{d}")));
        let tmp = ws.file("current.log.tmp");
        std::os::unix::fs::symlink(day(d), &tmp).unwrap();
        std::fs::rename(&tmp, ws.file("current.log")).unwrap();
        std::thread::sleep(Duration::from_millis(700));
    }
    write_lines(&real.join("a.log"), 100..120, "a");
    expected.extend(expected_lines(100..120, "a"));
    let got = wait_lines(&fake, expected.len(), Duration::from_secs(20));
    stop(&mut agent);
    assert_exactly_once(expected, &got);
}

/// A small tmpfs mounted for the checkpoint file, unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// `None` when this test cannot mount (not root, or no mount permission in a container).
    fn mount(dir: &Path) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk { dir: dir.to_path_buf() })
    }

    /// Fill the disk with a file; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).and_then(|_| f.sync_all()).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The checkpoint file's disk fills up: delivery goes on, the agent says once that it cannot
/// write checkpoints and retries; once there is room again the checkpoint catches up and the
/// agent says so. Every line arrives exactly once.
#[test]
fn a_full_disk_under_the_checkpoint_file() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let Some(disk) = SmallDisk::mount(&ws.root.join("small")) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let mut cfg = config(&ws, &fake, "*.log", json!({}));
    cfg["checkpointFile"] = json!(disk.dir.join("checkpoints.json"));
    ws.write_config(cfg);
    let log = ws.file("app.log");
    write_lines(&log, 0..300, "L");
    let mut agent = ws.spawn(false, &[]);
    assert_eq!(wait_lines(&fake, 300, Duration::from_secs(15)).len(), 300);
    let cp = disk.dir.join("checkpoints.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_checkpoints(&cp).iter().all(|e| e.offset != file_len(&log)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let filler = disk.fill();
    write_lines(&log, 300..600, "L");
    assert_eq!(wait_lines(&fake, 600, Duration::from_secs(15)).len(), 600, "delivery goes on with the disk full");
    assert!(
        agent.wait_for_log("cannot write checkpoints", Duration::from_secs(10)),
        "the agent says it cannot write checkpoints; log:\n{}",
        tail(&agent.log(), 4000)
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(count_occurrences(&agent.log(), "cannot write checkpoints"), 1, "said once, not every second");
    std::fs::remove_file(filler).unwrap();
    assert!(
        agent.wait_for_log("checkpoints are being written again", Duration::from_secs(10)),
        "log:\n{}",
        tail(&agent.log(), 4000)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_checkpoints(&cp).iter().all(|e| e.offset != file_len(&log)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(read_checkpoints(&cp).iter().any(|e| e.offset == file_len(&log)), "the checkpoint caught up");
    stop(&mut agent);
    assert_exactly_once(expected_lines(0..600, "L"), &split_lines(&fake.record_data()));
}

/// The destination is down: the tailer stops reading (the files are the buffer) and, after
/// `stalledFileWarningMillis`, the file is named once in a warning; once the destination is
/// back, it is read again (said once) and every line arrives once.
#[test]
fn a_stalled_file_is_warned_about_once() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let mut cfg = config(
        &ws,
        &fake,
        "*.log",
        json!({ "stalledFileWarningMillis": 1000, "maxBufferSizeRecords": 50, "publishQueueCapacity": 1 }),
    );
    cfg["maxSendingThreads"] = json!(1);
    ws.write_config(cfg);
    let log = ws.file("big.log");
    write_lines(&log, 0..50_000, "S");
    fake.set_down(Some(DownMode::Refuse));
    let mut agent = ws.spawn(false, &[]);
    assert!(
        agent.wait_for_log("not read for 1 s although they have unread bytes", Duration::from_secs(15)),
        "log:\n{}",
        tail(&agent.log(), 4000)
    );
    assert!(agent.log().contains("big.log ("), "the warning names the file");
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(count_occurrences(&agent.log(), "although they have unread bytes"), 1, "said once");
    fake.set_down(None);
    assert!(
        agent.wait_for_log("big.log is being read again", Duration::from_secs(20)),
        "log:\n{}",
        tail(&agent.log(), 4000)
    );
    let got = wait_lines(&fake, 50_000, Duration::from_secs(60));
    stop(&mut agent);
    assert_exactly_once(expected_lines(0..50_000, "S"), &got);
}
