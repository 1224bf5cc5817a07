//! Rows produced by the dataflows and held by the sinks, and source checkpoints.
//!
//! The storage layout built from these rows (Redis keys, ClickHouse tables) is documented in
//! `docs/storage.md` at the repository root.

use crate::engagement::{CampaignEngagement, PaneEngagement, SimilarUsers, UserCampaigns};
use crate::event::EventType;
use serde::{Deserialize, Serialize};

/// Aggregates of one event type in one tumbling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TypeWindowStats {
    /// Window start, epoch ms.
    pub window_start_ms: i64,
    /// The event type aggregated.
    pub event_type: EventType,
    /// Number of events.
    pub count: u64,
    /// Sum of `amount` in micro-units (0 when no event carried an amount).
    pub sum_micros: i64,
    /// Smallest `amount` in micro-units, if any event carried one.
    pub min_micros: Option<i64>,
    /// Largest `amount` in micro-units, if any event carried one.
    pub max_micros: Option<i64>,
}

/// Count of one event type for one campaign in one tumbling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CampaignWindowCount {
    /// Window start, epoch ms.
    pub window_start_ms: i64,
    /// The campaign.
    pub campaign_id: u64,
    /// The event type counted.
    pub event_type: EventType,
    /// Number of events.
    pub count: u64,
}

/// What the fast sink path writes for one worker and one dataflow epoch: windowed counts,
/// engagement and the top list. Sinks apply a batch atomically and idempotently: values are
/// absolute (never increments), so writing the same batch twice, or an older batch again
/// before a newer one, converges to the same state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CountsBatch {
    /// The dataflow epoch (processing time) this batch completes.
    pub epoch: u64,
    /// Event-time watermark at this epoch: every window with `end <= watermark_ms` is final.
    /// The fast path owns the stores' watermark: writing this batch advances it.
    pub watermark_ms: i64,
    /// Window length in ms (so sinks can compute window ends and TTLs).
    pub window_size_ms: i64,
    /// Current values of open windows whose values changed in this epoch.
    pub open_types: Vec<TypeWindowStats>,
    /// Current values of open campaign windows whose values changed in this epoch.
    pub open_campaigns: Vec<CampaignWindowCount>,
    /// Windows that became final in this epoch, with their final values.
    pub final_types: Vec<TypeWindowStats>,
    /// Campaign windows that became final in this epoch, with their final values.
    pub final_campaigns: Vec<CampaignWindowCount>,
    /// Sliding-window length of the engagement scores, ms (for TTLs and readers).
    pub sliding_ms: i64,
    /// Sliding-window engagement of the campaigns whose values changed in this epoch.
    pub engagement: Vec<CampaignEngagement>,
    /// Campaigns that left the sliding window in this epoch (no event in it any more).
    pub engagement_removed: Vec<u64>,
    /// Per-window engagement of the panes (tumbling windows) that became final in this epoch.
    pub final_engagement: Vec<PaneEngagement>,
    /// The new top list of campaigns by score, best first, when it changed in this epoch
    /// (one worker holds the list; `Some(vec![])` when no campaign is left).
    pub top_campaigns: Option<Vec<CampaignEngagement>>,
}

impl CountsBatch {
    /// True when the batch carries no rows (it may still advance the watermark).
    pub fn is_empty(&self) -> bool {
        self.open_types.is_empty()
            && self.open_campaigns.is_empty()
            && self.final_types.is_empty()
            && self.final_campaigns.is_empty()
            && self.engagement.is_empty()
            && self.engagement_removed.is_empty()
            && self.final_engagement.is_empty()
            && self.top_campaigns.is_none()
    }
}

/// What the slow sink path writes for one worker and one dataflow epoch: the similar users
/// and interaction sets that changed (once per pane close); recommendations are ranked from
/// them at read time ([`crate::recommend`]). Written by its own sink operator
/// and threads so the fast path never waits for it; it lags the fast path, so it stamps its
/// values with `as_of_ms` but never moves the stores' watermark.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimilarityBatch {
    /// The dataflow epoch (processing time) this batch completes.
    pub epoch: u64,
    /// Event-time watermark at this epoch: the `as_of` of every value written.
    pub as_of_ms: i64,
    /// Sliding-window length, ms (the values' TTLs).
    pub sliding_ms: i64,
    /// Users whose similar users changed in this epoch (empty `neighbors`: none any more).
    pub similar: Vec<SimilarUsers>,
    /// Users whose interaction set changed in this epoch (empty `campaigns`: none any more).
    pub campaigns: Vec<UserCampaigns>,
    /// The interest pairs of the panes final at this epoch: the durable form of the
    /// interaction sets, from which a restart restores them ([`InteractionPane`]).
    #[serde(default)]
    pub interaction_panes: Vec<InteractionPane>,
}

/// One interest pair of a final pane: user `user_id` clicked or converted on (or, with
/// `similarity.views_are_interest`, viewed) `campaign_id` in the pane starting at
/// `window_start_ms`, and the pane is final (closed by the watermark). The interaction sets
/// are a function of these rows (a pair is in the set while its latest pane is in the sliding
/// window), so they are the sliding state a restart loads instead of re-reading a window of
/// records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InteractionPane {
    /// Pane start, epoch ms.
    pub window_start_ms: i64,
    /// The user.
    pub user_id: u64,
    /// The campaign.
    pub campaign_id: u64,
}

/// A record that could not be counted, with why; written to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Short reason (`bad_json`, `late`, ...).
    pub reason: String,
    /// Human-readable error.
    pub error: String,
    /// The original message bytes.
    pub payload: Vec<u8>,
}

/// The dead letters of one worker for one dataflow epoch (or several consecutive epochs
/// merged), written by the dead-letter sink in the order the source produced them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterBatch {
    /// The (latest) dataflow epoch the batch completes.
    pub epoch: u64,
    /// The letters, in source order.
    pub letters: Vec<DeadLetter>,
}

/// Where one partition's reading stands at a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    /// Kafka partition.
    pub partition: i32,
    /// First offset that still feeds an open window: a restart re-reads from here so open
    /// windows are rebuilt in full. Also the offset committed to the broker.
    pub resume_offset: i64,
    /// Next offset after everything processed. Re-read records below it whose window is
    /// already final (closed under `watermark_ms`) are skipped, not counted twice.
    pub high_offset: i64,
}

/// A globally consistent source checkpoint: all partitions at the same dataflow epoch, written
/// only after every sink holds every update derived from records before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Source topic.
    pub topic: String,
    /// Epoch the checkpoint was taken at.
    pub epoch: u64,
    /// Watermark at that epoch (the batch/speed boundary: windows ending at or before it are
    /// final and held by the batch layer).
    pub watermark_ms: i64,
    /// One entry per partition of the topic.
    pub partitions: Vec<PartitionCheckpoint>,
    /// The layout of the sliding-window state the sinks held when this checkpoint was written
    /// ([`crate::Config::state_layout`]): a restart restores that state from the stores and
    /// re-reads only the open windows. `None`: the state is not restorable (a replay's
    /// checkpoint, or one written before eddy stored it): the resume offsets then cover the
    /// whole sliding window and a restart re-reads it.
    #[serde(default)]
    pub state: Option<String>,
}
