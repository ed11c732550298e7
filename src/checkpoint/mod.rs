//! Checkpoints: the store (`store.rs`: the file format, its lock, pruning) and the periodic writer
//! (`writer.rs`) that moves acknowledged progress into it.

mod store;
pub mod writer;

pub use store::*;
