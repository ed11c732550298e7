//! `dataProcessingOptions`: each converter's keys, checked and read into `ProcessingOption`s.

use super::*;
use crate::config::LogMatch;

/// The options of `dataProcessingOptions` entries, and the keys each takes.
pub(super) const PROCESSING_OPTIONS: [(&str, &[&str]); 8] = [
    ("SINGLELINE", &["parseOptions"]),
    ("CSVTOJSON", &["customFieldNames", "delimiter", "csvMode", "jsonFormat"]),
    ("LOGTOJSON", &["logFormat", "matchPattern", "customFieldNames", "jsonFormat"]),
    ("ADDMETADATA", &["metadata", "timestamp", "jsonFormat"]),
    ("ADDEC2METADATA", &["logFormat", "metadataTTL", "jsonFormat"]),
    ("ADDBRACKETS", &[]),
    ("ADDSOURCEMETADATA", &["fields", "mode", "jsonFormat"]),
    ("USINGPLUGGIN", &["className"]),
];

pub(super) const LOG_FORMATS: [(&str, LogFormat); 5] = [
    ("COMMONAPACHELOG", LogFormat::CommonApacheLog),
    ("COMBINEDAPACHELOG", LogFormat::CombinedApacheLog),
    ("APACHEERRORLOG", LogFormat::ApacheErrorLog),
    ("SYSLOG", LogFormat::Syslog),
    ("RFC3339SYSLOG", LogFormat::Rfc3339Syslog),
];

pub(super) const JSON_FORMATS: [(&str, JsonFormat); 2] =
    [("COMPACT", JsonFormat::Compact), ("PRETTYPRINT", JsonFormat::PrettyPrint)];

/// `csvMode`: `SPLIT` is the Java agent's regex split, `RFC4180` reads quoted fields.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum CsvMode {
    Split,
    Rfc4180,
}

/// One entry of `dataProcessingOptions` being read: errors name `flows[i].dataProcessingOptions[j].key`.
pub(super) struct OptionEntry<'a> {
    /// `flows[0].dataProcessingOptions[1]`
    pub(super) at: String,
    pub(super) map: &'a Map<String, Value>,
}

impl OptionEntry<'_> {
    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn loc(&self, key: &str) -> String {
        format!("{}.{key}", self.at)
    }
}

impl Loader {
    /// `dataProcessingOptions`, with every problem of every entry reported.
    pub(super) fn processing_options(&mut self, s: &Section) -> Vec<ProcessingOption> {
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

    pub(super) fn option_error(&mut self, s: &Section, entry: &OptionEntry, key: &str, message: impl Into<String>) {
        self.error(s.file, &entry.loc(key), message);
    }

    pub(super) fn processing_option(
        &mut self,
        s: &Section,
        entry: &OptionEntry,
        index: usize,
    ) -> Option<ProcessingOption> {
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
            "ADDSOURCEMETADATA" => self.source_metadata_option(s, entry),
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
    pub(super) fn check_option_keys(
        &mut self,
        s: &Section,
        entry: &OptionEntry,
        index: usize,
        name: &str,
        keys: &[&str],
    ) {
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

    pub(super) fn json_format(&mut self, s: &Section, entry: &OptionEntry) -> JsonFormat {
        let Some(v) = entry.get("jsonFormat") else { return JsonFormat::Compact };
        parse_choice("jsonFormat", v, &JSON_FORMATS).unwrap_or_else(|message| {
            self.option_error(s, entry, "jsonFormat", message);
            JsonFormat::Compact
        })
    }

    /// `customFieldNames`: a non-empty list of strings.
    pub(super) fn field_names(&mut self, s: &Section, entry: &OptionEntry) -> Option<Vec<String>> {
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

    pub(super) fn single_line_option(&mut self, s: &Section, entry: &OptionEntry) -> Option<ProcessingOption> {
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

    pub(super) fn csv_option(&mut self, s: &Section, entry: &OptionEntry) -> Option<ProcessingOption> {
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
            CsvMode::Split => match crate::config::compile::csv_delimiter(&delimiter) {
                Ok(re) => CsvSplit::Regex(re),
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

    pub(super) fn log_option(&mut self, s: &Section, entry: &OptionEntry) -> Option<ProcessingOption> {
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
                match crate::config::compile::match_pattern(&text) {
                    Ok(re) => {
                        let groups = re.captures_len() - 1;
                        Some((re, groups))
                    }
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
                let defaults = crate::config::compile::default_fields(f);
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
        let matching = match (pattern, format, fields) {
            (Some((pattern, _)), format, Some(fields)) => LogMatch::Pattern { pattern, fields, format },
            (None, Some(format), fields) => LogMatch::Format { format, fields },
            // Reported above (no `customFieldNames` is an error with `matchPattern`).
            _ => return None,
        };
        Some(ProcessingOption::LogToJson { matching, json })
    }

    pub(super) fn metadata_option(
        &mut self,
        s: &Section,
        entry: &OptionEntry,
        index: usize,
    ) -> Option<ProcessingOption> {
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

    /// ADDSOURCEMETADATA: `fields` (a list of `sourceFile`, `hostname`, `readTime`; all three
    /// by default) and `mode` (`FIELDS`, the default: added to a JSON object record; `WRAP`: around
    /// the record, as ADDMETADATA does).
    pub(super) fn source_metadata_option(&mut self, s: &Section, entry: &OptionEntry) -> Option<ProcessingOption> {
        const NAMES: [&str; 3] = ["sourceFile", "hostname", "readTime"];
        let json = self.json_format(s, entry);
        let mut fields = SourceFields { file: true, host: true, read_time: true };
        if let Some(v) = entry.get("fields") {
            let list = v.as_array().filter(|a| !a.is_empty()).map(|a| a.iter().map(Value::as_str).collect::<Vec<_>>());
            match list {
                Some(names) if names.iter().all(|n| n.is_some_and(|n| NAMES.contains(&n))) => {
                    let has = |name: &str| names.contains(&Some(name));
                    fields =
                        SourceFields { file: has("sourceFile"), host: has("hostname"), read_time: has("readTime") };
                }
                _ => {
                    let message = format!(
                        "must be a non-empty list of `sourceFile`, `hostname`, `readTime`, found {}",
                        shown("fields", v)
                    );
                    self.option_error(s, entry, "fields", message);
                    return None;
                }
            }
        }
        let wrap = match entry.get("mode") {
            None => false,
            Some(v) => match parse_choice("mode", v, &[("FIELDS", false), ("WRAP", true)]) {
                Ok(w) => w,
                Err(message) => {
                    self.option_error(s, entry, "mode", message);
                    return None;
                }
            },
        };
        Some(ProcessingOption::AddSourceMetadata { fields, wrap, json })
    }

    /// ADDEC2METADATA: `metadataTTL` in seconds (default 3600). As in the Java agent, a value that
    /// is not a whole number gives the default (with a notice), and `logFormat` is not used.
    pub(super) fn ec2_metadata_option(
        &mut self,
        s: &Section,
        entry: &OptionEntry,
        index: usize,
    ) -> Option<ProcessingOption> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::tests::*;

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
                    split: CsvSplit::Regex(crate::config::compile::csv_delimiter("\t").unwrap()),
                    json: JsonFormat::PrettyPrint
                },
                ProcessingOption::CsvToJson {
                    fields: vec!["a".into()],
                    split: CsvSplit::Quoted(b'|'),
                    json: JsonFormat::Compact
                },
                ProcessingOption::LogToJson {
                    matching: LogMatch::Format { format: LogFormat::Syslog, fields: None },
                    json: JsonFormat::Compact
                },
                ProcessingOption::LogToJson {
                    matching: LogMatch::Pattern {
                        pattern: crate::config::compile::match_pattern("(\\w+) (.*)").unwrap(),
                        fields: vec!["k".into(), "v".into()],
                        format: None
                    },
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
                "{}: must be `SINGLELINE`, `CSVTOJSON`, `LOGTOJSON`, `ADDMETADATA`, `ADDEC2METADATA`, `ADDBRACKETS`, `ADDSOURCEMETADATA` or `USINGPLUGGIN`, found \"singleline\" (values are case-sensitive: write `SINGLELINE`)",
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

    #[test]
    fn add_source_metadata_is_read() {
        assert_eq!(
            options(
                r#"[{"optionName": "ADDSOURCEMETADATA"},
                    {"optionName": "ADDSOURCEMETADATA", "fields": ["readTime", "sourceFile"], "mode": "WRAP"}]"#
            ),
            [
                ProcessingOption::AddSourceMetadata {
                    fields: SourceFields { file: true, host: true, read_time: true },
                    wrap: false,
                    json: JsonFormat::Compact
                },
                ProcessingOption::AddSourceMetadata {
                    fields: SourceFields { file: true, host: false, read_time: true },
                    wrap: true,
                    json: JsonFormat::Compact
                },
            ]
        );
        let e = option_errors(r#"[{"optionName": "ADDSOURCEMETADATA", "fields": ["path"], "mode": "wrap"}]"#);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("dataProcessingOptions[0].fields: must be a non-empty list of `sourceFile`"), "{e:?}");
        let e = option_errors(r#"[{"optionName": "ADDSOURCEMETADATA", "mode": "wrap"}]"#);
        assert!(e[0].contains("dataProcessingOptions[0].mode: must be `FIELDS` or `WRAP`"), "{e:?}");
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
}
