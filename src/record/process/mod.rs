//! `dataProcessingOptions`: converters applied in order to each record, with the Java agent's
//! output byte for byte (see `json.rs` for the JSON text, `text.rs` for Java's string rules).
//! A record is decoded once (bad UTF-8 replaced as Java does), passed through the chain as text,
//! and becomes a new `Bytes`; a converter may drop it (LOGTOJSON on a line that does not match).

pub mod csv;
pub mod ec2;
pub mod json;
pub mod log;
pub mod simple;
pub mod text;

use std::borrow::Cow;

use crate::config::{CsvSplit, JsonFormat, ProcessingOption, SourceFields};

#[derive(Debug)]
enum Step {
    SingleLine { no_trim: bool, escape_new_line: bool },
    Csv(csv::CsvToJson),
    Log(log::LogParser),
    Metadata { metadata: serde_json::Value, timestamp: bool, json: JsonFormat },
    Brackets,
    Ec2 { source: std::sync::Arc<ec2::Source>, json: JsonFormat },
    Source { fields: SourceFields, host: String, wrap: bool, json: JsonFormat },
}

/// Where and when the records being converted were read (for ADDSOURCEMETADATA).
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The file's path when it was read.
    pub file: &'a str,
    /// `yyyy-MM-ddTHH:mm:ss.SSSZ`, UTC.
    pub read_time: &'a str,
}

/// A converter failed: the Java agent sends the raw record instead.
struct Failed;

impl Step {
    /// The converted record, `Ok(None)` when dropped.
    fn run(&self, record: &str, context: &Context) -> Result<Option<String>, Failed> {
        Ok(Some(match self {
            Step::SingleLine { no_trim, escape_new_line } => simple::single_line(record, *no_trim, *escape_new_line),
            Step::Csv(c) => c.convert(record),
            Step::Log(p) => return Ok(p.convert(record)),
            Step::Metadata { metadata, timestamp, json } => simple::add_metadata(record, metadata, *timestamp, *json),
            Step::Brackets => simple::add_brackets(record),
            Step::Ec2 { source, json } => match ec2::add(record, source.current().as_deref(), *json) {
                ec2::Converted::Text(t) => t,
                ec2::Converted::Unchanged => record.to_owned(),
                ec2::Converted::NotAnObject => return Err(Failed),
            },
            Step::Source { fields, host, wrap, json } => {
                let mut values: Vec<(&str, &str)> = Vec::with_capacity(3);
                if fields.file {
                    values.push(("sourceFile", context.file));
                }
                if fields.host {
                    values.push(("hostname", host));
                }
                if fields.read_time {
                    values.push(("readTime", context.read_time));
                }
                match simple::add_fields(record, &values, *wrap, *json) {
                    Some(t) => t,
                    None => {
                        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
                        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            tracing::warn!(
                                "ADDSOURCEMETADATA: a record is not a JSON object, so it is sent as read (put LOGTOJSON \
                                 or CSVTOJSON before it, or use \"mode\": \"WRAP\"); counted as a conversion error; said once"
                            );
                        }
                        return Err(Failed);
                    }
                }
            }
        }))
    }
}

/// What the chain made of a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Converted(Vec<u8>),
    /// A converter dropped it (LOGTOJSON on a line that does not match).
    Dropped,
    /// A converter failed: send the record as read (and count an error), as the Java agent does.
    Failed,
}

/// A flow's compiled converter chain.
#[derive(Debug)]
pub struct Processor {
    steps: Vec<Step>,
}

impl Processor {
    /// `None` when no option changes records (none given, or only ones not applied yet): records
    /// then go out as read, without a copy.
    pub fn new(options: &[ProcessingOption]) -> Option<Processor> {
        Self::with_ec2(options, &crate::ec2::Endpoint::from_config(None))
    }

    /// As `new`, with the instance metadata endpoint ADDEC2METADATA asks.
    pub fn with_ec2(options: &[ProcessingOption], imds: &crate::ec2::Endpoint) -> Option<Processor> {
        let mut steps = Vec::with_capacity(options.len());
        for option in options {
            steps.push(match option {
                ProcessingOption::SingleLine { no_trim, escape_new_line } => {
                    Step::SingleLine { no_trim: *no_trim, escape_new_line: *escape_new_line }
                }
                ProcessingOption::CsvToJson { fields, split, json } => Step::Csv(csv::CsvToJson {
                    fields: fields.clone(),
                    splitter: match split {
                        CsvSplit::Regex(r) => csv::Splitter::Regex((**r).clone()),
                        CsvSplit::Quoted(d) => csv::Splitter::Quoted(*d),
                    },
                    json: *json,
                }),
                ProcessingOption::LogToJson { matching, json } => Step::Log(log::LogParser::new(matching, *json)),
                ProcessingOption::AddMetadata { metadata, timestamp, json } => {
                    Step::Metadata { metadata: metadata.clone(), timestamp: *timestamp, json: *json }
                }
                ProcessingOption::AddBrackets => Step::Brackets,
                ProcessingOption::AddEc2Metadata { ttl, json } => {
                    Step::Ec2 { source: ec2::Source::shared(imds, *ttl), json: *json }
                }
                ProcessingOption::AddSourceMetadata { fields, wrap, json } => {
                    Step::Source { fields: *fields, host: crate::service::hostname(), wrap: *wrap, json: *json }
                }
            });
        }
        (!steps.is_empty()).then_some(Processor { steps })
    }

    /// The converted record, or `None` when a converter dropped it (a failed conversion gives
    /// the record as read).
    pub fn apply(&self, record: &[u8]) -> Option<Vec<u8>> {
        match self.convert(record) {
            Applied::Converted(out) => Some(out),
            Applied::Dropped => None,
            Applied::Failed => Some(record.to_vec()),
        }
    }

    pub fn convert(&self, record: &[u8]) -> Applied {
        self.convert_in(record, &Context::default())
    }

    /// Whether the converters use the records' `Context` (so the tailer makes one).
    pub fn needs_context(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Source { .. }))
    }

    /// As `convert`, for records read from `context.file` at `context.read_time`.
    pub fn convert_in(&self, record: &[u8], context: &Context) -> Applied {
        let mut text: Cow<str> = text::decode(record);
        for step in &self.steps {
            match step.run(&text, context) {
                Ok(Some(out)) => text = Cow::Owned(out),
                Ok(None) => return Applied::Dropped,
                Err(Failed) => return Applied::Failed,
            }
        }
        Applied::Converted(text.into_owned().into_bytes())
    }

    /// Waits (briefly, and only the first time) for what the converters need from outside: the
    /// first answer of instance metadata for ADDEC2METADATA.
    pub async fn ready(&self) {
        for step in &self.steps {
            if let Step::Ec2 { source, .. } = step {
                source.ready().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogFormat, LogMatch};
    use proptest::prelude::*;
    use serde_json::Value;

    /// ADDSOURCEMETADATA adds where and when a record was read: as fields of a JSON object, or
    /// around any record with WRAP; a record that is not an object is a conversion error.
    #[test]
    fn source_metadata() {
        let all = SourceFields { file: true, host: true, read_time: true };
        let option = |wrap| ProcessingOption::AddSourceMetadata { fields: all, wrap, json: JsonFormat::Compact };
        let fields = Processor::new(&[option(false)]).unwrap();
        assert!(fields.needs_context());
        let context = Context { file: "/var/log/app.log", read_time: "2026-12-04T16:20:00.123Z" };
        let host = crate::service::hostname();
        assert_eq!(
            fields.convert_in(b"{\"msg\":\"hi\",\"hostname\":\"x\"}\n", &context),
            Applied::Converted(
                format!(
                    "{{\"msg\":\"hi\",\"hostname\":\"{host}\",\"sourceFile\":\"/var/log/app.log\",\"readTime\":\"2026-12-04T16:20:00.123Z\"}}\n"
                )
                .into_bytes()
            )
        );
        assert_eq!(fields.convert_in(b"plain text\n", &context), Applied::Failed);
        let wrap = Processor::new(&[option(true)]).unwrap();
        assert_eq!(
            wrap.convert_in(b"plain \"text\"\n", &context),
            Applied::Converted(
                format!(
                    "{{\"sourceFile\":\"/var/log/app.log\",\"hostname\":\"{host}\",\"readTime\":\"2026-12-04T16:20:00.123Z\",\"data\":\"plain \\\"text\\\"\"}}\n"
                )
                .into_bytes()
            )
        );
        let other = Processor::new(&[ProcessingOption::AddBrackets]).unwrap();
        assert!(!other.needs_context());
    }

    fn chain(options: Vec<ProcessingOption>) -> Processor {
        Processor::new(&options).unwrap()
    }

    fn all_options() -> Vec<ProcessingOption> {
        let names = |n: usize| (0..n).map(|i| format!("f{i}")).collect::<Vec<_>>();
        let mut v = vec![
            ProcessingOption::SingleLine { no_trim: false, escape_new_line: true },
            ProcessingOption::SingleLine { no_trim: true, escape_new_line: false },
            ProcessingOption::CsvToJson {
                fields: names(3),
                split: CsvSplit::Regex(crate::config::compile::csv_delimiter(",").unwrap()),
                json: JsonFormat::Compact,
            },
            ProcessingOption::CsvToJson {
                fields: names(3),
                split: CsvSplit::Regex(crate::config::compile::csv_delimiter("|").unwrap()),
                json: JsonFormat::PrettyPrint,
            },
            ProcessingOption::CsvToJson { fields: names(3), split: CsvSplit::Quoted(b';'), json: JsonFormat::Compact },
            ProcessingOption::LogToJson {
                matching: LogMatch::Pattern {
                    pattern: crate::config::compile::match_pattern(r"(\S+) (.*)").unwrap(),
                    fields: names(2),
                    format: None,
                },
                json: JsonFormat::Compact,
            },
            ProcessingOption::AddMetadata {
                metadata: serde_json::json!({"a": [1, 2.5, null]}),
                timestamp: true,
                json: JsonFormat::PrettyPrint,
            },
            ProcessingOption::AddBrackets,
        ];
        for format in [
            LogFormat::CommonApacheLog,
            LogFormat::CombinedApacheLog,
            LogFormat::ApacheErrorLog,
            LogFormat::Syslog,
            LogFormat::Rfc3339Syslog,
        ] {
            v.push(ProcessingOption::LogToJson {
                matching: LogMatch::Format { format, fields: None },
                json: JsonFormat::Compact,
            });
        }
        v
    }

    #[test]
    fn options_run_in_order() {
        let p = chain(vec![
            ProcessingOption::SingleLine { no_trim: false, escape_new_line: false },
            ProcessingOption::CsvToJson {
                fields: vec!["a".into(), "b".into()],
                split: CsvSplit::Regex(crate::config::compile::csv_delimiter(",").unwrap()),
                json: JsonFormat::Compact,
            },
            ProcessingOption::AddMetadata {
                metadata: serde_json::json!("web"),
                timestamp: false,
                json: JsonFormat::Compact,
            },
        ]);
        assert_eq!(
            String::from_utf8(p.apply(b"  1,\n   2  \n").unwrap()).unwrap(),
            "{\"metadata\":\"web\",\"data\":\"{\\\"a\\\":\\\"1\\\",\\\"b\\\":\\\"2\\\"}\"}\n"
        );
    }

    #[test]
    fn a_dropped_record_stops_the_chain() {
        let p = chain(vec![
            ProcessingOption::LogToJson {
                matching: LogMatch::Format { format: LogFormat::Syslog, fields: None },
                json: JsonFormat::Compact,
            },
            ProcessingOption::AddBrackets,
        ]);
        assert_eq!(p.apply(b"nonsense\n"), None);
    }

    #[test]
    fn invalid_utf8_is_replaced_as_java_does() {
        let p = chain(vec![ProcessingOption::AddMetadata {
            metadata: serde_json::Value::Null,
            timestamp: false,
            json: JsonFormat::Compact,
        }]);
        assert_eq!(
            p.apply(b"a\xED\xA0\x80b\xFF\n").unwrap(),
            "{\"metadata\":null,\"data\":\"a\u{FFFD}b\u{FFFD}\"}\n".as_bytes()
        );
    }

    #[test]
    fn options_without_effect_need_no_processor() {
        assert!(Processor::new(&[]).is_none());
        let ec2 =
            ProcessingOption::AddEc2Metadata { ttl: std::time::Duration::from_secs(1), json: JsonFormat::Compact };
        assert!(Processor::new(&[ec2]).is_some());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn no_input_panics(input in proptest::collection::vec(any::<u8>(), 0..300), text in "\\PC{0,200}") {
            for option in all_options() {
                let p = chain(vec![option]);
                let _ = p.apply(&input);
                if let Some(out) = p.apply(text.as_bytes()) {
                    prop_assert!(std::str::from_utf8(&out).is_ok());
                }
            }
        }

        #[test]
        fn json_output_is_valid_json(text in "[ -~\\t\\r\\x00-\\x1f\u{80}-\u{10ffff}]{0,120}") {
            let p = chain(vec![ProcessingOption::CsvToJson {
                fields: vec!["a".into(), "b".into()],
                split: CsvSplit::Regex(crate::config::compile::csv_delimiter(",").unwrap()),
                json: JsonFormat::Compact,
            }]);
            let out = p.apply(text.as_bytes()).unwrap();
            prop_assert!(out.ends_with(b"\n"));
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            prop_assert!(v.is_object());
        }

        #[test]
        fn log_lines_like_apache_never_panic(host in "[0-9a-f:.]{1,20}", user in "[a-z-]{1,8}", req in "[ -!#-~]{0,40}", code in "[0-9-]{1,3}") {
            let line = format!("{host} - {user} [10/Oct/2000:13:55:36 -0700] \"{req}\" {code} 1\n");
            let p = chain(vec![ProcessingOption::LogToJson { matching: LogMatch::Format { format: LogFormat::CommonApacheLog, fields: None }, json: JsonFormat::Compact }]);
            if let Some(out) = p.apply(line.as_bytes()) {
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                prop_assert_eq!(v.as_object().unwrap().len(), 7);
            }
        }
    }

    proptest! {
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
            let text = format!(
                r#"{{"flows": [{{"filePattern": "/var/log/app.log", "kinesisStream": "s", "dataProcessingOptions": [{}]}}]}}"#,
                Value::Object(option)
            );
            if let Ok(config) = crate::config::load_str(std::path::Path::new("/etc/aws-kinesis/agent.json"), &text) {
                let _ = Processor::new(&config.flows[0].data_processing_options);
            }
        }
    }
}
