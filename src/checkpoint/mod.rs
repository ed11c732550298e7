//! Checkpoints: the store (`store.rs`: the file format, its lock, pruning) and the periodic
//! writer (`writer.rs`) that moves acknowledged progress into it. (`kinesis-agent status` reads
//! the file without the lock: `commands/status.rs`.)

mod store;
pub mod writer;

pub use store::*;

use std::path::PathBuf;
use std::sync::Arc;

use crate::types::identity::{FileId, Sample};

/// Files whose tracking ended (deleted and fully acknowledged): drop their checkpoints.
pub type Forgotten = Vec<(Arc<str>, FileId)>;

/// What the checkpoint store needs to know about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub flow: Arc<str>,
    pub path: PathBuf,
    /// The path it had when first tracked, if it has moved since.
    pub was: Option<PathBuf>,
    pub id: FileId,
    pub offset: u64,
    pub head: Option<Sample>,
    pub marker: Option<Sample>,
}
