//! LOGTOJSON: a record matched whole against a log format (or `matchPattern`), its groups
//! written as JSON fields. The built-in formats follow the Java agent's patterns group for
//! group, with the character classes spelled out in ASCII (Java's `\w`, `\d`, `\s` are ASCII),
//! so every line the Java agent converts gives the same fields. Lines it drops only through a
//! quirk are converted here: a CRLF ending is stripped, IPv6 hosts and clients match, a syslog
//! priority without a dot (`<13>`) matches, and U+0085/U+2028/U+2029 count as ordinary characters.

use regex::Regex;

use super::json::{Field, Object};
use crate::config::compile::default_fields;
use crate::config::{JsonFormat, LogFormat, LogMatch};

const INT: &str = r"[+-]?[0-9]+";
const POSINT: &str = r"[1-9][0-9]*";
const NONNEGINT: &str = r"[0-9]+";
const WORD: &str = r"[0-9A-Za-z_]+";
/// Java's `\s`.
const SP: &str = r"[ \t\n\x0B\x0C\r]";
const IP: &str = r"[0-9.]+";
const HOSTNAME: &str = r"[0-9A-Za-z_-]+(?:\.[0-9A-Za-z_-]+)*\.?";
/// Not in the Java patterns (which never match IPv6): tried last, so it only matters for lines
/// Java drops.
const IPV6: &str = r"[0-9A-Fa-f]*:[0-9A-Fa-f:.]*";
const USER: &str = r"[a-zA-Z0-9._-]+";
const MONTHDAY: &str = r"(?:0[1-9]|[12][0-9]|3[01]|[1-9])";
const DAY: &str = r"(?:Mon(?:day)?|Tue(?:sday)?|Wed(?:nesday)?|Thu(?:rsday)?|Fri(?:day)?|Sat(?:urday)?|Sun(?:day)?)";
const MONTH: &str = r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?|Aug(?:ust)?|Sep(?:tember)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)";
const YEAR: &str = r"[1-9][0-9]*";
const TIME: &str = r"(?:2[0123]|[01]?[0-9]):[0-5][0-9]:(?:[0-5]?[0-9]|60)(?:[:.,][0-9]+)?";
const RFC3339: &str = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[-+][0-9]{2}:[0-9]{2})";
/// Java's `.`: not a line terminator.
const ANYCHAR: &str = r"[^\n\r\x{85}\x{2028}\x{2029}]";
fn format_pattern(format: LogFormat) -> String {
    let iporhost = format!("(?:{HOSTNAME}|{IP}|{IPV6})");
    let common = format!(
        r#"({iporhost}) ({USER}) ({USER}) \[({MONTHDAY}/{MONTH}/{YEAR}:{TIME}{SP}{INT})\] "([^"]+)" ({INT}|-) ({INT}|-)"#
    );
    let syslog_tail = format!(
        r"(?:<{NONNEGINT}{ANYCHAR}{NONNEGINT}> |<{NONNEGINT}> )?({USER}) ([0-9A-Za-z_./%-]+)(?:\[({POSINT})\])?: (.*)"
    );
    let body = match format {
        LogFormat::CommonApacheLog => format!("{common}.*"),
        LogFormat::CombinedApacheLog => format!(r#"{common} "([^"]+)" "([^"]+)".*"#),
        LogFormat::ApacheErrorLog => format!(
            r"\[({DAY}{SP}+{MONTH}{SP}+{MONTHDAY}{SP}+{TIME}{SP}+{YEAR})\] \[(?:({WORD}):)?({WORD})\] \[pid ({NONNEGINT})(?::tid ({NONNEGINT}))?\] \[client ({iporhost}(?::{POSINT})?)\] (.*)"
        ),
        LogFormat::Syslog => format!(r"({MONTH}{SP}+{MONTHDAY}{SP}+{TIME}) {syslog_tail}"),
        LogFormat::Rfc3339Syslog => format!(r"({RFC3339}) {syslog_tail}"),
    };
    format!(r"\A(?:{body})\z")
}

#[derive(Debug)]
pub struct LogParser {
    re: Regex,
    fields: Vec<String>,
    /// `-` becomes `null` (the Apache formats).
    dash_is_null: bool,
    /// A user's `matchPattern` sees a line's `\r` (as in Java, where it may capture it).
    keep_cr: bool,
    json: JsonFormat,
}

impl LogParser {
    /// The parser of a LOGTOJSON option (the configuration compiled its pattern and checked that
    /// there is a name per group).
    pub fn new(matching: &LogMatch, json: JsonFormat) -> LogParser {
        match matching {
            LogMatch::Format { format, fields } => LogParser {
                re: Regex::new(&format_pattern(*format)).expect("built-in log pattern"),
                fields: match fields {
                    Some(names) => names.clone(),
                    None => default_fields(*format).iter().map(|s| s.to_string()).collect(),
                },
                dash_is_null: format.is_apache(),
                keep_cr: false,
                json,
            },
            LogMatch::Pattern { pattern, fields, format } => LogParser {
                re: (**pattern).clone(),
                fields: fields.clone(),
                dash_is_null: format.is_some_and(LogFormat::is_apache),
                keep_cr: true,
                json,
            },
        }
    }

    /// The record as JSON, or `None` when it does not match (dropped).
    pub fn convert(&self, record: &str) -> Option<String> {
        let line = record.strip_suffix('\n').unwrap_or(record);
        let without_cr = line.strip_suffix('\r');
        // A `\r` the built-in formats never match (Java drops such lines): matched without it. A
        // user's pattern gets the line as Java gives it, then, if that fails, without the `\r`.
        let caps = match without_cr {
            Some(bare) if !self.keep_cr => self.re.captures(bare)?,
            Some(bare) => self.re.captures(line).or_else(|| self.re.captures(bare))?,
            None => self.re.captures(line)?,
        };
        let mut object = Object::with_capacity(self.fields.len());
        for (i, name) in self.fields.iter().enumerate() {
            let value = match caps.get(i + 1) {
                None => Field::Null,
                Some(m) if self.dash_is_null && m.as_str() == "-" => Field::Null,
                Some(m) => Field::Str(m.as_str()),
            };
            object.put(name, value);
        }
        Some(object.to_record(self.json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(format: LogFormat) -> LogParser {
        LogParser::new(&LogMatch::Format { format, fields: None }, JsonFormat::Compact)
    }

    fn with_pattern(format: Option<LogFormat>, pattern: &str, names: &[String], json: JsonFormat) -> LogParser {
        let pattern = crate::config::compile::match_pattern(pattern).unwrap();
        LogParser::new(&LogMatch::Pattern { pattern, fields: names.to_vec(), format }, json)
    }

    fn conv(format: LogFormat, line: &str) -> Option<String> {
        parser(format).convert(line)
    }

    #[test]
    fn common_apache_log() {
        let line = "192.168.1.10 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" 200 2326\n";
        assert_eq!(
            conv(LogFormat::CommonApacheLog, line).unwrap(),
            "{\"host\":\"192.168.1.10\",\"ident\":null,\"authuser\":\"frank\",\"datetime\":\"10/Oct/2000:13:55:36 -0700\",\"request\":\"GET /apache_pb.gif HTTP/1.0\",\"response\":\"200\",\"bytes\":\"2326\"}\n"
        );
        // Trailing text is allowed; `-` bytes is null; a host name.
        let line = "www.example.com - - [01/Jan/2024:00:00:00 +0000] \"HEAD / HTTP/1.1\" 304 - extra stuff\n";
        assert_eq!(
            conv(LogFormat::CommonApacheLog, line).unwrap(),
            "{\"host\":\"www.example.com\",\"ident\":null,\"authuser\":null,\"datetime\":\"01/Jan/2024:00:00:00 +0000\",\"request\":\"HEAD / HTTP/1.1\",\"response\":\"304\",\"bytes\":null}\n"
        );
        // An empty request does not match: dropped.
        assert_eq!(conv(LogFormat::CommonApacheLog, "1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] \"\" 400 0\n"), None);
        assert_eq!(conv(LogFormat::CommonApacheLog, "not a log line\n"), None);
        assert_eq!(conv(LogFormat::CommonApacheLog, "\n"), None);
    }

    #[test]
    fn combined_apache_log() {
        let line = "203.0.113.7 - alice [22/Nov/2026:03:56:26 +0100] \"POST /api/v1/items?id=42 HTTP/2.0\" 201 512 \"https://example.com/start\" \"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/119.0\"\n";
        assert_eq!(
            conv(LogFormat::CombinedApacheLog, line).unwrap(),
            "{\"host\":\"203.0.113.7\",\"ident\":null,\"authuser\":\"alice\",\"datetime\":\"22/Nov/2026:03:56:26 +0100\",\"request\":\"POST /api/v1/items?id=42 HTTP/2.0\",\"response\":\"201\",\"bytes\":\"512\",\"referer\":\"https://example.com/start\",\"agent\":\"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/119.0\"}\n"
        );
        // `-` referer is null; an empty agent drops the line, as in Java.
        let dash = "10.0.0.1 - - [22/Nov/2026:03:56:26 +0000] \"GET / HTTP/1.1\" 200 10 \"-\" \"curl/8.5.0\"\n";
        assert!(
            conv(LogFormat::CombinedApacheLog, dash).unwrap().contains("\"referer\":null,\"agent\":\"curl/8.5.0\"}")
        );
        let empty = "10.0.0.1 - - [22/Nov/2026:03:56:26 +0000] \"GET / HTTP/1.1\" 200 10 \"-\" \"\"\n";
        assert_eq!(conv(LogFormat::CombinedApacheLog, empty), None);
        // A common-format line lacks referer and agent.
        let common = "10.0.0.1 - - [22/Nov/2026:03:56:26 +0000] \"GET / HTTP/1.1\" 200 10\n";
        assert_eq!(conv(LogFormat::CombinedApacheLog, common), None);
        // An escaped quote in the agent ends it at the backslash, the rest is trailing text.
        let escaped = "10.0.0.1 - - [22/Nov/2026:03:56:26 +0000] \"GET / HTTP/1.1\" 200 10 \"-\" \"a\\\"b\"\n";
        assert!(conv(LogFormat::CombinedApacheLog, escaped).unwrap().ends_with("\"agent\":\"a\\\\\"}\n"));
    }

    #[test]
    fn unicode_and_crlf() {
        let line =
            "10.0.0.1 - jürgen [22/Nov/2026:03:56:26 +0000] \"GET /straße/日本 HTTP/1.1\" 200 10 \"-\" \"Bot ✓\"\r\n";
        // `jürgen` is not a USER: dropped as in Java.
        assert_eq!(conv(LogFormat::CombinedApacheLog, line), None);
        let line = "10.0.0.1 - j [22/Nov/2026:03:56:26 +0000] \"GET /straße/日本 HTTP/1.1\" 200 10 \"-\" \"Bot ✓\"\r\n";
        assert!(conv(LogFormat::CombinedApacheLog, line).unwrap().ends_with("\"request\":\"GET /straße/日本 HTTP/1.1\",\"response\":\"200\",\"bytes\":\"10\",\"referer\":null,\"agent\":\"Bot ✓\"}\n"));
    }

    /// A user's `matchPattern` sees the `\r` of a CRLF line as Java does: a class that takes it
    /// keeps it; `.` does not take it, and a pattern that cannot match with it is tried without.
    #[test]
    fn match_pattern_on_crlf_lines() {
        let p = |pattern: &str| {
            let names = ["a".to_string(), "b".to_string()];
            with_pattern(Some(LogFormat::Syslog), pattern, &names, JsonFormat::Compact)
        };
        assert_eq!(p("([^,]*),([^,]*)").convert("x,y\r\n").unwrap(), "{\"a\":\"x\",\"b\":\"y\\r\"}\n");
        assert_eq!(p("(.*),(.*)").convert("x,y\r\n").unwrap(), "{\"a\":\"x\",\"b\":\"y\"}\n");
        assert_eq!(p("(\\w*),(\\w*)").convert("x,y\r\n").unwrap(), "{\"a\":\"x\",\"b\":\"y\"}\n");
    }

    #[test]
    fn ipv6_hosts_match_here() {
        let line = "2001:db8::1 - - [22/Nov/2026:03:56:26 +0000] \"GET / HTTP/1.1\" 200 10\n";
        assert!(conv(LogFormat::CommonApacheLog, line).unwrap().starts_with("{\"host\":\"2001:db8::1\","));
    }

    #[test]
    fn apache_error_log() {
        let line = "[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 1234:tid 140231] [client 127.0.0.1:54321] AH00124: Request exceeded the limit of 10 internal redirects\n";
        assert_eq!(
            conv(LogFormat::ApacheErrorLog, line).unwrap(),
            "{\"timestamp\":\"Wed Oct 11 14:32:52.123456 2000\",\"module\":\"core\",\"severity\":\"error\",\"processid\":\"1234\",\"threadid\":\"140231\",\"client\":\"127.0.0.1:54321\",\"message\":\"AH00124: Request exceeded the limit of 10 internal redirects\"}\n"
        );
        let line = "[Sun Mar  7 16:02:00 2004] [error] [pid 42] [client example.org] File does not exist: /var/www/favicon.ico\n";
        assert_eq!(
            conv(LogFormat::ApacheErrorLog, line).unwrap(),
            "{\"timestamp\":\"Sun Mar  7 16:02:00 2004\",\"module\":null,\"severity\":\"error\",\"processid\":\"42\",\"threadid\":null,\"client\":\"example.org\",\"message\":\"File does not exist: /var/www/favicon.ico\"}\n"
        );
        // No `[client ...]`: dropped, as in Java.
        assert_eq!(
            conv(LogFormat::ApacheErrorLog, "[Sun Mar 7 16:02:00 2004] [notice] [pid 1] Apache configured\n"),
            None
        );
    }

    #[test]
    fn syslog() {
        let line = "Mar 13 10:00:00 web-01 sshd[4242]: Accepted publickey for deploy from 10.1.2.3 port 50022 ssh2\n";
        assert_eq!(
            conv(LogFormat::Syslog, line).unwrap(),
            "{\"timestamp\":\"Mar 13 10:00:00\",\"hostname\":\"web-01\",\"program\":\"sshd\",\"processid\":\"4242\",\"message\":\"Accepted publickey for deploy from 10.1.2.3 port 50022 ssh2\"}\n"
        );
        // No pid: null; `-` kept; empty message; a facility.
        assert_eq!(
            conv(LogFormat::Syslog, "Nov  2 01:02:03 <134> host kernel: -\n").unwrap(),
            "{\"timestamp\":\"Nov  2 01:02:03\",\"hostname\":\"host\",\"program\":\"kernel\",\"processid\":null,\"message\":\"-\"}\n"
        );
        assert!(conv(LogFormat::Syslog, "Nov  2 01:02:03 host cron[1]: \n").unwrap().ends_with("\"message\":\"\"}\n"));
        // pid 0 is not a POSINT: dropped, as in Java.
        assert_eq!(conv(LogFormat::Syslog, "Nov  2 01:02:03 host cron[0]: x\n"), None);
        // `<13>` matches here (Java drops it).
        assert!(conv(LogFormat::Syslog, "Nov  2 01:02:03 <13> host cron: x\n").is_some());
        // NBSP is not Java's `\s`: dropped.
        assert_eq!(conv(LogFormat::Syslog, "Mar\u{a0}13 10:00:00 h p: m\n"), None);
    }

    #[test]
    fn rfc3339_syslog() {
        let line = "2026-11-22T03:56:26.123456+01:00 db-2 postgres[77]: LOG:  checkpoint starting: time\n";
        assert_eq!(
            conv(LogFormat::Rfc3339Syslog, line).unwrap(),
            "{\"timestamp\":\"2026-11-22T03:56:26.123456+01:00\",\"hostname\":\"db-2\",\"program\":\"postgres\",\"processid\":\"77\",\"message\":\"LOG:  checkpoint starting: time\"}\n"
        );
        assert!(conv(LogFormat::Rfc3339Syslog, "2026-11-22T03:56:26Z h systemd/init: ok\n").is_some());
        assert_eq!(conv(LogFormat::Rfc3339Syslog, "2026-11-22 03:56:26Z h p: m\n"), None);
    }

    #[test]
    fn custom_names_and_patterns() {
        let names: Vec<String> = ["ts", "host", "prog", "pid", "msg"].iter().map(|s| s.to_string()).collect();
        let p = LogParser::new(
            &LogMatch::Format { format: LogFormat::Syslog, fields: Some(names.clone()) },
            JsonFormat::Compact,
        );
        assert_eq!(
            p.convert("Jan  1 00:00:00 h p[9]: hi\n").unwrap(),
            "{\"ts\":\"Jan  1 00:00:00\",\"host\":\"h\",\"prog\":\"p\",\"pid\":\"9\",\"msg\":\"hi\"}\n"
        );
        let names: Vec<String> = ["level", "message"].iter().map(|s| s.to_string()).collect();
        let p = with_pattern(Some(LogFormat::CommonApacheLog), r"(\w+): (.*)", &names, JsonFormat::Compact);
        assert_eq!(p.convert("WARN: -\n").unwrap(), "{\"level\":\"WARN\",\"message\":null}\n");
        let p = with_pattern(None, r"(\w+): (.*)", &names, JsonFormat::PrettyPrint);
        assert_eq!(p.convert("WARN: -\n").unwrap(), "{\n  \"level\" : \"WARN\",\n  \"message\" : \"-\"\n}\n");
        assert_eq!(p.convert("no colon\n"), None);
    }
}
