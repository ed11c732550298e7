//! JSON text exactly as the Java agent's Jackson printers write it: keys in insertion order,
//! `\u00XX` escapes in upper-case hex, non-ASCII written raw, numbers as Java prints them, and
//! the PRETTYPRINT layout (`"key" : value`, two-space indent, inline arrays `[ 1, 2 ]`).

use serde_json::Value;

use crate::config::JsonFormat;

/// A field value of a converter's output.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    Null,
    Str(&'a str),
    Json(&'a Value),
}

/// An object under construction: a key set again keeps its first place and takes the last
/// value (Java's `LinkedHashMap`).
#[derive(Debug, Default)]
pub struct Object<'a> {
    entries: Vec<(&'a str, Field<'a>)>,
}

impl<'a> Object<'a> {
    pub fn with_capacity(n: usize) -> Self {
        Object { entries: Vec::with_capacity(n) }
    }

    pub fn put(&mut self, key: &'a str, value: Field<'a>) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// The object's text followed by the record's `\n`.
    pub fn to_record(&self, format: JsonFormat) -> String {
        let mut out = String::with_capacity(64 + self.entries.iter().map(|(k, _)| k.len() + 16).sum::<usize>());
        let pretty = format == JsonFormat::PrettyPrint;
        out.push('{');
        for (i, (key, value)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if pretty {
                newline(&mut out, 1);
            }
            string(&mut out, key);
            out.push_str(if pretty { " : " } else { ":" });
            match value {
                Field::Null => out.push_str("null"),
                Field::Str(s) => string(&mut out, s),
                Field::Json(v) => value_text(&mut out, v, pretty, 1),
            }
        }
        close_object(&mut out, self.entries.is_empty(), pretty, 0);
        out.push('\n');
        out
    }
}

/// A whole JSON object as a record: its text followed by `\n`.
pub fn object_record(map: &serde_json::Map<String, Value>, format: JsonFormat) -> String {
    let mut out = String::with_capacity(256);
    value_text(&mut out, &Value::Object(map.clone()), format == JsonFormat::PrettyPrint, 0);
    out.push('\n');
    out
}

fn newline(out: &mut String, level: usize) {
    out.push('\n');
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn close_object(out: &mut String, empty: bool, pretty: bool, level: usize) {
    if pretty {
        if empty {
            out.push(' ');
        } else {
            newline(out, level);
        }
    }
    out.push('}');
}

/// `level`: objects open around this value (arrays do not indent).
fn value_text(out: &mut String, v: &Value, pretty: bool, level: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => number(out, n),
        Value::String(s) => string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if pretty {
                    out.push(' ');
                }
                value_text(out, item, pretty, level);
            }
            if pretty {
                out.push(' ');
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if pretty {
                    newline(out, level + 1);
                }
                string(out, key);
                out.push_str(if pretty { " : " } else { ":" });
                value_text(out, item, pretty, level + 1);
            }
            close_object(out, map.is_empty(), pretty, level);
        }
    }
}

fn string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0C => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        start = i + 1;
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        } else {
            out.push_str(short);
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Integers exactly; other numbers as Java's `Double.toString`.
fn number(out: &mut String, n: &serde_json::Number) {
    if n.is_i64() || n.is_u64() {
        out.push_str(&n.to_string());
    } else if let Some(f) = n.as_f64() {
        out.push_str(&java_double(f));
    }
}

/// Java's `Double.toString`: plain between 10^-3 and 10^7 (`1.0`, `0.001`), otherwise
/// computerized scientific notation (`1.0E-4`, `1.23456789E7`).
pub fn java_double(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let a = f.abs();
    if (1e-3..1e7).contains(&a) {
        let s = format!("{f}");
        if s.contains('.') { s } else { s + ".0" }
    } else {
        // Shortest digits, as `1.2345e7`; Java wants at least one fractional digit.
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').expect("exponent form");
        let mantissa = if mantissa.contains('.') { mantissa.to_owned() } else { format!("{mantissa}.0") };
        format!("{mantissa}E{exp}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_as_jackson() {
        let mut out = String::new();
        string(&mut out, "q\" b\\ \n\r\t\x08\x0c\x01\x1f\x7f / \u{2028} é 😀");
        assert_eq!(out, "\"q\\\" b\\\\ \\n\\r\\t\\b\\f\\u0001\\u001F\x7f / \u{2028} é 😀\"");
    }

    #[test]
    fn doubles_as_java() {
        let cases = [
            (1.0, "1.0"),
            (1e-7, "1.0E-7"),
            (1e21, "1.0E21"),
            (12345678.9, "1.23456789E7"),
            (1e-4, "1.0E-4"),
            (0.001, "0.001"),
            (-0.0, "-0.0"),
            (1234567.5, "1234567.5"),
            (1e7, "1.0E7"),
            (-2.5e-10, "-2.5E-10"),
            (0.1, "0.1"),
        ];
        for (f, want) in cases {
            assert_eq!(java_double(f), want, "{f}");
        }
    }

    #[test]
    fn compact_and_pretty() {
        let meta = json!({"env": "prod", "n": [1, 2.5, {"a": null}], "e": {}, "l": [], "big": 18446744073709551615u64});
        let mut o = Object::default();
        o.put("ts", Field::Null);
        o.put("metadata", Field::Json(&meta));
        o.put("data", Field::Str("x"));
        assert_eq!(
            o.to_record(JsonFormat::Compact),
            "{\"ts\":null,\"metadata\":{\"env\":\"prod\",\"n\":[1,2.5,{\"a\":null}],\"e\":{},\"l\":[],\"big\":18446744073709551615},\"data\":\"x\"}\n"
        );
        let pretty = "{\n  \"ts\" : null,\n  \"metadata\" : {\n    \"env\" : \"prod\",\n    \"n\" : [ 1, 2.5, {\n      \"a\" : null\n    } ],\n    \"e\" : { },\n    \"l\" : [ ],\n    \"big\" : 18446744073709551615\n  },\n  \"data\" : \"x\"\n}\n";
        assert_eq!(o.to_record(JsonFormat::PrettyPrint), pretty);
        assert_eq!(Object::default().to_record(JsonFormat::PrettyPrint), "{ }\n");
    }

    #[test]
    fn a_repeated_key_keeps_its_place_and_takes_the_last_value() {
        let mut o = Object::default();
        o.put("a", Field::Str("1"));
        o.put("b", Field::Str("2"));
        o.put("a", Field::Str("3"));
        assert_eq!(o.to_record(JsonFormat::Compact), "{\"a\":\"3\",\"b\":\"2\"}\n");
    }
}
