//! One end-to-end run of the real agent binary per fault mode of `FakeKinesis`: throttled
//! entries, whole-request 500s, connection resets mid-request, answers later than
//! `socketTimeoutMillis`, an endpoint down for seconds, a missing stream, access denied. Each
//! checks what arrived (exactly once; at least once where an answer was lost, with the duplicates
//! counted and bounded by what the lost answers carried) and what was logged (the cause named
//! once per episode with the stream, never once per request). Then a 30 s outage while 500,000
//! lines are written (peak RSS bounded), SIGTERM with batches in flight, pacing against a
//! rate-limited stream (and the time back to full speed), and a stuck flow beside a healthy one.

use crate::common;

use std::collections::HashMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// agent.json for one Kinesis flow on the fake: short backoffs, status lines every second.
fn config(ws: &Workspace, fake: &FakeKinesis, file: &str, stream: &str, flow_extra: Value, global: Value) -> Value {
    let flow = with_keys(json!({ "filePattern": ws.pattern(file), "kinesisStream": stream }), &flow_extra);
    fake_kinesis_config(fake, flow, 500, &with_keys(json!({ "log.statusReportingPeriodSeconds": 1 }), &global))
}

fn label(stream: &str) -> String {
    format!("flows[0] (kinesis stream {stream} in {TEST_REGION})")
}

fn lines_with<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines().filter(|l| needles.iter().all(|n| l.contains(n))).collect()
}

/// Status periods logged (one progress line each).
fn status_periods(log: &str, stream: &str) -> usize {
    lines_with(log, &[&label(stream), "records read"]).len()
}

/// (lines missing, duplicate deliveries) of `range` in what the fake accepted.
fn tally(range: Range<u64>, data: &[Vec<u8>]) -> (Vec<u64>, u64) {
    let mut seen: HashMap<u64, u64> = HashMap::new();
    for n in parse_line_numbers(data) {
        *seen.entry(n).or_default() += 1;
    }
    let missing = range.clone().filter(|n| !seen.contains_key(n)).collect();
    let unexpected = seen.keys().filter(|n| !range.contains(n)).count();
    assert_eq!(unexpected, 0, "lines that were never written arrived");
    (missing, seen.values().map(|c| c - 1).sum())
}

/// The transient-error warnings of the flow (one per episode), checked: they name the stream,
/// and there are at most one per status period (plus the first).
fn check_transient_warnings(log: &str, stream: &str, what: &str, failed_requests: u64) -> usize {
    let warnings = lines_with(log, &[&label(stream), "retrying with backoff"]);
    let periods = status_periods(log, stream);
    eprintln!(
        "{what}: {failed_requests} failed request(s), {} warning(s) in {periods} status period(s):",
        warnings.len()
    );
    for w in &warnings {
        eprintln!("  {w}");
    }
    assert!(!warnings.is_empty(), "{what}: the failures were not reported; log:\n{}", tail(log, 8192));
    assert!(
        warnings.len() <= periods + 1,
        "{what}: more than one warning per status period; log:\n{}",
        tail(log, 8192)
    );
    warnings.len()
}

fn run_once(ws: &Workspace, what: &str) -> String {
    let (status, log, took) = ws.run_once(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{what}: exit status; log:\n{}", tail(&log, 8192));
    eprintln!("{what}: --once took {took:?}");
    log
}

/// 10 % of the entries throttled: every line exactly once; the flow slows down (said once) and
/// the throttling is summarised once per status period, never per request.
#[test]
fn throttled_entries_are_paced_and_summarised() {
    let _timing = timed();
    // Enough for a run of a few seconds even on a fast machine (50,000 took 1.3 s, too short for
    // a slow-down to be declared at all): the pace is judged once a second.
    const LINES: u64 = 250_000;
    let fake = FakeKinesis::start();
    fake.set_throttle_fraction(0.10);
    let ws = Workspace::new();
    let f = ws.file("throttled.log");
    write_lines(&f, 0..LINES, "T");
    let stream = unique_name("throttled");
    ws.write_config(config(&ws, &fake, "throttled.log", &stream, json!({}), json!({})));
    let log = run_once(&ws, "throttled");
    assert_exactly_once(expected_lines(0..LINES, "T"), &fake.record_data());
    assert_eq!(ws.checkpoint_of(&f), Some(file_len(&f)));

    let code = "ProvisionedThroughputExceededException";
    let slowed = lines_with(&log, &[&label(&stream), "slowing down", code]);
    assert!((1..=2).contains(&slowed.len()), "slow-down lines: {slowed:#?}\nlog:\n{}", tail(&log, 8192));
    let summaries = lines_with(&log, &[&label(&stream), "throttled in the last 1 s", code]);
    let periods = status_periods(&log, &stream);
    assert!(summaries.len() <= periods, "{} summaries in {periods} periods", summaries.len());
    let mentions = lines_with(&log, &[code]).len();
    let throttled_requests = fake.requests().iter().filter(|r| r.failed_entries > 0).count();
    eprintln!(
        "throttled: {} entries throttled in {throttled_requests} requests; {mentions} log line(s) name the code \
         ({} slow-down, {} summaries, {periods} periods)",
        fake.failed_entry_count(),
        slowed.len(),
        summaries.len()
    );
    assert!(mentions <= slowed.len() + summaries.len(), "the code is logged elsewhere; log:\n{}", tail(&log, 8192));
    assert!(mentions < throttled_requests, "one line per throttled request");
}

/// HTTP 500 on 20 % of the requests: re-sent whole, every line exactly once, the error reported
/// once per episode with the stream (not once per failed request).
#[test]
fn http_500s_are_resent_and_reported_once() {
    const LINES: u64 = 20_000;
    let fake = FakeKinesis::start();
    fake.set_http500_fraction(0.20);
    let ws = Workspace::new();
    let f = ws.file("http500.log");
    write_lines(&f, 0..LINES, "H");
    let stream = unique_name("http500");
    ws.write_config(config(&ws, &fake, "http500.log", &stream, json!({ "maxBufferSizeRecords": 250 }), json!({})));
    let log = run_once(&ws, "http 500");
    assert_exactly_once(expected_lines(0..LINES, "H"), &fake.record_data());
    assert_eq!(ws.checkpoint_of(&f), Some(file_len(&f)));
    let failed = fake.requests().iter().filter(|r| r.status == 500).count() as u64;
    assert!(failed >= 5, "only {failed} 500s injected");
    let n = check_transient_warnings(&log, &stream, "http 500", failed);
    assert!(lines_with(&log, &["InternalFailure", "retrying with backoff"]).len() == n);
}

/// The possible duplicates the agent counted (its summary line at the end of `--once`).
fn possible_duplicates(log: &str) -> u64 {
    lines_with(log, &["possible duplicates"]).iter().filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
}

/// The connection is reset (RST, no answer) on 10 % of the requests. Reset before the fake stored
/// anything: exactly once. Reset after it stored the records (the answer is lost): at least once,
/// and the duplicates are at most the entries of the reset requests.
#[test]
fn connection_reset_mid_request() {
    const LINES: u64 = 10_000;
    for after in [false, true] {
        let what = if after { "reset after processing" } else { "reset before processing" };
        let fake = FakeKinesis::start();
        fake.set_reset(0.10, after);
        let ws = Workspace::new();
        let f = ws.file("reset.log");
        write_lines(&f, 0..LINES, "R");
        let stream = unique_name("reset");
        ws.write_config(config(&ws, &fake, "reset.log", &stream, json!({ "maxBufferSizeRecords": 250 }), json!({})));
        let log = run_once(&ws, what);
        let (resets, lost) = fake.reset_counts();
        assert!(resets >= 2, "{what}: only {resets} resets");
        let (missing, dups) = tally(0..LINES, &fake.record_data());
        assert!(
            missing.is_empty(),
            "{what}: {} lines lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        eprintln!("{what}: {resets} connections reset, {lost} entries stored in them, {dups} duplicates");
        let counted = possible_duplicates(&log);
        assert!(dups <= counted, "{what}: {dups} duplicates, the agent counted {counted} possible ones");
        if after {
            assert!(dups <= lost, "{what}: {dups} duplicates, but only {lost} entries had their answer lost");
        } else {
            assert_eq!(dups, 0, "{what}: nothing was stored, so nothing may arrive twice");
        }
        assert_eq!(ws.checkpoint_of(&f), Some(file_len(&f)));
        check_transient_warnings(&log, &stream, what, resets);
    }
}

/// 10 % of the answers come 1.5 s late, with `socketTimeoutMillis` 1000: the agent times out
/// and sends those records again, which the fake had stored: at least once, duplicates at most
/// the entries of the late answers.
#[test]
fn answers_later_than_the_socket_timeout() {
    const LINES: u64 = 10_000;
    let fake = FakeKinesis::start();
    fake.set_response_delay(0.10, Duration::from_millis(1500));
    let ws = Workspace::new();
    let f = ws.file("late.log");
    write_lines(&f, 0..LINES, "D");
    let stream = unique_name("late");
    ws.write_config(config(
        &ws,
        &fake,
        "late.log",
        &stream,
        json!({ "maxBufferSizeRecords": 250 }),
        json!({ "socketTimeoutMillis": 1000 }),
    ));
    let log = run_once(&ws, "late answers");
    let (late, stored) = fake.delayed_response_counts();
    assert!(late >= 2, "only {late} late answers");
    let (missing, dups) = tally(0..LINES, &fake.record_data());
    assert!(missing.is_empty(), "{} lines lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    eprintln!("late answers: {late} answers held 1.5 s, {stored} entries in them, {dups} duplicates");
    assert!(dups <= stored, "{dups} duplicates, but only {stored} entries had a late answer");
    assert!(dups > 0, "no late answer was re-sent: was the timeout applied?");
    let counted = possible_duplicates(&log);
    assert!(dups <= counted, "{dups} duplicates, the agent counted {counted} possible ones");
    assert_eq!(ws.checkpoint_of(&f), Some(file_len(&f)));
    check_transient_warnings(&log, &stream, "late answers", late);
    assert_eq!(lines_with(&log, &["Timeout", "retrying with backoff"]).len(), lines_with(&log, &["Timeout:"]).len());
}

/// The endpoint refuses connections for 3 s while lines are written, then comes back by itself:
/// the daemon delivers every line exactly once, reports the outage once and its end once.
#[test]
fn endpoint_down_for_seconds_then_back() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let f = ws.file("down.log");
    write_lines(&f, 0..2_000, "W");
    let stream = unique_name("down");
    ws.write_config(config(&ws, &fake, "down.log", &stream, json!({}), json!({})));
    fake.set_down_for(DownMode::Refuse, Duration::from_secs(3));
    let started = Instant::now();
    let mut agent = ws.spawn(false, &[]);
    std::thread::sleep(Duration::from_millis(1_000));
    write_lines(&f, 2_000..4_000, "W");
    let len = file_len(&f);
    let seen = ws.wait_checkpoint(&f, len, Duration::from_secs(20));
    let took = started.elapsed();
    assert_eq!(seen, Some(len), "not delivered after the endpoint came back; log:\n{}", tail(&agent.log(), 8192));
    assert!(took >= Duration::from_secs(3), "delivered while down?");
    // One more status period, for the "sending normally again" line.
    assert!(agent.wait_for_log("sending normally again", Duration::from_secs(5)), "the end was not reported");
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_exactly_once(expected_lines(0..4_000, "W"), &fake.record_data());
    let log = agent.log();
    check_transient_warnings(&log, &stream, "down 3 s", 0);
    assert_eq!(lines_with(&log, &[&label(&stream), "sending normally again"]).len(), 1);
    eprintln!("down 3 s: delivered {took:?} after the start");
}

/// A fatal error (the stream missing, access denied) until it is fixed: the daemon logs one
/// ERROR naming the flow, the stream, the cause and what to check, retries slowly, and delivers
/// every line exactly once once fixed.
fn fatal_until_fixed(
    what: &str,
    code: &str,
    hint: &str,
    break_it: impl Fn(&FakeKinesis, &str),
    fix: impl Fn(&FakeKinesis),
) {
    const LINES: u64 = 3_000;
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let f = ws.file("fatal.log");
    write_lines(&f, 0..LINES, "F");
    let stream = unique_name("fatal");
    break_it(&fake, &stream);
    ws.write_config(config(&ws, &fake, "fatal.log", &stream, json!({}), json!({})));
    let mut agent = ws.spawn(false, &[]);
    assert!(agent.wait_for_log(code, Duration::from_secs(20)), "{what}: not reported");
    std::thread::sleep(Duration::from_millis(2_500));
    let failed = fake.requests().iter().filter(|r| r.error_code.as_deref() == Some(code)).count();
    fix(&fake);
    let len = file_len(&f);
    assert_eq!(ws.wait_checkpoint(&f, len, Duration::from_secs(20)), Some(len), "{what}: not delivered once fixed");
    assert!(agent.wait_for_log("sending normally again", Duration::from_secs(5)), "{what}: the end was not reported");
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_exactly_once(expected_lines(0..LINES, "F"), &fake.record_data());

    let log = agent.log();
    let errors = lines_with(&log, &[code, "ERROR"]);
    assert_eq!(errors.len(), 1, "{what}: reported {} times for {failed} failed requests:\n{errors:#?}", errors.len());
    let line = errors[0];
    for needle in [label(&stream).as_str(), stream.as_str(), hint, "retrying slowly"] {
        assert!(line.contains(needle), "{what}: the error line lacks {needle:?}: {line}");
    }
    // Besides the error, only the end of the episode names the code.
    let others: Vec<&str> = log.lines().filter(|l| l.contains(code) && !l.contains("ERROR")).collect();
    assert!(others.iter().all(|l| l.contains("sending normally again")), "{what}: {others:#?}");
    eprintln!("{what}: {failed} requests failed, one error line: {line}");
}

#[test]
fn missing_stream_reported_once_then_delivered() {
    fatal_until_fixed(
        "missing stream",
        "ResourceNotFoundException",
        "check the stream name and the region",
        |fake, _| fake.set_known_streams(Some(&["another-stream"])),
        |fake| fake.set_known_streams(None),
    );
}

#[test]
fn access_denied_reported_once_then_delivered() {
    fatal_until_fixed(
        "access denied",
        "AccessDeniedException",
        "allow kinesis:PutRecords",
        |fake, _| fake.set_request_error(Some("AccessDeniedException")),
        |fake| fake.set_request_error(None),
    );
}

/// VmHWM (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The endpoint is down (connections refused) for 30 s while 500,000 lines are written: the
/// agent stops reading once its in-flight budget is used (the file is the buffer), so its peak RSS
/// stays bounded; when the endpoint is back every line arrives exactly once. Runs in CI (~1 min).
#[test]
fn outage_of_30_s_while_500k_lines_are_written() {
    const LINES: u64 = 500_000;
    const OUTAGE: Duration = Duration::from_secs(30);
    const RSS_BOUND_KIB: u64 = 128 * 1024;
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let f = ws.file("outage.log");
    write_lines(&f, 0..0, "O");
    let stream = unique_name("outage");
    ws.write_config(config(
        &ws,
        &fake,
        "outage.log",
        &stream,
        json!({}),
        json!({ "log.statusReportingPeriodSeconds": 5 }),
    ));
    // Brought back explicitly (not `set_down_for`): on a loaded machine the writes may take longer.
    fake.set_down(Some(DownMode::Refuse));
    let down_at = Instant::now();
    let mut agent = ws.spawn(false, &[]);
    let pid = agent.pid();
    let mut peak = 0u64;
    let sample = |peak: &mut u64| {
        if let Some(kib) = peak_rss_kib(pid) {
            *peak = (*peak).max(kib);
        }
    };
    // 500,000 lines over about 25 s, in 100 appends.
    let step = LINES / 100;
    for i in 0..100 {
        write_lines(&f, i * step..(i + 1) * step, "O");
        sample(&mut peak);
        let next = down_at + Duration::from_millis(250 * (i + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    while down_at.elapsed() < OUTAGE {
        sample(&mut peak);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(fake.record_count(), 0, "accepted while down?");
    let outage = down_at.elapsed();
    fake.set_down(None);
    let peak_down = peak;
    let back = Instant::now();
    let got = wait_for_progress(LINES, Duration::from_secs(30), Duration::from_secs(120), "records", || {
        sample(&mut peak);
        fake.record_count() as u64
    });
    let catch_up = back.elapsed();
    let len = file_len(&f);
    let ck = ws.wait_checkpoint(&f, len, Duration::from_secs(10));
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(20));
    eprintln!(
        "outage: {LINES} lines written while down {outage:?}; peak RSS {:.1} MiB during the outage, {:.1} MiB \
         overall; {got} records {catch_up:?} after the endpoint came back",
        peak_down as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    assert_eq!(got, LINES, "log:\n{}", tail(&agent.log(), 8192));
    assert_numbers_exactly_once(0..LINES, &parse_line_numbers(&fake.record_data()));
    assert_eq!(ck, Some(len));
    assert_eq!(status.code(), Some(0));
    assert!(peak > 0, "VmHWM was never read");
    assert!(peak <= RSS_BOUND_KIB, "peak RSS {peak} KiB over {RSS_BOUND_KIB} KiB");
}

/// SIGTERM while batches are in flight (the endpoint holds their requests): the agent exits after
/// `shutdownTimeoutMillis`, its final checkpoint is exactly what was acknowledged (the lines of
/// before the hold), and a restart delivers the rest (at least once: a held request may still
/// be processed once released; the duplicates are at most the lines that were in flight).
/// (e2e_faults covers SIGTERM of `--once` with retries pending, and of a daemon on a missing
/// stream; this is requests in flight with part of the file acknowledged.)
#[test]
fn sigterm_with_batches_in_flight_checkpoints_what_was_acknowledged() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let f = ws.file("inflight.log");
    write_lines(&f, 0..1_000, "I");
    let stream = unique_name("inflight");
    ws.write_config(config(
        &ws,
        &fake,
        "inflight.log",
        &stream,
        json!({ "maxBufferSizeRecords": 100 }),
        json!({ "shutdownTimeoutMillis": 1500 }),
    ));
    let mut agent = ws.spawn(false, &[]);
    let acked = file_len(&f);
    assert_eq!(ws.wait_checkpoint(&f, acked, Duration::from_secs(20)), Some(acked), "first lines not delivered");

    // Requests are held from now on: 1,000 more lines, 10 batches, all in flight.
    fake.set_down(Some(DownMode::Hang));
    let received = fake.received_count();
    write_lines(&f, 1_000..2_000, "I");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.received_count() < received + 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(fake.received_count() >= received + 10, "the batches were not all sent");
    let t = Instant::now();
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(15));
    let took = t.elapsed();
    let log = agent.log();
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", tail(&log, 8192));
    assert!(took < Duration::from_secs(5), "exit took {took:?} with shutdownTimeoutMillis 1500");
    assert!(log.contains("1000 record(s) were still being sent"), "log:\n{}", tail(&log, 4096));
    assert_eq!(ws.checkpoint_of(&f), Some(acked), "the final checkpoint is not what was acknowledged");
    assert_eq!(fake.record_count(), 1_000);

    fake.set_down(None);
    let mut agent = ws.spawn(false, &[]);
    let len = file_len(&f);
    assert_eq!(ws.wait_checkpoint(&f, len, Duration::from_secs(20)), Some(len), "the rest was not delivered");
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    let (missing, dups) = tally(0..2_000, &fake.record_data());
    assert!(missing.is_empty(), "{} lines lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    eprintln!("SIGTERM in flight: exit after {took:?}, checkpoint at {acked} bytes, {dups} duplicates after restart");
    assert!(dups <= 1_000, "{dups} duplicates for 1,000 lines in flight");
}

/// A stream that takes 2,000 records/s (the fake's rate limit, as a shard at its limit) while
/// lines come at 10,000/s: the flow paces itself near the limit instead of hammering it
/// (throttled entries stay a fraction of those accepted), and once the limit is lifted it is back
/// to full speed (sending as fast as the lines come) within seconds: the throttle recovery time,
/// printed.
#[test]
fn pacing_follows_a_rate_limited_stream_and_recovers() {
    let _timing = timed();
    const LIMIT: f64 = 2_000.0;
    // 500 lines every 50 ms.
    const CHUNK: u64 = 500;
    let fake = FakeKinesis::start();
    fake.set_rate_limit(Some(LIMIT));
    let ws = Workspace::new();
    let f = ws.file("limited.log");
    write_lines(&f, 0..10_000, "P");
    let stream = unique_name("limited");
    ws.write_config(config(&ws, &fake, "limited.log", &stream, json!({}), json!({})));
    let mut agent = ws.spawn(false, &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (f, stop) = (f.clone(), stop.clone());
        move || {
            let mut n = 10_000;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                write_lines(&f, n..n + CHUNK, "P");
                n += CHUNK;
                std::thread::sleep(Duration::from_millis(50));
            }
            n
        }
    });
    assert!(agent.wait_for_log("slowing down", Duration::from_secs(20)), "never slowed down");
    // Settle, then measure 5 s at the limit.
    std::thread::sleep(Duration::from_secs(3));
    let (accepted0, throttled0, requests0) = (fake.record_count(), fake.failed_entry_count(), fake.request_count());
    std::thread::sleep(Duration::from_secs(5));
    let accepted = (fake.record_count() - accepted0) as f64;
    let throttled = (fake.failed_entry_count() - throttled0) as f64;
    let requests = fake.request_count() - requests0;
    eprintln!(
        "rate limit {LIMIT}/s: over 5 s {accepted} accepted ({:.0}/s), {throttled} throttled ({:.0} % of those \
         accepted), {requests} requests",
        accepted / 5.0,
        100.0 * throttled / accepted.max(1.0)
    );
    // (Loose: the other tests of this file load the machine meanwhile.)
    assert!(accepted / 5.0 >= LIMIT * 0.4, "the flow slowed down too far: {:.0}/s", accepted / 5.0);
    assert!(throttled < accepted, "still hammering: {throttled} throttled for {accepted} accepted");

    let lifted = Instant::now();
    fake.set_rate_limit(None);
    let full = agent.wait_for_log("back to full speed", Duration::from_secs(30));
    let recovery = lifted.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert!(full, "never back to full speed; log:\n{}", tail(&agent.log(), 8192));
    let len = file_len(&f);
    assert_eq!(ws.wait_checkpoint(&f, len, Duration::from_secs(60)), Some(len), "not all delivered");
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert_exactly_once(expected_lines(0..written, "P"), &fake.record_data());
    let log = agent.log();
    let line = lines_with(&log, &["back to full speed"])[0];
    eprintln!("throttle recovery: back to full speed {recovery:?} after the limit was lifted: {line}");
    assert!(recovery < Duration::from_secs(15), "recovery took {recovery:?}");
}

/// Two flows sharing a small budget (`maxInFlightBytes` 1 MiB, 2 request slots): one flow's
/// stream is missing and its 3 MB backlog is retried for ever; the other flow still delivers
/// everything, promptly (neither the byte budget nor the request slots are all taken by the
/// stuck flow).
#[test]
fn a_stuck_flow_does_not_starve_another() {
    let fake = FakeKinesis::start();
    let ws = Workspace::new();
    let (stuck_file, ok_file) = (ws.file("stuck.log"), ws.file("ok.log"));
    write_lines(&stuck_file, 0..30_000, "S");
    let (stuck, ok) = (unique_name("stuck"), unique_name("ok"));
    fake.set_known_streams(Some(&[ok.as_str()]));
    let flow = |file: &str, stream: &str| {
        json!({
            "filePattern": ws.pattern(file), "kinesisStream": stream, "initialPosition": "START_OF_FILE",
            "maxBufferAgeMillis": 1000, "retryInitialBackoffMillis": 50, "retryMaxBackoffMillis": 500
        })
    };
    ws.write_config(json!({
        "kinesis.endpoint": fake.endpoint(), "kinesis.region": TEST_REGION,
        "maxInFlightBytes": 1048576, "maxSendingThreads": 2,
        "flows": [flow("stuck.log", &stuck), flow("ok.log", &ok)]
    }));
    let mut agent = ws.spawn(false, &[]);
    assert!(agent.wait_for_log("ResourceNotFoundException", Duration::from_secs(20)), "the stuck flow never sent");
    // The stuck flow has had time to take all it can.
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    write_lines(&ok_file, 0..5_000, "K");
    let len = file_len(&ok_file);
    let seen = ws.wait_checkpoint(&ok_file, len, Duration::from_secs(20));
    let took = t.elapsed();
    assert_eq!(seen, Some(len), "the other flow is starved; log:\n{}", tail(&agent.log(), 8192));
    agent.sigterm();
    assert_eq!(agent.wait_exit(Duration::from_secs(15)).code(), Some(0));
    let ok_data: Vec<Vec<u8>> = fake.all_records().into_iter().filter(|r| r.stream == ok).map(|r| r.data).collect();
    assert_exactly_once(expected_lines(0..5_000, "K"), &ok_data);
    assert!(fake.all_records().iter().all(|r| r.stream == ok));
    eprintln!("stuck flow: the other flow's 5,000 lines were delivered in {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
