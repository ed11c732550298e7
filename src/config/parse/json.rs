//! The raw JSON side: comments stripped, errors located by line and column, values shown in
//! messages (secrets never), unknown keys matched to the nearest known one.

use super::*;

/// Keys whose values never appear in messages.
const SECRET_KEYS: [&str; 2] = ["awsAccessKeyId", "awsSecretAccessKey"];

/// Strips comments and parses; errors carry the line and column.
pub(super) fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = strip_comments(bytes).map_err(|offset| {
        let (line, column) = line_column(bytes, offset);
        let what = if offset < bytes.len() {
            "a `/` that does not start a comment (`// ...` or `/* ... */`)"
        } else {
            "the file ends inside a string or a `/* */` comment"
        };
        format!("invalid JSON at line {line}, column {column}: {what}")
    })?;
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err("the file is empty: it must hold a JSON object such as {\"flows\": [...]}".into());
    }
    serde_json::from_slice(&text).map_err(|e| {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let what = full.strip_suffix(&suffix).unwrap_or(&full);
        format!("invalid JSON at line {}, column {}: {what}", e.line(), e.column())
    })
}

/// Blanks `//` and `/* */` comments (Jackson's ALLOW_COMMENTS; no `#`), keeping every byte
/// where it was. On error, gives the offset of the offending byte (or the length at EOF).
pub(super) fn strip_comments(text: &[u8]) -> Result<Vec<u8>, usize> {
    let mut reader = CommentSettings::c_style().strip_comments(text);
    let mut out = Vec::with_capacity(text.len());
    // One byte at a time, so an error's position is exact.
    let mut byte = [0u8];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => out.push(byte[0]),
            // The byte after a stray `/` is rejected: point at the `/`.
            Err(_) if out.len() < text.len() => return Err(out.len().saturating_sub(1)),
            Err(_) => return Err(text.len()),
        }
    }
    // Block comments are blanked newlines and all: put the newlines back so that line numbers
    // stay right. A newline outside comments is unchanged anyway.
    for (o, &t) in out.iter_mut().zip(text) {
        if t == b'\n' {
            *o = b'\n';
        }
    }
    Ok(out)
}

/// 1-based line and byte column, as serde_json counts them.
pub(super) fn line_column(text: &[u8], offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    (line, before.len() - line_start + 1)
}

pub(super) fn unknown_key_message(key: &str, scope: Scope) -> String {
    let (other, other_name, other_place) = match scope {
        Scope::Global => (Scope::Flow, "the flow key", "it goes into each object of `flows`"),
        Scope::Flow => (Scope::Global, "the global key", "it goes at the top level of the main file"),
    };
    if let Some(near) = nearest(key, scope) {
        format!("unknown key `{key}`; did you mean `{near}`?")
    } else if let Some(near) = nearest(key, other) {
        format!("unknown key `{key}`; did you mean {other_name} `{near}`? ({other_place})")
    } else {
        format!("unknown key `{key}`")
    }
}

/// The known key of `scope` closest to `key`, ignoring case, if it is close enough.
pub(super) fn nearest(key: &str, scope: Scope) -> Option<&'static str> {
    let key = key.to_lowercase();
    let mut best: Option<(f64, &'static str)> = None;
    for known in known_keys().iter().filter(|k| k.scope == scope) {
        let score = strsim::normalized_damerau_levenshtein(&key, &known.name.to_lowercase());
        if score >= 0.7 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, known.name));
        }
    }
    best.map(|(_, name)| name)
}

/// The JSON type of a value, for messages.
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value as shown in messages: scalars as written (secrets redacted), containers by type.
pub(super) fn shown(key: &str, v: &Value) -> String {
    const MAX_CHARS: usize = 60;
    match v {
        Value::Array(_) | Value::Object(_) => kind(v).to_owned(),
        _ if SECRET_KEYS.contains(&key) => "<redacted>".to_owned(),
        Value::String(s) if s.chars().count() > MAX_CHARS => {
            let head: String = s.chars().take(MAX_CHARS).collect();
            format!("{}...", Value::String(head))
        }
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse::tests::*;

    #[test]
    fn malformed_json_gives_line_and_column() {
        let e = one_error("{\n  \"flows\": [\n    {\"a\": 1,}\n  ]\n}");
        assert_eq!(e.location, "");
        assert!(e.message.starts_with("invalid JSON at line 3, column 13: "), "{}", e.message);
        assert!(!e.message.contains(" at line 3 column"), "{}", e.message);
        assert_eq!(e.to_string(), format!("{MAIN}: {}", e.message));

        let e = one_error("{\n  \"flows\": [\n");
        assert!(e.message.starts_with("invalid JSON at line 3, column 0: EOF"), "{}", e.message);
    }

    #[test]
    fn comments_are_allowed() {
        let text = format!(
            "// leading comment\n{{ /* block\n comment */ \"flows\": [ // trailing\n {{{FLOW}}} /* \"x\": 1 */ ]\n}}\n// end"
        );
        assert_eq!(ok(&text).flows.len(), 1);
        // Comment markers inside strings are data.
        let flow = one_flow(r#", "truncatedRecordTerminator": "// not /* a comment */""#);
        assert_eq!(flow.truncated_record_terminator, b"// not /* a comment */");
        // An error after a comment still points at the right place.
        let e = one_error("/* one\ntwo */ {\n  \"flows\": x\n}");
        assert!(e.message.starts_with("invalid JSON at line 3, column 12: "), "{}", e.message);
        // `#` comments are not Jackson's.
        assert!(one_error("# no\n{}").message.starts_with("invalid JSON at line 1, column 1"));
    }

    #[test]
    fn broken_comments_are_located() {
        let e = one_error("{\n  / \"flows\": []\n}");
        assert_eq!(
            e.message,
            "invalid JSON at line 2, column 3: a `/` that does not start a comment (`// ...` or `/* ... */`)"
        );
        let e = one_error("{\"flows\": []} /* never closed\n\n");
        assert_eq!(e.message, "invalid JSON at line 3, column 1: the file ends inside a string or a `/* */` comment");
        let e = one_error("{\"flows\": [\"abc");
        assert!(e.message.contains("ends inside a string"), "{}", e.message);
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        assert_eq!(ok(&format!("\u{feff}{}", flow_with(""))).flows.len(), 1);
    }
}
