//! Running the real agent binary as a child process.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::aws::{TEST_ACCESS_KEY_ID, TEST_REGION, TEST_SECRET_ACCESS_KEY};
use super::peers::read_lossy;

/// The agent binary Cargo built for these tests.
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kinesis-agent"))
}

/// The environment every agent process starts with (after `env_clear`): fake static
/// credentials, us-east-1, no IMDS, no shared config/credentials files, HOME = `home`.
pub fn agent_env(home: &Path) -> Vec<(String, String)> {
    let mut env = vec![
        ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID.to_string()),
        ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY.to_string()),
        ("AWS_REGION", TEST_REGION.to_string()),
        ("AWS_DEFAULT_REGION", TEST_REGION.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_CONFIG_FILE", home.join("no-such-aws-config").display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", home.join("no-such-aws-credentials").display().to_string()),
        ("HOME", home.display().to_string()),
        ("RUST_BACKTRACE", "1".to_string()),
    ];
    if let Ok(path) = std::env::var("PATH") {
        env.push(("PATH", path));
    }
    if let Ok(level) = std::env::var("RUST_LOG") {
        env.push(("RUST_LOG", level));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A running agent. Its stdout and stderr both go to `log_path()`. Dropping it SIGKILLs the
/// process; when the test is panicking, the tail of its log is printed first.
pub struct AgentProcess {
    child: Child,
    status: Option<ExitStatus>,
    log_path: PathBuf,
    dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

impl AgentProcess {
    /// Spawns the agent with `args`, in a fresh temp dir (also its HOME and cwd), with
    /// `agent_env` plus `env` (later entries win).
    pub fn spawn<I, S>(args: I, env: &[(&str, &str)]) -> AgentProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let tmp = tempfile::Builder::new().prefix("agent-").tempdir().expect("agent tempdir");
        let dir = tmp.path().to_path_buf();
        let mut p = Self::spawn_in(&dir, args, env);
        p._tempdir = Some(tmp);
        p
    }

    /// Like `spawn`, but `dir` (which must exist and outlive the process) is HOME, cwd and
    /// where the log goes (`agent-<n>.log`, so restarts in the same dir keep earlier logs).
    pub fn spawn_in<I, S>(dir: &Path, args: I, env: &[(&str, &str)]) -> AgentProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_in_as(dir, args, env, None)
    }

    /// Like `spawn_in`, but with `user: Some((uid, gid))` the process runs as that user (the
    /// test must be root; supplementary groups are dropped). `dir` and everything the agent
    /// reads or writes must then be accessible to that user; the log is opened by the test.
    pub fn spawn_in_as<I, S>(dir: &Path, args: I, env: &[(&str, &str)], user: Option<(u32, u32)>) -> AgentProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_limited(dir, args, env, user, None)
    }

    /// Like `spawn_in_as`, with `nofile: Some(n)` the soft and hard `RLIMIT_NOFILE` set to `n`
    /// (as `ulimit -n n`).
    pub fn spawn_limited<I, S>(
        dir: &Path,
        args: I,
        env: &[(&str, &str)],
        user: Option<(u32, u32)>,
        nofile: Option<u64>,
    ) -> AgentProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let log_path = (0..).map(|n| dir.join(format!("agent-{n}.log"))).find(|p| !p.exists()).expect("log name");
        let log = File::create(&log_path).expect("create agent log");
        let mut cmd = Command::new(agent_bin());
        cmd.args(args)
            .current_dir(dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log);
        for (k, v) in agent_env(dir) {
            cmd.env(k, v);
        }
        // An empty value unsets the variable.
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let rl = libc::rlimit { rlim_cur: n as libc::rlim_t, rlim_max: n as libc::rlim_t };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", agent_bin().display()));
        AgentProcess { child, status: None, log_path, dir: dir.to_path_buf(), _tempdir: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// HOME / cwd of the process.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the agent printed so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Exit status if it has exited within `timeout`.
    pub fn try_wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait agent") {
                self.status = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit; panics with the agent's log if it is still running after `timeout`
    /// (the process is then killed by Drop).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.try_wait_exit(timeout) {
            Some(s) => s,
            None => panic!(
                "agent (pid {}) did not exit within {timeout:?}; log tail:\n{}",
                self.pid(),
                super::tail(&self.log(), 16 * 1024)
            ),
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.try_wait_exit(Duration::ZERO).is_none()
    }

    pub fn signal(&self, sig: libc::c_int) {
        if self.status.is_none() {
            // SAFETY: plain syscall on our own child's pid (not yet reaped, so not reused).
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, sig);
            }
        }
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    pub fn sigkill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// Polls the log until it contains `needle` (true) or `timeout` passes / the agent exits
    /// without printing it (false).
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if !self.is_running() {
                return self.log().contains(needle);
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== agent log {} (pid {}), last 32 KiB ====\n{}\n==== end of agent log ====",
                self.log_path.display(),
                self.child.id(),
                super::tail(&self.log(), 32 * 1024)
            );
        }
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
