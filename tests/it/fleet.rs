//! A fleet sharing one stream: 16 agents (daemons, default settings, RANDOM keys) each with a
//! backlog of 16,000 lines, into one 4-shard stream of the fault endpoint with Kinesis's per-shard
//! limits (1,000 records/s and 1 MiB/s each; entries over them are throttled one by one). The
//! shards are the shared resource: while every agent still has lines to send (from the moment
//! the last one had a record accepted until the first one is done, about 50 s), the stream must
//! be kept at least 85 % busy, no agent may get less than half of a fair share, and every line
//! arrives exactly once. The attempts the stream rejected are reported, with the agents' CPU.
//! (With 2,000 lines each, the agents overlapped 3-7 s, all of it the start: too short to
//! measure shares. With 8,000, 12-26 s, and the least share followed the overlap's length more
//! than the pacer: which entries of a request a shard takes depends on what arrived just
//! before, and an agent's luck held for seconds; the same build gave 41 % of a fair share in a
//! 14 s overlap and 78 % in 24 s.)

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const AGENTS: usize = 16;
const SHARDS: u32 = 4;
const PER_SHARD: f64 = 1_000.0;
const LINES: u64 = 16_000;

/// Ticks of user + system CPU of a process (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let get = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    get(14) + get(15)
}

#[test]
fn a_fleet_keeps_one_stream_busy_and_loses_nothing() {
    let _alone = heavy();
    let fake = FakeKinesis::start_with_shards(SHARDS);
    fake.set_shard_limits(Some((PER_SHARD, 1024.0 * 1024.0)));
    let stream = unique_name("fleet");
    let mut workspaces = Vec::new();
    for a in 0..AGENTS {
        let ws = Workspace::new();
        write_lines(&ws.file("app.log"), 0..LINES, &format!("A{a:02}"));
        ws.write_config(json!({
            "kinesis.endpoint": fake.endpoint(),
            "kinesis.region": TEST_REGION,
            "log.statusReportingPeriodSeconds": 5,
            "flows": [{ "filePattern": ws.pattern("app.log"), "kinesisStream": stream, "initialPosition": "START_OF_FILE" }],
        }));
        workspaces.push(ws);
    }
    let started = Instant::now();
    let mut agents: Vec<AgentProcess> = workspaces.iter().map(|ws| ws.spawn(false, &[])).collect();
    let total = AGENTS * LINES as usize;
    let got = fake.wait_for_count(total, Duration::from_secs(120));
    let cpu: u64 = agents.iter().map(|p| cpu_ticks(p.pid())).sum();
    let took = started.elapsed();
    for p in &agents {
        p.sigterm();
    }
    for p in &mut agents {
        p.wait_exit(Duration::from_secs(30));
    }

    assert_eq!(got, total, "not every line arrived in time");
    let records = fake.all_records();
    let data: Vec<Vec<u8>> = records.iter().map(|r| r.data.clone()).collect();
    assert_exactly_once(
        (0..AGENTS).flat_map(|a| expected_lines(0..LINES, &format!("A{a:02}")).collect::<Vec<_>>()),
        &data,
    );

    // The window in which every agent is sending and still has a backlog: from the moment the
    // last one had its first record accepted, until the first one is done.
    let agent_of = |r: &FakeRecord| -> usize { std::str::from_utf8(&r.data[1..3]).unwrap().parse().unwrap() };
    let mut first: HashMap<usize, Instant> = HashMap::new();
    let mut last: HashMap<usize, Instant> = HashMap::new();
    for r in &records {
        first.entry(agent_of(r)).or_insert(r.accepted_at);
        last.insert(agent_of(r), r.accepted_at);
    }
    let from = *first.values().max().unwrap();
    let to = *last.values().min().unwrap();
    let spans: Vec<String> = (0..AGENTS)
        .map(|a| format!("{a}: {:.1}..{:.1}", (first[&a] - started).as_secs_f64(), (last[&a] - started).as_secs_f64()))
        .collect();
    eprintln!("fleet: agents' first and last acceptances (s): {}", spans.join(", "));
    // Records accepted by agent in every 5 s: a share's ups and downs, for a failure's reader.
    let bins = (took.as_secs() / 5 + 1) as usize;
    let mut by_bin = vec![vec![0u32; bins]; AGENTS];
    for r in &records {
        let bin = ((r.accepted_at - started).as_secs() / 5) as usize;
        by_bin[agent_of(r)][bin.min(bins - 1)] += 1;
    }
    for (a, row) in by_bin.iter().enumerate() {
        let row: Vec<String> = row.iter().map(|n| format!("{n:5}")).collect();
        eprintln!("fleet: agent {a:2}, records accepted per 5 s: {}", row.join(""));
    }
    assert!(to > from + Duration::from_secs(2), "the agents did not overlap long enough to measure");
    let secs = (to - from).as_secs_f64();
    let mut share: HashMap<usize, u64> = HashMap::new();
    for r in records.iter().filter(|r| r.accepted_at >= from && r.accepted_at < to) {
        *share.entry(agent_of(r)).or_default() += 1;
    }
    let in_window: u64 = share.values().sum();
    let capacity = PER_SHARD * SHARDS as f64;
    let busy = in_window as f64 / secs / capacity;
    let fair = in_window as f64 / AGENTS as f64;
    let least = (0..AGENTS).map(|a| share.get(&a).copied().unwrap_or(0)).min().unwrap();
    let rejected = fake.failed_entry_count();
    let tick = 100.0; // USER_HZ
    eprintln!(
        "fleet: {AGENTS} agents, {total} lines in {took:.1?}; while all were sending ({secs:.1} s): {:.0} records/s, \
         {:.0} % of the {capacity:.0} records/s the shards take; least share {least} of a fair {fair:.0} ({:.0} %); \
         {rejected} attempts throttled ({:.2} per line accepted); agents' CPU {:.2} s ({:.1} us per line)",
        in_window as f64 / secs,
        busy * 100.0,
        least as f64 / fair * 100.0,
        rejected as f64 / total as f64,
        cpu as f64 / tick,
        cpu as f64 / tick / total as f64 * 1e6,
    );
    assert!(busy >= 0.85, "the stream was only {:.0} % busy", busy * 100.0);
    assert!(
        least as f64 >= 0.5 * fair,
        "an agent got {least} records, less than half of a fair share ({fair:.0}): {share:?}"
    );
}
