//! SIGHUP: the configuration is read again and flows are added, removed or restarted.

use std::collections::HashMap;

use super::Reload;
use super::flow::{Flows, RunningFlow};
use crate::config::{AgentConfig, FlowConfig};
use crate::discovery::Pattern;

/// Whether two versions of a flow behave the same (its place in the list and its file aside).
pub(super) fn same_flow(a: &FlowConfig, b: &FlowConfig) -> bool {
    let mut b = b.clone();
    b.index = a.index;
    b.source = a.source.clone();
    *a == b
}

/// Global settings a reload cannot change while running.
pub(super) fn global_changes(old: &AgentConfig, new: &AgentConfig) -> Vec<&'static str> {
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

/// Why a reload was refused (the running configuration goes on); told to systemd as the status.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReloadError {
    #[error("{problems} problem(s), the first: {first}")]
    Config { problems: usize, first: String },
    #[error(transparent)]
    Clients(#[from] crate::aws::AwsSetupError),
}

/// SIGHUP: read the configuration again. Added flows start; removed flows stop after sending
/// what they read; changed flows stop and start again with the new settings once drained;
/// unchanged flows go on undisturbed. Checkpoints are kept. An invalid configuration is
/// rejected and the running one goes on.
pub(super) async fn apply_reload(
    reload: &Reload,
    current: &mut AgentConfig,
    flows: &mut Flows,
    running: &mut Vec<RunningFlow>,
    waiting: &mut Vec<FlowConfig>,
) -> Result<(), ReloadError> {
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
            let first = errs.0.first().map(|e| e.to_string()).unwrap_or_default();
            return Err(ReloadError::Config { problems: errs.0.len(), first });
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
    // Clients for destinations (kind, region, endpoint, role) no flow used so far.
    if let Err(e) = flows.clients.add_flows(&new.flows).await {
        tracing::error!("SIGHUP: {e}; the configuration was not applied");
        return Err(ReloadError::Clients(e));
    }
    let mut patterns: HashMap<String, Pattern> = new.flows.iter().map(|f| (f.id.clone(), Pattern::of(f))).collect();
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
    Ok(())
}
