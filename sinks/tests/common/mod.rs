//! Shared helpers of the integration tests: real Redis and ClickHouse started by
//! `scripts/services up redis clickhouse`, once per test binary.

#![allow(dead_code)]

use eddy_core::config::{ClickHouseConfig, RedisConfig};
use eddy_core::{
    CampaignEngagement, CampaignWindowCount, CountsBatch, EventType, Neighbor, PaneEngagement,
    Recommendation, Score, SimilarUsers, SimilarityBatch, TypeWindowStats, UserRecommendations,
    Weights,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts Redis and ClickHouse (idempotent).
pub fn services() {
    eddy_testkit::services(&["redis", "clickhouse"]);
}

/// A Redis config with its own prefix; every key under it is deleted first.
pub fn redis_cfg(name: &str) -> RedisConfig {
    services();
    let cfg = RedisConfig {
        prefix: format!("eddy_test_{name}"),
        ..RedisConfig::default()
    };
    let mut con = redis_conn(&cfg);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", cfg.prefix))
        .query(&mut con)
        .unwrap();
    if !keys.is_empty() {
        redis::cmd("DEL").arg(&keys).exec(&mut con).unwrap();
    }
    cfg
}

/// A plain connection for reading back.
pub fn redis_conn(cfg: &RedisConfig) -> redis::Connection {
    eddy_storage::redis_connection(&eddy_storage::redis_client(cfg).unwrap()).unwrap()
}

/// A ClickHouse config for a fresh database `eddy_test_{name}` with the schema applied.
pub fn clickhouse_db(name: &str) -> ClickHouseConfig {
    services();
    let cfg = ClickHouseConfig {
        database: format!("eddy_test_{name}"),
        ..ClickHouseConfig::default()
    };
    ch_exec(&cfg, &format!("DROP DATABASE IF EXISTS {}", cfg.database));
    let applied = eddy_sinks::apply_schema(&cfg, None).unwrap();
    assert_eq!(
        applied,
        [
            "001_database.sql",
            "002_windows.sql",
            "003_rollups.sql",
            "004_checkpoints.sql",
            "005_engagement.sql"
        ]
    );
    cfg
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs a statement (no database set).
pub fn ch_exec(cfg: &ClickHouseConfig, sql: &str) {
    rt().block_on(eddy_storage::clickhouse_server(cfg).query(sql).execute())
        .unwrap();
}

/// Runs a query in `cfg.database`, with `?` binds applied by `bind`.
pub fn ch_fetch<T>(
    cfg: &ClickHouseConfig,
    sql: &str,
    bind: impl FnOnce(clickhouse::query::Query) -> clickhouse::query::Query,
) -> Vec<T>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    let q = bind(eddy_storage::clickhouse_client(cfg).unwrap().query(sql));
    rt().block_on(q.fetch_all::<T>()).unwrap()
}

/// Polls `f` until it returns `Some`, panicking after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

/// 2023-11-14T22:00:00Z, an hour boundary.
pub const HOUR: i64 = 1_699_999_200_000;
/// One-minute windows.
pub const MIN: i64 = 60_000;

/// A type-window row.
pub fn tw(
    start: i64,
    t: EventType,
    count: u64,
    sum: i64,
    min: Option<i64>,
    max: Option<i64>,
) -> TypeWindowStats {
    TypeWindowStats {
        window_start_ms: start,
        event_type: t,
        count,
        sum_micros: sum,
        min_micros: min,
        max_micros: max,
    }
}

/// A campaign-window row.
pub fn cw(start: i64, campaign_id: u64, t: EventType, count: u64) -> CampaignWindowCount {
    CampaignWindowCount {
        window_start_ms: start,
        campaign_id,
        event_type: t,
        count,
    }
}

/// An empty batch at `epoch` with `watermark_ms` and one-minute windows.
pub fn batch(epoch: u64, watermark_ms: i64) -> CountsBatch {
    CountsBatch {
        epoch,
        watermark_ms,
        window_size_ms: MIN,
        ..CountsBatch::default()
    }
}

/// An empty slow-path batch of `epoch`, stamped `as_of_ms`, for a `sliding_ms` window.
pub fn sim_batch(epoch: u64, as_of_ms: i64, sliding_ms: i64) -> SimilarityBatch {
    SimilarityBatch {
        epoch,
        as_of_ms,
        sliding_ms,
        ..SimilarityBatch::default()
    }
}

/// Campaign engagement with the default weights' score.
pub fn eng(
    campaign_id: u64,
    views: u64,
    clicks: u64,
    conversions: u64,
    revenue: i64,
) -> CampaignEngagement {
    CampaignEngagement {
        campaign_id,
        views,
        clicks,
        conversions,
        revenue_micros: revenue,
        score: Weights::default().score(views, clicks, conversions),
    }
}

/// Engagement of one finalized pane.
pub fn pane(
    window_start_ms: i64,
    campaign_id: u64,
    views: u64,
    clicks: u64,
    conversions: u64,
    revenue: i64,
) -> PaneEngagement {
    PaneEngagement {
        window_start_ms,
        campaign_id,
        views,
        clicks,
        conversions,
        revenue_micros: revenue,
    }
}

/// A similar user.
pub fn nb(user_id: u64, shared: u32, union: u32) -> Neighbor {
    Neighbor {
        user_id,
        shared,
        union,
    }
}

/// A user's similar users.
pub fn similar(user_id: u64, neighbors: Vec<Neighbor>) -> SimilarUsers {
    SimilarUsers { user_id, neighbors }
}

/// A recommendation.
pub fn rec(
    campaign_id: u64,
    score: f64,
    campaign_score: f64,
    because: Vec<Neighbor>,
) -> Recommendation {
    Recommendation {
        campaign_id,
        score: Score(score),
        campaign_score: Score(campaign_score),
        because,
    }
}

/// A user's recommendations.
pub fn recs(user_id: u64, items: Vec<Recommendation>) -> UserRecommendations {
    UserRecommendations { user_id, items }
}
