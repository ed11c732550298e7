//! Numbered test lines and exactly-once checks that stay readable with 100k+ lines.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::Range;
use std::path::Path;

/// Default line length (without the newline) produced by `line_text` / `write_lines`.
pub const DEFAULT_LINE_LEN: usize = 100;
const EXAMPLES: usize = 5;

/// `"{prefix} {n:08} <padding>"`, padded with a deterministic filler to `DEFAULT_LINE_LEN` bytes
/// (longer if the prefix is long). No newline.
pub fn line_text(prefix: &str, n: u64) -> String {
    line_text_len(prefix, n, DEFAULT_LINE_LEN)
}

/// Like `line_text`, padded to `len` bytes (at least the head and one space).
pub fn line_text_len(prefix: &str, n: u64, len: usize) -> String {
    let mut s = format!("{prefix} {n:08} ");
    const FILL: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut i = (n as usize) % FILL.len();
    while s.len() < len {
        s.push(FILL[i % FILL.len()] as char);
        i += 1;
    }
    s
}

/// Appends `line_text(prefix, n) + "\n"` for each n in `range` (creates the file if needed).
pub fn write_lines(path: &Path, range: Range<u64>, prefix: &str) {
    write_lines_len(path, range, prefix, DEFAULT_LINE_LEN)
}

/// Appends lines padded to `len` bytes (newline excluded).
pub fn write_lines_len(path: &Path, range: Range<u64>, prefix: &str, len: usize) {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    for n in range {
        let mut line = line_text_len(prefix, n, len);
        line.push('\n');
        w.write_all(line.as_bytes()).expect("write line");
    }
    w.flush().expect("flush lines");
}

/// The lines `write_lines(_, range, prefix)` writes, without newlines.
pub fn expected_lines(range: Range<u64>, prefix: &str) -> impl Iterator<Item = String> + '_ {
    range.map(move |n| line_text(prefix, n))
}

/// Splits each record on `\n` (records or S3 objects holding several lines) and drops empty
/// pieces; the pieces have no newline.
pub fn split_lines(records: &[Vec<u8>]) -> Vec<Vec<u8>> {
    records
        .iter()
        .flat_map(|r| r.split(|&b| b == b'\n'))
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .collect()
}

/// The numbers of every `"{prefix} {n:08} ..."` line in `records` (each record may hold several
/// lines). Panics on a line that does not have that shape.
pub fn parse_line_numbers(records: &[Vec<u8>]) -> Vec<u64> {
    split_lines(records)
        .iter()
        .map(|l| {
            let text = String::from_utf8_lossy(l);
            text.split(' ')
                .nth(1)
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("not a numbered test line: {:?}", short(l)))
        })
        .collect()
}

fn normalize(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

fn short(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > 120 { format!("{}…", s.chars().take(120).collect::<String>()) } else { s.into_owned() }
}

/// Compares `got` with `expected` as multisets (each item after stripping one trailing `\n`
/// or `\r\n`). Err describes missing / duplicated / unexpected items with counts and the first
/// few examples.
pub fn check_exactly_once<I, T>(expected: I, got: &[Vec<u8>]) -> Result<(), String>
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    let mut order: Vec<Vec<u8>> = Vec::new();
    let mut want: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut n_expected = 0usize;
    for e in expected {
        let k = normalize(e.as_ref()).to_vec();
        n_expected += 1;
        let c = want.entry(k.clone()).or_insert(0);
        if *c == 0 {
            order.push(k);
        }
        *c += 1;
    }
    let mut have: HashMap<&[u8], i64> = HashMap::new();
    let mut unexpected_order: Vec<&[u8]> = Vec::new();
    for g in got {
        let k = normalize(g);
        let c = have.entry(k).or_insert(0);
        if *c == 0 && !want.contains_key(k) {
            unexpected_order.push(k);
        }
        *c += 1;
    }

    let (mut missing, mut missing_ex) = (0i64, Vec::new());
    let (mut dup, mut dup_ex) = (0i64, Vec::new());
    for k in &order {
        let w = want[k];
        let h = have.get(k.as_slice()).copied().unwrap_or(0);
        if h < w {
            missing += w - h;
            if missing_ex.len() < EXAMPLES {
                missing_ex.push(format!("{:?} (expected {w}, got {h})", short(k)));
            }
        } else if h > w {
            dup += h - w;
            if dup_ex.len() < EXAMPLES {
                dup_ex.push(format!("{:?} (expected {w}, got {h})", short(k)));
            }
        }
    }
    let unexpected: i64 = unexpected_order.iter().map(|k| have[k]).sum();
    if missing == 0 && dup == 0 && unexpected == 0 {
        return Ok(());
    }
    let mut msg = format!(
        "exactly-once check failed: expected {n_expected} items, got {}: {missing} missing, {dup} extra duplicates, {unexpected} unexpected",
        got.len()
    );
    for (title, ex) in [
        ("missing", &missing_ex),
        ("duplicated", &dup_ex),
        (
            "unexpected",
            &unexpected_order.iter().take(EXAMPLES).map(|k| format!("{:?} (x{})", short(k), have[k])).collect(),
        ),
    ] {
        if !ex.is_empty() {
            let _ = write!(msg, "\n  first {title}:");
            for e in ex {
                let _ = write!(msg, "\n    {e}");
            }
        }
    }
    Err(msg)
}

/// Panics with `check_exactly_once`'s report if `got` is not exactly `expected`.
pub fn assert_exactly_once<I, T>(expected: I, got: &[Vec<u8>])
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    if let Err(msg) = check_exactly_once(expected, got) {
        panic!("{msg}");
    }
}

/// Panics unless every number in `expected` occurs exactly once in `got` and nothing else does.
pub fn assert_numbers_exactly_once(expected: Range<u64>, got: &[u64]) {
    if let Err(msg) = check_numbers_exactly_once(expected, got) {
        panic!("{msg}");
    }
}

/// Err unless every number in `expected` occurs exactly once in `got` and nothing else does;
/// the report shows missing numbers as compact ranges.
pub fn check_numbers_exactly_once(expected: Range<u64>, got: &[u64]) -> Result<(), String> {
    let mut counts: HashMap<u64, u32> = HashMap::new();
    for &n in got {
        *counts.entry(n).or_insert(0) += 1;
    }
    let mut missing: Vec<u64> = expected.clone().filter(|n| !counts.contains_key(n)).collect();
    missing.sort_unstable();
    let mut dups: Vec<(u64, u32)> =
        counts.iter().filter(|(n, c)| expected.contains(n) && **c > 1).map(|(n, c)| (*n, *c)).collect();
    dups.sort_unstable();
    let mut unexpected: Vec<u64> = counts.keys().filter(|n| !expected.contains(n)).copied().collect();
    unexpected.sort_unstable();
    if missing.is_empty() && dups.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    let extra: u32 = dups.iter().map(|(_, c)| c - 1).sum();
    Err(format!(
        "exactly-once check failed for {expected:?} ({} numbers, got {}): {} missing {}, {} duplicated ({extra} extra copies) e.g. {:?}, {} unexpected e.g. {:?}",
        expected.end - expected.start,
        got.len(),
        missing.len(),
        ranges(&missing, 8),
        dups.len(),
        &dups[..dups.len().min(EXAMPLES)],
        unexpected.len(),
        &unexpected[..unexpected.len().min(EXAMPLES)],
    ))
}

/// "[3..=7, 10, 20..=25, …]" for sorted numbers, at most `max` ranges shown.
fn ranges(sorted: &[u64], max: usize) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    let mut total = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        total += 1;
        if out.len() < max {
            out.push(if start == end { start.to_string() } else { format!("{start}..={end}") });
        }
        i += 1;
    }
    if total > max {
        out.push(format!("… {} more ranges", total - max));
    }
    format!("[{}]", out.join(", "))
}
