//! JSON paths (`{"field": ...}` partition keys, `explicitHashKeyField`): parsed when the
//! configuration is read, applied to each record by the key deriver.

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Name(String),
    Index(usize),
}

/// A JSON path: `$.request.host`, `user.id`, `$.items[0].id`, `$['a.b']`, `["x"]` (the leading
/// `$` is optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(Vec<Step>);

impl JsonPath {
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let trimmed = text.trim();
        let rest = if let Some(r) = trimmed.strip_prefix('$') {
            r.to_owned()
        } else if trimmed.starts_with('.') {
            return Err(format!("JSON path {text:?} starts with `.`: write \"$.name\" or \"name\""));
        } else if trimmed.starts_with('[') {
            trimmed.to_owned()
        } else {
            // A bare first name: `user.id`.
            format!(".{trimmed}")
        };
        let mut steps = Vec::new();
        Self::steps(text, &rest, &mut steps)?;
        if steps.is_empty() {
            return Err(format!("JSON path {text:?} names no field: write e.g. \"$.request.host\""));
        }
        Ok(JsonPath(steps))
    }

    fn steps(text: &str, mut rest: &str, steps: &mut Vec<Step>) -> Result<(), String> {
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let name = &r[..end];
                if name.is_empty() {
                    return Err(format!("JSON path {text:?} has an empty field name (`..` or a trailing `.`)"));
                }
                steps.push(Step::Name(name.to_owned()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let Some(close) = r.find(']') else {
                    return Err(format!("JSON path {text:?} has a `[` without its `]`"));
                };
                let inner = r[..close].trim();
                let quoted = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                if let Some(name) = quoted {
                    steps.push(Step::Name(name.to_owned()));
                } else if let Ok(i) = inner.parse::<usize>() {
                    steps.push(Step::Index(i));
                } else {
                    return Err(format!(
                        "JSON path {text:?}: `[{inner}]` must be an array index such as [0] or a quoted name such as ['a.b']"
                    ));
                }
                rest = &r[close + 1..];
            } else {
                return Err(format!("JSON path {text:?}: expected `.` or `[` before {rest:?}"));
            }
        }
        Ok(())
    }

    /// The value at this path in `v`.
    pub fn get<'a>(&self, mut v: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        for step in &self.0 {
            v = match step {
                Step::Name(n) => v.as_object()?.get(n)?,
                Step::Index(i) => v.as_array()?.get(*i)?,
            };
        }
        Some(v)
    }
}
