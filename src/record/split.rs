//! Splitting file bytes into line records. A record is a line with its trailing `\n` (a `\r`
//! before it stays), exactly the bytes the Java agent sends. An unterminated last line waits in
//! the splitter for its newline. A line longer than the record limit is cut and ends with the
//! flow's `truncatedRecordTerminator`; the rest of it is skipped up to its newline, so the file
//! keeps flowing and byte offsets stay exact.

use bytes::Bytes;
use memchr::memchr_iter;

/// What the splitter did with a batch of bytes, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SplitStats {
    pub lines: u64,
    pub truncated: u64,
    /// Lines over the limit that were dropped.
    pub dropped: u64,
    pub header_lines_skipped: u64,
}

#[derive(Debug)]
pub struct LineSplitter {
    /// Bytes of the current unterminated line, at most `limit + 1` of them.
    partial: Vec<u8>,
    /// The current line already passed the limit; its further bytes are not kept.
    overflowed: bool,
    limit: usize,
    /// Ends a cut line; `None`: lines over the limit are dropped.
    terminator: Option<Vec<u8>>,
    skip_lines: u64,
}

impl LineSplitter {
    /// `limit`: the largest record in bytes; `terminator` replaces the end of longer lines (`None`:
    /// drop them); `skip_lines`: header lines to drop first.
    pub fn new(limit: usize, terminator: Option<Vec<u8>>, skip_lines: u64) -> Self {
        assert!(
            terminator.as_ref().is_none_or(|t| t.len() < limit),
            "terminator must be shorter than the record limit"
        );
        LineSplitter { partial: Vec::new(), overflowed: false, limit, terminator, skip_lines }
    }

    /// Bytes held for the current unterminated line.
    pub fn pending_bytes(&self) -> usize {
        self.partial.len()
    }

    /// Forget the partial line and start skipping `skip_lines` header lines again (the file was
    /// truncated and is read from 0).
    pub fn restart(&mut self, skip_lines: u64) {
        self.partial.clear();
        self.overflowed = false;
        self.skip_lines = skip_lines;
    }

    /// Splits `buf`, calling `emit` with each complete record (a slice of `buf` when the line lies
    /// wholly in it) and the position in `buf` just after its newline. Returns how many bytes of
    /// `buf` end with its last newline (0 if it holds none); the bytes after it are kept as the
    /// start of the next line.
    pub fn feed(&mut self, buf: &Bytes, stats: &mut SplitStats, mut emit: impl FnMut(Bytes, usize)) -> usize {
        let mut pos = 0;
        for nl in memchr_iter(b'\n', buf) {
            self.finish_line(buf, pos, nl + 1, stats, &mut |r| emit(r, nl + 1));
            pos = nl + 1;
        }
        self.append_partial(&buf[pos..]);
        pos
    }

    /// The unterminated last line, as a record of its own (a file that will not grow any more,
    /// such as a deleted one that was drained). Header skipping and truncation still apply.
    pub fn take_partial(&mut self, stats: &mut SplitStats) -> Option<Bytes> {
        if self.partial.is_empty() {
            return None;
        }
        let mut out = None;
        self.finish_line(&Bytes::new(), 0, 0, stats, &mut |r| out = Some(r));
        out
    }

    fn append_partial(&mut self, bytes: &[u8]) {
        if self.overflowed || bytes.is_empty() {
            return;
        }
        let room = self.limit + 1 - self.partial.len();
        if bytes.len() > room {
            self.partial.extend_from_slice(&bytes[..room]);
            self.overflowed = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    /// Ends the current line with `buf[start..end]`.
    fn finish_line(
        &mut self,
        buf: &Bytes,
        start: usize,
        end: usize,
        stats: &mut SplitStats,
        emit: &mut impl FnMut(Bytes),
    ) {
        let tail = &buf[start..end];
        let line: Vec<u8>;
        let too_long;
        if self.partial.is_empty() {
            too_long = tail.len() > self.limit;
            if self.skip_lines > 0 {
                self.skip_lines -= 1;
                stats.header_lines_skipped += 1;
                return;
            }
            stats.lines += 1;
            if !too_long {
                emit(buf.slice(start..end));
                return;
            }
            line = tail[..self.limit].to_vec();
        } else {
            self.append_partial(tail);
            too_long = self.overflowed || self.partial.len() > self.limit;
            self.overflowed = false;
            let taken = std::mem::take(&mut self.partial);
            if self.skip_lines > 0 {
                self.skip_lines -= 1;
                stats.header_lines_skipped += 1;
                return;
            }
            line = taken;
            stats.lines += 1;
        }
        if too_long {
            let Some(terminator) = &self.terminator else {
                stats.dropped += 1;
                return;
            };
            stats.truncated += 1;
            let mut line = line;
            line.truncate(self.limit - terminator.len());
            line.extend_from_slice(terminator);
            emit(line.into());
        } else {
            emit(line.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(s: &mut LineSplitter, parts: &[&[u8]]) -> (Vec<Vec<u8>>, SplitStats, usize) {
        let mut out = Vec::new();
        let mut stats = SplitStats::default();
        // Absolute offset just after the last newline, as the tailer computes it.
        let mut end = 0;
        let mut start = 0;
        for p in parts {
            let c = s.feed(&Bytes::copy_from_slice(p), &mut stats, |r, _| out.push(r.to_vec()));
            if c > 0 {
                end = start + c;
            }
            start += p.len();
        }
        (out, stats, end)
    }

    #[test]
    fn lines_keep_their_newline_and_cr() {
        let mut s = LineSplitter::new(100, Some(b"\n".to_vec()), 0);
        let (out, st, consumed) = run(&mut s, &[b"a\r\nbb\nc"]);
        assert_eq!(out, vec![b"a\r\n".to_vec(), b"bb\n".to_vec()]);
        assert_eq!(st.lines, 2);
        assert_eq!(consumed, 6);
        assert_eq!(s.pending_bytes(), 1);
    }

    #[test]
    fn partial_line_completed_by_a_later_read() {
        let mut s = LineSplitter::new(100, Some(b"\n".to_vec()), 0);
        let (out, _, consumed) = run(&mut s, &[b"hel", b"lo\nwor", b"ld\n"]);
        assert_eq!(out, vec![b"hello\n".to_vec(), b"world\n".to_vec()]);
        assert_eq!(consumed, 12);
    }

    #[test]
    fn header_lines_are_skipped_across_reads() {
        let mut s = LineSplitter::new(100, Some(b"\n".to_vec()), 2);
        let (out, st, _) = run(&mut s, &[b"h1\nh", b"2\nd1\n"]);
        assert_eq!(out, vec![b"d1\n".to_vec()]);
        assert_eq!(st.header_lines_skipped, 2);
    }

    #[test]
    fn long_lines_are_truncated_with_the_terminator() {
        let mut s = LineSplitter::new(8, Some(b"~\n".to_vec()), 0);
        let (out, st, consumed) = run(&mut s, &[b"0123456789abc\nok\n"]);
        assert_eq!(out, vec![b"012345~\n".to_vec(), b"ok\n".to_vec()]);
        assert_eq!(st.truncated, 1);
        assert_eq!(consumed, 17);
        // The same line arriving in small pieces.
        let mut s = LineSplitter::new(8, Some(b"~\n".to_vec()), 0);
        let (out, st, _) = run(&mut s, &[b"0123", b"45678", b"9abc", b"\nok\n"]);
        assert_eq!(out, vec![b"012345~\n".to_vec(), b"ok\n".to_vec()]);
        assert_eq!(st.truncated, 1);
        // Exactly the limit is not truncated.
        let mut s = LineSplitter::new(8, Some(b"~\n".to_vec()), 0);
        let (out, st, _) = run(&mut s, &[b"0123", b"456\n"]);
        assert_eq!(out, vec![b"0123456\n".to_vec()]);
        assert_eq!(st.truncated, 0);
    }

    #[test]
    fn long_lines_can_be_dropped_instead() {
        let mut s = LineSplitter::new(8, None, 0);
        let (out, st, consumed) = run(&mut s, &[b"ok\n0123", b"456789abc\nok2\n"]);
        assert_eq!(out, vec![b"ok\n".to_vec(), b"ok2\n".to_vec()]);
        assert_eq!((st.dropped, st.truncated), (1, 0));
        assert_eq!(consumed, 21);
    }

    #[test]
    fn take_partial_emits_the_unterminated_line() {
        let mut s = LineSplitter::new(100, Some(b"\n".to_vec()), 0);
        let (out, _, _) = run(&mut s, &[b"a\nlast"]);
        assert_eq!(out.len(), 1);
        let mut st = SplitStats::default();
        assert_eq!(s.take_partial(&mut st).as_deref(), Some(&b"last"[..]));
        assert_eq!(s.take_partial(&mut st), None);
    }

    proptest! {
        /// However the bytes are cut into reads, the records are the same, and the consumed
        /// count always ends on a newline.
        #[test]
        fn split_is_independent_of_read_boundaries(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..10),
        ) {
            let mut whole = LineSplitter::new(16, Some(b"|\n".to_vec()), 1);
            let (expected, _, consumed_whole) = run(&mut whole, &[&data]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort();
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for c in cuts { parts.push(&data[prev..c]); prev = c; }
            parts.push(&data[prev..]);
            let mut pieces = LineSplitter::new(16, Some(b"|\n".to_vec()), 1);
            let (got, _, consumed) = run(&mut pieces, &parts);
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(consumed, consumed_whole);
            prop_assert!(consumed == 0 || data[consumed - 1] == b'\n');
            prop_assert!(got.iter().all(|r| r.len() <= 16));
        }
    }
}
