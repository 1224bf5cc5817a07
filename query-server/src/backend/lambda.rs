//! Backend over the production stores: ClickHouse (batch layer) and Redis (speed layer), laid
//! out as in `docs/storage.md`.

mod batch;
mod engagement;
mod hourly;
mod speed;

use speed::{Meta, batch_row, parse_i64, type_amounts};

use super::batch_cache::{BatchCache, HourRow};
use super::negative_cache::NegativeCache;
use super::{
    Amounts, Backend, BackendAnswer, BackendError, BoxFuture, EngagementQuery, LayerStatus,
    RowSource, Sourced, Store, StoreHealth, WindowQuery, WindowRow,
};
use eddy_core::config::{ClickHouseConfig, RedisConfig};
use eddy_core::{CampaignEngagement, EventType, Neighbor, Recommendation};
use eddy_storage::keys::{self, type_window as wf};
use eddy_storage::{
    CAMPAIGN_WINDOWS_OF_TYPE_QUERY, CAMPAIGN_WINDOWS_QUERY, CampaignWindowRow,
    LATEST_WATERMARK_QUERY, LatestWatermarkRow, TYPE_WINDOWS_OF_TYPE_QUERY, TYPE_WINDOWS_QUERY,
    TypeWindowRow,
};
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Default bound on each store round (connect + query).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Merges ClickHouse and Redis per `docs/storage.md`.
///
/// Per query: read `{p}:boundary`, `{p}:watermark`, `{p}:as_of` from Redis (boundary falls back
/// to `max(watermark_ms)` of ClickHouse's `source_checkpoints` when Redis has none); then, in
/// parallel, windows ending at or before the boundary from ClickHouse (`FINAL`, values bound
/// with `?`), and every window in range from Redis (`ZRANGEBYSCORE` on the `{p}:tw:{type}` or
/// `{p}:cw:{campaign}:{type}` index, then pipelined `HGETALL`), keeping Redis rows only after the
/// boundary (or all of them when ClickHouse failed). With Redis down, ClickHouse answers alone
/// (every finalized window it holds, boundary from `source_checkpoints`). Each store round is
/// bounded by a timeout (2 s by default, see [`LambdaBackend::with_timeout`]).
///
/// Campaign engagement, the top list, similar users and recommendations are read
/// cache-aside: Redis first; on a miss or a Redis failure, ClickHouse, and the answer says so
/// (`source: "clickhouse"`). A campaign or the top list is then recomputed from the
/// `campaign_engagement` panes of the sliding window ending at the batch/speed boundary
/// (`{p}:boundary`, or with Redis down the latest checkpoint's watermark), scored with the
/// configured weights; similar users and recommendations come from the user's latest
/// snapshot (an empty one: none). Neither store knowing the value is `Ok(None)`; ClickHouse
/// failing after Redis missed or failed is [`BackendError::Unavailable`].
///
/// Connections are made lazily on first use (the constructor does no I/O) and the Redis
/// connection reconnects by itself after a failure.
pub struct LambdaBackend {
    redis_client: redis::Client,
    redis: tokio::sync::OnceCell<ConnectionManager>,
    prefix: String,
    ch: clickhouse::Client,
    timeout: Duration,
    /// Finalized windows already read from ClickHouse (they never change).
    batch_cache: std::sync::Mutex<BatchCache>,
    /// Whole finalized hours already read from the hourly rollups (they never change either).
    hours_cache: std::sync::Mutex<BatchCache<HourRow>>,
    /// Campaigns and users ClickHouse did not know at the current boundary.
    negative: std::sync::Mutex<NegativeCache>,
    /// ClickHouse queries sent ([`LambdaBackend::clickhouse_queries`]).
    ch_queries: AtomicU64,
}

impl std::fmt::Debug for LambdaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaBackend")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LambdaBackend {
    /// A backend for the Redis at `redis_cfg.url` (keys under `redis_cfg.prefix`) and the
    /// ClickHouse at `ch_cfg.url` (database, user, password from `ch_cfg`; schema validation
    /// off, for ClickHouse 18.16: [`eddy_storage::clickhouse_client`]). Fails only on a
    /// malformed Redis URL or database name; no I/O happens here.
    pub fn new(redis_cfg: &RedisConfig, ch_cfg: &ClickHouseConfig) -> Result<Self, BackendError> {
        let invalid = |e: eddy_storage::StorageError| BackendError::Unavailable(e.to_string());
        let redis_client = eddy_storage::redis_client(redis_cfg).map_err(invalid)?;
        let ch = eddy_storage::clickhouse_client(ch_cfg).map_err(invalid)?;
        Ok(Self {
            redis_client,
            redis: tokio::sync::OnceCell::new(),
            prefix: redis_cfg.prefix.clone(),
            ch,
            timeout: DEFAULT_TIMEOUT,
            batch_cache: std::sync::Mutex::default(),
            hours_cache: std::sync::Mutex::default(),
            negative: std::sync::Mutex::default(),
            ch_queries: AtomicU64::new(0),
        })
    }

    /// Sets the negative cache's bounds (default 100 000 entries, 30 s): campaigns and users
    /// that neither store knows are remembered for at most `ttl`, and until the batch/speed
    /// boundary moves, so repeating such a lookup costs no ClickHouse query. Call before the
    /// first query.
    pub fn with_negative_cache(mut self, max_entries: usize, ttl: Duration) -> Self {
        self.negative = std::sync::Mutex::new(NegativeCache::new(max_entries, ttl));
        self
    }

    /// Sets the finalized-window caches' bounds (default 16 384 series and 500 000 rows
    /// each, for minutes and for hours): past them the least recently used series is dropped.
    /// Call before the first query.
    pub fn with_batch_cache(mut self, max_series: usize, max_rows: usize) -> Self {
        self.batch_cache = std::sync::Mutex::new(BatchCache::with_limits(max_series, max_rows));
        self.hours_cache = std::sync::Mutex::new(BatchCache::with_limits(max_series, max_rows));
        self
    }

    /// ClickHouse queries sent so far (every read, the health check included): for tests and
    /// diagnostics of how much load reads put on the batch layer.
    pub fn clickhouse_queries(&self) -> u64 {
        self.ch_queries.load(Ordering::Relaxed)
    }

    /// A ClickHouse query, counted.
    fn ch_query(&self, sql: &str) -> clickhouse::query::Query {
        self.ch_queries.fetch_add(1, Ordering::Relaxed);
        self.ch.query(sql)
    }

    fn negative(&self) -> std::sync::MutexGuard<'_, NegativeCache> {
        self.negative.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the bound on each store round (default 2 s). Call before the first query.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn timed<T, E: Display>(
        &self,
        store: &str,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{store}: {e}")),
            Err(_) => Err(format!(
                "{store}: timed out after {} ms",
                self.timeout.as_millis()
            )),
        }
    }

    /// The answer to `q`; with `hourly`, whole finalized hours come from the hourly rollups
    /// (see `hourly`).
    async fn answer(&self, q: WindowQuery, hourly: bool) -> Result<BackendAnswer, BackendError> {
        let w = q.window_ms;
        let meta = match self.timed("redis", self.redis_meta()).await {
            Ok(meta) => meta,
            Err(redis_err) => return self.answer_without_redis(q, hourly, redis_err).await,
        };
        let (boundary, boundary_err) = match meta.boundary {
            Some(b) => (Some(b), None),
            None => match self.timed("clickhouse", self.ch_boundary()).await {
                Ok(b) => (b, None),
                Err(e) => (None, Some(e)),
            },
        };
        let is_batch = |start: i64| boundary.is_some_and(|b| start.saturating_add(w) <= b);
        // Windows ending at or before the boundary: start <= boundary - w.
        let batch_to = boundary.map(|b| q.to_ms.min(b.saturating_sub(w).saturating_add(1)));
        let batch_fut = async {
            match batch_to {
                Some(to) if q.from_ms < to => Some(
                    self.timed("clickhouse", self.finalized(q, to, hourly, true))
                        .await,
                ),
                _ => None,
            }
        };
        let speed_fut = self.timed("redis", self.redis_windows(q));
        let (batch_res, speed_res) = tokio::join!(batch_fut, speed_fut);

        let mut rows = Vec::new();
        let batch = match batch_res {
            Some(Ok(r)) => {
                rows.extend(r.rows);
                LayerStatus::ok(Store::Clickhouse, r.windows)
            }
            Some(Err(e)) => LayerStatus::failed(Store::Clickhouse, e),
            None => match boundary_err {
                Some(e) => LayerStatus::failed(Store::Clickhouse, e),
                None => LayerStatus::skipped(Store::Clickhouse),
            },
        };
        let batch_ok = batch.available == Some(true);
        let speed = match speed_res {
            Ok(r) => {
                let before = rows.len();
                rows.extend(
                    r.into_iter()
                        .filter(|row| !(batch_ok && is_batch(row.window_start_ms))),
                );
                LayerStatus::ok(Store::Redis, rows.len() - before)
            }
            Err(e) => {
                if !batch_ok {
                    let why = batch.error.as_deref().unwrap_or("clickhouse not consulted");
                    return Err(BackendError::Unavailable(format!("{e}; {why}")));
                }
                LayerStatus::failed(Store::Redis, e)
            }
        };
        Ok(BackendAnswer {
            watermark_ms: meta.watermark,
            boundary_ms: boundary,
            updated_at_ms: meta.as_of,
            batch,
            speed,
            rows,
        })
    }

    /// Redis is down: every finalized window ClickHouse holds in range.
    async fn answer_without_redis(
        &self,
        q: WindowQuery,
        hourly: bool,
        redis_err: String,
    ) -> Result<BackendAnswer, BackendError> {
        // Uncached: without the boundary, windows in range may still become final.
        let (boundary, found) = tokio::join!(
            self.timed("clickhouse", self.ch_boundary()),
            self.timed("clickhouse", self.finalized(q, q.to_ms, hourly, false)),
        );
        let found = found.map_err(|e| BackendError::Unavailable(format!("{redis_err}; {e}")))?;
        Ok(BackendAnswer {
            watermark_ms: None,
            boundary_ms: boundary.ok().flatten(),
            updated_at_ms: None,
            batch: LayerStatus::ok(Store::Clickhouse, found.windows),
            speed: LayerStatus::failed(Store::Redis, redis_err),
            rows: found.rows,
        })
    }

    async fn check(&self) -> Vec<StoreHealth> {
        let redis = async {
            let mut conn = self.redis_conn().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        let ch = self.ch_query("SELECT 1").fetch_one::<u8>();
        let (r, c) = tokio::join!(self.timed("redis", redis), self.timed("clickhouse", ch));
        vec![
            StoreHealth {
                store: Store::Redis,
                status: r.map(drop),
            },
            StoreHealth {
                store: Store::Clickhouse,
                status: c.map(drop),
            },
        ]
    }
}

impl Backend for LambdaBackend {
    fn counts(&self, query: WindowQuery) -> BoxFuture<'_, Result<BackendAnswer, BackendError>> {
        Box::pin(self.answer(query, false))
    }

    fn hourly_counts(
        &self,
        query: WindowQuery,
    ) -> BoxFuture<'_, Result<BackendAnswer, BackendError>> {
        Box::pin(self.answer(query, true))
    }

    fn health(&self) -> BoxFuture<'_, Vec<StoreHealth>> {
        Box::pin(self.check())
    }

    fn campaign(
        &self,
        query: EngagementQuery,
        campaign_id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<CampaignEngagement>>, BackendError>> {
        Box::pin(self.campaign_answer(query, campaign_id))
    }

    fn top_campaigns(
        &self,
        query: EngagementQuery,
        k: usize,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<CampaignEngagement>>>, BackendError>> {
        Box::pin(self.top_answer(query, k))
    }

    fn similar_users(
        &self,
        user_id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Neighbor>>>, BackendError>> {
        Box::pin(self.similar_answer(user_id))
    }

    fn recommendations(
        &self,
        query: EngagementQuery,
        user_id: u64,
        n: usize,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Recommendation>>>, BackendError>> {
        Box::pin(self.recommendations_answer(query, user_id, n))
    }
}
