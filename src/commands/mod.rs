//! The one-shot commands beside the daemon: `--check-config` (`show` prints the configuration,
//! `check` the destinations' checks) and `status`, which reads
//! the checkpoint file without its lock. They may use any stage; no stage uses them.

pub mod check;
pub mod show;
pub mod status;
