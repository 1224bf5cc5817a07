//! The in-memory store behind `eddy demo`: both layers (open and finalized windows) in one
//! process, fed by the same sink batches and checkpoints as Redis and ClickHouse, plus the
//! current campaign engagement, top list, similar users and interaction sets (from which
//! recommendations are ranked at read time).

use crate::engagement::{CampaignEngagement, Neighbor, Recommendation, recommend};
use crate::event::EventType;
use crate::rows::{CampaignWindowCount, Checkpoint, CountsBatch, SimilarityBatch, TypeWindowStats};
use std::collections::BTreeMap;

/// A stored window row plus whether it is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored<T> {
    /// The row's current (or final) values.
    pub row: T,
    /// True once the watermark passed the window's end.
    pub is_final: bool,
}

/// A value with the event-time watermark of the sink batch that wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct AsOf<T> {
    /// The value.
    pub value: T,
    /// Watermark (event time, epoch ms) of the batch that wrote `value`.
    pub as_of_ms: i64,
}

/// In-memory view of eddy's outputs, updated per sink batch (see [`CountsBatch`]).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    types: BTreeMap<(EventType, i64), Stored<TypeWindowStats>>,
    campaigns: BTreeMap<(u64, EventType, i64), Stored<CampaignWindowCount>>,
    /// Sliding-window engagement per campaign (removed when the campaign leaves the window).
    engagement: BTreeMap<u64, AsOf<CampaignEngagement>>,
    /// The latest top list, best first (`None` until a batch carried one).
    top: Option<AsOf<Vec<CampaignEngagement>>>,
    /// Similar users per user (absent when the list is empty).
    similar: BTreeMap<u64, AsOf<Vec<Neighbor>>>,
    /// Interaction set per user (absent when the set is empty).
    sets: BTreeMap<u64, AsOf<Vec<u64>>>,
    /// Highest watermark seen in a sink batch.
    pub watermark_ms: Option<i64>,
    /// Batch/speed boundary from the last checkpoint.
    pub boundary_ms: Option<i64>,
    /// Highest epoch applied.
    pub epoch: u64,
    /// Wall-clock ms of the last applied batch.
    pub updated_at_ms: Option<i64>,
    /// Keep only windows starting at or after `watermark - retention_ms` (`None`: keep all).
    pub retention_ms: Option<i64>,
    /// Windows starting before this have been pruned.
    pruned_before: i64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            types: BTreeMap::new(),
            campaigns: BTreeMap::new(),
            engagement: BTreeMap::new(),
            top: None,
            similar: BTreeMap::new(),
            sets: BTreeMap::new(),
            watermark_ms: None,
            boundary_ms: None,
            epoch: 0,
            updated_at_ms: None,
            retention_ms: None,
            pruned_before: i64::MIN,
        }
    }
}

impl MemoryStore {
    /// An empty store keeping windows that start within `retention_ms` of the watermark.
    pub fn with_retention(retention_ms: i64) -> Self {
        Self {
            retention_ms: Some(retention_ms),
            ..Self::default()
        }
    }

    /// Drops windows older than the retention, at most once per window length.
    fn prune(&mut self, window_ms: i64) {
        let (Some(r), Some(w)) = (self.retention_ms, self.watermark_ms) else {
            return;
        };
        let cutoff = w.saturating_sub(r);
        if cutoff > self.pruned_before.saturating_add(window_ms.max(1)) {
            self.types.retain(|(_, ws), _| *ws >= cutoff);
            self.campaigns.retain(|(_, _, ws), _| *ws >= cutoff);
            self.pruned_before = cutoff;
        }
    }

    /// Applies one batch of the fast path (idempotent: values are absolute). Engagement and
    /// the top list are stored with the batch's watermark as their `as_of_ms`; within a batch,
    /// `engagement_removed` is applied after `engagement`.
    pub fn apply(&mut self, batch: &CountsBatch) {
        let as_of = |value| AsOf {
            value,
            as_of_ms: batch.watermark_ms,
        };
        for e in &batch.engagement {
            self.engagement.insert(e.campaign_id, as_of(*e));
        }
        for c in &batch.engagement_removed {
            self.engagement.remove(c);
        }
        if let Some(top) = &batch.top_campaigns {
            self.top = Some(AsOf {
                value: top.clone(),
                as_of_ms: batch.watermark_ms,
            });
        }
        for r in &batch.open_types {
            self.types.insert(
                (r.event_type, r.window_start_ms),
                Stored {
                    row: *r,
                    is_final: false,
                },
            );
        }
        for r in &batch.final_types {
            self.types.insert(
                (r.event_type, r.window_start_ms),
                Stored {
                    row: *r,
                    is_final: true,
                },
            );
        }
        for r in &batch.open_campaigns {
            self.campaigns.insert(
                (r.campaign_id, r.event_type, r.window_start_ms),
                Stored {
                    row: *r,
                    is_final: false,
                },
            );
        }
        for r in &batch.final_campaigns {
            self.campaigns.insert(
                (r.campaign_id, r.event_type, r.window_start_ms),
                Stored {
                    row: *r,
                    is_final: true,
                },
            );
        }
        self.watermark_ms = Some(
            self.watermark_ms
                .unwrap_or(i64::MIN)
                .max(batch.watermark_ms),
        );
        self.epoch = self.epoch.max(batch.epoch);
        self.updated_at_ms = Some(crate::now_ms());
        self.prune(batch.window_size_ms);
    }

    /// Applies one batch of the slow path (idempotent): similar users and interaction sets,
    /// stored with the batch's `as_of_ms`; an empty list removes the user's entry. The
    /// store's watermark is the fast path's: this does not move it.
    pub fn apply_similarity(&mut self, batch: &SimilarityBatch) {
        for s in &batch.similar {
            if s.neighbors.is_empty() {
                self.similar.remove(&s.user_id);
            } else {
                let value = AsOf {
                    value: s.neighbors.clone(),
                    as_of_ms: batch.as_of_ms,
                };
                self.similar.insert(s.user_id, value);
            }
        }
        for c in &batch.campaigns {
            if c.campaigns.is_empty() {
                self.sets.remove(&c.user_id);
            } else {
                let value = AsOf {
                    value: c.campaigns.clone(),
                    as_of_ms: batch.as_of_ms,
                };
                self.sets.insert(c.user_id, value);
            }
        }
        self.epoch = self.epoch.max(batch.epoch);
        self.updated_at_ms = Some(crate::now_ms());
    }

    /// Records a checkpoint: its watermark becomes the batch/speed boundary.
    pub fn apply_checkpoint(&mut self, cp: &Checkpoint) {
        self.boundary_ms = Some(self.boundary_ms.unwrap_or(i64::MIN).max(cp.watermark_ms));
    }

    /// Type-window rows with `from_ms <= window_start < to_ms`, for one type or all.
    pub fn type_windows(
        &self,
        event_type: Option<EventType>,
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<Stored<TypeWindowStats>> {
        let types: Vec<EventType> = match event_type {
            Some(t) => vec![t],
            None => EventType::ALL.to_vec(),
        };
        let mut out = Vec::new();
        for t in types {
            out.extend(self.types.range((t, from_ms)..(t, to_ms)).map(|(_, v)| *v));
        }
        out
    }

    /// Campaign-window rows of one campaign with `from_ms <= window_start < to_ms`.
    pub fn campaign_windows(
        &self,
        campaign_id: u64,
        event_type: Option<EventType>,
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<Stored<CampaignWindowCount>> {
        let types: Vec<EventType> = match event_type {
            Some(t) => vec![t],
            None => EventType::ALL.to_vec(),
        };
        let mut out = Vec::new();
        for t in types {
            out.extend(
                self.campaigns
                    .range((campaign_id, t, from_ms)..(campaign_id, t, to_ms))
                    .map(|(_, v)| *v),
            );
        }
        out
    }

    /// The current sliding-window engagement of `campaign_id`, with the watermark of the batch
    /// that wrote it; `None` when the campaign is not in the sliding window.
    pub fn campaign_engagement(&self, campaign_id: u64) -> Option<AsOf<CampaignEngagement>> {
        self.engagement.get(&campaign_id).cloned()
    }

    /// Number of campaigns currently in the sliding window.
    pub fn engaged_campaigns(&self) -> usize {
        self.engagement.len()
    }

    /// The first `k` campaigns of the latest top list (best first, as the dataflow ranked
    /// them), with the watermark of the batch that wrote the list; `None` until a batch carried
    /// a top list (`Some` with an empty list when no campaign is left).
    pub fn top_campaigns(&self, k: usize) -> Option<AsOf<Vec<CampaignEngagement>>> {
        self.top.as_ref().map(|t| AsOf {
            value: t.value.iter().take(k).copied().collect(),
            as_of_ms: t.as_of_ms,
        })
    }

    /// The similar users of `user_id`, best first, with the watermark of the batch that wrote
    /// them; `None` when the user has none (never had, or none any more).
    pub fn similar_users(&self, user_id: u64) -> Option<&AsOf<Vec<Neighbor>>> {
        self.similar.get(&user_id)
    }

    /// The interaction set of `user_id` (ascending), with the watermark of the batch that
    /// wrote it; `None` when the user has none.
    pub fn campaigns_of(&self, user_id: u64) -> Option<&AsOf<Vec<u64>>> {
        self.sets.get(&user_id)
    }

    /// The top `n` recommendations of `user_id`, ranked now ([`recommend`]) from its similar
    /// users, their sets, its own set and the current campaign engagement scores; `as_of_ms`
    /// is the latest watermark among the values used. `None` when there is nothing to
    /// recommend.
    pub fn recommendations(&self, user_id: u64, n: usize) -> Option<AsOf<Vec<Recommendation>>> {
        let similar = self.similar.get(&user_id)?;
        let mut as_of_ms = similar.as_of_ms;
        let mine = match self.sets.get(&user_id) {
            Some(s) => {
                as_of_ms = as_of_ms.max(s.as_of_ms);
                s.value.as_slice()
            }
            None => &[],
        };
        let sets: Vec<&[u64]> = similar
            .value
            .iter()
            .map(|nb| match self.sets.get(&nb.user_id) {
                Some(s) => {
                    as_of_ms = as_of_ms.max(s.as_of_ms);
                    s.value.as_slice()
                }
                None => &[],
            })
            .collect();
        let score = |c: u64| self.engagement.get(&c).map(|e| e.value.score);
        let value = recommend(&similar.value, &sets, mine, score, n);
        for r in &value {
            if let Some(e) = self.engagement.get(&r.campaign_id) {
                as_of_ms = as_of_ms.max(e.as_of_ms);
            }
        }
        (!value.is_empty()).then_some(AsOf { value, as_of_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(watermark_ms: i64, starts: &[i64]) -> CountsBatch {
        CountsBatch {
            epoch: 1,
            watermark_ms,
            window_size_ms: 10,
            final_types: starts
                .iter()
                .map(|&s| TypeWindowStats {
                    window_start_ms: s,
                    event_type: EventType::View,
                    count: 1,
                    sum_micros: 0,
                    min_micros: None,
                    max_micros: None,
                })
                .collect(),
            final_campaigns: starts
                .iter()
                .map(|&s| CampaignWindowCount {
                    window_start_ms: s,
                    campaign_id: 7,
                    event_type: EventType::View,
                    count: 1,
                })
                .collect(),
            ..CountsBatch::default()
        }
    }

    #[test]
    fn retention_drops_old_windows_only() {
        let mut store = MemoryStore::with_retention(100);
        store.apply(&batch(50, &[0, 10, 20, 30, 40]));
        assert_eq!(store.type_windows(None, 0, 1_000).len(), 5);
        store.apply(&batch(150, &[140]));
        let starts: Vec<i64> = store
            .type_windows(None, 0, 1_000)
            .iter()
            .map(|r| r.row.window_start_ms)
            .collect();
        assert_eq!(
            starts,
            vec![140],
            "windows before watermark - retention = 50 are dropped"
        );
        assert_eq!(store.campaign_windows(7, None, 0, 1_000).len(), 1);
        let mut keep_all = MemoryStore::default();
        keep_all.apply(&batch(50, &[0, 10]));
        keep_all.apply(&batch(10_000, &[9_990]));
        assert_eq!(keep_all.type_windows(None, 0, 100_000).len(), 3);
    }

    #[test]
    fn engagement_top_similar_and_recommendations() {
        use crate::engagement::{Score, SimilarUsers, UserCampaigns};
        let e = |campaign_id, views| CampaignEngagement {
            campaign_id,
            views,
            clicks: 0,
            conversions: 0,
            revenue_micros: 0,
            score: Score(views as f64),
        };
        let n = |user_id| Neighbor {
            user_id,
            shared: 1,
            union: 2,
        };
        let set = |user_id, campaigns: &[u64]| UserCampaigns {
            user_id,
            campaigns: campaigns.to_vec(),
        };
        let mut store = MemoryStore::default();
        assert_eq!(store.top_campaigns(10), None);
        store.apply(&CountsBatch {
            watermark_ms: 100,
            engagement: vec![e(1, 5), e(2, 3)],
            top_campaigns: Some(vec![e(1, 5), e(2, 3)]),
            ..CountsBatch::default()
        });
        store.apply_similarity(&SimilarityBatch {
            as_of_ms: 90,
            similar: vec![SimilarUsers {
                user_id: 7,
                neighbors: vec![n(8), n(9)],
            }],
            campaigns: vec![set(7, &[1]), set(8, &[1, 2]), set(9, &[2, 3])],
            ..SimilarityBatch::default()
        });
        assert_eq!(
            store.watermark_ms,
            Some(100),
            "the slow path does not move it"
        );
        assert_eq!(store.similar_users(7).unwrap().as_of_ms, 90);
        assert_eq!(
            store.campaign_engagement(1),
            Some(AsOf {
                value: e(1, 5),
                as_of_ms: 100
            })
        );
        assert_eq!(store.engaged_campaigns(), 2);
        assert_eq!(
            store.top_campaigns(1),
            Some(AsOf {
                value: vec![e(1, 5)],
                as_of_ms: 100
            })
        );
        assert_eq!(store.similar_users(7).unwrap().value, vec![n(8), n(9)]);
        // Campaign 2 (views 3) from users 8 and 9 (jaccard 1/2 each); 3 has no engagement.
        let recs = store.recommendations(7, 10).unwrap();
        assert_eq!(
            recs.value,
            vec![Recommendation {
                campaign_id: 2,
                score: Score(3.0),
                campaign_score: Score(3.0),
                because: vec![n(8), n(9)],
            }]
        );
        assert_eq!(recs.as_of_ms, 100, "the engagement score is as of 100");
        assert_eq!(store.campaigns_of(9).unwrap().value, vec![2, 3]);

        // Later: campaign 1 leaves, 2 changes, the top list empties, user 7 loses both lists.
        store.apply(&CountsBatch {
            watermark_ms: 200,
            engagement: vec![e(2, 4)],
            engagement_removed: vec![1],
            top_campaigns: Some(vec![]),
            ..CountsBatch::default()
        });
        store.apply_similarity(&SimilarityBatch {
            as_of_ms: 200,
            similar: vec![SimilarUsers {
                user_id: 7,
                neighbors: vec![],
            }],
            campaigns: vec![set(7, &[])],
            ..SimilarityBatch::default()
        });
        assert_eq!(store.campaign_engagement(1), None);
        assert_eq!(store.campaign_engagement(2).unwrap().as_of_ms, 200);
        assert_eq!(store.campaign_engagement(2).unwrap().value, e(2, 4));
        assert_eq!(
            store.top_campaigns(10),
            Some(AsOf {
                value: vec![],
                as_of_ms: 200
            })
        );
        assert_eq!(store.similar_users(7), None);
        assert_eq!(store.recommendations(7, 10), None);
        assert_eq!(store.campaigns_of(7), None);
        // A batch without a top list keeps the previous one.
        store.apply(&CountsBatch {
            watermark_ms: 300,
            ..CountsBatch::default()
        });
        assert_eq!(store.top_campaigns(10).unwrap().as_of_ms, 200);
    }
}
