//! The .deb under the systemd that runs it: a Debian bookworm container (`scripts/nspawn-root`
//! builds its root once, cached under `target/nspawn/`) booted with `systemd-nspawn` on a fresh
//! overlay of it (or a copy), sharing the host's network so that the agent inside reaches the
//! test's kinesalite on 127.0.0.1. Inside it, through `nsenter`, as a new user would:
//! - `dpkg -i` says no adduser warning and how to add a flow; the unit is enabled, not started,
//!   and the system is `running`, not `degraded`, after the install and after a reboot with the
//!   shipped agent.json (no flows: the daemon waits, with that in its status, pinging the watchdog);
//! - a flow added and `systemctl reload`: it starts in the same process; every line arrives;
//! - a broken agent.json and `systemctl reload`: the status says the reload was refused and why,
//!   the unit stays active and lines still flow; a good reload is said as such;
//! - `systemctl restart`: `Type=notify`, active only once the new process said READY, and
//!   watchdog pings (a drop-in sets `WatchdogSec=4`) keep it alive well past `WatchdogSec`;
//! - `systemctl stop`: exit 0 within the time limit, no SIGKILL;
//! - lines written while stopped, while powered off and after a reboot: all of them arrive, each
//!   line exactly once over the whole test (the checkpoint survives the reboot);
//! - `systemd-analyze security`: overall exposure at most 1.5.
//!
//! Needs root, debootstrap and systemd-nspawn (`scripts/nspawn-root` installs both with apt-get);
//! skipped with a message otherwise, except under `scripts/test` (`REQUIRE_TEST_TOOLS`), where
//! that fails the test. Every wait is bounded, and the container is killed and its fresh root
//! removed however the test ends.

use crate::common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const UNIT: &str = "kinesis-agent.service";
/// The watchdog interval the test's drop-in sets (the unit ships 60 s: too long to wait for).
const WATCHDOG_SECS: u64 = 4;
/// The lines go to this file of the container, tailed by the flow `/var/log/app/*.log`.
const APP_LOG: &str = "var/log/app/app.log";
const PREFIX: &str = "boot";

/// What a command inside the container said.
struct Said {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Said {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    fn text(&self) -> String {
        format!("{}{}", self.out, self.err)
    }
}

impl std::fmt::Debug for Said {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.out, self.err)
    }
}

/// A booted fresh root. Dropping it kills the container and removes the root's overlay or copy.
struct Container {
    name: String,
    /// The container's `/`, as seen from the host.
    root: PathBuf,
    /// systemd-nspawn's output (the container's console).
    console: PathBuf,
    nspawn: Option<Child>,
    /// The container's PID 1, as seen from the host.
    leader: u32,
}

/// Where the fresh roots go (not under `target/nspawn/`, whose old roots `scripts/nspawn-root` prunes).
fn runs_dir() -> PathBuf {
    repo_dir().join("target/nspawn-runs")
}

impl Container {
    /// A fresh root over `cached`: an overlay (the cached root its read-only lower layer, the
    /// changes in an upper directory of its own), or a copy where overlayfs cannot be mounted.
    /// What test processes that no longer exist left behind goes first.
    fn fresh(cached: &Path) -> Container {
        let runs = runs_dir();
        std::fs::create_dir_all(&runs).unwrap();
        for e in std::fs::read_dir(&runs).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').nth(2).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                remove_run(&e.path());
            }
        }
        let name = unique_name("ka-boot");
        let name = name.rsplit_once('-').map_or(name.clone(), |(head, _)| head.to_string());
        let dir = runs.join(&name);
        let (root, upper, work) = (dir.join("root"), dir.join("upper"), dir.join("work"));
        for d in [&root, &upper, &work] {
            std::fs::create_dir_all(d).unwrap();
        }
        let started = Instant::now();
        let options = format!("lowerdir={},upperdir={},workdir={}", cached.display(), upper.display(), work.display());
        let overlay = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&root)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !overlay {
            let out = Command::new("timeout")
                .args(["120", "cp", "-a", "--reflink=auto", "-T"])
                .arg(cached)
                .arg(&root)
                .output()
                .unwrap();
            assert!(out.status.success(), "copying {}: {}", cached.display(), String::from_utf8_lossy(&out.stderr));
        }
        let how = if overlay { "overlay mounted" } else { "copied" };
        eprintln!("systemd_boot: root {how} in {:?}", started.elapsed());
        Container { name, root, console: dir.join("console.log"), nspawn: None, leader: 0 }
    }

    /// A path of the container, from the host.
    fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// Boots it, waits until systemd has finished starting up (`is-system-running --wait`) and
    /// returns that state: `running`, or `degraded` when a unit failed.
    fn boot(&mut self) -> Result<String, String> {
        assert!(self.nspawn.is_none(), "already booted");
        let started = Instant::now();
        let console = std::fs::OpenOptions::new().create(true).append(true).open(&self.console).unwrap();
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg("-D")
            .arg(&self.root)
            .args(["-M", &self.name, "-b", "--register=no", "--keep-unit", "--console=passive"])
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .process_group(0);
        // If the test process dies, nspawn is told to stop the container (SIGTERM: a poweroff).
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("systemd-nspawn: {e}"))?;
        let nspawn_pid = child.id();
        self.nspawn = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        self.leader = loop {
            if let Some(status) = self.nspawn.as_mut().unwrap().try_wait().unwrap() {
                self.nspawn = None;
                return Err(format!("systemd-nspawn exited with {status}:\n{}", self.console_tail()));
            }
            if let Some(pid) = leader_of(nspawn_pid) {
                break pid;
            }
            if Instant::now() > deadline {
                return Err(format!("no systemd in the container after 30 s:\n{}", self.console_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The manager answers once it has set up its socket; then --wait waits for the boot.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let said = self.exec(&["systemctl", "is-system-running", "--wait"], 60);
            let state = said.out.trim().to_string();
            if ["running", "degraded", "maintenance", "stopping"].contains(&state.as_str()) {
                eprintln!("systemd_boot: booted ({state}) in {:?}", started.elapsed());
                return Ok(state);
            }
            if Instant::now() > deadline {
                return Err(format!("is-system-running: {said:?}\nconsole:\n{}", self.console_tail()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `args` inside (all of PID 1's namespaces, a clean environment), bounded by `secs`.
    fn exec(&self, args: &[&str], secs: u64) -> Said {
        assert!(self.leader != 0, "not booted");
        let out = Command::new("timeout")
            .args(["-k", "5", &(secs + 10).to_string(), "nsenter", "--target", &self.leader.to_string(), "--all", "--"])
            .args(["/usr/bin/timeout", "-k", "3", &secs.to_string(), "/usr/bin/env", "-i"])
            .args(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"])
            .args(["SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "DEBIAN_FRONTEND=noninteractive"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter: {e}"));
        Said {
            code: out.status.code(),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `exec` that must succeed; its stdout.
    fn must(&self, args: &[&str]) -> String {
        let said = self.exec(args, 60);
        assert!(said.ok(), "{args:?} in the container: {said:?}");
        said.out
    }

    /// One property of the agent's unit (`systemctl show -p NAME --value`).
    fn show(&self, property: &str) -> String {
        self.must(&["systemctl", "show", "-p", property, "--value", UNIT]).trim().to_string()
    }

    /// The system's state (`is-system-running`), with the failed units and the journal when it
    /// is not `running`.
    fn system_state(&self) -> String {
        self.exec(&["systemctl", "is-system-running"], 30).out.trim().to_string()
    }

    fn diagnose(&self) -> String {
        let failed = self.exec(&["systemctl", "--failed", "--no-legend"], 30).text();
        let status = self.exec(&["systemctl", "status", "--no-pager", "-n", "0", UNIT], 30).text();
        let journal = self.exec(&["journalctl", "-b", "--no-pager", "-n", "80"], 30).text();
        format!("failed units:\n{failed}\n{status}\njournal:\n{journal}")
    }

    /// `systemctl poweroff`, then waits (bounded) for systemd-nspawn to exit.
    fn poweroff(&mut self) {
        let started = Instant::now();
        let _ = self.exec(&["systemctl", "poweroff"], 30);
        let deadline = Instant::now() + Duration::from_secs(60);
        let child = self.nspawn.as_mut().expect("booted");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "systemd-nspawn after poweroff: {status}\n{}", self.console_tail());
                break;
            }
            assert!(Instant::now() < deadline, "the container did not power off in 60 s:\n{}", self.console_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.nspawn = None;
        self.leader = 0;
        eprintln!("systemd_boot: powered off in {:?}", started.elapsed());
    }

    fn console_tail(&self) -> String {
        tail(&String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()), 4000).to_string()
    }

    /// Kills the container (its PID 1 first: the kernel then ends everything in it), bounded.
    fn kill(&mut self) {
        if let Some(mut child) = self.nspawn.take() {
            if self.leader != 0 {
                // SAFETY: plain kill(2) of the container's PID 1, which nspawn still waits for.
                unsafe { libc::kill(self.leader as i32, libc::SIGKILL) };
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.leader = 0;
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if self.leader != 0 {
                eprintln!("--- container state\n{}", self.diagnose());
            }
            eprintln!("--- container console\n{}", self.console_tail());
        }
        self.kill();
        if let Some(dir) = self.root.parent() {
            remove_run(dir);
        }
        // nspawn leaves an empty directory behind where /run is not a tmpfs.
        let _ = std::fs::remove_dir(format!("/run/systemd/nspawn/propagate/{}", self.name));
    }
}

/// Removes a run's directory, its overlay unmounted first (lazily if busy; what is removed through
/// a still mounted overlay only ever changes its upper layer, never the cached root).
fn remove_run(dir: &Path) {
    let root = dir.join("root");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(&*root.to_string_lossy())));
    if mounted {
        let quiet = |args: &[&str]| Command::new("umount").args(args).arg(&root).stderr(Stdio::null()).status();
        if !quiet(&[]).is_ok_and(|s| s.success()) {
            let _ = quiet(&["-l"]);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The child of `nspawn` that is PID 1 of its own PID namespace and runs systemd.
fn leader_of(nspawn: u32) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("");
        let nspid: Vec<&str> = field("NSpid:").split_whitespace().collect();
        if field("PPid:") == nspawn.to_string()
            && nspid.len() > 1
            && nspid.last() == Some(&"1")
            && field("Name:") == "systemd"
        {
            return Some(pid);
        }
    }
    None
}

/// The cached root (`scripts/nspawn-root`: built here when scripts/test has not started it, or
/// waited for when it has). `None`: skipped (not root, or no way to build it).
fn cached_root() -> Option<PathBuf> {
    if !is_root() {
        skip_without("root (to boot a Debian container with systemd-nspawn)");
        return None;
    }
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["1200", &repo_dir().join("scripts/nspawn-root").display().to_string()])
        .current_dir(repo_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        skip_without(&format!(
            "a Debian root file system for systemd-nspawn (scripts/nspawn-root exited with {}: {})",
            out.status,
            said.trim()
        ));
        return None;
    }
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim());
    assert!(root.join("usr/lib/systemd/systemd").exists(), "scripts/nspawn-root printed {}", root.display());
    eprintln!("systemd_boot: root {} ready after {:?} {}", root.display(), started.elapsed(), said.trim());
    Some(root)
}

/// Polls `what` (bounded) until `ok` holds for its value; returns that value.
fn wait_until(secs: u64, what: &str, mut get: impl FnMut() -> String, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = get();
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: still {v:?} after {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until the stream holds at least `n` lines; returns their numbers.
fn wait_for_lines(rt: &tokio::runtime::Runtime, client: &aws_sdk_kinesis::Client, stream: &str, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = parse_line_numbers(&data_of(&rt.block_on(read_all(client, stream))));
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A monotonic timestamp property in µs (`…TimestampMonotonic`; 0 when never).
fn micros(c: &Container, property: &str) -> u64 {
    let v = c.show(property);
    v.parse().unwrap_or_else(|_| panic!("{property}={v:?}"))
}

#[test]
fn the_deb_under_a_booted_systemd_installs_ships_reloads_stops_and_resumes_after_reboot() {
    let Some(cached) = cached_root() else { return };
    let test_started = Instant::now();
    let peer = Peer::start(PeerKind::Kinesalite);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = {
        let _in = rt.enter();
        kinesis_client(&peer.endpoint())
    };
    let stream = unique_name("boot");
    rt.block_on(bounded(30, "create stream", create_stream(&client, &stream, 1)));
    let kept = tempfile::tempdir().unwrap();
    let deb = build_deb(kept.path());

    let mut c = Container::fresh(&cached);
    std::fs::copy(&deb, c.path("/root/kinesis-agent.deb")).unwrap();
    // A persistent journal, to read the previous boot's after a reboot.
    std::fs::create_dir_all(c.path("/var/log/journal")).unwrap();
    match c.boot() {
        Ok(state) => assert_eq!(state, "running", "before the install:\n{}", c.diagnose()),
        Err(e) => {
            skip_without(&format!("a machine that can boot a container with systemd-nspawn ({e})"));
            return;
        }
    }

    // --- The install, as a new user does it.
    let install = c.exec(&["dpkg", "-i", "/root/kinesis-agent.deb"], 120);
    assert!(install.ok(), "dpkg -i: {install:?}");
    let said = install.text();
    assert!(!said.contains("adduser: Warning") && !said.contains("can't be accessed"), "the install warns:\n{said}");
    assert!(said.contains("add a flow to /etc/aws-kinesis/agent.json"), "the install says what to do:\n{said}");
    assert_eq!(c.exec(&["systemctl", "is-enabled", UNIT], 30).out.trim(), "enabled");
    assert_eq!(c.show("ActiveState"), "inactive", "started without a flow");
    assert_eq!(c.show("Type"), "notify");
    assert!(c.must(&["id", "kinesis-agent"]).contains("(adm)"), "the service user reads logs through adm");
    assert_eq!(c.system_state(), "running", "after the install:\n{}", c.diagnose());

    // Credentials and region where the Java agent's package has them; the watchdog short enough
    // to be seen at work.
    let env_file = c.path("/etc/default/aws-kinesis-agent");
    std::fs::write(
        &env_file,
        format!(
            "AWS_ACCESS_KEY_ID={TEST_ACCESS_KEY_ID}\nAWS_SECRET_ACCESS_KEY={TEST_SECRET_ACCESS_KEY}\n\
             AWS_REGION={TEST_REGION}\nAWS_EC2_METADATA_DISABLED=true\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dropin = c.path("/etc/systemd/system/kinesis-agent.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(dropin.join("watchdog.conf"), format!("[Service]\nWatchdogSec={WATCHDOG_SECS}\n")).unwrap();

    // --- A reboot with the shipped agent.json (no flows): no failed unit, the daemon waits.
    c.poweroff();
    let state = c.boot().unwrap();
    assert_eq!(state, "running", "after a reboot without flows:\n{}", c.diagnose());
    assert_eq!(c.show("ActiveState"), "active", "{}", c.diagnose());
    assert_eq!(c.show("SubState"), "running");
    let status = c.show("StatusText");
    assert!(status.contains("waiting for one"), "StatusText={status:?}");
    assert_eq!(c.show("WatchdogUSec"), format!("{WATCHDOG_SECS}s"), "the drop-in applies");
    let waiting_pid = c.show("MainPID");
    let waiting_since = micros(&c, "ExecMainStartTimestampMonotonic");

    // A flow, as a user adds it (the file keeps its mode and group).
    std::fs::create_dir_all(c.path("/var/log/app")).unwrap();
    let app_log = c.path(APP_LOG);
    write_lines(&app_log, 0..100, PREFIX);
    let agent_json = c.path("/etc/aws-kinesis/agent.json");
    let good = |max_age: u64| {
        json!({
            "checkpointFile": "/var/lib/kinesis-agent/checkpoints.json",
            "kinesis.endpoint": peer.endpoint(),
            "kinesis.region": TEST_REGION,
            "cloudwatch.emitMetrics": false,
            "flows": [{
                "filePattern": "/var/log/app/*.log",
                "kinesisStream": stream,
                "initialPosition": "START_OF_FILE",
                "maxBufferAgeMillis": max_age
            }]
        })
        .to_string()
    };
    std::fs::write(&agent_json, good(1000)).unwrap();
    let check = c.exec(&["kinesis-agent", "--check-config"], 30);
    assert!(check.ok(), "--check-config: {check:?}");

    // The waiting daemon pings the watchdog: a ping well past its first WatchdogSec, and it
    // was not killed for a missing one.
    wait_until(
        20,
        "the waiting daemon's WatchdogTimestampMonotonic",
        || c.show("WatchdogTimestampMonotonic"),
        |v| v.parse::<u64>().is_ok_and(|t| t > waiting_since + WATCHDOG_SECS * 1_500_000),
    );
    assert_eq!(c.show("MainPID"), waiting_pid, "the waiting daemon was restarted:\n{}", c.diagnose());
    assert_eq!(c.show("NRestarts"), "0");

    // --- `systemctl reload` starts the flow in the same process.
    c.must(&["systemctl", "reload", UNIT]);
    wait_until(20, "StatusText after adding a flow", || c.show("StatusText"), |s| s == "1 flow(s) started");
    assert_eq!(c.show("MainPID"), waiting_pid, "a reload, not a restart");
    let got = wait_for_lines(&rt, &client, &stream, 100);
    assert_numbers_exactly_once(0..100, &got);

    // --- A broken agent.json: the reload is refused, and says so; the running flow goes on.
    std::fs::write(&agent_json, "{ \"flows\": [ { \"filePattern\": \"/var/log/app/*.log\", ").unwrap();
    c.must(&["systemctl", "reload", UNIT]);
    let refused = wait_until(20, "StatusText after a bad reload", || c.show("StatusText"), |s| s.contains("refused"));
    assert!(
        refused.contains("reload refused, the running configuration goes on") && refused.contains("agent.json"),
        "the status says why: {refused:?}"
    );
    eprintln!("systemd_boot: after a bad reload, StatusText={refused}");
    assert_eq!(c.show("ActiveState"), "active");
    assert_eq!(c.show("MainPID"), waiting_pid);
    write_lines(&app_log, 100..200, PREFIX);
    let got = wait_for_lines(&rt, &client, &stream, 200);
    assert_numbers_exactly_once(0..200, &got);

    // --- A good reload is said as such.
    std::fs::write(&agent_json, good(2000)).unwrap();
    c.must(&["systemctl", "reload", UNIT]);
    wait_until(20, "StatusText after a good reload", || c.show("StatusText"), |s| s.contains("configuration reloaded"));
    assert_eq!(c.system_state(), "running", "{}", c.diagnose());

    // --- A restart: active (running) only once the new process said READY (its status comes
    // with READY=1, and `systemctl restart` returns when the unit is active).
    c.must(&["systemctl", "restart", UNIT]);
    let (state, sub, status) = (c.show("ActiveState"), c.show("SubState"), c.show("StatusText"));
    assert_eq!((state.as_str(), sub.as_str()), ("active", "running"));
    assert_eq!(status, "1 flow(s) started", "the status of the READY message, when the restart returned");
    let pid = c.show("MainPID");
    assert_ne!(pid, waiting_pid, "restarted");
    let started = micros(&c, "ExecMainStartTimestampMonotonic");
    let active = micros(&c, "ActiveEnterTimestampMonotonic");
    assert!(started <= active, "active at {active} µs, started at {started} µs");
    write_lines(&app_log, 200..300, PREFIX);
    let got = wait_for_lines(&rt, &client, &stream, 300);
    assert_numbers_exactly_once(0..300, &got);
    // The checkpoint loop pings: a ping well past the first WatchdogSec, and not restarted.
    let pinged_at = wait_until(
        20,
        "WatchdogTimestampMonotonic",
        || c.show("WatchdogTimestampMonotonic"),
        |v| v.parse::<u64>().is_ok_and(|t| t > started + WATCHDOG_SECS * 1_500_000),
    );
    eprintln!("systemd_boot: watchdog pinged at +{} ms", (pinged_at.parse::<u64>().unwrap() - started) / 1000);
    assert_eq!(c.show("MainPID"), pid, "the watchdog killed the agent:\n{}", c.diagnose());
    assert_eq!(c.show("NRestarts"), "0");
    assert_eq!(c.show("ActiveState"), "active");

    // --- `systemctl stop`: lines just written are sent, the process exits 0, nothing killed.
    write_lines(&app_log, 300..400, PREFIX);
    let t = Instant::now();
    c.must(&["systemctl", "stop", UNIT]);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(15), "the stop took {took:?}");
    assert_eq!(c.show("ActiveState"), "inactive");
    assert_eq!(c.show("Result"), "success", "{}", c.diagnose());
    assert_eq!(c.show("ExecMainCode"), "1", "exited (CLD_EXITED), not killed");
    assert_eq!(c.show("ExecMainStatus"), "0");
    let journal = c.must(&["journalctl", "-b", "_PID=1", &format!("UNIT={UNIT}"), "--no-pager", "-o", "cat"]);
    assert!(!journal.contains("SIGKILL") && !journal.contains("timed out"), "{journal}");
    assert_eq!(c.system_state(), "running", "after the stop:\n{}", c.diagnose());
    c.must(&["systemctl", "start", UNIT]);
    let got = wait_for_lines(&rt, &client, &stream, 400);
    assert_numbers_exactly_once(0..400, &got);

    // --- Lines while it runs, while powered off and after a reboot: all of them, once.
    write_lines(&app_log, 400..500, PREFIX);
    let got = wait_for_lines(&rt, &client, &stream, 500);
    assert_numbers_exactly_once(0..500, &got);
    c.poweroff();
    write_lines(&app_log, 500..600, PREFIX);
    let state = c.boot().unwrap();
    assert_eq!(state, "running", "after a reboot with a flow:\n{}", c.diagnose());
    assert_eq!(c.show("ActiveState"), "active");
    write_lines(&app_log, 600..700, PREFIX);
    let got = wait_for_lines(&rt, &client, &stream, 700);
    assert_numbers_exactly_once(0..700, &got);
    // Stopped at the shutdown as at `systemctl stop`.
    let before = c.must(&["journalctl", "-b", "-1", "_PID=1", &format!("UNIT={UNIT}"), "--no-pager", "-o", "cat"]);
    assert!(before.contains("Deactivated successfully"), "the previous boot's journal:\n{before}");
    assert!(!before.contains("SIGKILL") && !before.contains("timed out"), "{before}");
    // Nothing more comes later (no duplicate sent late).
    std::thread::sleep(Duration::from_secs(1));
    let got = parse_line_numbers(&data_of(&rt.block_on(read_all(&client, &stream))));
    assert_numbers_exactly_once(0..700, &got);

    // --- The hardening, as systemd itself rates it.
    let security = c.exec(&["systemd-analyze", "security", "--no-pager", UNIT], 60).text();
    let level = security
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for kinesis-agent.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{security}"));
    eprintln!("systemd_boot: systemd-analyze security: {level}");
    assert!(level <= 1.5, "exposure {level} > 1.5:\n{security}");

    c.poweroff();
    eprintln!("systemd_boot: the whole test took {:?}", test_started.elapsed());
}
