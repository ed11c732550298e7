//! kinesis-agent: tails files matching glob patterns and ships their lines to Kinesis Data
//! Streams (PutRecords) or Firehose (PutRecordBatch), with checkpoints that only move over
//! acknowledged records. See DESIGN.md for the data flow; `agent::run` wires the stages.

pub mod ack;
pub mod agent;
pub mod aws;
pub mod check;
pub mod checkpoint;
pub mod config;
pub mod discovery;
pub mod ec2;
pub mod metrics;
pub mod progress;
pub mod record;
pub mod service;
pub mod sink;
pub mod tail;
