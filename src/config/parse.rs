//! The key table and the raw JSON side of `config::load`: comments stripped, the Java agent's
//! coercions applied, every key checked against the table, and every problem of a load collected.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use json_comments::CommentSettings;
use serde_json::{Map, Value};

use super::{
    AgentConfig, AwsSettings, ConfigError, ConfigErrors, DEFAULT_CHECKPOINT_FILE, DEFAULT_MAX_IN_FLIGHT_BYTES,
    Destination, FIREHOSE_MAX_BATCH_BYTES, FIREHOSE_MAX_RECORD_BYTES, FlowConfig, InitialPosition,
    KINESIS_MAX_BATCH_BYTES, KINESIS_MAX_RECORD_BYTES, OversizedRecordAction, PartitionKeyOption, Secret,
};
use super::{CaptureGroup, DEFAULT_KPL_AGGREGATION_BYTES, DerivedKey, KeyFallback, KeySource};
use super::{CloudWatchSettings, CsvSplit, JsonFormat, LogFormat, LogSettings, ProcessingOption};

/// What the agent does with a key it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Implemented.
    Supported,
    /// Accepted and validated, but without effect yet; the text says what is missing.
    NotYetSupported(&'static str),
    /// Accepted because the Java agent knows it, but meaningless here; the text says why.
    Ignored(&'static str),
}

/// Where a key belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The top level of the main file.
    Global,
    /// Each object of `flows`.
    Flow,
}

/// One known configuration key, for the README table and `--check-config`.
#[derive(Debug, Clone, Copy)]
pub struct KeyInfo {
    pub name: &'static str,
    pub scope: Scope,
    /// Type and allowed values, for people (`integer (ms), 1000-900000`).
    pub ty: &'static str,
    /// Default, for people.
    pub default: &'static str,
    /// One line saying what the key does.
    pub doc: &'static str,
    pub status: KeyStatus,
    check: Check,
}

/// How a key's value is validated. Supported keys are read by dedicated code (which takes the
/// integer ranges from here); the other keys are only checked and turned into notices.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Read by dedicated code.
    Custom,
    /// Never read, not even by the Java agent: any value.
    Any,
    /// A loose boolean; `true` asks for something the agent does not do.
    Bool,
    /// A whole number in `min..=max`; `default: None` when the default is computed.
    Int {
        min: i64,
        max: i64,
        default: Option<i64>,
    },
    Str,
    Regex,
}

/// The largest Java `int`, the bound of keys the Java agent reads as `int`.
const INT: i64 = i32::MAX as i64;
/// The largest Java `long`.
const LONG: i64 = i64::MAX;

const fn int(min: i64, max: i64, default: i64) -> Check {
    Check::Int { min, max, default: Some(default) }
}

const fn global(
    name: &'static str,
    ty: &'static str,
    default: &'static str,
    doc: &'static str,
    status: KeyStatus,
    check: Check,
) -> KeyInfo {
    KeyInfo { name, scope: Scope::Global, ty, default, doc, status, check }
}

const fn flow(
    name: &'static str,
    ty: &'static str,
    default: &'static str,
    doc: &'static str,
    status: KeyStatus,
    check: Check,
) -> KeyInfo {
    KeyInfo { name, scope: Scope::Flow, ty, default, doc, status, check }
}

use KeyStatus::{Ignored, NotYetSupported, Supported};

const SQLITE: &str = "checkpoints are kept in a JSON file, not an SQLite database";
const THREADS: &str = "there is no sender thread pool; `maxSendingThreads` bounds the requests in flight";
const HTTP: &str = "the AWS SDK's HTTP client manages its connections";
const JAVA_CREDENTIALS: &str = "Java credential provider classes cannot be loaded here; use the \
     standard AWS credential chain, `awsAccessKeyId`/`awsSecretAccessKey` or `assumeRoleARN`";
const QUEUES: &str = "batches move through bounded channels; there is no queue polling to tune";
const NEVER_READ: &str = "the Java agent never reads it either";
const INTERNAL_METRICS: &str = "internal counters are not logged yet";

static KEYS: &[KeyInfo] = &[
    // Global keys.
    global(
        "flows",
        "array of flow objects",
        "none: at least one flow, here or in a drop-in file",
        "The flows: each one tails the files matching its `filePattern` into one stream or delivery stream.",
        Supported,
        Check::Custom,
    ),
    global(
        "checkpointFile",
        "path",
        DEFAULT_CHECKPOINT_FILE,
        "File where read positions are saved (the Java default under /var/run is lost at reboot).",
        Supported,
        Check::Str,
    ),
    global(
        "checkpointTimeToLiveDays",
        "integer, 1-2147483647",
        "7",
        "Checkpoints of files that clean scans no longer find for this many days of the agent's running time are removed; time the agent is stopped does not count, and a file still there keeps its checkpoint.",
        Supported,
        int(1, INT, 7),
    ),
    global(
        "checkpoints.queryTimeoutSeconds",
        "integer",
        "30",
        "Timeout of the Java agent's SQLite checkpoint clean-up.",
        Ignored(SQLITE),
        int(0, INT, 30),
    ),
    global(
        "checkpoints.connectionTimeoutSeconds",
        "integer",
        "5",
        "Read but never used by the Java agent.",
        Ignored(SQLITE),
        int(0, INT, 5),
    ),
    global(
        "shutdownTimeoutMillis",
        "integer (ms), at least 0",
        "10000",
        "At shutdown, how long in-flight sends may take before the agent exits anyway.",
        Supported,
        int(0, LONG, 10_000),
    ),
    global(
        "maxSendingThreads",
        "integer, 1-2147483647",
        "max(2, maxSendingThreadsPerCore x CPUs)",
        "Most requests in flight at once, across all flows.",
        Supported,
        Check::Int { min: 1, max: INT, default: None },
    ),
    global(
        "maxSendingThreadsPerCore",
        "integer, 1-2147483647",
        "12",
        "Sets the default of `maxSendingThreads`: this many per CPU.",
        Supported,
        int(1, INT, 12),
    ),
    global(
        "maxInFlightBytes",
        "integer (bytes), at least 1048576",
        "67108864 (64 MiB)",
        "Most record bytes taken in by the batchers at once (in batches being filled, in KPL aggregates being built, being sent or retried), across all flows; half is shared, half split evenly between the flows so that one with a backlog cannot starve the others. Reached only when a destination is slow or down: the files then wait (new: the Java agent has no such bound).",
        Supported,
        int(KINESIS_MAX_RECORD_BYTES as i64, LONG, DEFAULT_MAX_IN_FLIGHT_BYTES as i64),
    ),
    global(
        "sendingThreadsKeepAliveMillis",
        "integer (ms)",
        "60000",
        "Idle timeout of the Java agent's sender threads.",
        Ignored(THREADS),
        int(0, LONG, 60_000),
    ),
    global(
        "sendingThreadsMaxQueueSize",
        "integer",
        "100",
        "Task queue size of the Java agent's sender thread pool.",
        Ignored(THREADS),
        int(1, INT, 100),
    ),
    global(
        "maxConnections",
        "integer",
        "max(50, maxSendingThreads)",
        "HTTP connection pool size of the Java agent's AWS clients.",
        Ignored(HTTP),
        Check::Int { min: 1, max: INT, default: None },
    ),
    global(
        "connectionTimeoutMillis",
        "integer (ms), 1-2147483647",
        "10000",
        "Time allowed to connect to an AWS endpoint.",
        Supported,
        int(1, INT, 10_000),
    ),
    global(
        "socketTimeoutMillis",
        "integer (ms), 1-2147483647",
        "50000",
        "Time allowed for one request attempt.",
        Supported,
        int(1, INT, 50_000),
    ),
    global(
        "connectionTTLMillis",
        "integer (ms), -1 for none",
        "-1",
        "How long the Java agent's AWS clients kept a pooled connection.",
        Ignored(HTTP),
        int(-1, LONG, -1),
    ),
    global(
        "useTcpKeepAlive",
        "boolean",
        "false",
        "TCP keepalive on the Java agent's connections.",
        Ignored(HTTP),
        Check::Bool,
    ),
    global(
        "useHttpGzip",
        "boolean",
        "false",
        "Gzip compression of the Java agent's requests.",
        Ignored("requests are not compressed"),
        Check::Bool,
    ),
    global("userAgent", "string", "none", "Text put before the agent's own HTTP user agent.", Supported, Check::Str),
    global("userAgentOverride", "string", "none", "Replaces the whole HTTP user agent.", Supported, Check::Str),
    global(
        "awsAccessKeyId",
        "string",
        "none: the standard AWS credential chain",
        "Static access key id, given together with `awsSecretAccessKey`.",
        Supported,
        Check::Str,
    ),
    global(
        "awsSecretAccessKey",
        "string",
        "none: the standard AWS credential chain",
        "Static secret access key, given together with `awsAccessKeyId`.",
        Supported,
        Check::Str,
    ),
    global(
        "assumeRoleARN",
        "string (role ARN)",
        "none",
        "Role to assume with STS, on top of the credentials found.",
        Supported,
        Check::Str,
    ),
    global(
        "assumeRoleExternalId",
        "string",
        "none",
        "External id passed when assuming `assumeRoleARN`.",
        Supported,
        Check::Str,
    ),
    global(
        "sts.endpoint",
        "string (URL or host)",
        "the AWS SDK's default",
        "STS endpoint used to assume `assumeRoleARN`.",
        Supported,
        Check::Str,
    ),
    global(
        "userDefinedCredentialsProvider.classname",
        "string",
        "none",
        "Java class of a custom credentials provider.",
        Ignored(JAVA_CREDENTIALS),
        Check::Str,
    ),
    global(
        "userDefinedCredentialsProvider.location",
        "string (path)",
        "none",
        "Jar file holding `userDefinedCredentialsProvider.classname`.",
        Ignored(JAVA_CREDENTIALS),
        Check::Str,
    ),
    global(
        "kinesis.endpoint",
        "string (URL or host)",
        "derived from the region",
        "Kinesis Data Streams endpoint; a bare host name means https.",
        Supported,
        Check::Str,
    ),
    global(
        "kinesis.region",
        "string (region name)",
        "the region in `kinesis.endpoint`'s host name, else the AWS region chain (AWS_REGION, profile, instance metadata), else us-east-1 when `kinesis.endpoint` is set",
        "Region of the Kinesis Data Streams client.",
        Supported,
        Check::Str,
    ),
    global(
        "firehose.endpoint",
        "string (URL or host)",
        "derived from the region",
        "Firehose endpoint; a bare host name means https.",
        Supported,
        Check::Str,
    ),
    global(
        "firehose.region",
        "string (region name)",
        "the region in `firehose.endpoint`'s host name, else the AWS region chain (AWS_REGION, profile, instance metadata), else us-east-1",
        "Region of the Firehose client (new: the Java agent has no such key).",
        Supported,
        Check::Str,
    ),
    global(
        "cloudwatch.endpoint",
        "string (URL or host)",
        "derived from the region",
        "CloudWatch endpoint for the agent's metrics; a bare host name means https. Its region is the one in the host name, else the AWS region chain, else us-east-1.",
        Supported,
        Check::Str,
    ),
    global(
        "cloudwatch.emitMetrics",
        "boolean",
        "true (off when every destination endpoint is a local address and `cloudwatch.endpoint` is unset)",
        "Publish the agent's metrics to CloudWatch with PutMetricData (needs `cloudwatch:PutMetricData`). Publishing never slows delivery: failures are said once and retried in the background.",
        Supported,
        Check::Custom,
    ),
    global(
        "cloudwatch.namespace",
        "string",
        "AWSKinesisAgent",
        "Namespace of the agent's CloudWatch metrics.",
        Supported,
        Check::Str,
    ),
    global(
        "cloudwatch.tagInstance",
        "boolean",
        "false",
        "Add the dimension `Instance`: the EC2 instance id from instance metadata, or the host name off EC2.",
        Supported,
        Check::Custom,
    ),
    global(
        "cloudwatch.metricsBufferTimeMillis",
        "integer (ms)",
        "30000",
        "How often the counters' growth is published to CloudWatch (at least 100 ms).",
        Supported,
        int(0, LONG, 30_000),
    ),
    global(
        "cloudwatch.metricsQueueSize",
        "integer",
        "10000",
        "Most metric data points kept while CloudWatch cannot be reached; the oldest are dropped (counted, said once) beyond it.",
        Supported,
        int(0, INT, 10_000),
    ),
    global(
        "ec2.metadataEndpoint",
        "string (URL)",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT, else http://169.254.169.254",
        "Instance metadata (IMDSv2) endpoint used by ADDEC2METADATA and `cloudwatch.tagInstance` (new). Setting it also overrides AWS_EC2_METADATA_DISABLED.",
        Supported,
        Check::Str,
    ),
    global(
        "log.emitMetrics",
        "boolean",
        "false",
        "Log every metrics scope at DEBUG (Java agent).",
        Ignored("metric scopes are not logged; progress is logged every `log.statusReportingPeriodSeconds`"),
        Check::Bool,
    ),
    global(
        "log.emitInternalMetrics",
        "boolean",
        "false",
        "Log all internal counters every status period.",
        NotYetSupported(INTERNAL_METRICS),
        Check::Bool,
    ),
    global(
        "prometheus.port",
        "integer, 1-65535",
        "none: off",
        "Serve Prometheus metrics on this TCP port (`/metrics`, and `/healthz` for health checks) (new).",
        Supported,
        Check::Int { min: 1, max: 65_535, default: None },
    ),
    global(
        "prometheus.address",
        "IP address",
        "127.0.0.1",
        "Address the Prometheus listener binds (`0.0.0.0` for every interface) (new).",
        Supported,
        Check::Custom,
    ),
    global(
        "log.statusReportingPeriodSeconds",
        "integer (s), 1-2147483647",
        "30",
        "How often progress is logged.",
        Supported,
        int(1, INT, 30),
    ),
    global(
        "log.level",
        "TRACE, DEBUG, INFO, WARN or ERROR (any case)",
        "INFO",
        "Log level, as in older Java agents; `-L/--log-level` and `RUST_LOG` win over it.",
        Supported,
        Check::Custom,
    ),
    global(
        "log.file",
        "string (path)",
        "none: standard error (the journal under systemd)",
        "Write the log to this file instead of standard error, rotated by size.",
        Supported,
        Check::Custom,
    ),
    global(
        "log.maxBackupIndex",
        "integer, 0-1000",
        "5",
        "Rotated log files kept beside `log.file` (`agent.log.1` is the newest).",
        Supported,
        Check::Custom,
    ),
    global(
        "log.maxFileSize",
        "size: bytes, or a number with KB, MB or GB",
        "10MB",
        "Size at which `log.file` rotates.",
        Supported,
        Check::Custom,
    ),
    global("pollPeriodMillis", "any", "none", "Never read by the Java agent.", Ignored(NEVER_READ), Check::Any),
    // Flow keys.
    flow(
        "filePattern",
        "string (path glob)",
        "required",
        "Files to tail, e.g. /var/log/app/*.log (a relative glob starts at the working directory); every matching file is tailed.",
        Supported,
        Check::Custom,
    ),
    flow(
        "kinesisStream",
        "string (stream name)",
        "none",
        "Kinesis Data Streams stream to send to; a flow needs this or `deliveryStream`.",
        Supported,
        Check::Custom,
    ),
    flow(
        "deliveryStream",
        "string (delivery stream name)",
        "none",
        "Firehose delivery stream to send to; wins over `kinesisStream` when both are set.",
        Supported,
        Check::Custom,
    ),
    flow(
        "partitionKeyOption",
        "RANDOM, DETERMINISTIC, or an object: {\"field\": JSON path} / {\"regex\": ..., \"group\": ...} / {\"constant\": ...}, with optional \"fallback\" and \"explicitHashKeyField\"",
        "RANDOM",
        "Kinesis partition key: a random one, the MD5 of the record, or one taken from each record: a JSON field (after `dataProcessingOptions`), a regex capture on the raw line, or a constant; records without one get `fallback` (RANDOM) and are counted (see Partition keys; Kinesis flows only).",
        Supported,
        Check::Custom,
    ),
    flow(
        "initialPosition",
        "START_OF_FILE or END_OF_FILE",
        "END_OF_FILE",
        "Where to start files present at the first start without a checkpoint; files that appear later are read from their start.",
        Supported,
        Check::Custom,
    ),
    flow(
        "maxBufferAgeMillis",
        "integer (ms), 1000-900000",
        "60000",
        "A batch is sent once its oldest record is this old.",
        Supported,
        int(1_000, 900_000, 60_000),
    ),
    flow("maxBufferSizeRecords", "integer, 1-500", "500", "Most records in one batch.", Supported, int(1, 500, 500)),
    flow(
        "maxBufferSizeBytes",
        "integer, 1-5242880 (Kinesis) or 1-4194304 (Firehose)",
        "5242880 (Kinesis), 4194304 (Firehose)",
        "Most bytes in one batch (for Kinesis, data plus partition keys).",
        Supported,
        Check::Custom,
    ),
    flow(
        "publishQueueCapacity",
        "integer, 1-2147483647",
        "100",
        "Batches of this flow being sent or retried at once; when that many are in flight, the flow stops reading.",
        Supported,
        int(1, INT, 100),
    ),
    flow(
        "retryInitialBackoffMillis",
        "integer (ms), at least 0",
        "100",
        "Delay before the first retry of a failed send; it grows with each failure (at least 10 ms are waited).",
        Supported,
        int(0, LONG, 100),
    ),
    flow(
        "retryMaxBackoffMillis",
        "integer (ms), at least retryInitialBackoffMillis",
        "10000",
        "Longest delay between two retries.",
        Supported,
        int(0, LONG, 10_000),
    ),
    flow(
        "waitOnEmptyPublishQueueMillis",
        "integer (ms), 1000-900000",
        "60000",
        "How long the Java agent's publisher waits for a batch.",
        Ignored(QUEUES),
        int(1_000, 900_000, 60_000),
    ),
    flow(
        "waitOnFullPublishQueueMillis",
        "integer (ms), 1000-900000",
        "60000",
        "How long the Java agent waits on a full publish queue (it never does).",
        Ignored(QUEUES),
        int(1_000, 900_000, 60_000),
    ),
    flow("waitOnFullRetryQueueMillis", "any", "none", "Never read by the Java agent.", Ignored(NEVER_READ), Check::Any),
    flow(
        "minTimeBetweenFilePollsMillis",
        "integer (ms), at least 1",
        "100",
        "How often a file is checked for new data when no file-system notification arrives.",
        Supported,
        int(1, LONG, 100),
    ),
    flow(
        "maxTimeBetweenFileTrackerRefreshMillis",
        "integer (ms), at least 1",
        "10000",
        "Longest time between two searches for new files matching `filePattern`.",
        Supported,
        int(1, LONG, 10_000),
    ),
    flow(
        "multiLineStartPattern",
        "regex",
        "none: one record per line",
        "A record starts at each line that begins with a match of this regex and takes in the lines after it that do not; lines before a file's first start line make a record of their own.",
        Supported,
        Check::Custom,
    ),
    flow(
        "multiLineFlushTimeoutMillis",
        "integer (ms), at least 1",
        "1000",
        "A multi-line record leaves once its file has been quiet this long, without waiting for the next start line (new: the Java agent has no such key).",
        Supported,
        int(1, LONG, 1_000),
    ),
    flow(
        "rotateWaitMillis",
        "integer (ms), at least 0",
        "5000",
        "A file that no longer matches `filePattern` (rotated away) stays open, in case it is still written to, until it has been read to its end and quiet this long; its unterminated last line is sent then (new).",
        Supported,
        int(0, LONG, 5_000),
    ),
    flow(
        "maxOpenRotatedFiles",
        "integer, at least 0",
        "64",
        "The most files per flow kept open after they left `filePattern`'s reach and were read to their end; beyond it the ones quiet the longest are closed first. Files with unread bytes are never closed early (new).",
        Supported,
        int(0, INT, 64),
    ),
    flow(
        "stalledFileWarningMillis",
        "integer (ms), at least 1000",
        "300000",
        "A file with unread bytes whose reading has not advanced for this long is named in a warning (the destination is slow or down, or reading is stuck) and counted as stalled in the status line (new).",
        Supported,
        int(1_000, LONG, 300_000),
    ),
    flow(
        "skipHeaderLines",
        "integer, 0-2147483647",
        "0",
        "Lines skipped at the start of every file read from its beginning.",
        Supported,
        int(0, INT, 0),
    ),
    flow(
        "truncatedRecordTerminator",
        "string, shorter than the destination's record limit",
        "\"\\n\"",
        "Written at the end of a record cut to the destination's record size limit.",
        Supported,
        Check::Custom,
    ),
    flow(
        "oversizedRecordAction",
        "TRUNCATE or DROP",
        "TRUNCATE",
        "What to do with a line longer than the destination's record limit: cut it and end it with `truncatedRecordTerminator` (as the Java agent does), or drop it; either way it is counted and the file keeps flowing (new: the Java agent has no such key).",
        Supported,
        Check::Custom,
    ),
    flow(
        "fileFooterPattern",
        "regex",
        "none",
        "A line matching this regex (whole line, trimmed) is dropped instead of sent.",
        NotYetSupported("footer lines are sent like any other line for now"),
        Check::Regex,
    ),
    flow(
        "aggregatedRecordSizeBytes",
        "integer, 0-1024000 (Firehose flows only)",
        "0 (off)",
        "Join whole records read together into one Firehose record of up to this many bytes (also multi-line records).",
        Supported,
        Check::Custom,
    ),
    flow(
        "kplAggregation",
        "boolean (Kinesis flows only)",
        "false",
        "Pack many records into each Kinesis record in the KPL aggregated format, which the KCL, Lambda and Flink de-aggregate; an aggregate never spans shards (see KPL aggregation; new).",
        Supported,
        Check::Custom,
    ),
    flow(
        "kplAggregationMaxBytes",
        "integer, 64-1048576, at most maxBufferSizeBytes",
        "25000",
        "Largest KPL aggregated record, its partition key included; the default fits one 25 KB PUT payload unit (new).",
        Supported,
        Check::Custom,
    ),
    flow(
        "dataProcessingOptions",
        "array of objects",
        "none",
        "Converters applied to each record in order: SINGLELINE, CSVTOJSON, LOGTOJSON, ADDMETADATA (see Processing options).",
        Supported,
        Check::Custom,
    ),
    flow(
        "log.emitInternalMetrics",
        "boolean",
        "false",
        "Log this flow's internal counters every status period.",
        NotYetSupported(INTERNAL_METRICS),
        Check::Bool,
    ),
];

/// Every key the agent knows (those of the Java agent, plus `firehose.region`).
pub fn known_keys() -> &'static [KeyInfo] {
    KEYS
}

fn lookup(name: &str, scope: Scope) -> Option<&'static KeyInfo> {
    KEYS.iter().find(|k| k.name == name && k.scope == scope)
}

fn info(name: &str, scope: Scope) -> &'static KeyInfo {
    lookup(name, scope).unwrap_or_else(|| panic!("`{name}` is missing from the key table"))
}

/// Keys whose values never appear in messages.
const SECRET_KEYS: [&str; 2] = ["awsAccessKeyId", "awsSecretAccessKey"];

pub(crate) fn load(main: &Path, dropin_dir: Option<&Path>) -> Result<AgentConfig, ConfigErrors> {
    let mut loader = Loader::default();
    let root = loader.read(main);
    let config = loader.main_file(main, root.as_ref());
    let mut sources = vec![main.to_path_buf()];
    if let Some(dir) = dropin_dir {
        for path in loader.dropin_paths(dir) {
            if let Some(dropin) = loader.read(&path) {
                loader.dropin_file(&path, &dropin, main);
            }
            sources.push(path);
        }
    }
    loader.finish(main, root.is_some(), dropin_dir, config, sources)
}

pub(crate) fn checkpoint_file(main: &Path) -> Result<PathBuf, ConfigErrors> {
    let mut loader = Loader::default();
    let root = loader.read(main).unwrap_or_default();
    let s = Section { file: main, at: String::new(), map: &root, scope: Scope::Global };
    let path = loader.get(&s, "checkpointFile", parse_nonempty);
    match loader.errors.is_empty() {
        true => Ok(path.map_or_else(|| PathBuf::from(DEFAULT_CHECKPOINT_FILE), PathBuf::from)),
        false => Err(ConfigErrors(loader.errors)),
    }
}

pub(crate) fn load_str(name: &Path, text: &str) -> Result<AgentConfig, ConfigErrors> {
    let mut loader = Loader::default();
    let root = loader.parse(name, text.as_bytes());
    let config = loader.main_file(name, root.as_ref());
    loader.finish(name, root.is_some(), None, config, vec![name.to_path_buf()])
}

/// One JSON object being read: the top level of a file, or one flow.
struct Section<'a> {
    file: &'a Path,
    /// `""` at the top level, `flows[2]` in a flow.
    at: String,
    map: &'a Map<String, Value>,
    scope: Scope,
}

impl<'a> Section<'a> {
    /// A present, non-null value (JSON `null` means "use the default").
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

fn location(at: &str, key: &str) -> String {
    if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") }
}

/// The file a section comes from, which decides where misplaced global keys must go.
#[derive(Clone, Copy)]
enum Place<'a> {
    Main,
    /// A drop-in file; the path is the main file.
    DropIn(&'a Path),
}

/// A notice, gathered so that a key used in several flows of a file is reported once.
struct Notice {
    file: PathBuf,
    key: String,
    text: String,
    /// Sections (`""`, `flows[0]`, ...) where the key was found.
    sections: Vec<String>,
}

impl Notice {
    fn render(&self) -> String {
        let first = location(&self.sections[0], &self.key);
        let also =
            if self.sections.len() > 1 { format!(" (also {})", self.sections[1..].join(", ")) } else { String::new() };
        format!("{}: {first}{also}: {}", self.file.display(), self.text)
    }
}

#[derive(Default)]
struct Loader {
    errors: Vec<ConfigError>,
    notices: Vec<Notice>,
    flows: Vec<FlowConfig>,
    /// Flow objects seen, valid or not: the index of the next flow.
    flow_entries: usize,
    /// Some `flows` was not an array (then "no flows" would only add noise).
    bad_flows: bool,
    /// Flow id → (file, section) of the flow that has it.
    ids: HashMap<String, (PathBuf, String)>,
    /// The working directory, looked up when a relative pattern needs it.
    cwd: Option<Result<PathBuf, String>>,
}

impl Loader {
    fn error(&mut self, file: &Path, location: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: file.to_path_buf(),
            location: location.to_owned(),
            message: message.into(),
        });
    }

    fn key_error(&mut self, s: &Section, key: &str, message: impl Into<String>) {
        self.error(s.file, &location(&s.at, key), message);
    }

    fn notice(&mut self, s: &Section, key: &str, text: String) {
        let same = |n: &&mut Notice| n.file == s.file && n.key == key && n.text == text;
        match self.notices.iter_mut().find(same) {
            Some(n) if n.sections.contains(&s.at) => {}
            Some(n) => n.sections.push(s.at.clone()),
            None => self.notices.push(Notice {
                file: s.file.to_path_buf(),
                key: key.to_owned(),
                text,
                sections: vec![s.at.clone()],
            }),
        }
    }

    /// The notice a key's status calls for.
    fn status_notice(&mut self, s: &Section, key: &str) {
        let text = match info(key, s.scope).status {
            Supported => return,
            NotYetSupported(why) => format!("accepted but not yet supported ({why})"),
            Ignored(why) => format!("accepted and ignored: {why}"),
        };
        self.notice(s, key, text);
    }

    /// Parses `key` if present; a bad value is recorded as an error and gives `None`.
    fn get<T>(&mut self, s: &Section, key: &str, parse: impl FnOnce(&str, &Value) -> Result<T, String>) -> Option<T> {
        match parse(key, s.get(key)?) {
            Ok(value) => Some(value),
            Err(message) => {
                self.key_error(s, key, message);
                None
            }
        }
    }

    /// An integer key, within the range of the key table; `None` if absent or wrong.
    fn int_opt(&mut self, s: &Section, key: &str) -> Option<i64> {
        let Check::Int { min, max, .. } = info(key, s.scope).check else {
            panic!("`{key}` is not an integer key");
        };
        self.get(s, key, |k, v| parse_int(k, v, min, max))
    }

    /// An integer key, or its default from the key table.
    fn int_key(&mut self, s: &Section, key: &str) -> i64 {
        let Check::Int { default, .. } = info(key, s.scope).check else {
            panic!("`{key}` is not an integer key");
        };
        let default = default.unwrap_or_else(|| panic!("`{key}` has a computed default"));
        self.int_opt(s, key).unwrap_or(default)
    }

    fn millis_key(&mut self, s: &Section, key: &str) -> Duration {
        // Ranges start at 0 or more, so the cast is exact.
        Duration::from_millis(self.int_key(s, key) as u64)
    }

    fn read(&mut self, file: &Path) -> Option<Map<String, Value>> {
        match fs::read(file) {
            Ok(bytes) => self.parse(file, &bytes),
            Err(e) => {
                self.error(file, "", format!("cannot read the configuration file: {e}"));
                None
            }
        }
    }

    fn parse(&mut self, file: &Path, bytes: &[u8]) -> Option<Map<String, Value>> {
        match parse_json(bytes) {
            Ok(Value::Object(map)) => Some(map),
            Ok(other) => {
                let found = kind(&other);
                self.error(file, "", format!("the top level must be a JSON object, found {found}"));
                None
            }
            Err(message) => {
                self.error(file, "", message);
                None
            }
        }
    }

    /// The `*.json` regular files of the drop-in directory, sorted by name.
    fn dropin_paths(&mut self, dir: &Path) -> Vec<PathBuf> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                self.error(dir, "", format!("cannot read the drop-in directory: {e}"));
                return Vec::new();
            }
        };
        let mut paths = Vec::new();
        for entry in entries {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    self.error(dir, "", format!("cannot read the drop-in directory: {e}"));
                    continue;
                }
            };
            let is_json = path.file_name().is_some_and(|name| name.as_encoded_bytes().ends_with(b".json"));
            if !is_json {
                continue;
            }
            // `metadata` follows symlinks, so a link to a regular file counts as one.
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => paths.push(path),
                Ok(_) => {}
                Err(e) => self.error(&path, "", format!("cannot read the drop-in file: {e}")),
            }
        }
        paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        paths
    }

    fn main_file(&mut self, file: &Path, root: Option<&Map<String, Value>>) -> AgentConfig {
        let empty = Map::new();
        let s = Section { file, at: String::new(), map: root.unwrap_or(&empty), scope: Scope::Global };
        self.check_keys(&s, Place::Main);
        let config = self.globals(&s);
        self.flows_of(&s, Place::Main);
        config
    }

    fn dropin_file(&mut self, file: &Path, root: &Map<String, Value>, main: &Path) {
        let s = Section { file, at: String::new(), map: root, scope: Scope::Global };
        self.check_keys(&s, Place::DropIn(main));
        self.flows_of(&s, Place::DropIn(main));
    }

    fn finish(
        mut self,
        main: &Path,
        main_ok: bool,
        dropin_dir: Option<&Path>,
        mut config: AgentConfig,
        sources: Vec<PathBuf>,
    ) -> Result<AgentConfig, ConfigErrors> {
        if main_ok && self.flow_entries == 0 && !self.bad_flows {
            let mut message = "no flows: add at least one flow to `flows`".to_owned();
            if let Some(dir) = dropin_dir {
                message += &format!(" (in this file or in a *.json file of {})", dir.display());
            }
            self.error(main, "", message);
        }
        if !self.errors.is_empty() {
            return Err(ConfigErrors(self.errors));
        }
        config.sources = sources;
        config.flows = self.flows;
        config.notices = self.notices.iter().map(Notice::render).collect();
        Ok(config)
    }

    /// Reports unknown and misplaced keys, and checks the keys no dedicated code reads.
    fn check_keys(&mut self, s: &Section, place: Place) {
        for (key, value) in s.map {
            if value.is_null() {
                continue;
            }
            if let Some(known) = lookup(key, s.scope) {
                match place {
                    Place::DropIn(main) if s.scope == Scope::Global && key != "flows" => {
                        let text =
                            format!("ignored in drop-in files (as in the Java agent); set it in {}", main.display());
                        self.notice(s, key, text);
                    }
                    _ => self.check_unsupported(s, known, value),
                }
                continue;
            }
            let message = match (s.scope, place) {
                (Scope::Global, _) if lookup(key, Scope::Flow).is_some() => {
                    format!("`{key}` is a flow key: move it into each object of `flows`")
                }
                (Scope::Flow, Place::Main) if lookup(key, Scope::Global).is_some() => {
                    format!("`{key}` is a global key: move it to the top level of the file")
                }
                (Scope::Flow, Place::DropIn(main)) if lookup(key, Scope::Global).is_some() => {
                    format!(
                        "`{key}` is a global key: move it to the top level of {} (drop-in files only contribute flows)",
                        main.display()
                    )
                }
                _ => unknown_key_message(key, s.scope),
            };
            self.key_error(s, key, message);
        }
    }

    /// Validates a key that is accepted without effect, and notes it when its value asks for
    /// something the agent does not do.
    fn check_unsupported(&mut self, s: &Section, known: &KeyInfo, value: &Value) {
        if known.status == Supported {
            return;
        }
        let key = known.name;
        let asks = match known.check {
            Check::Custom => return,
            Check::Any => Ok(true),
            Check::Bool => parse_bool(key, value),
            Check::Int { min, max, default } => parse_int(key, value, min, max).map(|n| Some(n) != default),
            Check::Str => parse_str(key, value).map(|_| true),
            Check::Regex => parse_regex(key, value).map(|_| true),
        };
        match asks {
            Ok(true) => self.status_notice(s, key),
            Ok(false) => {}
            Err(message) => self.key_error(s, key, message),
        }
    }

    fn globals(&mut self, s: &Section) -> AgentConfig {
        let checkpoint_file = self
            .get(s, "checkpointFile", parse_nonempty)
            .map_or_else(|| PathBuf::from(DEFAULT_CHECKPOINT_FILE), PathBuf::from);
        // The range ends at i32::MAX, so the cast is exact.
        let checkpoint_ttl_days = self.int_key(s, "checkpointTimeToLiveDays") as u32;
        let shutdown_timeout = self.millis_key(s, "shutdownTimeoutMillis");
        let per_core = self.int_key(s, "maxSendingThreadsPerCore") as usize;
        let max_sending_threads = match self.int_opt(s, "maxSendingThreads") {
            Some(n) => {
                if s.has("maxSendingThreadsPerCore") {
                    let text = "accepted and ignored: `maxSendingThreads` is set".to_owned();
                    self.notice(s, "maxSendingThreadsPerCore", text);
                }
                n as usize
            }
            None => {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                per_core.saturating_mul(cpus).max(2)
            }
        };
        let max_in_flight_bytes = self
            .get(s, "maxInFlightBytes", |k, v| match parse_int(k, v, KINESIS_MAX_RECORD_BYTES as i64, LONG) {
                Ok(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
                Err(_) => Err(format!(
                    "must be a whole number of bytes, at least {KINESIS_MAX_RECORD_BYTES} (1 MiB: room for one \
                     record of the largest size), found {}",
                    shown(k, v)
                )),
            })
            .unwrap_or(DEFAULT_MAX_IN_FLIGHT_BYTES);
        let status_period = Duration::from_secs(self.int_key(s, "log.statusReportingPeriodSeconds") as u64);
        let prometheus_port = self.int_opt(s, "prometheus.port").map(|p| p as u16);
        let prometheus_ip = self
            .get(s, "prometheus.address", |k, v| {
                let text = parse_str(k, v)?;
                text.parse::<std::net::IpAddr>()
                    .map_err(|_| format!("must be an IP address such as 127.0.0.1 or 0.0.0.0, found {text:?}"))
            })
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        if s.has("prometheus.address") && prometheus_port.is_none() && !s.has("prometheus.port") {
            self.key_error(s, "prometheus.address", "needs `prometheus.port` to mean anything: add it".to_owned());
        }
        let prometheus = prometheus_port.map(|port| std::net::SocketAddr::new(prometheus_ip, port));
        let log = self.log_settings(s);
        let aws = self.aws(s);
        let cloudwatch = CloudWatchSettings {
            emit: self.get(s, "cloudwatch.emitMetrics", parse_bool),
            namespace: self.optional(s, "cloudwatch.namespace").unwrap_or_else(|| "AWSKinesisAgent".to_owned()),
            tag_instance: self.get(s, "cloudwatch.tagInstance", parse_bool).unwrap_or(false),
            buffer_time: self.millis_key(s, "cloudwatch.metricsBufferTimeMillis").max(Duration::from_millis(100)),
            queue_size: (self.int_key(s, "cloudwatch.metricsQueueSize") as usize).max(1),
        };
        AgentConfig {
            sources: Vec::new(),
            flows: Vec::new(),
            checkpoint_file,
            checkpoint_ttl_days,
            shutdown_timeout,
            max_sending_threads,
            max_in_flight_bytes,
            give_up_after: super::DEFAULT_GIVE_UP_AFTER,
            progress: None,
            status_period,
            prometheus,
            cloudwatch,
            log,
            aws,
            notices: Vec::new(),
        }
    }

    fn log_settings(&mut self, s: &Section) -> LogSettings {
        const LEVELS: [(&str, &str); 9] = [
            ("TRACE", "trace"),
            ("ALL", "trace"),
            ("DEBUG", "debug"),
            ("INFO", "info"),
            ("WARN", "warn"),
            ("WARNING", "warn"),
            ("ERROR", "error"),
            ("FATAL", "error"),
            ("OFF", "off"),
        ];
        let level = self.get(s, "log.level", |k, v| {
            let text = parse_str(k, v)?;
            LEVELS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(text.trim()))
                .map(|(_, l)| (*l).to_string())
                .ok_or_else(|| format!("must be TRACE, DEBUG, INFO, WARN or ERROR, found {text:?}"))
        });
        let file = self.get(s, "log.file", parse_nonempty).map(PathBuf::from);
        let max_file_size = self
            .get(s, "log.maxFileSize", |k, v| {
                let text = match v {
                    Value::Number(n) => n.to_string(),
                    _ => parse_str(k, v)?,
                };
                crate::service::logfile::parse_size(&text)
                    .ok_or_else(|| format!("must be a size such as 10MB, 512KB or 1048576, found {text:?}"))
            })
            .unwrap_or(10 << 20);
        let max_backups = self.get(s, "log.maxBackupIndex", |k, v| parse_int(k, v, 0, 1000)).unwrap_or(5) as u32;
        LogSettings { level, file, max_file_size, max_backups }
    }

    /// An optional string where empty means unset, as in the Java agent.
    fn optional(&mut self, s: &Section, key: &str) -> Option<String> {
        self.get(s, key, parse_str).filter(|v| !v.trim().is_empty())
    }

    fn aws(&mut self, s: &Section) -> AwsSettings {
        let access_key_id = self.get(s, "awsAccessKeyId", parse_nonempty);
        let secret_access_key = self.get(s, "awsSecretAccessKey", parse_nonempty).map(Secret);
        match (s.has("awsAccessKeyId"), s.has("awsSecretAccessKey")) {
            (true, false) => {
                self.key_error(s, "awsAccessKeyId", "needs `awsSecretAccessKey` too: static credentials are a pair")
            }
            (false, true) => {
                self.key_error(s, "awsSecretAccessKey", "needs `awsAccessKeyId` too: static credentials are a pair")
            }
            _ => {}
        }
        AwsSettings {
            kinesis_endpoint: self.optional(s, "kinesis.endpoint"),
            kinesis_region: self.optional(s, "kinesis.region"),
            firehose_endpoint: self.optional(s, "firehose.endpoint"),
            firehose_region: self.optional(s, "firehose.region"),
            sts_endpoint: self.optional(s, "sts.endpoint"),
            cloudwatch_endpoint: self.optional(s, "cloudwatch.endpoint"),
            ec2_metadata_endpoint: self.optional(s, "ec2.metadataEndpoint"),
            access_key_id,
            secret_access_key,
            assume_role_arn: self.optional(s, "assumeRoleARN"),
            assume_role_external_id: self.optional(s, "assumeRoleExternalId"),
            user_agent: self.optional(s, "userAgent").map(|v| v.trim().to_owned()),
            // Used whenever present, even empty, as in the Java agent.
            user_agent_override: self.get(s, "userAgentOverride", parse_str),
            connection_timeout: self.millis_key(s, "connectionTimeoutMillis"),
            socket_timeout: self.millis_key(s, "socketTimeoutMillis"),
        }
    }

    fn flows_of(&mut self, s: &Section, place: Place) {
        let Some(value) = s.get("flows") else { return };
        let Value::Array(items) = value else {
            let found = kind(value);
            self.key_error(s, "flows", format!("must be an array of flow objects, found {found}"));
            self.bad_flows = true;
            return;
        };
        for (k, item) in items.iter().enumerate() {
            let at = format!("flows[{k}]");
            let index = self.flow_entries;
            self.flow_entries += 1;
            let Value::Object(map) = item else {
                let found = kind(item);
                self.error(s.file, &at, format!("must be a flow object, found {found}"));
                continue;
            };
            let flow = Section { file: s.file, at, map, scope: Scope::Flow };
            if let Some(config) = self.flow(&flow, index, place) {
                if let Some((file, at)) = self.ids.get(&config.id) {
                    let message = format!(
                        "duplicate flow: {at} of {} already sends `{}` to the same stream (flow id `{}`)",
                        file.display(),
                        config.file_pattern,
                        config.id
                    );
                    self.error(flow.file, &flow.at, message);
                } else {
                    let owner = (flow.file.to_path_buf(), flow.at.clone());
                    self.ids.insert(config.id.clone(), owner);
                    self.flows.push(config);
                }
            }
        }
    }

    fn flow(&mut self, s: &Section, index: usize, place: Place) -> Option<FlowConfig> {
        self.check_keys(s, place);

        // Firehose wins when both are given, as in the Java agent.
        let firehose = s.has("deliveryStream");
        let destination = if firehose {
            if s.has("kinesisStream") {
                let text = "accepted and ignored: `deliveryStream` is also set, and wins (as in the Java agent)";
                self.notice(s, "kinesisStream", text.to_owned());
            }
            self.get(s, "deliveryStream", parse_nonempty).map(|stream| Destination::Firehose { stream })
        } else if s.has("kinesisStream") {
            self.get(s, "kinesisStream", parse_nonempty).map(|stream| Destination::Kinesis { stream })
        } else {
            self.error(s.file, &s.at, "needs `kinesisStream` or `deliveryStream`: where to send the records");
            None
        };
        let (max_batch_bytes, max_record_bytes) = if firehose {
            (FIREHOSE_MAX_BATCH_BYTES, FIREHOSE_MAX_RECORD_BYTES)
        } else {
            (KINESIS_MAX_BATCH_BYTES, KINESIS_MAX_RECORD_BYTES)
        };

        let file_pattern = if s.has("filePattern") {
            self.get(s, "filePattern", parse_pattern).and_then(|p| self.absolute(s, p))
        } else {
            self.error(s.file, &s.at, "needs `filePattern`: the files to tail, e.g. \"/var/log/app/*.log\"");
            None
        };

        let partition_key = if firehose {
            if s.has("partitionKeyOption") {
                let text = "accepted and ignored: partition keys apply to `kinesisStream` flows only";
                self.notice(s, "partitionKeyOption", text.to_owned());
            }
            PartitionKeyOption::Random
        } else {
            match s.get("partitionKeyOption").map(parse_partition_key) {
                None => PartitionKeyOption::Random,
                Some(Ok(key)) => key,
                Some(Err((sub, message))) => {
                    let key = match sub {
                        Some(sub) => format!("partitionKeyOption.{sub}"),
                        None => "partitionKeyOption".to_owned(),
                    };
                    self.key_error(s, &key, message);
                    PartitionKeyOption::Random
                }
            }
        };
        let positions = [("START_OF_FILE", InitialPosition::StartOfFile), ("END_OF_FILE", InitialPosition::EndOfFile)];
        let initial_position =
            self.get(s, "initialPosition", |k, v| parse_choice(k, v, &positions)).unwrap_or(InitialPosition::EndOfFile);
        let actions = [("TRUNCATE", OversizedRecordAction::Truncate), ("DROP", OversizedRecordAction::Drop)];
        let oversized_record_action = self
            .get(s, "oversizedRecordAction", |k, v| parse_choice(k, v, &actions))
            .unwrap_or(OversizedRecordAction::Truncate);

        let max_buffer_age = self.millis_key(s, "maxBufferAgeMillis");
        let max_buffer_size_records = self.int_key(s, "maxBufferSizeRecords") as usize;
        let max_buffer_size_bytes = self
            .get(s, "maxBufferSizeBytes", |k, v| parse_int(k, v, 1, max_batch_bytes as i64))
            .map_or(max_batch_bytes, |n| n as usize);
        let publish_queue_capacity = self.int_key(s, "publishQueueCapacity") as usize;
        let kpl_aggregation = if firehose {
            for key in ["kplAggregation", "kplAggregationMaxBytes"] {
                if s.has(key) {
                    let message =
                        "applies to `kinesisStream` flows only (for Firehose, see `aggregatedRecordSizeBytes`)";
                    self.key_error(s, key, message);
                }
            }
            None
        } else {
            let on = self.get(s, "kplAggregation", parse_bool).unwrap_or(false);
            let max = self
                .get(s, "kplAggregationMaxBytes", |k, v| parse_int(k, v, 64, KINESIS_MAX_RECORD_BYTES as i64))
                .map_or(DEFAULT_KPL_AGGREGATION_BYTES, |n| n as usize);
            if s.has("kplAggregationMaxBytes") && !on {
                let text = "accepted and ignored: `kplAggregation` is not true".to_owned();
                self.notice(s, "kplAggregationMaxBytes", text);
            }
            if on && max > max_buffer_size_bytes {
                let message = format!(
                    "must be at most `maxBufferSizeBytes` ({max_buffer_size_bytes}), found {max}: an aggregate is sent in one batch"
                );
                self.key_error(s, "kplAggregationMaxBytes", message);
            }
            on.then_some(max)
        };

        let errors_before = self.errors.len();
        let retry_initial_backoff = self.millis_key(s, "retryInitialBackoffMillis");
        let retry_max_backoff = self.millis_key(s, "retryMaxBackoffMillis");
        if self.errors.len() == errors_before && retry_max_backoff < retry_initial_backoff {
            let message = format!(
                "must be at least `retryInitialBackoffMillis` ({}), found {}",
                retry_initial_backoff.as_millis(),
                retry_max_backoff.as_millis()
            );
            self.key_error(s, "retryMaxBackoffMillis", message);
        }

        let min_time_between_file_polls = self.millis_key(s, "minTimeBetweenFilePollsMillis");
        let max_time_between_file_tracker_refresh = self.millis_key(s, "maxTimeBetweenFileTrackerRefreshMillis");
        let skip_header_lines = self.int_key(s, "skipHeaderLines") as u64;
        let truncated_record_terminator = self
            .get(s, "truncatedRecordTerminator", |k, v| {
                let terminator = parse_str(k, v)?;
                if terminator.len() < max_record_bytes {
                    Ok(terminator)
                } else {
                    Err(format!(
                        "must be shorter than {max_record_bytes} bytes (the largest record the destination takes), found {} bytes",
                        terminator.len()
                    ))
                }
            })
            .unwrap_or_else(|| "\n".to_owned())
            .into_bytes();

        let multi_line_start_pattern = self.get(s, "multiLineStartPattern", parse_regex);
        let multi_line_flush_timeout = self.millis_key(s, "multiLineFlushTimeoutMillis");
        let rotate_wait = self.millis_key(s, "rotateWaitMillis");
        let max_open_rotated_files = self.int_key(s, "maxOpenRotatedFiles") as usize;
        let stalled_file_warning = self.millis_key(s, "stalledFileWarningMillis");

        let aggregated_record_size_bytes = if !s.has("aggregatedRecordSizeBytes") {
            0
        } else if firehose {
            self.get(s, "aggregatedRecordSizeBytes", |k, v| parse_int(k, v, 0, FIREHOSE_MAX_RECORD_BYTES as i64))
                .unwrap_or(0) as usize
        } else {
            let message = "applies to `deliveryStream` (Firehose) flows only: remove it from this `kinesisStream` flow";
            self.key_error(s, "aggregatedRecordSizeBytes", message);
            0
        };

        let data_processing_options = self.processing_options(s);

        let (destination, file_pattern) = (destination?, file_pattern?);
        let kind = match destination {
            Destination::Kinesis { .. } => "kinesis",
            Destination::Firehose { .. } => "fh",
        };
        Some(FlowConfig {
            index,
            source: s.file.to_path_buf(),
            id: format!("{kind}:{}:{file_pattern}", destination.name()),
            file_pattern,
            destination,
            partition_key,
            initial_position,
            max_buffer_age,
            max_buffer_size_records,
            max_buffer_size_bytes,
            publish_queue_capacity,
            retry_initial_backoff,
            retry_max_backoff,
            min_time_between_file_polls,
            max_time_between_file_tracker_refresh,
            skip_header_lines,
            truncated_record_terminator,
            oversized_record_action,
            multi_line_start_pattern,
            multi_line_flush_timeout,
            rotate_wait,
            max_open_rotated_files,
            stalled_file_warning,
            aggregated_record_size_bytes,
            kpl_aggregation,
            data_processing_options,
        })
    }

    /// Makes a relative pattern absolute against the working directory.
    fn absolute(&mut self, s: &Section, pattern: String) -> Option<String> {
        if Path::new(&pattern).is_absolute() {
            return Some(pattern);
        }
        let cwd = self.cwd.get_or_insert_with(|| std::env::current_dir().map_err(|e| e.to_string())).clone();
        let problem = match cwd {
            Ok(dir) => match dir.join(&pattern).into_os_string().into_string() {
                Ok(absolute) => return Some(absolute),
                Err(_) => format!("the working directory {} is not valid UTF-8", dir.display()),
            },
            Err(e) => format!("the working directory cannot be found ({e})"),
        };
        let message = format!("is relative and {problem}: give an absolute path");
        self.key_error(s, "filePattern", message);
        None
    }
}

/// Strips comments and parses; errors carry the line and column.
fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = strip_comments(bytes).map_err(|offset| {
        let (line, column) = line_column(bytes, offset);
        let what = if offset < bytes.len() {
            "a `/` that does not start a comment (`// ...` or `/* ... */`)"
        } else {
            "the file ends inside a string or a `/* */` comment"
        };
        format!("invalid JSON at line {line}, column {column}: {what}")
    })?;
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err("the file is empty: it must hold a JSON object such as {\"flows\": [...]}".into());
    }
    serde_json::from_slice(&text).map_err(|e| {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let what = full.strip_suffix(&suffix).unwrap_or(&full);
        format!("invalid JSON at line {}, column {}: {what}", e.line(), e.column())
    })
}

/// Blanks `//` and `/* */` comments (Jackson's ALLOW_COMMENTS; no `#`), keeping every byte
/// where it was. On error, gives the offset of the offending byte (or the length at EOF).
fn strip_comments(text: &[u8]) -> Result<Vec<u8>, usize> {
    let mut reader = CommentSettings::c_style().strip_comments(text);
    let mut out = Vec::with_capacity(text.len());
    // One byte at a time, so an error's position is exact.
    let mut byte = [0u8];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => out.push(byte[0]),
            // The byte after a stray `/` is rejected: point at the `/`.
            Err(_) if out.len() < text.len() => return Err(out.len().saturating_sub(1)),
            Err(_) => return Err(text.len()),
        }
    }
    // Block comments are blanked newlines and all: put the newlines back so that line numbers
    // stay right. A newline outside comments is unchanged anyway.
    for (o, &t) in out.iter_mut().zip(text) {
        if t == b'\n' {
            *o = b'\n';
        }
    }
    Ok(out)
}

/// 1-based line and byte column, as serde_json counts them.
fn line_column(text: &[u8], offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    (line, before.len() - line_start + 1)
}

fn unknown_key_message(key: &str, scope: Scope) -> String {
    let (other, other_name, other_place) = match scope {
        Scope::Global => (Scope::Flow, "the flow key", "it goes into each object of `flows`"),
        Scope::Flow => (Scope::Global, "the global key", "it goes at the top level of the main file"),
    };
    if let Some(near) = nearest(key, scope) {
        format!("unknown key `{key}`; did you mean `{near}`?")
    } else if let Some(near) = nearest(key, other) {
        format!("unknown key `{key}`; did you mean {other_name} `{near}`? ({other_place})")
    } else {
        format!("unknown key `{key}`")
    }
}

/// The known key of `scope` closest to `key`, ignoring case, if it is close enough.
fn nearest(key: &str, scope: Scope) -> Option<&'static str> {
    let key = key.to_lowercase();
    let mut best: Option<(f64, &'static str)> = None;
    for known in KEYS.iter().filter(|k| k.scope == scope) {
        let score = strsim::normalized_damerau_levenshtein(&key, &known.name.to_lowercase());
        if score >= 0.7 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, known.name));
        }
    }
    best.map(|(_, name)| name)
}

/// The JSON type of a value, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value as shown in messages: scalars as written (secrets redacted), containers by type.
fn shown(key: &str, v: &Value) -> String {
    const MAX_CHARS: usize = 60;
    match v {
        Value::Array(_) | Value::Object(_) => kind(v).to_owned(),
        _ if SECRET_KEYS.contains(&key) => "<redacted>".to_owned(),
        Value::String(s) if s.chars().count() > MAX_CHARS => {
            let head: String = s.chars().take(MAX_CHARS).collect();
            format!("{}...", Value::String(head))
        }
        _ => v.to_string(),
    }
}

/// A whole number in `min..=max`. Like the Java agent, strings holding numbers are accepted.
/// Unlike it, so is a number written with a zero fraction (`1000.0`, `1e3`).
fn parse_int(key: &str, v: &Value, min: i64, max: i64) -> Result<i64, String> {
    let from_float = |f: f64| {
        // `i64::MAX as f64` rounds up to 2^63, so the upper bound is exclusive.
        (f.is_finite() && f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
    };
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(from_float)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| s.parse::<f64>().ok().and_then(from_float))
        }
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => {
            let range = if max == LONG { format!("at least {min}") } else { format!("from {min} to {max}") };
            Err(format!("must be a whole number {range}, found {}", shown(key, v)))
        }
    }
}

/// Java's loose booleans: JSON booleans, or (any case) true/yes/t/y/1 and false/no/f/n/0.
fn parse_bool(key: &str, v: &Value) -> Result<bool, String> {
    let b = match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "t" | "y" | "1" => Some(true),
            "false" | "no" | "f" | "n" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        _ => None,
    };
    b.ok_or_else(|| {
        format!(
            "must be true or false (also \"yes\"/\"no\", \"t\"/\"f\", \"y\"/\"n\", \"1\"/\"0\" in any case), found {}",
            shown(key, v)
        )
    })
}

/// A string; numbers and booleans are taken as their text, as the Java agent does.
fn parse_str(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
        _ => Err(format!("must be a string, found {}", shown(key, v))),
    }
}

fn parse_nonempty(key: &str, v: &Value) -> Result<String, String> {
    let s = parse_str(key, v)?;
    if s.trim().is_empty() { Err("must not be empty".to_owned()) } else { Ok(s) }
}

fn parse_pattern(key: &str, v: &Value) -> Result<String, String> {
    let pattern = parse_nonempty(key, v)?;
    if pattern.ends_with('/') {
        return Err(format!(
            "must name files, not a directory: {} ends with `/` (add a file name or glob, e.g. `*.log`)",
            shown(key, v)
        ));
    }
    // The same compilation discovery does, so `--check-config` catches what a start would.
    if let Err(e) = crate::discovery::Pattern::new(&pattern) {
        return Err(format!("{} is not a valid glob: {}", shown(key, v), e.kind()));
    }
    Ok(pattern)
}

/// An enum value, matched case-sensitively as Java's `valueOf` does.
fn parse_choice<T: Copy>(key: &str, v: &Value, options: &[(&str, T)]) -> Result<T, String> {
    let names: Vec<String> = options.iter().map(|(name, _)| format!("`{name}`")).collect();
    let allowed = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    let mut message = format!("must be {allowed}, found {}", shown(key, v));
    if let Value::String(s) = v {
        if let Some((_, value)) = options.iter().find(|(name, _)| name == s) {
            return Ok(*value);
        }
        if let Some((name, _)) = options.iter().find(|(name, _)| name.eq_ignore_ascii_case(s)) {
            message += &format!(" (values are case-sensitive: write `{name}`)");
        }
    }
    Err(message)
}

/// `partitionKeyOption`: `"RANDOM"`, `"DETERMINISTIC"` or an object (see `DerivedKey`). An
/// error names the sub-key it is about, if any.
fn parse_partition_key(v: &Value) -> Result<PartitionKeyOption, (Option<&'static str>, String)> {
    const KEY: &str = "partitionKeyOption";
    let Value::Object(map) = v else {
        let options = [("RANDOM", PartitionKeyOption::Random), ("DETERMINISTIC", PartitionKeyOption::Deterministic)];
        let named = |s: &str| options.iter().find(|(n, _)| *n == s).map(|(_, o)| o.clone());
        if let Value::String(s) = v
            && let Some(o) = named(s)
        {
            return Ok(o);
        }
        let message = match v {
            Value::String(s) if named(&s.to_ascii_uppercase()).is_some() => format!(
                "must be `RANDOM`, `DETERMINISTIC` or an object, found {} (values are case-sensitive: write `{}`)",
                shown(KEY, v),
                s.to_ascii_uppercase()
            ),
            _ => format!(
                "must be `RANDOM`, `DETERMINISTIC` or an object such as {{\"field\": \"$.user.id\"}}, {{\"regex\": \"user=(\\\\w+)\"}} or {{\"constant\": \"web-1\"}}, found {}",
                shown(KEY, v)
            ),
        };
        return Err((None, message));
    };
    const SUBKEYS: [&str; 6] = ["field", "regex", "group", "constant", "fallback", "explicitHashKeyField"];
    for k in map.keys() {
        if !SUBKEYS.contains(&k.as_str()) {
            let near = SUBKEYS
                .iter()
                .map(|s| (strsim::normalized_damerau_levenshtein(&k.to_lowercase(), &s.to_lowercase()), *s))
                .filter(|(score, _)| *score >= 0.6)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let hint = match near {
                Some((_, n)) => format!("; did you mean `{n}`?"),
                None => format!(" (known: {})", SUBKEYS.join(", ")),
            };
            return Err((None, format!("unknown key `{k}` in the partition key object{hint}")));
        }
    }
    let string = |sub: &'static str| -> Result<Option<String>, (Option<&'static str>, String)> {
        match map.get(sub) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err((Some(sub), format!("must be a string, found {}", kind(other)))),
        }
    };
    let sources: Vec<&str> = ["field", "regex", "constant"].into_iter().filter(|k| map.contains_key(*k)).collect();
    if sources.len() != 1 {
        let found = if sources.is_empty() { "none".to_owned() } else { sources.join(" and ") };
        return Err((
            None,
            format!(
                "needs exactly one of `field` (a JSON path), `regex` (with a capture group) or `constant`, found {found}"
            ),
        ));
    }
    if map.contains_key("group") && sources[0] != "regex" {
        return Err((Some("group"), "applies to `regex` keys only".to_owned()));
    }
    let source = match sources[0] {
        "field" => {
            let path = string("field")?.unwrap_or_default();
            crate::record::key::JsonPath::parse(&path).map_err(|e| (Some("field"), e))?;
            KeySource::Field(path)
        }
        "regex" => {
            let pattern = string("regex")?.unwrap_or_default();
            let group = match map.get("group") {
                None => CaptureGroup::Index(1),
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(i) => CaptureGroup::Index(i as usize),
                    None => return Err((Some("group"), format!("must be a group number or name, found {n}"))),
                },
                Some(Value::String(s)) => match s.parse::<usize>() {
                    Ok(i) => CaptureGroup::Index(i),
                    Err(_) => CaptureGroup::Name(s.clone()),
                },
                Some(other) => {
                    return Err((Some("group"), format!("must be a group number or name, found {}", kind(other))));
                }
            };
            crate::record::key::key_regex(&pattern, &group).map_err(|e| {
                let sub = if e.starts_with("`group`") { "group" } else { "regex" };
                (Some(sub), e)
            })?;
            KeySource::Regex { pattern, group }
        }
        _ => {
            let constant = string("constant")?.unwrap_or_default();
            if crate::record::key::clamp_key(&constant).is_none() {
                return Err((Some("constant"), "is empty: a partition key needs 1 to 256 characters".to_owned()));
            }
            KeySource::Constant(constant)
        }
    };
    let fallback = match string("fallback")?.as_deref() {
        None | Some("RANDOM") => KeyFallback::Random,
        Some("DETERMINISTIC") => KeyFallback::Deterministic,
        Some(other) => {
            return Err((Some("fallback"), format!("must be `RANDOM` or `DETERMINISTIC`, found {other:?}")));
        }
    };
    let explicit_hash_key_field = string("explicitHashKeyField")?;
    if let Some(p) = &explicit_hash_key_field {
        crate::record::key::JsonPath::parse(p).map_err(|e| (Some("explicitHashKeyField"), e))?;
    }
    Ok(PartitionKeyOption::Derived(DerivedKey { source, fallback, explicit_hash_key_field }))
}

fn parse_regex(key: &str, v: &Value) -> Result<String, String> {
    let pattern = parse_str(key, v)?;
    match regex::Regex::new(&pattern) {
        Ok(_) => Ok(pattern),
        Err(e) => {
            // A syntax error's text draws a caret diagram over several lines; its last line
            // (`error: ...`) says what is wrong.
            let text = e.to_string();
            let last = text.lines().last().unwrap_or_default();
            let why = last.strip_prefix("error: ").unwrap_or(last);
            Err(format!(
                "must be a regular expression, but {} is not one: {why} (the syntax is that of the Rust `regex` crate: no look-around or backreferences)",
                shown(key, v)
            ))
        }
    }
}

/// The options of `dataProcessingOptions` entries, and the keys each takes.
const PROCESSING_OPTIONS: [(&str, &[&str]); 7] = [
    ("SINGLELINE", &["parseOptions"]),
    ("CSVTOJSON", &["customFieldNames", "delimiter", "csvMode", "jsonFormat"]),
    ("LOGTOJSON", &["logFormat", "matchPattern", "customFieldNames", "jsonFormat"]),
    ("ADDMETADATA", &["metadata", "timestamp", "jsonFormat"]),
    ("ADDEC2METADATA", &["logFormat", "metadataTTL", "jsonFormat"]),
    ("ADDBRACKETS", &[]),
    ("USINGPLUGGIN", &["className"]),
];

const LOG_FORMATS: [(&str, LogFormat); 5] = [
    ("COMMONAPACHELOG", LogFormat::CommonApacheLog),
    ("COMBINEDAPACHELOG", LogFormat::CombinedApacheLog),
    ("APACHEERRORLOG", LogFormat::ApacheErrorLog),
    ("SYSLOG", LogFormat::Syslog),
    ("RFC3339SYSLOG", LogFormat::Rfc3339Syslog),
];

const JSON_FORMATS: [(&str, JsonFormat); 2] =
    [("COMPACT", JsonFormat::Compact), ("PRETTYPRINT", JsonFormat::PrettyPrint)];

/// `csvMode`: `SPLIT` is the Java agent's regex split, `RFC4180` reads quoted fields.
#[derive(Clone, Copy, PartialEq)]
enum CsvMode {
    Split,
    Rfc4180,
}

/// One entry of `dataProcessingOptions` being read: errors name `flows[i].dataProcessingOptions[j].key`.
struct OptionEntry<'a> {
    /// `flows[0].dataProcessingOptions[1]`
    at: String,
    map: &'a Map<String, Value>,
}

impl OptionEntry<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn loc(&self, key: &str) -> String {
        format!("{}.{key}", self.at)
    }
}

impl Loader {
    /// `dataProcessingOptions`, with every problem of every entry reported.
    fn processing_options(&mut self, s: &Section) -> Vec<ProcessingOption> {
        let Some(value) = s.get("dataProcessingOptions") else { return Vec::new() };
        let at = location(&s.at, "dataProcessingOptions");
        let Value::Array(items) = value else {
            self.error(s.file, &at, format!("must be an array of objects, found {}", kind(value)));
            return Vec::new();
        };
        let mut options = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Value::Object(map) = item else {
                let message =
                    format!("must be an object such as {{\"optionName\": \"SINGLELINE\"}}, found {}", kind(item));
                self.error(s.file, &format!("{at}[{i}]"), message);
                continue;
            };
            let entry = OptionEntry { at: format!("{at}[{i}]"), map };
            if let Some(option) = self.processing_option(s, &entry, i) {
                options.push(option);
            }
        }
        options
    }

    fn option_error(&mut self, s: &Section, entry: &OptionEntry, key: &str, message: impl Into<String>) {
        self.error(s.file, &entry.loc(key), message);
    }

    fn processing_option(&mut self, s: &Section, entry: &OptionEntry, index: usize) -> Option<ProcessingOption> {
        let names: Vec<(&str, &str)> = PROCESSING_OPTIONS.iter().map(|(n, _)| (*n, *n)).collect();
        let name = match entry.get("optionName") {
            None => {
                let message = format!(
                    "needs `optionName`: one of {}",
                    PROCESSING_OPTIONS.iter().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                );
                self.error(s.file, &entry.at, message);
                return None;
            }
            Some(v) => match parse_choice("optionName", v, &names) {
                Ok(name) => name,
                Err(message) => {
                    self.option_error(s, entry, "optionName", message);
                    return None;
                }
            },
        };
        let keys = PROCESSING_OPTIONS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k).unwrap_or_default();
        let errors_before = self.errors.len();
        self.check_option_keys(s, entry, index, name, keys);
        let option = match name {
            "SINGLELINE" => self.single_line_option(s, entry),
            "CSVTOJSON" => self.csv_option(s, entry),
            "LOGTOJSON" => self.log_option(s, entry),
            "ADDMETADATA" => self.metadata_option(s, entry, index),
            "ADDBRACKETS" => Some(ProcessingOption::AddBrackets),
            "ADDEC2METADATA" => self.ec2_metadata_option(s, entry, index),
            _ => {
                let message = "USINGPLUGGIN loads Java classes, which this agent cannot run: remove the option, or \
                               replace the converter with SINGLELINE, CSVTOJSON, LOGTOJSON or ADDMETADATA";
                self.option_error(s, entry, "optionName", message);
                None
            }
        };
        option.filter(|_| self.errors.len() == errors_before)
    }

    /// Unknown keys are errors (with a suggestion); keys of another option are ignored, with a notice.
    fn check_option_keys(&mut self, s: &Section, entry: &OptionEntry, index: usize, name: &str, keys: &[&str]) {
        for (key, value) in entry.map {
            if key == "optionName" || value.is_null() || keys.contains(&key.as_str()) {
                continue;
            }
            let known_elsewhere = PROCESSING_OPTIONS.iter().any(|(_, k)| k.contains(&key.as_str()));
            if known_elsewhere {
                let text = format!("accepted and ignored: `{key}` does not apply to {name}");
                self.notice(s, &format!("dataProcessingOptions[{index}].{key}"), text);
                continue;
            }
            let lower = key.to_lowercase();
            let near = keys
                .iter()
                .map(|k| (strsim::normalized_damerau_levenshtein(&lower, &k.to_lowercase()), *k))
                .filter(|(score, _)| *score >= 0.7)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let allowed = if keys.is_empty() {
                format!("{name} takes no other key")
            } else {
                format!("{name} takes {}", keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "))
            };
            let message = match near {
                Some((_, k)) => format!("unknown key `{key}`; did you mean `{k}`? ({allowed})"),
                None => format!("unknown key `{key}` ({allowed})"),
            };
            self.option_error(s, entry, key, message);
        }
    }

    fn json_format(&mut self, s: &Section, entry: &OptionEntry) -> JsonFormat {
        let Some(v) = entry.get("jsonFormat") else { return JsonFormat::Compact };
        parse_choice("jsonFormat", v, &JSON_FORMATS).unwrap_or_else(|message| {
            self.option_error(s, entry, "jsonFormat", message);
            JsonFormat::Compact
        })
    }

    /// `customFieldNames`: a non-empty list of strings.
    fn field_names(&mut self, s: &Section, entry: &OptionEntry) -> Option<Vec<String>> {
        let v = entry.get("customFieldNames")?;
        let names = match v {
            Value::Array(items) if !items.is_empty() => {
                items.iter().map(|i| i.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()
            }
            _ => None,
        };
        if names.is_none() {
            let message = format!(
                "must be a non-empty array of strings such as [\"time\", \"level\", \"message\"], found {}",
                match v {
                    Value::Array(items) if items.is_empty() => "an empty array".to_owned(),
                    Value::Array(items) => match items.iter().find(|i| !i.is_string()) {
                        Some(bad) => format!("an array holding {}", kind(bad)),
                        None => "an array".to_owned(),
                    },
                    _ => kind(v).to_owned(),
                }
            );
            self.option_error(s, entry, "customFieldNames", message);
        }
        names
    }

    fn single_line_option(&mut self, s: &Section, entry: &OptionEntry) -> Option<ProcessingOption> {
        let (mut no_trim, mut escape_new_line) = (false, false);
        let allowed = [("NO_TRIM", 0), ("ESCAPE_NEW_LINE", 1)];
        // A single string is taken as a list of one (the Java agent ignores it).
        let values: Vec<&Value> = match entry.get("parseOptions") {
            None => Vec::new(),
            Some(Value::Array(items)) => items.iter().collect(),
            Some(v @ Value::String(_)) => vec![v],
            Some(v) => {
                let message = format!("must be an array of `NO_TRIM`, `ESCAPE_NEW_LINE`, found {}", kind(v));
                self.option_error(s, entry, "parseOptions", message);
                return None;
            }
        };
        for v in values {
            match parse_choice("parseOptions", v, &allowed) {
                Ok(0) => no_trim = true,
                Ok(_) => escape_new_line = true,
                Err(message) => self.option_error(s, entry, "parseOptions", message),
            }
        }
        Some(ProcessingOption::SingleLine { no_trim, escape_new_line })
    }

    fn csv_option(&mut self, s: &Section, entry: &OptionEntry) -> Option<ProcessingOption> {
        let fields = self.field_names(s, entry);
        if entry.get("customFieldNames").is_none() {
            self.error(s.file, &entry.at, "CSVTOJSON needs `customFieldNames`: the names of the columns, in order");
        }
        let json = self.json_format(s, entry);
        let modes = [("SPLIT", CsvMode::Split), ("RFC4180", CsvMode::Rfc4180)];
        let mode = match entry.get("csvMode") {
            None => CsvMode::Split,
            Some(v) => parse_choice("csvMode", v, &modes).unwrap_or_else(|message| {
                self.option_error(s, entry, "csvMode", message);
                CsvMode::Split
            }),
        };
        let delimiter = match entry.get("delimiter") {
            None => ",".to_owned(),
            Some(v) => match parse_str("delimiter", v) {
                Ok(d) => d,
                Err(message) => {
                    self.option_error(s, entry, "delimiter", message);
                    return None;
                }
            },
        };
        let split = match mode {
            CsvMode::Split => match regex::Regex::new(&delimiter) {
                Ok(_) => CsvSplit::Regex(delimiter),
                Err(e) => {
                    let message = format!(
                        "is read as a regular expression (as the Java agent does), but {} is not one: {}; escape special characters (\"\\\\|\" for a pipe) or use `csvMode` RFC4180",
                        shown("delimiter", &Value::String(delimiter.clone())),
                        regex_problem(&e)
                    );
                    self.option_error(s, entry, "delimiter", message);
                    return None;
                }
            },
            CsvMode::Rfc4180 => {
                // The regex spelling of the usual delimiters is accepted too, so a Java config
                // keeps working when the mode is switched on.
                let byte = match delimiter.as_bytes() {
                    [b] if b.is_ascii() => Some(*b),
                    [b'\\', b't'] => Some(b'\t'),
                    [b'\\', b] if b.is_ascii_punctuation() => Some(*b),
                    _ => None,
                };
                match byte {
                    Some(b) if b != b'"' && b != b'\n' && b != b'\r' => CsvSplit::Quoted(b),
                    _ => {
                        let message = format!(
                            "with `csvMode` RFC4180 must be one ASCII character other than a quote or line break (such as \",\", \";\", \"|\" or \"\\t\"), found {}",
                            shown("delimiter", &Value::String(delimiter))
                        );
                        self.option_error(s, entry, "delimiter", message);
                        return None;
                    }
                }
            }
        };
        Some(ProcessingOption::CsvToJson { fields: fields?, split, json })
    }

    fn log_option(&mut self, s: &Section, entry: &OptionEntry) -> Option<ProcessingOption> {
        let format = match entry.get("logFormat") {
            None => None,
            Some(v) => match parse_choice("logFormat", v, &LOG_FORMATS) {
                Ok(f) => Some(f),
                Err(message) => {
                    self.option_error(s, entry, "logFormat", message);
                    return None;
                }
            },
        };
        let fields = self.field_names(s, entry);
        let json = self.json_format(s, entry);
        let pattern = match entry.get("matchPattern") {
            None => None,
            Some(v) => {
                let text = match parse_str("matchPattern", v) {
                    Ok(t) => t,
                    Err(message) => {
                        self.option_error(s, entry, "matchPattern", message);
                        return None;
                    }
                };
                match crate::record::process::log::compile_match_pattern(&text) {
                    Ok(re) => Some((text, re.captures_len() - 1)),
                    Err(e) => {
                        let message = format!(
                            "must be a regular expression, but {} is not one: {} (the syntax is that of the Rust `regex` crate: no look-around or backreferences)",
                            shown("matchPattern", v),
                            regex_problem(&e)
                        );
                        self.option_error(s, entry, "matchPattern", message);
                        return None;
                    }
                }
            }
        };
        let names = ["COMMONAPACHELOG", "COMBINEDAPACHELOG", "APACHEERRORLOG", "SYSLOG", "RFC3339SYSLOG"];
        match (&pattern, format) {
            (None, None) => {
                let message = format!(
                    "LOGTOJSON needs `logFormat` (one of {}) or `matchPattern` with `customFieldNames`",
                    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                );
                self.error(s.file, &entry.at, message);
                return None;
            }
            (Some((_, groups)), _) => match &fields {
                None if entry.get("customFieldNames").is_none() => {
                    let message = format!(
                        "needs `customFieldNames` along with it: one name per group of the pattern ({groups} group(s))"
                    );
                    self.option_error(s, entry, "matchPattern", message);
                    return None;
                }
                Some(f) if f.len() != *groups => {
                    let message = format!(
                        "names {} field(s) but `matchPattern` has {groups} group(s): give one name per group (the Java agent would drop every record)",
                        f.len()
                    );
                    self.option_error(s, entry, "customFieldNames", message);
                    return None;
                }
                _ => {}
            },
            (None, Some(f)) => {
                let defaults = crate::record::process::log::default_fields(f);
                if let Some(given) = &fields
                    && given.len() != defaults.len()
                {
                    let message = format!(
                        "names {} field(s) but {} has {}: {} (or give `matchPattern` too)",
                        given.len(),
                        names[LOG_FORMATS.iter().position(|(_, x)| *x == f).unwrap_or(0)],
                        defaults.len(),
                        defaults.join(", ")
                    );
                    self.option_error(s, entry, "customFieldNames", message);
                    return None;
                }
            }
        }
        Some(ProcessingOption::LogToJson {
            format,
            match_pattern: pattern.map(|(p, _)| p),
            fields: fields.clone(),
            json,
        })
    }

    fn metadata_option(&mut self, s: &Section, entry: &OptionEntry, index: usize) -> Option<ProcessingOption> {
        let json = self.json_format(s, entry);
        let metadata = entry.map.get("metadata").cloned().unwrap_or(Value::Null);
        let timestamp = match entry.get("timestamp") {
            None => false,
            // The Java agent fails to start with a JSON boolean; it is what people write.
            Some(Value::Bool(b)) => *b,
            Some(Value::String(t)) => {
                let on = t.eq_ignore_ascii_case("true");
                if !on && !t.eq_ignore_ascii_case("false") {
                    let text = format!(
                        "{} is read as false, as the Java agent reads anything but \"true\": write true or false",
                        Value::String(t.clone())
                    );
                    self.notice(s, &format!("dataProcessingOptions[{index}].timestamp"), text);
                }
                on
            }
            Some(v) => {
                let message = format!(
                    "must be true or false (or the strings \"true\"/\"false\"), found {}",
                    shown("timestamp", v)
                );
                self.option_error(s, entry, "timestamp", message);
                return None;
            }
        };
        Some(ProcessingOption::AddMetadata { metadata, timestamp, json })
    }

    /// ADDEC2METADATA: `metadataTTL` in seconds (default 3600). As in the Java agent, a value that
    /// is not a whole number gives the default (with a notice), and `logFormat` is not used.
    fn ec2_metadata_option(&mut self, s: &Section, entry: &OptionEntry, index: usize) -> Option<ProcessingOption> {
        const DEFAULT_TTL: u64 = 3600;
        let json = self.json_format(s, entry);
        let ttl = match entry.get("metadataTTL") {
            None => DEFAULT_TTL,
            Some(v) => match parse_int("metadataTTL", v, 1, INT) {
                Ok(n) => n as u64,
                Err(_) => {
                    let text = format!(
                        "{} is not a whole number of seconds from 1 to {INT}: the default {DEFAULT_TTL} is used, as in the Java agent",
                        shown("metadataTTL", v)
                    );
                    self.notice(s, &format!("dataProcessingOptions[{index}].metadataTTL"), text);
                    DEFAULT_TTL
                }
            },
        };
        Some(ProcessingOption::AddEc2Metadata { ttl: Duration::from_secs(ttl), json })
    }
}

/// The last line of a regex syntax error (the others draw a caret diagram).
fn regex_problem(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, load_str};

    const MAIN: &str = "/etc/aws-kinesis/agent.json";
    const FLOW: &str = r#""filePattern": "/var/log/app.log", "kinesisStream": "s""#;

    fn parse(text: &str) -> Result<AgentConfig, ConfigErrors> {
        load_str(Path::new(MAIN), text)
    }

    fn ok(text: &str) -> AgentConfig {
        parse(text).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        match parse(text) {
            Ok(_) => panic!("expected errors for {text}"),
            Err(e) => e.0,
        }
    }

    fn one_error(text: &str) -> ConfigError {
        let mut errors = errors(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.remove(0)
    }

    /// A config with one Kinesis flow plus `extra` keys in the flow.
    fn flow_with(extra: &str) -> String {
        format!(r#"{{"flows": [{{{FLOW}{extra}}}]}}"#)
    }

    /// The one flow of a config, with `extra` keys in it.
    fn one_flow(extra: &str) -> FlowConfig {
        ok(&flow_with(extra)).flows.remove(0)
    }

    fn flow_error(extra: &str) -> ConfigError {
        one_error(&flow_with(extra))
    }

    #[test]
    fn minimal_kinesis_flow_gets_the_defaults() {
        let config = ok(&flow_with(""));
        assert_eq!(config.sources, vec![PathBuf::from(MAIN)]);
        assert_eq!(config.checkpoint_file, PathBuf::from(DEFAULT_CHECKPOINT_FILE));
        assert_eq!(config.checkpoint_ttl_days, 7);
        assert_eq!(config.shutdown_timeout, Duration::from_millis(10_000));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.max_sending_threads, (12 * cpus).max(2));
        assert_eq!(config.status_period, Duration::from_secs(30));
        assert_eq!(config.aws.connection_timeout, Duration::from_millis(10_000));
        assert_eq!(config.aws.socket_timeout, Duration::from_millis(50_000));
        assert!(config.aws.kinesis_endpoint.is_none() && config.aws.secret_access_key.is_none());
        assert!(config.notices.is_empty(), "{:?}", config.notices);

        let flow = &config.flows[0];
        assert_eq!(flow.index, 0);
        assert_eq!(flow.source, PathBuf::from(MAIN));
        assert_eq!(flow.id, "kinesis:s:/var/log/app.log");
        assert_eq!(flow.file_pattern, "/var/log/app.log");
        assert_eq!(flow.destination, Destination::Kinesis { stream: "s".into() });
        assert_eq!(flow.partition_key, PartitionKeyOption::Random);
        assert_eq!(flow.initial_position, InitialPosition::EndOfFile);
        assert_eq!(flow.max_buffer_age, Duration::from_millis(60_000));
        assert_eq!(flow.max_buffer_size_records, 500);
        assert_eq!(flow.max_buffer_size_bytes, 5_242_880);
        assert_eq!(flow.publish_queue_capacity, 100);
        assert_eq!(flow.retry_initial_backoff, Duration::from_millis(100));
        assert_eq!(flow.retry_max_backoff, Duration::from_millis(10_000));
        assert_eq!(flow.min_time_between_file_polls, Duration::from_millis(100));
        assert_eq!(flow.max_time_between_file_tracker_refresh, Duration::from_millis(10_000));
        assert_eq!(flow.skip_header_lines, 0);
        assert_eq!(flow.truncated_record_terminator, b"\n");
        assert_eq!(flow.multi_line_start_pattern, None);
        assert_eq!(flow.aggregated_record_size_bytes, 0);
        assert!(flow.data_processing_options.is_empty());
    }

    #[test]
    fn firehose_flow_defaults_to_4_mib() {
        let config = ok(r#"{"flows": [{"filePattern": "/a.log", "deliveryStream": "d"}]}"#);
        let flow = &config.flows[0];
        assert_eq!(flow.destination, Destination::Firehose { stream: "d".into() });
        assert_eq!(flow.id, "fh:d:/a.log");
        assert_eq!(flow.max_buffer_size_bytes, 4_194_304);
        assert_eq!(flow.max_buffer_size_records, 500);
        assert!(config.notices.is_empty());

        let e = one_error(
            r#"{"flows": [{"filePattern": "/a.log", "deliveryStream": "d", "maxBufferSizeBytes": 5242880}]}"#,
        );
        assert_eq!(e.location, "flows[0].maxBufferSizeBytes");
        assert!(e.message.contains("from 1 to 4194304"), "{}", e.message);
        assert_eq!(one_flow(r#", "maxBufferSizeBytes": 5242880"#).max_buffer_size_bytes, 5_242_880);
    }

    #[test]
    fn delivery_stream_wins_over_kinesis_stream() {
        let config = ok(r#"{"flows": [{"filePattern": "/a.log", "deliveryStream": "d", "kinesisStream": "k"}]}"#);
        assert_eq!(config.flows[0].destination, Destination::Firehose { stream: "d".into() });
        assert_eq!(config.notices.len(), 1);
        assert!(config.notices[0].contains("flows[0].kinesisStream: accepted and ignored"));
    }

    #[test]
    fn partition_key_on_firehose_is_a_notice() {
        let config =
            ok(r#"{"flows": [{"filePattern": "/a.log", "deliveryStream": "d", "partitionKeyOption": "whatever"}]}"#);
        assert_eq!(config.flows[0].partition_key, PartitionKeyOption::Random);
        assert_eq!(
            config.notices,
            vec![format!(
                "{MAIN}: flows[0].partitionKeyOption: accepted and ignored: partition keys apply to `kinesisStream` flows only"
            )]
        );
    }

    #[test]
    fn numbers_may_be_strings() {
        let flow = one_flow(
            r#", "maxBufferAgeMillis": "1000", "maxBufferSizeRecords": " 7 ", "skipHeaderLines": "+2", "maxBufferSizeBytes": 1000.0"#,
        );
        assert_eq!(flow.max_buffer_age, Duration::from_millis(1000));
        assert_eq!(flow.max_buffer_size_records, 7);
        assert_eq!(flow.skip_header_lines, 2);
        assert_eq!(flow.max_buffer_size_bytes, 1000);
        let config = ok(&format!(
            r#"{{"checkpointTimeToLiveDays": "3", "log.statusReportingPeriodSeconds": "5", "flows": [{{{FLOW}}}]}}"#
        ));
        assert_eq!(config.checkpoint_ttl_days, 3);
        assert_eq!(config.status_period, Duration::from_secs(5));
    }

    #[test]
    fn bad_numbers_say_the_range_and_the_value() {
        let cases = [
            (r#""maxBufferAgeMillis": 999"#, "from 1000 to 900000, found 999"),
            (r#""maxBufferAgeMillis": 900001"#, "from 1000 to 900000, found 900001"),
            (r#""maxBufferSizeRecords": 0"#, "from 1 to 500, found 0"),
            (r#""maxBufferSizeRecords": 501"#, "from 1 to 500, found 501"),
            (r#""maxBufferSizeRecords": 1.5"#, "from 1 to 500, found 1.5"),
            (r#""maxBufferSizeRecords": "1.5""#, r#"from 1 to 500, found "1.5""#),
            (r#""maxBufferSizeRecords": "ten""#, r#"found "ten""#),
            (r#""maxBufferSizeRecords": true"#, "found true"),
            (r#""maxBufferSizeRecords": [1]"#, "found an array"),
            (r#""skipHeaderLines": -1"#, "from 0 to 2147483647, found -1"),
            (r#""skipHeaderLines": 2147483648"#, "found 2147483648"),
            (r#""publishQueueCapacity": 0"#, "from 1 to 2147483647, found 0"),
            (r#""retryInitialBackoffMillis": -5"#, "at least 0, found -5"),
            (r#""retryMaxBackoffMillis": 99999999999999999999"#, "at least 0, found 1e+20"),
            (r#""retryMaxBackoffMillis": "99999999999999999999""#, "at least 0"),
            (r#""minTimeBetweenFilePollsMillis": 0"#, "at least 1, found 0"),
            (r#""maxTimeBetweenFileTrackerRefreshMillis": 0"#, "at least 1, found 0"),
        ];
        for (extra, expected) in cases {
            let key = extra.split('"').nth(1).unwrap();
            let e = flow_error(&format!(", {extra}"));
            assert_eq!(e.location, format!("flows[0].{key}"), "{extra}");
            assert!(e.message.contains("must be a whole number"), "{extra}: {}", e.message);
            assert!(e.message.contains(expected), "{extra}: {}", e.message);
        }
        let e = one_error(&format!(r#"{{"connectionTimeoutMillis": 0, "flows": [{{{FLOW}}}]}}"#));
        assert_eq!(e.location, "connectionTimeoutMillis");
    }

    #[test]
    fn retry_max_must_not_be_below_initial() {
        let e = flow_error(r#", "retryInitialBackoffMillis": 500, "retryMaxBackoffMillis": 400"#);
        assert_eq!(e.location, "flows[0].retryMaxBackoffMillis");
        assert!(e.message.contains("at least `retryInitialBackoffMillis` (500), found 400"));
        let e = flow_error(r#", "retryInitialBackoffMillis": 20000"#);
        assert!(e.message.contains("(20000), found 10000"), "{}", e.message);
        let flow = one_flow(r#", "retryInitialBackoffMillis": 0, "retryMaxBackoffMillis": 0"#);
        assert_eq!(flow.retry_max_backoff, Duration::ZERO);
    }

    #[test]
    fn loose_booleans() {
        for yes in [r#"true"#, r#""TRUE""#, r#""Yes""#, r#""t""#, r#""Y""#, r#""1""#, "1"] {
            let config = ok(&format!(r#"{{"useHttpGzip": {yes}, "flows": [{{{FLOW}}}]}}"#));
            assert_eq!(config.notices.len(), 1, "{yes}");
            assert!(config.notices[0].contains("useHttpGzip: accepted and ignored"), "{yes}");
        }
        for no in [r#"false"#, r#""False""#, r#""NO""#, r#""f""#, r#""n""#, r#""0""#, "0"] {
            let config = ok(&format!(r#"{{"useHttpGzip": {no}, "flows": [{{{FLOW}}}]}}"#));
            assert!(config.notices.is_empty(), "{no}");
        }
        for bad in [r#""maybe""#, r#""2""#, "2", r#""""#, "[]"] {
            let e = one_error(&format!(r#"{{"useTcpKeepAlive": {bad}, "flows": [{{{FLOW}}}]}}"#));
            assert_eq!(e.location, "useTcpKeepAlive");
            assert!(e.message.starts_with("must be true or false"), "{}", e.message);
        }
    }

    #[test]
    fn derived_partition_keys_are_read() {
        let flow = one_flow(r#", "partitionKeyOption": {"field": "$.request.host"}"#);
        assert_eq!(
            flow.partition_key,
            PartitionKeyOption::Derived(DerivedKey {
                source: KeySource::Field("$.request.host".into()),
                fallback: KeyFallback::Random,
                explicit_hash_key_field: None,
            })
        );
        let flow = one_flow(
            r#", "partitionKeyOption": {"regex": "user=(?P<u>\\w+)", "group": "u", "fallback": "DETERMINISTIC",
                "explicitHashKeyField": "route.hash"}"#,
        );
        assert_eq!(
            flow.partition_key,
            PartitionKeyOption::Derived(DerivedKey {
                source: KeySource::Regex { pattern: "user=(?P<u>\\w+)".into(), group: CaptureGroup::Name("u".into()) },
                fallback: KeyFallback::Deterministic,
                explicit_hash_key_field: Some("route.hash".into()),
            })
        );
        let flow = one_flow(r#", "partitionKeyOption": {"regex": "id=(\\d+)"}"#);
        let PartitionKeyOption::Derived(d) = flow.partition_key else { panic!("derived") };
        assert_eq!(d.source, KeySource::Regex { pattern: "id=(\\d+)".into(), group: CaptureGroup::Index(1) });
        let flow = one_flow(r#", "partitionKeyOption": {"constant": "web-1"}"#);
        let PartitionKeyOption::Derived(d) = flow.partition_key else { panic!("derived") };
        assert_eq!(d.source, KeySource::Constant("web-1".into()));
    }

    #[test]
    fn bad_partition_keys_name_the_file_flow_and_key() {
        let cases = [
            (r#"{"regex": "user=\\w+"}"#, "flows[0].partitionKeyOption.regex", "has no capture group"),
            (r#"{"regex": "user=(\\w+"}"#, "flows[0].partitionKeyOption.regex", "not a valid regular expression"),
            (r#"{"regex": "(a)", "group": 3}"#, "flows[0].partitionKeyOption.group", "has 1 capture group"),
            (r#"{"field": "$.a..b"}"#, "flows[0].partitionKeyOption.field", "empty field name"),
            (r#"{"field": "$.a[x"}"#, "flows[0].partitionKeyOption.field", "without its `]`"),
            (r#"{"field": 3}"#, "flows[0].partitionKeyOption.field", "must be a string"),
            (r#"{"constant": ""}"#, "flows[0].partitionKeyOption.constant", "is empty"),
            (r#"{"field": "a", "constant": "b"}"#, "flows[0].partitionKeyOption", "exactly one of"),
            (r#"{}"#, "flows[0].partitionKeyOption", "found none"),
            (r#"{"feild": "a"}"#, "flows[0].partitionKeyOption", "did you mean `field`?"),
            (r#"{"field": "a", "group": 1}"#, "flows[0].partitionKeyOption.group", "`regex` keys only"),
            (
                r#"{"field": "a", "fallback": "NONE"}"#,
                "flows[0].partitionKeyOption.fallback",
                "`RANDOM` or `DETERMINISTIC`",
            ),
            (
                r#"{"field": "a", "explicitHashKeyField": "$."}"#,
                "flows[0].partitionKeyOption.explicitHashKeyField",
                "empty field name",
            ),
            (r#""FIELD""#, "flows[0].partitionKeyOption", "or an object such as"),
        ];
        for (value, location, text) in cases {
            let e = flow_error(&format!(r#", "partitionKeyOption": {value}"#));
            assert_eq!(e.file, Path::new(MAIN), "{value}");
            assert_eq!(e.location, location, "{value}: {}", e.message);
            assert!(e.message.contains(text), "{value}: {}", e.message);
        }
    }

    #[test]
    fn kpl_aggregation_is_read() {
        let flow = one_flow("");
        assert_eq!(flow.kpl_aggregation, None);
        let flow = one_flow(r#", "kplAggregation": "true""#);
        assert_eq!(flow.kpl_aggregation, Some(DEFAULT_KPL_AGGREGATION_BYTES));
        let flow = one_flow(r#", "kplAggregation": true, "kplAggregationMaxBytes": 1048576"#);
        assert_eq!(flow.kpl_aggregation, Some(1 << 20));
        let e = flow_error(r#", "kplAggregation": true, "kplAggregationMaxBytes": 1048577"#);
        assert_eq!(e.location, "flows[0].kplAggregationMaxBytes");
        let e = flow_error(r#", "kplAggregation": true, "maxBufferSizeBytes": 10000"#);
        assert_eq!(e.location, "flows[0].kplAggregationMaxBytes");
        assert!(e.message.contains("at most `maxBufferSizeBytes` (10000), found 25000"), "{}", e.message);
        let e = flow_error(r#", "kplAggregation": "sometimes""#);
        assert_eq!(e.location, "flows[0].kplAggregation");
        let text = r#"{"flows": [{"filePattern": "/a.log", "deliveryStream": "d", "kplAggregation": true}]}"#;
        let e = load_str(Path::new(MAIN), text).unwrap_err().0.remove(0);
        assert_eq!(e.location, "flows[0].kplAggregation");
        assert!(e.message.contains("`kinesisStream` flows only"));
    }

    #[test]
    fn enums_are_case_sensitive() {
        let flow = one_flow(r#", "partitionKeyOption": "DETERMINISTIC", "initialPosition": "START_OF_FILE""#);
        assert_eq!(flow.partition_key, PartitionKeyOption::Deterministic);
        assert_eq!(flow.initial_position, InitialPosition::StartOfFile);

        let e = flow_error(r#", "partitionKeyOption": "random""#);
        assert_eq!(e.location, "flows[0].partitionKeyOption");
        assert_eq!(
            e.message,
            r#"must be `RANDOM`, `DETERMINISTIC` or an object, found "random" (values are case-sensitive: write `RANDOM`)"#
        );
        let e = flow_error(r#", "initialPosition": "BEGINNING""#);
        assert_eq!(e.message, r#"must be `START_OF_FILE` or `END_OF_FILE`, found "BEGINNING""#);
        let e = flow_error(r#", "initialPosition": 3"#);
        assert!(e.message.ends_with("found 3"));
    }

    #[test]
    fn null_means_default() {
        let config = ok(&format!(
            r#"{{"checkpointFile": null, "useHttpGzip": null, "nonsense": null,
                "flows": [{{{FLOW}, "maxBufferAgeMillis": null, "deliveryStream": null}}]}}"#
        ));
        assert_eq!(config.checkpoint_file, PathBuf::from(DEFAULT_CHECKPOINT_FILE));
        assert_eq!(config.flows[0].max_buffer_age, Duration::from_secs(60));
        assert_eq!(config.flows[0].destination, Destination::Kinesis { stream: "s".into() });
        assert!(config.notices.is_empty());
    }

    #[test]
    fn unknown_keys_suggest_the_nearest() {
        let e = flow_error(r#", "maxBufferAgeMilis": 1000"#);
        assert_eq!(e.file, PathBuf::from(MAIN));
        assert_eq!(e.location, "flows[0].maxBufferAgeMilis");
        assert_eq!(e.message, "unknown key `maxBufferAgeMilis`; did you mean `maxBufferAgeMillis`?");

        let e = one_error(r#"{"flows": [{"FilePattern": "/a", "filePattern": "/a", "kinesisStream": "s"}]}"#);
        assert!(e.message.ends_with("did you mean `filePattern`?"), "{}", e.message);

        let e = one_error(&format!(r#"{{"kinesis.regoin": "x", "flows": [{{{FLOW}}}]}}"#));
        assert_eq!(e.location, "kinesis.regoin");
        assert!(e.message.ends_with("did you mean `kinesis.region`?"));

        let e = flow_error(r#", "zzzzz": 1"#);
        assert_eq!(e.message, "unknown key `zzzzz`");

        // Close to a key of the other scope only.
        let e = one_error(&format!(r#"{{"maxBufferAgeMilis": 1, "flows": [{{{FLOW}}}]}}"#));
        assert_eq!(
            e.message,
            "unknown key `maxBufferAgeMilis`; did you mean the flow key `maxBufferAgeMillis`? (it goes into each object of `flows`)"
        );
    }

    #[test]
    fn misplaced_keys_say_where_they_belong() {
        let e = one_error(&format!(r#"{{"maxBufferAgeMillis": 5000, "flows": [{{{FLOW}}}]}}"#));
        assert_eq!(e.location, "maxBufferAgeMillis");
        assert_eq!(e.message, "`maxBufferAgeMillis` is a flow key: move it into each object of `flows`");

        let e = flow_error(r#", "kinesis.endpoint": "http://localhost""#);
        assert_eq!(e.location, "flows[0].kinesis.endpoint");
        assert_eq!(e.message, "`kinesis.endpoint` is a global key: move it to the top level of the file");

        // log.emitInternalMetrics exists in both scopes.
        let config = ok(&format!(
            r#"{{"log.emitInternalMetrics": true, "flows": [{{{FLOW}, "log.emitInternalMetrics": "y"}}]}}"#
        ));
        assert_eq!(
            config.notices,
            [format!(
                "{MAIN}: log.emitInternalMetrics (also flows[0]): accepted but not yet supported (internal counters are not logged yet)"
            )]
        );
    }

    #[test]
    fn flow_needs_a_stream_and_a_pattern() {
        let e = one_error(r#"{"flows": [{"filePattern": "/a.log"}]}"#);
        assert_eq!(e.location, "flows[0]");
        assert!(e.message.starts_with("needs `kinesisStream` or `deliveryStream`"));

        let e = one_error(r#"{"flows": [{"kinesisStream": "s"}]}"#);
        assert_eq!(e.location, "flows[0]");
        assert!(e.message.starts_with("needs `filePattern`"));

        let e = one_error(r#"{"flows": [{"kinesisStream": "", "filePattern": "/a"}]}"#);
        assert_eq!((e.location.as_str(), e.message.as_str()), ("flows[0].kinesisStream", "must not be empty"));

        let e = one_error(r#"{"flows": [{"kinesisStream": "s", "filePattern": "/var/log/"}]}"#);
        assert_eq!(e.location, "flows[0].filePattern");
        assert!(e.message.contains("ends with `/`"), "{}", e.message);

        let e = one_error(r#"{"flows": [{"kinesisStream": "s", "filePattern": ""}]}"#);
        assert_eq!(e.message, "must not be empty");

        let e = one_error(r#"{"flows": [{"kinesisStream": "s", "filePattern": {}}]}"#);
        assert_eq!(e.message, "must be a string, found an object");
    }

    #[test]
    fn flows_must_be_there_and_well_formed() {
        let e = one_error(r#"{"checkpointFile": "/tmp/c"}"#);
        assert_eq!((e.location.as_str(), e.message.as_str()), ("", "no flows: add at least one flow to `flows`"));
        let e = one_error(r#"{"flows": []}"#);
        assert_eq!(e.message, "no flows: add at least one flow to `flows`");

        let e = one_error(r#"{"flows": {"filePattern": "/a"}}"#);
        assert_eq!(e.location, "flows");
        assert_eq!(e.message, "must be an array of flow objects, found an object");

        let errors = errors(&format!(r#"{{"flows": [{{{FLOW}}}, "x", 3]}}"#));
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].location, "flows[1]");
        assert_eq!(errors[0].message, "must be a flow object, found a string");
        assert_eq!(errors[1].location, "flows[2]");

        let e = one_error("[1, 2]");
        assert_eq!(e.message, "the top level must be a JSON object, found an array");
        let e = one_error(" \n ");
        assert!(e.message.starts_with("the file is empty"));
    }

    #[test]
    fn malformed_json_gives_line_and_column() {
        let e = one_error("{\n  \"flows\": [\n    {\"a\": 1,}\n  ]\n}");
        assert_eq!(e.location, "");
        assert!(e.message.starts_with("invalid JSON at line 3, column 13: "), "{}", e.message);
        assert!(!e.message.contains(" at line 3 column"), "{}", e.message);
        assert_eq!(e.to_string(), format!("{MAIN}: {}", e.message));

        let e = one_error("{\n  \"flows\": [\n");
        assert!(e.message.starts_with("invalid JSON at line 3, column 0: EOF"), "{}", e.message);
    }

    #[test]
    fn comments_are_allowed() {
        let text = format!(
            "// leading comment\n{{ /* block\n comment */ \"flows\": [ // trailing\n {{{FLOW}}} /* \"x\": 1 */ ]\n}}\n// end"
        );
        assert_eq!(ok(&text).flows.len(), 1);
        // Comment markers inside strings are data.
        let flow = one_flow(r#", "truncatedRecordTerminator": "// not /* a comment */""#);
        assert_eq!(flow.truncated_record_terminator, b"// not /* a comment */");
        // An error after a comment still points at the right place.
        let e = one_error("/* one\ntwo */ {\n  \"flows\": x\n}");
        assert!(e.message.starts_with("invalid JSON at line 3, column 12: "), "{}", e.message);
        // `#` comments are not Jackson's.
        assert!(one_error("# no\n{}").message.starts_with("invalid JSON at line 1, column 1"));
    }

    #[test]
    fn broken_comments_are_located() {
        let e = one_error("{\n  / \"flows\": []\n}");
        assert_eq!(
            e.message,
            "invalid JSON at line 2, column 3: a `/` that does not start a comment (`// ...` or `/* ... */`)"
        );
        let e = one_error("{\"flows\": []} /* never closed\n\n");
        assert_eq!(e.message, "invalid JSON at line 3, column 1: the file ends inside a string or a `/* */` comment");
        let e = one_error("{\"flows\": [\"abc");
        assert!(e.message.contains("ends inside a string"), "{}", e.message);
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        assert_eq!(ok(&format!("\u{feff}{}", flow_with(""))).flows.len(), 1);
    }

    #[test]
    fn all_errors_are_collected() {
        let errors = errors(
            r#"{"foo": 1, "maxBufferAgeMillis": 1,
                "flows": [{"filePattern": "/a", "kinesisStream": "s", "maxBufferSizeRecords": 0},
                          {"filePattern": "/b"},
                          {"kinesisStream": "s", "filePattern": "/c", "initialPosition": "x"}]}"#,
        );
        let mut locations: Vec<_> = errors.iter().map(|e| e.location.as_str()).collect();
        locations.sort();
        assert_eq!(
            locations,
            ["flows[0].maxBufferSizeRecords", "flows[1]", "flows[2].initialPosition", "foo", "maxBufferAgeMillis"]
        );
    }

    #[test]
    fn duplicate_flow_ids_are_errors() {
        let errors = errors(&format!(
            r#"{{"flows": [{{{FLOW}}}, {{{FLOW}, "maxBufferAgeMillis": 5000}},
                {{"filePattern": "/var/log/app.log", "deliveryStream": "s"}}]}}"#
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].location, "flows[1]");
        assert!(errors[0].message.contains("duplicate flow: flows[0] of /etc/aws-kinesis/agent.json"));
        assert!(errors[0].message.contains("`kinesis:s:/var/log/app.log`"));
    }

    #[test]
    fn relative_patterns_start_at_the_working_directory() {
        let flow = one_flow("").clone();
        assert_eq!(flow.file_pattern, "/var/log/app.log");
        let config = ok(r#"{"flows": [{"filePattern": "logs/*.log", "kinesisStream": "s"}]}"#);
        let expected = std::env::current_dir().unwrap().join("logs/*.log");
        let expected = expected.to_str().unwrap();
        assert_eq!(config.flows[0].file_pattern, expected);
        assert_eq!(config.flows[0].id, format!("kinesis:s:{expected}"));
    }

    #[test]
    fn secrets_never_appear_in_messages() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let key_id = "AKIAIOSFODNN7EXAMPLE";
        // Wrong places, wrong types, misspelt neighbours: nothing may print the values.
        let text = format!(
            r#"{{"awsSecretAccessKey": ["{secret}"], "awsAccessKeyId": {{"k": "{key_id}"}},
                "awsSecretAcessKey": "{secret}",
                "flows": [{{{FLOW}, "awsSecretAccessKey": "{secret}", "awsAccessKeyId": "{key_id}"}}]}}"#
        );
        let all = ConfigErrors(errors(&text)).to_string();
        assert!(all.contains("awsSecretAccessKey"), "{all}");
        assert!(!all.contains(secret) && !all.contains("wJalr"), "{all}");
        assert!(!all.contains(key_id), "{all}");

        // A scalar value of the wrong kind for a choice would be shown, but not these.
        assert_eq!(shown("awsSecretAccessKey", &Value::String(secret.into())), "<redacted>");
        assert_eq!(shown("awsAccessKeyId", &Value::from(12)), "<redacted>");

        let e = one_error(&format!(r#"{{"awsSecretAccessKey": "{secret}", "flows": [{{{FLOW}}}]}}"#));
        assert_eq!(e.location, "awsSecretAccessKey");
        assert!(e.message.contains("needs `awsAccessKeyId`"));

        let config = ok(&format!(
            r#"{{"awsSecretAccessKey": "{secret}", "awsAccessKeyId": "{key_id}", "flows": [{{{FLOW}}}]}}"#
        ));
        assert_eq!(config.aws.secret_access_key, Some(Secret(secret.into())));
        assert_eq!(config.aws.access_key_id.as_deref(), Some(key_id));
        assert!(!format!("{config:?}").contains(secret));
    }

    #[test]
    fn aws_settings_are_read() {
        let config = ok(&format!(
            r#"{{"kinesis.endpoint": "http://127.0.0.1:4567", "kinesis.region": "eu-west-1",
                "firehose.endpoint": "", "firehose.region": "eu-west-2", "sts.endpoint": "sts.x",
                "assumeRoleARN": "arn:aws:iam::1:role/r", "assumeRoleExternalId": "ext",
                "userAgent": "  mine  ", "userAgentOverride": "", "connectionTimeoutMillis": 5,
                "socketTimeoutMillis": "6", "flows": [{{{FLOW}}}]}}"#
        ));
        let aws = &config.aws;
        assert_eq!(aws.kinesis_endpoint.as_deref(), Some("http://127.0.0.1:4567"));
        assert_eq!(aws.kinesis_region.as_deref(), Some("eu-west-1"));
        assert_eq!(aws.firehose_endpoint, None);
        assert_eq!(aws.firehose_region.as_deref(), Some("eu-west-2"));
        assert_eq!(aws.sts_endpoint.as_deref(), Some("sts.x"));
        assert_eq!(aws.assume_role_arn.as_deref(), Some("arn:aws:iam::1:role/r"));
        assert_eq!(aws.assume_role_external_id.as_deref(), Some("ext"));
        assert_eq!(aws.user_agent.as_deref(), Some("mine"));
        assert_eq!(aws.user_agent_override.as_deref(), Some(""));
        assert_eq!(aws.connection_timeout, Duration::from_millis(5));
        assert_eq!(aws.socket_timeout, Duration::from_millis(6));
    }

    #[test]
    fn sending_threads() {
        let with = |globals: &str| ok(&format!(r#"{{{globals} "flows": [{{{FLOW}}}]}}"#));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(with(r#""maxSendingThreadsPerCore": 1,"#).max_sending_threads, cpus.max(2));
        assert_eq!(with(r#""maxSendingThreads": 3,"#).max_sending_threads, 3);
        let config = with(r#""maxSendingThreads": 3, "maxSendingThreadsPerCore": 4,"#);
        assert_eq!(config.max_sending_threads, 3);
        assert_eq!(
            config.notices,
            [format!("{MAIN}: maxSendingThreadsPerCore: accepted and ignored: `maxSendingThreads` is set")]
        );
        let e = one_error(&format!(r#"{{"maxSendingThreads": 0, "flows": [{{{FLOW}}}]}}"#));
        assert_eq!(e.message, "must be a whole number from 1 to 2147483647, found 0");
    }

    #[test]
    fn max_in_flight_bytes() {
        let with = |globals: &str| parse(&format!(r#"{{{globals} "flows": [{{{FLOW}}}]}}"#));
        assert_eq!(with("").unwrap().max_in_flight_bytes, 64 * 1024 * 1024);
        assert_eq!(with(r#""maxInFlightBytes": "1048576","#).unwrap().max_in_flight_bytes, 1_048_576);
        assert_eq!(with(r#""maxInFlightBytes": 268435456,"#).unwrap().max_in_flight_bytes, 256 << 20);
        for (bad, found) in [("1048575", "1048575"), ("0", "0"), ("-5", "-5"), ("\"lots\"", "\"lots\"")] {
            let e = with(&format!(r#""maxInFlightBytes": {bad},"#)).unwrap_err();
            assert_eq!(e.0.len(), 1, "{e}");
            assert_eq!(e.0[0].location, "maxInFlightBytes");
            assert!(e.0[0].message.contains("at least 1048576"), "{}", e.0[0].message);
            assert!(e.0[0].message.ends_with(&format!("found {found}")), "{}", e.0[0].message);
        }
        let e = parse(r#"{"flows": [{"filePattern": "/a", "kinesisStream": "s", "maxInFlightBytes": 2000000}]}"#)
            .unwrap_err();
        assert!(e.0[0].message.contains("is a global key"), "{e}");
    }

    #[test]
    fn truncated_record_terminator_must_fit_a_record() {
        assert_eq!(one_flow(r#", "truncatedRecordTerminator": "...\n""#).truncated_record_terminator, b"...\n");
        let long = "x".repeat(KINESIS_MAX_RECORD_BYTES);
        let e = flow_error(&format!(r#", "truncatedRecordTerminator": "{long}""#));
        assert_eq!(e.location, "flows[0].truncatedRecordTerminator");
        assert!(e.message.contains("shorter than 1048576 bytes"), "{}", e.message);
        let long = "x".repeat(FIREHOSE_MAX_RECORD_BYTES);
        let e = one_error(&format!(
            r#"{{"flows": [{{"filePattern": "/a", "deliveryStream": "d", "truncatedRecordTerminator": "{long}"}}]}}"#
        ));
        assert!(e.message.contains("shorter than 1024000 bytes"), "{}", e.message);
    }

    #[test]
    fn regexes_must_compile() {
        let flow = one_flow(r#", "multiLineStartPattern": "^\\d{4}-""#);
        assert_eq!(flow.multi_line_start_pattern.as_deref(), Some(r"^\d{4}-"));
        let e = flow_error(r#", "multiLineStartPattern": "(""#);
        assert_eq!(e.location, "flows[0].multiLineStartPattern");
        assert!(
            e.message.starts_with(r#"must be a regular expression, but "(" is not one: unclosed group"#),
            "{}",
            e.message
        );
        assert!(!e.message.contains('\n'));
        let e = flow_error(r#", "fileFooterPattern": "(?=x)""#);
        assert_eq!(e.location, "flows[0].fileFooterPattern");
        assert!(e.message.contains("look-around"), "{}", e.message);
    }

    #[test]
    fn not_yet_supported_keys_are_noticed_once() {
        let config = ok(&format!(
            r#"{{"flows": [{{{FLOW}, "fileFooterPattern": "^x"}},
                {{"filePattern": "/b", "kinesisStream": "s", "fileFooterPattern": "^y",
                  "dataProcessingOptions": [{{"optionName": "SINGLELINE"}}]}},
                {{"filePattern": "/c", "kinesisStream": "s", "fileFooterPattern": "^z"}}]}}"#
        ));
        assert_eq!(
            config.notices,
            [format!(
                "{MAIN}: flows[0].fileFooterPattern (also flows[1], flows[2]): accepted but not yet supported (footer lines are sent like any other line for now)"
            ),]
        );
        assert_eq!(
            config.flows[1].data_processing_options,
            [ProcessingOption::SingleLine { no_trim: false, escape_new_line: false }]
        );
    }

    #[test]
    fn processing_options_shape_is_checked() {
        let e = flow_error(r#", "dataProcessingOptions": {"optionName": "SINGLELINE"}"#);
        assert_eq!(e.message, "must be an array of objects, found an object");
        let e = flow_error(r#", "dataProcessingOptions": [{"parseOptions": []}]"#);
        assert_eq!(e.location, "flows[0].dataProcessingOptions[0]");
        assert!(e.message.starts_with("needs `optionName`: one of `SINGLELINE`, `CSVTOJSON`"), "{}", e.message);
        let e = flow_error(r#", "dataProcessingOptions": [3]"#);
        assert_eq!(e.location, "flows[0].dataProcessingOptions[0]");
        assert!(e.message.ends_with("found a number"), "{}", e.message);
    }

    fn options(list: &str) -> Vec<ProcessingOption> {
        one_flow(&format!(r#", "dataProcessingOptions": {list}"#)).data_processing_options
    }

    /// Every error of a flow with these options, as `location: message`.
    fn option_errors(list: &str) -> Vec<String> {
        errors(&flow_with(&format!(r#", "dataProcessingOptions": {list}"#)))
            .into_iter()
            .map(|e| format!("{}: {}", e.location, e.message))
            .collect()
    }

    #[test]
    fn processing_options_are_read() {
        assert_eq!(
            options(
                r#"[{"optionName": "SINGLELINE", "parseOptions": ["NO_TRIM", "ESCAPE_NEW_LINE"]},
                    {"optionName": "SINGLELINE", "parseOptions": "ESCAPE_NEW_LINE"},
                    {"optionName": "CSVTOJSON", "customFieldNames": ["a", "b"], "delimiter": "\t", "jsonFormat": "PRETTYPRINT"},
                    {"optionName": "CSVTOJSON", "customFieldNames": ["a"], "csvMode": "RFC4180", "delimiter": "\\|"},
                    {"optionName": "LOGTOJSON", "logFormat": "SYSLOG"},
                    {"optionName": "LOGTOJSON", "matchPattern": "(\\w+) (.*)", "customFieldNames": ["k", "v"]},
                    {"optionName": "ADDMETADATA", "metadata": {"z": 1, "a": [true]}, "timestamp": "TRUE"},
                    {"optionName": "ADDMETADATA", "timestamp": true},
                    {"optionName": "ADDBRACKETS"}]"#
            ),
            [
                ProcessingOption::SingleLine { no_trim: true, escape_new_line: true },
                ProcessingOption::SingleLine { no_trim: false, escape_new_line: true },
                ProcessingOption::CsvToJson {
                    fields: vec!["a".into(), "b".into()],
                    split: CsvSplit::Regex("\t".into()),
                    json: JsonFormat::PrettyPrint
                },
                ProcessingOption::CsvToJson {
                    fields: vec!["a".into()],
                    split: CsvSplit::Quoted(b'|'),
                    json: JsonFormat::Compact
                },
                ProcessingOption::LogToJson {
                    format: Some(LogFormat::Syslog),
                    match_pattern: None,
                    fields: None,
                    json: JsonFormat::Compact
                },
                ProcessingOption::LogToJson {
                    format: None,
                    match_pattern: Some("(\\w+) (.*)".into()),
                    fields: Some(vec!["k".into(), "v".into()]),
                    json: JsonFormat::Compact
                },
                ProcessingOption::AddMetadata {
                    metadata: serde_json::json!({"z": 1, "a": [true]}),
                    timestamp: true,
                    json: JsonFormat::Compact
                },
                ProcessingOption::AddMetadata { metadata: Value::Null, timestamp: true, json: JsonFormat::Compact },
                ProcessingOption::AddBrackets,
            ]
        );
        // Metadata keeps the order it was written in.
        let ProcessingOption::AddMetadata { metadata, .. } =
            &options(r#"[{"optionName": "ADDMETADATA", "metadata": {"z": 1, "a": 2}}]"#)[0]
        else {
            panic!("not ADDMETADATA")
        };
        assert_eq!(metadata.to_string(), r#"{"z":1,"a":2}"#);
    }

    #[test]
    fn processing_option_errors_name_the_key_and_the_allowed_values() {
        let got = option_errors(
            r#"[{"optionName": "singleline"},
                {"optionName": "CSVTOJSON", "delimiter": "("},
                {"optionName": "LOGTOJSON", "logFormat": "NGINX"},
                {"optionName": "LOGTOJSON", "logFormat": "SYSLOG", "customFieldNames": ["a", "b"]},
                {"optionName": "LOGTOJSON", "matchPattern": "(a)(b)", "customFieldNames": ["a"]},
                {"optionName": "LOGTOJSON", "matchPattern": "(a)"},
                {"optionName": "LOGTOJSON"},
                {"optionName": "ADDMETADATA", "timestamp": 1, "jsonFormat": "pretty"},
                {"optionName": "SINGLELINE", "parseOptions": ["TRIM"], "parseOption": []},
                {"optionName": "CSVTOJSON", "customFieldNames": ["a", null], "csvMode": "RFC4180", "delimiter": "ab"},
                {"optionName": "USINGPLUGGIN", "className": "com.example.Conv"}]"#,
        );
        let at = |i: usize, key: &str| format!("flows[0].dataProcessingOptions[{i}]{key}");
        let expected = [
            format!(
                "{}: must be `SINGLELINE`, `CSVTOJSON`, `LOGTOJSON`, `ADDMETADATA`, `ADDEC2METADATA`, `ADDBRACKETS` or `USINGPLUGGIN`, found \"singleline\" (values are case-sensitive: write `SINGLELINE`)",
                at(0, ".optionName")
            ),
            format!("{}: CSVTOJSON needs `customFieldNames`: the names of the columns, in order", at(1, "")),
            format!(
                "{}: is read as a regular expression (as the Java agent does), but \"(\" is not one: unclosed group; escape special characters (\"\\\\|\" for a pipe) or use `csvMode` RFC4180",
                at(1, ".delimiter")
            ),
            format!(
                "{}: must be `COMMONAPACHELOG`, `COMBINEDAPACHELOG`, `APACHEERRORLOG`, `SYSLOG` or `RFC3339SYSLOG`, found \"NGINX\"",
                at(2, ".logFormat")
            ),
            format!(
                "{}: names 2 field(s) but SYSLOG has 5: timestamp, hostname, program, processid, message (or give `matchPattern` too)",
                at(3, ".customFieldNames")
            ),
            format!(
                "{}: names 1 field(s) but `matchPattern` has 2 group(s): give one name per group (the Java agent would drop every record)",
                at(4, ".customFieldNames")
            ),
            format!(
                "{}: needs `customFieldNames` along with it: one name per group of the pattern (1 group(s))",
                at(5, ".matchPattern")
            ),
            format!(
                "{}: LOGTOJSON needs `logFormat` (one of `COMMONAPACHELOG`, `COMBINEDAPACHELOG`, `APACHEERRORLOG`, `SYSLOG`, `RFC3339SYSLOG`) or `matchPattern` with `customFieldNames`",
                at(6, "")
            ),
            format!("{}: must be `COMPACT` or `PRETTYPRINT`, found \"pretty\"", at(7, ".jsonFormat")),
            format!("{}: must be true or false (or the strings \"true\"/\"false\"), found 1", at(7, ".timestamp")),
            format!(
                "{}: unknown key `parseOption`; did you mean `parseOptions`? (SINGLELINE takes `parseOptions`)",
                at(8, ".parseOption")
            ),
            format!("{}: must be `NO_TRIM` or `ESCAPE_NEW_LINE`, found \"TRIM\"", at(8, ".parseOptions")),
            format!(
                "{}: must be a non-empty array of strings such as [\"time\", \"level\", \"message\"], found an array holding null",
                at(9, ".customFieldNames")
            ),
            format!(
                "{}: with `csvMode` RFC4180 must be one ASCII character other than a quote or line break (such as \",\", \";\", \"|\" or \"\\t\"), found \"ab\"",
                at(9, ".delimiter")
            ),
            format!(
                "{}: USINGPLUGGIN loads Java classes, which this agent cannot run: remove the option, or replace the converter with SINGLELINE, CSVTOJSON, LOGTOJSON or ADDMETADATA",
                at(10, ".optionName")
            ),
        ];
        for e in &expected {
            assert!(got.contains(e), "missing:\n{e}\ngot:\n{}", got.join("\n"));
        }
        assert_eq!(got.len(), expected.len(), "{got:#?}");
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// Any value in any option key gives a configuration or errors, never a panic, and a
        /// configuration that loads always builds its converter chain.
        #[test]
        fn processing_option_values_never_panic(
            name in proptest::sample::select(vec!["SINGLELINE", "CSVTOJSON", "LOGTOJSON", "ADDMETADATA", "ADDEC2METADATA", "ADDBRACKETS", "USINGPLUGGIN", "x"]),
            values in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["parseOptions", "customFieldNames", "delimiter", "csvMode", "jsonFormat", "logFormat", "matchPattern", "metadata", "timestamp", "other"]),
                    proptest::prop_oneof![
                        proptest::strategy::Just(serde_json::json!(null)),
                        proptest::strategy::Just(serde_json::json!(true)),
                        proptest::strategy::Just(serde_json::json!(["a", "b"])),
                        proptest::strategy::Just(serde_json::json!(["NO_TRIM"])),
                        proptest::strategy::Just(serde_json::json!([])),
                        proptest::strategy::Just(serde_json::json!({"k": 1.5})),
                        "[ -~]{0,8}".prop_map(Value::String),
                        proptest::sample::select(vec!["SYSLOG", "RFC4180", "PRETTYPRINT", "(a)(b)", "\\t", "|", "("]).prop_map(|s| Value::String(s.into())),
                        proptest::num::i64::ANY.prop_map(|n| serde_json::json!(n)),
                    ],
                ),
                0..5,
            ),
        ) {
            let mut option = serde_json::Map::new();
            option.insert("optionName".into(), Value::String(name.into()));
            for (k, v) in values {
                option.insert(k.into(), v);
            }
            let text = flow_with(&format!(r#", "dataProcessingOptions": [{}]"#, Value::Object(option)));
            if let Ok(config) = parse(&text) {
                crate::record::process::Processor::new(&config.flows[0].data_processing_options).unwrap();
            }
        }
    }

    #[test]
    fn processing_option_notices() {
        let config = ok(&flow_with(
            r#", "dataProcessingOptions": [
                {"optionName": "SINGLELINE", "jsonFormat": "COMPACT"},
                {"optionName": "ADDMETADATA", "timestamp": "yes"},
                {"optionName": "ADDEC2METADATA", "logFormat": "SYSLOG", "metadataTTL": "soon"}]"#,
        ));
        assert_eq!(
            config.notices,
            [
                format!(
                    "{MAIN}: flows[0].dataProcessingOptions[0].jsonFormat: accepted and ignored: `jsonFormat` does not apply to SINGLELINE"
                ),
                format!(
                    "{MAIN}: flows[0].dataProcessingOptions[1].timestamp: \"yes\" is read as false, as the Java agent reads anything but \"true\": write true or false"
                ),
                format!(
                    "{MAIN}: flows[0].dataProcessingOptions[2].metadataTTL: \"soon\" is not a whole number of seconds from 1 to 2147483647: the default 3600 is used, as in the Java agent"
                ),
            ]
        );
        assert_eq!(
            config.flows[0].data_processing_options,
            [
                ProcessingOption::SingleLine { no_trim: false, escape_new_line: false },
                ProcessingOption::AddMetadata { metadata: Value::Null, timestamp: false, json: JsonFormat::Compact },
                ProcessingOption::AddEc2Metadata { ttl: Duration::from_secs(3600), json: JsonFormat::Compact },
            ]
        );
    }

    #[test]
    fn ignored_and_unsupported_global_keys() {
        let config = ok(&format!(
            r#"{{"cloudwatch.emitMetrics": false, "log.emitInternalMetrics": "no",
                "sendingThreadsMaxQueueSize": 100, "useTcpKeepAlive": "false",
                "flows": [{{{FLOW}}}]}}"#
        ));
        assert!(config.notices.is_empty(), "{:?}", config.notices);
        let config = ok(&format!(
            r#"{{"cloudwatch.emitMetrics": true, "cloudwatch.namespace": "N", "log.level": "DEBUG",
                "userDefinedCredentialsProvider.classname": "a.B", "pollPeriodMillis": {{}},
                "checkpoints.queryTimeoutSeconds": "10", "flows": [{{{FLOW},
                "waitOnFullRetryQueueMillis": "whatever", "waitOnEmptyPublishQueueMillis": 2000}}]}}"#
        ));
        let notices = config.notices.join("\n");
        for expected in [
            "userDefinedCredentialsProvider.classname: accepted and ignored: Java credential provider",
            "pollPeriodMillis: accepted and ignored",
            "checkpoints.queryTimeoutSeconds: accepted and ignored",
            "flows[0].waitOnFullRetryQueueMillis: accepted and ignored",
            "flows[0].waitOnEmptyPublishQueueMillis: accepted and ignored",
        ] {
            assert!(notices.contains(expected), "{expected} not in\n{notices}");
        }
        assert_eq!(config.notices.len(), 5, "the cloudwatch keys are supported: {notices}");
        assert_eq!(config.log.level.as_deref(), Some("debug"));
        assert_eq!(config.cloudwatch.emit, Some(true));
        assert_eq!(config.cloudwatch.namespace, "N");
        // Ignored keys are still checked as the Java agent checked them.
        let e = flow_error(r#", "waitOnFullPublishQueueMillis": 10"#);
        assert!(e.message.contains("from 1000 to 900000"), "{}", e.message);
    }

    #[test]
    fn cloudwatch_keys() {
        let c = ok(&flow_with(""));
        assert_eq!(
            c.cloudwatch,
            CloudWatchSettings {
                emit: None,
                namespace: "AWSKinesisAgent".into(),
                tag_instance: false,
                buffer_time: Duration::from_secs(30),
                queue_size: 10_000,
            }
        );
        assert_eq!(c.aws.cloudwatch_endpoint, None);
        let c = ok(&format!(
            r#"{{"cloudwatch.emitMetrics": "false", "cloudwatch.tagInstance": "TRUE", "cloudwatch.namespace": "Mine",
                "cloudwatch.metricsBufferTimeMillis": "10", "cloudwatch.metricsQueueSize": 0,
                "cloudwatch.endpoint": "monitoring.eu-west-1.amazonaws.com",
                "ec2.metadataEndpoint": "http://127.0.0.1:1338", "flows": [{{{FLOW}}}]}}"#
        ));
        assert!(c.notices.is_empty(), "{:?}", c.notices);
        assert_eq!(c.cloudwatch.emit, Some(false));
        assert!(c.cloudwatch.tag_instance);
        assert_eq!(c.cloudwatch.namespace, "Mine");
        assert_eq!(c.cloudwatch.buffer_time, Duration::from_millis(100), "at least 100 ms");
        assert_eq!(c.cloudwatch.queue_size, 1, "at least 1");
        assert_eq!(c.aws.cloudwatch_endpoint.as_deref(), Some("monitoring.eu-west-1.amazonaws.com"));
        assert_eq!(c.aws.ec2_metadata_endpoint.as_deref(), Some("http://127.0.0.1:1338"));
        let e = one_error(&format!(r#"{{"cloudwatch.emitMetrics": "maybe", "flows": [{{{FLOW}}}]}}"#));
        assert_eq!(e.location, "cloudwatch.emitMetrics");
    }

    #[test]
    fn aggregated_record_size_is_for_firehose() {
        let e = flow_error(r#", "aggregatedRecordSizeBytes": 1000"#);
        assert_eq!(e.location, "flows[0].aggregatedRecordSizeBytes");
        assert!(e.message.starts_with("applies to `deliveryStream` (Firehose) flows only"));
        let firehose =
            |extra: &str| parse(&format!(r#"{{"flows": [{{"filePattern": "/a", "deliveryStream": "d"{extra}}}]}}"#));
        let config = firehose(r#", "aggregatedRecordSizeBytes": "262144""#).unwrap();
        assert_eq!(config.flows[0].aggregated_record_size_bytes, 262_144);
        assert!(config.notices.is_empty(), "{:?}", config.notices);
        assert!(firehose(r#", "aggregatedRecordSizeBytes": 0"#).unwrap().notices.is_empty());
        let e = firehose(r#", "aggregatedRecordSizeBytes": 1024001"#).unwrap_err();
        assert!(e.0[0].message.contains("from 0 to 1024000"));
    }

    #[test]
    fn checkpoint_settings() {
        let config = ok(&format!(
            r#"{{"checkpointFile": "/var/lib/x/cp.json", "checkpointTimeToLiveDays": 30,
                "shutdownTimeoutMillis": 0, "flows": [{{{FLOW}}}]}}"#
        ));
        assert_eq!(config.checkpoint_file, PathBuf::from("/var/lib/x/cp.json"));
        assert_eq!(config.checkpoint_ttl_days, 30);
        assert_eq!(config.shutdown_timeout, Duration::ZERO);
        let e = one_error(&format!(r#"{{"checkpointTimeToLiveDays": 0, "flows": [{{{FLOW}}}]}}"#));
        assert_eq!(e.location, "checkpointTimeToLiveDays");
        let e = one_error(&format!(r#"{{"checkpointFile": "", "flows": [{{{FLOW}}}]}}"#));
        assert_eq!(e.message, "must not be empty");
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn dropins_add_flows_in_name_order() {
        let tmp = tempfile::tempdir().unwrap();
        let main = write(tmp.path(), "agent.json", &flow_with(""));
        let dir = tmp.path().join("agent.d");
        fs::create_dir(&dir).unwrap();
        let b = write(&dir, "b.json", r#"{"flows": [{"filePattern": "/b", "deliveryStream": "d"}]}"#);
        let a = write(
            &dir,
            "a.json",
            r#"// comment
            {"kinesis.region": "x", "flows": [{"filePattern": "/a1", "kinesisStream": "s"},
                                              {"filePattern": "/a2", "kinesisStream": "s"}]}"#,
        );
        write(&dir, "notes.txt", "not json");
        write(&dir, "c.json.bak", "not json");
        fs::create_dir(dir.join("sub.json")).unwrap();
        let empty = write(&dir, "d.json", "{}");

        let config = load(&main, Some(&dir)).unwrap();
        assert_eq!(config.sources, [main.clone(), a.clone(), b.clone(), empty]);
        let summary: Vec<_> =
            config.flows.iter().map(|f| (f.index, f.source.clone(), f.file_pattern.as_str())).collect();
        assert_eq!(
            summary,
            [(0, main.clone(), "/var/log/app.log"), (1, a.clone(), "/a1"), (2, a.clone(), "/a2"), (3, b, "/b")]
        );
        assert_eq!(
            config.notices,
            [format!(
                "{}: kinesis.region: ignored in drop-in files (as in the Java agent); set it in {}",
                a.display(),
                main.display()
            )]
        );
        // The drop-in's region is not used.
        assert_eq!(config.aws.kinesis_region, None);
    }

    #[test]
    fn dropin_errors_name_the_dropin() {
        let tmp = tempfile::tempdir().unwrap();
        let main = write(tmp.path(), "agent.json", r#"{"kinesis.region": "r"}"#);
        let dir = tmp.path().join("agent.d");
        fs::create_dir(&dir).unwrap();
        let a = write(
            &dir,
            "a.json",
            r#"{"flow": [], "maxBufferAgeMillis": 1, "flows": [{"filePattern": "/a", "kinesisStream": "s", "sts.endpoint": "x"}, {"filePattern": "/b", "kinesisStream": "s", "maxBufferSizeRecord": 1}]}"#,
        );
        let broken = write(&dir, "b.json", "{\"flows\": [\n}");
        let errors = load(&main, Some(&dir)).unwrap_err().0;
        let seen: Vec<_> = errors.iter().map(|e| (e.file.clone(), e.location.as_str())).collect();
        assert!(seen.contains(&(a.clone(), "flow")), "{errors:#?}");
        assert!(seen.contains(&(a.clone(), "maxBufferAgeMillis")), "{errors:#?}");
        assert!(seen.contains(&(a.clone(), "flows[0].sts.endpoint")), "{errors:#?}");
        assert!(seen.contains(&(a.clone(), "flows[1].maxBufferSizeRecord")), "{errors:#?}");
        assert!(seen.contains(&(broken.clone(), "")), "{errors:#?}");
        assert_eq!(errors.len(), 5, "{errors:#?}");
        let flow_key = errors.iter().find(|e| e.location == "flow").unwrap();
        assert!(flow_key.message.ends_with("did you mean `flows`?"));
        let sts = errors.iter().find(|e| e.location == "flows[0].sts.endpoint").unwrap();
        assert!(sts.message.contains(&format!("top level of {}", main.display())), "{}", sts.message);
        let parse = errors.iter().find(|e| e.file == broken).unwrap();
        assert!(parse.message.starts_with("invalid JSON at line 2, column 1"), "{}", parse.message);
    }

    #[test]
    fn main_without_flows_is_fine_with_dropin_flows() {
        let tmp = tempfile::tempdir().unwrap();
        let main = write(tmp.path(), "agent.json", r#"{"checkpointFile": "/x"}"#);
        let dir = tmp.path().join("agent.d");
        fs::create_dir(&dir).unwrap();
        write(&dir, "one.json", r#"{"flows": [{"filePattern": "/a", "kinesisStream": "s"}]}"#);
        let config = load(&main, Some(&dir)).unwrap();
        assert_eq!(config.flows.len(), 1);
        assert_eq!(config.checkpoint_file, PathBuf::from("/x"));

        // A missing drop-in directory is fine, but then there are no flows at all.
        let e = load(&main, Some(&tmp.path().join("nope"))).unwrap_err().0;
        assert_eq!(e.len(), 1);
        assert!(e[0].message.starts_with("no flows: add at least one flow to `flows` (in this file or"));
    }

    /// `status` reads `checkpointFile` whatever the flows say, as the daemon does.
    #[test]
    fn the_checkpoint_file_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let main = write(tmp.path(), "agent.json", r#"{"checkpointFile": "/x", /* none */ "flows": 3}"#);
        assert_eq!(checkpoint_file(&main).unwrap(), PathBuf::from("/x"));
        write(tmp.path(), "agent.json", "{}");
        assert_eq!(checkpoint_file(&main).unwrap(), PathBuf::from(DEFAULT_CHECKPOINT_FILE));
        write(tmp.path(), "agent.json", r#"{"checkpointFile": ""}"#);
        assert!(checkpoint_file(&main).unwrap_err().0[0].location.contains("checkpointFile"));
        let e = checkpoint_file(&tmp.path().join("nope.json")).unwrap_err().0;
        assert!(e[0].message.contains("cannot read"), "{}", e[0]);
    }

    #[test]
    fn duplicate_ids_across_files() {
        let tmp = tempfile::tempdir().unwrap();
        let main = write(tmp.path(), "agent.json", &flow_with(""));
        let dir = tmp.path().join("agent.d");
        fs::create_dir(&dir).unwrap();
        let dropin = write(&dir, "x.json", &flow_with(""));
        let e = load(&main, Some(&dir)).unwrap_err().0;
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].file.clone(), e[0].location.as_str()), (dropin, "flows[0]"));
        assert!(e[0].message.contains(&format!("flows[0] of {}", main.display())));
    }

    #[test]
    fn unreadable_main_file_names_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let main = tmp.path().join("missing.json");
        let e = load(&main, None).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].file, main);
        assert!(e.0[0].message.starts_with("cannot read the configuration file: "));
        assert!(e.to_string().contains("missing.json"));
    }

    #[test]
    fn key_table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for key in known_keys() {
            assert!(seen.insert((key.name, key.scope)), "{} twice", key.name);
            assert!(!key.doc.is_empty() && !key.doc.contains('\n'), "{}", key.name);
            assert!(key.doc.ends_with('.'), "{}", key.name);
            if let Check::Int { default: Some(default), .. } = key.check {
                let text = key.default.split_whitespace().next().unwrap();
                assert_eq!(text, default.to_string(), "{}", key.name);
            }
            if let KeyStatus::Supported = key.status {
                assert!(!matches!(key.check, Check::Any | Check::Bool), "{}", key.name);
            }
        }
        // The keys the dedicated code reads are all in the table (`info` panics otherwise).
        ok(&flow_with(""));
        ok(r#"{"flows": [{"filePattern": "/a", "deliveryStream": "d"}]}"#);
    }
}
