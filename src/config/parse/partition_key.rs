//! `partitionKeyOption`: the Java agent's names, or an object that derives the key from each
//! record.

use super::*;
use crate::config::KeyOrder;

/// `partitionKeyOption`: `"RANDOM"`, `"DETERMINISTIC"` or an object (see `DerivedKey`). An
/// error names the sub-key it is about, if any.
pub(super) fn parse_partition_key(v: &Value) -> Result<PartitionKeyOption, (Option<&'static str>, String)> {
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
            KeySource::Field(crate::config::compile::json_path(&path).map_err(|e| (Some("field"), e))?)
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
            let pattern = crate::config::compile::key_regex(&pattern, &group).map_err(|e| {
                let sub = if e.starts_with("`group`") { "group" } else { "regex" };
                (Some(sub), e)
            })?;
            KeySource::Regex { pattern, group }
        }
        _ => {
            let constant = string("constant")?.unwrap_or_default();
            // Cut to the longest key Kinesis takes, once, here.
            match crate::config::compile::clamp_key(&constant) {
                Some(key) => KeySource::Constant(key.to_owned()),
                None => {
                    return Err((Some("constant"), "is empty: a partition key needs 1 to 256 characters".to_owned()));
                }
            }
        }
    };
    let fallback = match string("fallback")?.as_deref() {
        None | Some("RANDOM") => KeyFallback::Random,
        Some("DETERMINISTIC") => KeyFallback::Deterministic,
        Some(other) => {
            return Err((Some("fallback"), format!("must be `RANDOM` or `DETERMINISTIC`, found {other:?}")));
        }
    };
    let explicit_hash_key_field = string("explicitHashKeyField")?
        .map(|p| crate::config::compile::json_path(&p))
        .transpose()
        .map_err(|e| (Some("explicitHashKeyField"), e))?;
    Ok(PartitionKeyOption::Derived(DerivedKey { source, fallback, explicit_hash_key_field }))
}

impl Loader {
    /// `ordering` (new): `PER_KEY` by default for keys derived from the records, which mean
    /// something; `NONE` for RANDOM and DETERMINISTIC keys, and refused with them.
    pub(super) fn ordering(&mut self, s: &Section, firehose: bool, key: &PartitionKeyOption) -> KeyOrder {
        let derived = matches!(key, PartitionKeyOption::Derived(_));
        if firehose {
            if s.has("ordering") {
                self.key_error(s, "ordering", "applies to `kinesisStream` flows only: Firehose has no partition keys");
            }
            return KeyOrder::None;
        }
        let choices = [("PER_KEY", KeyOrder::PerKey), ("NONE", KeyOrder::None)];
        match self.get(s, "ordering", |k, v| parse_choice(k, v, &choices)) {
            Some(KeyOrder::PerKey) if !derived => {
                let message = "`PER_KEY` needs a partition key taken from the records (`partitionKeyOption` \
                               {\"field\": ...}, {\"regex\": ...} or {\"constant\": ...}): RANDOM and \
                               DETERMINISTIC keys carry no meaning to keep an order for";
                self.key_error(s, "ordering", message);
                KeyOrder::None
            }
            Some(o) => o,
            None if derived => KeyOrder::PerKey,
            None => KeyOrder::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::tests::*;

    #[test]
    fn derived_partition_keys_are_read() {
        let flow = one_flow(r#", "partitionKeyOption": {"field": "$.request.host"}"#);
        assert_eq!(
            flow.partition_key,
            PartitionKeyOption::Derived(DerivedKey {
                source: crate::config::compile::field_key("$.request.host"),
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
                source: crate::config::compile::regex_key("user=(?P<u>\\w+)", CaptureGroup::Name("u".into())),
                fallback: KeyFallback::Deterministic,
                explicit_hash_key_field: Some(crate::config::compile::json_path("route.hash").unwrap()),
            })
        );
        let flow = one_flow(r#", "partitionKeyOption": {"regex": "id=(\\d+)"}"#);
        let PartitionKeyOption::Derived(d) = flow.partition_key else { panic!("derived") };
        assert_eq!(d.source, crate::config::compile::regex_key("id=(\\d+)", CaptureGroup::Index(1)));
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
    fn ordering_follows_the_key() {
        use crate::config::KeyOrder;
        assert_eq!(one_flow("").ordering, KeyOrder::None, "RANDOM keys mean nothing");
        assert_eq!(one_flow(r#", "partitionKeyOption": {"field": "k"}"#).ordering, KeyOrder::PerKey);
        assert_eq!(
            one_flow(r#", "partitionKeyOption": {"constant": "k"}, "ordering": "NONE""#).ordering,
            KeyOrder::None
        );
        let e = flow_error(r#", "partitionKeyOption": "DETERMINISTIC", "ordering": "PER_KEY""#);
        assert_eq!(e.location, "flows[0].ordering");
        assert!(e.message.contains("carry no meaning"), "{}", e.message);
        let e = flow_error(r#", "partitionKeyOption": {"field": "k"}, "ordering": "per-key""#);
        assert_eq!(e.location, "flows[0].ordering");
        assert!(e.message.contains("`PER_KEY` or `NONE`"), "{}", e.message);
        let text = r#"{"flows": [{"filePattern": "/a.log", "deliveryStream": "d", "ordering": "PER_KEY"}]}"#;
        let e = one_error(text);
        assert_eq!(e.location, "flows[0].ordering");
        assert!(e.message.contains("Firehose has no partition keys"), "{}", e.message);
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
}
