//! Discovery: which files a flow follows and from where. `pattern` finds the files, `decide` holds
//! the identity decisions (a copy, a stale checkpoint, a file gone, an archive settled or done) as
//! plain functions, and `follow` is the per-flow loop that applies them and starts a tailer per
//! file (`copies`: the new files that may be copies of followed ones; `archives`: the compressed
//! files the pattern names, each read once).

mod archives;
mod copies;
pub mod decide;
mod follow;
pub mod pattern;

#[cfg(test)]
mod model_tests;

pub use follow::{Discovery, FlowWatch};
pub use pattern::{COMPRESSED_SUFFIXES, Found, Pattern, absolute, is_compressed};
