//! End-to-end runs of the real agent binary against `FakeKinesis` with injected faults:
//! per-entry throttling, HTTP 500s, a missing stream (`--once` and daemon), and the checkpoint
//! never passing a record that was not acknowledged.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const PUT_RECORDS: &str = "Kinesis_20131202.PutRecords";

/// agent.json for one Kinesis flow over `pattern` to `stream` on the fake, with short backoffs.
fn fake_config(ws: &Workspace, fake: &FakeKinesis, pattern: &str, stream: &str, extra: Value) -> Value {
    let flow = json!({ "filePattern": ws.pattern(pattern), "kinesisStream": stream });
    fake_kinesis_config(fake, with_keys(flow, &extra), 1000, &json!({}))
}

fn lines_containing(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

fn put_requests(fake: &FakeKinesis) -> Vec<RequestLog> {
    fake.requests().into_iter().filter(|r| r.target == PUT_RECORDS).collect()
}

/// A `--once` run over `lines` lines of `len` bytes (prefix `prefix`) in `name` to `stream`, with
/// 3 % of the entries throttled and the global keys `global`: it exits 0 and every line arrives exactly once,
/// one per record. Returns the fake, the workspace, the file, the log and how long it took.
fn once_throttled_3_percent(
    name: &str,
    prefix: &str,
    (lines, len): (u64, usize),
    stream: &str,
    global: Value,
    timeout: Duration,
) -> (FakeKinesis, Workspace, std::path::PathBuf, String, Duration) {
    let fake = FakeKinesis::start();
    fake.set_throttle_fraction(0.03);
    let ws = Workspace::new();
    let f = ws.file(name);
    write_lines_len(&f, 0..lines, prefix, len);
    let flow = json!({ "filePattern": ws.pattern(name), "kinesisStream": stream });
    ws.write_config(fake_kinesis_config(&fake, flow, 1000, &global));
    let (status, log, took) = ws.run_once(timeout);
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", tail(&log, 8192));
    let data = fake.record_data();
    assert_one_line_per_record(&data);
    assert_exactly_once((0..lines).map(|n| line_text_len(prefix, n, len)), &data);
    (fake, ws, f, log, took)
}

/// 3% of the entries throttled: `--once` delivers every line exactly once, the retries carried
/// only the failed entries (entries sent = lines + entries failed), and they went with the
/// following batches, not in requests of their own (a request per batch retried doubled the
/// requests and held a batch slot through each backoff).
#[test]
fn once_with_throttled_entries_resends_only_the_failed_ones() {
    const LINES: u64 = 20_000;
    // At most 8 sends at once (on any machine), so that the tail below is bounded.
    let global = json!({ "maxSendingThreads": 8 });
    let stream = unique_name("throttled");
    let size = (LINES, DEFAULT_LINE_LEN);
    let (fake, ws, f, log, took) =
        once_throttled_3_percent("throttled.log", "T", size, &stream, global, Duration::from_secs(60));

    let failed = fake.failed_entry_count();
    assert!(failed > 0, "the fake throttled nothing");
    let puts = put_requests(&fake);
    assert!(puts.iter().all(|r| r.status == 200 && r.stream.as_deref() == Some(stream.as_str())), "{puts:?}");
    let sent: u64 = puts.iter().map(|r| r.entries as u64).sum();
    assert_eq!(sent, LINES + failed, "entries sent must be the lines plus the re-sent failed entries");
    // 20,600-odd entries fill 42 requests of 500 (a request per batch retried made it about 80).
    // After the file's end, what the sends still in flight hand back goes when its backoff ends,
    // in smaller requests: 6-10 seen, more under load; a batch may also leave before it is full
    // when a retry's backoff ends first (the file read slower than it is sent).
    let sizes: Vec<usize> = puts.iter().map(|r| r.entries).collect();
    let least = (LINES + failed).div_ceil(500) as usize;
    assert!(puts.len() <= least + 20, "{} requests where {least} would do: {sizes:?}", puts.len());
    assert_eq!(ws.checkpoint_of(&f), Some(file_len(&f)));
    let warnings = count_occurrences(&log, "throttled (ProvisionedThroughputExceededException)");
    eprintln!(
        "throttling: {LINES} lines, {} requests, {failed} entries throttled, run took {took:?}; \
         {warnings} throttling warning(s) in the log",
        puts.len()
    );
}

/// Records handed back for a retry with the next batch keep their share of the in-flight budget
/// and give it back once delivered: with the smallest budget (1 MiB) and 3 % of the entries
/// throttled, 36 MB pass through it and every line arrives exactly once (a share kept for ever
/// would have stalled the flow once a 1 MiB budget had leaked away).
#[test]
fn retried_records_give_their_budget_back() {
    const LINES: u64 = 300_000;
    let global = json!({ "maxInFlightBytes": 1_048_576 });
    let stream = unique_name("budget");
    let (fake, ws, f, _, took) =
        once_throttled_3_percent("budget.log", "B", (LINES, 120), &stream, global, Duration::from_secs(90));
    let failed = fake.failed_entry_count();
    assert!(failed > LINES / 100, "the fake throttled only {failed} entries");
    assert_eq!(ws.checkpoint_of(&f), Some(file_len(&f)));
    eprintln!("budget: {LINES} lines through a 1 MiB budget, {failed} entries throttled, run took {took:?}");
}

/// HTTP 500 on 20% of the requests: the agent re-sends those whole requests (the fake stored
/// nothing of them), and every line arrives exactly once.
#[test]
fn once_with_http_500s_delivers_exactly_once() {
    const LINES: u64 = 20_000;
    let fake = FakeKinesis::start();
    fake.set_http500_fraction(0.20);
    let ws = Workspace::new();
    let f = ws.file("http500.log");
    write_lines(&f, 0..LINES, "H");
    let stream = unique_name("http500");
    ws.write_config(fake_config(&ws, &fake, "http500.log", &stream, json!({})));

    let (status, log, took) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", tail(&log, 8192));
    let data = fake.record_data();
    assert_one_line_per_record(&data);
    assert_exactly_once(expected_lines(0..LINES, "H"), &data);

    let puts = put_requests(&fake);
    let errors = puts.iter().filter(|r| r.status == 500).count();
    assert!(errors > 0, "no HTTP 500 was injected");
    let ok: Vec<&RequestLog> = puts.iter().filter(|r| r.status == 200).collect();
    assert!(ok.iter().all(|r| r.failed_entries == 0));
    assert_eq!(ok.iter().map(|r| r.entries as u64).sum::<u64>(), LINES);
    // Failed requests are re-sent whole: each of the 40 batches succeeded once, with all 500.
    assert_eq!(
        ok.len() as u64,
        LINES / 500,
        "successful requests: {:?}",
        ok.iter().map(|r| r.entries).collect::<Vec<_>>()
    );
    assert!(ok.iter().all(|r| r.entries == 500));
    assert_eq!(ws.checkpoint_of(&f), Some(file_len(&f)));
    eprintln!("http 500: {} requests, {errors} answered 500, run took {took:?}", puts.len());
}

/// ResourceNotFoundException on every request: `--once` gives up with exit 1, reports the error
/// once (naming the flow and the stream), and acknowledges nothing.
#[test]
fn once_with_missing_stream_exits_1_and_reports_once() {
    let fake = FakeKinesis::start();
    fake.set_request_error(Some("ResourceNotFoundException"));
    let ws = Workspace::new();
    let f = ws.file("missing.log");
    write_lines(&f, 0..5_000, "M");
    let stream = unique_name("missing");
    ws.write_config(fake_config(&ws, &fake, "missing.log", &stream, json!({})));

    let (status, log, took) = ws.run_once(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "exit status; log:\n{}", tail(&log, 8192));
    assert!(took < Duration::from_secs(15), "giving up took {took:?}");
    let puts = put_requests(&fake);
    assert!(!puts.is_empty(), "no PutRecords was made");
    assert!(puts.iter().all(|r| r.error_code.as_deref() == Some("ResourceNotFoundException")));
    assert_eq!(fake.record_count(), 0);

    // (The fake's message repeats the code: count lines.)
    assert_eq!(
        lines_containing(&log, "ResourceNotFoundException"),
        1,
        "the error must be reported once ({} requests failed); log:\n{}",
        puts.len(),
        tail(&log, 8192)
    );
    let line = log.lines().find(|l| l.contains("ResourceNotFoundException")).expect("error line");
    assert!(line.contains("ERROR"), "not an ERROR: {line}");
    assert!(line.contains(&stream), "does not name the stream: {line}");
    assert!(line.contains("flows[0]"), "does not name the flow: {line}");
    let ck = ws.checkpoint_of(&f);
    assert!(ck.is_none() || ck == Some(0), "nothing was acknowledged, yet the checkpoint is {ck:?}");
    eprintln!("missing stream: exit 1 after {took:?}, {} requests; error line: {line}", puts.len());
}

/// The daemon keeps retrying a missing stream at `retryMaxBackoffMillis` pace, reports it once,
/// and delivers everything exactly once when the stream appears.
#[test]
fn daemon_retries_missing_stream_slowly_then_delivers() {
    const LINES: u64 = 2_000;
    let fake = FakeKinesis::start();
    fake.set_request_error(Some("ResourceNotFoundException"));
    let ws = Workspace::new();
    let f = ws.file("later.log");
    write_lines(&f, 0..LINES, "L");
    let stream = unique_name("later");
    ws.write_config(fake_config(&ws, &fake, "later.log", &stream, json!({})));

    let mut agent = ws.spawn(false, &[]);
    let started = Instant::now();
    assert!(agent.wait_for_log("ResourceNotFoundException", Duration::from_secs(20)), "no error reported");
    std::thread::sleep(Duration::from_secs(3));
    let requests = put_requests(&fake).len();
    let elapsed = started.elapsed().as_secs_f64();
    // 4 batches, each retried at most once per second (retryMaxBackoffMillis), plus first tries.
    let bound = (4.0 * (elapsed + 2.0)) as usize;
    assert!(requests <= bound, "{requests} requests in {elapsed:.1} s (bound {bound}): not retrying slowly");
    assert!(agent.is_running(), "the daemon must not exit on a fatal error");
    assert_eq!(lines_containing(&agent.log(), "ResourceNotFoundException"), 1, "reported more than once");

    fake.set_request_error(None);
    let seen = ws.wait_checkpoint(&f, file_len(&f), Duration::from_secs(20));
    assert_eq!(seen, Some(file_len(&f)), "not delivered after the stream appeared");
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_exactly_once(expected_lines(0..LINES, "L"), &fake.record_data());
    eprintln!("missing stream (daemon): {requests} requests in {elapsed:.1} s while missing");
}

/// With 30% of the entries throttled and a slow fake, a daemon's checkpoint, read at many
/// moments while lines keep coming, never covers a line the fake has not accepted.
#[test]
fn daemon_checkpoint_never_passes_an_unacknowledged_line() {
    let fake = FakeKinesis::start();
    fake.set_throttle_fraction(0.30);
    fake.set_delay(Duration::from_millis(30));
    let ws = Workspace::new();
    let f = ws.file("ck.log");
    let line_len = line_text("K", 0).len() as u64 + 1;
    write_lines(&f, 0..10_000, "K");
    let stream = unique_name("ck");
    ws.write_config(fake_config(&ws, &fake, "ck.log", &stream, json!({ "maxBufferSizeRecords": 200 })));

    let mut agent = ws.spawn(false, &[]);
    let mut total = 10_000u64;
    let (mut samples, mut inside, mut ahead_samples) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        write_lines(&f, total..total + 400, "K");
        total += 400;
        std::thread::sleep(Duration::from_millis(150));
        // Checkpoint first, then what the fake holds: acceptance precedes the checkpoint.
        let Some(offset) = ws.checkpoint_of(&f) else { continue };
        let accepted: HashSet<u64> = parse_line_numbers(&fake.record_data()).into_iter().collect();
        assert_eq!(offset % line_len, 0, "checkpoint {offset} is not at a line boundary");
        let covered = offset / line_len;
        if let Some(n) = (0..covered).find(|n| !accepted.contains(n)) {
            panic!("the checkpoint covers {covered} lines but line {n} was never accepted");
        }
        samples += 1;
        if covered > 0 && covered < total {
            inside += 1;
        }
        if accepted.iter().any(|&n| n >= covered) {
            ahead_samples += 1;
        }
    }
    let len = file_len(&f);
    let seen = ws.wait_checkpoint(&f, len, Duration::from_secs(30));
    assert_eq!(seen, Some(len), "the checkpoint never reached the end");
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_exactly_once(expected_lines(0..total, "K"), &fake.record_data());
    eprintln!(
        "checkpoint samples: {samples}, {inside} strictly inside the file, {ahead_samples} with lines accepted \
         beyond the checkpoint; {} entries throttled",
        fake.failed_entry_count()
    );
    assert!(samples >= 10 && inside >= 5, "too few useful samples ({samples}, {inside} inside)");
}

/// Firehose: 10% of the PutRecordBatch entries fail (ServiceUnavailableException); only those
/// are re-sent and every line arrives exactly once.
#[test]
fn once_firehose_with_failed_entries_delivers_exactly_once() {
    const LINES: u64 = 5_000;
    let fake = FakeKinesis::start();
    fake.set_throttle_fraction(0.10);
    let ws = Workspace::new();
    let f = ws.file("fh.log");
    write_lines(&f, 0..LINES, "F");
    let stream = unique_name("fh");
    ws.write_config(json!({
        "firehose.endpoint": fake.endpoint(),
        "firehose.region": TEST_REGION,
        "flows": [{
            "filePattern": ws.pattern("fh.log"),
            "deliveryStream": stream,
            "retryInitialBackoffMillis": 50,
            "retryMaxBackoffMillis": 1000
        }]
    }));
    let (status, log, took) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", tail(&log, 8192));
    let data = fake.firehose_records();
    assert_one_line_per_record(&data);
    assert_exactly_once(expected_lines(0..LINES, "F"), &data);
    let failed = fake.failed_entry_count();
    assert!(failed > 0, "the fake failed no entry");
    let puts: Vec<RequestLog> =
        fake.requests().into_iter().filter(|r| r.target == "Firehose_20150804.PutRecordBatch").collect();
    let sent: u64 = puts.iter().map(|r| r.entries as u64).sum();
    assert_eq!(sent, LINES + failed, "entries sent must be the lines plus the re-sent failed entries");
    assert_eq!(ws.checkpoint_of(&f), Some(file_len(&f)));
    eprintln!("firehose partial failures: {} requests, {failed} entries failed, run took {took:?}", puts.len());
}

/// `--once` interrupted by SIGTERM while every entry is throttled: it exits after
/// `shutdownTimeoutMillis` with 2 (records left undelivered) and checkpoints nothing.
#[test]
fn once_interrupted_while_throttled_exits_2() {
    let fake = FakeKinesis::start();
    fake.set_throttle_fraction(1.0);
    let ws = Workspace::new();
    let f = ws.file("stuck.log");
    write_lines(&f, 0..1_000, "S");
    let stream = unique_name("stuck");
    let mut cfg = fake_config(&ws, &fake, "stuck.log", &stream, json!({}));
    cfg["shutdownTimeoutMillis"] = json!(2000);
    ws.write_config(cfg);

    let mut agent = ws.spawn(true, &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.is_running(), "--once must keep retrying throttled records");
    assert!(fake.failed_entry_count() > 0, "nothing was sent yet");
    let t = Instant::now();
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(15));
    let took = t.elapsed();
    assert_eq!(status.code(), Some(2), "exit status; log:\n{}", tail(&agent.log(), 8192));
    assert!(took < Duration::from_millis(4_500), "exit took {took:?} with shutdownTimeoutMillis 2000");
    assert_eq!(fake.record_count(), 0);
    let ck = ws.checkpoint_of(&f);
    assert!(ck.is_none() || ck == Some(0), "nothing was acknowledged, yet the checkpoint is {ck:?}");
    eprintln!("interrupted --once: exit 2 after {took:?}");
}

/// A daemon stuck on a missing stream still honours SIGTERM: exit 0 within about
/// `shutdownTimeoutMillis`, nothing checkpointed; a later start delivers everything.
#[test]
fn daemon_sigterm_while_stream_missing_then_restart_delivers() {
    const LINES: u64 = 1_000;
    let fake = FakeKinesis::start();
    fake.set_request_error(Some("ResourceNotFoundException"));
    let ws = Workspace::new();
    let f = ws.file("gone.log");
    write_lines(&f, 0..LINES, "G");
    let stream = unique_name("gone");
    let mut cfg = fake_config(&ws, &fake, "gone.log", &stream, json!({ "retryMaxBackoffMillis": 5000 }));
    cfg["shutdownTimeoutMillis"] = json!(2000);
    ws.write_config(cfg);

    let mut agent = ws.spawn(false, &[]);
    assert!(agent.wait_for_log("ResourceNotFoundException", Duration::from_secs(20)), "no error reported");
    std::thread::sleep(Duration::from_millis(1_500));
    let t = Instant::now();
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(15));
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", tail(&agent.log(), 8192));
    assert!(took < Duration::from_millis(4_500), "exit took {took:?} with shutdownTimeoutMillis 2000");
    let ck = ws.checkpoint_of(&f);
    assert!(ck.is_none() || ck == Some(0), "nothing was acknowledged, yet the checkpoint is {ck:?}");

    fake.set_request_error(None);
    let mut agent = ws.spawn(false, &[]);
    let seen = ws.wait_checkpoint(&f, file_len(&f), Duration::from_secs(20));
    assert_eq!(seen, Some(file_len(&f)), "not delivered after the restart");
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_exactly_once(expected_lines(0..LINES, "G"), &fake.record_data());
    eprintln!("missing stream: SIGTERM → exit 0 in {took:?}");
}

/// `--once` interrupted by SIGTERM still finishes the sends it has started within
/// `shutdownTimeoutMillis`, as the daemon does. Every entry is throttled until the moment of the
/// SIGTERM, after which the endpoint accepts everything: the pending retries deliver every line.
/// (A shutdown once made the senders give up as if a fatal error had happened.)
#[test]
fn once_sigterm_finishes_pending_retries() {
    const LINES: u64 = 2_000;
    let fake = FakeKinesis::start();
    fake.set_throttle_fraction(1.0);
    let ws = Workspace::new();
    let f = ws.file("pending.log");
    write_lines(&f, 0..LINES, "P");
    let stream = unique_name("pending");
    let mut cfg = fake_config(
        &ws,
        &fake,
        "pending.log",
        &stream,
        json!({ "retryInitialBackoffMillis": 200, "retryMaxBackoffMillis": 400 }),
    );
    cfg["shutdownTimeoutMillis"] = json!(10000);
    ws.write_config(cfg);

    let mut agent = ws.spawn(true, &[]);
    // Every batch has been tried (and throttled) at least once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.failed_entry_count() < LINES && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(fake.failed_entry_count() >= LINES, "the batches were not all tried");
    fake.set_throttle_fraction(0.0);
    let t = Instant::now();
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(20));
    let took = t.elapsed();
    let delivered = fake.record_count();
    eprintln!(
        "--once SIGTERM with retries pending: exit {:?} after {took:?}, {delivered} of {LINES} delivered",
        status.code()
    );
    assert!(matches!(status.code(), Some(0) | Some(2)), "exit status; log:\n{}", tail(&agent.log(), 8192));
    assert_exactly_once(expected_lines(0..LINES, "P"), &fake.record_data());
    assert_eq!(ws.checkpoint_of(&f), Some(file_len(&f)));
}

/// `--once` against a destination that accepts nothing (down, then throttling every entry) gives
/// the flow up after `--give-up-after`, says so once, exits 2 and acknowledges nothing; a later
/// run delivers every line exactly once. Progress, however slow, is not given up on: the 10 %
/// throttled test above runs with the default.
#[test]
fn once_gives_up_when_nothing_is_accepted_then_a_later_run_delivers() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let f = ws.file("down.log");
    write_lines(&f, 0..3_000, "D");
    let stream = unique_name("down");
    ws.write_config(fake_config(&ws, &fake, "down.log", &stream, json!({})));

    for (what, fault) in [("down", 0), ("throttling everything", 1)] {
        fake.clear_faults();
        if fault == 0 {
            fake.set_down(Some(DownMode::Refuse));
        } else {
            fake.set_throttle_fraction(1.0);
        }
        let t = Instant::now();
        let mut agent = ws.spawn(true, &["--give-up-after", "3s"]);
        let status = agent.wait_exit(Duration::from_secs(30));
        let took = t.elapsed();
        let log = agent.log();
        assert_eq!(status.code(), Some(2), "{what}: exit status; log:\n{}", tail(&log, 8192));
        assert!(took >= Duration::from_secs(3), "{what}: gave up after {took:?}, before the 3 s");
        assert!(took < Duration::from_secs(15), "{what}: giving up took {took:?}");
        let gave_up: Vec<&str> = log.lines().filter(|l| l.contains("nothing accepted for 3 s")).collect();
        assert_eq!(gave_up.len(), 1, "{what}: said once; log:\n{}", tail(&log, 8192));
        assert!(gave_up[0].contains("ERROR") && gave_up[0].contains("flows[0]") && gave_up[0].contains(&stream));
        assert!(log.contains("NOT delivered"), "{what}: the summary must say what was not delivered");
        assert_eq!(fake.record_count(), 0);
        let ck = ws.checkpoint_of(&f);
        assert!(ck.is_none() || ck == Some(0), "{what}: nothing was acknowledged, yet the checkpoint is {ck:?}");
        eprintln!("{what}: exit 2 after {took:?}: {}", gave_up[0]);
    }

    fake.clear_faults();
    let (status, log, _) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", tail(&log, 8192));
    assert_exactly_once(expected_lines(0..3_000, "D"), &fake.record_data());
    assert_eq!(ws.checkpoint_of(&f), Some(file_len(&f)));
}
