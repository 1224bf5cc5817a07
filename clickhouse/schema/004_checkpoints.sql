-- Source checkpoints. All partitions of one checkpoint are one INSERT sharing one `version`;
-- the latest checkpoint of a topic is the row set with max(version) for that topic.
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
ORDER BY (topic, version, partition);
