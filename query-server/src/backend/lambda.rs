//! Backend over the production stores: ClickHouse (batch layer) and Redis (speed layer), laid
//! out as in `docs/storage.md`.

mod engagement;
mod hourly;

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

/// Speed-layer metadata keys.
#[derive(Debug, Default)]
struct Meta {
    boundary: Option<i64>,
    watermark: Option<i64>,
    as_of: Option<i64>,
}

fn parse_i64(v: Option<&String>) -> Option<i64> {
    v.and_then(|s| s.trim().parse().ok())
}

/// A finalized row as the batch layer (ClickHouse) answers it.
fn batch_row(
    window_start_ms: i64,
    event_type: EventType,
    campaign_id: Option<u64>,
    count: u64,
    amounts: Option<Amounts>,
) -> WindowRow {
    WindowRow {
        window_start_ms,
        event_type,
        campaign_id,
        count,
        amounts,
        is_final: true,
        source: RowSource::Clickhouse,
    }
}

/// The amounts of a type series' row (windows and hours alike).
fn type_amounts(sum_micros: i64, min_micros: Option<i64>, max_micros: Option<i64>) -> Amounts {
    Amounts {
        sum_micros,
        min_micros,
        max_micros,
    }
}

impl Meta {
    /// The reply of `MGET` on [`keys::meta`].
    fn parse(vals: &[Option<String>]) -> Self {
        let at = |i: usize| parse_i64(vals.get(i).and_then(Option::as_ref));
        Self {
            boundary: at(0),
            watermark: at(1),
            as_of: at(2),
        }
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

    async fn redis_conn(&self) -> redis::RedisResult<ConnectionManager> {
        let conn = self
            .redis
            .get_or_try_init(|| async {
                eddy_storage::redis_manager(&self.redis_client, self.timeout)
            })
            .await?;
        Ok(conn.clone())
    }

    async fn redis_meta(&self) -> redis::RedisResult<Meta> {
        let mut conn = self.redis_conn().await?;
        let vals: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys::meta(&self.prefix)[..])
            .query_async(&mut conn)
            .await?;
        Ok(Meta::parse(&vals))
    }

    fn index_key(&self, q: &WindowQuery, t: EventType) -> String {
        match q.campaign_id {
            None => keys::type_windows(&self.prefix, t),
            Some(c) => keys::campaign_windows(&self.prefix, c, t),
        }
    }

    /// Every window in the query's range that Redis still holds.
    async fn redis_windows(&self, q: WindowQuery) -> redis::RedisResult<Vec<WindowRow>> {
        if q.from_ms >= q.to_ms {
            return Ok(Vec::new());
        }
        let mut conn = self.redis_conn().await?;
        let types = q.types();
        let mut pipe = redis::pipe();
        for &t in &types {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(self.index_key(&q, t))
                .arg(q.from_ms)
                .arg(q.to_ms - 1);
        }
        let members: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        let mut wanted: Vec<(EventType, i64)> = Vec::new();
        for (&t, starts) in types.iter().zip(members) {
            for m in starts {
                match m.parse::<i64>() {
                    Ok(s) if (q.from_ms..q.to_ms).contains(&s) => wanted.push((t, s)),
                    Ok(_) => {}
                    Err(_) => {
                        tracing::warn!(member = %m, "ignoring non-integer window index member")
                    }
                }
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for &(t, s) in &wanted {
            pipe.cmd("HGETALL")
                .arg(keys::window_in(&self.index_key(&q, t), s));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        let mut rows = Vec::with_capacity(wanted.len());
        for ((t, s), h) in wanted.into_iter().zip(hashes) {
            // An empty hash: the window key expired while its index entry remains.
            let Some(count) = h.get(wf::COUNT).and_then(|c| c.trim().parse::<u64>().ok()) else {
                continue;
            };
            let amounts = match q.campaign_id {
                Some(_) => None,
                None => Some(Amounts {
                    sum_micros: parse_i64(h.get(wf::SUM)).unwrap_or(0),
                    min_micros: parse_i64(h.get(wf::MIN)),
                    max_micros: parse_i64(h.get(wf::MAX)),
                }),
            };
            rows.push(WindowRow {
                window_start_ms: s,
                event_type: t,
                campaign_id: q.campaign_id,
                count,
                amounts,
                is_final: h.get(wf::FINAL).is_some_and(|f| f.trim() == "1"),
                source: RowSource::Redis,
            });
        }
        Ok(rows)
    }

    /// The rows of `sql`, a query on one series (docs/storage.md): with the `campaign` bound
    /// first if any, then `from` and `to`, then the `event_type` if any (a query of one type).
    async fn ch_series<R>(
        &self,
        sql: &str,
        campaign: Option<u64>,
        (from, to): (i64, i64),
        event_type: Option<EventType>,
    ) -> clickhouse::error::Result<Vec<R>>
    where
        R: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let mut query = self.ch_query(sql);
        if let Some(c) = campaign {
            query = query.bind(c);
        }
        query = query.bind(from).bind(to);
        if let Some(t) = event_type {
            query = query.bind(t.as_str());
        }
        query.fetch_all().await
    }

    /// Finalized windows with `from_ms <= start < to_ms` from ClickHouse.
    async fn ch_windows(
        &self,
        q: WindowQuery,
        to_ms: i64,
    ) -> clickhouse::error::Result<Vec<WindowRow>> {
        let (c, t, range) = (q.campaign_id, q.event_type, (q.from_ms, to_ms));
        let row = |start, event_type: &str, count, amounts| {
            let event_type = EventType::parse(event_type)?;
            Some(batch_row(start, event_type, c, count, amounts))
        };
        Ok(match c {
            None => {
                let sql = match t {
                    None => TYPE_WINDOWS_QUERY,
                    Some(_) => TYPE_WINDOWS_OF_TYPE_QUERY,
                };
                let rows: Vec<TypeWindowRow> = self.ch_series(sql, c, range, t).await?;
                rows.into_iter()
                    .filter_map(|r| {
                        let amounts = type_amounts(r.sum_micros, r.min_micros, r.max_micros);
                        row(r.window_start_ms, &r.event_type, r.count, Some(amounts))
                    })
                    .collect()
            }
            Some(_) => {
                let sql = match t {
                    None => CAMPAIGN_WINDOWS_QUERY,
                    Some(_) => CAMPAIGN_WINDOWS_OF_TYPE_QUERY,
                };
                let rows: Vec<CampaignWindowRow> = self.ch_series(sql, c, range, t).await?;
                rows.into_iter()
                    .filter_map(|r| row(r.window_start_ms, &r.event_type, r.count, None))
                    .collect()
            }
        })
    }

    /// Finalized windows with `from_ms <= start < to_ms`: from the cache, reading ClickHouse
    /// only for the part of the range the cache lacks (see `batch_cache`).
    async fn batch_windows(
        &self,
        q: WindowQuery,
        to_ms: i64,
    ) -> clickhouse::error::Result<Vec<WindowRow>> {
        let key = (q.campaign_id, q.event_type);
        let gaps = self.cache().gaps(key, q.from_ms, to_ms);
        for (from, to) in gaps {
            let rows = self
                .ch_windows(WindowQuery { from_ms: from, ..q }, to)
                .await?;
            self.cache().insert(key, from, to, rows);
        }
        let cached = self.cache().rows(key, q.from_ms, to_ms);
        match cached {
            Some(rows) => Ok(rows),
            // Another request replaced the span meanwhile: read the range directly.
            None => self.ch_windows(q, to_ms).await,
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, BatchCache> {
        self.batch_cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watermark of the latest checkpoint recorded in ClickHouse, if any.
    async fn ch_boundary(&self) -> clickhouse::error::Result<Option<i64>> {
        let b: LatestWatermarkRow = self.ch_query(LATEST_WATERMARK_QUERY).fetch_one().await?;
        Ok((b.checkpoints > 0).then_some(b.watermark_ms))
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
        user_id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Recommendation>>>, BackendError>> {
        Box::pin(self.recommendations_answer(user_id))
    }
}
