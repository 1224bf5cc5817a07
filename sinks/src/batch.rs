//! What the sink workers write: the [`Batch`] trait and its implementations for the three sink
//! paths (counts, similarity, dead letters), with how consecutive batches merge into one
//! equivalent write when a store falls behind.

use eddy_core::{
    CampaignEngagement, CampaignWindowCount, CountsBatch, DeadLetterBatch, EventType,
    PaneEngagement, SimilarUsers, SimilarityBatch, TypeWindowStats, UserCampaigns,
};
use std::collections::BTreeMap;

/// What a [`SinkWorker`](crate::SinkWorker) writes: the output of one dataflow epoch, or of
/// several consecutive epochs merged into one equivalent write.
pub trait Batch: Send + Sync + 'static {
    /// The (latest) epoch the batch completes.
    fn epoch(&self) -> u64;
    /// Rows carried, for the `sink.max_batch_rows` limit of merged writes.
    fn rows(&self) -> usize;
    /// One write equivalent to writing `self`, then `later` (the later epoch's values win).
    fn merge(&self, later: &Self) -> Self;
    /// `self` as consecutive parts of at most `max_rows` rows each (writing them in order is
    /// writing `self`, but not atomically), or `None` if the batch must be written whole.
    fn split(&self, _max_rows: usize) -> Option<Vec<Self>>
    where
        Self: Sized,
    {
        None
    }
}

/// Merges two consecutive batches into one equivalent write: `later`'s rows win over
/// `earlier`'s for the same key, epoch and watermark are the larger ones, `window_size_ms` and
/// `sliding_ms` are `later`'s.
///
/// * Windows (by type or campaign, event type and start): the later row wins, so a window that
///   became final in `later` is final.
/// * Campaign engagement (by campaign id): the later of update and removal wins (within one
///   batch a removal counts after an update, as the sinks apply them).
/// * `final_engagement` by `(window_start_ms, campaign_id)`: the later row wins.
/// * `top_campaigns`: `later`'s when `Some`, else `earlier`'s.
pub fn merge_batches(earlier: &CountsBatch, later: &CountsBatch) -> CountsBatch {
    let mut types: BTreeMap<(EventType, i64), (TypeWindowStats, bool)> = BTreeMap::new();
    let mut campaigns: BTreeMap<(u64, EventType, i64), (CampaignWindowCount, bool)> =
        BTreeMap::new();
    // Campaign id -> Some(new engagement) or None (removed).
    let mut engagement: BTreeMap<u64, Option<CampaignEngagement>> = BTreeMap::new();
    let mut panes: BTreeMap<(i64, u64), PaneEngagement> = BTreeMap::new();
    for b in [earlier, later] {
        for (list, fin) in [(&b.open_types, false), (&b.final_types, true)] {
            for r in list {
                types.insert((r.event_type, r.window_start_ms), (*r, fin));
            }
        }
        for (list, fin) in [(&b.open_campaigns, false), (&b.final_campaigns, true)] {
            for r in list {
                campaigns.insert((r.campaign_id, r.event_type, r.window_start_ms), (*r, fin));
            }
        }
        for e in &b.engagement {
            engagement.insert(e.campaign_id, Some(*e));
        }
        for &c in &b.engagement_removed {
            engagement.insert(c, None);
        }
        for p in &b.final_engagement {
            panes.insert((p.window_start_ms, p.campaign_id), *p);
        }
    }
    let mut out = CountsBatch {
        epoch: earlier.epoch.max(later.epoch),
        watermark_ms: earlier.watermark_ms.max(later.watermark_ms),
        window_size_ms: later.window_size_ms,
        sliding_ms: later.sliding_ms,
        top_campaigns: later
            .top_campaigns
            .clone()
            .or_else(|| earlier.top_campaigns.clone()),
        final_engagement: panes.into_values().collect(),
        ..CountsBatch::default()
    };
    for (r, fin) in types.into_values() {
        if fin {
            out.final_types.push(r)
        } else {
            out.open_types.push(r)
        }
    }
    for (r, fin) in campaigns.into_values() {
        if fin {
            out.final_campaigns.push(r)
        } else {
            out.open_campaigns.push(r)
        }
    }
    for (c, e) in engagement {
        match e {
            Some(e) => out.engagement.push(e),
            None => out.engagement_removed.push(c),
        }
    }
    out
}

impl Batch for CountsBatch {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn rows(&self) -> usize {
        self.open_types.len()
            + self.open_campaigns.len()
            + self.final_types.len()
            + self.final_campaigns.len()
            + self.engagement.len()
            + self.engagement_removed.len()
            + self.final_engagement.len()
            + self.top_campaigns.as_ref().map_or(0, Vec::len)
    }

    fn merge(&self, later: &Self) -> Self {
        merge_batches(self, later)
    }
}

impl Batch for SimilarityBatch {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn rows(&self) -> usize {
        self.similar.len() + self.campaigns.len() + self.interaction_panes.len()
    }

    /// Per user, the later list wins (an empty list, "none any more", included); `as_of_ms`
    /// and `sliding_ms` are `later`'s; interaction panes are facts: both batches' are kept.
    fn merge(&self, later: &Self) -> Self {
        let mut similar: BTreeMap<u64, &SimilarUsers> = BTreeMap::new();
        let mut campaigns: BTreeMap<u64, &UserCampaigns> = BTreeMap::new();
        for b in [self, later] {
            similar.extend(b.similar.iter().map(|s| (s.user_id, s)));
            campaigns.extend(b.campaigns.iter().map(|c| (c.user_id, c)));
        }
        Self {
            epoch: self.epoch.max(later.epoch),
            as_of_ms: self.as_of_ms.max(later.as_of_ms),
            sliding_ms: later.sliding_ms,
            similar: similar.into_values().cloned().collect(),
            campaigns: campaigns.into_values().cloned().collect(),
            interaction_panes: [&self.interaction_panes[..], &later.interaction_panes[..]].concat(),
        }
    }

    /// Users are independent values: a pane close's batch is written a slice at a time
    /// (a reader may see some users' new lists before others', each with its `as_of`).
    fn split(&self, max_rows: usize) -> Option<Vec<Self>> {
        let max_rows = max_rows.max(1);
        let part = |similar: &[SimilarUsers], campaigns: &[UserCampaigns], panes| Self {
            epoch: self.epoch,
            as_of_ms: self.as_of_ms,
            sliding_ms: self.sliding_ms,
            similar: similar.to_vec(),
            campaigns: campaigns.to_vec(),
            interaction_panes: panes,
        };
        // The interaction panes first: a checkpoint needs all of them, readers none.
        let mut parts: Vec<Self> = self
            .interaction_panes
            .chunks(max_rows)
            .map(|c| part(&[], &[], c.to_vec()))
            .collect();
        parts.extend(
            self.similar
                .chunks(max_rows)
                .map(|c| part(c, &[], Vec::new())),
        );
        parts.extend(
            self.campaigns
                .chunks(max_rows)
                .map(|c| part(&[], c, Vec::new())),
        );
        Some(parts)
    }
}

impl Batch for DeadLetterBatch {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn rows(&self) -> usize {
        self.letters.len()
    }

    /// Letters are independent records: written a slice at a time, in order.
    fn split(&self, max_rows: usize) -> Option<Vec<Self>> {
        let parts = self.letters.chunks(max_rows.max(1)).map(|c| Self {
            epoch: self.epoch,
            letters: c.to_vec(),
        });
        Some(parts.collect())
    }

    /// Letters are records, not keyed values: merging keeps every letter, in order.
    fn merge(&self, later: &Self) -> Self {
        let mut letters = Vec::with_capacity(self.letters.len() + later.letters.len());
        letters.extend_from_slice(&self.letters);
        letters.extend_from_slice(&later.letters);
        Self {
            epoch: self.epoch.max(later.epoch),
            letters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_core::{Neighbor, Weights};

    fn eng(campaign_id: u64, views: u64) -> CampaignEngagement {
        CampaignEngagement {
            campaign_id,
            views,
            clicks: 1,
            conversions: 0,
            revenue_micros: 0,
            score: Weights::default().score(views, 1, 0),
        }
    }

    fn pane(window_start_ms: i64, campaign_id: u64, views: u64) -> PaneEngagement {
        PaneEngagement {
            window_start_ms,
            campaign_id,
            views,
            clicks: 0,
            conversions: 0,
            revenue_micros: 0,
        }
    }

    fn nb(user_id: u64) -> Neighbor {
        Neighbor {
            user_id,
            shared: 1,
            union: 3,
        }
    }

    fn sim(user_id: u64, neighbors: &[u64]) -> SimilarUsers {
        SimilarUsers {
            user_id,
            neighbors: neighbors.iter().map(|&u| nb(u)).collect(),
        }
    }

    fn set(user_id: u64, campaigns: &[u64]) -> UserCampaigns {
        UserCampaigns {
            user_id,
            campaigns: campaigns.to_vec(),
        }
    }

    #[test]
    fn merge_coalesces_engagement_and_top_list() {
        let earlier = CountsBatch {
            epoch: 1,
            watermark_ms: 100,
            window_size_ms: 10,
            sliding_ms: 40,
            // 1: updated, then removed later. 2: removed, then updated later. 3: earlier only.
            // 4: updated in both. 5: removed only.
            engagement: vec![eng(1, 1), eng(3, 3), eng(4, 4)],
            engagement_removed: vec![2, 5],
            final_engagement: vec![pane(0, 1, 1), pane(0, 2, 2), pane(10, 1, 3)],
            top_campaigns: Some(vec![eng(4, 4), eng(3, 3)]),
            ..CountsBatch::default()
        };
        let later = CountsBatch {
            epoch: 2,
            watermark_ms: 110,
            window_size_ms: 10,
            sliding_ms: 50,
            engagement: vec![eng(2, 20), eng(4, 40)],
            engagement_removed: vec![1],
            final_engagement: vec![pane(0, 2, 22), pane(20, 3, 5)],
            top_campaigns: None,
            ..CountsBatch::default()
        };
        let m = merge_batches(&earlier, &later);
        assert_eq!(
            (m.epoch, m.watermark_ms, m.window_size_ms, m.sliding_ms),
            (2, 110, 10, 50)
        );
        assert_eq!(m.engagement, vec![eng(2, 20), eng(3, 3), eng(4, 40)]);
        assert_eq!(m.engagement_removed, vec![1, 5]);
        assert_eq!(
            m.final_engagement,
            vec![
                pane(0, 1, 1),
                pane(0, 2, 22),
                pane(10, 1, 3),
                pane(20, 3, 5)
            ]
        );
        // No top list later: the earlier one stays.
        assert_eq!(m.top_campaigns, Some(vec![eng(4, 4), eng(3, 3)]));
        assert_eq!(m.rows(), 3 + 2 + 4 + 2);

        // A later top list wins, also an empty one.
        let newer = CountsBatch {
            epoch: 3,
            watermark_ms: 120,
            top_campaigns: Some(vec![]),
            ..CountsBatch::default()
        };
        assert_eq!(merge_batches(&m, &newer).top_campaigns, Some(vec![]));
        assert_eq!(
            merge_batches(&newer, &later).top_campaigns,
            Some(vec![]),
            "a later None keeps the earlier Some"
        );
        // Merging a batch with itself changes nothing (idempotent).
        let again = merge_batches(&m, &m);
        assert_eq!(again, m);
    }

    #[test]
    fn merge_coalesces_similarity_and_sets() {
        let earlier = SimilarityBatch {
            interaction_panes: Vec::new(),
            epoch: 1,
            as_of_ms: 100,
            sliding_ms: 40,
            similar: vec![sim(7, &[8, 9]), sim(8, &[7])],
            campaigns: vec![set(7, &[1, 2]), set(8, &[3])],
        };
        let later = SimilarityBatch {
            interaction_panes: Vec::new(),
            epoch: 2,
            as_of_ms: 110,
            sliding_ms: 50,
            similar: vec![sim(7, &[]), sim(9, &[7])],
            campaigns: vec![set(8, &[]), set(9, &[4])],
        };
        let m = earlier.merge(&later);
        assert_eq!((m.epoch, m.as_of_ms, m.sliding_ms), (2, 110, 50));
        assert_eq!(m.similar, vec![sim(7, &[]), sim(8, &[7]), sim(9, &[7])]);
        assert_eq!(
            m.campaigns,
            vec![set(7, &[1, 2]), set(8, &[]), set(9, &[4])]
        );
        assert_eq!(m.rows(), 6);
        assert_eq!(m.merge(&m), m, "merging with itself changes nothing");
    }
}
