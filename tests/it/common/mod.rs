//! Shared harness for the end-to-end tests (`tests/it/main.rs` declares it; every module does
//! `use crate::common;`).
//!
//! Everything here is bounded by timeouts: nothing may hang a test forever. Processes (peers,
//! the agent) are killed on `Drop`, and when a test panics their logs are printed to stderr.
//!
//! # Peers (`peers.rs`): real Kinesis-compatible servers, one instance per test
//! - `PeerKind::{Kinesalite, KinesisLocal, Moto}`, `PeerKind::name()`, `PeerKind::ALL`
//! - `ensure_installed(PeerKind)` runs `scripts/peers/peers install NAME` (idempotent, flock'ed)
//! - `Peer::start(PeerKind) -> Peer` installs, picks a free port, spawns the server in its own
//!   process group (killed on Drop, plus a watcher that kills it if the test process dies),
//!   waits for readiness (60 s; panics with the peer's log). `Peer::start_with_env(kind, &[(k, v)])`.
//!   Blocking (peers start in 0.3–1.5 s once installed): from async tests use the multi_thread flavor.
//! - `peer.endpoint() -> String` (`http://127.0.0.1:PORT`), `.port()`, `.kind()`, `.pid()`,
//!   `.log() -> String`, `.stop()`
//!
//! # AWS SDK helpers (`aws.rs`), static fake credentials, region us-east-1
//! - consts `TEST_ACCESS_KEY_ID`, `TEST_SECRET_ACCESS_KEY`, `TEST_REGION`
//! - `kinesis_client(endpoint) -> aws_sdk_kinesis::Client` (standard retries, 30 s op timeout);
//!   `kinesis_client_no_retry(endpoint)`; `kinesis_client_with(endpoint, max_attempts, op_timeout)`;
//!   `kinesis_client_in(endpoint, region)`
//! - `firehose_client(endpoint)`, `firehose_client_no_retry(endpoint)`, `s3_client(endpoint)` (path style)
//! - `async create_stream(&client, name, shards) -> Vec<ShardRange>` (waits for ACTIVE, 30 s)
//! - `async list_shards(&client, stream) -> Vec<ShardRange { shard_id, start, end }>`
//! - `hash_key(partition_key) -> u128` (MD5, big-endian), `shard_for_key(&shards, key) -> &str`
//! - `async put_records(&client, stream, &[(key, data)]) -> PutRecordsOutput` (one call, no checks)
//! - `Received { shard_id, partition_key, data, sequence_number }`
//! - `async read_all(&client, stream) -> Vec<Received>` (TRIM_HORIZON, every shard, until caught up; 60 s)
//! - `async wait_for_records(&client, stream, n, timeout) -> Vec<Received>` (follows the shard
//!   iterators incrementally; returns what it has at the timeout: the caller asserts)
//! - `data_of(&[Received]) -> Vec<Vec<u8>>`, `err_text(&sdk_error) -> String` (with sources)
//! - `async create_s3_bucket(&s3, bucket)`,
//!   `async create_delivery_stream_to_s3(&firehose, name, bucket, prefix)` (DirectPut, ExtendedS3,
//!   Uncompressed; waits for ACTIVE), `async read_s3_objects(&s3, bucket) -> Vec<Vec<u8>>`
//!   (sorted by key; moto writes one object per PutRecordBatch, compare as a set)
//! - `async bounded(secs, what, fut) -> T` panics if `fut` takes longer than `secs`
//!
//! # Fault-injecting fake endpoint (`fake.rs`)
//! - `FakeKinesis::start() -> FakeKinesis` (own thread + runtime, works from sync and async tests),
//!   `FakeKinesis::start_with_shards(n)`; `.endpoint()`, `.addr()`
//! - Faults (runtime-settable, `&self`): `set_entry_failure(fraction, code)` (seeded),
//!   `set_throttle_fraction(f)` (= ProvisionedThroughputExceededException; Firehose entries fail
//!   with `ServiceUnavailableException`),
//!   `set_firehose_entry_failure_code(code)`, `set_seed(u64)`, `set_http500_fraction(f)`,
//!   `set_request_error(Option<&str>)` (every request: HTTP 400, or 500/503 for server codes),
//!   `fail_next_requests(n, code)` (AccessDeniedException / ResourceNotFoundException worded as
//!   AWS does, naming the stream), `set_delay(Duration)` (before processing),
//!   `set_response_delay(fraction, Duration)` (records stored, the answer held),
//!   `set_reset(fraction, after_processing)` (request read, then TCP RST without an answer),
//!   `set_rate_limit(Option<records/s>)` (entries over it throttled, as a shard at its limit),
//!   `expire_key(access_key)` (its requests get ExpiredTokenException),
//!   `set_down(Option<DownMode>)`, `set_down_for(mode, Duration)` (then back up by itself) with
//!   `DownMode::{Reset, Refuse, Hang}`, `set_enforce_limits(bool)` (default on),
//!   `set_known_streams(Option<&[&str]>)` (others → ResourceNotFoundException), `set_shard_count(n)`,
//!   `update_faults(|&mut Faults|)`, `faults() -> Faults`, `clear_faults()`
//! - Limits (on by default; HTTP 400 ValidationException for the whole request): PutRecords 1..=500
//!   entries, key 1..=256 chars, data+key ≤ 1 MiB per entry, ≤ 5 MiB per request; PutRecordBatch
//!   1..=500, ≤ 1,000 KiB per record, ≤ 4 MiB per request. Consts `MAX_*` / `FIREHOSE_MAX_*`.
//! - Observations: `records() -> Vec<(String, Vec<u8>)>` (accepted Kinesis entries), `record_data()`,
//!   `record_data_since(from)` (entries from index `from` on, for incremental readers),
//!   `firehose_records() -> Vec<Vec<u8>>`, `all_records() -> Vec<FakeRecord>` (stream, shard,
//!   sequence number…), `record_count()`, `request_count()`, `failed_entry_count()`,
//!   `requests() -> Vec<RequestLog { target, stream, entries, bytes, status, error_code,
//!   failed_entries }>`, `reset_counts() -> (resets, entries stored in them)`,
//!   `delayed_response_counts() -> (responses, entries stored in them)`, `received_count()`
//!   (requests whose headers arrived, whatever happened next), `reset_observations()`
//!
//! # Fake CloudWatch (`cloudwatch.rs`): PutMetricData in the SDK's RPC v2 CBOR protocol
//! - `FakeCloudWatch::start()`, `.endpoint()`, `.set_mode(CwMode::{Ok, Hang, Error})`
//! - `.requests() -> Vec<PutMetricData { namespace, data, gzip }>` (panics if a request did not
//!   decode), `.datums() -> Vec<Datum { name, dimensions, value, unit, timestamp }>`,
//!   `.sum(name, &[(dim, value)])`, `.received()`
//!
//! # Test HTTP servers (`http.rs`)
//! - `HttpServer::start(name, handler) -> HttpServer` (own thread and runtime, loopback, stopped
//!   on Drop); `.addr()`, `.endpoint()`. The fake CloudWatch and the test IMDS are built on it.
//!
//! # The agent process (`agent.rs`)
//! - `agent_bin() -> PathBuf` (`CARGO_BIN_EXE_kinesis-agent`), `agent_env(home) -> Vec<(String, String)>`
//! - `AgentProcess::spawn(args, env) -> AgentProcess` (env cleared, then PATH, HOME=tempdir,
//!   fake credentials, us-east-1, IMDS off, config/credentials files → non-existent paths,
//!   then `env`); `AgentProcess::spawn_in(dir, args, env)`; `AgentProcess::spawn_in_as(dir, args,
//!   env, Some((uid, gid)))` runs it as another user (test must be root; `dir` must be accessible)
//! - `.pid()`, `.dir()`, `.log()`, `.log_path()`, `.wait_exit(timeout) -> ExitStatus` (panics with
//!   the log on timeout), `.try_wait_exit(timeout) -> Option<ExitStatus>`, `.is_running()`,
//!   `.sigterm()`, `.sigkill()`, `.signal(sig)`, `.wait_for_log(needle, timeout) -> bool`
//!
//! # Numbered lines (`lines.rs`)
//! - `line_text(prefix, n) -> String` = `"{prefix} {n:08} <padding>"` (no newline, ~100 bytes)
//! - `write_lines(path, range, prefix)` appends `line_text + "\n"` for each n (creates the file);
//!   `write_lines_len(path, range, prefix, len)` pads each line to `len` bytes (newline excluded)
//! - `expected_lines(range, prefix) -> impl Iterator<Item = String>`
//! - `split_lines(&[Vec<u8>]) -> Vec<Vec<u8>>` (records/objects holding several lines)
//! - `parse_line_numbers(&[Vec<u8>]) -> Vec<u64>` (every line of every record)
//! - `check_exactly_once(expected, got) -> Result<(), String>`,
//!   `assert_exactly_once(expected, got)`: compares as multisets after stripping one trailing
//!   `\n`/`\r\n`; reports missing / duplicated / unexpected counts with a few examples
//! - `check_numbers_exactly_once(range, &numbers) -> Result<(), String>`,
//!   `assert_numbers_exactly_once(range, &numbers)`: report with compact missing ranges
//!
//! # Load (`mod.rs`)
//! - `heavy()`: held by a test that loads the machine (the fleet's 16 agents); `timed()`: held by
//!   tests whose assertions depend on timing, so they never run beside a heavy one
//!
//! # Packages (`packages.rs`)
//! - `build_packages(version, keep) -> (deb, rpm)`: `packaging/build --dev` (serialized: it
//!   empties `target/packages/`), copies into `keep`; `build_deb(keep) -> deb`; `is_root()`
//!
//! # End-to-end workspace (`e2e.rs`)
//! - `Workspace::new()`: temp dir with `logs/` (watched files), `home/` (agent HOME, cwd, logs),
//!   `agent.json`, an empty `agent.d/`, `state/checkpoints.json`; `.file(name)`, `.pattern(glob)`,
//!   `.write_config(json)` (adds `checkpointFile`), `.args(once, extra)`, `.spawn(once, extra)`,
//!   `.run_once(timeout) -> (status, log, elapsed)`, `.checkpoints()`, `.checkpoint_of(file)`,
//!   `.wait_checkpoint(file, offset, timeout)`
//! - `read_checkpoints(path) -> Vec<CheckpointEntry>`, `file_id(path) -> (dev, ino)`, `file_len`,
//!   `append_bytes`, `md5_hex`, `is_random_key`, `assert_one_line_per_record`, `count_occurrences`
//! - `StreamReader::new(&client, stream).await`, `.read_new(&client).await -> Vec<Received>`:
//!   what arrived since the last call (cheaper than `read_all` on big streams)
//!
//! # Misc (this file)
//! - `repo_dir()`, `unique_name(prefix)` (fresh lowercase name valid for streams and buckets),
//!   `tail(text, max_bytes)`

#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod aws;
pub mod cloudwatch;
pub mod e2e;
pub mod fake;
pub mod http;
pub mod lines;
pub mod packages;
pub mod peers;

pub use agent::*;
pub use aws::*;
pub use cloudwatch::*;
pub use e2e::*;
pub use fake::*;
pub use http::*;
pub use lines::*;
pub use packages::*;
pub use peers::*;

use std::path::PathBuf;

/// Root of the repository (where Cargo.toml is).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A short random suffix for stream/bucket names, so tests never share resources.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{}-{:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), nanos)
}

/// The last `max_bytes` of a log, cut at a line start, for panic messages.
pub fn tail(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut start = text.len() - max_bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    match text[start..].find('\n') {
        Some(i) => &text[start + i + 1..],
        None => &text[start..],
    }
}

/// A test that needs a tool this machine lacks: skipped with a message, except under
/// `scripts/test` (`REQUIRE_TEST_TOOLS=1`, set for CI), where a missing tool fails the test
/// instead of letting it pass silently.
pub fn skip_without(what: &str) {
    if std::env::var_os("REQUIRE_TEST_TOOLS").is_some() {
        panic!("{what} is missing, and scripts/test requires it (REQUIRE_TEST_TOOLS is set): install it");
    }
    eprintln!("skipped: {what} is missing");
}

/// The fleet test starts 16 agents at once, which starves the CPU of whatever runs beside it;
/// tests whose assertions depend on timing (pacing rates) must not run then. `heavy` is held by
/// the former, `timed` by the latter (those may run together).
static LOAD: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn heavy() -> std::sync::RwLockWriteGuard<'static, ()> {
    LOAD.write().unwrap_or_else(|e| e.into_inner())
}

pub fn timed() -> std::sync::RwLockReadGuard<'static, ()> {
    LOAD.read().unwrap_or_else(|e| e.into_inner())
}
