-- Durable sliding-window state: what a restart loads instead of re-reading a sliding window of
-- records (README "Restart"; docs/storage.md "Sliding-window state").
--
-- interaction_panes: the interest pairs of every final pane, written once when the pane
-- closes (retries and replays write the same rows again; ReplacingMergeTree folds them, and
-- the restore query groups anyway). A restart restores each (user, campaign) pair with its
-- latest pane inside the sliding window. Partitioned by day of pane start, like the other
-- event-time tables (retention drops whole days).
CREATE TABLE IF NOT EXISTS {database}.interaction_panes
(
    window_start_ms Int64,
    user_id UInt64,
    campaign_id UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY intDiv(window_start_ms, 86400000)
ORDER BY (window_start_ms, user_id, campaign_id);

-- checkpoint_states: the layout of the sliding-window state the stores held when a checkpoint
-- was written (eddy_core::Config::state_layout), one row per checkpoint, same topic and
-- version as its source_checkpoints rows and inserted before them. A checkpoint without a row
-- here (a replay's, or one written by an older eddy) restores by re-reading the window.
-- Partitioned like source_checkpoints and pruned with it.
CREATE TABLE IF NOT EXISTS {database}.checkpoint_states
(
    topic String,
    version UInt64,
    layout String
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY intDiv(version, 86400000000)
ORDER BY (topic, version);
