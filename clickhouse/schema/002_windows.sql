-- Finalized minute (window) rows. A row may be written more than once (retries, replays):
-- ReplacingMergeTree keeps the highest `version` per sorting key; read with FINAL or argMax.
-- No PARTITION BY: one INSERT of a sink batch is one part, hence atomic.

CREATE TABLE IF NOT EXISTS {database}.type_windows
(
    window_start_ms Int64,
    event_type String,
    count UInt64,
    sum_micros Int64,
    min_micros Nullable(Int64),
    max_micros Nullable(Int64),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (event_type, window_start_ms);

CREATE TABLE IF NOT EXISTS {database}.campaign_windows
(
    window_start_ms Int64,
    campaign_id UInt64,
    event_type String,
    count UInt64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (campaign_id, event_type, window_start_ms);
