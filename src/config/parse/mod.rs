//! The key table and the raw JSON side of `config::load`: comments stripped, the Java agent's
//! coercions applied, every key checked against the table, and every problem of a load collected.
//! Split by concern: `keys` (the table), `load` (files and sections), `json`, `values`,
//! `partition_key`, `processing`.

mod destination;
#[cfg(test)]
mod dropin_tests;
mod flow_keys;
mod json;
mod keys;
mod load;
mod partition_key;
mod processing;
#[cfg(test)]
mod tests;
mod values;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use json_comments::CommentSettings;
use serde_json::{Map, Value};

use super::{
    AgentConfig, AwsSettings, ConfigError, ConfigErrors, DEFAULT_CHECKPOINT_FILE, DEFAULT_MAX_IN_FLIGHT_BYTES,
    Destination, FIREHOSE_MAX_BATCH_BYTES, FIREHOSE_MAX_RECORD_BYTES, FlowConfig, InitialPosition,
    KINESIS_MAX_BATCH_BYTES, KINESIS_MAX_RECORD_BYTES, OversizedRecordAction, PartitionKeyOption, Secret,
};
use super::{CaptureGroup, DEFAULT_KPL_AGGREGATION_BYTES, DerivedKey, KeyFallback, KeySource};
use super::{
    CloudWatchSettings, CsvSplit, FlowAws, JsonFormat, LogFormat, LogSettings, ProcessingOption, SourceFields,
};

use json::*;
use keys::*;
pub use keys::{KeyInfo, KeyStatus, Scope, known_keys};
use load::*;
pub(crate) use load::{checkpoint_file, load, load_str};
use partition_key::*;
use values::*;
