//! The rules by which configuration values compile, shared by the loader (which checks them, so
//! `--check-config` catches what a start would) and the stages that use the values: one
//! definition each, and `config` depends on no stage. Problems are messages that the loader turns
//! into a `ConfigError` naming the file and key.

use super::json_path::JsonPath;
use super::{CaptureGroup, LogFormat};

/// A value as written in agent.json and compiled once, when the configuration is read: the stages
/// get the compiled value (no second compilation that could fail), and configurations compare
/// and print by the text (a reload sees an unchanged regex as unchanged).
#[derive(Clone)]
pub struct Compiled<T> {
    text: Box<str>,
    value: T,
}

impl<T> Compiled<T> {
    fn new(text: &str, value: T) -> Compiled<T> {
        Compiled { text: text.into(), value }
    }

    /// The text as the configuration wrote it.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl<T> std::ops::Deref for Compiled<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> PartialEq for Compiled<T> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<T> Eq for Compiled<T> {}

impl<T> std::fmt::Debug for Compiled<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.text.fmt(f)
    }
}

impl<T> std::fmt::Display for Compiled<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.text.fmt(f)
    }
}

/// A JSON path (`$.a.b[0]`), compiled.
pub fn json_path(text: &str) -> Result<Compiled<JsonPath>, String> {
    JsonPath::parse(text).map(|p| Compiled::new(text, p))
}

/// `multiLineStartPattern` as matched against a line: anchored at its start (the user's `^`, if
/// any, is then harmless).
pub fn multi_line_start(pattern: &str) -> Result<Compiled<regex::bytes::Regex>, regex::Error> {
    regex::bytes::Regex::new(&format!("^(?:{pattern})")).map(|re| Compiled::new(pattern, re))
}

/// CSVTOJSON's `delimiter`: a regular expression, as in Java's `String.split`.
pub fn csv_delimiter(pattern: &str) -> Result<Compiled<regex::Regex>, regex::Error> {
    regex::Regex::new(pattern).map(|re| Compiled::new(pattern, re))
}

/// Most characters in a partition key (Kinesis counts Unicode characters).
pub const MAX_KEY_CHARS: usize = 256;

/// A `filePattern` as a glob: `*` and `?` stay within one path component, `**` crosses them, and
/// `\` escapes.
pub fn file_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern).literal_separator(true).backslash_escape(true).build()
}

/// `key` cut to `MAX_KEY_CHARS` characters (never inside a character); `None` when empty.
pub fn clamp_key(key: &str) -> Option<&str> {
    if key.is_empty() {
        return None;
    }
    match key.char_indices().nth(MAX_KEY_CHARS) {
        Some((cut, _)) => Some(&key[..cut]),
        None => Some(key),
    }
}

/// The regex of a `{"regex": ...}` key, checked: it compiles and has the group.
pub fn key_regex(pattern: &str, group: &CaptureGroup) -> Result<Compiled<regex::bytes::Regex>, String> {
    let re = regex::bytes::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("`regex` is not a valid regular expression: {e}"))?;
    let groups = re.captures_len() - 1;
    match group {
        CaptureGroup::Index(0) => {}
        CaptureGroup::Index(i) if *i > groups => {
            return Err(if groups == 0 {
                format!(
                    "`regex` {pattern:?} has no capture group: put the part that makes the key in parentheses, e.g. \"user=(\\\\w+)\""
                )
            } else {
                format!("`group` {i} does not exist: `regex` {pattern:?} has {groups} capture group(s)")
            });
        }
        CaptureGroup::Index(_) => {}
        CaptureGroup::Name(n) => {
            if !re.capture_names().flatten().any(|c| c == n) {
                return Err(format!("`group` {n:?} is not a named group of `regex` {pattern:?} (write (?P<{n}>...))"));
            }
        }
    }
    Ok(Compiled::new(pattern, re))
}

/// A LOGTOJSON `matchPattern`, matched against the whole record (as Java's `matches()`). CRLF
/// mode: `.` does not match `\r`, as in Java.
pub fn match_pattern(pattern: &str) -> Result<Compiled<regex::Regex>, regex::Error> {
    regex::RegexBuilder::new(&format!(r"\A(?:{pattern})\z")).crlf(true).build().map(|re| Compiled::new(pattern, re))
}

/// Names the Java agent gives each format's groups.
const COMMON_FIELDS: [&str; 7] = ["host", "ident", "authuser", "datetime", "request", "response", "bytes"];
const COMBINED_FIELDS: [&str; 9] =
    ["host", "ident", "authuser", "datetime", "request", "response", "bytes", "referer", "agent"];
const ERROR_FIELDS: [&str; 7] = ["timestamp", "module", "severity", "processid", "threadid", "client", "message"];
const SYSLOG_FIELDS: [&str; 5] = ["timestamp", "hostname", "program", "processid", "message"];

/// The default field names of a format.
pub fn default_fields(format: LogFormat) -> &'static [&'static str] {
    match format {
        LogFormat::CommonApacheLog => &COMMON_FIELDS,
        LogFormat::CombinedApacheLog => &COMBINED_FIELDS,
        LogFormat::ApacheErrorLog => &ERROR_FIELDS,
        LogFormat::Syslog | LogFormat::Rfc3339Syslog => &SYSLOG_FIELDS,
    }
}

/// `log.maxFileSize` as log4j wrote it: `10MB`, `512KB`, `1GB`, or plain bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_uppercase();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t.as_str(), ""),
    };
    let n: u64 = digits.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KB" | "K" | "KIB" => 1 << 10,
        "MB" | "M" | "MIB" => 1 << 20,
        "GB" | "G" | "GIB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&b| b > 0)
}

/// Test shorthands for derived-key sources (the patterns must be valid).
#[cfg(test)]
pub fn field_key(path: &str) -> super::KeySource {
    super::KeySource::Field(json_path(path).unwrap())
}

#[cfg(test)]
pub fn regex_key(pattern: &str, group: CaptureGroup) -> super::KeySource {
    super::KeySource::Regex { pattern: key_regex(pattern, &group).unwrap(), group }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_key_rules_are_explained() {
        let err = |pattern: &str, group: CaptureGroup| key_regex(pattern, &group).unwrap_err();
        assert!(err("user=\\w+", CaptureGroup::Index(1)).contains("has no capture group"));
        assert!(err("(a)(b", CaptureGroup::Index(1)).contains("not a valid regular expression"));
        assert!(err("(a)", CaptureGroup::Index(2)).contains("has 1 capture group"));
        assert!(err("(a)", CaptureGroup::Name("x".into())).contains("not a named group"));
        let err = |path: &str| json_path(path).unwrap_err();
        assert!(err("$.a[").contains("without its `]`"));
        assert!(err("$.a..b").contains("empty field name"));
        assert!(err("$").contains("names no field"));
        assert!(err("$.a[x]").contains("array index"));
    }

    #[test]
    fn sizes_as_log4j_wrote_them() {
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("512kb"), Some(512 << 10));
        assert_eq!(parse_size("1 GB"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("10XB"), None);
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size(""), None);
    }
}
