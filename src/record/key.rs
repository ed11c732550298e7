//! Keys taken from the records. (RANDOM and DETERMINISTIC keys are computed when a request is
//! built, `types::key`: records carry none, as RANDOM needs no stability across retries and
//! DETERMINISTIC is a function of the data.) Derived keys (a JSON field, a regex capture, a constant) are computed once, by the
//! tailer, and travel with the record (`Record::key`), so retries and aggregation see the same key.

use crate::config::compile::clamp_key;
use crate::config::json_path::JsonPath;
use crate::config::{CaptureGroup, DerivedKey, KeyFallback, KeySource};
use crate::types::key::{RecordKey, hex, random_key};
use crate::types::record::Record;
use md5::{Digest, Md5};
use rand::Rng;

/// A JSON value as key text: strings as they are, numbers and booleans as written; anything
/// else (null, objects, arrays) has no key text.
fn value_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An explicit hash key: a decimal integer below 2^128 (a string of digits, or a JSON number).
fn explicit_hash(v: &serde_json::Value) -> Option<u128> {
    match v {
        serde_json::Value::String(s) => {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse::<u128>().ok()
        }
        serde_json::Value::Number(n) => n.as_u64().map(u128::from),
        _ => None,
    }
}

enum Source {
    Field(JsonPath),
    Regex(regex::bytes::Regex, CaptureGroup),
    Constant(Box<str>),
}

/// What deriving the keys of some records ran into, for the flow's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyStats {
    /// Records that got the fallback key.
    pub fallbacks: u64,
    /// Records whose explicit hash key field was missing or invalid.
    pub invalid_hash_keys: u64,
}

/// A flow's derived-key rule, compiled.
pub struct KeyDeriver {
    source: Source,
    fallback: KeyFallback,
    explicit_hash: Option<JsonPath>,
}

impl std::fmt::Debug for KeyDeriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDeriver")
    }
}

impl KeyDeriver {
    /// The deriver of a flow's key option (compiled when the configuration was read).
    pub fn new(cfg: &DerivedKey) -> KeyDeriver {
        let source = match &cfg.source {
            KeySource::Field(path) => Source::Field((**path).clone()),
            KeySource::Regex { pattern, group } => Source::Regex((**pattern).clone(), group.clone()),
            KeySource::Constant(c) => Source::Constant(c.as_str().into()),
        };
        let explicit_hash = cfg.explicit_hash_key_field.as_ref().map(|p| (**p).clone());
        KeyDeriver { source, fallback: cfg.fallback, explicit_hash }
    }

    /// Keys taken from the raw lines (regex), before `dataProcessingOptions` run. Records that
    /// do not match are left without a key for `after_processing` to give them the fallback.
    pub fn before_processing(&self, records: &mut [Record]) {
        let Source::Regex(re, group) = &self.source else { return };
        for r in records {
            let line = trim_newline(&r.data);
            let Some(caps) = re.captures(line) else { continue };
            let m = match group {
                CaptureGroup::Index(i) => caps.get(*i),
                CaptureGroup::Name(n) => caps.name(n),
            };
            let Some(m) = m else { continue };
            let text = String::from_utf8_lossy(m.as_bytes());
            if let Some(k) = clamp_key(&text) {
                r.key = Some(Box::new(RecordKey { partition: k.into(), explicit_hash: None }));
            }
        }
    }

    /// Keys taken from the processed records (JSON field, constant, explicit hash key), and the
    /// fallback for every record still without a key.
    pub fn after_processing(&self, records: &mut [Record], rng: &mut impl Rng) -> KeyStats {
        let mut stats = KeyStats::default();
        let needs_json = matches!(self.source, Source::Field(_)) || self.explicit_hash.is_some();
        for r in records {
            let json: Option<serde_json::Value> =
                if needs_json { serde_json::from_slice(trim_newline(&r.data)).ok() } else { None };
            match &self.source {
                Source::Field(path) => {
                    let text = json.as_ref().and_then(|j| path.get(j)).and_then(value_text);
                    if let Some(k) = text.as_deref().and_then(clamp_key) {
                        r.key = Some(Box::new(RecordKey { partition: k.into(), explicit_hash: None }));
                    }
                }
                Source::Constant(c) => {
                    r.key = Some(Box::new(RecordKey { partition: c.clone(), explicit_hash: None }));
                }
                Source::Regex(..) => {}
            }
            if r.key.is_none() {
                stats.fallbacks += 1;
                let partition = match self.fallback {
                    KeyFallback::Random => random_key(rng),
                    KeyFallback::Deterministic => hex(&Md5::digest(&r.data)),
                };
                r.key = Some(Box::new(RecordKey { partition: partition.into(), explicit_hash: None }));
            }
            if let Some(path) = &self.explicit_hash {
                match json.as_ref().and_then(|j| path.get(j)).and_then(explicit_hash) {
                    Some(h) => r.key.as_mut().expect("set above").explicit_hash = Some(h),
                    None => stats.invalid_hash_keys += 1,
                }
            }
        }
        stats
    }
}

/// A line without its trailing `\n` or `\r\n`.
fn trim_newline(data: &[u8]) -> &[u8] {
    let d = data.strip_suffix(b"\n").unwrap_or(data);
    d.strip_suffix(b"\r").unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile::MAX_KEY_CHARS;
    use crate::config::{CsvSplit, JsonFormat, ProcessingOption};
    use crate::record::process::Processor;
    use crate::types::key::{RANDOM_KEY_LEN, hash_of};
    use crate::types::record::Origin;

    fn rec(text: &str) -> Record {
        Record { data: bytes::Bytes::copy_from_slice(text.as_bytes()), origin: Origin { file: 0, chunk: 0 }, key: None }
    }

    fn derived(source: KeySource) -> DerivedKey {
        DerivedKey { source, fallback: KeyFallback::Random, explicit_hash_key_field: None }
    }

    fn keys(d: &KeyDeriver, records: &mut [Record]) -> (Vec<String>, KeyStats) {
        d.before_processing(records);
        let stats = d.after_processing(records, &mut rand::rng());
        (records.iter().map(|r| r.key.as_ref().unwrap().partition.to_string()).collect(), stats)
    }

    #[test]
    fn json_field_is_read_after_csvtojson() {
        let processor = Processor::new(&[ProcessingOption::CsvToJson {
            fields: vec!["host".into(), "user".into()],
            split: CsvSplit::Regex(crate::config::compile::csv_delimiter(",").unwrap()),
            json: JsonFormat::Compact,
        }])
        .unwrap();
        let d = KeyDeriver::new(&derived(crate::config::compile::field_key("$.user")));
        let mut records = vec![rec("web-1,alice\n"), rec("web-2,bob\n"), rec("web-3\n")];
        for r in &mut records {
            r.data = processor.apply(&r.data).unwrap().into();
        }
        let (k, stats) = keys(&d, &mut records);
        assert_eq!(&k[..2], ["alice", "bob"]);
        // The third line has no user column: null, so the fallback (a RANDOM key), counted.
        assert_eq!(k[2].len(), RANDOM_KEY_LEN);
        assert_eq!(stats, KeyStats { fallbacks: 1, invalid_hash_keys: 0 });
    }

    #[test]
    fn json_paths_reach_nested_fields_and_array_items() {
        let text =
            r#"{"request": {"host": "a.example", "port": 443, "tls": true}, "items": [{"id": "x"}], "a.b": "dotted"}"#;
        for (path, want) in [
            ("$.request.host", "a.example"),
            ("request.host", "a.example"),
            ("$.request.port", "443"),
            ("$['request'].tls", "true"),
            ("$.items[0].id", "x"),
            ("$['a.b']", "dotted"),
            ("[\"a.b\"]", "dotted"),
        ] {
            let d = KeyDeriver::new(&derived(crate::config::compile::field_key(path)));
            let (k, stats) = keys(&d, &mut [rec(&format!("{text}\n"))]);
            assert_eq!((k[0].as_str(), stats.fallbacks), (want, 0), "{path}");
        }
    }

    #[test]
    fn missing_fields_and_non_json_records_fall_back_and_are_counted() {
        let d = KeyDeriver::new(&DerivedKey {
            source: crate::config::compile::field_key("$.user.id"),
            fallback: KeyFallback::Deterministic,
            explicit_hash_key_field: None,
        });
        let lines = [
            "{\"user\": {\"id\": 7}}\n",
            "{\"user\": {}}\n",
            "not json\n",
            "{\"user\": {\"id\": null}}\n",
            "{\"user\": {\"id\": {\"deep\": 1}}}\n",
            "{\"user\": {\"id\": \"\"}}\n",
        ];
        let mut records: Vec<Record> = lines.iter().map(|l| rec(l)).collect();
        let (k, stats) = keys(&d, &mut records);
        assert_eq!(k[0], "7");
        for (i, l) in lines.iter().enumerate().skip(1) {
            assert_eq!(k[i], hex(&Md5::digest(l.as_bytes())), "{l}: DETERMINISTIC fallback");
        }
        assert_eq!(stats.fallbacks, 5);
    }

    #[test]
    fn regex_capture_on_the_raw_line() {
        let d = KeyDeriver::new(&derived(crate::config::compile::regex_key(r"user=(\w+)", CaptureGroup::Index(1))));
        let mut records = vec![rec("GET / user=alice x\n"), rec("no user here\n"), rec("user=bob\r\n")];
        let (k, stats) = keys(&d, &mut records);
        assert_eq!((k[0].as_str(), k[2].as_str()), ("alice", "bob"));
        assert_eq!(k[1].len(), RANDOM_KEY_LEN);
        assert_eq!(stats.fallbacks, 1);
        // By name; and the key is taken from the raw line even if processing rewrites it.
        let d = KeyDeriver::new(&derived(crate::config::compile::regex_key(
            r"^(?P<host>\S+) ",
            CaptureGroup::Name("host".into()),
        )));
        let mut records = vec![rec("10.0.0.1 - - GET\n")];
        d.before_processing(&mut records);
        records[0].data = bytes::Bytes::from_static(b"{\"converted\": 1}\n");
        d.after_processing(&mut records, &mut rand::rng());
        assert_eq!(&*records[0].key.as_ref().unwrap().partition, "10.0.0.1");
    }

    #[test]
    fn constant_keys() {
        let d = KeyDeriver::new(&derived(KeySource::Constant("web-1".into())));
        let (k, stats) = keys(&d, &mut [rec("a\n"), rec("b\n")]);
        assert_eq!(k, ["web-1", "web-1"]);
        assert_eq!(stats.fallbacks, 0);
    }

    #[test]
    fn long_keys_are_cut_at_a_character_boundary_and_empty_ones_fall_back() {
        // 300 characters, most of them two or three bytes long.
        let long: String = "é日a".repeat(100);
        assert_eq!(long.chars().count(), 300);
        let d = KeyDeriver::new(&derived(crate::config::compile::field_key("k")));
        let line = serde_json::json!({ "k": long }).to_string() + "\n";
        let (k, stats) = keys(&d, &mut [rec(&line), rec("{\"k\": \"\"}\n")]);
        assert_eq!(k[0].chars().count(), MAX_KEY_CHARS);
        assert_eq!(k[0], long.chars().take(256).collect::<String>());
        assert!(long.starts_with(&k[0]));
        assert_eq!(k[1].len(), RANDOM_KEY_LEN, "an empty key falls back");
        assert_eq!(stats.fallbacks, 1);
        assert_eq!(clamp_key(""), None);
        assert_eq!(clamp_key("abc"), Some("abc"));
    }

    #[test]
    fn explicit_hash_keys_from_a_field() {
        let d = KeyDeriver::new(&DerivedKey {
            source: crate::config::compile::field_key("$.k"),
            fallback: KeyFallback::Random,
            explicit_hash_key_field: Some(crate::config::compile::json_path("$.h").unwrap()),
        });
        let max = u128::MAX.to_string();
        let over = "340282366920938463463374607431768211456"; // 2^128
        let lines = [
            format!("{{\"k\": \"a\", \"h\": \"{max}\"}}\n"),
            "{\"k\": \"b\", \"h\": 12}\n".to_string(),
            format!("{{\"k\": \"c\", \"h\": \"{over}\"}}\n"),
            "{\"k\": \"d\", \"h\": \"-1\"}\n".to_string(),
            "{\"k\": \"e\"}\n".to_string(),
        ];
        let mut records: Vec<Record> = lines.iter().map(|l| rec(l)).collect();
        let (_, stats) = keys(&d, &mut records);
        let hashes: Vec<Option<u128>> = records.iter().map(|r| r.key.as_ref().unwrap().explicit_hash).collect();
        assert_eq!(hashes, [Some(u128::MAX), Some(12), None, None, None]);
        assert_eq!(stats, KeyStats { fallbacks: 0, invalid_hash_keys: 3 });
        // Without an explicit hash key, the record goes where MD5 of its key says.
        assert_eq!(records[2].key.as_ref().unwrap().hash(), hash_of("c"));
    }

    #[test]
    fn hash_of_matches_kinesis() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(hash_of("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }
}
