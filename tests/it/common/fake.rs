//! `FakeKinesis`: an in-repo, fault-injecting HTTP endpoint speaking the AWS JSON 1.1 protocol
//! of Kinesis Data Streams (`Kinesis_20131202.*`) and Firehose (`Firehose_20150804.*`).
//!
//! It runs on its own thread with its own tokio runtime, so it works from sync and async tests
//! alike, and every knob is settable at runtime through `&self`.
//!
//! Operations: Kinesis `PutRecords`, `PutRecord`, `DescribeStreamSummary`, `DescribeStream`,
//! `ListShards`; Firehose `PutRecordBatch`, `PutRecord`, `DescribeDeliveryStream`. Anything else
//! gets `UnknownOperationException` (HTTP 400).
//!
//! Order of fault evaluation for each request: down mode (`set_down`, `set_down_for`) → delay →
//! connection reset (`set_reset`) → HTTP 500 fraction → whole-request error (`set_request_error`
//! / `fail_next_requests`) → unknown stream → limit validation → per-entry failures → response
//! delay (`set_response_delay`, after the records were stored).
//!
//! Limits enforced by default (`set_enforce_limits(false)` turns them off), each answered with
//! HTTP 400 `ValidationException` for the whole request:
//! - PutRecords: 1..=500 entries; partition key 1..=256 chars; data+key ≤ 1 MiB per entry;
//!   data+keys ≤ 5 MiB per request (real Kinesis says `InvalidArgumentException` for that one).
//! - Firehose PutRecordBatch: 1..=500 entries; data ≤ 1,000 KiB per entry; ≤ 4 MiB per request.
//!
//! Errors carry the code both in the `x-amzn-ErrorType` header and in the JSON `__type` field
//! (the Rust SDK reads the header first, then `__type`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use serde_json::{Value, json};

pub const MAX_RECORDS_PER_REQUEST: usize = 500;
pub const MAX_RECORD_BYTES: usize = 1024 * 1024; // data + partition key
pub const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024; // data + partition keys
pub const MAX_PARTITION_KEY_CHARS: usize = 256;
pub const FIREHOSE_MAX_RECORD_BYTES: usize = 1_024_000;
pub const FIREHOSE_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

const ACCOUNT: &str = "123456789012";
const JSON_11: &str = "application/x-amz-json-1.1";

/// How the fake behaves while "down".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownMode {
    /// Accept connections and close them at once (TCP RST), and close kept-alive connections
    /// on their next request without answering.
    Reset,
    /// Stop listening: new connections are refused. The same port is bound again when the
    /// fake comes back up. Kept-alive connections are closed on their next request.
    Refuse,
    /// Accept and read requests but never answer (until the mode changes).
    Hang,
}

/// Every fault knob. Read/modify with `FakeKinesis::update_faults`.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Fraction (0..=1) of PutRecords / PutRecordBatch entries failed individually.
    pub entry_fail_fraction: f64,
    /// ErrorCode for failed Kinesis entries (default `ProvisionedThroughputExceededException`).
    pub entry_fail_code: String,
    /// ErrorCode for failed Firehose entries (default `ServiceUnavailableException`).
    pub firehose_entry_fail_code: String,
    /// Fraction (0..=1) of requests answered with HTTP 500 `InternalFailure`.
    pub http500_fraction: f64,
    /// Answer requests with this error code (HTTP 400; 500 for `InternalFailure`, 503 for
    /// `ServiceUnavailable*`).
    pub request_error: Option<String>,
    /// How many more requests get `request_error` (None: all of them).
    pub request_error_remaining: Option<u64>,
    /// Added before answering each request.
    pub delay: Duration,
    pub down: Option<DownMode>,
    /// `down` ends by itself at this moment (`set_down_for`).
    pub down_until: Option<std::time::Instant>,
    /// Fraction (0..=1) of requests whose connection is reset (RST, no response) once the
    /// request was read; with `reset_after_processing` its records are stored first, so the
    /// client never learns they were accepted.
    pub reset_fraction: f64,
    pub reset_after_processing: bool,
    /// Fraction (0..=1) of requests answered only after `response_delay`, their records stored
    /// at once (a response slower than the client's timeout is lost, the records are not).
    pub response_delay_fraction: f64,
    pub response_delay: Duration,
    /// Records per second accepted (all streams together, a burst of one second); entries over
    /// it fail with `entry_fail_code` / `firehose_entry_fail_code`, as a shard at its limit does.
    pub rate_limit: Option<f64>,
    /// Each shard's limits, as Kinesis sets them (records/s, bytes/s of data + key, a burst of
    /// one second): entries over them fail with `ProvisionedThroughputExceededException`.
    pub shard_limits: Option<(f64, f64)>,
    pub enforce_limits: bool,
    /// If set, other stream names get `ResourceNotFoundException`.
    pub known_streams: Option<Vec<String>>,
    /// Requests signed with these access keys get `ExpiredTokenException` (HTTP 400).
    pub expired_keys: Vec<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            entry_fail_fraction: 0.0,
            entry_fail_code: "ProvisionedThroughputExceededException".into(),
            firehose_entry_fail_code: "ServiceUnavailableException".into(),
            http500_fraction: 0.0,
            request_error: None,
            request_error_remaining: None,
            delay: Duration::ZERO,
            down: None,
            down_until: None,
            reset_fraction: 0.0,
            reset_after_processing: false,
            response_delay_fraction: 0.0,
            response_delay: Duration::ZERO,
            rate_limit: None,
            shard_limits: None,
            enforce_limits: true,
            known_streams: None,
            expired_keys: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Kinesis,
    Firehose,
}

/// An accepted entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeRecord {
    pub service: Service,
    /// Stream / delivery stream name.
    pub stream: String,
    /// Empty for Firehose.
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
    /// Kinesis: `shardId-…`; Firehose: empty.
    pub shard_id: String,
    /// Kinesis: sequence number; Firehose: RecordId.
    pub sequence_number: String,
    /// When it was accepted.
    pub accepted_at: std::time::Instant,
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct RequestLog {
    /// `X-Amz-Target`, e.g. `Kinesis_20131202.PutRecords`.
    pub target: String,
    pub stream: Option<String>,
    /// Number of entries in a put request (0 for other operations).
    pub entries: usize,
    /// Sum of data + partition key bytes of the entries.
    pub bytes: usize,
    pub status: u16,
    /// Whole-request error code, if any.
    pub error_code: Option<String>,
    /// Entries failed individually.
    pub failed_entries: usize,
    /// The access key id the request was signed with (from `Authorization: ... Credential=`).
    pub access_key: Option<String>,
}

struct State {
    faults: Faults,
    rng: u64,
    shard_count: u32,
    seq: u64,
    records: Vec<FakeRecord>,
    requests: Vec<RequestLog>,
    request_count: u64,
    failed_entry_count: u64,
    /// Connections reset by `set_reset`, and the entries stored in those requests.
    resets: u64,
    reset_stored_entries: u64,
    /// Responses delayed by `set_response_delay`, and the entries stored in those requests.
    delayed_responses: u64,
    delayed_stored_entries: u64,
    /// Requests whose headers arrived (before any fault).
    received: u64,
    /// `rate_limit` bucket: records that may be accepted now, and when it was last filled.
    rate_tokens: f64,
    rate_filled: std::time::Instant,
    /// `shard_limits` buckets by shard: (records, bytes) that may be accepted now, last filled.
    shard_tokens: std::collections::HashMap<String, (f64, f64, std::time::Instant)>,
    created: f64,
}

impl State {
    /// Whether an entry of `bytes` is over `shard`'s limits (else it is counted against them).
    fn over_shard_limits(&mut self, shard: &str, bytes: usize) -> bool {
        let Some((records, rate)) = self.faults.shard_limits else { return false };
        let now = std::time::Instant::now();
        // Empty at first: as if others had just used the shard (no free burst for the first
        // producer).
        let (r, b, filled) = self.shard_tokens.entry(shard.to_string()).or_insert((0.0, 0.0, now));
        let dt = (now - *filled).as_secs_f64();
        *r = (*r + records * dt).min(records);
        *b = (*b + rate * dt).min(rate);
        *filled = now;
        if *r >= 1.0 && *b >= bytes as f64 {
            *r -= 1.0;
            *b -= bytes as f64;
            false
        } else {
            true
        }
    }

    /// Whether one more entry is over `rate_limit`.
    fn over_rate(&mut self) -> bool {
        let Some(limit) = self.faults.rate_limit else { return false };
        let now = std::time::Instant::now();
        self.rate_tokens = (self.rate_tokens + limit * (now - self.rate_filled).as_secs_f64()).min(limit);
        self.rate_filled = now;
        if self.rate_tokens >= 1.0 {
            self.rate_tokens -= 1.0;
            false
        } else {
            true
        }
    }
}

struct Shared {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn down(&self) -> Option<DownMode> {
        let mut st = self.lock();
        if st.faults.down_until.is_some_and(|t| std::time::Instant::now() >= t) {
            st.faults.down = None;
            st.faults.down_until = None;
        }
        st.faults.down
    }
}

pub struct FakeKinesis {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const DEFAULT_SEED: u64 = 0x5EED_F00D;

impl FakeKinesis {
    /// Starts on 127.0.0.1 (ephemeral port) with 2 shards and no faults.
    pub fn start() -> FakeKinesis {
        Self::start_with_shards(2)
    }

    pub fn start_with_shards(shards: u32) -> FakeKinesis {
        assert!(shards >= 1);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake kinesis");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                faults: Faults::default(),
                rng: DEFAULT_SEED,
                shard_count: shards,
                seq: 0,
                records: Vec::new(),
                requests: Vec::new(),
                request_count: 0,
                failed_entry_count: 0,
                resets: 0,
                reset_stored_entries: 0,
                delayed_responses: 0,
                delayed_stored_entries: 0,
                received: 0,
                rate_tokens: 0.0,
                rate_filled: std::time::Instant::now(),
                shard_tokens: Default::default(),
                created: now_secs(),
            }),
            changed: tokio::sync::Notify::new(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-kinesis-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("fake kinesis runtime");
                rt.block_on(accept_loop(shared2, listener, addr, rx));
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn fake kinesis thread");
        FakeKinesis { addr, shared, shutdown: Some(tx), thread: Some(thread) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    // ---- faults ----

    /// Changes any fault knobs at once.
    pub fn update_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.lock().faults);
        self.shared.changed.notify_waiters();
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Back to no faults (limits enforced, all streams known).
    pub fn clear_faults(&self) {
        self.update_faults(|f| *f = Faults::default());
    }

    /// Fails `fraction` of the entries of each put request with `code` (e.g.
    /// `ProvisionedThroughputExceededException`, `InternalFailure`). Deterministic for a seed.
    pub fn set_entry_failure(&self, fraction: f64, code: &str) {
        self.update_faults(|f| {
            f.entry_fail_fraction = fraction;
            f.entry_fail_code = code.to_string();
        });
    }

    /// Shorthand: `set_entry_failure(fraction, "ProvisionedThroughputExceededException")`.
    pub fn set_throttle_fraction(&self, fraction: f64) {
        self.set_entry_failure(fraction, "ProvisionedThroughputExceededException");
    }

    pub fn set_firehose_entry_failure_code(&self, code: &str) {
        self.update_faults(|f| f.firehose_entry_fail_code = code.to_string());
    }

    /// Restarts the fault RNG (entry failures and HTTP 500 decisions).
    pub fn set_seed(&self, seed: u64) {
        self.shared.lock().rng = seed;
    }

    pub fn set_http500_fraction(&self, fraction: f64) {
        self.update_faults(|f| f.http500_fraction = fraction);
    }

    /// Every request gets this error (None: stop).
    pub fn set_request_error(&self, code: Option<&str>) {
        self.update_faults(|f| {
            f.request_error = code.map(str::to_string);
            f.request_error_remaining = None;
        });
    }

    /// The next `n` requests get `code`; then normal service resumes.
    pub fn fail_next_requests(&self, n: u64, code: &str) {
        self.update_faults(|f| {
            f.request_error = (n > 0).then(|| code.to_string());
            f.request_error_remaining = Some(n);
        });
    }

    pub fn set_delay(&self, delay: Duration) {
        self.update_faults(|f| f.delay = delay);
    }

    pub fn set_down(&self, mode: Option<DownMode>) {
        self.update_faults(|f| {
            f.down = mode;
            f.down_until = None;
        });
    }

    /// Down in `mode` for `how_long`, then back up by itself.
    pub fn set_down_for(&self, mode: DownMode, how_long: Duration) {
        self.update_faults(|f| {
            f.down = Some(mode);
            f.down_until = Some(std::time::Instant::now() + how_long);
        });
    }

    /// Resets the connection (TCP RST, no response) of `fraction` of the requests once read;
    /// `after_processing`: their records are stored first (the response is what is lost).
    pub fn set_reset(&self, fraction: f64, after_processing: bool) {
        self.update_faults(|f| {
            f.reset_fraction = fraction;
            f.reset_after_processing = after_processing;
        });
    }

    /// Accept at most `records_per_sec` (None: no limit), throttling the entries over it.
    /// Requests signed with `access_key` fail with `ExpiredTokenException` from now on.
    pub fn expire_key(&self, access_key: &str) {
        self.update_faults(|f| f.expired_keys.push(access_key.to_string()));
    }

    pub fn set_rate_limit(&self, records_per_sec: Option<f64>) {
        self.update_faults(|f| f.rate_limit = records_per_sec);
        let mut st = self.shared.lock();
        st.rate_tokens = records_per_sec.unwrap_or(0.0);
        st.rate_filled = std::time::Instant::now();
    }

    /// Each shard accepts at most `records_per_sec` records and `bytes_per_sec` bytes (data and
    /// key) a second, as a Kinesis shard does (1,000 and 1 MiB); `None`: no limit.
    pub fn set_shard_limits(&self, limits: Option<(f64, f64)>) {
        self.update_faults(|f| f.shard_limits = limits);
        self.shared.lock().shard_tokens.clear();
    }

    /// Answers `fraction` of the requests only after `delay`, their records stored at once.
    pub fn set_response_delay(&self, fraction: f64, delay: Duration) {
        self.update_faults(|f| {
            f.response_delay_fraction = fraction;
            f.response_delay = delay;
        });
    }

    pub fn set_enforce_limits(&self, on: bool) {
        self.update_faults(|f| f.enforce_limits = on);
    }

    pub fn set_known_streams(&self, streams: Option<&[&str]>) {
        self.update_faults(|f| {
            f.known_streams = streams.map(|s| s.iter().map(|x| x.to_string()).collect());
        });
    }

    /// Number of (evenly split) shards reported and used for placement.
    pub fn set_shard_count(&self, n: u32) {
        assert!(n >= 1);
        self.shared.lock().shard_count = n;
    }

    // ---- observations ----

    /// Accepted Kinesis entries, in acceptance order: (partition key, data).
    pub fn records(&self) -> Vec<(String, Vec<u8>)> {
        self.shared
            .lock()
            .records
            .iter()
            .filter(|r| r.service == Service::Kinesis)
            .map(|r| (r.partition_key.clone(), r.data.clone()))
            .collect()
    }

    /// Data of accepted Kinesis entries.
    pub fn record_data(&self) -> Vec<Vec<u8>> {
        self.records().into_iter().map(|(_, d)| d).collect()
    }

    /// Data of accepted Firehose entries.
    pub fn firehose_records(&self) -> Vec<Vec<u8>> {
        self.shared.lock().records.iter().filter(|r| r.service == Service::Firehose).map(|r| r.data.clone()).collect()
    }

    pub fn all_records(&self) -> Vec<FakeRecord> {
        self.shared.lock().records.clone()
    }

    /// Data of the entries accepted from index `from` on (acceptance order, both services), for
    /// incremental readers: the next call passes `from` plus the number returned.
    pub fn record_data_since(&self, from: usize) -> Vec<Vec<u8>> {
        self.shared.lock().records.get(from..).unwrap_or_default().iter().map(|r| r.data.clone()).collect()
    }

    /// Number of accepted entries (both services).
    pub fn record_count(&self) -> usize {
        self.shared.lock().records.len()
    }

    /// Waits until at least `n` records were accepted, or `timeout`; returns the count.
    pub fn wait_for_count(&self, n: usize, timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        while self.record_count() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.record_count()
    }

    /// Requests that reached the handler (including faulted ones, but not connections dropped
    /// by `DownMode::Reset`/`Refuse`).
    pub fn request_count(&self) -> u64 {
        self.shared.lock().request_count
    }

    /// Entries failed individually by `set_entry_failure`.
    pub fn failed_entry_count(&self) -> u64 {
        self.shared.lock().failed_entry_count
    }

    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.lock().requests.clone()
    }

    /// (connections reset by `set_reset`, entries stored in those requests).
    pub fn reset_counts(&self) -> (u64, u64) {
        let st = self.shared.lock();
        (st.resets, st.reset_stored_entries)
    }

    /// (responses delayed by `set_response_delay`, entries stored in those requests).
    pub fn delayed_response_counts(&self) -> (u64, u64) {
        let st = self.shared.lock();
        (st.delayed_responses, st.delayed_stored_entries)
    }

    /// Requests whose headers arrived, whatever happened next (held, reset, delayed…).
    pub fn received_count(&self) -> u64 {
        self.shared.lock().received
    }

    /// Forgets records, requests and counters (faults stay).
    pub fn reset_observations(&self) {
        let mut st = self.shared.lock();
        st.records.clear();
        st.requests.clear();
        st.request_count = 0;
        st.failed_entry_count = 0;
        st.resets = 0;
        st.reset_stored_entries = 0;
        st.delayed_responses = 0;
        st.delayed_stored_entries = 0;
        st.received = 0;
    }
}

impl Drop for FakeKinesis {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.shared.changed.notify_waiters();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- server

async fn accept_loop(
    shared: Arc<Shared>,
    std_listener: std::net::TcpListener,
    addr: SocketAddr,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let mut listener = Some(tokio::net::TcpListener::from_std(std_listener).expect("tokio listener"));
    loop {
        let notified = shared.changed.notified();
        let down = shared.down();
        if down == Some(DownMode::Refuse) {
            listener = None;
        } else if listener.is_none() {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                    }
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = notified => continue,
            // Fallback in case a change notification is missed.
            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
            accepted = async {
                match &listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            } => {
                let Ok((stream, _)) = accepted else { continue };
                if shared.down() == Some(DownMode::Reset) {
                    let _ = stream.set_zero_linger();
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                // For `set_reset`: the socket is hyper's, but its fd stays open while a request on it
                // is being handled.
                let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(shared.clone(), req, fd));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

type Resp = Response<Full<Bytes>>;

async fn handle(shared: Arc<Shared>, req: Request<Incoming>, fd: i32) -> Result<Resp, std::io::Error> {
    shared.lock().received += 1;
    // Hang: hold the request until the mode changes.
    while shared.down() == Some(DownMode::Hang) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if shared.down().is_some() {
        // Returning an error makes hyper close the connection without a response.
        return Err(std::io::Error::other("fake kinesis is down"));
    }
    let target = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let access_key = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .map(str::to_string);
    let body = req.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
    let delay = shared.lock().faults.delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if shared.down().is_some() {
        return Err(std::io::Error::other("fake kinesis is down"));
    }
    let (reset, after, delayed, response_delay) = {
        let mut st = shared.lock();
        let f = st.faults.clone();
        let reset = f.reset_fraction > 0.0 && next_f64(&mut st.rng) < f.reset_fraction;
        let delayed = !reset && f.response_delay_fraction > 0.0 && next_f64(&mut st.rng) < f.response_delay_fraction;
        (reset, f.reset_after_processing, delayed, f.response_delay)
    };
    if reset {
        let stored = if after { stored_entries(&shared, &target, &body, access_key) } else { 0 };
        {
            let mut st = shared.lock();
            st.resets += 1;
            st.reset_stored_entries += stored;
        }
        // SO_LINGER 0: closing sends RST instead of FIN. Returning an error makes hyper close it.
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on the fd of the connection this request came on, still open here.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        return Err(std::io::Error::other("fake kinesis reset the connection"));
    }
    let before = shared.lock().records.len();
    let resp = process(&shared, &target, &body, access_key);
    if delayed {
        {
            let mut st = shared.lock();
            st.delayed_responses += 1;
            st.delayed_stored_entries += (st.records.len() - before) as u64;
        }
        tokio::time::sleep(response_delay).await;
    }
    Ok(resp)
}

/// Processes a request whose response will be lost; returns how many entries were stored.
fn stored_entries(shared: &Shared, target: &str, body: &[u8], access_key: Option<String>) -> u64 {
    let before = shared.lock().records.len();
    drop(process(shared, target, body, access_key));
    (shared.lock().records.len() - before) as u64
}

fn process(shared: &Shared, target: &str, body: &[u8], access_key: Option<String>) -> Resp {
    let mut st = shared.lock();
    st.request_count += 1;
    let mut log = RequestLog {
        target: target.to_string(),
        stream: None,
        entries: 0,
        bytes: 0,
        status: 200,
        error_code: None,
        failed_entries: 0,
        access_key,
    };
    let result = dispatch(&mut st, target, body, &mut log);
    let resp = match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => {
            log.status = e.status.as_u16();
            log.error_code = Some(e.code.clone());
            error_response(e.status, &e.code, &e.message)
        }
    };
    st.requests.push(log);
    resp
}

struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

fn api_err(code: &str, message: impl Into<String>) -> ApiError {
    ApiError { status: status_for(code), code: code.to_string(), message: message.into() }
}

fn status_for(code: &str) -> StatusCode {
    match code {
        "InternalFailure" | "InternalFailureException" | "InternalServerError" => StatusCode::INTERNAL_SERVER_ERROR,
        c if c.starts_with("ServiceUnavailable") => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn dispatch(st: &mut State, target: &str, body: &[u8], log: &mut RequestLog) -> Result<Value, ApiError> {
    // Whole-request faults first.
    if log.access_key.as_ref().is_some_and(|k| st.faults.expired_keys.contains(k)) {
        return Err(api_err("ExpiredTokenException", "The security token included in the request is expired"));
    }
    let http500 = st.faults.http500_fraction;
    if http500 > 0.0 && next_f64(&mut st.rng) < http500 {
        return Err(api_err("InternalFailure", "Injected internal failure (fake kinesis)."));
    }
    if let Some(code) = st.faults.request_error.clone() {
        match &mut st.faults.request_error_remaining {
            Some(0) => st.faults.request_error = None,
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    st.faults.request_error = None;
                }
                return Err(request_error(&code, target, body, log));
            }
            None => return Err(request_error(&code, target, body, log)),
        }
    }

    let req: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| api_err("SerializationException", format!("bad JSON body: {e}")))?
    };
    let (service, op) = match target.split_once('.') {
        Some(("Kinesis_20131202", op)) => (Service::Kinesis, op),
        Some(("Firehose_20150804", op)) => (Service::Firehose, op),
        _ => {
            return Err(api_err("UnknownOperationException", format!("unknown X-Amz-Target {target:?}")));
        }
    };
    match (service, op) {
        (Service::Kinesis, "PutRecords") => kinesis_put_records(st, &req, log),
        (Service::Kinesis, "PutRecord") => kinesis_put_record(st, &req, log),
        (Service::Kinesis, "DescribeStreamSummary") => {
            let name = kinesis_stream(st, &req, log)?;
            Ok(json!({ "StreamDescriptionSummary": stream_summary(st, &name) }))
        }
        (Service::Kinesis, "DescribeStream") => {
            let name = kinesis_stream(st, &req, log)?;
            let mut d = stream_summary(st, &name);
            let obj = d.as_object_mut().expect("object");
            obj.remove("OpenShardCount");
            obj.remove("ConsumerCount");
            obj.insert("Shards".into(), Value::Array(shards_json(st.shard_count)));
            obj.insert("HasMoreShards".into(), Value::Bool(false));
            Ok(json!({ "StreamDescription": d }))
        }
        (Service::Kinesis, "ListShards") => {
            if req.get("NextToken").is_none() {
                kinesis_stream(st, &req, log)?;
            }
            Ok(json!({ "Shards": shards_json(st.shard_count) }))
        }
        (Service::Firehose, "PutRecordBatch") => firehose_put(st, &req, log, true),
        (Service::Firehose, "PutRecord") => firehose_put(st, &req, log, false),
        (Service::Firehose, "DescribeDeliveryStream") => {
            let name = firehose_stream(st, &req, log)?;
            Ok(json!({ "DeliveryStreamDescription": {
                "DeliveryStreamName": name,
                "DeliveryStreamARN": format!("arn:aws:firehose:us-east-1:{ACCOUNT}:deliverystream/{name}"),
                "DeliveryStreamStatus": "ACTIVE",
                "DeliveryStreamType": "DirectPut",
                "VersionId": "1",
                "CreateTimestamp": st.created,
                "Destinations": [],
                "HasMoreDestinations": false,
            }}))
        }
        _ => Err(api_err("UnknownOperationException", format!("the fake does not implement {target}"))),
    }
}

/// A whole-request error as AWS words it, naming the stream when the body has one.
fn request_error(code: &str, target: &str, body: &[u8], log: &mut RequestLog) -> ApiError {
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let stream = req.get("StreamName").or_else(|| req.get("DeliveryStreamName")).and_then(Value::as_str);
    log.stream = stream.map(str::to_string);
    let name = stream.unwrap_or("?");
    let (service, kind) =
        if target.starts_with("Firehose") { ("firehose", "deliverystream") } else { ("kinesis", "stream") };
    let action = target.split_once('.').map_or(target, |(_, op)| op);
    let message = match code {
        "AccessDeniedException" => format!(
            "User: arn:aws:iam::{ACCOUNT}:user/agent is not authorized to perform: {service}:{action} on resource: \
             arn:aws:{service}:us-east-1:{ACCOUNT}:{kind}/{name} because no identity-based policy allows the \
             {service}:{action} action"
        ),
        "ResourceNotFoundException" => format!("Stream {name} under account {ACCOUNT} not found."),
        c => format!("Injected {c} (fake kinesis)."),
    };
    api_err(code, message)
}

fn kinesis_stream(st: &State, req: &Value, log: &mut RequestLog) -> Result<String, ApiError> {
    let name = req
        .get("StreamName")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            req.get("StreamARN")
                .and_then(Value::as_str)
                .and_then(|arn| arn.rsplit_once("stream/").map(|(_, n)| n.to_string()))
        })
        .ok_or_else(|| api_err("ValidationException", "Either StreamName or StreamARN should be provided."))?;
    log.stream = Some(name.clone());
    check_known(st, &name, "Stream")?;
    Ok(name)
}

fn firehose_stream(st: &State, req: &Value, log: &mut RequestLog) -> Result<String, ApiError> {
    let name = req
        .get("DeliveryStreamName")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| api_err("ValidationException", "DeliveryStreamName is required."))?;
    log.stream = Some(name.clone());
    check_known(st, &name, "Firehose")?;
    Ok(name)
}

fn check_known(st: &State, name: &str, what: &str) -> Result<(), ApiError> {
    if let Some(known) = &st.faults.known_streams
        && !known.iter().any(|k| k == name)
    {
        return Err(api_err("ResourceNotFoundException", format!("{what} {name} under account {ACCOUNT} not found.")));
    }
    Ok(())
}

fn stream_summary(st: &State, name: &str) -> Value {
    json!({
        "StreamName": name,
        "StreamARN": format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{name}"),
        "StreamStatus": "ACTIVE",
        "StreamModeDetails": { "StreamMode": "PROVISIONED" },
        "RetentionPeriodHours": 24,
        "StreamCreationTimestamp": st.created,
        "EnhancedMonitoring": [ { "ShardLevelMetrics": [] } ],
        "EncryptionType": "NONE",
        "OpenShardCount": st.shard_count,
        "ConsumerCount": 0,
    })
}

fn shard_range(n: u32, i: u32) -> (u128, u128) {
    let step = u128::MAX / n as u128;
    let start = step * i as u128;
    let end = if i + 1 == n { u128::MAX } else { step * (i as u128 + 1) - 1 };
    (start, end)
}

fn shard_id(i: u32) -> String {
    format!("shardId-{i:012}")
}

fn shards_json(n: u32) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let (start, end) = shard_range(n, i);
            json!({
                "ShardId": shard_id(i),
                "HashKeyRange": {
                    "StartingHashKey": start.to_string(),
                    "EndingHashKey": end.to_string(),
                },
                "SequenceNumberRange": {
                    "StartingSequenceNumber": format!("49{:054}", 0),
                },
            })
        })
        .collect()
}

fn shard_for(n: u32, hash: u128) -> String {
    (0..n)
        .find(|&i| {
            let (s, e) = shard_range(n, i);
            s <= hash && hash <= e
        })
        .map(shard_id)
        .unwrap_or_else(|| shard_id(n - 1))
}

struct Entry {
    key: String,
    ehk: Option<String>,
    data: Vec<u8>,
}

fn decode_entry(v: &Value, firehose: bool) -> Result<Entry, ApiError> {
    let data_b64 = v.get("Data").and_then(Value::as_str).ok_or_else(|| {
        api_err(
            "ValidationException",
            "1 validation error detected: Value null at 'data' failed to satisfy constraint: Member must not be null",
        )
    })?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(data_b64)
        .map_err(|e| api_err("SerializationException", format!("Data is not base64: {e}")))?;
    let key = if firehose {
        String::new()
    } else {
        v.get("PartitionKey")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                api_err(
                    "ValidationException",
                    "1 validation error detected: Value null at 'partitionKey' failed to satisfy constraint: Member must not be null",
                )
            })?
            .to_string()
    };
    let ehk = v.get("ExplicitHashKey").and_then(Value::as_str).map(str::to_string);
    Ok(Entry { key, ehk, data })
}

fn validate_kinesis(entries: &[Entry], single: bool) -> Result<(), ApiError> {
    if !single && (entries.is_empty() || entries.len() > MAX_RECORDS_PER_REQUEST) {
        return Err(api_err(
            "ValidationException",
            format!(
                "1 validation error detected: Value '{}' records at 'records' failed to satisfy constraint: Member must have length less than or equal to {MAX_RECORDS_PER_REQUEST} and greater than or equal to 1",
                entries.len()
            ),
        ));
    }
    let mut total = 0usize;
    for (i, e) in entries.iter().enumerate() {
        let chars = e.key.chars().count();
        if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
            return Err(api_err(
                "ValidationException",
                format!(
                    "1 validation error detected: Value at 'records.{}.member.partitionKey' failed to satisfy constraint: Member must have length between 1 and {MAX_PARTITION_KEY_CHARS} (was {chars})",
                    i + 1
                ),
            ));
        }
        let size = e.data.len() + e.key.len();
        if size > MAX_RECORD_BYTES {
            return Err(api_err(
                "ValidationException",
                format!(
                    "1 validation error detected: Value at 'records.{}.member.data' failed to satisfy constraint: data + partition key must be at most {MAX_RECORD_BYTES} bytes (was {size})",
                    i + 1
                ),
            ));
        }
        if let Some(h) = &e.ehk
            && h.parse::<u128>().is_err()
        {
            return Err(api_err(
                "ValidationException",
                format!("ExplicitHashKey {h:?} is not an integer in [0, 2^128)"),
            ));
        }
        total += size;
    }
    if total > MAX_REQUEST_BYTES {
        return Err(api_err(
            "ValidationException",
            format!("Records size exceeds 5 MB limit: data + partition keys total {total} bytes > {MAX_REQUEST_BYTES}"),
        ));
    }
    Ok(())
}

fn validate_firehose(entries: &[Entry], single: bool) -> Result<(), ApiError> {
    if !single && (entries.is_empty() || entries.len() > MAX_RECORDS_PER_REQUEST) {
        return Err(api_err(
            "ValidationException",
            format!(
                "1 validation error detected: Value '{}' records at 'records' failed to satisfy constraint: Member must have length less than or equal to {MAX_RECORDS_PER_REQUEST} and greater than or equal to 1",
                entries.len()
            ),
        ));
    }
    let mut total = 0usize;
    for (i, e) in entries.iter().enumerate() {
        if e.data.len() > FIREHOSE_MAX_RECORD_BYTES {
            return Err(api_err(
                "ValidationException",
                format!(
                    "1 validation error detected: Value at 'records.{}.member.data' failed to satisfy constraint: Member must have length less than or equal to {FIREHOSE_MAX_RECORD_BYTES} (was {})",
                    i + 1,
                    e.data.len()
                ),
            ));
        }
        total += e.data.len();
    }
    if total > FIREHOSE_MAX_REQUEST_BYTES {
        return Err(api_err("ValidationException", format!("Records size exceeds 4 MiB limit: {total} bytes")));
    }
    Ok(())
}

fn entries_of(req: &Value, firehose: bool) -> Result<Vec<Entry>, ApiError> {
    req.get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| api_err("ValidationException", "Records is required."))?
        .iter()
        .map(|v| decode_entry(v, firehose))
        .collect()
}

fn record_stats(log: &mut RequestLog, entries: &[Entry]) {
    log.entries = entries.len();
    log.bytes = entries.iter().map(|e| e.data.len() + e.key.len()).sum();
}

fn fail_message(code: &str, shard: &str, stream: &str) -> String {
    match code {
        "ProvisionedThroughputExceededException" => {
            format!("Rate exceeded for shard {shard} in stream {stream} under account {ACCOUNT}.")
        }
        "InternalFailure" => "Internal service failure.".to_string(),
        c => format!("Injected {c} (fake kinesis)."),
    }
}

fn kinesis_put_records(st: &mut State, req: &Value, log: &mut RequestLog) -> Result<Value, ApiError> {
    let stream = kinesis_stream(st, req, log)?;
    let entries = entries_of(req, false)?;
    record_stats(log, &entries);
    if st.faults.enforce_limits {
        validate_kinesis(&entries, false)?;
    }
    let mut results = Vec::with_capacity(entries.len());
    let mut failed = 0usize;
    for e in entries {
        let (shard, seq) = match accept_kinesis(st, &stream, e) {
            Ok(ok) => ok,
            Err((code, message)) => {
                failed += 1;
                results.push(json!({ "ErrorCode": code, "ErrorMessage": message }));
                continue;
            }
        };
        results.push(json!({ "SequenceNumber": seq, "ShardId": shard }));
    }
    log.failed_entries = failed;
    st.failed_entry_count += failed as u64;
    Ok(json!({
        "FailedRecordCount": failed,
        "Records": results,
        "EncryptionType": "NONE",
    }))
}

/// Decides injection and stores the entry. Ok((shard, seq)) or Err((code, message)).
fn accept_kinesis(st: &mut State, stream: &str, e: Entry) -> Result<(String, String), (String, String)> {
    let hash = match &e.ehk {
        Some(h) => h.parse::<u128>().unwrap_or(0),
        None => md5_u128(&e.key),
    };
    let shard = shard_for(st.shard_count, hash);
    let frac = st.faults.entry_fail_fraction;
    let size = e.data.len() + e.key.len();
    if st.over_rate() || st.over_shard_limits(&shard, size) || (frac > 0.0 && next_f64(&mut st.rng) < frac) {
        let code = st.faults.entry_fail_code.clone();
        let msg = fail_message(&code, &shard, stream);
        return Err((code, msg));
    }
    st.seq += 1;
    let seq = format!("49{:054}", st.seq);
    st.records.push(FakeRecord {
        service: Service::Kinesis,
        stream: stream.to_string(),
        partition_key: e.key,
        explicit_hash_key: e.ehk,
        data: e.data,
        shard_id: shard.clone(),
        sequence_number: seq.clone(),
        accepted_at: std::time::Instant::now(),
    });
    Ok((shard, seq))
}

fn kinesis_put_record(st: &mut State, req: &Value, log: &mut RequestLog) -> Result<Value, ApiError> {
    let stream = kinesis_stream(st, req, log)?;
    let e = decode_entry(req, false)?;
    let entries = [e];
    record_stats(log, &entries);
    if st.faults.enforce_limits {
        validate_kinesis(&entries, true)?;
    }
    let [e] = entries;
    match accept_kinesis(st, &stream, e) {
        Ok((shard, seq)) => Ok(json!({
            "ShardId": shard,
            "SequenceNumber": seq,
            "EncryptionType": "NONE",
        })),
        Err((code, message)) => {
            log.failed_entries = 1;
            st.failed_entry_count += 1;
            Err(api_err(&code, message))
        }
    }
}

fn firehose_put(st: &mut State, req: &Value, log: &mut RequestLog, batch: bool) -> Result<Value, ApiError> {
    let stream = firehose_stream(st, req, log)?;
    let entries = if batch {
        entries_of(req, true)?
    } else {
        let rec = req.get("Record").ok_or_else(|| api_err("ValidationException", "Record is required."))?;
        vec![decode_entry(rec, true)?]
    };
    record_stats(log, &entries);
    if st.faults.enforce_limits {
        validate_firehose(&entries, !batch)?;
    }
    let mut results = Vec::with_capacity(entries.len());
    let mut failed = 0usize;
    for e in entries {
        let frac = st.faults.entry_fail_fraction;
        if st.over_rate() || (frac > 0.0 && next_f64(&mut st.rng) < frac) {
            failed += 1;
            let code = st.faults.firehose_entry_fail_code.clone();
            let message = format!("Slow down. (injected {code}, fake firehose)");
            results.push(json!({ "ErrorCode": code, "ErrorMessage": message }));
            continue;
        }
        st.seq += 1;
        let id = format!("{:016x}{:016x}", st.seq, splitmix(&mut st.rng));
        st.records.push(FakeRecord {
            service: Service::Firehose,
            stream: stream.clone(),
            partition_key: String::new(),
            explicit_hash_key: None,
            data: e.data,
            shard_id: String::new(),
            sequence_number: id.clone(),
            accepted_at: std::time::Instant::now(),
        });
        results.push(json!({ "RecordId": id }));
    }
    log.failed_entries = failed;
    st.failed_entry_count += failed as u64;
    if batch {
        Ok(json!({
            "FailedPutCount": failed,
            "Encrypted": false,
            "RequestResponses": results,
        }))
    } else if failed > 0 {
        let code = st.faults.firehose_entry_fail_code.clone();
        Err(api_err(&code, "Slow down. (injected, fake firehose)"))
    } else {
        Ok(json!({
            "RecordId": results[0]["RecordId"],
            "Encrypted": false,
        }))
    }
}

fn json_response(status: StatusCode, v: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", JSON_11)
        .header("x-amzn-requestid", request_id())
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("response")
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Resp {
    let body = json!({ "__type": code, "message": message });
    Response::builder()
        .status(status)
        .header("content-type", JSON_11)
        .header("x-amzn-errortype", code)
        .header("x-amzn-requestid", request_id())
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!("fake-{:016x}", N.fetch_add(1, Ordering::Relaxed))
}

pub fn md5_u128(key: &str) -> u128 {
    let d = Md5::digest(key.as_bytes());
    u128::from_be_bytes(d.as_slice().try_into().expect("16 bytes"))
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as f64).unwrap_or(0.0)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn next_f64(state: &mut u64) -> f64 {
    (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64
}
