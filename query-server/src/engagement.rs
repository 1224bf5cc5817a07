//! Routes of campaign engagement, similar users and recommendations: parameter validation,
//! handlers and response shapes (see the crate docs).

use crate::AppState;
use crate::backend::{EngagementQuery, Sourced};
use crate::error::AppError;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use eddy_core::event::micros_to_amount;
use eddy_core::{CampaignEngagement, Neighbor, Recommendation};
use serde::{Deserialize, Serialize};

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
    /// Event-time watermark the values reflect, epoch ms.
    pub as_of_ms: i64,
    /// Wall-clock ms since the store was last updated (as in `/v1/counts`), if known.
    pub freshness_ms: Option<i64>,
    /// Store that answered: `redis`, `clickhouse` or `memory`.
    pub source: String,
}

/// Body of `GET /v1/campaigns/top`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopCampaignsResponse {
    /// Length asked for (the list may be shorter).
    pub k: usize,
    /// Event-time watermark the list reflects, epoch ms.
    pub as_of_ms: i64,
    /// Wall-clock ms since the store was last updated (as in `/v1/counts`), if known.
    pub freshness_ms: Option<i64>,
    /// Store that answered: `redis`, `clickhouse` or `memory`.
    pub source: String,
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
    /// Event-time watermark the list reflects, epoch ms.
    pub as_of_ms: i64,
    /// Wall-clock ms since the store was last updated (as in `/v1/counts`), if known.
    pub freshness_ms: Option<i64>,
    /// Store that answered: `redis`, `clickhouse` or `memory`.
    pub source: String,
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
    /// Event-time watermark the list reflects, epoch ms.
    pub as_of_ms: i64,
    /// Wall-clock ms since the store was last updated (as in `/v1/counts`), if known.
    pub freshness_ms: Option<i64>,
    /// Store that answered: `redis`, `clickhouse` or `memory`.
    pub source: String,
    /// Best first.
    pub recommendations: Vec<RecommendationJson>,
}

fn bad(msg: impl Into<String>) -> AppError {
    AppError::BadRequest(msg.into())
}

type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn query_pairs(query: RawQuery) -> Result<Vec<(String, String)>, AppError> {
    let Query(pairs) = query.map_err(|e| bad(format!("malformed query string: {e}")))?;
    Ok(pairs)
}

/// The optional `k` parameter (the only one accepted, at most once): an integer in
/// `1..=max`, `default` when absent.
fn parse_k(pairs: &[(String, String)], default: usize, max: usize) -> Result<usize, AppError> {
    let mut k = None;
    for (name, value) in pairs {
        if name != "k" {
            return Err(bad(format!(
                "unknown query parameter {name:?} (expected: k)"
            )));
        }
        if k.is_some() {
            return Err(bad("query parameter \"k\" given more than once"));
        }
        k = Some(value.as_str());
    }
    let Some(raw) = k else {
        return Ok(default.min(max));
    };
    match raw.parse::<usize>() {
        Ok(k) if (1..=max).contains(&k) => Ok(k),
        _ => Err(bad(format!(
            "`k` must be an integer from 1 to {max}, got {raw:?}"
        ))),
    }
}

/// A u64 id from the path.
fn parse_id(what: &str, path: Result<Path<String>, PathRejection>) -> Result<u64, AppError> {
    let Path(raw) = path.map_err(|e| bad(format!("malformed path: {e}")))?;
    raw.parse::<u64>()
        .map_err(|_| bad(format!("{what} must be an unsigned integer, got {raw:?}")))
}

fn engagement_query(state: &AppState) -> Result<EngagementQuery, AppError> {
    let c = &state.config;
    if c.window_ms <= 0 || c.sliding_ms < c.window_ms {
        return Err(AppError::Internal(
            "server window_ms must be > 0 and sliding_ms >= window_ms".into(),
        ));
    }
    Ok(EngagementQuery {
        window_ms: c.window_ms,
        sliding_ms: c.sliding_ms,
        weights: c.weights,
    })
}

fn freshness<T>(s: &Sourced<T>) -> Option<i64> {
    s.updated_at_ms
        .map(|u| eddy_core::now_ms().saturating_sub(u))
}

/// `GET /v1/campaigns/top?k=`.
pub(crate) async fn top_campaigns(
    State(state): State<AppState>,
    query: RawQuery,
) -> Result<Json<TopCampaignsResponse>, AppError> {
    let pairs = query_pairs(query)?;
    let top_k = state.config.top_k;
    let k = parse_k(&pairs, 10, top_k)?;
    let q = engagement_query(&state)?;
    let answer = state
        .backend
        .top_campaigns(q, k)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "top campaigns query failed"))?
        .ok_or_else(|| AppError::Missing("no top list of campaigns yet".into()))?;
    Ok(Json(TopCampaignsResponse {
        k,
        as_of_ms: answer.as_of_ms,
        freshness_ms: freshness(&answer),
        source: answer.source.to_owned(),
        campaigns: answer
            .value
            .iter()
            .take(k)
            .map(CampaignJson::from)
            .collect(),
    }))
}

/// `GET /v1/campaigns/{id}`.
pub(crate) async fn campaign(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: RawQuery,
) -> Result<Json<CampaignResponse>, AppError> {
    let id = parse_id("campaign id", path)?;
    if let Some((name, _)) = query_pairs(query)?.first() {
        return Err(bad(format!(
            "unknown query parameter {name:?} (this route takes none)"
        )));
    }
    let q = engagement_query(&state)?;
    let answer = state
        .backend
        .campaign(q, id)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "campaign query failed"))?
        .ok_or_else(|| {
            AppError::Missing(format!(
                "campaign {id} has no engagement in the sliding window"
            ))
        })?;
    Ok(Json(CampaignResponse {
        campaign: CampaignJson::from(&answer.value),
        as_of_ms: answer.as_of_ms,
        freshness_ms: freshness(&answer),
        source: answer.source.to_owned(),
    }))
}

/// `GET /v1/users/{id}/similar?k=`.
pub(crate) async fn similar_users(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: RawQuery,
) -> Result<Json<SimilarUsersResponse>, AppError> {
    let user_id = parse_id("user id", path)?;
    let max = state.config.similar_k;
    let k = parse_k(&query_pairs(query)?, max, max)?;
    let answer = state
        .backend
        .similar_users(user_id)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "similar users query failed"))?
        .ok_or_else(|| AppError::Missing(format!("user {user_id} has no similar users")))?;
    Ok(Json(SimilarUsersResponse {
        user_id,
        k,
        as_of_ms: answer.as_of_ms,
        freshness_ms: freshness(&answer),
        source: answer.source.to_owned(),
        similar: answer
            .value
            .iter()
            .take(k)
            .map(SimilarUserJson::from)
            .collect(),
    }))
}

/// `GET /v1/users/{id}/recommendations?k=`.
pub(crate) async fn recommendations(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: RawQuery,
) -> Result<Json<RecommendationsResponse>, AppError> {
    let user_id = parse_id("user id", path)?;
    let max = state.config.recommendations;
    let k = parse_k(&query_pairs(query)?, max, max)?;
    let answer = state
        .backend
        .recommendations(user_id)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "recommendations query failed"))?
        .ok_or_else(|| AppError::Missing(format!("user {user_id} has no recommendations")))?;
    Ok(Json(RecommendationsResponse {
        user_id,
        k,
        as_of_ms: answer.as_of_ms,
        freshness_ms: freshness(&answer),
        source: answer.source.to_owned(),
        recommendations: answer
            .value
            .iter()
            .take(k)
            .map(RecommendationJson::from)
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn k_defaults_and_bounds() {
        assert_eq!(parse_k(&pairs(&[]), 10, 100), Ok(10));
        assert_eq!(parse_k(&pairs(&[]), 10, 5), Ok(5));
        assert_eq!(parse_k(&pairs(&[("k", "1")]), 10, 100), Ok(1));
        assert_eq!(parse_k(&pairs(&[("k", "100")]), 10, 100), Ok(100));
        for q in [
            &[("k", "0")][..],
            &[("k", "101")],
            &[("k", "-1")],
            &[("k", "1.5")],
            &[("k", "")],
            &[("k", "99999999999999999999999")],
            &[("k", "2"), ("k", "3")],
            &[("n", "2")],
        ] {
            assert!(
                matches!(parse_k(&pairs(q), 10, 100), Err(AppError::BadRequest(_))),
                "accepted {q:?}"
            );
        }
    }
}
