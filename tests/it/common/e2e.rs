//! Helpers for the end-to-end tests that run the agent binary (`tests/e2e_*.rs`): a workspace
//! (watched files, agent.json, an empty drop-in dir, the checkpoint file), running the agent in
//! it, reading its checkpoints, and checks on records read back.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde_json::Value;

use super::agent::AgentProcess;

/// One test's files: `logs/` (watched), `home/` (the agent's HOME, cwd and logs),
/// `agent.json`, `agent.d/` (empty, passed as `--config-dir`) and `state/checkpoints.json`.
pub struct Workspace {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub logs: PathBuf,
    pub home: PathBuf,
    pub config: PathBuf,
    pub config_dir: PathBuf,
    pub checkpoint_file: PathBuf,
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Workspace {
    pub fn new() -> Workspace {
        let tmp = tempfile::Builder::new().prefix("e2e-").tempdir().expect("workspace tempdir");
        // Canonical, so the paths the agent reports are the ones we build.
        let root = tmp.path().canonicalize().expect("canonicalize workspace");
        let ws = Workspace {
            logs: root.join("logs"),
            home: root.join("home"),
            config: root.join("agent.json"),
            config_dir: root.join("agent.d"),
            checkpoint_file: root.join("state").join("checkpoints.json"),
            root,
            _tmp: tmp,
        };
        for d in [&ws.logs, &ws.home, &ws.config_dir] {
            std::fs::create_dir_all(d).expect("create workspace dir");
        }
        ws
    }

    /// A path under `logs/`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    /// An absolute `filePattern` under `logs/`.
    pub fn pattern(&self, glob: &str) -> String {
        self.logs.join(glob).display().to_string()
    }

    /// Writes `agent.json`; `checkpointFile` is added unless `cfg` sets it.
    pub fn write_config(&self, mut cfg: Value) {
        let obj = cfg.as_object_mut().expect("config is a JSON object");
        obj.entry("checkpointFile").or_insert_with(|| Value::String(self.checkpoint_file.display().to_string()));
        std::fs::write(&self.config, serde_json::to_vec_pretty(&cfg).expect("json")).expect("write agent.json");
    }

    /// `-c agent.json --config-dir agent.d [--once] extra...`
    pub fn args(&self, once: bool, extra: &[&str]) -> Vec<String> {
        let mut a = vec![
            "-c".to_string(),
            self.config.display().to_string(),
            "--config-dir".to_string(),
            self.config_dir.display().to_string(),
        ];
        if once {
            a.push("--once".to_string());
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Starts the agent (daemon unless `once`) in `home/`; each start gets its own log file.
    pub fn spawn(&self, once: bool, extra: &[&str]) -> AgentProcess {
        AgentProcess::spawn_in(&self.home, self.args(once, extra), &[("NO_COLOR", "1")])
    }

    /// Runs `--once` to its end (panics after `timeout`): exit status, log, duration.
    pub fn run_once(&self, timeout: Duration) -> (ExitStatus, String, Duration) {
        let started = Instant::now();
        let mut p = self.spawn(true, &[]);
        let status = p.wait_exit(timeout);
        (status, p.log(), started.elapsed())
    }

    /// Every entry of the checkpoint file (empty if it does not exist yet).
    pub fn checkpoints(&self) -> Vec<CheckpointEntry> {
        read_checkpoints(&self.checkpoint_file)
    }

    /// The checkpointed offset of `file` (matched by device and inode), if any.
    pub fn checkpoint_of(&self, file: &Path) -> Option<u64> {
        let (dev, ino) = file_id(file);
        self.checkpoints().into_iter().find(|e| e.dev == dev && e.ino == ino).map(|e| e.offset)
    }

    /// Polls the checkpoint file until `file`'s offset is `offset`; returns the last offset seen.
    pub fn wait_checkpoint(&self, file: &Path, offset: u64, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.checkpoint_of(file);
            if seen == Some(offset) || Instant::now() >= deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One entry of the agent's checkpoint file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointEntry {
    pub flow: String,
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
    pub updated_ms: u64,
    /// The path the file had when first tailed, once it has moved.
    pub was: Option<String>,
}

/// Parses a checkpoint file (`{"version":1,"checkpoints":[...]}`); empty if it does not exist.
/// Panics on anything else: the agent writes it atomically, so a reader never sees half a file.
pub fn read_checkpoints(path: &Path) -> Vec<CheckpointEntry> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    let v: Value = serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!("checkpoint file {} is not JSON ({e}): {}", path.display(), String::from_utf8_lossy(&text))
    });
    assert_eq!(v["version"], 1, "checkpoint file version: {v}");
    let num = |e: &Value, k: &str| e[k].as_u64().unwrap_or_else(|| panic!("checkpoint entry without {k}: {e}"));
    v["checkpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("no checkpoints array: {v}"))
        .iter()
        .map(|e| CheckpointEntry {
            flow: e["flow"].as_str().unwrap_or_else(|| panic!("entry without flow: {e}")).to_string(),
            path: e["path"].as_str().unwrap_or_else(|| panic!("entry without path: {e}")).to_string(),
            dev: num(e, "dev"),
            ino: num(e, "ino"),
            offset: num(e, "offset"),
            updated_ms: num(e, "updated_ms"),
            was: e["was"].as_str().map(str::to_string),
        })
        .collect()
}

/// (device, inode) of a file, as the checkpoint file records them.
pub fn file_id(path: &Path) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.dev(), m.ino())
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).len()
}

/// Appends raw bytes to a file (creating it).
pub fn append_bytes(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(bytes).unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// Lower-case hex MD5 (what a DETERMINISTIC partition key is for the record's bytes).
pub fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A RANDOM partition key: 16 lower-case hex digits.
pub fn is_random_key(key: &str) -> bool {
    key.len() == 16 && key.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Panics unless every record is one line with its newline (exactly one `\n`, at the end).
pub fn assert_one_line_per_record(records: &[Vec<u8>]) {
    for r in records {
        let newlines = r.iter().filter(|&&b| b == b'\n').count();
        assert!(
            newlines == 1 && r.ends_with(b"\n"),
            "a record must be one line including its newline, got {:?}",
            String::from_utf8_lossy(&r[..r.len().min(200)])
        );
    }
}

/// How many times `needle` occurs in `text`.
pub fn count_occurrences(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// Reads a Kinesis stream incrementally: each `read_new` returns the records that arrived since
/// the previous call (from TRIM_HORIZON the first time), following every shard's iterator until
/// it is caught up. Cheaper than `read_all` when a test checks a big stream several times.
pub struct StreamReader {
    stream: String,
    /// (shard id, next iterator); None once a shard is closed.
    cursors: Vec<(String, Option<String>)>,
}

impl StreamReader {
    pub async fn new(client: &aws_sdk_kinesis::Client, stream: &str) -> StreamReader {
        use aws_sdk_kinesis::types::ShardIteratorType;
        let mut cursors = Vec::new();
        for shard in super::aws::list_shards(client, stream).await {
            let it = client
                .get_shard_iterator()
                .stream_name(stream)
                .shard_id(&shard.shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GetShardIterator {stream}: {}", super::aws::err_text(&e)))
                .shard_iterator()
                .map(str::to_string);
            cursors.push((shard.shard_id, it));
        }
        StreamReader { stream: stream.to_string(), cursors }
    }

    /// Everything that arrived since the last call (bounded: panics after 60 s).
    pub async fn read_new(&mut self, client: &aws_sdk_kinesis::Client) -> Vec<super::aws::Received> {
        let what = format!("StreamReader::read_new {}", self.stream);
        super::aws::bounded(60, &what, async {
            let mut out = Vec::new();
            for (shard_id, cursor) in self.cursors.iter_mut() {
                while let Some(it) = cursor.clone() {
                    let page = client
                        .get_records()
                        .shard_iterator(&it)
                        .limit(10_000)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("GetRecords {}: {}", self.stream, super::aws::err_text(&e)));
                    for r in page.records() {
                        out.push(super::aws::Received {
                            shard_id: shard_id.clone(),
                            partition_key: r.partition_key().unwrap_or_default().to_string(),
                            data: r.data().as_ref().to_vec(),
                            sequence_number: r.sequence_number().to_string(),
                        });
                    }
                    let caught_up = page.records().is_empty() && page.millis_behind_latest().unwrap_or(0) == 0;
                    *cursor = page.next_shard_iterator().map(str::to_string);
                    if caught_up {
                        break;
                    }
                }
            }
            out
        })
        .await
    }
}

/// Polls `count` every 50 ms until it reaches `expected`; gives up when it stops growing for
/// `no_progress` or after `timeout` (then something was lost). Returns the last count.
pub fn wait_for_progress(
    expected: u64,
    no_progress: Duration,
    timeout: Duration,
    what: &str,
    mut count: impl FnMut() -> u64,
) -> u64 {
    let started = Instant::now();
    let (mut last, mut last_change) = (count(), Instant::now());
    loop {
        let n = count();
        if n >= expected {
            return n;
        }
        if n != last {
            (last, last_change) = (n, Instant::now());
        }
        if last_change.elapsed() >= no_progress || started.elapsed() >= timeout {
            eprintln!("gave up waiting after {:?}: {n} of {expected} {what}", started.elapsed());
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `base` (a JSON object) with every key of `extra` (a JSON object) set over it.
pub fn with_keys(mut base: Value, extra: &Value) -> Value {
    for (k, v) in extra.as_object().expect("extra keys: a JSON object") {
        base[k] = v.clone();
    }
    base
}

/// agent.json sending one flow to the fake Kinesis endpoint: the flow's keys over
/// `START_OF_FILE`, 1 s batches and 50 ms backoffs up to `max_backoff_ms`; `global` over the
/// endpoint and region.
pub fn fake_kinesis_config(fake: &super::fake::FakeKinesis, flow: Value, max_backoff_ms: u64, global: &Value) -> Value {
    let defaults = serde_json::json!({
        "initialPosition": "START_OF_FILE",
        "maxBufferAgeMillis": 1000,
        "retryInitialBackoffMillis": 50,
        "retryMaxBackoffMillis": max_backoff_ms
    });
    let base = serde_json::json!({
        "kinesis.endpoint": fake.endpoint(),
        "kinesis.region": super::TEST_REGION,
        "flows": [with_keys(defaults, &flow)]
    });
    with_keys(base, global)
}
