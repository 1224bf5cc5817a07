//! `GET /v1/counts`: query parameters and the merged two-layer answer.

use super::{Granularity, RowSource, Store};
use crate::event::EventType;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Query parameters of `GET /v1/counts`, as sent (a client serializes it with e.g.
/// `reqwest::RequestBuilder::query`). Unknown or repeated parameters are rejected; the server
/// also checks `from < to` and the range limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// How many entries; absent: the route's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueryEcho {
    /// Event type asked for, or `null` for all.
    #[schema(required = true)]
    pub event_type: Option<EventType>,
    /// Campaign asked for, or `null` for per-type stats.
    #[schema(required = true)]
    pub campaign_id: Option<u64>,
    /// `from` parameter, epoch ms.
    pub from: i64,
    /// `to` parameter, epoch ms.
    pub to: i64,
    /// Granularity asked for.
    pub granularity: Granularity,
}

/// How one layer took part in a [`CountsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LayerJson {
    /// Store behind the layer.
    pub source: Store,
    /// `true` answered, `false` failed, `null` not consulted.
    #[schema(required = true)]
    pub available: Option<bool>,
    /// Native windows the layer contributed.
    pub windows: usize,
    /// Failure reason, or `null`.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// Both layers of a [`CountsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LayersJson {
    /// Batch layer (finalized windows up to the boundary).
    pub batch: LayerJson,
    /// Speed layer (windows after the boundary).
    pub speed: LayerJson,
}

/// One point of a series (a native window, or an hour).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeriesPoint {
    /// Start, epoch ms.
    pub window_start_ms: i64,
    /// End (exclusive), epoch ms.
    pub window_end_ms: i64,
    /// Event type.
    pub event_type: EventType,
    /// Campaign, or `null` for per-type rows.
    #[schema(required = true)]
    pub campaign_id: Option<u64>,
    /// Number of events.
    pub count: u64,
    /// Sum of amounts in units (`null` for campaign rows).
    #[schema(required = true)]
    pub sum_amount: Option<f64>,
    /// Smallest amount (`null` if none, or a campaign row).
    #[schema(required = true)]
    pub min_amount: Option<f64>,
    /// Largest amount (`null` if none, or a campaign row).
    #[schema(required = true)]
    pub max_amount: Option<f64>,
    /// True when the values will not change any more.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Where the values came from.
    pub source: RowSource,
}

/// Body of a successful `GET /v1/counts` (see the query server's crate docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CountsResponse {
    /// The validated query.
    pub query: QueryEcho,
    /// Granularity of `series`.
    pub granularity: Granularity,
    /// Native window length, ms.
    pub window_ms: i64,
    /// Event-time watermark of the last sink batch, if known.
    #[schema(required = true)]
    pub watermark_ms: Option<i64>,
    /// Batch/speed boundary, if known.
    #[schema(required = true)]
    pub boundary_ms: Option<i64>,
    /// Event-time watermark the answer reflects (the later of `watermark_ms` and
    /// `boundary_ms`), if known.
    #[schema(required = true)]
    pub as_of_ms: Option<i64>,
    /// Wall-clock ms of the last speed-layer update, if known.
    #[schema(required = true)]
    pub updated_at_ms: Option<i64>,
    /// `now - updated_at_ms`, if known.
    #[schema(required = true)]
    pub freshness_ms: Option<i64>,
    /// True when a layer failed (the answer is partial).
    pub degraded: bool,
    /// How each layer took part.
    pub layers: LayersJson,
    /// The points, sorted by event type (`view`, `click`, `conversion`) then start.
    pub series: Vec<SeriesPoint>,
}
