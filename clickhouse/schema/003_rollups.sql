-- Hourly rollups, maintained by materialized views over the minute tables.
--
-- Replay safety: each hourly row keeps the SET of distinct minute rows
-- (window_start_ms, version, values...) seen for its hour (groupUniqArray). Re-sending an
-- identical INSERT (same version) adds nothing; a rewrite (replay: new version) adds one
-- element, and the read query keeps, per minute, only the values of the highest version
-- (argMax), exactly like FINAL on the minute table. So hourly totals always equal the sum of
-- the FINAL minute rows, however often minutes are replayed.
-- Partitioned by day (intDiv(hour_start_ms, 86400000)), like the minute tables: an hour lies
-- in one day, and retention drops the same days from both.
-- (18.16 has no maxMap/minMap; groupUniqArray over tuples works on 18.16 and current releases.)
--
-- Read query (type rollups; campaign rollups are the same with campaign_id and count only):
--   SELECT hour_start_ms, event_type, sum(c) AS count, sum(s) AS sum_micros,
--          min(mn) AS min_micros, max(mx) AS max_micros
--   FROM (
--     SELECT hour_start_ms, event_type, tupleElement(m, 1) AS ws,
--            argMax(tupleElement(m, 3), tupleElement(m, 2)) AS c,
--            argMax(tupleElement(m, 4), tupleElement(m, 2)) AS s,
--            argMax(tupleElement(m, 5), tupleElement(m, 2)) AS mn,
--            argMax(tupleElement(m, 6), tupleElement(m, 2)) AS mx
--     FROM (
--       SELECT hour_start_ms, event_type, arrayJoin(groupUniqArrayMerge(minutes)) AS m
--       FROM eddy.type_windows_hourly
--       WHERE hour_start_ms >= <from_ms> AND hour_start_ms < <to_ms>
--       GROUP BY hour_start_ms, event_type)
--     GROUP BY hour_start_ms, event_type, ws)
--   GROUP BY hour_start_ms, event_type
--   ORDER BY event_type, hour_start_ms
-- (eddy_storage::TYPE_HOURLY_QUERY / CAMPAIGN_HOURLY_QUERY hold these with client-side binds;
-- the query server reads whole finalized hours with them for granularity=hour.)

CREATE TABLE IF NOT EXISTS {database}.type_windows_hourly
(
    hour_start_ms Int64,
    event_type String,
    -- tuple(window_start_ms, version, count, sum_micros, min_micros, max_micros)
    minutes AggregateFunction(groupUniqArray,
        Tuple(Int64, UInt64, UInt64, Int64, Nullable(Int64), Nullable(Int64)))
)
ENGINE = AggregatingMergeTree()
PARTITION BY intDiv(hour_start_ms, 86400000)
ORDER BY (event_type, hour_start_ms);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.type_windows_hourly_mv
TO {database}.type_windows_hourly
AS SELECT
    intDiv(window_start_ms, 3600000) * 3600000 AS hour_start_ms,
    event_type,
    groupUniqArrayState(tuple(window_start_ms, version, count, sum_micros, min_micros, max_micros)) AS minutes
FROM {database}.type_windows
GROUP BY hour_start_ms, event_type;

CREATE TABLE IF NOT EXISTS {database}.campaign_windows_hourly
(
    hour_start_ms Int64,
    campaign_id UInt64,
    event_type String,
    -- tuple(window_start_ms, version, count)
    minutes AggregateFunction(groupUniqArray, Tuple(Int64, UInt64, UInt64))
)
ENGINE = AggregatingMergeTree()
PARTITION BY intDiv(hour_start_ms, 86400000)
ORDER BY (campaign_id, event_type, hour_start_ms);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.campaign_windows_hourly_mv
TO {database}.campaign_windows_hourly
AS SELECT
    intDiv(window_start_ms, 3600000) * 3600000 AS hour_start_ms,
    campaign_id,
    event_type,
    groupUniqArrayState(tuple(window_start_ms, version, count)) AS minutes
FROM {database}.campaign_windows
GROUP BY hour_start_ms, campaign_id, event_type;
