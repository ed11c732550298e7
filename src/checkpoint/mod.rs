//! Checkpoints: the store (`store.rs`: the file format, its lock, pruning), the periodic writer
//! (`writer.rs`) that moves acknowledged progress into it, and `kinesis-agent status`
//! (`status.rs`), which reads it without the lock.

pub mod status;
mod store;
pub mod writer;

pub use store::*;
