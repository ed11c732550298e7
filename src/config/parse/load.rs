//! The loader: reads the main file and the drop-ins, checks every key against the table, applies
//! the Java agent's coercions, and collects every problem of a load (with file and location).

use super::*;

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
pub(super) struct Section<'a> {
    pub(super) file: &'a Path,
    /// `""` at the top level, `flows[2]` in a flow.
    pub(super) at: String,
    pub(super) map: &'a Map<String, Value>,
    pub(super) scope: Scope,
}

impl<'a> Section<'a> {
    /// A present, non-null value (JSON `null` means "use the default").
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

pub(super) fn location(at: &str, key: &str) -> String {
    if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") }
}

/// The file a section comes from, which decides where misplaced global keys must go.
#[derive(Clone, Copy)]
pub(super) enum Place<'a> {
    Main,
    /// A drop-in file; the path is the main file.
    DropIn(&'a Path),
}

/// A notice, gathered so that a key used in several flows of a file is reported once.
pub(super) struct Notice {
    pub(super) file: PathBuf,
    pub(super) key: String,
    pub(super) text: String,
    /// Sections (`""`, `flows[0]`, ...) where the key was found.
    pub(super) sections: Vec<String>,
}

impl Notice {
    pub(super) fn render(&self) -> String {
        let first = location(&self.sections[0], &self.key);
        let also =
            if self.sections.len() > 1 { format!(" (also {})", self.sections[1..].join(", ")) } else { String::new() };
        format!("{}: {first}{also}: {}", self.file.display(), self.text)
    }
}

#[derive(Default)]
pub(super) struct Loader {
    pub(super) errors: Vec<ConfigError>,
    pub(super) notices: Vec<Notice>,
    pub(super) flows: Vec<FlowConfig>,
    /// Flow objects seen, valid or not: the index of the next flow.
    pub(super) flow_entries: usize,
    /// Some `flows` was not an array (then "no flows" would only add noise).
    pub(super) bad_flows: bool,
    /// Flow id → (file, section) of the flow that has it.
    pub(super) ids: HashMap<String, (PathBuf, String)>,
    /// The working directory, looked up when a relative pattern needs it.
    pub(super) cwd: Option<Result<PathBuf, String>>,
}

impl Loader {
    pub(super) fn error(&mut self, file: &Path, location: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: file.to_path_buf(),
            location: location.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn key_error(&mut self, s: &Section, key: &str, message: impl Into<String>) {
        self.error(s.file, &location(&s.at, key), message);
    }

    pub(super) fn notice(&mut self, s: &Section, key: &str, text: String) {
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
    pub(super) fn status_notice(&mut self, s: &Section, key: &str) {
        let text = match info(key, s.scope).status {
            Supported => return,
            NotYetSupported(why) => format!("accepted but not yet supported ({why})"),
            Ignored(why) => format!("accepted and ignored: {why}"),
        };
        self.notice(s, key, text);
    }

    /// Parses `key` if present; a bad value is recorded as an error and gives `None`.
    pub(super) fn get<T>(
        &mut self,
        s: &Section,
        key: &str,
        parse: impl FnOnce(&str, &Value) -> Result<T, String>,
    ) -> Option<T> {
        match parse(key, s.get(key)?) {
            Ok(value) => Some(value),
            Err(message) => {
                self.key_error(s, key, message);
                None
            }
        }
    }

    /// An integer key, within the range of the key table; `None` if absent or wrong.
    pub(super) fn int_opt(&mut self, s: &Section, key: &str) -> Option<i64> {
        let Check::Int { min, max, .. } = info(key, s.scope).check else {
            panic!("`{key}` is not an integer key");
        };
        self.get(s, key, |k, v| parse_int(k, v, min, max))
    }

    /// An integer key, or its default from the key table.
    pub(super) fn int_key(&mut self, s: &Section, key: &str) -> i64 {
        let Check::Int { default, .. } = info(key, s.scope).check else {
            panic!("`{key}` is not an integer key");
        };
        let default = default.unwrap_or_else(|| panic!("`{key}` has a computed default"));
        self.int_opt(s, key).unwrap_or(default)
    }

    pub(super) fn millis_key(&mut self, s: &Section, key: &str) -> Duration {
        // Ranges start at 0 or more, so the cast is exact.
        Duration::from_millis(self.int_key(s, key) as u64)
    }

    pub(super) fn read(&mut self, file: &Path) -> Option<Map<String, Value>> {
        match fs::read(file) {
            Ok(bytes) => self.parse(file, &bytes),
            Err(e) => {
                self.error(file, "", format!("cannot read the configuration file: {e}"));
                None
            }
        }
    }

    pub(super) fn parse(&mut self, file: &Path, bytes: &[u8]) -> Option<Map<String, Value>> {
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
    pub(super) fn dropin_paths(&mut self, dir: &Path) -> Vec<PathBuf> {
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

    pub(super) fn main_file(&mut self, file: &Path, root: Option<&Map<String, Value>>) -> AgentConfig {
        let empty = Map::new();
        let s = Section { file, at: String::new(), map: root.unwrap_or(&empty), scope: Scope::Global };
        self.check_keys(&s, Place::Main);
        let config = self.globals(&s);
        self.flows_of(&s, Place::Main);
        config
    }

    pub(super) fn dropin_file(&mut self, file: &Path, root: &Map<String, Value>, main: &Path) {
        let s = Section { file, at: String::new(), map: root, scope: Scope::Global };
        self.check_keys(&s, Place::DropIn(main));
        self.flows_of(&s, Place::DropIn(main));
    }

    pub(super) fn finish(
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
    pub(super) fn check_keys(&mut self, s: &Section, place: Place) {
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
    pub(super) fn check_unsupported(&mut self, s: &Section, known: &KeyInfo, value: &Value) {
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

    pub(super) fn globals(&mut self, s: &Section) -> AgentConfig {
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
            status_period,
            prometheus,
            cloudwatch,
            log,
            aws,
            notices: Vec::new(),
        }
    }

    pub(super) fn log_settings(&mut self, s: &Section) -> LogSettings {
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
                crate::config::compile::parse_size(&text)
                    .ok_or_else(|| format!("must be a size such as 10MB, 512KB or 1048576, found {text:?}"))
            })
            .unwrap_or(10 << 20);
        let max_backups = self.get(s, "log.maxBackupIndex", |k, v| parse_int(k, v, 0, 1000)).unwrap_or(5) as u32;
        LogSettings { level, file, max_file_size, max_backups }
    }

    /// An optional string where empty means unset, as in the Java agent.
    pub(super) fn optional(&mut self, s: &Section, key: &str) -> Option<String> {
        self.get(s, key, parse_str).filter(|v| !v.trim().is_empty())
    }

    pub(super) fn flows_of(&mut self, s: &Section, place: Place) {
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

    pub(super) fn flow(&mut self, s: &Section, index: usize, place: Place) -> Option<FlowConfig> {
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
            self.get(s, "filePattern", parse_pattern).and_then(|p| self.absolute(s, p)).and_then(|p| {
                // Compiled again once absolute: the working directory joined to a relative
                // pattern may hold glob characters of its own.
                match crate::config::compile::file_glob(&p) {
                    Ok(glob) => Some((p, glob)),
                    Err(e) => {
                        let message = format!("{p:?} (made absolute) is not a valid glob: {}", e.kind());
                        self.key_error(s, "filePattern", message);
                        None
                    }
                }
            })
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
        let ordering = self.ordering(s, firehose, &partition_key);
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

        let multi_line_start_pattern = self.get(s, "multiLineStartPattern", |k, v| {
            let text = parse_regex(k, v)?;
            crate::config::compile::multi_line_start(&text).map_err(|e| format!("{text:?}: {e}"))
        });
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

        let aws = self.flow_aws(s, firehose);
        let (destination, (file_pattern, file_glob)) = (destination?, file_pattern?);
        let kind = match destination {
            Destination::Kinesis { .. } => "kinesis",
            Destination::Firehose { .. } => "fh",
        };
        Some(FlowConfig {
            index,
            source: s.file.to_path_buf(),
            id: format!("{kind}:{}:{file_pattern}", destination.name()),
            file_pattern,
            file_glob,
            destination,
            partition_key,
            ordering,
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
            aws,
        })
    }

    /// Makes a relative pattern absolute against the working directory.
    pub(super) fn absolute(&mut self, s: &Section, pattern: String) -> Option<String> {
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
