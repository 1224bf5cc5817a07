//! The query server's HTTP contract: every response body and query-parameter type of its
//! routes, as plain serde types (no HTTP framework), so the server renders them and every
//! client (load-gen, the tests, the bench report) deserializes them.
//!
//! Routes and field meanings are documented in the `eddy-query-server` crate docs. Times are
//! epoch milliseconds. Every answer's `as_of_ms` is the event-time watermark the answer
//! reflects; wall-clock times are in `updated_at_ms` / `freshness_ms`.

use crate::event::EventType;
use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// A store behind the query server (`clickhouse`, `redis`, `memory` on the wire).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// ClickHouse, the batch layer (finalized windows and panes, user snapshots).
    Clickhouse,
    /// Redis, the speed layer (open and recent windows, current engagement and user lists).
    Redis,
    /// The embedded demo's in-memory store (both layers).
    Memory,
}

impl Store {
    /// The wire name (`clickhouse`, `redis`, `memory`).
    pub fn as_str(self) -> &'static str {
        match self {
            Store::Clickhouse => "clickhouse",
            Store::Redis => "redis",
            Store::Memory => "memory",
        }
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one point of a counts series came from (`clickhouse`, `redis`, `memory-batch`,
/// `memory-speed`, `mixed` on the wire).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RowSource {
    /// A finalized window of the batch layer (ClickHouse).
    Clickhouse,
    /// A window of the speed layer (Redis).
    Redis,
    /// The memory backend, a window ending at or before the batch/speed boundary.
    MemoryBatch,
    /// The memory backend, a window ending after the boundary.
    MemorySpeed,
    /// An hour summed from windows of several sources.
    Mixed,
}

impl RowSource {
    /// The wire name (`clickhouse`, `redis`, `memory-batch`, `memory-speed`, `mixed`).
    pub fn as_str(self) -> &'static str {
        match self {
            RowSource::Clickhouse => "clickhouse",
            RowSource::Redis => "redis",
            RowSource::MemoryBatch => "memory-batch",
            RowSource::MemorySpeed => "memory-speed",
            RowSource::Mixed => "mixed",
        }
    }
}

impl fmt::Display for RowSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Time resolution of a counts answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// The pipeline's native window (`window_ms`, one minute by default).
    #[default]
    Minute,
    /// Native windows summed per hour (bucketed by window start).
    Hour,
}

impl Granularity {
    /// The wire name (`minute`, `hour`).
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OpenAPI schema of [`EventType`] (defined outside this module): one of its wire names.
impl utoipa::PartialSchema for EventType {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Kind of user interaction."))
            .enum_values(Some(EventType::ALL.map(EventType::as_str)))
            .into()
    }
}

impl ToSchema for EventType {}

mod counts;
mod engagement;
mod health;
mod status;

pub use counts::*;
pub use engagement::*;
pub use health::*;
pub use status::*;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stores_and_sources_keep_their_wire_names() {
        for s in [Store::Clickhouse, Store::Redis, Store::Memory] {
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
        for s in [
            RowSource::Clickhouse,
            RowSource::Redis,
            RowSource::MemoryBatch,
            RowSource::MemorySpeed,
            RowSource::Mixed,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
        assert_eq!(RowSource::MemoryBatch.as_str(), "memory-batch");
        let h: HealthResponse =
            serde_json::from_value(json!({"status": "ok", "stores": {"redis": "ok"}})).unwrap();
        assert_eq!(h.stores[&Store::Redis], "ok");
    }

    #[test]
    fn flattened_meta_round_trips() {
        let body = json!({"user_id": 1, "k": 2, "as_of_ms": 3, "updated_at_ms": null,
                          "freshness_ms": null, "source": "redis", "similar": []});
        let r: SimilarUsersResponse = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(r.meta.source, Store::Redis);
        assert_eq!(serde_json::to_value(&r).unwrap(), body);
    }
}
