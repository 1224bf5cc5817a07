//! Engagement, similar users and recommendations: `GET /v1/campaigns/…` and
//! `GET /v1/users/…`.

use super::Store;
use crate::engagement::{CampaignEngagement, Neighbor, Recommendation};
use crate::event::micros_to_amount;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// When and where an engagement, similar-users or recommendations answer comes from (flattened
/// into each of those bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AnswerMeta {
    /// Event-time watermark the values reflect, epoch ms.
    pub as_of_ms: i64,
    /// Wall-clock ms of the last update of the store that answered, if known.
    #[schema(required = true)]
    pub updated_at_ms: Option<i64>,
    /// `now - updated_at_ms`, if known.
    #[schema(required = true)]
    pub freshness_ms: Option<i64>,
    /// Store that answered.
    pub source: Store,
}

/// One campaign's engagement over the sliding window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
    #[schema(required = true)]
    pub ctr: Option<f64>,
    /// Conversion rate `conversions / clicks` (`null` without clicks).
    #[schema(required = true)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CampaignResponse {
    /// The campaign's engagement.
    #[serde(flatten)]
    pub campaign: CampaignJson,
    /// Watermark, update time and store of the answer.
    #[serde(flatten)]
    pub meta: AnswerMeta,
}

/// Body of `GET /v1/campaigns/top`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BecauseJson {
    /// The similar user.
    pub user_id: u64,
    /// Their Jaccard similarity to the user.
    pub jaccard: f64,
}

/// One recommended campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
