//! The in-memory store behind `eddy demo`: both layers (open and finalized windows) in one
//! process, fed by the same sink batches and checkpoints as Redis and ClickHouse.

use crate::event::EventType;
use crate::rows::{CampaignWindowCount, Checkpoint, SinkBatch, TypeWindowStats};
use std::collections::BTreeMap;

/// A stored window row plus whether it is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored<T> {
    /// The row's current (or final) values.
    pub row: T,
    /// True once the watermark passed the window's end.
    pub is_final: bool,
}

/// In-memory view of eddy's outputs, updated per sink batch (see [`SinkBatch`]).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    types: BTreeMap<(EventType, i64), Stored<TypeWindowStats>>,
    campaigns: BTreeMap<(u64, EventType, i64), Stored<CampaignWindowCount>>,
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

    /// Applies one sink batch (idempotent: values are absolute).
    pub fn apply(&mut self, batch: &SinkBatch) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(watermark_ms: i64, starts: &[i64]) -> SinkBatch {
        SinkBatch {
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
            ..SinkBatch::default()
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
}
