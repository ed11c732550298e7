//! bench-sink: a fast local Kinesis Data Streams / Firehose endpoint for kinesis-agent's
//! benchmarks (`bench/harness.py`). Not part of the product.
//!
//! It answers the AWS JSON 1.1 protocol (`POST /` with `X-Amz-Target`) for the calls the agent
//! makes, accepts any credentials (SigV4 is not checked), refuses what Kinesis and Firehose
//! refuse (too many records, records or requests too large, bad partition keys), and can fail a
//! fraction of records, answer late, spread records over shards as Kinesis does, and write every
//! accepted record to a file. `GET /stats` on the same port tells how much it accepted.

mod api;
mod shards;
mod tls;

use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use api::Op;

/// Larger bodies are refused before they are parsed (a PutRecords holds at most 5 MiB of data,
/// about 6.7 MiB once in base64).
const MAX_BODY: usize = 16 << 20;

const USAGE: &str = "bench-sink: a local Kinesis Data Streams / Firehose endpoint for benchmarks

usage: bench-sink [options]
  --host ADDR        address to listen on (default 127.0.0.1)
  --port N           port (default 4567; 0 picks a free one)
  --port-file FILE   write {\"port\": N, \"tls_port\": M} there once listening
  --tls-port N       also listen with HTTPS on port N (0 picks a free one), with a certificate
                     for 127.0.0.1 and localhost signed by a CA made at start
  --cert-out FILE    where to write that CA's certificate (PEM), for clients to trust
  --threads N        worker threads (default 1)
  --fail-rate F      answer that fraction of records ProvisionedThroughputExceededException
                     (Firehose: ServiceUnavailableException), drawn from a seeded sequence
  --seed N           seed of that sequence (default 1)
  --latency-ms N     wait N ms before answering a request that carries records
  --shards N         shards of every stream (default 1): equal hash key ranges; each record's
                     shard is chosen by the MD5 of its partition key or its explicit hash key
  --shard-limits R,B Kinesis's write limits per shard: R records and B bytes per second (a
                     bucket per shard, empty at first, holding a second's worth); PutRecords
                     entries over them get ProvisionedThroughputExceededException, one by one
  --tag-bytes N      count the accepted records by the first N bytes of their data (/stats:
                     \"by_tag\"), to tell several producers' shares apart
  --dump FILE        append every accepted record's data to FILE, one per line (a newline is
                     added to records without one); flushed every second and on exit
  --quiet            no start and exit lines on stderr

GET /stats (JSON counters), /reset (zero them), /flush (write the dump out), /health.
SIGTERM or SIGINT: flush the dump, print the counters, exit.";

#[derive(Clone, Debug)]
pub struct Opts {
    pub host: IpAddr,
    pub port: u16,
    pub port_file: Option<PathBuf>,
    pub tls_port: Option<u16>,
    pub cert_out: Option<PathBuf>,
    pub threads: usize,
    pub fail_rate: f64,
    pub seed: u64,
    pub latency_ms: u64,
    pub dump: Option<PathBuf>,
    pub shards: u32,
    pub shard_limits: Option<(f64, f64)>,
    pub tag_bytes: usize,
    pub quiet: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 4567,
            port_file: None,
            tls_port: None,
            cert_out: None,
            threads: 1,
            fail_rate: 0.0,
            seed: 1,
            latency_ms: 0,
            dump: None,
            shards: 1,
            shard_limits: None,
            tag_bytes: 0,
            quiet: false,
        }
    }
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Opts, String> {
    fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse().map_err(|_| format!("{flag}: cannot use {v:?}"))
    }
    let mut o = Opts::default();
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--host" => o.host = value(&flag, args.next())?,
            "--port" => o.port = value(&flag, args.next())?,
            "--port-file" => o.port_file = Some(value(&flag, args.next())?),
            "--tls-port" => o.tls_port = Some(value(&flag, args.next())?),
            "--cert-out" => o.cert_out = Some(value(&flag, args.next())?),
            "--threads" => o.threads = value::<usize>(&flag, args.next())?.max(1),
            "--fail-rate" => o.fail_rate = value(&flag, args.next())?,
            "--seed" => o.seed = value(&flag, args.next())?,
            "--latency-ms" => o.latency_ms = value(&flag, args.next())?,
            "--dump" => o.dump = Some(value(&flag, args.next())?),
            "--shards" => o.shards = value::<u32>(&flag, args.next())?.max(1),
            "--shard-limits" => {
                let v: String = value(&flag, args.next())?;
                let pair = v.split_once(',').and_then(|(r, b)| Some((r.parse().ok()?, b.parse().ok()?)));
                match pair {
                    Some((r, b)) if r >= 1.0 && b >= 1.0 => o.shard_limits = Some((r, b)),
                    _ => {
                        return Err(format!(
                            "--shard-limits: cannot use {v:?} (records,bytes per second, e.g. 1000,1048576)"
                        ));
                    }
                }
            }
            "--tag-bytes" => o.tag_bytes = value(&flag, args.next())?,
            "--quiet" => o.quiet = true,
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.tls_port.is_some() != o.cert_out.is_some() {
        return Err("--tls-port and --cert-out go together".into());
    }
    if !(0.0..=1.0).contains(&o.fail_rate) {
        return Err("--fail-rate is a fraction between 0 and 1".into());
    }
    Ok(o)
}

/// Counters behind /stats.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub by_op: [AtomicU64; Op::ALL.len()],
    /// Requests answered with an error (refused, or a PutRecord failed on purpose).
    pub errors: AtomicU64,
    pub body_bytes: AtomicU64,
    /// Records in requests that passed the checks.
    pub records_received: AtomicU64,
    pub records_accepted: AtomicU64,
    /// Records failed on purpose (--fail-rate) or over --shard-limits.
    pub records_failed: AtomicU64,
    /// Data bytes of the accepted records.
    pub bytes_accepted: AtomicU64,
    pub first_record_us: AtomicU64,
    pub last_record_us: AtomicU64,
    pub in_flight: AtomicI64,
    pub max_in_flight: AtomicI64,
    pub connections: AtomicI64,
    pub max_connections: AtomicI64,
    pub connections_total: AtomicU64,
}

impl Stats {
    fn reset(&self) {
        let all = [
            &self.requests,
            &self.errors,
            &self.body_bytes,
            &self.records_received,
            &self.records_accepted,
            &self.records_failed,
            &self.bytes_accepted,
            &self.first_record_us,
            &self.last_record_us,
            &self.connections_total,
        ];
        for c in all.into_iter().chain(&self.by_op) {
            c.store(0, Relaxed);
        }
        self.max_in_flight.store(self.in_flight.load(Relaxed), Relaxed);
        self.max_connections.store(self.connections.load(Relaxed), Relaxed);
    }

    fn json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Relaxed);
        let op = |o: Op| get(&self.by_op[o as usize]);
        let batches = op(Op::PutRecords) + op(Op::PutRecordBatch);
        let ms = |c: &AtomicU64| match get(c) {
            0 => serde_json::Value::Null,
            us => (us as f64 / 1000.0).into(),
        };
        let by_op: serde_json::Map<_, _> =
            Op::ALL.iter().filter(|&&o| op(o) > 0).map(|&o| (o.name().to_string(), op(o).into())).collect();
        serde_json::json!({
            "records": get(&self.records_accepted),
            "records_received": get(&self.records_received),
            "records_failed": get(&self.records_failed),
            "bytes": get(&self.bytes_accepted),
            "requests": get(&self.requests),
            "requests_by_operation": by_op,
            "put_records_requests": op(Op::PutRecords),
            "put_record_batch_requests": op(Op::PutRecordBatch),
            "single_record_requests": op(Op::PutRecord) + op(Op::FirehosePutRecord),
            "records_per_request": if batches > 0 {
                ((get(&self.records_received) as f64 / batches as f64) * 10.0).round() / 10.0
            } else { 0.0 },
            "error_responses": get(&self.errors),
            "body_bytes": get(&self.body_bytes),
            "first_record_epoch_ms": ms(&self.first_record_us),
            "last_record_epoch_ms": ms(&self.last_record_us),
            "max_in_flight_requests": self.max_in_flight.load(Relaxed),
            "connections": self.connections.load(Relaxed),
            "max_connections": self.max_connections.load(Relaxed),
            "connections_total": get(&self.connections_total),
        })
    }
}

/// Adds one to a gauge and its peak, and takes it off when dropped.
struct Gauge<'a>(&'a AtomicI64);

impl<'a> Gauge<'a> {
    fn up(gauge: &'a AtomicI64, peak: &AtomicI64) -> Gauge<'a> {
        peak.fetch_max(gauge.fetch_add(1, Relaxed) + 1, Relaxed);
        Gauge(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

pub struct State {
    pub opts: Opts,
    pub shards: shards::Shards,
    pub stats: Stats,
    /// The next sequence number (or Firehose record id).
    pub seq: AtomicU64,
    /// How many failure draws were made: the next draw is the seeded sequence's value there.
    draws: AtomicU64,
    /// A draw below this fails the record (None: --fail-rate 0).
    fail_below: Option<u64>,
    pub dump: Option<Mutex<BufWriter<File>>>,
    pub started_epoch_s: f64,
    pub limits: Option<shards::Limits>,
    /// Records accepted by the first `--tag-bytes` bytes of their data.
    tags: Mutex<std::collections::BTreeMap<Vec<u8>, u64>>,
}

impl State {
    pub fn new(opts: Opts) -> io::Result<State> {
        let dump = match &opts.dump {
            Some(path) => {
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                Some(Mutex::new(BufWriter::with_capacity(1 << 20, file)))
            }
            None => None,
        };
        let fail_below = match opts.fail_rate {
            r if r <= 0.0 => None,
            r if r >= 1.0 => Some(u64::MAX),
            r => Some((r * u64::MAX as f64) as u64),
        };
        Ok(State {
            shards: shards::Shards::new(opts.shards),
            stats: Stats::default(),
            seq: AtomicU64::new(1),
            draws: AtomicU64::new(0),
            fail_below,
            dump,
            started_epoch_s: (now_us() / 1000) as f64 / 1000.0,
            limits: opts.shard_limits.map(|(r, b)| shards::Limits::new(opts.shards.max(1) as usize, r, b)),
            tags: Mutex::new(Default::default()),
            opts,
        })
    }

    /// Which of the next `n` records fail on purpose.
    pub fn draw_failures(&self, n: usize) -> Vec<bool> {
        let Some(below) = self.fail_below else { return vec![false; n] };
        let first = self.draws.fetch_add(n as u64, Relaxed);
        (0..n as u64).map(|i| below == u64::MAX || splitmix64(self.opts.seed, first + i) < below).collect()
    }

    /// Counts the records of a request that passed the checks, and writes the accepted ones to the
    /// dump. `data(i)` is record i's data.
    pub fn accept<'a>(&self, data: impl Fn(usize) -> &'a [u8], failed: &[bool], accepted_bytes: usize) {
        let accepted = failed.iter().filter(|&&f| !f).count();
        if let Some(dump) = &self.dump
            && accepted > 0
        {
            let mut out = dump.lock().unwrap_or_else(|e| e.into_inner());
            for (i, _) in failed.iter().enumerate().filter(|(_, f)| !**f) {
                let record = data(i);
                let newline = !record.ends_with(b"\n");
                // A failed write is seen at the next flush, which reports it.
                let _ = out.write_all(record).and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
            }
        }
        if self.opts.tag_bytes > 0 && accepted > 0 {
            let mut tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
            for (i, _) in failed.iter().enumerate().filter(|(_, f)| !**f) {
                let record = data(i);
                *tags.entry(record[..record.len().min(self.opts.tag_bytes)].to_vec()).or_default() += 1;
            }
        }
        self.stats.records_failed.fetch_add((failed.len() - accepted) as u64, Relaxed);
        if accepted > 0 {
            let now = now_us();
            let _ = self.stats.first_record_us.compare_exchange(0, now, Relaxed, Relaxed);
            self.stats.last_record_us.fetch_max(now, Relaxed);
            self.stats.bytes_accepted.fetch_add(accepted_bytes as u64, Relaxed);
            self.stats.records_accepted.fetch_add(accepted as u64, Relaxed);
        }
    }

    /// The counters, and the records accepted by tag (with `--tag-bytes`).
    fn json(&self) -> serde_json::Value {
        let mut v = self.stats.json();
        if self.opts.tag_bytes > 0 {
            let tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
            let by_tag: serde_json::Map<_, _> =
                tags.iter().map(|(t, n)| (String::from_utf8_lossy(t).into_owned(), (*n).into())).collect();
            v["by_tag"] = by_tag.into();
        }
        v
    }

    fn flush_dump(&self) {
        if let Some(dump) = &self.dump
            && let Err(e) = dump.lock().unwrap_or_else(|e| e.into_inner()).flush()
        {
            eprintln!("bench-sink: cannot write the dump: {e}");
        }
    }
}

/// The `index`-th value of a sequence of uniform 64-bit numbers (SplitMix64's finaliser).
fn splitmix64(seed: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn respond(status: u16, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

const AMZ_JSON: &str = "application/x-amz-json-1.1";

fn control(state: &State, path: &str) -> Response<Full<Bytes>> {
    let json = |v: serde_json::Value| respond(200, "application/json", serde_json::to_vec(&v).unwrap_or_default());
    match path {
        "/stats" => json(state.json()),
        "/reset" => {
            state.stats.reset();
            state.tags.lock().unwrap_or_else(|e| e.into_inner()).clear();
            json(state.json())
        }
        "/flush" => {
            state.flush_dump();
            json(serde_json::json!({ "flushed": state.dump.is_some() }))
        }
        "/health" => respond(200, "text/plain", b"ok\n".to_vec()),
        _ => respond(404, "text/plain", b"GET /stats, /reset, /flush or /health; the API is POST /\n".to_vec()),
    }
}

async fn serve(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET {
        return Ok(control(&state, req.uri().path()));
    }
    let op = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).map_or(Op::Unknown, Op::from_target);
    let stats = &state.stats;
    stats.requests.fetch_add(1, Relaxed);
    stats.by_op[op as usize].fetch_add(1, Relaxed);
    let _in_flight = Gauge::up(&stats.in_flight, &stats.max_in_flight);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            stats.errors.fetch_add(1, Relaxed);
            let kind = if e.is::<http_body_util::LengthLimitError>() { 413 } else { 400 };
            return Ok(respond(kind, "text/plain", format!("{e}\n").into_bytes()));
        }
    };
    stats.body_bytes.fetch_add(body.len() as u64, Relaxed);
    let answer = api::handle(&state, op, &body);
    if op.carries_records() && state.opts.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(state.opts.latency_ms)).await;
    }
    let request_id = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), stats.requests.load(Relaxed));
    let mut response = match answer {
        Ok(body) => respond(200, AMZ_JSON, body),
        Err(e) => {
            stats.errors.fetch_add(1, Relaxed);
            let mut r = respond(e.status, AMZ_JSON, e.body());
            if let Ok(v) = HeaderValue::from_str(e.kind) {
                r.headers_mut().insert("x-amzn-errortype", v);
            }
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    Ok(response)
}

/// Serves one connection, plain or TLS.
async fn connection<S>(state: Arc<State>, io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stats = &state.stats;
    stats.connections_total.fetch_add(1, Relaxed);
    let _open = Gauge::up(&stats.connections, &stats.max_connections);
    let service = service_fn(|req| serve(state.clone(), req));
    // A client that goes away mid-request is its own business.
    let _ = http1::Builder::new().serve_connection(TokioIo::new(io), service).await;
}

async fn accept(listener: &TcpListener) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                eprintln!("bench-sink: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn run(opts: Opts) -> io::Result<()> {
    let listener = TcpListener::bind((opts.host, opts.port)).await?;
    let port = listener.local_addr()?.port();
    let tls = match opts.tls_port {
        Some(tls_port) => {
            let tls = tls::make().map_err(io::Error::other)?;
            let listener = TcpListener::bind((opts.host, tls_port)).await?;
            if let Some(path) = &opts.cert_out {
                std::fs::write(path, &tls.ca_pem)?;
            }
            Some((listener, tls.acceptor))
        }
        None => None,
    };
    let tls_port = match &tls {
        Some((l, _)) => Some(l.local_addr()?.port()),
        None => None,
    };
    let state = Arc::new(State::new(opts)?);
    if let Some(file) = &state.opts.port_file {
        let tmp = file.with_extension("tmp");
        let ports = serde_json::json!({ "port": port, "tls_port": tls_port });
        std::fs::write(&tmp, format!("{ports}\n"))?;
        std::fs::rename(&tmp, file)?;
    }
    if !state.opts.quiet {
        eprintln!("bench-sink: listening on http://{}:{port}", state.opts.host);
        if let Some(p) = tls_port {
            eprintln!("bench-sink: and on https://{}:{p}", state.opts.host);
        }
    }
    if state.dump.is_some() {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                state.flush_dump();
            }
        });
    }
    {
        let state = state.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            state.flush_dump();
            if !state.opts.quiet {
                eprintln!("bench-sink: {}", state.json());
            }
            std::process::exit(0);
        });
    }
    if let Some((listener, acceptor)) = tls {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                let stream = accept(&listener).await;
                let (state, acceptor) = (state.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        connection(state, stream).await;
                    }
                });
            }
        });
    }
    loop {
        let stream = accept(&listener).await;
        tokio::spawn(connection(state.clone(), stream));
    }
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("bench-sink: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(opts.threads).enable_all().build();
    let result = runtime.and_then(|rt| rt.block_on(run(opts)));
    if let Err(e) = result {
        eprintln!("bench-sink: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read() {
        let args = "--port 0 --fail-rate 0.25 --shards 4 --dump /tmp/d --latency-ms 5 --threads 2 --quiet";
        let o = parse_args(args.split(' ').map(String::from)).unwrap();
        assert_eq!((o.port, o.fail_rate, o.shards, o.latency_ms, o.threads, o.quiet), (0, 0.25, 4, 5, 2, true));
        assert!(parse_args(["--fail-rate".to_string(), "2".to_string()].into_iter()).is_err());
        assert!(parse_args(["--bogus".to_string()].into_iter()).is_err());
    }

    #[test]
    fn the_failure_draws_are_the_same_from_run_to_run() {
        let opts = Opts { fail_rate: 0.5, ..Opts::default() };
        let a = State::new(opts.clone()).unwrap().draw_failures(64);
        let b = State::new(opts).unwrap().draw_failures(64);
        assert_eq!(a, b);
        assert!(a.iter().any(|&f| f) && a.iter().any(|&f| !f));
    }
}
