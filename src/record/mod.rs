//! Records: what a tailer produces from file bytes and a sender ships.

pub mod join;
pub mod key;
pub mod multiline;
pub mod pipeline;
pub mod process;
pub mod split;
