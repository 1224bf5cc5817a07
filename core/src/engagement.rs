//! Rows of the engagement, similarity and recommendation dataflows.
//!
//! Scores are `f64` but every row is totally ordered and hashable (see [`Score`]), so rows can
//! be differential data.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// An `f64` with a total order (`f64::total_cmp`) and bitwise equality, so it can sit in
/// differential data. Serialized as a plain number.
///
/// ```
/// use eddy_core::Score;
/// let mut v = vec![Score(2.5), Score(-1.0), Score(10.0)];
/// v.sort();
/// assert_eq!(v, vec![Score(-1.0), Score(2.5), Score(10.0)]);
/// ```
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Score(pub f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl Hash for Score {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// Weights of the engagement score: `score = views·view + clicks·click + conversions·conversion`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// Weight of a view.
    pub view: f64,
    /// Weight of a click.
    pub click: f64,
    /// Weight of a conversion.
    pub conversion: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            view: 1.0,
            click: 5.0,
            conversion: 25.0,
        }
    }
}

impl Weights {
    /// The score of the given counts (always evaluated in this order, so equal inputs give
    /// bit-identical scores everywhere).
    pub fn score(&self, views: u64, clicks: u64, conversions: u64) -> Score {
        Score(
            views as f64 * self.view
                + clicks as f64 * self.click
                + conversions as f64 * self.conversion,
        )
    }
}

/// One campaign's engagement over the sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CampaignEngagement {
    /// The campaign.
    pub campaign_id: u64,
    /// Views in the window.
    pub views: u64,
    /// Clicks in the window.
    pub clicks: u64,
    /// Conversions in the window.
    pub conversions: u64,
    /// Sum of conversion amounts (and any other amounts), micro-units.
    pub revenue_micros: i64,
    /// Weighted score (see [`Weights`]).
    pub score: Score,
}

impl CampaignEngagement {
    /// Click-through rate: clicks / views (`None` without views).
    pub fn ctr(&self) -> Option<f64> {
        (self.views > 0).then(|| self.clicks as f64 / self.views as f64)
    }
    /// Conversion rate: conversions / clicks (`None` without clicks).
    pub fn conversion_rate(&self) -> Option<f64> {
        (self.clicks > 0).then(|| self.conversions as f64 / self.clicks as f64)
    }
}

/// A campaign's engagement in one finalized tumbling window (a pane of the sliding window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PaneEngagement {
    /// Window (pane) start, epoch ms.
    pub window_start_ms: i64,
    /// The campaign.
    pub campaign_id: u64,
    /// Views.
    pub views: u64,
    /// Clicks.
    pub clicks: u64,
    /// Conversions.
    pub conversions: u64,
    /// Sum of amounts, micro-units.
    pub revenue_micros: i64,
}

/// A similar user: Jaccard similarity `shared / union` of the two users' campaign sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Neighbor {
    /// The other user.
    pub user_id: u64,
    /// Campaigns both users engaged with.
    pub shared: u32,
    /// Campaigns either user engaged with.
    pub union: u32,
}

impl Neighbor {
    /// Jaccard similarity.
    pub fn jaccard(&self) -> f64 {
        if self.union == 0 {
            0.0
        } else {
            self.shared as f64 / self.union as f64
        }
    }
    /// Ranking order: higher Jaccard first (compared exactly, as fractions), then lower id.
    pub fn rank_cmp(&self, other: &Self) -> Ordering {
        let lhs = self.shared as u64 * other.union as u64;
        let rhs = other.shared as u64 * self.union as u64;
        rhs.cmp(&lhs).then(self.user_id.cmp(&other.user_id))
    }
}

impl PartialOrd for Neighbor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Neighbor {
    /// Ranking order ([`Neighbor::rank_cmp`]), then the raw fields (a total order).
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank_cmp(other)
            .then(self.shared.cmp(&other.shared))
            .then(self.union.cmp(&other.union))
    }
}

/// A user's top-K most similar users, best first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SimilarUsers {
    /// The user.
    pub user_id: u64,
    /// Best first (see [`Neighbor::rank_cmp`]); empty when the user has no similar user.
    pub neighbors: Vec<Neighbor>,
}

/// One recommended campaign, with why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Recommendation {
    /// The campaign.
    pub campaign_id: u64,
    /// `Σ jaccard(user, v) × campaign_score` over the similar users `v` who engaged with it.
    pub score: Score,
    /// The campaign's settled engagement score (see the recommendations dataflow).
    pub campaign_score: Score,
    /// The similar users who engaged with the campaign, best first.
    pub because: Vec<Neighbor>,
}

/// A user's top-N recommendations, best first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserRecommendations {
    /// The user.
    pub user_id: u64,
    /// Best first (higher score, then lower campaign id); empty when there is none.
    pub items: Vec<Recommendation>,
}

/// A user's interaction set: the campaigns it engaged with in the sliding window (the settled
/// sets that similarity compares, see the interactions dataflow), ascending. Written whenever
/// it changes; recommendations draw from the sets of a user's similar users at read time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserCampaigns {
    /// The user.
    pub user_id: u64,
    /// Ascending; empty when the user has no interaction left in the window.
    pub campaigns: Vec<u64>,
}

/// A user's top `n` campaign recommendations, ranked at read time from what the dataflows
/// keep: the user's similar users (`neighbors`, best first), their interaction sets (`sets`,
/// in the same order), the user's own set (`mine`, ascending) and each campaign's current
/// engagement score (`score`: `None` when the campaign is not in the sliding window):
///
/// ```sql
/// SELECT s.user_id, i.campaign_id,
///        sum(s.jaccard) * c.score AS score, c.score AS campaign_score,
///        array_agg(s.other ORDER BY s.jaccard DESC, s.other) AS because
/// FROM similar s                                   -- similar users, flattened
/// JOIN interactions i ON i.user_id = s.other       -- the similar users' sets
/// JOIN engagement c ON c.campaign_id = i.campaign_id  -- current sliding-window scores
/// WHERE (s.user_id, i.campaign_id) NOT IN (SELECT user_id, campaign_id FROM interactions)
/// GROUP BY s.user_id, i.campaign_id, c.score
/// QUALIFY row_number() OVER (PARTITION BY s.user_id ORDER BY score DESC, campaign_id) <= :n;
/// ```
///
/// Best first (higher score, then lower campaign id); each item's `because` lists the similar
/// users who engaged with the campaign, best first. Ranking at read time keeps the dataflow's
/// work proportional to changes of sets and lists: scores move at every pane close for most
/// campaigns, and re-ranking every user then is what made a 24 h window unaffordable.
///
/// ```
/// use eddy_core::{Neighbor, Score, recommend};
/// let nb = |user_id, shared, union| Neighbor { user_id, shared, union };
/// let neighbors = [nb(2, 2, 4), nb(3, 1, 4)];
/// let sets: [&[u64]; 2] = [&[10, 11, 12], &[10, 13]];
/// let score = |c: u64| (c != 13).then_some(Score(c as f64));
/// let recs = recommend(&neighbors, &sets, &[10], score, 5);
/// // 12 and 11 come from user 2 (0.5 × score); 13 has no score; 10 is already the user's.
/// let ids: Vec<u64> = recs.iter().map(|r| r.campaign_id).collect();
/// assert_eq!(ids, vec![12, 11]);
/// assert_eq!(recs[0].score, Score(6.0));
/// assert_eq!(recs[0].because, vec![nb(2, 2, 4)]);
/// ```
pub fn recommend<S: AsRef<[u64]>>(
    neighbors: &[Neighbor],
    sets: &[S],
    mine: &[u64],
    score: impl Fn(u64) -> Option<Score>,
    n: usize,
) -> Vec<Recommendation> {
    // (campaign, index of the neighbor): sorted, so each campaign's neighbors come best first,
    // as `neighbors` is.
    let mut pairs: Vec<(u64, usize)> = Vec::new();
    for (i, set) in sets.iter().enumerate().take(neighbors.len()) {
        pairs.extend(
            set.as_ref()
                .iter()
                .filter(|c| mine.binary_search(c).is_err())
                .map(|c| (*c, i)),
        );
    }
    // Unique already: the neighbors are distinct users and each set holds a campaign once.
    pairs.sort_unstable();
    // (score, campaign, campaign score, range of `pairs`).
    let mut scored: Vec<(Score, u64, Score, usize, usize)> = Vec::new();
    let mut a = 0;
    while a < pairs.len() {
        let c = pairs[a].0;
        let b = a + pairs[a..].partition_point(|p| p.0 == c);
        if let Some(cs) = score(c) {
            let s = recommendation_score_of(pairs[a..b].iter().map(|p| &neighbors[p.1]), cs);
            scored.push((s, c, cs, a, b));
        }
        a = b;
    }
    scored.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    scored.truncate(n);
    scored
        .into_iter()
        .map(
            |(score, campaign_id, campaign_score, a, b)| Recommendation {
                campaign_id,
                score,
                campaign_score,
                because: pairs[a..b].iter().map(|p| neighbors[p.1]).collect(),
            },
        )
        .collect()
}

/// Sum of `jaccard × campaign_score` over `because` (in the given order), the one formula used
/// by [`recommend`] and the oracles so equal inputs give bit-identical scores.
pub fn recommendation_score(because: &[Neighbor], campaign_score: Score) -> Score {
    recommendation_score_of(because, campaign_score)
}

/// [`recommendation_score`] over any sequence of neighbors (no slice needed).
pub fn recommendation_score_of<'a>(
    because: impl IntoIterator<Item = &'a Neighbor>,
    campaign_score: Score,
) -> Score {
    let mut similarity = 0.0;
    for n in because {
        similarity += n.jaccard();
    }
    Score(similarity * campaign_score.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbors_rank_by_exact_jaccard_then_id() {
        let n = |user_id, shared, union| Neighbor {
            user_id,
            shared,
            union,
        };
        let mut v = vec![n(5, 1, 3), n(2, 2, 6), n(9, 1, 1), n(1, 1, 4)];
        v.sort();
        // 1/1, then 1/3 == 2/6 by id, then 1/4.
        assert_eq!(v, vec![n(9, 1, 1), n(2, 2, 6), n(5, 1, 3), n(1, 1, 4)]);
    }

    #[test]
    fn rates_and_scores() {
        let w = Weights::default();
        let e = CampaignEngagement {
            campaign_id: 1,
            views: 10,
            clicks: 2,
            conversions: 1,
            revenue_micros: 5,
            score: w.score(10, 2, 1),
        };
        assert_eq!(e.score, Score(45.0));
        assert_eq!(e.ctr(), Some(0.2));
        assert_eq!(e.conversion_rate(), Some(0.5));
    }
}
