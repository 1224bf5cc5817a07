//! The SQL eddy runs against ClickHouse (`docs/storage.md`): fixed text, every value bound
//! client-side with `?`, table names unqualified (run with the database set on the client,
//! [`clickhouse_client`](crate::clickhouse_client)). `?fields` is expanded by the client to the
//! columns of the row type read.
//!
//! No query of a request path scans a whole table: each filters on a prefix of its table's
//! `ORDER BY` key (the id, or the event type) and, for time ranges, on the column of the day
//! partition key, so ClickHouse reads only the granules and days asked for (checked by
//! `storage/tests/queries.rs` with `force_primary_key` and `force_index_by_date`). The one
//! exception, [`LATEST_WATERMARK_QUERY`], reads `source_checkpoints`, which retention keeps to
//! about two days of checkpoints. The restore queries ([`RESTORE_ENGAGEMENT_QUERY`],
//! [`RESTORE_INTERACTIONS_QUERY`]) run once per restart and read a whole sliding window (only
//! its days' partitions).

/// Finalized type windows with `from_ms <= window_start_ms < to_ms`, all event types.
/// Binds: `from_ms`, `to_ms`. Rows: [`TypeWindowRow`](crate::TypeWindowRow).
pub const TYPE_WINDOWS_QUERY: &str = "SELECT ?fields FROM type_windows FINAL \
WHERE event_type IN ('view', 'click', 'conversion') \
AND window_start_ms >= ? AND window_start_ms < ?";

/// As [`TYPE_WINDOWS_QUERY`] for one event type. Binds: `from_ms`, `to_ms`, `event_type`.
pub const TYPE_WINDOWS_OF_TYPE_QUERY: &str = "SELECT ?fields FROM type_windows FINAL \
WHERE window_start_ms >= ? AND window_start_ms < ? AND event_type = ?";

/// Finalized windows of one campaign with `from_ms <= window_start_ms < to_ms`, all event
/// types. Binds: `campaign_id`, `from_ms`, `to_ms`. Rows:
/// [`CampaignWindowRow`](crate::CampaignWindowRow).
pub const CAMPAIGN_WINDOWS_QUERY: &str = "SELECT ?fields FROM campaign_windows FINAL \
WHERE campaign_id = ? AND window_start_ms >= ? AND window_start_ms < ?";

/// As [`CAMPAIGN_WINDOWS_QUERY`] for one event type. Binds: `campaign_id`, `from_ms`,
/// `to_ms`, `event_type`.
pub const CAMPAIGN_WINDOWS_OF_TYPE_QUERY: &str = "SELECT ?fields FROM campaign_windows FINAL \
WHERE campaign_id = ? AND window_start_ms >= ? AND window_start_ms < ? AND event_type = ?";

/// Hourly type rollups with `from_ms <= hour_start_ms < to_ms`, for every event type.
/// Binds: `from_ms` (Int64), `to_ms` (Int64). Rows: [`TypeHourlyRow`](crate::TypeHourlyRow)
/// (`windows`: minutes stored for the hour). Per minute only the highest version counts, so
/// the totals equal the sums of `type_windows FINAL`, however often minutes were rewritten.
pub const TYPE_HOURLY_QUERY: &str = "\
SELECT hour_start_ms, event_type, sum(c) AS count, sum(s) AS sum_micros, \
min(mn) AS min_micros, max(mx) AS max_micros, count() AS windows \
FROM (\
SELECT hour_start_ms, event_type, tupleElement(m, 1) AS ws, \
argMax(tupleElement(m, 3), tupleElement(m, 2)) AS c, \
argMax(tupleElement(m, 4), tupleElement(m, 2)) AS s, \
argMax(tupleElement(m, 5), tupleElement(m, 2)) AS mn, \
argMax(tupleElement(m, 6), tupleElement(m, 2)) AS mx \
FROM (\
SELECT hour_start_ms, event_type, arrayJoin(groupUniqArrayMerge(minutes)) AS m \
FROM type_windows_hourly WHERE event_type IN ('view', 'click', 'conversion') \
AND hour_start_ms >= ? AND hour_start_ms < ? \
GROUP BY hour_start_ms, event_type) \
GROUP BY hour_start_ms, event_type, ws) \
GROUP BY hour_start_ms, event_type \
ORDER BY event_type, hour_start_ms";

/// Hourly campaign rollups of one campaign with `from_ms <= hour_start_ms < to_ms`.
/// Binds: `campaign_id` (UInt64), `from_ms` (Int64), `to_ms` (Int64). Rows:
/// [`CampaignHourlyRow`](crate::CampaignHourlyRow).
pub const CAMPAIGN_HOURLY_QUERY: &str = "\
SELECT hour_start_ms, campaign_id, event_type, sum(c) AS count, count() AS windows \
FROM (\
SELECT hour_start_ms, campaign_id, event_type, tupleElement(m, 1) AS ws, \
argMax(tupleElement(m, 3), tupleElement(m, 2)) AS c \
FROM (\
SELECT hour_start_ms, campaign_id, event_type, arrayJoin(groupUniqArrayMerge(minutes)) AS m \
FROM campaign_windows_hourly \
WHERE campaign_id = ? AND hour_start_ms >= ? AND hour_start_ms < ? \
GROUP BY hour_start_ms, campaign_id, event_type) \
GROUP BY hour_start_ms, campaign_id, event_type, ws) \
GROUP BY hour_start_ms, campaign_id, event_type \
ORDER BY event_type, hour_start_ms";

/// Sliding-window engagement per campaign as of a boundary `B`: finalized panes with
/// `window_start_ms + window_ms <= B` and `window_start_ms + sliding_ms > B`.
/// Binds: `B - window_ms`, `B - sliding_ms`. Rows: [`EngagementSumRow`](crate::EngagementSumRow).
pub const ENGAGEMENT_QUERY: &str = "\
SELECT campaign_id, sum(views) AS v, sum(clicks) AS c, sum(conversions) AS cv, \
sum(revenue_micros) AS r FROM campaign_engagement FINAL \
WHERE window_start_ms <= ? AND window_start_ms > ? GROUP BY campaign_id ORDER BY campaign_id";

/// As [`ENGAGEMENT_QUERY`] for one campaign. Binds: campaign id, `B - window_ms`,
/// `B - sliding_ms`.
pub const CAMPAIGN_ENGAGEMENT_QUERY: &str = "\
SELECT campaign_id, sum(views) AS v, sum(clicks) AS c, sum(conversions) AS cv, \
sum(revenue_micros) AS r FROM campaign_engagement FINAL \
WHERE campaign_id = ? AND window_start_ms <= ? AND window_start_ms > ? GROUP BY campaign_id";

/// The latest similar-users snapshot of a user. Bind: user id. Row:
/// [`UserSimilarRow`](crate::UserSimilarRow).
pub const LATEST_SIMILAR_QUERY: &str = "SELECT ?fields FROM user_similar FINAL \
WHERE user_id = ? ORDER BY as_of_ms DESC LIMIT 1";

/// The latest interaction-set snapshot of each of some users. Bind: the user ids (a
/// non-empty array; `IN (SELECT …)` so that the primary key narrows the read).
/// Rows: [`UserCampaignsRow`](crate::UserCampaignsRow), at most one per user.
pub const LATEST_CAMPAIGNS_QUERY: &str = "SELECT ?fields FROM user_campaigns FINAL \
WHERE user_id IN (SELECT toUInt64(arrayJoin(?))) ORDER BY user_id, as_of_ms DESC LIMIT 1 BY user_id";

/// As [`ENGAGEMENT_QUERY`] for some campaigns. Binds: the campaign ids (a non-empty array),
/// `B - window_ms`, `B - sliding_ms`.
pub const CAMPAIGNS_ENGAGEMENT_QUERY: &str = "\
SELECT campaign_id, sum(views) AS v, sum(clicks) AS c, sum(conversions) AS cv, \
sum(revenue_micros) AS r FROM campaign_engagement FINAL \
WHERE campaign_id IN (SELECT toUInt64(arrayJoin(?))) AND window_start_ms <= ? AND window_start_ms > ? GROUP BY campaign_id";

/// The latest checkpoint of a topic: every partition row of the highest version. Binds:
/// topic, topic. Rows: [`CheckpointRow`](crate::CheckpointRow), by partition.
pub const LATEST_CHECKPOINT_QUERY: &str = "SELECT ?fields FROM source_checkpoints FINAL \
WHERE topic = ? AND version = (SELECT max(version) FROM source_checkpoints WHERE topic = ?) \
ORDER BY partition";

/// The watermark of the latest checkpoint of any topic. Row:
/// [`LatestWatermarkRow`](crate::LatestWatermarkRow).
pub const LATEST_WATERMARK_QUERY: &str =
    "SELECT count() AS n, max(watermark_ms) AS w FROM source_checkpoints";

/// The engagement panes a restart restores: every final pane inside the sliding window of the
/// checkpoint's watermark `W` (`window_start_ms + window_ms <= W` and
/// `window_start_ms + sliding_ms > W`), latest version. Binds: `from_ms` (`W - sliding_ms + 1`
/// rounded as the caller likes, inclusive), `to_ms` (`W - window_ms`, inclusive). Rows:
/// [`PaneEngagementRow`](crate::PaneEngagementRow).
pub const RESTORE_ENGAGEMENT_QUERY: &str = "SELECT ?fields FROM campaign_engagement FINAL \
WHERE window_start_ms >= ? AND window_start_ms <= ?";

/// The interaction pairs a restart restores: each `(user, campaign)` with an interest event
/// in a final pane inside the sliding window, with its latest such pane. Binds: `from_ms`,
/// `to_ms` (inclusive pane starts, as [`RESTORE_ENGAGEMENT_QUERY`]). Rows:
/// [`InteractionPaneRow`](crate::InteractionPaneRow).
pub const RESTORE_INTERACTIONS_QUERY: &str = "SELECT max(pane) AS window_start_ms, user_id, \
campaign_id FROM (SELECT window_start_ms AS pane, user_id, campaign_id FROM interaction_panes \
WHERE window_start_ms >= ? AND window_start_ms <= ?) GROUP BY user_id, campaign_id";

/// The state layout of one checkpoint. Binds: `topic`, `version`. Rows:
/// [`CheckpointStateRow`](crate::CheckpointStateRow).
pub const CHECKPOINT_STATE_QUERY: &str = "SELECT ?fields FROM checkpoint_states \
WHERE topic = ? AND version = ? LIMIT 1";
