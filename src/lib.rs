//! kinesis-agent: tails files matching glob patterns and ships their lines to Kinesis Data
//! Streams (PutRecords) or Firehose (PutRecordBatch), with checkpoints that only move over
//! acknowledged records.
//!
//! # Layout
//!
//! The tree follows the data flow (DESIGN.md): `config` → `discovery` → `tail` → `record` →
//! `sink` → `ack` → `checkpoint`. Each stage owns its state; a stage imports later stages and the
//! shared modules, never an earlier stage; `config` and `types` import no stage; only `main`
//! imports `agent`. `layout_tests.rs` checks this (and file sizes) on every test run.
//!
//! - `config`: agent.json and agent.d/ → a validated configuration (the key table, coercions of
//!   the Java agent's loose values, the rules by which patterns, regexes and JSON paths compile).
//! - `discovery`: which files a flow follows and from where: the pattern scan, the identity
//!   decisions (copy, stale checkpoint, file gone, archive settled) as plain functions, and the
//!   per-flow loop that starts a tailer per file.
//! - `tail`: reads and follows one file (and decompresses archives), registers each chunk with
//!   the ack tracker, and hands it to the batcher over a bounded channel.
//! - `record`: bytes → records: line splitting, multi-line messages, `dataProcessingOptions`,
//!   derived partition keys, Firehose record joining.
//! - `sink`: batching, KPL aggregation, the per-key order gate, the request to the destination,
//!   the sender with its retries, and the pacer that follows throttling.
//! - `ack`: the per-file watermark over acknowledged chunks.
//! - `checkpoint`: the checkpoint file (format, lock, pruning) and the writer that moves the
//!   acknowledged watermarks into it.
//! - `types`: the data that crosses stages: records and their origin, partition keys, file
//!   identity and fingerprints.
//! - `metrics`: the counters, declared once; Prometheus, CloudWatch, the status line and the
//!   `--once` summary are derived from that list.
//! - `service`: signals, the systemd protocol, the log file, proxies and the trusted CAs.
//! - `aws`: the AWS clients (region, credentials, endpoints; the SDK's retries off); `ec2`: the
//!   instance metadata service.
//! - `commands`: `--check-config` and `status`.
//! - `agent`: wires the stages: start, supervision, one flow's tasks, reload, what the running
//!   agent reports, the `--once` progress display.

pub mod ack;
pub mod agent;
pub mod aws;
pub mod checkpoint;
pub mod commands;
pub mod config;
pub mod discovery;
pub mod ec2;
pub mod metrics;
pub mod record;
pub mod service;
pub mod sink;
pub mod tail;
pub mod types;

#[cfg(test)]
mod layout_tests;
