//! Builders of the rows and batches tests write and expect: short positional constructors of
//! [`eddy_core`]'s output types, at one-minute windows from an hour-aligned instant
//! ([`HOUR`], [`MIN`]), and of the answers the query server gives for them
//! ([`eddy_core::api`]).
//!
//! ```
//! use eddy_core::EventType::Click;
//! use eddy_testkit::fixtures::{HOUR, MIN, batch, tw};
//! let mut b = batch(1, HOUR + MIN);
//! b.final_types = vec![tw(HOUR, Click, 3, 0, None, None)];
//! assert_eq!(b.window_size_ms, MIN);
//! ```

use crate::http::as_read;
use eddy_core::api::{
    BecauseJson, CampaignJson, HealthResponse, HealthStatus, RecommendationJson, RowSource,
    SeriesPoint, SimilarUserJson, Store,
};
use eddy_core::{
    CampaignEngagement, CampaignWindowCount, CountsBatch, EventType, Neighbor, PaneEngagement,
    Recommendation, Score, SimilarUsers, SimilarityBatch, TypeWindowStats, UserCampaigns, Weights,
    recommendation_score,
};

/// 2023-11-14T22:00:00Z, an hour boundary (epoch ms).
pub const HOUR: i64 = 1_699_999_200_000;
/// One minute, the windows' length (ms).
pub const MIN: i64 = 60_000;

/// A type-window row: `count` events of type `t` in the window starting at `start`, amounts
/// in micro-units.
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

/// An empty fast-path batch at `epoch` with `watermark_ms` and one-minute windows.
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

/// A campaign's sliding-window engagement, scored with the default weights.
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

/// Engagement of one campaign in one finalized pane.
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

/// A similar user: `shared` campaigns in common out of `union`.
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

/// A recommendation scored as the dataflow scores it ([`recommendation_score`]).
pub fn rec(campaign_id: u64, campaign_score: f64, because: Vec<Neighbor>) -> Recommendation {
    Recommendation {
        campaign_id,
        score: recommendation_score(&because, Score(campaign_score)),
        campaign_score: Score(campaign_score),
        because,
    }
}

/// A user's interaction set (`campaigns` ascending).
pub fn user_set(user_id: u64, campaigns: Vec<u64>) -> UserCampaigns {
    UserCampaigns { user_id, campaigns }
}

// ---- answers of the query server ----

/// A point of a per-type `/v1/counts` series over the one-minute window at `start`: `amounts`
/// (in units) are `(sum, min, max)`, `None` for a campaign point.
pub fn point(
    start: i64,
    t: EventType,
    count: u64,
    amounts: Option<(f64, Option<f64>, Option<f64>)>,
    fin: bool,
    source: RowSource,
) -> SeriesPoint {
    let (sum_amount, min_amount, max_amount) = match amounts {
        Some((s, a, b)) => (Some(s), a, b),
        None => (None, None, None),
    };
    SeriesPoint {
        window_start_ms: start,
        window_end_ms: start + MIN,
        event_type: t,
        campaign_id: None,
        count,
        sum_amount,
        min_amount,
        max_amount,
        is_final: fin,
        source,
    }
}

/// A point of campaign `campaign_id`'s series (counts only).
pub fn campaign_point(
    start: i64,
    campaign_id: u64,
    t: EventType,
    count: u64,
    fin: bool,
    source: RowSource,
) -> SeriesPoint {
    SeriesPoint {
        campaign_id: Some(campaign_id),
        ..point(start, t, count, None, fin, source)
    }
}

/// A campaign as answered, with the rates computed here (`None` for a zero denominator) and
/// the `score` given, read back as a client reads it ([`as_read`]).
pub fn campaign_json(
    campaign_id: u64,
    views: u64,
    clicks: u64,
    conversions: u64,
    revenue_micros: i64,
    score: f64,
) -> CampaignJson {
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    as_read(&CampaignJson {
        campaign_id,
        views,
        clicks,
        conversions,
        revenue: revenue_micros as f64 / 1e6,
        revenue_micros,
        ctr: ratio(clicks, views),
        conversion_rate: ratio(conversions, clicks),
        score,
    })
}

/// A similar user as answered (Jaccard `shared / union`), read back as a client reads it.
pub fn similar_json(user_id: u64, shared: u32, union: u32) -> SimilarUserJson {
    as_read(&SimilarUserJson {
        user_id,
        jaccard: shared as f64 / union as f64,
        shared,
        union,
    })
}

/// A recommendation as answered: `because` lists `(user_id, jaccard)` of the similar users.
pub fn rec_json(
    campaign_id: u64,
    score: f64,
    campaign_score: f64,
    because: &[(u64, f64)],
) -> RecommendationJson {
    RecommendationJson {
        campaign_id,
        score,
        campaign_score,
        because: because
            .iter()
            .map(|&(user_id, jaccard)| BecauseJson { user_id, jaccard })
            .collect(),
    }
}

/// A `/healthz` answer: `status`, and per store `ok` or `down: <reason>`.
pub fn health(status: HealthStatus, stores: &[(Store, &str)]) -> HealthResponse {
    HealthResponse {
        status,
        stores: stores.iter().map(|&(s, h)| (s, h.to_owned())).collect(),
    }
}
