//! Starting and stopping one flow: its discovery loop (which starts a tailer per file), its
//! batcher and send tasks, and what the status lines, Prometheus and CloudWatch see of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::Mode;
use crate::ack::AckTracker;
use crate::aws;
use crate::checkpoint::CheckpointStore;
use crate::config::{Destination, FlowConfig, KeyOrder, OversizedRecordAction, PartitionKeyOption};
use crate::discovery::{Discovery, FlowWatch, Pattern};
use crate::metrics::FlowMetrics;
use crate::record::pipeline::Pipeline;
use crate::sink::batcher::{self, BatchLimits};
use crate::sink::budget::InFlight;
use crate::sink::client::SinkClient;
use crate::sink::sender::FlowSender;
use crate::tail::TailSettings;
use crate::types::key::key_len;
use crate::types::record::Chunk;

/// Chunks (each up to `tail::READ_SIZE` of lines) queued between a flow's tailers and batcher.
pub(super) const CHANNEL_CHUNKS: usize = 4;

/// A flow that was started: running, or stopping (removed or changed by a reload) until its
/// batcher has sent what its tailers read.
pub(super) struct RunningFlow {
    pub(super) config: FlowConfig,
    /// Stops the flow's discovery and tailers; its batcher then flushes and ends.
    pub(super) stop: CancellationToken,
    pub(super) batcher: tokio::task::JoinHandle<()>,
    /// The batcher ended (set before `Flows::finished` is notified, unlike the handle's state).
    pub(super) done: Arc<AtomicBool>,
    pub(super) sender: Arc<FlowSender>,
    pub(super) watch: Arc<FlowWatch>,
    pub(super) stopping: bool,
}

/// What starting a flow needs: the parts every flow shares.
pub(super) struct Flows {
    pub(super) mode: Mode,
    /// `--once`: a flow whose destination accepts nothing for this long is given up.
    pub(super) give_up_after: Duration,
    pub(super) store: Arc<Mutex<CheckpointStore>>,
    pub(super) tracker: AckTracker,
    pub(super) inflight: InFlight,
    pub(super) clients: aws::Clients,
    pub(super) watches: Arc<Mutex<Vec<Arc<FlowWatch>>>>,
    pub(super) watcher: Arc<Mutex<Option<notify::RecommendedWatcher>>>,
    /// Cancelled on shutdown: every flow stops reading.
    pub(super) stop_reading: CancellationToken,
    /// Notified when a flow's batcher ends.
    pub(super) finished: Arc<Notify>,
    /// Senders of the flows that still run, for the status lines.
    pub(super) live: Arc<Mutex<Vec<Arc<FlowSender>>>>,
    /// Every flow's sender, for the outcome.
    pub(super) all: Vec<Arc<FlowSender>>,
    /// The flows that still run, for the Prometheus listener.
    pub(super) views: Arc<Mutex<Vec<FlowView>>>,
    /// Every flow's counters, for the CloudWatch publisher.
    pub(super) published: crate::metrics::cloudwatch::Registry,
    /// Instance metadata, for ADDEC2METADATA.
    pub(super) imds: crate::ec2::Endpoint,
    /// The open-file budget every flow's files share.
    pub(super) files: Arc<crate::tail::budget::OpenFiles>,
}

/// What a scrape shows of one flow.
#[derive(Clone)]
pub(super) struct FlowView {
    pub(super) id: String,
    pub(super) destination: String,
    pub(super) sender: Arc<FlowSender>,
    pub(super) watch: Arc<FlowWatch>,
}

impl Flows {
    pub(super) fn start(&mut self, flow: &FlowConfig, pattern: Pattern) -> RunningFlow {
        let (client, region) = match &flow.destination {
            Destination::Kinesis { stream } => {
                let (client, region) = self.clients.kinesis(flow).expect("built for every flow");
                (SinkClient::Kinesis { client, stream: stream.clone(), key: flow.partition_key.clone() }, region)
            }
            Destination::Firehose { stream } => {
                let (client, region) = self.clients.firehose(flow).expect("built for every flow");
                (SinkClient::Firehose { client, stream: stream.clone() }, region)
            }
        };
        let label = flow.label(Some(&region));
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
        let ordered = flow.ordering == KeyOrder::PerKey && matches!(flow.destination, Destination::Kinesis { .. });
        sender.ordered = ordered;
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
            ordered,
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
            pipeline: Pipeline {
                // Room for the longest partition key, which counts towards the Kinesis record
                // limit (256 characters: up to 1 KiB for a key taken from the records). Firehose
                // records have no key.
                record_limit: flow.destination.max_record_bytes()
                    - match (&flow.destination, &flow.partition_key) {
                        (Destination::Firehose { .. }, _) => 0,
                        (_, PartitionKeyOption::Derived(_)) => crate::types::key::MAX_KEY_BYTES,
                        _ => 256,
                    },
                terminator: match flow.oversized_record_action {
                    OversizedRecordAction::Truncate => Some(flow.truncated_record_terminator.clone()),
                    OversizedRecordAction::Drop => None,
                },
                processor: crate::record::process::Processor::with_ec2(&flow.data_processing_options, &self.imds)
                    .map(Arc::new),
                join_size: flow.aggregated_record_size_bytes,
                keys: match (&flow.destination, &flow.partition_key) {
                    (Destination::Kinesis { .. }, PartitionKeyOption::Derived(d)) => {
                        Some(Arc::new(crate::record::key::KeyDeriver::new(d)))
                    }
                    _ => None,
                },
            },
            skip_header_lines: flow.skip_header_lines,
            poll: flow.min_time_between_file_polls,
            notified: Arc::default(),
            once: self.mode == Mode::Once,
            multi_line: flow.multi_line_start_pattern.as_ref().map(|p| (**p).clone()),
            multi_line_flush: flow.multi_line_flush_timeout,
            rotate_wait: flow.rotate_wait,
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
    pub(super) fn stop(&self, flow: &mut RunningFlow) {
        flow.stop.cancel();
        flow.stopping = true;
        self.watches.lock().unwrap().retain(|w| !Arc::ptr_eq(w, &flow.watch));
    }

    /// Forget a flow whose batcher ended.
    pub(super) fn forget(&self, flow: &RunningFlow) {
        self.live.lock().unwrap().retain(|s| !Arc::ptr_eq(s, &flow.sender));
        self.views.lock().unwrap().retain(|v| !Arc::ptr_eq(&v.sender, &flow.sender));
    }
}
