//! The query server's HTTP contract: every response body and query-parameter type of its
//! routes, as plain serde types (no HTTP framework), so the server renders them and every
//! client (load-gen, the tests, the bench report) deserializes them.
//!
//! Routes and field meanings are documented in the `eddy-query-server` crate docs. Times are
//! epoch milliseconds. Every answer's `as_of_ms` is the event-time watermark the answer
//! reflects; wall-clock times are in `updated_at_ms` / `freshness_ms`.

use crate::engagement::{CampaignEngagement, Neighbor, Recommendation};
use crate::event::{EventType, micros_to_amount};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A store behind the query server (`clickhouse`, `redis`, `memory` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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

// ---------------------------------------------------------------------------------------------
// Query parameters
// ---------------------------------------------------------------------------------------------

/// Query parameters of `GET /v1/counts`, as sent (a client serializes it with e.g.
/// `reqwest::RequestBuilder::query`). Unknown or repeated parameters are rejected; the server
/// also checks `from < to` and the range limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountsQuery {
    /// Inclusive lower bound of window starts, epoch ms.
    pub from: i64,
    /// Exclusive upper bound of window starts, epoch ms.
    pub to: i64,
    /// Only this event type; absent: all three.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<EventType>,
    /// Per-campaign counts of this campaign; absent: per-type stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<u64>,
    /// Resolution; absent: `minute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<Granularity>,
}

impl CountsQuery {
    /// Per-type stats of every event type in `[from, to)`, per native window.
    pub fn new(from: i64, to: i64) -> Self {
        Self {
            from,
            to,
            event_type: None,
            campaign_id: None,
            granularity: None,
        }
    }
}

/// The optional `k` (list length) of `/v1/campaigns/top`, `/v1/users/{id}/similar` and
/// `/v1/users/{id}/recommendations`. Any other parameter is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// How many entries; absent: the route's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
}

/// No query parameter (`/v1/campaigns/{id}`): any parameter is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

// ---------------------------------------------------------------------------------------------
// /v1/counts
// ---------------------------------------------------------------------------------------------

/// Echo of the validated query in a [`CountsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryEcho {
    /// Event type asked for, or `null` for all.
    pub event_type: Option<EventType>,
    /// Campaign asked for, or `null` for per-type stats.
    pub campaign_id: Option<u64>,
    /// `from` parameter, epoch ms.
    pub from: i64,
    /// `to` parameter, epoch ms.
    pub to: i64,
    /// Granularity asked for.
    pub granularity: Granularity,
}

/// How one layer took part in a [`CountsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerJson {
    /// Store behind the layer.
    pub source: Store,
    /// `true` answered, `false` failed, `null` not consulted.
    pub available: Option<bool>,
    /// Native windows the layer contributed.
    pub windows: usize,
    /// Failure reason, or `null`.
    pub error: Option<String>,
}

/// Both layers of a [`CountsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayersJson {
    /// Batch layer (finalized windows up to the boundary).
    pub batch: LayerJson,
    /// Speed layer (windows after the boundary).
    pub speed: LayerJson,
}

/// One point of a series (a native window, or an hour).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Start, epoch ms.
    pub window_start_ms: i64,
    /// End (exclusive), epoch ms.
    pub window_end_ms: i64,
    /// Event type.
    pub event_type: EventType,
    /// Campaign, or `null` for per-type rows.
    pub campaign_id: Option<u64>,
    /// Number of events.
    pub count: u64,
    /// Sum of amounts in units (`null` for campaign rows).
    pub sum_amount: Option<f64>,
    /// Smallest amount (`null` if none, or a campaign row).
    pub min_amount: Option<f64>,
    /// Largest amount (`null` if none, or a campaign row).
    pub max_amount: Option<f64>,
    /// True when the values will not change any more.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Where the values came from.
    pub source: RowSource,
}

/// Body of a successful `GET /v1/counts` (see the query server's crate docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountsResponse {
    /// The validated query.
    pub query: QueryEcho,
    /// Granularity of `series`.
    pub granularity: Granularity,
    /// Native window length, ms.
    pub window_ms: i64,
    /// Event-time watermark of the last sink batch, if known.
    pub watermark_ms: Option<i64>,
    /// Batch/speed boundary, if known.
    pub boundary_ms: Option<i64>,
    /// Event-time watermark the answer reflects (the later of `watermark_ms` and
    /// `boundary_ms`), if known.
    pub as_of_ms: Option<i64>,
    /// Wall-clock ms of the last speed-layer update, if known.
    pub updated_at_ms: Option<i64>,
    /// `now - updated_at_ms`, if known.
    pub freshness_ms: Option<i64>,
    /// True when a layer failed (the answer is partial).
    pub degraded: bool,
    /// How each layer took part.
    pub layers: LayersJson,
    /// The points, sorted by event type (`view`, `click`, `conversion`) then start.
    pub series: Vec<SeriesPoint>,
}

// ---------------------------------------------------------------------------------------------
// Engagement, similar users, recommendations
// ---------------------------------------------------------------------------------------------

/// When and where an engagement, similar-users or recommendations answer comes from (flattened
/// into each of those bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerMeta {
    /// Event-time watermark the values reflect, epoch ms.
    pub as_of_ms: i64,
    /// Wall-clock ms of the last update of the store that answered, if known.
    pub updated_at_ms: Option<i64>,
    /// `now - updated_at_ms`, if known.
    pub freshness_ms: Option<i64>,
    /// Store that answered.
    pub source: Store,
}

/// One campaign's engagement over the sliding window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignJson {
    /// The campaign.
    pub campaign_id: u64,
    /// Views in the sliding window.
    pub views: u64,
    /// Clicks in the sliding window.
    pub clicks: u64,
    /// Conversions in the sliding window.
    pub conversions: u64,
    /// Revenue in units (`revenue_micros / 1e6`).
    pub revenue: f64,
    /// Revenue in micro-units (exact).
    pub revenue_micros: i64,
    /// Click-through rate `clicks / views` (`null` without views).
    pub ctr: Option<f64>,
    /// Conversion rate `conversions / clicks` (`null` without clicks).
    pub conversion_rate: Option<f64>,
    /// Weighted engagement score.
    pub score: f64,
}

impl From<&CampaignEngagement> for CampaignJson {
    fn from(e: &CampaignEngagement) -> Self {
        Self {
            campaign_id: e.campaign_id,
            views: e.views,
            clicks: e.clicks,
            conversions: e.conversions,
            revenue: micros_to_amount(e.revenue_micros),
            revenue_micros: e.revenue_micros,
            ctr: e.ctr(),
            conversion_rate: e.conversion_rate(),
            score: e.score.0,
        }
    }
}

/// Body of `GET /v1/campaigns/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignResponse {
    /// The campaign's engagement.
    #[serde(flatten)]
    pub campaign: CampaignJson,
    /// Watermark, update time and store of the answer.
    #[serde(flatten)]
    pub meta: AnswerMeta,
}

/// Body of `GET /v1/campaigns/top`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopCampaignsResponse {
    /// Length asked for (the list may be shorter).
    pub k: usize,
    /// Watermark, update time and store of the answer.
    #[serde(flatten)]
    pub meta: AnswerMeta,
    /// Best first.
    pub campaigns: Vec<CampaignJson>,
}

/// A similar user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarUserJson {
    /// The other user.
    pub user_id: u64,
    /// Jaccard similarity `shared / union` of the two users' campaign sets.
    pub jaccard: f64,
    /// Campaigns both users engaged with.
    pub shared: u32,
    /// Campaigns either user engaged with.
    pub union: u32,
}

impl From<&Neighbor> for SimilarUserJson {
    fn from(n: &Neighbor) -> Self {
        Self {
            user_id: n.user_id,
            jaccard: n.jaccard(),
            shared: n.shared,
            union: n.union,
        }
    }
}

/// Body of `GET /v1/users/{id}/similar`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarUsersResponse {
    /// The user.
    pub user_id: u64,
    /// Length asked for (the list may be shorter).
    pub k: usize,
    /// Watermark, update time and store of the answer.
    #[serde(flatten)]
    pub meta: AnswerMeta,
    /// Best first.
    pub similar: Vec<SimilarUserJson>,
}

/// A similar user behind a recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BecauseJson {
    /// The similar user.
    pub user_id: u64,
    /// Their Jaccard similarity to the user.
    pub jaccard: f64,
}

/// One recommended campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationJson {
    /// The campaign.
    pub campaign_id: u64,
    /// `Σ jaccard × campaign_score` over the similar users who engaged with it.
    pub score: f64,
    /// The campaign's engagement score used.
    pub campaign_score: f64,
    /// The similar users who engaged with the campaign, best first.
    pub because: Vec<BecauseJson>,
}

impl From<&Recommendation> for RecommendationJson {
    fn from(r: &Recommendation) -> Self {
        Self {
            campaign_id: r.campaign_id,
            score: r.score.0,
            campaign_score: r.campaign_score.0,
            because: r
                .because
                .iter()
                .map(|n| BecauseJson {
                    user_id: n.user_id,
                    jaccard: n.jaccard(),
                })
                .collect(),
        }
    }
}

/// Body of `GET /v1/users/{id}/recommendations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationsResponse {
    /// The user.
    pub user_id: u64,
    /// Length asked for (the list may be shorter).
    pub k: usize,
    /// Watermark, update time and store of the answer.
    #[serde(flatten)]
    pub meta: AnswerMeta,
    /// Best first.
    pub recommendations: Vec<RecommendationJson>,
}

// ---------------------------------------------------------------------------------------------
// /healthz and errors
// ---------------------------------------------------------------------------------------------

/// Overall health in a [`HealthResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Every store answered (HTTP 200).
    Ok,
    /// At least one store did not (HTTP 503).
    Degraded,
}

/// Body of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok` when every store answered.
    pub status: HealthStatus,
    /// Per store: `ok`, or `down: <reason>`.
    pub stores: BTreeMap<Store, String>,
}

/// Machine-readable error code of an [`ErrorBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: invalid path or query parameters.
    BadRequest,
    /// 404: unknown route, campaign, user or list.
    NotFound,
    /// 405: the route exists, not for this method.
    MethodNotAllowed,
    /// 503: no store could answer.
    Unavailable,
    /// 500: a bug or unexpected failure.
    Internal,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What kind of error.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
}

/// Body of every error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

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
