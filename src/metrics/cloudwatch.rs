//! CloudWatch metrics (`cloudwatch.*`): the Java agent's metric names and dimensions, published
//! with PutMetricData from the counters the status line and Prometheus read.
//!
//! Every `cloudwatch.metricsBufferTimeMillis` the publisher takes the growth of each flow's
//! counters since its last look (so nothing is counted twice and the sums match the counters),
//! adds one data point per metric and destination to a bounded queue, and sends the queue in
//! requests of at most 1,000 data points. A failed request is retried with backoff in this task
//! only: the data path never waits for CloudWatch. When the queue is full the oldest data points
//! are dropped (counted, said once). At shutdown, one last bounded attempt sends what is left,
//! unless CloudWatch was failing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{FlowMetrics, Java, METRICS, Snapshot};
use crate::config::{AgentConfig, CloudWatchSettings, Destination};

/// PutMetricData accepts at most 1,000 data points per request.
pub const MAX_DATUMS_PER_REQUEST: usize = 1000;
/// Longest wait between two attempts while CloudWatch fails.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The last attempt at shutdown waits at most this long.
const FINAL_WAIT: Duration = Duration::from_secs(3);

/// Whether metrics are published, and why not.
pub fn wanted(cfg: &AgentConfig) -> Result<(), &'static str> {
    match cfg.cloudwatch.emit {
        Some(true) => Ok(()),
        Some(false) => Err("cloudwatch.emitMetrics is false"),
        None if cfg.aws.cloudwatch_endpoint.is_some() => Ok(()),
        None if !cfg.flows.is_empty() && cfg.flows.iter().all(|f| local_destination(cfg, &f.destination)) => Err(
            "every destination endpoint is a local address (an emulator?); set `cloudwatch.emitMetrics` or `cloudwatch.endpoint` to publish",
        ),
        None => Ok(()),
    }
}

fn local_destination(cfg: &AgentConfig, d: &Destination) -> bool {
    let endpoint = match d {
        Destination::Kinesis { .. } => cfg.aws.kinesis_endpoint.as_deref(),
        Destination::Firehose { .. } => cfg.aws.firehose_endpoint.as_deref(),
    };
    endpoint.is_some_and(is_local)
}

/// `http://127.0.0.1:4567`, `localhost:4567`, `[::1]`: loopback addresses.
fn is_local(endpoint: &str) -> bool {
    let rest = endpoint.split("://").last().unwrap_or(endpoint);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// The `Destination` dimension value, as the Java agent writes it.
pub fn destination_dimension(d: &Destination) -> String {
    match d {
        Destination::Kinesis { stream } => format!("KinesisStream:{stream}"),
        Destination::Firehose { stream } => format!("DeliveryStream:{stream}"),
    }
}

struct Entry {
    destination: String,
    metrics: Arc<FlowMetrics>,
    last: Snapshot,
}

/// The flows' counters, registered as flows start (a flow removed by a reload stays until its
/// last growth was taken).
#[derive(Clone, Default)]
pub struct Registry {
    entries: Arc<Mutex<Vec<Entry>>>,
}

/// The growth of one destination's counters over a period, by the Java metric they add to (the
/// `cloudwatch` column of the list in `metrics/mod.rs`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    /// In the order of `JAVA`.
    pub values: [u64; 5],
    /// Requests sent (a period with requests is published even if every value is 0).
    pub requests: u64,
}

/// The Java agent's metrics, their names and units, in the order they are published.
pub const JAVA: [(Java, &str, StandardUnit); 5] = [
    (Java::BytesSent, "BytesSent", StandardUnit::Bytes),
    (Java::RecordSendAttempts, "RecordSendAttempts", StandardUnit::Count),
    (Java::RecordSendErrors, "RecordSendErrors", StandardUnit::Count),
    (Java::ServiceErrors, "ServiceErrors", StandardUnit::Count),
    (Java::RecordsSent, "RecordsSent", StandardUnit::Count),
];

impl Growth {
    fn between(now: &Snapshot, last: &Snapshot) -> Growth {
        let mut g = Growth { requests: now.requests.saturating_sub(last.requests), ..Growth::default() };
        for metric in METRICS {
            let d = (metric.get)(now).saturating_sub((metric.get)(last));
            for java in metric.cloudwatch {
                g.values[JAVA.iter().position(|(j, ..)| j == java).expect("every Java metric is listed")] += d;
            }
        }
        g
    }

    /// The value of one Java metric.
    pub fn get(&self, java: Java) -> u64 {
        self.values[JAVA.iter().position(|(j, ..)| *j == java).expect("listed")]
    }

    fn add(&mut self, o: &Growth) {
        for (v, w) in self.values.iter_mut().zip(o.values) {
            *v += w;
        }
        self.requests += o.requests;
    }

    fn is_empty(&self) -> bool {
        *self == Growth::default()
    }

    /// (name, unit, value), in the order of `JAVA`.
    pub fn values(&self) -> impl Iterator<Item = (&'static str, StandardUnit, u64)> + '_ {
        JAVA.iter().zip(self.values).map(|((_, name, unit), v)| (*name, unit.clone(), v))
    }
}

impl Registry {
    pub fn add(&self, destination: &Destination, metrics: Arc<FlowMetrics>) {
        // Counters start at 0 when the flow starts, so all of their growth is published.
        let entry = Entry { destination: destination_dimension(destination), metrics, last: Snapshot::default() };
        self.entries.lock().unwrap().push(entry);
    }

    /// The growth per destination since the last call (destinations without any left out),
    /// in the order they were first registered.
    pub fn take_growth(&self) -> Vec<(String, Growth)> {
        let mut out: Vec<(String, Growth)> = Vec::new();
        let mut entries = self.entries.lock().unwrap();
        for e in entries.iter_mut() {
            let now = e.metrics.snapshot();
            let g = Growth::between(&now, &e.last);
            e.last = now;
            match out.iter_mut().find(|(d, _)| *d == e.destination) {
                Some((_, total)) => total.add(&g),
                None => out.push((e.destination.clone(), g)),
            }
        }
        // A flow that ended (only we hold its counters) has had its last growth taken.
        entries.retain(|e| Arc::strong_count(&e.metrics) > 1);
        out.retain(|(_, g)| !g.is_empty());
        out
    }
}

/// The data points of one period: every metric of every destination that saw any activity.
pub fn datums(growth: &[(String, Growth)], instance: Option<&str>, at: SystemTime) -> Vec<MetricDatum> {
    let timestamp = aws_smithy_types::DateTime::from(at);
    let mut out = Vec::with_capacity(growth.len() * JAVA.len());
    for (destination, g) in growth {
        let mut dims = vec![Dimension::builder().name("Destination").value(destination).build()];
        if let Some(i) = instance {
            dims.push(Dimension::builder().name("Instance").value(i).build());
        }
        for (name, unit, value) in g.values() {
            out.push(
                MetricDatum::builder()
                    .metric_name(name)
                    .set_dimensions(Some(dims.clone()))
                    .timestamp(timestamp)
                    .value(value as f64)
                    .unit(unit)
                    .build(),
            );
        }
    }
    out
}

/// Data points waiting to be sent, at most `cap`; the oldest go first when it is full.
pub struct Queue {
    items: VecDeque<MetricDatum>,
    cap: usize,
    /// Dropped since the last successful request.
    pub dropped: u64,
}

impl Queue {
    pub fn new(cap: usize) -> Queue {
        Queue { items: VecDeque::new(), cap: cap.max(1), dropped: 0 }
    }

    /// Adds `datums`; returns how many old ones had to go.
    pub fn push(&mut self, datums: Vec<MetricDatum>) -> u64 {
        let mut dropped = 0;
        for d in datums {
            if self.items.len() == self.cap {
                self.items.pop_front();
                dropped += 1;
            }
            self.items.push_back(d);
        }
        self.dropped += dropped;
        dropped
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The next request's data points (the oldest, at most 1,000), left in the queue.
    pub fn next_batch(&self) -> Vec<MetricDatum> {
        self.items.iter().take(MAX_DATUMS_PER_REQUEST).cloned().collect()
    }

    /// The first `n` were sent.
    pub fn sent(&mut self, n: usize) {
        self.items.drain(..n.min(self.items.len()));
    }
}

/// Where the metrics go.
#[derive(Clone, Debug)]
pub struct Target {
    pub client: aws_sdk_cloudwatch::Client,
    pub region: String,
}

/// Starts the publisher when metrics are wanted and a client was built; it ends (after one
/// last bounded attempt) when `stop` is cancelled.
pub fn start(
    cfg: &AgentConfig,
    target: Option<Target>,
    registry: Registry,
    stop: CancellationToken,
) -> Option<JoinHandle<()>> {
    if let Err(why) = wanted(cfg) {
        tracing::info!("CloudWatch metrics are off: {why}");
        return None;
    }
    let target = target?;
    let settings = cfg.cloudwatch.clone();
    let imds = crate::ec2::Endpoint::from_config(cfg.aws.ec2_metadata_endpoint.as_deref());
    let final_wait = FINAL_WAIT.min(cfg.shutdown_timeout);
    Some(tokio::spawn(async move {
        let instance = if settings.tag_instance {
            tokio::select! {
                i = instance_dimension(&imds) => Some(i),
                _ = stop.cancelled() => Some(crate::service::hostname()),
            }
        } else {
            None
        };
        tracing::info!(
            "CloudWatch metrics: publishing to namespace {} in {} every {} ms{}",
            settings.namespace,
            target.region,
            settings.buffer_time.as_millis(),
            instance.as_deref().map(|i| format!(" (Instance {i})")).unwrap_or_default()
        );
        Publisher::new(settings, target, instance).run(registry, stop, final_wait).await;
    }))
}

/// The instance id, or the host name off EC2.
async fn instance_dimension(imds: &crate::ec2::Endpoint) -> String {
    let id = match imds.client() {
        Ok(client) => crate::ec2::get(&client, "/latest/meta-data/instance-id").await,
        Err(e) => Err(e),
    };
    match id {
        Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
        Ok(_) | Err(_) => {
            let host = crate::service::hostname();
            tracing::info!(
                "cloudwatch.tagInstance: no EC2 instance id from instance metadata; Instance is the host name {host}"
            );
            host
        }
    }
}

struct Publisher {
    settings: CloudWatchSettings,
    target: Target,
    instance: Option<String>,
    queue: Queue,
    /// Consecutive failed requests.
    failures: u32,
    /// A request was cut short by the stop: its fate is unknown.
    in_doubt: bool,
    /// Data points sent, for the last line.
    published: u64,
}

impl Publisher {
    fn new(settings: CloudWatchSettings, target: Target, instance: Option<String>) -> Publisher {
        let queue = Queue::new(settings.queue_size);
        Publisher { settings, target, instance, queue, failures: 0, in_doubt: false, published: 0 }
    }

    fn collect(&mut self, registry: &Registry) {
        let growth = registry.take_growth();
        if growth.is_empty() {
            return;
        }
        let datums = datums(&growth, self.instance.as_deref(), SystemTime::now());
        let before = self.queue.dropped;
        if self.queue.push(datums) > 0 && before == 0 {
            tracing::warn!(
                "CloudWatch metrics: the queue is full (cloudwatch.metricsQueueSize = {}): dropping the oldest data points \
                 (counted; said once until publishing works again)",
                self.queue.cap
            );
        }
    }

    /// Sends the whole queue, a request of at most 1,000 data points at a time.
    async fn flush(&mut self) -> Result<(), PublishError> {
        while !self.queue.is_empty() {
            let batch = self.queue.next_batch();
            let n = batch.len();
            let result = self
                .target
                .client
                .put_metric_data()
                .namespace(&self.settings.namespace)
                .set_metric_data(Some(batch))
                .send()
                .await;
            match result {
                Ok(_) => {
                    self.queue.sent(n);
                    self.published += n as u64;
                    if self.failures > 0 || self.queue.dropped > 0 {
                        tracing::info!(
                            "CloudWatch metrics: publishing again{}",
                            if self.queue.dropped > 0 {
                                format!(" ({} data point(s) were dropped while it failed)", self.queue.dropped)
                            } else {
                                String::new()
                            }
                        );
                    }
                    self.failures = 0;
                    self.queue.dropped = 0;
                }
                Err(e) => return Err(PublishError(crate::ec2::error_text(&e))),
            }
        }
        Ok(())
    }

    fn failed(&mut self, error: &PublishError) -> Duration {
        if self.failures == 0 {
            tracing::warn!(
                "CloudWatch metrics: PutMetricData to namespace {} in {} failed: {error}. Delivery is not affected; \
                 retrying in the background with backoff, keeping up to {} data point(s) (said once until it works; \
                 it needs credentials allowed `cloudwatch:PutMetricData`, or set `cloudwatch.emitMetrics` to false)",
                self.settings.namespace,
                self.target.region,
                self.queue.cap
            );
        } else {
            tracing::debug!("CloudWatch metrics: PutMetricData failed again: {error}");
        }
        self.failures = self.failures.saturating_add(1);
        backoff(self.failures)
    }

    async fn run(mut self, registry: Registry, stop: CancellationToken, final_wait: Duration) {
        let mut tick = tokio::time::interval(self.settings.buffer_time);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => self.collect(&registry),
                _ = stop.cancelled() => break,
            }
            if self.queue.is_empty() || retry_at.is_some_and(|t| tokio::time::Instant::now() < t) {
                continue;
            }
            tokio::select! {
                r = self.flush() => match r {
                    Ok(()) => retry_at = None,
                    Err(e) => retry_at = Some(tokio::time::Instant::now() + self.failed(&e)),
                },
                _ = stop.cancelled() => {
                    self.in_doubt = true;
                    break;
                }
            }
        }
        // What grew since the last period.
        self.collect(&registry);
        if self.queue.is_empty() {
            return;
        }
        if self.failures > 0 || self.in_doubt {
            tracing::info!(
                "CloudWatch metrics: {} data point(s) not published at exit (CloudWatch was not answering)",
                self.queue.len()
            );
            return;
        }
        match tokio::time::timeout(final_wait, self.flush()).await {
            Ok(Ok(())) => tracing::debug!("CloudWatch metrics: {} data point(s) published", self.published),
            Ok(Err(e)) => {
                tracing::info!("CloudWatch metrics: the last {} data point(s) not published: {e}", self.queue.len())
            }
            Err(_) => tracing::info!(
                "CloudWatch metrics: the last {} data point(s) not published within {} ms",
                self.queue.len(),
                final_wait.as_millis()
            ),
        }
    }
}

/// A PutMetricData call that failed: the error with its causes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PublishError(String);

/// 1 s, 2 s, 4 s, … up to 5 minutes.
fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::FlowMetrics;
    use std::sync::atomic::Ordering::Relaxed;

    fn kinesis(s: &str) -> Destination {
        Destination::Kinesis { stream: s.into() }
    }

    #[test]
    fn growth_is_taken_once_and_merged_per_destination() {
        let r = Registry::default();
        let a = Arc::new(FlowMetrics::default());
        let b = Arc::new(FlowMetrics::default());
        let c = Arc::new(FlowMetrics::default());
        r.add(&kinesis("s"), a.clone());
        r.add(&kinesis("s"), b.clone());
        r.add(&Destination::Firehose { stream: "f".into() }, c.clone());
        assert!(r.take_growth().is_empty(), "nothing happened yet");
        a.records_sent.fetch_add(10, Relaxed);
        a.bytes_sent.fetch_add(1000, Relaxed);
        a.requests.fetch_add(2, Relaxed);
        // One partial failure (3 records with an error code), one failed request of 5.
        b.records_sent.fetch_add(7, Relaxed);
        b.record_errors.fetch_add(8, Relaxed);
        b.records_rejected.fetch_add(3, Relaxed);
        b.request_errors.fetch_add(1, Relaxed);
        b.requests.fetch_add(2, Relaxed);
        let g = r.take_growth();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].0, "KinesisStream:s");
        // BytesSent, RecordSendAttempts, RecordSendErrors, ServiceErrors, RecordsSent.
        assert_eq!(g[0].1, Growth { values: [1000, 25, 3, 1, 17], requests: 4 });
        assert!(r.take_growth().is_empty(), "no double counting");
        c.records_sent.fetch_add(1, Relaxed);
        drop(c);
        let g = r.take_growth();
        assert_eq!(g[0].0, "DeliveryStream:f");
        assert_eq!(g[0].1.get(Java::RecordsSent), 1);
        assert_eq!(r.entries.lock().unwrap().len(), 2, "an ended flow goes after its last growth");
    }

    #[test]
    fn datums_carry_the_java_names_and_dimensions() {
        let g = vec![("KinesisStream:s".to_owned(), Growth { values: [30, 0, 0, 0, 3], requests: 1 })];
        let d = datums(&g, Some("i-0abc"), SystemTime::UNIX_EPOCH);
        let names: Vec<_> = d.iter().map(|d| d.metric_name().unwrap()).collect();
        assert_eq!(names, ["BytesSent", "RecordSendAttempts", "RecordSendErrors", "ServiceErrors", "RecordsSent"]);
        let sent = &d[4];
        assert_eq!(sent.value(), Some(3.0));
        assert_eq!(sent.unit(), Some(&StandardUnit::Count));
        assert_eq!(d[0].unit(), Some(&StandardUnit::Bytes));
        let dims: Vec<_> = sent.dimensions().iter().map(|d| (d.name().unwrap(), d.value().unwrap())).collect();
        assert_eq!(dims, [("Destination", "KinesisStream:s"), ("Instance", "i-0abc")]);
        assert_eq!(datums(&g, None, SystemTime::UNIX_EPOCH)[0].dimensions().len(), 1);
    }

    #[test]
    fn queue_drops_the_oldest_and_batches_by_1000() {
        let one = |v: f64| MetricDatum::builder().metric_name("M").value(v).build();
        let mut q = Queue::new(2500);
        assert_eq!(q.push((0..2600).map(|i| one(i as f64)).collect()), 100);
        assert_eq!(q.len(), 2500);
        let b = q.next_batch();
        assert_eq!(b.len(), 1000);
        assert_eq!(b[0].value(), Some(100.0), "the oldest went first");
        q.sent(1000);
        q.sent(1000);
        assert_eq!(q.next_batch().len(), 500);
        assert_eq!(q.dropped, 100);
    }

    #[test]
    fn local_endpoints() {
        for e in ["http://127.0.0.1:4567", "localhost:4567", "http://[::1]:80/", "https://LOCALHOST"] {
            assert!(is_local(e), "{e}");
        }
        for e in ["https://kinesis.eu-west-1.amazonaws.com", "vpce-1.kinesis.us-east-1.vpce.amazonaws.com", "10.0.0.1"]
        {
            assert!(!is_local(e), "{e}");
        }
    }

    #[test]
    fn backoff_grows_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
