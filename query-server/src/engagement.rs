//! Handlers of campaign engagement, similar users and recommendations (see the crate docs; the
//! response types are in [`eddy_core::api`], parameters in [`crate::query`]).

use crate::AppState;
use crate::backend::{EngagementQuery, Sourced};
use crate::error::AppError;
use crate::openapi::{BadRequest, CampaignPath, Internal, NotFound, Unavailable, UserPath};
use crate::query::{CampaignId, Id, Params, UserId, list_len};
use axum::Json;
use axum::extract::State;
use eddy_core::api::{
    AnswerMeta, CampaignJson, CampaignResponse, ListQuery, NoQuery, RecommendationJson,
    RecommendationsResponse, SimilarUserJson, SimilarUsersResponse, TopCampaignsResponse,
};

/// Default `k` of `/v1/campaigns/top` (capped at `engagement.top_k`).
const DEFAULT_TOP_K: usize = 10;

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

fn meta<T>(s: &Sourced<T>) -> AnswerMeta {
    AnswerMeta {
        as_of_ms: s.as_of_ms,
        updated_at_ms: s.updated_at_ms,
        freshness_ms: s
            .updated_at_ms
            .map(|u| eddy_core::now_ms().saturating_sub(u)),
        source: s.source,
    }
}

/// The `k` campaigns of highest engagement score over the sliding window, best first
/// (`k`: default 10, at most `engagement.top_k`).
#[utoipa::path(get, path = "/v1/campaigns/top", tag = "campaigns", params(ListQuery),
    responses((status = 200, description = "Best first", body = TopCampaignsResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 500, response = Internal), (status = 503, response = Unavailable)))]
pub(crate) async fn top_campaigns(
    State(state): State<AppState>,
    Params(query): Params<ListQuery>,
) -> Result<Json<TopCampaignsResponse>, AppError> {
    let k = list_len(query, DEFAULT_TOP_K, state.config.top_k)?;
    let q = engagement_query(&state)?;
    let answer = state
        .backend
        .top_campaigns(q, k)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "top campaigns query failed"))?
        .ok_or_else(|| AppError::Missing("no top list of campaigns yet".into()))?;
    Ok(Json(TopCampaignsResponse {
        k,
        meta: meta(&answer),
        campaigns: answer
            .value
            .iter()
            .take(k)
            .map(CampaignJson::from)
            .collect(),
    }))
}

/// One campaign's engagement over the sliding window (no query parameter).
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns", params(CampaignPath),
    responses((status = 200, description = "The campaign", body = CampaignResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 500, response = Internal), (status = 503, response = Unavailable)))]
pub(crate) async fn campaign(
    State(state): State<AppState>,
    Id(id, _): CampaignId,
    Params(NoQuery {}): Params<NoQuery>,
) -> Result<Json<CampaignResponse>, AppError> {
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
        meta: meta(&answer),
    }))
}

/// The user's `k` most similar users (Jaccard similarity of their campaign sets), best first
/// (`k`: default and maximum `similarity.k`).
#[utoipa::path(get, path = "/v1/users/{id}/similar", tag = "users", params(UserPath, ListQuery),
    responses((status = 200, description = "Best first", body = SimilarUsersResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
pub(crate) async fn similar_users(
    State(state): State<AppState>,
    Id(user_id, _): UserId,
    Params(query): Params<ListQuery>,
) -> Result<Json<SimilarUsersResponse>, AppError> {
    let max = state.config.similar_k;
    let k = list_len(query, max, max)?;
    let answer = state
        .backend
        .similar_users(user_id)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "similar users query failed"))?
        .ok_or_else(|| AppError::Missing(format!("user {user_id} has no similar users")))?;
    Ok(Json(SimilarUsersResponse {
        user_id,
        k,
        meta: meta(&answer),
        similar: answer
            .value
            .iter()
            .take(k)
            .map(SimilarUserJson::from)
            .collect(),
    }))
}

/// The user's `k` recommended campaigns, best first (`k`: default and maximum
/// `similarity.recommendations`).
#[utoipa::path(get, path = "/v1/users/{id}/recommendations", tag = "users",
    params(UserPath, ListQuery),
    responses((status = 200, description = "Best first", body = RecommendationsResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
pub(crate) async fn recommendations(
    State(state): State<AppState>,
    Id(user_id, _): UserId,
    Params(query): Params<ListQuery>,
) -> Result<Json<RecommendationsResponse>, AppError> {
    let max = state.config.recommendations;
    let k = list_len(query, max, max)?;
    let q = engagement_query(&state)?;
    let answer = state
        .backend
        .recommendations(q, user_id, k)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "recommendations query failed"))?
        .ok_or_else(|| AppError::Missing(format!("user {user_id} has no recommendations")))?;
    Ok(Json(RecommendationsResponse {
        user_id,
        k,
        meta: meta(&answer),
        recommendations: answer
            .value
            .iter()
            .take(k)
            .map(RecommendationJson::from)
            .collect(),
    }))
}
