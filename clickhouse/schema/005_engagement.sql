-- Campaign engagement panes and user similarity / interaction-set snapshots.
-- Layout and semantics: docs/storage.md, "Engagement, similarity and recommendations".
-- ReplacingMergeTree(version): a replayed row (same key, higher version) replaces the old one;
-- read with FINAL. Partitioned by day of event time (intDiv(..._ms, 86400000)); no TTL on
-- ClickHouse 18.16, so retention drops whole day partitions (eddy_storage::drop_expired_partitions)
-- and the sink writes one INSERT per day (each one part).

-- Per-pane engagement of finalized tumbling windows. The sliding-window engagement as of a
-- boundary B is the sum over panes with window_start_ms + window_ms <= B and
-- window_start_ms + sliding_ms > B; the reader computes the score with its weights.
CREATE TABLE IF NOT EXISTS {database}.campaign_engagement
(
    window_start_ms Int64,
    campaign_id UInt64,
    views UInt64,
    clicks UInt64,
    conversions UInt64,
    revenue_micros Int64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY intDiv(window_start_ms, 86400000)
ORDER BY (campaign_id, window_start_ms);

-- One snapshot per user per batch in which the user's similar users changed; the arrays are
-- parallel (neighbor i has shared[i] campaigns in common out of union_size[i]); empty arrays:
-- no similar user any more. Latest: FINAL WHERE user_id = ? ORDER BY as_of_ms DESC LIMIT 1.
CREATE TABLE IF NOT EXISTS {database}.user_similar
(
    user_id UInt64,
    as_of_ms Int64,
    neighbors Array(UInt64),
    shared Array(UInt32),
    union_size Array(UInt32),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY intDiv(as_of_ms, 86400000)
ORDER BY (user_id, as_of_ms);

-- One snapshot per user per batch in which the user's interaction set changed: the campaigns it
-- engaged with in the sliding window, ascending (empty: none any more). Recommendations are
-- ranked at read time from a user's similar users, their sets and the campaigns' engagement.
-- Latest per user: FINAL WHERE user_id IN (...) ORDER BY user_id, as_of_ms DESC LIMIT 1 BY user_id.
CREATE TABLE IF NOT EXISTS {database}.user_campaigns
(
    user_id UInt64,
    as_of_ms Int64,
    campaigns Array(UInt64),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY intDiv(as_of_ms, 86400000)
ORDER BY (user_id, as_of_ms);
