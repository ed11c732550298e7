//! The key table: every key of agent.json the agent knows, where it belongs, its type, default
//! and status; the README's tables and `--check-config` are made from it.

use super::*;

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
    pub(super) check: Check,
}

/// How a key's value is validated. Supported keys are read by dedicated code (which takes the
/// integer ranges from here); the other keys are only checked and turned into notices.
#[derive(Debug, Clone, Copy)]
pub(super) enum Check {
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
pub(super) const INT: i64 = i32::MAX as i64;
/// The largest Java `long`.
pub(super) const LONG: i64 = i64::MAX;

pub(super) const fn int(min: i64, max: i64, default: i64) -> Check {
    Check::Int { min, max, default: Some(default) }
}

pub(super) const fn global(
    name: &'static str,
    ty: &'static str,
    default: &'static str,
    doc: &'static str,
    status: KeyStatus,
    check: Check,
) -> KeyInfo {
    KeyInfo { name, scope: Scope::Global, ty, default, doc, status, check }
}

pub(super) const fn flow(
    name: &'static str,
    ty: &'static str,
    default: &'static str,
    doc: &'static str,
    status: KeyStatus,
    check: Check,
) -> KeyInfo {
    KeyInfo { name, scope: Scope::Flow, ty, default, doc, status, check }
}

pub(super) use KeyStatus::{Ignored, NotYetSupported, Supported};

pub(super) const SQLITE: &str = "checkpoints are kept in a JSON file, not an SQLite database";
pub(super) const THREADS: &str = "there is no sender thread pool; `maxSendingThreads` bounds the requests in flight";
pub(super) const HTTP: &str = "the AWS SDK's HTTP client manages its connections";
pub(super) const JAVA_CREDENTIALS: &str = "Java credential provider classes cannot be loaded here; use the \
     standard AWS credential chain, `awsAccessKeyId`/`awsSecretAccessKey` or `assumeRoleARN`";
pub(super) const QUEUES: &str = "batches move through bounded channels; there is no queue polling to tune";
pub(super) const NEVER_READ: &str = "the Java agent never reads it either";
pub(super) const INTERNAL_METRICS: &str = "internal counters are not logged yet";

/// The top-level keys (`flow_keys.rs` has those of each flow).
static GLOBAL_KEYS: &[KeyInfo] = &[
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
];

/// Every key: the top-level ones, then those of each flow.
static KEYS: std::sync::LazyLock<Vec<KeyInfo>> =
    std::sync::LazyLock::new(|| GLOBAL_KEYS.iter().chain(super::flow_keys::FLOW_KEYS).copied().collect());

/// Every key the agent knows (those of the Java agent, plus our own).
pub fn known_keys() -> &'static [KeyInfo] {
    &KEYS
}

pub(super) fn lookup(name: &str, scope: Scope) -> Option<&'static KeyInfo> {
    KEYS.iter().find(|k| k.name == name && k.scope == scope)
}

pub(super) fn info(name: &str, scope: Scope) -> &'static KeyInfo {
    lookup(name, scope).unwrap_or_else(|| panic!("`{name}` is missing from the key table"))
}
