//! A record and where it came from: what a tailer produces and a sender ships.

use super::key::RecordKey;

/// Which tracked file and which chunk of it a record came from; acknowledgements use it to
/// move that file's watermark (see `ack.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: u64,
    pub chunk: u64,
}

/// One record: the line's bytes (with its trailing newline, as the Java agent sends them). Most
/// records are slices of the buffer they were read into: no copy per line.
#[derive(Debug, Clone)]
pub struct Record {
    pub data: bytes::Bytes,
    pub origin: Origin,
    /// The record's own partition key, for flows whose keys are derived from the records
    /// (`None`: the flow's RANDOM or DETERMINISTIC key is computed when it is sent).
    pub key: Option<Box<RecordKey>>,
}

impl Record {
    /// Bytes the record counts for in Kinesis limits: its data plus its partition key
    /// (`default_key` when it carries none).
    pub fn kinesis_size(&self, default_key: usize) -> usize {
        self.data.len() + self.key.as_ref().map_or(default_key, |k| k.partition.len())
    }
}

/// A contiguous byte range of one file, read in one go, and the records it produced.
/// `end` is the offset just after the last complete line; the tailer registers the chunk with the
/// ack tracker before sending it, so chunks of a file cover its bytes without gaps.
#[derive(Debug)]
pub struct Chunk {
    pub file: u64,
    pub seq: u64,
    pub records: Vec<Record>,
    pub bytes: usize,
}
