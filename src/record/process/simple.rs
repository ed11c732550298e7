//! SINGLELINE, ADDMETADATA and ADDBRACKETS.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

use super::json::{Field, Object};
use super::text::java_trim;
use crate::config::JsonFormat;

/// SINGLELINE: split on `\n` (trailing empty lines vanish), trim each line unless `no_trim`,
/// join with nothing or with the three characters `\\n`, end with `\n`.
pub fn single_line(record: &str, no_trim: bool, escape_new_line: bool) -> String {
    let mut lines: Vec<&str> = record.split('\n').collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let separator = if escape_new_line { "\\\\n" } else { "" };
    let mut out = String::with_capacity(record.len() + 1);
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        out.push_str(if no_trim { line } else { java_trim(line) });
    }
    out.push('\n');
    out
}

/// ADDMETADATA: `{"ts"?, "metadata", "data"}` with the record (without its last `\n`) as `data`.
pub fn add_metadata(record: &str, metadata: &Value, timestamp: bool, json: JsonFormat) -> String {
    let data = record.strip_suffix('\n').unwrap_or(record);
    let ts;
    let mut object = Object::with_capacity(3);
    if timestamp {
        ts = utc_millis(SystemTime::now());
        object.put("ts", Field::Str(&ts));
    }
    object.put("metadata", Field::Json(metadata));
    object.put("data", Field::Str(data));
    object.to_record(json)
}

/// ADDSOURCEMETADATA: `values` added after the fields of a JSON object record (a field of the
/// same name takes the new value in place), or with `wrap` around the record:
/// `{<values>,"data":"<the record without its newline>"}`. `None`: not a JSON object (and not
/// `wrap`).
pub fn add_fields(record: &str, values: &[(&str, &str)], wrap: bool, json: JsonFormat) -> Option<String> {
    if wrap {
        let data = record.strip_suffix('\n').unwrap_or(record);
        let mut object = Object::with_capacity(values.len() + 1);
        for (k, v) in values {
            object.put(k, Field::Str(v));
        }
        object.put("data", Field::Str(data));
        return Some(object.to_record(json));
    }
    let mut de = serde_json::Deserializer::from_str(record);
    let mut map = serde_json::Map::<String, Value>::deserialize(&mut de).ok()?;
    for (k, v) in values {
        map.insert((*k).to_owned(), Value::String((*v).to_owned()));
    }
    Some(super::json::object_record(&map, json))
}

/// ADDBRACKETS: `{` + the record, newline included + `}`.
pub fn add_brackets(record: &str) -> String {
    format!("{{{record}}}")
}

/// `yyyy-MM-ddTHH:mm:ss.SSSZ` in UTC.
pub fn utc_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn single_line_joins_trimmed_lines() {
        let record = "java.lang.Error: boom\n\tat a.B.c(B.java:1)\r\n  at d.E.f(E.java:2)  \n";
        assert_eq!(single_line(record, false, false), "java.lang.Error: boomat a.B.c(B.java:1)at d.E.f(E.java:2)\n");
        assert_eq!(
            single_line(record, false, true),
            "java.lang.Error: boom\\\\nat a.B.c(B.java:1)\\\\nat d.E.f(E.java:2)\n"
        );
        assert_eq!(
            single_line(record, true, true),
            "java.lang.Error: boom\\\\n\tat a.B.c(B.java:1)\r\\\\n  at d.E.f(E.java:2)  \n"
        );
        // Trailing empty lines vanish; a blank line (before trimming) stays.
        assert_eq!(single_line("a\n  \n\n\n", false, true), "a\\\\n\n");
        assert_eq!(single_line("\n", false, true), "\n");
        assert_eq!(single_line("", false, false), "\n");
        assert_eq!(single_line("\nx\n", false, true), "\\\\nx\n");
        // NBSP and U+3000 are not trimmed, controls are.
        assert_eq!(single_line("\u{a0}ü\u{3000}\x01\n", false, false), "\u{a0}ü\u{3000}\n");
    }

    #[test]
    fn metadata_wraps_the_record() {
        let meta = serde_json::json!({"env": "prod", "rack": 7, "w": 0.5});
        assert_eq!(
            add_metadata("GET / 200\n", &meta, false, JsonFormat::Compact),
            "{\"metadata\":{\"env\":\"prod\",\"rack\":7,\"w\":0.5},\"data\":\"GET / 200\"}\n"
        );
        let out = add_metadata("{\"a\":1}\n", &Value::Null, true, JsonFormat::Compact);
        let re = regex::Regex::new(
            r#"\A\{"ts":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","metadata":null,"data":"\{\\"a\\":1\}"\}\n\z"#,
        )
        .unwrap();
        assert!(re.is_match(&out), "{out}");
        assert_eq!(
            add_metadata("x\r\n", &Value::Null, false, JsonFormat::Compact),
            "{\"metadata\":null,\"data\":\"x\\r\"}\n"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_millis(UNIX_EPOCH + Duration::from_millis(951_782_400_123)), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc_millis(UNIX_EPOCH + Duration::from_millis(1_795_233_386_007)), "2026-11-21T03:56:26.007Z");
    }

    #[test]
    fn brackets() {
        assert_eq!(add_brackets("a\n"), "{a\n}");
    }
}
