//! Discovery: which files a flow follows and from where. `pattern` finds the files, `decide` holds
//! the identity decisions (a copy, a stale checkpoint, a file gone) as plain functions, and
//! `follow` is the per-flow loop that applies them and starts a tailer per file (`copies`: the
//! new files that may be copies of followed ones).

mod copies;
pub mod decide;
mod follow;
pub mod pattern;

#[cfg(test)]
mod model_tests;

pub use follow::{Discovery, FlowWatch};
pub use pattern::{COMPRESSED_SUFFIXES, Found, Pattern, absolute, is_compressed};
