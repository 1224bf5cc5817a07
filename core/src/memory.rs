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
#[derive(Debug, Default, Clone)]
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
}

impl MemoryStore {
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
