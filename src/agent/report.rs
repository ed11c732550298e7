//! What the running agent reports: the Prometheus view of its flows (`/metrics`, `/healthz`) and
//! the periodic status line (log and systemd status, with throttling summaries).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::flow::FlowView;
use crate::checkpoint::writer::Heartbeat;
use crate::service::systemd;
use crate::sink::budget::InFlight;
use crate::sink::sender::FlowSender;

/// The Prometheus view of the running flows.
pub(super) struct Scrape {
    pub(super) views: Arc<Mutex<Vec<FlowView>>>,
    pub(super) inflight: InFlight,
    pub(super) beat: Heartbeat,
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

    fn health(&self) -> crate::metrics::prometheus::Health {
        use crate::metrics::prometheus::Health;
        let stalled = self.beat.age(&self.beat.tick_ms);
        let flows = self.views.lock().unwrap().len();
        if stalled > UNHEALTHY_AFTER {
            Health::Unhealthy(format!("unhealthy: the checkpoint loop has not turned for {} s", stalled.as_secs()))
        } else {
            Health::Healthy(format!("ok: {flows} flow(s)"))
        }
    }
}

pub(super) async fn status_logger(
    senders: Arc<Mutex<Vec<Arc<FlowSender>>>>,
    period: Duration,
    stop: CancellationToken,
) {
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
        // No flow read or sent anything in the period.
        let mut idle = true;
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
            idle &= m.bytes_read == prev.bytes_read && m.records_sent == prev.records_sent;
            *prev = m;
        }
        if idle {
            // The period's own work (this line, rescans, checkpoint touches) mapped code that an
            // idle agent does not need until the next period: let it go again.
            tokio::task::spawn_blocking(crate::service::memory::release_code_pages);
        }
    }
}
