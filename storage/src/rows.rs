//! ClickHouse tables and their rows (`docs/storage.md`, "ClickHouse"): the sink inserts these
//! types, the query server and the tests read them back (`SELECT ?fields …`), so each table's
//! columns are written once next to `clickhouse/schema/`. Clients use RowBinary without
//! validation (ClickHouse 18.16): field order must match the table's column order.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// Table of finalized type windows ([`TypeWindowRow`]).
pub const TYPE_WINDOWS: &str = "type_windows";
/// Table of finalized campaign windows ([`CampaignWindowRow`]).
pub const CAMPAIGN_WINDOWS: &str = "campaign_windows";
/// Hourly rollup of [`TYPE_WINDOWS`] (read with [`TYPE_HOURLY_QUERY`](crate::TYPE_HOURLY_QUERY)).
pub const TYPE_WINDOWS_HOURLY: &str = "type_windows_hourly";
/// Hourly rollup of [`CAMPAIGN_WINDOWS`] (read with
/// [`CAMPAIGN_HOURLY_QUERY`](crate::CAMPAIGN_HOURLY_QUERY)).
pub const CAMPAIGN_WINDOWS_HOURLY: &str = "campaign_windows_hourly";
/// Source checkpoints ([`CheckpointRow`]).
pub const SOURCE_CHECKPOINTS: &str = "source_checkpoints";
/// Per-pane engagement of finalized windows ([`PaneEngagementRow`]).
pub const CAMPAIGN_ENGAGEMENT: &str = "campaign_engagement";
/// Similar-users snapshots ([`UserSimilarRow`]).
pub const USER_SIMILAR: &str = "user_similar";
/// Interaction-set snapshots ([`UserCampaignsRow`]).
pub const USER_CAMPAIGNS: &str = "user_campaigns";
/// Interest pairs of final panes, the durable sliding state ([`InteractionPaneRow`]).
pub const INTERACTION_PANES: &str = "interaction_panes";
/// The state layout of each checkpoint ([`CheckpointStateRow`]).
pub const CHECKPOINT_STATES: &str = "checkpoint_states";

/// A row of [`TYPE_WINDOWS`]: one finalized window of one event type.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct TypeWindowRow {
    /// Window start, epoch ms.
    pub window_start_ms: i64,
    /// `view`, `click` or `conversion`.
    pub event_type: String,
    /// Number of events.
    pub count: u64,
    /// Sum of amounts, micro-units.
    pub sum_micros: i64,
    /// Smallest amount, if any event carried one.
    pub min_micros: Option<i64>,
    /// Largest amount, if any event carried one.
    pub max_micros: Option<i64>,
    /// Write version (wall-clock µs of the write; the highest wins).
    pub version: u64,
}

/// A row of [`CAMPAIGN_WINDOWS`]: one finalized window of one campaign and event type.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct CampaignWindowRow {
    /// Window start, epoch ms.
    pub window_start_ms: i64,
    /// The campaign.
    pub campaign_id: u64,
    /// `view`, `click` or `conversion`.
    pub event_type: String,
    /// Number of events.
    pub count: u64,
    /// Write version.
    pub version: u64,
}

/// A row of [`CAMPAIGN_ENGAGEMENT`]: engagement of one campaign in one finalized pane.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct PaneEngagementRow {
    /// Pane (tumbling window) start, epoch ms.
    pub window_start_ms: i64,
    /// The campaign.
    pub campaign_id: u64,
    /// Views in the pane.
    pub views: u64,
    /// Clicks in the pane.
    pub clicks: u64,
    /// Conversions in the pane.
    pub conversions: u64,
    /// Revenue, micro-units.
    pub revenue_micros: i64,
    /// Write version.
    pub version: u64,
}

/// A row of [`USER_SIMILAR`]: a snapshot of a user's similar users as parallel arrays, one
/// entry per neighbor, best first (empty: none any more).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct UserSimilarRow {
    /// The user.
    pub user_id: u64,
    /// Watermark of the batch that wrote the snapshot.
    pub as_of_ms: i64,
    /// Neighbor user ids.
    pub neighbors: Vec<u64>,
    /// Campaigns shared with each neighbor.
    pub shared: Vec<u32>,
    /// Size of the union of campaigns with each neighbor.
    pub union_size: Vec<u32>,
    /// Write version.
    pub version: u64,
}

/// A row of [`USER_CAMPAIGNS`]: a snapshot of a user's interaction set.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct UserCampaignsRow {
    /// The user.
    pub user_id: u64,
    /// Watermark of the batch that wrote the snapshot.
    pub as_of_ms: i64,
    /// The campaigns, ascending (empty: none any more).
    pub campaigns: Vec<u64>,
    /// Write version.
    pub version: u64,
}

/// A row of [`SOURCE_CHECKPOINTS`]: one partition of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct CheckpointRow {
    /// Source topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset to resume reading at.
    pub resume_offset: i64,
    /// High-water offset when the checkpoint was taken.
    pub high_offset: i64,
    /// Event-time watermark of the checkpoint.
    pub watermark_ms: i64,
    /// Dataflow epoch of the checkpoint.
    pub epoch: u64,
    /// Checkpoint version (all partitions of one checkpoint share it).
    pub version: u64,
}

/// A row of [`INTERACTION_PANES`]: user `user_id` showed interest in `campaign_id` in the
/// final pane starting at `window_start_ms` ([`eddy_core::InteractionPane`]). Also the row of
/// [`RESTORE_INTERACTIONS_QUERY`](crate::RESTORE_INTERACTIONS_QUERY), where the pane is the
/// pair's latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct InteractionPaneRow {
    /// Pane start, epoch ms.
    pub window_start_ms: i64,
    /// The user.
    pub user_id: u64,
    /// The campaign.
    pub campaign_id: u64,
}

/// A row of [`CHECKPOINT_STATES`]: the sliding-state layout of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct CheckpointStateRow {
    /// Checkpoint name (the topic, or a replay's name).
    pub topic: String,
    /// The checkpoint's version (its `source_checkpoints` rows share it).
    pub version: u64,
    /// [`eddy_core::Config::state_layout`] when it was written.
    pub layout: String,
}

/// A row of [`TYPE_HOURLY_QUERY`](crate::TYPE_HOURLY_QUERY): one hour of one event type.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct TypeHourlyRow {
    /// Hour start, epoch ms.
    pub hour_start_ms: i64,
    /// `view`, `click` or `conversion`.
    pub event_type: String,
    /// Events in the hour.
    pub count: u64,
    /// Sum of amounts, micro-units.
    pub sum_micros: i64,
    /// Smallest amount, if any.
    pub min_micros: Option<i64>,
    /// Largest amount, if any.
    pub max_micros: Option<i64>,
    /// Minute (native) windows stored for the hour.
    pub windows: u64,
}

/// A row of [`CAMPAIGN_HOURLY_QUERY`](crate::CAMPAIGN_HOURLY_QUERY): one hour of one campaign
/// and event type.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct CampaignHourlyRow {
    /// Hour start, epoch ms.
    pub hour_start_ms: i64,
    /// The campaign.
    pub campaign_id: u64,
    /// `view`, `click` or `conversion`.
    pub event_type: String,
    /// Events in the hour.
    pub count: u64,
    /// Minute (native) windows stored for the hour.
    pub windows: u64,
}

/// A row of [`ENGAGEMENT_QUERY`](crate::ENGAGEMENT_QUERY): a campaign's engagement summed over
/// the panes of a sliding window.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct EngagementSumRow {
    /// The campaign.
    pub campaign_id: u64,
    /// Views.
    pub views: u64,
    /// Clicks.
    pub clicks: u64,
    /// Conversions.
    pub conversions: u64,
    /// Revenue, micro-units.
    pub revenue_micros: i64,
}

/// A row of [`LATEST_WATERMARK_QUERY`](crate::LATEST_WATERMARK_QUERY).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct LatestWatermarkRow {
    /// Checkpoint rows stored (0: no checkpoint, `watermark_ms` is meaningless).
    pub checkpoints: u64,
    /// Highest checkpoint watermark.
    pub watermark_ms: i64,
}
