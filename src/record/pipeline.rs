//! Lines → the records a flow ships. The tailer splits what it reads (`split`, `multiline`) and
//! hands each chunk's records here: keys taken from the raw lines (regex), then
//! `dataProcessingOptions` (what they make is held to the record limit too), then keys taken
//! from the processed records (JSON field, constant, fallback), then Firehose joining. Plain and
//! synchronous (the tailer awaits `ready` first), so it is tested without files.

use std::sync::Arc;

use bytes::Bytes;

use super::key::KeyDeriver;
use super::process::{Applied, Context, Processor};
use super::split::SplitStats;
use crate::types::record::Record;

/// A flow's record steps after splitting.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Most bytes a record may have (the destination's limit, less room for its key).
    pub record_limit: usize,
    /// Ends records cut to `record_limit`; `None`: such records are dropped.
    pub terminator: Option<Vec<u8>>,
    /// `dataProcessingOptions` (`None`: records are sent as read, without a copy).
    pub processor: Option<Arc<Processor>>,
    /// Derived partition keys (`None`: RANDOM or DETERMINISTIC, computed when sent).
    pub keys: Option<Arc<KeyDeriver>>,
    /// `aggregatedRecordSizeBytes` (Firehose): a chunk's records are joined up to this size (0: off).
    pub join_size: usize,
}

/// What the steps did to one chunk's records, for the flow's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Dropped by a converter (LOGTOJSON on a line that does not match).
    pub skipped: u64,
    /// A converter failed: sent as read.
    pub failed: u64,
    /// Converted records over the limit: truncated or dropped.
    pub oversized: SplitStats,
    pub key_fallbacks: u64,
    pub invalid_hash_keys: u64,
}

impl Pipeline {
    /// Waits until the converters can run (ADDEC2METADATA's first metadata, or its give-up).
    pub async fn ready(&self) {
        if let Some(p) = &self.processor {
            p.ready().await;
        }
    }

    /// The records of one chunk, as they will be shipped. `file` names where they were read
    /// (asked only when a converter adds it).
    pub fn run(&self, mut records: Vec<Record>, file: impl FnOnce() -> String) -> (Vec<Record>, Counts) {
        let mut counts = Counts::default();
        if let Some(keys) = &self.keys {
            keys.before_processing(&mut records);
        }
        if let Some(processor) = &self.processor {
            self.process(processor, &mut records, file, &mut counts);
        }
        if let Some(keys) = &self.keys {
            let stats = keys.after_processing(&mut records, &mut rand::rng());
            counts.key_fallbacks = stats.fallbacks;
            counts.invalid_hash_keys = stats.invalid_hash_keys;
        }
        // Firehose flows only (they carry no keys).
        (super::join::join(records, self.join_size), counts)
    }

    /// A converted record is a new buffer with the same origin; a dropped one is removed. One
    /// too big for the destination once converted is cut to the limit and ends with the
    /// terminator, as the Java agent does (or, with `oversizedRecordAction` DROP, dropped).
    fn process(
        &self,
        processor: &Processor,
        records: &mut Vec<Record>,
        file: impl FnOnce() -> String,
        counts: &mut Counts,
    ) {
        let limit = self.record_limit;
        // Where and when these records were read, for ADDSOURCEMETADATA (made only if used).
        let (file, read_time) = if processor.needs_context() {
            (file(), super::process::simple::utc_millis(std::time::SystemTime::now()))
        } else {
            Default::default()
        };
        let context = Context { file: &file, read_time: &read_time };
        records.retain_mut(|r| match processor.convert_in(&r.data, &context) {
            Applied::Converted(mut out) => {
                if out.len() > limit {
                    let Some(t) = &self.terminator else {
                        counts.oversized.dropped += 1;
                        return false;
                    };
                    out.truncate(limit - t.len());
                    out.extend_from_slice(t);
                    counts.oversized.truncated += 1;
                }
                r.data = Bytes::from(out);
                true
            }
            Applied::Failed => {
                counts.failed += 1;
                true
            }
            Applied::Dropped => {
                counts.skipped += 1;
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile::{csv_delimiter, field_key};
    use crate::config::{CsvSplit, DerivedKey, JsonFormat, KeyFallback, LogFormat, LogMatch, ProcessingOption};
    use crate::types::record::Origin;

    fn rec(text: &str) -> Record {
        Record { data: Bytes::copy_from_slice(text.as_bytes()), origin: Origin { file: 1, chunk: 0 }, key: None }
    }

    fn pipeline(options: &[ProcessingOption], limit: usize, terminator: Option<&[u8]>) -> Pipeline {
        Pipeline {
            record_limit: limit,
            terminator: terminator.map(<[u8]>::to_vec),
            processor: Processor::new(options).map(Arc::new),
            keys: None,
            join_size: 0,
        }
    }

    #[test]
    fn converted_records_are_held_to_the_limit() {
        let csv = ProcessingOption::CsvToJson {
            fields: vec!["a".into(), "b".into()],
            split: CsvSplit::Regex(csv_delimiter(",").unwrap()),
            json: JsonFormat::Compact,
        };
        let lines = || vec![rec("1,2\n"), rec("1234567890,2\n")];
        let (out, counts) = pipeline(std::slice::from_ref(&csv), 20, Some(b"~\n")).run(lines(), String::new);
        assert_eq!(out[0].data.as_ref(), b"{\"a\":\"1\",\"b\":\"2\"}\n");
        assert_eq!(out[1].data.len(), 20);
        assert!(out[1].data.ends_with(b"~\n"));
        assert_eq!(counts.oversized, SplitStats { truncated: 1, ..Default::default() });
        let (out, counts) = pipeline(&[csv], 20, None).run(lines(), String::new);
        assert_eq!(out.len(), 1);
        assert_eq!(counts.oversized, SplitStats { dropped: 1, ..Default::default() });
    }

    #[test]
    fn dropped_records_are_counted_and_origins_kept() {
        let log = ProcessingOption::LogToJson {
            matching: LogMatch::Format { format: LogFormat::Syslog, fields: None },
            json: JsonFormat::Compact,
        };
        let lines = vec![rec("not syslog\n"), rec("Jan  1 00:00:00 h p[9]: hi\n")];
        let (out, counts) = pipeline(&[log], 1000, None).run(lines, String::new);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].origin, Origin { file: 1, chunk: 0 });
        assert_eq!(counts.skipped, 1);
    }

    #[test]
    fn keys_are_taken_after_processing() {
        let mut p = pipeline(
            &[ProcessingOption::CsvToJson {
                fields: vec!["host".into(), "user".into()],
                split: CsvSplit::Regex(csv_delimiter(",").unwrap()),
                json: JsonFormat::Compact,
            }],
            1000,
            None,
        );
        let derived =
            DerivedKey { source: field_key("$.user"), fallback: KeyFallback::Random, explicit_hash_key_field: None };
        p.keys = Some(Arc::new(KeyDeriver::new(&derived)));
        let (out, counts) = p.run(vec![rec("web-1,alice\n"), rec("web-2\n")], String::new);
        assert_eq!(&*out[0].key.as_ref().unwrap().partition, "alice");
        assert_eq!(counts.key_fallbacks, 1);
    }

    #[test]
    fn the_file_name_is_asked_only_when_a_converter_adds_it() {
        let p = pipeline(&[ProcessingOption::AddBrackets], 1000, None);
        let (out, _) = p.run(vec![rec("x\n")], || panic!("not needed"));
        assert_eq!(out[0].data.as_ref(), b"{x\n}");
    }
}
