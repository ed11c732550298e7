//! The sending side: a batcher per flow packs records into requests within the destination's
//! limits (for Kinesis flows with `kplAggregation`, first into KPL aggregates that never span
//! shards); each request is delivered by a sender task that retries only what failed, at a pace
//! the destination's throttling sets.

pub mod aggregate;
pub mod batcher;
pub mod budget;
pub mod client;
pub mod kpl;
#[cfg(test)]
pub mod memory;
pub mod order;
pub mod pace;
pub mod retry;
pub mod sender;
pub mod shards;
pub mod wire;
