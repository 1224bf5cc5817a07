-- Finalized minute (window) rows. A row may be written more than once (retries, replays):
-- ReplacingMergeTree keeps the highest `version` per sorting key; read with FINAL or argMax.
-- Partitioned by day of window start (integer day number since the Unix epoch,
-- intDiv(window_start_ms, 86400000)) so that retention drops whole days
-- (eddy_storage::drop_expired_partitions) and time-range reads skip other days. The sink
-- writes one INSERT per day, so each INSERT is still one part (docs/storage.md).

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
PARTITION BY intDiv(window_start_ms, 86400000)
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
PARTITION BY intDiv(window_start_ms, 86400000)
ORDER BY (campaign_id, event_type, window_start_ms);
