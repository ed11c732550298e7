//! Value coercions: numbers, booleans, strings, choices, glob patterns and regexes, with the
//! Java agent's leniency (numbers in strings) and messages that say what is allowed. A problem
//! is a message (`Err(String)`): the loader makes it a `ConfigError` with the file and the key,
//! which is the typed error the rest of the agent sees.

use super::*;

/// A whole number in `min..=max`. Like the Java agent, strings holding numbers are accepted.
/// Unlike it, so is a number written with a zero fraction (`1000.0`, `1e3`).
pub(super) fn parse_int(key: &str, v: &Value, min: i64, max: i64) -> Result<i64, String> {
    let from_float = |f: f64| {
        // `i64::MAX as f64` rounds up to 2^63, so the upper bound is exclusive.
        (f.is_finite() && f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
    };
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(from_float)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| s.parse::<f64>().ok().and_then(from_float))
        }
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => {
            let range = if max == LONG { format!("at least {min}") } else { format!("from {min} to {max}") };
            Err(format!("must be a whole number {range}, found {}", shown(key, v)))
        }
    }
}

/// Java's loose booleans: JSON booleans, or (any case) true/yes/t/y/1 and false/no/f/n/0.
pub(super) fn parse_bool(key: &str, v: &Value) -> Result<bool, String> {
    let b = match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "t" | "y" | "1" => Some(true),
            "false" | "no" | "f" | "n" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        _ => None,
    };
    b.ok_or_else(|| {
        format!(
            "must be true or false (also \"yes\"/\"no\", \"t\"/\"f\", \"y\"/\"n\", \"1\"/\"0\" in any case), found {}",
            shown(key, v)
        )
    })
}

/// A string; numbers and booleans are taken as their text, as the Java agent does.
pub(super) fn parse_str(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
        _ => Err(format!("must be a string, found {}", shown(key, v))),
    }
}

pub(super) fn parse_nonempty(key: &str, v: &Value) -> Result<String, String> {
    let s = parse_str(key, v)?;
    if s.trim().is_empty() { Err("must not be empty".to_owned()) } else { Ok(s) }
}

pub(super) fn parse_pattern(key: &str, v: &Value) -> Result<String, String> {
    let pattern = parse_nonempty(key, v)?;
    if pattern.ends_with('/') {
        return Err(format!(
            "must name files, not a directory: {} ends with `/` (add a file name or glob, e.g. `*.log`)",
            shown(key, v)
        ));
    }
    // The same compilation discovery does, so `--check-config` catches what a start would.
    if let Err(e) = crate::config::compile::file_glob(&pattern) {
        return Err(format!("{} is not a valid glob: {}", shown(key, v), e.kind()));
    }
    Ok(pattern)
}

/// An enum value, matched case-sensitively as Java's `valueOf` does.
pub(super) fn parse_choice<T: Copy>(key: &str, v: &Value, options: &[(&str, T)]) -> Result<T, String> {
    let names: Vec<String> = options.iter().map(|(name, _)| format!("`{name}`")).collect();
    let allowed = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    let mut message = format!("must be {allowed}, found {}", shown(key, v));
    if let Value::String(s) = v {
        if let Some((_, value)) = options.iter().find(|(name, _)| name == s) {
            return Ok(*value);
        }
        if let Some((name, _)) = options.iter().find(|(name, _)| name.eq_ignore_ascii_case(s)) {
            message += &format!(" (values are case-sensitive: write `{name}`)");
        }
    }
    Err(message)
}

pub(super) fn parse_regex(key: &str, v: &Value) -> Result<String, String> {
    let pattern = parse_str(key, v)?;
    match regex::Regex::new(&pattern) {
        Ok(_) => Ok(pattern),
        Err(e) => {
            // A syntax error's text draws a caret diagram over several lines; its last line
            // (`error: ...`) says what is wrong.
            let text = e.to_string();
            let last = text.lines().last().unwrap_or_default();
            let why = last.strip_prefix("error: ").unwrap_or(last);
            Err(format!(
                "must be a regular expression, but {} is not one: {why} (the syntax is that of the Rust `regex` crate: no look-around or backreferences)",
                shown(key, v)
            ))
        }
    }
}

/// The last line of a regex syntax error (the others draw a caret diagram).
pub(super) fn regex_problem(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}
