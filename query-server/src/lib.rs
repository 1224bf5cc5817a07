//! eddy's HTTP query server: answers window-count queries by merging the batch layer
//! (ClickHouse: finalized windows) and the speed layer (Redis: open and recently closed windows),
//! or, in the embedded demo, an in-memory [`MemoryStore`](eddy_core::MemoryStore).
//!
//! It also serves campaign engagement over a sliding window, the top campaigns, similar users
//! and recommendations, and a live dashboard at `/` ([`dashboard`]).
//!
//! Build the router with [`app`] from an [`AppState`], and run it with [`serve`] or
//! [`serve_with_shutdown`]. Every response body and query-parameter type is in
//! [`eddy_core::api`], so clients deserialize the very types rendered here. Storage is behind the [`Backend`] trait, implemented by
//! [`MemoryBackend`] and [`LambdaBackend`]. The storage layout read here is the contract in
//! `docs/storage.md`.
//!
//! # Routes
//!
//! ## `GET /v1/counts`
//!
//! Query parameters ([`eddy_core::api::CountsQuery`]; any other parameter, or a repeated one,
//! is rejected):
//!
//! | name | required | value |
//! |---|---|---|
//! | `from` | yes | epoch ms (integer), inclusive: windows with `window_start >= from` |
//! | `to` | yes | epoch ms (integer), exclusive: windows with `window_start < to` |
//! | `event_type` | no | `view`, `click` or `conversion`; absent: all three |
//! | `campaign_id` | no | u64; present: per-campaign counts, absent: per-type stats |
//! | `granularity` | no | `minute` (default) or `hour` |
//!
//! `from < to` and `to - from <= max_range_ms` ([`ServerQueryLimits`]) must hold, and the
//! answer may hold at most `max_points` points per series (window starts, or hour starts with
//! `hour`, in `[from, to)`; `server.max_points`): else a 400 naming the limit. `minute` means
//! the pipeline's native window (`window_ms`, 60 s by default). `hour` sums the native windows
//! whose start falls in each hour (`count`, `sum_amount`; `min` of `min_amount`, `max` of
//! `max_amount`); an hour cut by `from`/`to` only holds the windows inside the range.
//!
//! Response (200):
//!
//! ```json
//! {
//!   "query": {"event_type": "click", "campaign_id": null, "from": 0, "to": 3600000,
//!             "granularity": "minute"},
//!   "granularity": "minute",
//!   "window_ms": 60000,
//!   "watermark_ms": 120000,
//!   "boundary_ms": 60000,
//!   "as_of_ms": 120000,
//!   "updated_at_ms": 1700000000000,
//!   "freshness_ms": 35,
//!   "degraded": false,
//!   "layers": {
//!     "batch": {"source": "clickhouse", "available": true, "windows": 1, "error": null},
//!     "speed": {"source": "redis", "available": true, "windows": 2, "error": null}
//!   },
//!   "series": [
//!     {"window_start_ms": 0, "window_end_ms": 60000, "event_type": "click",
//!      "campaign_id": null, "count": 3, "sum_amount": 1.5, "min_amount": 0.25,
//!      "max_amount": 1.0, "final": true, "source": "clickhouse"}
//!   ]
//! }
//! ```
//!
//! - `watermark_ms`: event-time watermark of the last sink batch (advisory; `null` if unknown,
//!   e.g. Redis down). `boundary_ms`: batch/speed boundary (watermark of the last checkpoint):
//!   windows ending at or before it come from the batch layer. `as_of_ms`: the event-time
//!   watermark the answer reflects, the later of the two (as in every route). `updated_at_ms`:
//!   wall-clock ms when the speed layer was last updated; `freshness_ms = now - updated_at_ms`.
//!   Each may be `null`.
//! - `layers.*.available`: `true` answered, `false` failed (then `error` says why and
//!   `degraded` is `true`), `null` not consulted (nothing in the range belongs to that layer).
//!   `windows`: native windows that layer contributed.
//! - `series`: sorted by event type (`view`, `click`, `conversion`), then `window_start_ms`.
//!   `campaign_id` is `null` for per-type rows. Amounts are decimal units (micros / 1e6):
//!   `sum_amount` is `0.0` when no event carried an amount, `min_amount`/`max_amount` are `null`
//!   then; all three are `null` in campaign rows (only counts are kept per campaign). `final`:
//!   the window (for `hour`: every window in the hour, and the hour has ended under the
//!   watermark) will not change any more. `source`: `clickhouse` (batch) or `redis` (speed) for
//!   [`LambdaBackend`]; `memory-batch` / `memory-speed` for [`MemoryBackend`] (window end at or
//!   before the boundary, or after it); `mixed` for an hour built from several sources.
//!
//! A degraded answer is still a 200: with Redis down it holds ClickHouse's finalized windows
//! only (stale but correct), with ClickHouse down the windows Redis still holds. With both down:
//! 503.
//!
//! ## Engagement, similar users, recommendations
//!
//! | route | `k` (optional) |
//! |---|---|
//! | `GET /v1/campaigns/top?k=` | default 10 (at most `engagement.top_k`), `1..=engagement.top_k` |
//! | `GET /v1/campaigns/{id}` | none (no query parameter accepted) |
//! | `GET /v1/users/{id}/similar?k=` | default and maximum `similarity.k` |
//! | `GET /v1/users/{id}/recommendations?k=` | default and maximum `similarity.recommendations` |
//!
//! `{id}` must be a u64, `k` an integer in range; anything else (or an unknown or repeated
//! parameter) is a 400. Every answer carries `as_of_ms` (the event-time watermark the values
//! reflect), `updated_at_ms` and `freshness_ms` (as in `/v1/counts`: wall-clock ms of the last
//! update of the store, and since then; `null` if unknown) and `source` (`redis`, `clickhouse`
//! or `memory`): [`eddy_core::api::AnswerMeta`]. Campaigns (one, or each of `campaigns` of the
//! top list, best first):
//!
//! ```json
//! {"campaign_id": 42, "views": 10, "clicks": 2, "conversions": 1, "revenue": 5.5,
//!  "revenue_micros": 5500000, "ctr": 0.2, "conversion_rate": 0.5, "score": 45.0,
//!  "as_of_ms": 1700000180000, "updated_at_ms": 1700000185000, "freshness_ms": 35,
//!  "source": "redis"}
//! ```
//!
//! `ctr` = clicks / views (`null` without views), `conversion_rate` = conversions / clicks
//! (`null` without clicks), `score` the weighted engagement score. The top list is
//! `{"k", "as_of_ms", "freshness_ms", "source", "campaigns": [...]}`; similar users
//! `{"user_id", "k", ..., "similar": [{"user_id", "jaccard", "shared", "union"}]}`;
//! recommendations `{"user_id", "k", ..., "recommendations": [{"campaign_id", "score",
//! "campaign_score", "because": [{"user_id", "jaccard"}]}]}`.
//!
//! 404 (`not_found`) when no store knows the campaign (no event in the sliding window), the
//! user has no similar users or recommendations (never had, or none any more), or there is no
//! top list yet. [`LambdaBackend`] reads Redis first and, on a miss or a Redis failure,
//! ClickHouse (then `source` is `clickhouse`: campaigns recomputed from the finalized panes of
//! the sliding window ending at the batch/speed boundary, users from their latest snapshot);
//! 503 when ClickHouse is needed and fails.
//!
//! ## `GET /healthz`
//!
//! 200 `{"status": "ok", "stores": {"clickhouse": "ok", "redis": "ok"}}` when every store
//! answers; otherwise 503 `{"status": "degraded", "stores": {"clickhouse": "ok", "redis":
//! "down: <reason>"}}`. The memory backend reports `{"memory": "ok"}`.
//!
//! ## `GET /metrics`
//!
//! Prometheus text (`text/plain; version=0.0.4`) of [`eddy_core::Metrics`]. Every request is
//! counted in `eddy_http_requests_total{route, status}` (`route` is the route template, or
//! `unmatched`).
//!
//! ## `GET /v1/status`
//!
//! The last status record of every pipeline process ([`eddy_core::api::StatusResponse`]):
//! consumer lag per partition, watermark and its delay behind the wall clock, checkpoints,
//! sinks, dead letters per reason, memory, replay progress; `stale` once a process has not
//! published for 5 s. Read from Redis (`eddy_storage::status`, written every second by each
//! `eddy run`) or, in the demo, digested from the server's own metrics ([`StatusSource`]).
//!
//! ## `GET /openapi.json`
//!
//! The OpenAPI 3.1 description of every route, its parameters, answers and errors
//! ([`openapi`]), generated from the handlers' `#[utoipa::path]` and the `ToSchema` /
//! `IntoParams` types of [`eddy_core::api`]; committed as `docs/openapi.json` (regenerate with
//! `EDDY_WRITE_OPENAPI=1 cargo test -p eddy-query-server --test openapi`).
//!
//! ## Errors
//!
//! Every error is JSON `{"error": {"code": "...", "message": "..."}}` ([`AppError`], rendered
//! as [`eddy_core::api::ErrorBody`]). A 400's message names the parameter at fault (e.g.
//! ``invalid query parameter `from`: invalid digit found in string``, ``invalid query: missing
//! field `to` ``, ``campaign id must be an unsigned integer, got "abc"``). Codes:
//! `bad_request` (400), `not_found` (404, unknown route, campaign or user),
//! `method_not_allowed` (405), `unavailable` (503, no store answered), `internal` (500).
//!
//! ## Overload
//!
//! Load is shed, never queued: with `max_concurrent_requests` requests in progress
//! (`server.max_concurrent_requests`), another is answered at once with a 503 `unavailable`
//! (and `Retry-After: 1`); a request running longer than `request_timeout`
//! (`server.request_timeout_ms`) is abandoned and answered the same way. [`serve`] closes a
//! connection whose request headers do not arrive within `header_read_timeout`
//! (`server.header_read_timeout_ms`).

mod backend;
pub mod dashboard;
mod engagement;
mod error;
mod openapi;
mod query;
mod routes;
mod server;
mod status;

pub use backend::Backend;
pub use backend::{
    Amounts, BackendAnswer, BackendError, BoxFuture, EngagementQuery, LambdaBackend, LayerStatus,
    MemoryBackend, REFRESH_INTERVAL, RowSource, Sourced, Store, StoreHealth, VersionedBackend,
    WindowQuery, WindowRow,
};
pub use error::AppError;
pub use query::CountsParams;
pub use server::serve_with_shutdown;
pub use status::StatusSource;

use eddy_core::{Metrics, Weights};
use std::sync::Arc;
use std::time::Duration;

/// Limits and settings the server applies to queries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerQueryLimits {
    /// Widest `to - from` one query may ask for, ms (`server.max_range_ms`).
    pub max_range_ms: i64,
    /// The pipeline's tumbling window length, ms (`pipeline.window_ms`): window ends are
    /// `start + window_ms`, and it decides which windows lie before the batch/speed boundary.
    pub window_ms: i64,
    /// Sliding window of the engagement scores, ms (`engagement.sliding_ms`).
    pub sliding_ms: i64,
    /// Engagement score weights (`engagement.weight_*`), for scores recomputed from the batch
    /// layer.
    pub weights: Weights,
    /// Length of the top list (`engagement.top_k`): the largest `k` of `/v1/campaigns/top`.
    pub top_k: usize,
    /// Similar users kept per user (`similarity.k`): default and largest `k` of
    /// `/v1/users/{id}/similar`.
    pub similar_k: usize,
    /// Recommendations kept per user (`similarity.recommendations`): default and largest `k`
    /// of `/v1/users/{id}/recommendations`.
    pub recommendations: usize,
    /// Most points per series of one `/v1/counts` answer (`server.max_points`): windows of
    /// `window_ms`, or hours with `granularity=hour`, whose start lies in `[from, to)`.
    pub max_points: usize,
    /// Time limit of one request (`server.request_timeout_ms`): past it, a 503.
    pub request_timeout: Duration,
    /// Most requests in progress at once (`server.max_concurrent_requests`): one more is
    /// answered 503 at once.
    pub max_concurrent_requests: usize,
    /// Time limit for a client to send a request's headers (`server.header_read_timeout_ms`),
    /// applied by [`serve`] and [`serve_with_shutdown`]: past it the connection is closed.
    pub header_read_timeout: Duration,
}

impl Default for ServerQueryLimits {
    fn default() -> Self {
        Self::from_config(&eddy_core::Config::default())
    }
}

impl ServerQueryLimits {
    /// Takes the `[server]` limits, `pipeline.window_ms`, the `[engagement]` settings and
    /// `similarity.k` / `similarity.recommendations` from eddy's configuration.
    pub fn from_config(config: &eddy_core::Config) -> Self {
        Self {
            max_range_ms: config.server.max_range_ms,
            window_ms: config.pipeline.window_ms,
            sliding_ms: config.engagement.sliding_ms,
            weights: config.engagement.weights(),
            top_k: config.engagement.top_k,
            similar_k: config.similarity.k,
            recommendations: config.similarity.recommendations,
            max_points: config.server.max_points,
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
            max_concurrent_requests: config.server.max_concurrent_requests,
            header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
        }
    }
}

/// Shared state of every handler (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// Where windows are read from.
    pub backend: Arc<dyn Backend>,
    /// Metrics registry: rendered on `/metrics`, and `http_requests` counts every request.
    pub metrics: Metrics,
    /// Query limits and the window length.
    pub config: ServerQueryLimits,
    /// Where `GET /v1/status` reads the pipeline's status records.
    pub status: StatusSource,
}

impl AppState {
    /// Bundles a backend, metrics and limits; `GET /v1/status` digests `metrics` as those of
    /// the pipeline (as in the demo, [`StatusSource::Local`]) until [`AppState::with_status`]
    /// says otherwise.
    pub fn new(backend: Arc<dyn Backend>, metrics: Metrics, config: ServerQueryLimits) -> Self {
        Self {
            backend,
            metrics,
            config,
            status: StatusSource::local(eddy_core::api::ProcessIdentity::this_process(0, "demo")),
        }
    }

    /// Where `GET /v1/status` reads the status records (for `eddy serve`:
    /// [`StatusSource::redis`]).
    pub fn with_status(self, status: StatusSource) -> Self {
        Self { status, ..self }
    }
}

/// The router with every route, the JSON 404/405 fallbacks, request counting and the
/// overload limits (`max_concurrent_requests`, `request_timeout` of [`ServerQueryLimits`]:
/// both answered with a JSON 503).
pub fn app(state: AppState) -> axum::Router {
    routes::router(state)
}

/// The OpenAPI 3.1 description of [`app`]'s routes, generated from the code (served at
/// `GET /openapi.json`, committed as `docs/openapi.json`).
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    routes::openapi()
}

/// The OpenAPI description as committed in `docs/openapi.json`: [`openapi`] as pretty JSON
/// with a final newline.
pub fn openapi_json() -> String {
    let mut json = serde_json::to_string_pretty(openapi()).expect("the description serializes");
    json.push('\n');
    json
}

/// Serves [`app`] on `listener` until the process ends (see [`serve_with_shutdown`]).
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    serve_with_shutdown(listener, state, std::future::pending()).await
}
