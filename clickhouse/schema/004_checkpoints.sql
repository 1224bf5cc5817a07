-- Source checkpoints. All partitions of one checkpoint are one INSERT sharing one `version`;
-- the latest checkpoint of a topic is the row set with max(version) for that topic.
-- Partitioned by wall-clock day of `version` (microseconds): old checkpoints are pruned a day
-- at a time (eddy_storage::prune_checkpoints keeps the day of every topic's latest checkpoint
-- and the day before).
CREATE TABLE IF NOT EXISTS {database}.source_checkpoints
(
    topic String,
    partition Int32,
    resume_offset Int64,
    high_offset Int64,
    watermark_ms Int64,
    epoch UInt64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY intDiv(version, 86400000000)
ORDER BY (topic, version, partition);
