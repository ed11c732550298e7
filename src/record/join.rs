//! `aggregatedRecordSizeBytes` (Firehose flows): whole records joined into one Firehose record of
//! up to that many bytes, so a destination that bills per record (Firehose rounds each up to 5 KB)
//! or stores objects of lines gets fewer, fuller records.
//!
//! Records of one chunk (the lines of one read of a file, already processed) are joined in order;
//! a chunk's records are acknowledged together anyway, so the checkpoint is unchanged. Unlike the
//! Java agent this also joins multi-line records. A record that does not end with a newline gets
//! one where it is joined, so the lines of a joined record stay apart; a record already at or
//! over the size is sent alone, never split.

use bytes::BytesMut;

use crate::types::record::Record;

/// Joins consecutive `records` into records of at most `size` bytes (0: unchanged).
pub fn join(records: Vec<Record>, size: usize) -> Vec<Record> {
    if size == 0 || records.len() < 2 {
        return records;
    }
    let mut out = Vec::new();
    // The record being built, and the first record it holds (kept as is when nothing joins it).
    let mut open: Option<(BytesMut, Record, bool)> = None;
    for r in records {
        if let Some((buf, first, joined)) = open.as_mut() {
            let sep = usize::from(buf.last().is_some_and(|b| *b != b'\n'));
            if buf.len() + sep + r.data.len() <= size {
                if sep == 1 {
                    buf.extend_from_slice(b"\n");
                }
                buf.extend_from_slice(&r.data);
                first.origin = r.origin;
                *joined = true;
                continue;
            }
            let (buf, first, joined) = open.take().expect("open");
            out.push(finish(buf, first, joined));
        }
        open = Some((BytesMut::from(&r.data[..]), r, false));
    }
    if let Some((buf, first, joined)) = open {
        out.push(finish(buf, first, joined));
    }
    out
}

fn finish(buf: BytesMut, first: Record, joined: bool) -> Record {
    if joined { Record { data: buf.freeze(), origin: first.origin, key: None } } else { first }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::record::Origin;
    use proptest::prelude::*;

    fn recs(lines: &[&str]) -> Vec<Record> {
        lines
            .iter()
            .map(|l| Record {
                data: bytes::Bytes::copy_from_slice(l.as_bytes()),
                origin: Origin { file: 1, chunk: 7 },
                key: None,
            })
            .collect()
    }

    fn data(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| String::from_utf8(r.data.to_vec()).unwrap()).collect()
    }

    #[test]
    fn joins_whole_lines_up_to_the_size() {
        let out = join(recs(&["aaaa\n", "bbbb\n", "cccc\n", "dd\n"]), 10);
        assert_eq!(data(&out), ["aaaa\nbbbb\n", "cccc\ndd\n"]);
        assert!(out.iter().all(|r| r.origin == Origin { file: 1, chunk: 7 }));
    }

    #[test]
    fn a_record_over_the_size_goes_alone_and_unsplit() {
        let out = join(recs(&["a\n", "0123456789abc\n", "b\n", "c\n"]), 6);
        assert_eq!(data(&out), ["a\n", "0123456789abc\n", "b\nc\n"]);
    }

    #[test]
    fn records_without_a_newline_are_kept_apart() {
        // A line cut at the record limit ends with its terminator, not a newline.
        let out = join(recs(&["{\"a\":1}", "{\"b\":2}\n", "x"]), 100);
        assert_eq!(data(&out), ["{\"a\":1}\n{\"b\":2}\nx"]);
    }

    #[test]
    fn off_or_single_records_are_untouched() {
        assert_eq!(data(&join(recs(&["a\n", "b\n"]), 0)), ["a\n", "b\n"]);
        assert_eq!(data(&join(recs(&["a\n"]), 100)), ["a\n"]);
        assert!(join(Vec::new(), 100).is_empty());
    }

    proptest! {
        /// Joined records hold every line once, in order, and stay within the size unless a
        /// single line is bigger.
        #[test]
        fn joining_keeps_every_line(lines in proptest::collection::vec("[a-z]{0,30}\n?", 0..60), size in 1usize..120) {
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let out = join(recs(&refs), size);
            let mut expected = String::new();
            for l in &lines {
                if !expected.is_empty() && !expected.ends_with('\n') {
                    expected.push('\n');
                }
                expected.push_str(l);
            }
            let mut got = String::new();
            for r in data(&out) {
                if !got.is_empty() && !got.ends_with('\n') {
                    got.push('\n');
                }
                got.push_str(&r);
            }
            prop_assert_eq!(got, expected);
            for (r, n) in out.iter().zip(0..) {
                let alone = lines.iter().any(|l| l.as_bytes() == &r.data[..]);
                prop_assert!(r.data.len() <= size || alone, "record {} of {} bytes", n, r.data.len());
            }
        }
    }
}
