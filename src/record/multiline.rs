//! Multi-line records (`multiLineStartPattern`): a record is a line that starts with a match of
//! the pattern plus the lines after it that do not. Lines before a file's first start line make a
//! record of their own. The tailer finishes a record when the next start line arrives, when the
//! file has been quiet for the flush timeout, or when the file is drained for good (rotated away,
//! deleted, `--once`). Each finished record carries the file offset just after its last line, and
//! the checkpoint only ever moves to such an offset: a restart never splits a record.

use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;

use super::split::SplitStats;

#[derive(Debug)]
pub struct MultiLine {
    /// The user's pattern, anchored at the start of the line (Java's `lookingAt`).
    start: Regex,
    /// Lines of the record being built; together at most `limit + 1` bytes.
    parts: Vec<Bytes>,
    len: usize,
    /// The record already passed the limit; its further lines are not kept.
    overflowed: bool,
    /// File offset just after the record's last line.
    end: u64,
    limit: usize,
    /// Ends a record cut to `limit`; `None`: such records are dropped.
    terminator: Option<Vec<u8>>,
}

/// The start pattern as matched against a line: anchored at its start (the user's `^`, if any, is
/// then harmless). `pattern` was validated with the config.
pub fn start_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})"))
}

impl MultiLine {
    pub fn new(start: Regex, limit: usize, terminator: Option<Vec<u8>>) -> Self {
        MultiLine { start, parts: Vec::new(), len: 0, overflowed: false, end: 0, limit, terminator }
    }

    /// A record is being built (its lines are read but not sent).
    pub fn is_pending(&self) -> bool {
        !self.parts.is_empty() || self.overflowed
    }

    /// Forget the record being built (its file was truncated and is read again from 0).
    pub fn restart(&mut self) {
        self.parts.clear();
        self.len = 0;
        self.overflowed = false;
    }

    /// Whether `line` (with its newline) starts a record. The newline and a `\r` before it are
    /// not part of what the pattern sees, so `$` works as users expect.
    pub fn is_start(&self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.start.is_match(line)
    }

    /// Add a complete line that ends at file offset `end`. A start line first finishes the
    /// record being built, which `emit` receives with the offset after its last line.
    pub fn push(&mut self, line: Bytes, end: u64, stats: &mut SplitStats, emit: &mut impl FnMut(Bytes, u64)) {
        if self.is_pending() && self.is_start(&line) {
            self.finish(stats, emit);
        }
        self.end = end;
        if self.overflowed {
            return;
        }
        let room = self.limit + 1 - self.len;
        if line.len() > room {
            self.parts.push(line.slice(..room));
            self.len += room;
            self.overflowed = true;
        } else {
            self.len += line.len();
            self.parts.push(line);
        }
    }

    /// Finish the record being built, if any (flush timeout, drained file).
    pub fn finish(&mut self, stats: &mut SplitStats, emit: &mut impl FnMut(Bytes, u64)) {
        if !self.is_pending() {
            return;
        }
        let too_long = self.overflowed || self.len > self.limit;
        let record = if self.parts.len() == 1 && !too_long {
            self.parts.pop().expect("one part")
        } else {
            let mut joined = BytesMut::with_capacity(self.len);
            for p in self.parts.drain(..) {
                joined.extend_from_slice(&p);
            }
            joined.freeze()
        };
        self.restart();
        if !too_long {
            emit(record, self.end);
            return;
        }
        match &self.terminator {
            None => stats.dropped += 1,
            Some(t) => {
                stats.truncated += 1;
                let mut cut = BytesMut::with_capacity(self.limit);
                cut.extend_from_slice(&record[..self.limit - t.len()]);
                cut.extend_from_slice(t);
                emit(cut.freeze(), self.end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::split::LineSplitter;
    use proptest::prelude::*;

    /// Feeds `parts` through a line splitter and the multi-line builder, as the tailer does;
    /// returns the records with their end offsets, and the finished record at the end if `drain`.
    fn run(pattern: &str, limit: usize, parts: &[&[u8]], drain: bool) -> Vec<(Vec<u8>, u64)> {
        let mut s = LineSplitter::new(limit, Some(b"~\n".to_vec()), 0);
        let mut m = MultiLine::new(start_regex(pattern).unwrap(), limit, Some(b"~\n".to_vec()));
        let mut out = Vec::new();
        let (mut stats, mut multi_stats) = (SplitStats::default(), SplitStats::default());
        let mut start = 0u64;
        for p in parts {
            let buf = Bytes::copy_from_slice(p);
            s.feed(&buf, &mut stats, |line, end| {
                m.push(line, start + end as u64, &mut multi_stats, &mut |r, e| out.push((r.to_vec(), e)))
            });
            start += p.len() as u64;
        }
        if drain {
            m.finish(&mut multi_stats, &mut |r, e| out.push((r.to_vec(), e)));
        }
        out
    }

    const STACK: &[u8] = b"2026-01-01 ERROR boom\n  at a.b(C.java:1)\n  at d.e(F.java:2)\n2026-01-01 INFO ok\n";

    #[test]
    fn a_record_is_a_start_line_and_its_continuations() {
        let out = run(r"\d{4}-\d{2}-\d{2} ", 1000, &[STACK], false);
        assert_eq!(out, vec![(b"2026-01-01 ERROR boom\n  at a.b(C.java:1)\n  at d.e(F.java:2)\n".to_vec(), 60)]);
        // The last record waits for the next start line, or for the file to be drained.
        let out = run(r"\d{4}-\d{2}-\d{2} ", 1000, &[STACK], true);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], (b"2026-01-01 INFO ok\n".to_vec(), STACK.len() as u64));
    }

    #[test]
    fn lines_before_the_first_start_line_are_a_record_of_their_own() {
        let out = run("START", 1000, &[b"junk\nmore junk\nSTART 1\nx\nSTART 2\n"], true);
        let records: Vec<_> = out.iter().map(|(r, _)| String::from_utf8_lossy(r).into_owned()).collect();
        assert_eq!(records, vec!["junk\nmore junk\n", "START 1\nx\n", "START 2\n"]);
    }

    #[test]
    fn the_pattern_is_anchored_and_does_not_see_the_newline() {
        let out = run("A$", 1000, &[b"A\r\nxA\nA\n"], true);
        let records: Vec<_> = out.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(records, vec![b"A\r\nxA\n".to_vec(), b"A\n".to_vec()]);
    }

    #[test]
    fn a_record_over_the_limit_is_cut_or_dropped() {
        let text = b"S 1\naaaaaaaaaa\nbbbbbbbbbb\nS 2\n";
        let out = run("S ", 16, &[text], true);
        assert_eq!(out[0], (b"S 1\naaaaaaaaaa~\n".to_vec(), 26));
        assert_eq!(out[1], (b"S 2\n".to_vec(), 30));
        let mut m = MultiLine::new(start_regex("S ").unwrap(), 16, None);
        let mut stats = SplitStats::default();
        let mut got = Vec::new();
        for (line, end) in [(&b"S 1\naaaaaaaaaa\n"[..], 15), (b"bbbbbbbbbb\n", 26), (b"S 2\n", 30)] {
            m.push(Bytes::copy_from_slice(line), end, &mut stats, &mut |r, e| got.push((r, e)));
        }
        assert_eq!(stats.dropped, 1);
        assert!(got.is_empty(), "the long record is dropped, the next one still builds");
        assert!(m.is_pending());
    }

    proptest! {
        /// However the bytes arrive, the records are the same, they cover the complete lines
        /// in order (nothing lost or repeated), and each ends at the offset after its last line.
        #[test]
        fn records_are_independent_of_read_boundaries(
            lines in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(prop_oneof![Just(b'x'), any::<u8>()], 0..12)),
                0..30),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let mut data = Vec::new();
            for (start, body) in &lines {
                if *start { data.extend_from_slice(b"S"); }
                data.extend(body.iter().map(|&b| if b == b'\n' { b'.' } else { b }));
                data.push(b'\n');
            }
            let whole = run("S", 1 << 20, &[&data], true);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort();
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for c in cuts { parts.push(&data[prev..c]); prev = c; }
            parts.push(&data[prev..]);
            let pieces = run("S", 1 << 20, &parts, true);
            prop_assert_eq!(&pieces, &whole);
            let joined: Vec<u8> = whole.iter().flat_map(|(r, _)| r.clone()).collect();
            prop_assert_eq!(&joined, &data);
            let mut at = 0u64;
            for (r, end) in &whole {
                at += r.len() as u64;
                prop_assert_eq!(*end, at);
            }
        }
    }
}
