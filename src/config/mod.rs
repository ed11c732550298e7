//! Configuration: the Java agent's `agent.json` (plus `agent.d/*.json` drop-ins) parsed with its
//! types, coercions and defaults, then validated into the structs below. `parse/` owns the key
//! table and the raw JSON handling; everything else in the agent only sees these validated types.

pub mod compile;
pub mod json_path;
mod parse;
#[cfg(test)]
mod readme_check;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use compile::Compiled;
use json_path::JsonPath;

pub use parse::{KeyInfo, KeyStatus, Scope, known_keys};

/// Default location of the main configuration file (as in the Java agent).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/aws-kinesis/agent.json";
/// Default checkpoint file. The Java default (`/var/run/...`) is wiped on reboot (Java issue #129).
pub const DEFAULT_CHECKPOINT_FILE: &str = "/var/lib/kinesis-agent/checkpoints.json";

/// Kinesis Data Streams limits.
pub const KINESIS_MAX_RECORDS: usize = 500;
pub const KINESIS_MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// Data plus partition key of one record.
pub const KINESIS_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Default of `kplAggregationMaxBytes`: one PUT payload unit (25 KB), key included.
pub const DEFAULT_KPL_AGGREGATION_BYTES: usize = 25_000;
/// Default of `maxInFlightBytes`.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;
/// Firehose limits.
pub const FIREHOSE_MAX_RECORDS: usize = 500;
pub const FIREHOSE_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
pub const FIREHOSE_MAX_RECORD_BYTES: usize = 1_024_000;

/// One problem found in the configuration. `location` is the JSON path of the key
/// (`flows[1].maxBufferAgeMillis`), or empty for the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.location, self.message)
        }
    }
}

/// All the problems of one load, reported together.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The only problem is that no flow is configured (a fresh install's agent.json).
    pub fn only_missing_flows(&self) -> bool {
        matches!(self.0.as_slice(), [e] if e.location.is_empty() && e.message.starts_with("no flows"))
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A secret that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a flow sends its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `kinesisStream`: Kinesis Data Streams, PutRecords.
    Kinesis { stream: String },
    /// `deliveryStream`: Kinesis Data Firehose, PutRecordBatch (wins when both keys are given, as in Java).
    Firehose { stream: String },
}

impl Destination {
    pub fn name(&self) -> &str {
        match self {
            Destination::Kinesis { stream } | Destination::Firehose { stream } => stream,
        }
    }
    /// Largest record (data plus partition key for Kinesis) the destination accepts.
    pub fn max_record_bytes(&self) -> usize {
        match self {
            Destination::Kinesis { .. } => KINESIS_MAX_RECORD_BYTES,
            Destination::Firehose { .. } => FIREHOSE_MAX_RECORD_BYTES,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Kinesis { stream } => write!(f, "kinesis stream {stream}"),
            Destination::Firehose { stream } => write!(f, "firehose delivery stream {stream}"),
        }
    }
}

/// `partitionKeyOption`: a name (`"RANDOM"`, `"DETERMINISTIC"`, as in the Java agent) or an
/// object that derives the key from each record (new; see the README's "Partition keys").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKeyOption {
    /// A random ASCII key per record (default).
    Random,
    /// Lower-case hex MD5 of the record's own bytes (fixes the Java agent's whole-buffer hash).
    Deterministic,
    /// A key taken from each record: a JSON field, a regex capture or a constant.
    Derived(DerivedKey),
}

impl PartitionKeyOption {
    /// How the key is made, as written in agent.json (for logs).
    pub fn describe(&self) -> String {
        match self {
            PartitionKeyOption::Random => "RANDOM".into(),
            PartitionKeyOption::Deterministic => "DETERMINISTIC".into(),
            PartitionKeyOption::Derived(d) => d.describe(),
        }
    }
}

/// Where a derived partition key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `{"field": "$.request.host"}`: a JSON field by path, read from the record after
    /// `dataProcessingOptions` ran.
    Field(Compiled<JsonPath>),
    /// `{"regex": "user=(\\w+)", "group": 1}`: a capture group (number or name, default 1) of a
    /// regex searched in the raw line, before `dataProcessingOptions`.
    Regex { pattern: Compiled<regex::bytes::Regex>, group: CaptureGroup },
    /// `{"constant": "web-1"}`: the same key for every record.
    Constant(String),
}

/// A capture group by number or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureGroup {
    Index(usize),
    Name(String),
}

/// The key a record gets when its own cannot be derived (`fallback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFallback {
    Random,
    Deterministic,
}

/// An object `partitionKeyOption`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedKey {
    pub source: KeySource,
    /// `fallback` (default RANDOM): the key of a record whose field is missing, that is not JSON,
    /// or that the regex does not match (counted).
    pub fallback: KeyFallback,
    /// `explicitHashKeyField`: a JSON field holding a decimal 128-bit integer sent as the
    /// record's ExplicitHashKey (invalid values are counted and left out).
    pub explicit_hash_key_field: Option<Compiled<JsonPath>>,
}

impl DerivedKey {
    pub fn describe(&self) -> String {
        let source = match &self.source {
            KeySource::Field(p) => format!("field {p}"),
            KeySource::Regex { pattern, group: CaptureGroup::Index(i) } => format!("regex {pattern:?} group {i}"),
            KeySource::Regex { pattern, group: CaptureGroup::Name(n) } => format!("regex {pattern:?} group {n}"),
            KeySource::Constant(c) => format!("constant {c:?}"),
        };
        let fallback = match self.fallback {
            KeyFallback::Random => "RANDOM",
            KeyFallback::Deterministic => "DETERMINISTIC",
        };
        match &self.explicit_hash_key_field {
            Some(f) => format!("{source}, fallback {fallback}, explicit hash key from {f}"),
            None => format!("{source}, fallback {fallback}"),
        }
    }
}

/// `ordering` (new): whether records of the same partition key reach the stream in the order they
/// were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// A record is never accepted before an earlier record of its key (one record, or one KPL
    /// aggregate, per key in flight).
    PerKey,
    None,
}

/// `initialPosition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialPosition {
    StartOfFile,
    /// Default: start after the last complete line of files present at the first start.
    EndOfFile,
}

impl InitialPosition {
    /// The name as written in agent.json.
    pub fn as_str(self) -> &'static str {
        match self {
            InitialPosition::StartOfFile => "START_OF_FILE",
            InitialPosition::EndOfFile => "END_OF_FILE",
        }
    }
}

/// `oversizedRecordAction`: what happens to a line longer than the destination's record limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OversizedRecordAction {
    /// Cut it and end it with `truncatedRecordTerminator` (default, as in Java).
    Truncate,
    /// Drop it (counted).
    Drop,
}

/// A validated flow.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowConfig {
    /// Position in the merged flow list (main file first, then drop-ins in name order).
    pub index: usize,
    /// The file this flow was read from.
    pub source: PathBuf,
    /// Java-compatible flow id: `kinesis:<stream>:<pattern>` or `fh:<stream>:<pattern>`.
    /// Checkpoints are keyed by it.
    pub id: String,
    /// `filePattern`: absolute glob (relative patterns are resolved against the working directory).
    pub file_pattern: String,
    /// `filePattern` compiled (`compile::file_glob`).
    pub file_glob: globset::Glob,
    pub destination: Destination,
    /// `partitionKeyOption` (default RANDOM).
    pub partition_key: PartitionKeyOption,
    /// `ordering` (default PER_KEY for derived keys, NONE otherwise and for Firehose).
    pub ordering: KeyOrder,
    /// `initialPosition` (default END_OF_FILE).
    pub initial_position: InitialPosition,
    /// `maxBufferAgeMillis` (default 60,000; 1,000–900,000).
    pub max_buffer_age: Duration,
    /// `maxBufferSizeRecords` (default 500; 1–500).
    pub max_buffer_size_records: usize,
    /// `maxBufferSizeBytes` (default 5 MiB Kinesis / 4 MiB Firehose; 1–that).
    pub max_buffer_size_bytes: usize,
    /// `publishQueueCapacity` (default 100): full batches that may wait for a sender slot.
    pub publish_queue_capacity: usize,
    /// `retryInitialBackoffMillis` (default 100).
    pub retry_initial_backoff: Duration,
    /// `retryMaxBackoffMillis` (default 10,000).
    pub retry_max_backoff: Duration,
    /// `minTimeBetweenFilePollsMillis` (default 100): poll interval of an idle file when no
    /// file-system notification arrives.
    pub min_time_between_file_polls: Duration,
    /// `maxTimeBetweenFileTrackerRefreshMillis` (default 10,000 in Java; we re-glob every 1 s
    /// regardless, and this caps that interval).
    pub max_time_between_file_tracker_refresh: Duration,
    /// `skipHeaderLines` (default 0): lines skipped at the start of every file read from offset 0.
    pub skip_header_lines: u64,
    /// `truncatedRecordTerminator` (default "\n").
    pub truncated_record_terminator: Vec<u8>,
    /// `oversizedRecordAction` (default TRUNCATE).
    pub oversized_record_action: OversizedRecordAction,
    /// `multiLineStartPattern`: a record is a line starting with a match plus the lines after
    /// it that do not (`None`: a record per line).
    pub multi_line_start_pattern: Option<Compiled<regex::bytes::Regex>>,
    /// `multiLineFlushTimeoutMillis` (new, default 1,000): a multi-line record leaves once its
    /// file has been quiet this long.
    pub multi_line_flush_timeout: Duration,
    /// `rotateWaitMillis` (new, default 5,000): a file that left the pattern's reach is closed
    /// once read to its end and quiet this long.
    pub rotate_wait: Duration,
    /// `maxOpenRotatedFiles` (new, default 64): files that left the pattern's reach kept open
    /// once read to their end, per flow.
    pub max_open_rotated_files: usize,
    /// `stalledFileWarningMillis` (new, default 300,000): a file with unread bytes not read for
    /// this long is warned about.
    pub stalled_file_warning: Duration,
    /// `aggregatedRecordSizeBytes` (Firehose; 0: off).
    pub aggregated_record_size_bytes: usize,
    /// `kplAggregation` + `kplAggregationMaxBytes` (Kinesis flows; new): pack records into KPL
    /// aggregated records of at most this many bytes (`None`: off).
    pub kpl_aggregation: Option<usize>,
    /// `dataProcessingOptions`: converters applied in order to each record (empty: records
    /// are sent as read, without a copy).
    pub data_processing_options: Vec<ProcessingOption>,
    /// Destination settings of this flow that override the top-level ones (new: cross-account
    /// and cross-region shipping from one host).
    pub aws: FlowAws,
}

/// `kinesis.endpoint`, `kinesis.region`, `firehose.endpoint`, `firehose.region`,
/// `assumeRoleARN` and `assumeRoleExternalId` set inside a flow (`None`: the top-level value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowAws {
    pub kinesis_endpoint: Option<String>,
    pub kinesis_region: Option<String>,
    pub firehose_endpoint: Option<String>,
    pub firehose_region: Option<String>,
    pub assume_role_arn: Option<String>,
    pub assume_role_external_id: Option<String>,
}

impl FlowAws {
    pub fn is_empty(&self) -> bool {
        *self == FlowAws::default()
    }
}

impl FlowConfig {
    /// `flows[0] (kinesis stream app-logs in us-east-1)`: how log lines name the flow.
    pub fn label(&self, region: Option<&str>) -> String {
        let kind = match &self.destination {
            Destination::Kinesis { stream } => format!("kinesis stream {stream}"),
            Destination::Firehose { stream } => format!("firehose delivery stream {stream}"),
        };
        match region {
            Some(r) => format!("flows[{}] ({} in {r})", self.index, kind),
            None => format!("flows[{}] ({})", self.index, kind),
        }
    }
}

/// `jsonFormat` of the converters that write JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonFormat {
    /// One line (default).
    Compact,
    /// Jackson's default pretty printer: multi-line records.
    PrettyPrint,
}

/// `logFormat` of LOGTOJSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    CommonApacheLog,
    CombinedApacheLog,
    ApacheErrorLog,
    Syslog,
    Rfc3339Syslog,
}

impl LogFormat {
    /// The Apache formats write `-` for a missing field; it becomes JSON `null`.
    pub fn is_apache(self) -> bool {
        matches!(self, LogFormat::CommonApacheLog | LogFormat::CombinedApacheLog | LogFormat::ApacheErrorLog)
    }
}

/// How CSVTOJSON cuts a line into columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvSplit {
    /// As the Java agent: `delimiter` is a regular expression, quotes are not special, trailing
    /// empty columns are removed (so they become `null`).
    Regex(Compiled<regex::Regex>),
    /// `csvMode: RFC4180` (new): quoted fields (`"a,b"`, `""` for a quote) with a one-byte delimiter;
    /// empty columns stay `""`.
    Quoted(u8),
}

/// One validated entry of `dataProcessingOptions`.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessingOption {
    /// SINGLELINE: the lines of a record trimmed (unless `NO_TRIM`) and joined with nothing, or
    /// with the text `\\n` (`ESCAPE_NEW_LINE`).
    SingleLine { no_trim: bool, escape_new_line: bool },
    /// CSVTOJSON: columns named by `customFieldNames`.
    CsvToJson { fields: Vec<String>, split: CsvSplit, json: JsonFormat },
    /// LOGTOJSON: a log format's or `matchPattern`'s groups as named fields; lines that do not
    /// match are dropped.
    LogToJson { matching: LogMatch, json: JsonFormat },
    /// ADDMETADATA: `{"ts"?, "metadata", "data"}`.
    AddMetadata { metadata: serde_json::Value, timestamp: bool, json: JsonFormat },
    /// ADDBRACKETS (the Java sample converter): the record wrapped in `{` and `}`.
    AddBrackets,
    /// ADDEC2METADATA: the instance's identity (IMDSv2) added to a JSON object record, refreshed
    /// every `metadataTTL` (default 3600 s).
    AddEc2Metadata { ttl: Duration, json: JsonFormat },
    /// ADDSOURCEMETADATA (new): where and when the record was read (`sourceFile`, `hostname`,
    /// `readTime`), added to a JSON object record, or around the record with `wrap`.
    AddSourceMetadata { fields: SourceFields, wrap: bool, json: JsonFormat },
}

/// What LOGTOJSON matches records against, and the names of the groups (as many as it has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogMatch {
    /// `logFormat` alone: its built-in pattern, with `customFieldNames` or the format's names.
    Format { format: LogFormat, fields: Option<Vec<String>> },
    /// `matchPattern` with `customFieldNames`; a `logFormat` beside it only makes `-` null (the
    /// Apache formats).
    Pattern { pattern: Compiled<regex::Regex>, fields: Vec<String>, format: Option<LogFormat> },
}

/// Which of ADDSOURCEMETADATA's fields are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFields {
    pub file: bool,
    pub host: bool,
    pub read_time: bool,
}

/// AWS endpoints, regions and credentials (global keys).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwsSettings {
    /// `kinesis.endpoint`: URL (`http://127.0.0.1:4567`) or bare host (https is assumed).
    pub kinesis_endpoint: Option<String>,
    /// `kinesis.region`.
    pub kinesis_region: Option<String>,
    /// `firehose.endpoint`.
    pub firehose_endpoint: Option<String>,
    /// `firehose.region` (new; Java has none and uses us-east-1 without an endpoint).
    pub firehose_region: Option<String>,
    /// `sts.endpoint`.
    pub sts_endpoint: Option<String>,
    /// `cloudwatch.endpoint`.
    pub cloudwatch_endpoint: Option<String>,
    /// `ec2.metadataEndpoint` (new): the IMDS endpoint (ADDEC2METADATA, `cloudwatch.tagInstance`).
    pub ec2_metadata_endpoint: Option<String>,
    /// `awsAccessKeyId`.
    pub access_key_id: Option<String>,
    /// `awsSecretAccessKey`.
    pub secret_access_key: Option<Secret>,
    /// `assumeRoleARN`.
    pub assume_role_arn: Option<String>,
    /// `assumeRoleExternalId`.
    pub assume_role_external_id: Option<String>,
    /// `userAgent`: put before our own user agent.
    pub user_agent: Option<String>,
    /// `userAgentOverride`.
    pub user_agent_override: Option<String>,
    /// `connectionTimeoutMillis` (default 10,000).
    pub connection_timeout: Duration,
    /// `socketTimeoutMillis` (default 50,000): time allowed for one request attempt.
    pub socket_timeout: Duration,
}

/// `cloudwatch.*`: the agent's metrics in CloudWatch (the endpoint is in `AwsSettings`).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudWatchSettings {
    /// `cloudwatch.emitMetrics`; `None` when not set: on (as in Java), unless every destination
    /// endpoint is a local address and `cloudwatch.endpoint` is unset (emulators, tests).
    pub emit: Option<bool>,
    /// `cloudwatch.namespace` (default `AWSKinesisAgent`).
    pub namespace: String,
    /// `cloudwatch.tagInstance` (default false): the `Instance` dimension.
    pub tag_instance: bool,
    /// `cloudwatch.metricsBufferTimeMillis` (default 30,000; at least 100 ms): the publishing period.
    pub buffer_time: Duration,
    /// `cloudwatch.metricsQueueSize` (default 10,000; at least 1): data points kept while
    /// CloudWatch cannot be reached.
    pub queue_size: usize,
}

/// Where and how much to log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// `log.level`, as a `tracing` level (`info`); `None`: info.
    pub level: Option<String>,
    /// `log.file`: `None`, standard error.
    pub file: Option<PathBuf>,
    /// `log.maxFileSize` in bytes (default 10 MiB).
    pub max_file_size: u64,
    /// `log.maxBackupIndex` (default 5).
    pub max_backups: u32,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Every file that contributed (main file first).
    pub sources: Vec<PathBuf>,
    pub flows: Vec<FlowConfig>,
    /// `checkpointFile` (default `/var/lib/kinesis-agent/checkpoints.json`).
    pub checkpoint_file: PathBuf,
    /// `checkpointTimeToLiveDays` (default 7).
    pub checkpoint_ttl_days: u32,
    /// `shutdownTimeoutMillis` (default 10,000).
    pub shutdown_timeout: Duration,
    /// `maxSendingThreads` (default max(2, 12 × CPUs) as in Java): here, the most requests in
    /// flight at once across all flows.
    pub max_sending_threads: usize,
    /// `maxInFlightBytes` (default 64 MiB; at least 1 MiB): record bytes being sent or retried at
    /// once, across all flows (new: the Java agent has no such bound).
    pub max_in_flight_bytes: usize,
    /// `log.statusReportingPeriodSeconds` (default 30).
    pub status_period: Duration,
    /// `log.level`, `log.file`, `log.maxFileSize`, `log.maxBackupIndex`.
    pub log: LogSettings,
    /// `prometheus.port` / `prometheus.address` (new; off by default, loopback unless set).
    pub prometheus: Option<std::net::SocketAddr>,
    /// `cloudwatch.*` (except the endpoint).
    pub cloudwatch: CloudWatchSettings,
    pub aws: AwsSettings,
    /// Keys that are accepted but not implemented yet, or mean nothing here: one line per key
    /// and file, already phrased for the user (`/etc/aws-kinesis/agent.json:
    /// flows[0].fileFooterPattern (also flows[2]): accepted but not yet supported (...)`).
    pub notices: Vec<String>,
}

/// Load `main` plus every `*.json` in `dropin_dir` (sorted by name; only their `flows` are used).
/// A missing drop-in directory is fine; a missing main file is an error.
pub fn load(main: &Path, dropin_dir: Option<&Path>) -> Result<AgentConfig, ConfigErrors> {
    parse::load(main, dropin_dir)
}

/// Only `checkpointFile` of `main` (a global key: drop-ins cannot set it), for `kinesis-agent
/// status`, which must work while the flows are invalid or absent. Errors: reading the file, and
/// that key.
pub fn checkpoint_file(main: &Path) -> Result<PathBuf, ConfigErrors> {
    parse::checkpoint_file(main)
}

/// Parse one configuration text (tests and `--check-config` of a single file).
pub fn load_str(name: &Path, text: &str) -> Result<AgentConfig, ConfigErrors> {
    parse::load_str(name, text)
}
