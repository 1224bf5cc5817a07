//! eddy's storage contract, in one place: what the sinks write, the query server reads and the
//! tests check (`docs/storage.md` describes the layout; this crate is its code).
//!
//! * [`keys`]: the Redis keys (one builder per key, taking the prefix) and hash field names.
//! * [`values`]: the JSON values stored in Redis strings ([`SimilarValue`], [`CampaignsValue`]).
//! * [`rows`]: the ClickHouse tables (names) and row types, for inserts and reads alike.
//! * [`queries`]: the SQL run against ClickHouse, hourly rollups included.
//! * [`schema`]: `clickhouse/schema/*.sql`, embedded, with [`apply_schema`] and
//!   [`check_schema`].
//! * [`status`]: the status records the pipeline processes publish in Redis (`eddy status`,
//!   `GET /v1/status`).
//! * [`versions`]: which output version the query server serves, and which exist.
//! * [`retention`]: day partitions dropped after `clickhouse.retention_days`
//!   ([`drop_expired_partitions`]) and old checkpoints pruned ([`prune_checkpoints`]).
//! * [`clickhouse_client`], [`redis_client`], [`redis_connection`], [`redis_manager`]: one
//!   constructor per store, so every client talks to the stores the same way.

mod clients;
mod error;
pub mod keys;
pub mod queries;
pub mod retention;
pub mod rows;
pub mod schema;
pub mod status;
pub mod values;
pub mod versions;

pub use clients::{
    REDIS_CONNECT_TIMEOUT, REDIS_IO_TIMEOUT, clickhouse_client, clickhouse_server, redis_client,
    redis_connection, redis_manager, valid_database,
};
pub use error::StorageError;
pub use queries::*;
pub use retention::{
    DAY_MICROS, DAY_MS, DAY_PARTITIONED_TABLES, DroppedPartition, REPLAY_CHECKPOINT_MARK,
    RetentionReport, day_of_ms, drop_expired_partitions, prune_checkpoints, retention_cutoff_day,
};
pub use rows::*;
pub use schema::{
    EMBEDDED_SCHEMA, REQUIRED_TABLES, SchemaFile, apply_schema, check_schema, embedded_schema,
    schema_dir,
};
pub use values::{CampaignsValue, SimilarValue};
