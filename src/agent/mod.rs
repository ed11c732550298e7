//! Wiring: for each flow a discovery loop (which starts a tailer per file), a batcher and its
//! send tasks; plus the checkpoint writer, the status logger (`report.rs`) and the file-system
//! watcher.
//! `run` returns when `--once` has delivered everything, or after a shutdown request.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use notify::EventKind;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod flow;
pub mod progress;
mod reload;
mod report;

use crate::ack::AckTracker;
use crate::aws::{self, AwsSetupError};
use crate::checkpoint::writer::{Heartbeat, checkpoint_writer, flush_checkpoints};
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{AgentConfig, ConfigErrors, FlowConfig};
use crate::discovery::{FlowWatch, Pattern};
use crate::service::systemd;
use crate::sink::budget::InFlight;
use flow::{Flows, RunningFlow};
use reload::apply_reload;
use report::{Scrape, status_logger};

/// How long after start the start-up code's pages are let go (`service::memory`).
const RELEASE_STARTUP_CODE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

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

/// How a running daemon re-reads its configuration on SIGHUP.
pub struct Reload {
    /// Notified on SIGHUP.
    pub signal: Arc<Notify>,
    /// Reads and validates the configuration again (the same files as at start).
    pub load: Box<dyn Fn() -> Result<AgentConfig, ConfigErrors> + Send + Sync>,
}

/// What the command line says about a run (not configuration keys).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub mode: Mode,
    /// `--give-up-after`: `--once` gives a flow up when its destination accepted nothing for
    /// this long (retries included).
    pub give_up_after: std::time::Duration,
    /// `--once`: how progress is shown (`None`: not shown).
    pub progress: Option<progress::Display>,
}

pub async fn run(
    cfg: AgentConfig,
    options: RunOptions,
    shutdown: CancellationToken,
    reload: Option<Reload>,
) -> Result<Outcome, RunError> {
    let mode = options.mode;
    let (mut store, notes) = CheckpointStore::open(&cfg.checkpoint_file, cfg.checkpoint_ttl_days)?;
    store.set_flows(cfg.flows.iter().map(|f| f.id.as_str()));
    for n in notes {
        tracing::warn!("{n}");
    }
    tracing::debug!("checkpoints in {}", store.path().display());
    let patterns: Vec<Pattern> = cfg.flows.iter().map(Pattern::of).collect();
    let clients = aws::build(&cfg).await?;
    // Said at start, in the background: a wrong stream, region or credentials is one clear line.
    tokio::spawn({
        let (cfg, clients) = (cfg.clone(), clients.clone());
        async move { crate::commands::check::log(&crate::commands::check::destinations(&cfg, &clients).await) }
    });
    let tracker = AckTracker::new();
    let reserve = crate::tail::budget::RESERVE + 2 * cfg.max_sending_threads;
    let (files, note) = crate::tail::budget::OpenFiles::from_system(reserve);
    tracing::debug!("{note}");
    let watches: Arc<Mutex<Vec<Arc<FlowWatch>>>> = Arc::new(Mutex::new(Vec::new()));
    let watcher = if mode == Mode::Daemon { start_watcher(watches.clone()) } else { None };
    let mut flows = Flows {
        mode,
        give_up_after: options.give_up_after,
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
    {
        // Once the start-up work is over (first scans, credentials, the destination check); at
        // once for `--once`, whose start-up pages would otherwise stay for the whole backfill.
        let after = if mode == Mode::Daemon { RELEASE_STARTUP_CODE_AFTER } else { std::time::Duration::ZERO };
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let bytes = tokio::task::spawn_blocking(crate::service::memory::release_code_pages).await.unwrap_or(0);
            tracing::debug!("start-up code released: {} KiB of mappings", bytes / 1024);
        });
    }
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
    let progress = options
        .progress
        .filter(|_| mode == Mode::Once)
        .map(|d| tokio::spawn(progress::show(flows.live.clone(), d, status_stop.clone())));
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
                let pattern = Pattern::of(next);
                running.push(flows.start(next, pattern));
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
                let applied = match &reload {
                    Some(r) => apply_reload(r, &mut current, &mut flows, &mut running, &mut waiting).await,
                    None => Ok(()),
                };
                let live = running.iter().filter(|f| !f.stopping).count();
                // `systemctl status` says whether the reload took, and why not.
                systemd::ready(&match applied {
                    Ok(()) => format!("{live} flow(s) running (configuration reloaded)"),
                    Err(why) => format!("{live} flow(s) running; reload refused, the running configuration goes on: {why}"),
                });
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

/// The daemon has no flow to run (the packages' agent.json has none): rather than exit, so that
/// an enabled unit fails at every boot, it waits, idle, for a SIGHUP with a configuration that
/// has flows (or for SIGTERM: `None`). Told to systemd as its status; the watchdog is pinged.
pub fn wait_for_flows(main: &std::path::Path, dir: &std::path::Path, first: &ConfigErrors) -> Option<AgentConfig> {
    use tokio::signal::unix::{SignalKind, signal};
    let waiting = format!(
        "no flows in {} or {}/*.json: waiting for one (add a flow, then `systemctl reload kinesis-agent`)",
        main.display(),
        dir.display()
    );
    eprintln!("warning: {}; {waiting}", first.0[0]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    runtime.block_on(async {
        systemd::init();
        systemd::ready(&waiting);
        let (mut term, mut int, mut hup) = (
            signal(SignalKind::terminate()).ok()?,
            signal(SignalKind::interrupt()).ok()?,
            signal(SignalKind::hangup()).ok()?,
        );
        let mut ping = tokio::time::interval(systemd::watchdog_every().unwrap_or(std::time::Duration::from_secs(30)));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = ping.tick() => systemd::watchdog(),
                _ = hup.recv() => {
                    systemd::reloading();
                    match crate::config::load(main, Some(dir)) {
                        Ok(c) => return Some(c),
                        Err(e) if e.only_missing_flows() => {
                            eprintln!("SIGHUP: still no flows; waiting");
                            systemd::ready(&waiting);
                        }
                        Err(e) => {
                            for err in &e.0 {
                                eprintln!("error: {err}");
                            }
                            eprintln!("SIGHUP: the configuration has {} problem(s); still waiting", e.0.len());
                            systemd::ready(&format!("configuration has {} problem(s), see the journal; {waiting}", e.0.len()));
                        }
                    }
                }
            }
        }
        systemd::stopping();
        None
    })
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
