//! Idempotent, batch-atomic sinks for eddy.
//!
//! * [`RedisSink`]: the speed layer (open and recently final windows, with TTLs).
//! * [`ClickHouseSink`]: the batch layer (finalized windows only, plus hourly rollups kept by
//!   materialized views).
//! * [`MemorySink`]: the in-process [`MemoryStore`](eddy_core::MemoryStore) of `eddy demo`.
//! * [`ClickHouseCheckpoints`] / [`MemoryCheckpoints`]: where source checkpoints live.
//! * [`SinkWorker`]: runs one sink on its own thread with a bounded queue, retries with capped
//!   exponential backoff, and coalesces queued batches when the store falls behind.
//!
//! Every sink write is blocking, atomic per [`CountsBatch`] and idempotent (values are absolute,
//! never increments). The storage layout is the contract in `docs/storage.md`, in code
//! [`eddy_storage`] (keys, values, rows, queries, schema, clients).

mod batch;
mod clickhouse_sink;
mod error;
mod memory;
mod redis_sink;
mod runtime;
mod worker;

pub use batch::{Batch, merge_batches};
pub use clickhouse_sink::{
    ClickHouseCheckpoints, ClickHouseSink, SlidingState, apply_retention, apply_schema,
    check_schema, drop_database,
};
pub use error::SinkError;
pub use memory::{MemoryCheckpoints, MemoryDeadLetters, MemorySink};
pub use redis_sink::RedisSink;
pub use worker::{SHUTDOWN_ATTEMPTS, SinkWorker};

use eddy_core::{Checkpoint, CountsBatch};

/// A store that receives one batch (by default a [`CountsBatch`]) per dataflow epoch.
pub trait EpochSink<B: Batch = CountsBatch>: Send + 'static {
    /// Short name used in logs and metric labels: `redis`, `clickhouse` or `memory`.
    fn name(&self) -> &'static str;
    /// Writes `batch`, blocking until it is durable. Atomic per batch (readers see all of it or
    /// none of it) and idempotent (writing the same batch again changes nothing).
    fn write(&mut self, batch: &B) -> Result<(), SinkError>;
}

/// Where source checkpoints are kept.
pub trait CheckpointStore: Send + 'static {
    /// The latest consistent checkpoint of `topic` (every partition row of the highest
    /// version), or `None` if none was ever saved.
    fn load(&mut self, topic: &str) -> Result<Option<Checkpoint>, SinkError>;
    /// Saves `cp` atomically (all partitions at once) under a version newer than any saved or
    /// loaded before by this store.
    fn save(&mut self, cp: &Checkpoint) -> Result<(), SinkError>;
}

impl<B: Batch, S: EpochSink<B> + ?Sized> EpochSink<B> for Box<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn write(&mut self, batch: &B) -> Result<(), SinkError> {
        (**self).write(batch)
    }
}

impl<S: CheckpointStore + ?Sized> CheckpointStore for Box<S> {
    fn load(&mut self, topic: &str) -> Result<Option<Checkpoint>, SinkError> {
        (**self).load(topic)
    }
    fn save(&mut self, cp: &Checkpoint) -> Result<(), SinkError> {
        (**self).save(cp)
    }
}

/// A strictly increasing version number based on the wall clock (microseconds since the Unix
/// epoch), never lower than `last + 1`.
pub(crate) fn next_version(last: &mut u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    *last = now.max(last.saturating_add(1));
    *last
}
