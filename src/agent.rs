//! Wiring: for each flow a discovery loop (which starts a tailer per file), a batcher and its
//! send tasks; plus the checkpoint writer, the status logger and the file-system watcher.
//! `run` returns when `--once` has delivered everything, or after a shutdown request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::EventKind;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::ack::AckTracker;
use crate::aws::{self, AwsSetupError};
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{AgentConfig, ConfigErrors, Destination, FlowConfig, OversizedRecordAction, PartitionKeyOption};
use crate::discovery::{Discovery, FlowWatch, Pattern};
use crate::metrics::FlowMetrics;
use crate::record::Chunk;
use crate::record::key::key_len;
use crate::service::systemd;
use crate::sink::batcher::{self, BatchLimits, InFlight};
use crate::sink::client::SinkClient;
use crate::sink::sender::FlowSender;
use crate::tail::TailSettings;

/// Chunks (each up to `tail::READ_SIZE` of lines) queued between a flow's tailers and batcher.
const CHANNEL_CHUNKS: usize = 4;
/// Acknowledged progress reaches the checkpoint file within this long (writes are coalesced: at
/// most one per period, none when nothing moved), which bounds what a crash sends again.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Daemon,
    Once,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Aws(#[from] AwsSetupError),
    #[error("flows[{index}].filePattern {pattern:?} is not a valid glob: {source}")]
    Pattern { index: usize, pattern: String, source: globset::Error },
}

/// How a run ended, per flow and overall.
#[derive(Debug, Default)]
pub struct Outcome {
    pub flows: Vec<FlowOutcome>,
    /// A shutdown request ended the run before `--once` had read everything.
    pub interrupted: bool,
}

#[derive(Debug)]
pub struct FlowOutcome {
    pub label: String,
    pub metrics: crate::metrics::Snapshot,
    /// Records read but not acknowledged when the run ended.
    pub undelivered: u64,
    /// A fatal error (missing stream, access denied, bad credentials) was seen.
    pub fatal: bool,
}

impl Outcome {
    pub fn all_delivered(&self) -> bool {
        !self.interrupted && self.flows.iter().all(|f| f.undelivered == 0 && f.metrics.unreadable == 0)
    }
    pub fn any_fatal(&self) -> bool {
        self.flows.iter().any(|f| f.fatal)
    }
}

pub fn flow_label(flow: &FlowConfig, region: Option<&str>) -> String {
    let kind = match &flow.destination {
        Destination::Kinesis { stream } => format!("kinesis stream {stream}"),
        Destination::Firehose { stream } => format!("firehose delivery stream {stream}"),
    };
    match region {
        Some(r) => format!("flows[{}] ({} in {r})", flow.index, kind),
        None => format!("flows[{}] ({})", flow.index, kind),
    }
}

/// How a running daemon re-reads its configuration on SIGHUP.
pub struct Reload {
    /// Notified on SIGHUP.
    pub signal: Arc<Notify>,
    /// Reads and validates the configuration again (the same files as at start).
    pub load: Box<dyn Fn() -> Result<AgentConfig, ConfigErrors> + Send + Sync>,
}

/// A flow that was started: running, or stopping (removed or changed by a reload) until its
/// batcher has sent what its tailers read.
struct RunningFlow {
    config: FlowConfig,
    /// Stops the flow's discovery and tailers; its batcher then flushes and ends.
    stop: CancellationToken,
    batcher: tokio::task::JoinHandle<()>,
    /// The batcher ended (set before `Flows::finished` is notified, unlike the handle's state).
    done: Arc<AtomicBool>,
    sender: Arc<FlowSender>,
    watch: Arc<FlowWatch>,
    stopping: bool,
}

/// What starting a flow needs: the parts every flow shares.
struct Flows {
    mode: Mode,
    /// `--once`: a flow whose destination accepts nothing for this long is given up.
    give_up_after: Duration,
    store: Arc<Mutex<CheckpointStore>>,
    tracker: AckTracker,
    inflight: InFlight,
    clients: aws::Clients,
    watches: Arc<Mutex<Vec<Arc<FlowWatch>>>>,
    watcher: Arc<Mutex<Option<notify::RecommendedWatcher>>>,
    /// Cancelled on shutdown: every flow stops reading.
    stop_reading: CancellationToken,
    /// Notified when a flow's batcher ends.
    finished: Arc<Notify>,
    /// Senders of the flows that still run, for the status lines.
    live: Arc<Mutex<Vec<Arc<FlowSender>>>>,
    /// Every flow's sender, for the outcome.
    all: Vec<Arc<FlowSender>>,
    /// The flows that still run, for the Prometheus listener.
    views: Arc<Mutex<Vec<FlowView>>>,
    /// Every flow's counters, for the CloudWatch publisher.
    published: crate::metrics::cloudwatch::Registry,
    /// Instance metadata, for ADDEC2METADATA.
    imds: crate::ec2::Endpoint,
    /// The open-file budget every flow's files share.
    files: Arc<crate::tail::budget::OpenFiles>,
}

/// What a scrape shows of one flow.
#[derive(Clone)]
struct FlowView {
    id: String,
    destination: String,
    sender: Arc<FlowSender>,
    watch: Arc<FlowWatch>,
}

impl Flows {
    fn start(&mut self, flow: &FlowConfig, pattern: Pattern) -> RunningFlow {
        let (client, region) = match &flow.destination {
            Destination::Kinesis { stream } => (
                SinkClient::Kinesis {
                    client: self.clients.kinesis.clone().expect("built for kinesis flows"),
                    stream: stream.clone(),
                    key: flow.partition_key.clone(),
                },
                self.clients.kinesis_region.clone(),
            ),
            Destination::Firehose { stream } => (
                SinkClient::Firehose {
                    client: self.clients.firehose.clone().expect("built for firehose flows"),
                    stream: stream.clone(),
                },
                self.clients.firehose_region.clone(),
            ),
        };
        let label = flow_label(flow, region.as_deref());
        let had_checkpoints = self.store.lock().unwrap().has_flow(&flow.id);
        // The flow's tailers stop on shutdown, on a reload that removes the flow, or when `--once`
        // gives up after a fatal error (`give_up`; a shutdown alone must not make the senders
        // abandon their retries).
        let flow_stop = self.stop_reading.child_token();
        let give_up = CancellationToken::new();
        tokio::spawn({
            let (give_up, flow_stop) = (give_up.clone(), flow_stop.clone());
            async move {
                tokio::select! {
                    _ = give_up.cancelled() => flow_stop.cancel(),
                    _ = flow_stop.cancelled() => {}
                }
            }
        });
        let metrics = Arc::new(FlowMetrics::default());
        self.published.add(&flow.destination, metrics.clone());
        let mut sender = FlowSender::new(
            label,
            client,
            self.tracker.clone(),
            metrics.clone(),
            self.mode == Mode::Once,
            (flow.retry_initial_backoff, flow.retry_max_backoff),
            give_up,
        );
        sender.give_up_after = self.give_up_after;
        let aggregator = match (&flow.destination, flow.kpl_aggregation) {
            (Destination::Kinesis { .. }, Some(max)) => {
                let shards = Arc::new(crate::sink::shards::Shards::default());
                let agg = crate::sink::aggregate::Aggregator::new(max, flow.partition_key.clone(), shards.clone());
                if agg.by_shard() {
                    sender.shards = Some(shards);
                }
                Some(agg)
            }
            _ => None,
        };
        let sender = Arc::new(sender);
        let overhead = match flow.destination {
            Destination::Kinesis { .. } => key_len(&flow.partition_key),
            Destination::Firehose { .. } => 0,
        };
        let limits = BatchLimits {
            max_records: flow.max_buffer_size_records,
            max_bytes: flow.max_buffer_size_bytes,
            per_record_overhead: overhead,
            max_age: flow.max_buffer_age,
            max_batches: flow.publish_queue_capacity,
        };
        let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
        let done = Arc::new(AtomicBool::new(false));
        let batcher = tokio::spawn({
            let (sender, inflight, finished) = (sender.clone(), self.inflight.clone(), self.finished.clone());
            let budget = self.inflight.flow_budget();
            let done = done.clone();
            async move {
                batcher::run(rx, sender, limits, inflight, budget, aggregator).await;
                done.store(true, Ordering::SeqCst);
                finished.notify_one();
            }
        });
        let watch = Arc::new(FlowWatch::new(pattern));
        self.watches.lock().unwrap().push(watch.clone());
        let settings = TailSettings {
            flow_id: Arc::from(flow.id.as_str()),
            // Room for the longest partition key, which counts towards the Kinesis record limit
            // (256 characters: up to 1 KiB for a key taken from the records). Firehose records
            // have no key.
            record_limit: flow.destination.max_record_bytes()
                - match (&flow.destination, &flow.partition_key) {
                    (Destination::Firehose { .. }, _) => 0,
                    (_, PartitionKeyOption::Derived(_)) => crate::record::key::MAX_KEY_BYTES,
                    _ => 256,
                },
            terminator: match flow.oversized_record_action {
                OversizedRecordAction::Truncate => Some(flow.truncated_record_terminator.clone()),
                OversizedRecordAction::Drop => None,
            },
            skip_header_lines: flow.skip_header_lines,
            poll: flow.min_time_between_file_polls,
            once: self.mode == Mode::Once,
            multi_line: flow
                .multi_line_start_pattern
                .as_deref()
                .map(|p| crate::record::multiline::start_regex(p).expect("multiLineStartPattern was validated")),
            multi_line_flush: flow.multi_line_flush_timeout,
            rotate_wait: flow.rotate_wait,
            processor: crate::record::process::Processor::with_ec2(&flow.data_processing_options, &self.imds)
                .expect("dataProcessingOptions were validated")
                .map(Arc::new),
            join_size: flow.aggregated_record_size_bytes,
            keys: match (&flow.destination, &flow.partition_key) {
                (Destination::Kinesis { .. }, PartitionKeyOption::Derived(d)) => {
                    Some(Arc::new(crate::record::key::KeyDeriver::new(d).expect("partitionKeyOption was validated")))
                }
                _ => None,
            },
        };
        let disc = Discovery {
            flow: flow.clone(),
            watch: watch.clone(),
            settings,
            tx,
            store: self.store.clone(),
            tracker: self.tracker.clone(),
            metrics,
            shutdown: flow_stop.clone(),
            had_checkpoints,
            once: self.mode == Mode::Once,
            files: self.files.clone(),
            watcher: self.watcher.clone(),
        };
        tokio::spawn(disc.run());
        self.live.lock().unwrap().push(sender.clone());
        self.views.lock().unwrap().push(FlowView {
            id: flow.id.clone(),
            destination: flow.destination.name().to_string(),
            sender: sender.clone(),
            watch: watch.clone(),
        });
        self.all.push(sender.clone());
        RunningFlow { config: flow.clone(), stop: flow_stop, batcher, done, sender, watch, stopping: false }
    }

    /// Stop a flow's reading; its batcher sends what was read, then ends.
    fn stop(&self, flow: &mut RunningFlow) {
        flow.stop.cancel();
        flow.stopping = true;
        self.watches.lock().unwrap().retain(|w| !Arc::ptr_eq(w, &flow.watch));
    }

    /// Forget a flow whose batcher ended.
    fn forget(&self, flow: &RunningFlow) {
        self.live.lock().unwrap().retain(|s| !Arc::ptr_eq(s, &flow.sender));
        self.views.lock().unwrap().retain(|v| !Arc::ptr_eq(&v.sender, &flow.sender));
    }
}

/// Whether two versions of a flow behave the same (its place in the list and its file aside).
fn same_flow(a: &FlowConfig, b: &FlowConfig) -> bool {
    let mut b = b.clone();
    b.index = a.index;
    b.source = a.source.clone();
    *a == b
}

/// Global settings a reload cannot change while running.
fn global_changes(old: &AgentConfig, new: &AgentConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |differs: bool, key: &'static str| {
        if differs {
            changed.push(key);
        }
    };
    check(old.checkpoint_file != new.checkpoint_file, "checkpointFile");
    check(old.checkpoint_ttl_days != new.checkpoint_ttl_days, "checkpointTimeToLiveDays");
    check(old.shutdown_timeout != new.shutdown_timeout, "shutdownTimeoutMillis");
    check(old.max_sending_threads != new.max_sending_threads, "maxSendingThreads");
    check(old.max_in_flight_bytes != new.max_in_flight_bytes, "maxInFlightBytes");
    check(old.status_period != new.status_period, "log.statusReportingPeriodSeconds");
    check(old.prometheus != new.prometheus, "prometheus.port/address");
    check(old.cloudwatch != new.cloudwatch, "cloudwatch.*");
    check(old.log != new.log, "log.*");
    check(old.aws != new.aws, "endpoints, regions, credentials or timeouts");
    changed
}

pub async fn run(
    cfg: AgentConfig,
    mode: Mode,
    shutdown: CancellationToken,
    reload: Option<Reload>,
) -> Result<Outcome, RunError> {
    let (mut store, notes) = CheckpointStore::open(&cfg.checkpoint_file, cfg.checkpoint_ttl_days)?;
    store.set_flows(cfg.flows.iter().map(|f| f.id.as_str()));
    for n in notes {
        tracing::warn!("{n}");
    }
    tracing::debug!("checkpoints in {}", store.path().display());
    let mut patterns = Vec::new();
    for f in &cfg.flows {
        let p = Pattern::new(&f.file_pattern).map_err(|source| RunError::Pattern {
            index: f.index,
            pattern: f.file_pattern.clone(),
            source,
        })?;
        patterns.push(p);
    }
    let clients = aws::build(&cfg).await?;
    // Said at start, in the background: a wrong stream, region or credentials is one clear line.
    tokio::spawn({
        let (cfg, clients) = (cfg.clone(), clients.clone());
        async move { crate::check::log(&crate::check::destinations(&cfg, &clients).await) }
    });
    let tracker = AckTracker::new();
    let reserve = crate::tail::budget::RESERVE + 2 * cfg.max_sending_threads;
    let (files, note) = crate::tail::budget::OpenFiles::from_system(reserve);
    tracing::debug!("{note}");
    let watches: Arc<Mutex<Vec<Arc<FlowWatch>>>> = Arc::new(Mutex::new(Vec::new()));
    let watcher = if mode == Mode::Daemon { start_watcher(watches.clone()) } else { None };
    let mut flows = Flows {
        mode,
        give_up_after: cfg.give_up_after,
        store: Arc::new(Mutex::new(store)),
        tracker: tracker.clone(),
        // `maxInFlightBytes` of record data; requests being sent hold up to about three times
        // their share in memory (records, request entries, encoded body). Flows added by a
        // reload take their reserve out of the shared half.
        inflight: InFlight::new(cfg.max_sending_threads, cfg.max_in_flight_bytes, cfg.flows.len()),
        clients,
        watches,
        watcher: Arc::new(Mutex::new(watcher)),
        // Tailers stop on this; batchers then flush what was read and finish their sends.
        stop_reading: shutdown.child_token(),
        finished: Arc::new(Notify::new()),
        live: Arc::new(Mutex::new(Vec::new())),
        views: Arc::new(Mutex::new(Vec::new())),
        all: Vec::new(),
        published: crate::metrics::cloudwatch::Registry::default(),
        imds: crate::ec2::Endpoint::from_config(cfg.aws.ec2_metadata_endpoint.as_deref()),
        files,
    };
    let mut running: Vec<RunningFlow> = cfg.flows.iter().zip(patterns).map(|(f, p)| flows.start(f, p)).collect();
    systemd::ready(&format!("{} flow(s) started", running.len()));
    // Flows changed by a reload start once their previous version has drained.
    let mut waiting: Vec<FlowConfig> = Vec::new();

    let store = flows.store.clone();
    let writer_stop = CancellationToken::new();
    let beat = Heartbeat::default();
    let writer = tokio::spawn(checkpoint_writer(store.clone(), tracker.clone(), writer_stop.clone(), beat.clone()));
    if let Some(addr) = cfg.prometheus {
        let scrape = Scrape { views: flows.views.clone(), inflight: flows.inflight.clone(), beat: beat.clone() };
        if let Err(e) = crate::metrics::prometheus::serve(addr, Arc::new(scrape), writer_stop.clone()).await {
            tracing::error!("prometheus.port: cannot listen on {addr}: {e}; no metrics are served");
        }
    }
    let status_stop = CancellationToken::new();
    let status = tokio::spawn(status_logger(flows.live.clone(), cfg.status_period, status_stop.clone()));
    let progress = cfg
        .progress
        .filter(|_| mode == Mode::Once)
        .map(|d| tokio::spawn(crate::progress::show(flows.live.clone(), d, status_stop.clone())));
    let metrics_stop = CancellationToken::new();
    let metrics = crate::metrics::cloudwatch::start(
        &cfg,
        flows.clients.cloudwatch.clone(),
        flows.published.clone(),
        metrics_stop.clone(),
    );

    // Wait for the batchers: they end when their tailers are done (`--once`, shutdown, or a
    // reload that removed their flow) and their sends are finished. After a shutdown request,
    // wait at most `shutdownTimeoutMillis`.
    let mut current = cfg;
    let timeout = current.shutdown_timeout;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut timed_out = false;
    let never = Arc::new(Notify::new());
    let reload_signal = reload.as_ref().map_or(never, |r| r.signal.clone());
    loop {
        running.retain(|f| {
            let done = f.done.load(Ordering::SeqCst);
            if done {
                flows.forget(f);
            }
            !done || !f.stopping
        });
        if deadline.is_none() {
            let mut folded = false;
            waiting.retain(|next| {
                if running.iter().any(|f| f.config.id == next.id && !f.done.load(Ordering::SeqCst)) {
                    return true;
                }
                // The restarted flow starts from the store: fold in the last acknowledgements
                // first, or up to a second of delivered lines would be sent again.
                if !folded {
                    folded = true;
                    flush_checkpoints(&flows.store, &flows.tracker, false);
                }
                match Pattern::new(&next.file_pattern) {
                    Ok(p) => running.push(flows.start(next, p)),
                    Err(e) => tracing::error!("flows[{}]: filePattern {:?}: {e}", next.index, next.file_pattern),
                }
                false
            });
        }
        let all_done = running.iter().all(|f| f.done.load(Ordering::SeqCst)) && waiting.is_empty();
        if all_done && (mode == Mode::Once || shutdown.is_cancelled()) {
            break;
        }
        tokio::select! {
            _ = flows.finished.notified() => {}
            _ = reload_signal.notified(), if mode == Mode::Daemon && deadline.is_none() => {
                if let Some(r) = &reload {
                    apply_reload(r, &mut current, &mut flows, &mut running, &mut waiting).await;
                }
                let live = running.iter().filter(|f| !f.stopping).count();
                systemd::ready(&format!("{live} flow(s) running (configuration reloaded)"));
            }
            _ = shutdown.cancelled(), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + timeout);
                waiting.clear();
            }
            _ = async { tokio::time::sleep_until(deadline.expect("set")).await }, if deadline.is_some() => {
                timed_out = true;
                for f in &running {
                    f.batcher.abort();
                }
                break;
            }
        }
    }
    let pending = tracker.pending_records();
    if timed_out {
        tracing::warn!(
            "shutdown: {pending} record(s) were still being sent after {} ms; they will be sent again at the next start",
            timeout.as_millis()
        );
    }
    // The sends are over: the publisher takes the last growth and tries once more (bounded),
    // unless the shutdown already took all the time it had.
    metrics_stop.cancel();
    if let Some(m) = metrics {
        if timed_out {
            m.abort();
        }
        let _ = m.await;
    }
    status_stop.cancel();
    let _ = status.await;
    if let Some(p) = progress {
        let _ = p.await;
    }
    writer_stop.cancel();
    let _ = writer.await;
    // Final checkpoint.
    flush_checkpoints(&store, &tracker, true);
    drop(flows.watcher.lock().unwrap().take());

    let mut outcome = Outcome { flows: Vec::new(), interrupted: shutdown.is_cancelled() };
    for s in &flows.all {
        let m = s.metrics.snapshot();
        outcome.flows.push(FlowOutcome {
            label: s.label.clone(),
            metrics: m,
            undelivered: m.records_read.saturating_sub(m.records_sent),
            fatal: s.saw_fatal.load(Ordering::Relaxed),
        });
    }
    Ok(outcome)
}

/// SIGHUP: read the configuration again. Added flows start; removed flows stop after sending
/// what they read; changed flows stop and start again with the new settings once drained;
/// unchanged flows go on undisturbed. Checkpoints are kept. An invalid configuration is
/// rejected and the running one goes on.
async fn apply_reload(
    reload: &Reload,
    current: &mut AgentConfig,
    flows: &mut Flows,
    running: &mut Vec<RunningFlow>,
    waiting: &mut Vec<FlowConfig>,
) {
    let load = &reload.load;
    let new = match load() {
        Ok(c) => c,
        Err(errs) => {
            tracing::error!(
                "SIGHUP: the configuration has {} problem(s); it was not applied and the running one goes on:",
                errs.0.len()
            );
            for e in &errs.0 {
                tracing::error!("{e}");
            }
            return;
        }
    };
    for n in &new.notices {
        tracing::warn!("{n}");
    }
    let changed = global_changes(current, &new);
    if !changed.is_empty() {
        tracing::warn!(
            "SIGHUP: changes to {} take effect at the next restart; flows are reloaded now",
            changed.join(", ")
        );
    }
    // Clients for a destination kind no flow used so far.
    let needs_kinesis = new.flows.iter().any(|f| matches!(f.destination, Destination::Kinesis { .. }));
    let needs_firehose = new.flows.iter().any(|f| matches!(f.destination, Destination::Firehose { .. }));
    if (needs_kinesis && flows.clients.kinesis.is_none()) || (needs_firehose && flows.clients.firehose.is_none()) {
        // The running global settings, with the new flows (whose kinds decide which clients).
        match aws::build(&AgentConfig { flows: new.flows.clone(), ..current.clone() }).await {
            Ok(c) => {
                if flows.clients.kinesis.is_none() {
                    flows.clients.kinesis = c.kinesis;
                    flows.clients.kinesis_region = c.kinesis_region;
                }
                if flows.clients.firehose.is_none() {
                    flows.clients.firehose = c.firehose;
                    flows.clients.firehose_region = c.firehose_region;
                }
            }
            Err(e) => {
                tracing::error!("SIGHUP: {e}; the configuration was not applied");
                return;
            }
        }
    }
    let mut patterns = HashMap::new();
    for f in &new.flows {
        match Pattern::new(&f.file_pattern) {
            Ok(p) => {
                patterns.insert(f.id.clone(), p);
            }
            Err(e) => {
                tracing::error!(
                    "SIGHUP: flows[{}].filePattern {:?} is not a valid glob: {e}; the configuration was not applied",
                    f.index,
                    f.file_pattern
                );
                return;
            }
        }
    }
    let (mut added, mut removed, mut restarted, mut kept) = (0, 0, 0, 0);
    // Flows still waiting for their previous version to drain (an earlier reload changed them)
    // take the newest settings, or are dropped if this configuration removed them.
    waiting.retain_mut(|w| match new.flows.iter().find(|n| n.id == w.id) {
        Some(n) => {
            *w = n.clone();
            true
        }
        None => {
            tracing::info!("SIGHUP: flows[{}] was removed before its restart", w.index);
            removed += 1;
            false
        }
    });
    for old in running.iter_mut().filter(|f| !f.stopping) {
        match new.flows.iter().find(|n| n.id == old.config.id) {
            None => {
                tracing::info!("SIGHUP: {} was removed: it stops once what it read is sent", old.sender.label);
                flows.stop(old);
                removed += 1;
            }
            Some(n) if !same_flow(&old.config, n) => {
                tracing::info!("SIGHUP: {} changed: it restarts with the new settings once drained", old.sender.label);
                flows.stop(old);
                waiting.push(n.clone());
                restarted += 1;
            }
            Some(_) => kept += 1,
        }
    }
    for n in &new.flows {
        let known = running.iter().any(|f| f.config.id == n.id && !f.stopping) || waiting.iter().any(|w| w.id == n.id);
        if known {
            continue;
        }
        added += 1;
        if running.iter().any(|f| f.config.id == n.id) {
            waiting.push(n.clone()); // Its previous version is still draining.
        } else {
            running.push(flows.start(n, patterns.remove(&n.id).expect("checked")));
            tracing::info!("SIGHUP: flows[{}] was added", n.index);
        }
    }
    tracing::info!(
        "SIGHUP: configuration reloaded: {added} flow(s) added, {removed} removed, {restarted} changed, {kept} unchanged"
    );
    flows.store.lock().unwrap().set_flows(new.flows.iter().map(|f| f.id.as_str()));
    *current = new;
}

/// Fold the tracker's watermarks into the store and write it if anything changed. Errors are
/// logged and retried at the next call: the agent keeps running (the checkpoint only lags).
fn flush_checkpoints(store: &Mutex<CheckpointStore>, tracker: &AckTracker, last: bool) -> bool {
    let Some((marks, forgotten)) = tracker.snapshot_if_dirty() else { return true };
    let mut s = store.lock().unwrap();
    s.update(&marks, &forgotten);
    match s.write() {
        Ok(()) => true,
        Err(e) => {
            // Make the next snapshot write again.
            tracker.mark_dirty();
            if last {
                tracing::error!("{e}; the last checkpoint could not be saved, so some lines will be sent again");
            }
            tracing::debug!("{e}");
            false
        }
    }
}

/// When the checkpoint loop last turned and last wrote (ms since `start`), for `/healthz` and the
/// checkpoint-age metric.
#[derive(Clone)]
struct Heartbeat {
    start: std::time::Instant,
    tick_ms: Arc<AtomicU64>,
    written_ms: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { start: std::time::Instant::now(), tick_ms: Arc::default(), written_ms: Arc::default() }
    }
}

impl Heartbeat {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn age(&self, at: &AtomicU64) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(at.load(Ordering::Relaxed)))
    }
}

/// The Prometheus view of the running flows.
struct Scrape {
    views: Arc<Mutex<Vec<FlowView>>>,
    inflight: InFlight,
    beat: Heartbeat,
}

/// The loop that writes checkpoints turns every second; this long without a turn is unhealthy.
const UNHEALTHY_AFTER: Duration = Duration::from_secs(30);

impl crate::metrics::prometheus::Source for Scrape {
    fn render(&self) -> String {
        let views = self.views.lock().unwrap().clone();
        let snaps: Vec<_> = views.iter().map(|v| v.sender.metrics.snapshot()).collect();
        let labels = |v: &FlowView| vec![("flow", v.id.clone()), ("destination", v.destination.clone())];
        let mut e = crate::metrics::prometheus::Exposition::default();
        for metric in crate::metrics::METRICS {
            let samples: Vec<_> = views.iter().zip(&snaps).map(|(v, m)| (labels(v), (metric.get)(m) as f64)).collect();
            let kind = match metric.kind {
                crate::metrics::Kind::Counter => "counter",
                crate::metrics::Kind::Gauge => "gauge",
            };
            e.metric(&format!("kinesis_agent_{}", metric.prometheus), kind, metric.help, &samples);
        }
        let mut lag = Vec::new();
        for v in &views {
            for (path, h) in v.watch.files.lock().unwrap().iter() {
                let unread = h.size.load(Ordering::Relaxed).saturating_sub(h.read_offset.load(Ordering::Relaxed));
                let mut l = labels(v);
                l.push(("path", path.display().to_string()));
                lag.push((l, unread as f64));
            }
        }
        e.metric("kinesis_agent_file_unread_bytes", "gauge", "Bytes of a tailed file not read yet.", &lag);
        let in_flight = self.inflight.bytes.load(Ordering::Relaxed);
        e.metric("kinesis_agent_in_flight_bytes", "gauge", "Record bytes being sent.", &[(vec![], in_flight as f64)]);
        let age = if self.beat.written_ms.load(Ordering::Relaxed) == 0 {
            self.beat.start.elapsed()
        } else {
            self.beat.age(&self.beat.written_ms)
        };
        e.metric(
            "kinesis_agent_checkpoint_age_seconds",
            "gauge",
            "Seconds since the checkpoint file was last written (or since start).",
            &[(vec![], age.as_secs_f64())],
        );
        e.finish()
    }

    fn health(&self) -> Result<String, String> {
        let stalled = self.beat.age(&self.beat.tick_ms);
        let flows = self.views.lock().unwrap().len();
        if stalled > UNHEALTHY_AFTER {
            Err(format!("unhealthy: the checkpoint loop has not turned for {} s", stalled.as_secs()))
        } else {
            Ok(format!("ok: {flows} flow(s)"))
        }
    }
}

async fn checkpoint_writer(
    store: Arc<Mutex<CheckpointStore>>,
    tracker: AckTracker,
    stop: CancellationToken,
    beat: Heartbeat,
) {
    let mut failing = false;
    // This loop is the agent's heartbeat for systemd's watchdog: it needs the tracker and the
    // store, which a wedged agent would not give it.
    let every = systemd::watchdog_every().map_or(CHECKPOINT_EVERY, |w| w.min(CHECKPOINT_EVERY));
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut touched = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.cancelled() => return,
        }
        // Now and then also when nothing moved, so that the checkpoints of quiet files are
        // touched (`checkpointTimeToLiveDays` drops only files no longer tailed).
        if touched.elapsed() >= crate::checkpoint::TOUCH_EVERY {
            touched = std::time::Instant::now();
            tracker.mark_dirty();
        }
        let (st, tr) = (store.clone(), tracker.clone());
        let ok = tokio::task::spawn_blocking(move || flush_checkpoints(&st, &tr, false)).await.unwrap_or(false);
        systemd::watchdog();
        beat.tick_ms.store(beat.now_ms(), Ordering::Relaxed);
        if ok {
            beat.written_ms.store(beat.now_ms(), Ordering::Relaxed);
        }
        if !ok && !failing {
            let path = store.lock().unwrap().path().to_path_buf();
            tracing::error!(
                "cannot write checkpoints to {}; retrying every second (delivery goes on; after a crash more lines would be sent again)",
                path.display()
            );
        } else if ok && failing {
            tracing::info!("checkpoints are being written again");
        }
        failing = !ok;
    }
}

async fn status_logger(senders: Arc<Mutex<Vec<Arc<FlowSender>>>>, period: Duration, stop: CancellationToken) {
    let mut interval = tokio::time::interval(period);
    interval.tick().await;
    // The counters at the last line, by sender (flows come and go with reloads).
    let mut last: Vec<(Arc<FlowSender>, crate::metrics::Snapshot)> = Vec::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now: Vec<Arc<FlowSender>> = senders.lock().unwrap().clone();
        let (sent, behind) =
            now.iter().map(|s| s.metrics.snapshot()).fold((0, 0), |(a, b), m| (a + m.records_sent, b + m.bytes_behind));
        systemd::status(&format!("{} flow(s): {sent} records sent, {behind} bytes behind", now.len()));
        last.retain(|(s, _)| now.iter().any(|n| Arc::ptr_eq(n, s)));
        for s in &now {
            if !last.iter().any(|(l, _)| Arc::ptr_eq(l, s)) {
                last.push((s.clone(), Default::default()));
            }
            let prev = &mut last.iter_mut().find(|(l, _)| Arc::ptr_eq(l, s)).expect("added").1;
            let m = s.metrics.snapshot();
            tracing::info!("{}", crate::metrics::status::line(&s.label, &m, prev));
            s.pace_tick();
            // Throttling: one line per period, with the counts and the pace.
            let (codes, requests) = s.pacer.take_counts();
            if !codes.is_empty() {
                let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c} x{n}")).collect();
                let pace = match s.pacer.rate() {
                    Some(r) => format!("sending at most {r:.0} records/s"),
                    None => "sending at full speed".to_string(),
                };
                tracing::warn!(
                    "{}: throttled in the last {} s: {} in {requests} request(s); {pace}",
                    s.label,
                    period.as_secs(),
                    codes.join(", ")
                );
            }
            if m.record_errors == prev.record_errors {
                s.quiet_period();
            }
            *prev = m;
        }
    }
}

fn start_watcher(watches: Arc<Mutex<Vec<Arc<FlowWatch>>>>) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        let structural =
            matches!(event.kind, EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other)
                || matches!(event.kind, EventKind::Modify(notify::event::ModifyKind::Name(_)));
        for w in watches.lock().unwrap().iter() {
            for p in &event.paths {
                if !p.starts_with(w.pattern.base()) {
                    continue;
                }
                let known = w.files.lock().unwrap().get(p).cloned();
                if let Some(h) = &known {
                    h.wake.notify_one();
                }
                if structural || (known.is_none() && w.pattern.matches(p)) {
                    w.rescan.notify_one();
                }
            }
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("file-system notifications are unavailable ({e}); polling instead");
            None
        }
    }
}
