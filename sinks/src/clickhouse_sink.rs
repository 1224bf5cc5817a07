//! The ClickHouse (batch layer) sink, checkpoint store and blocking schema management. Tables,
//! rows, queries and the client are the storage contract's ([`eddy_storage`]).

use crate::runtime::Blocking;
use crate::{CheckpointStore, EpochSink, SinkError, next_version};
use clickhouse::{Client, RowOwned, RowWrite};
use eddy_core::config::ClickHouseConfig;
use eddy_core::{
    Checkpoint, CountsBatch, InteractionPane, PaneEngagement, PartitionCheckpoint, SimilarityBatch,
};
use eddy_storage::{
    CAMPAIGN_ENGAGEMENT, CAMPAIGN_WINDOWS, CHECKPOINT_STATE_QUERY, CHECKPOINT_STATES,
    CampaignWindowRow, CheckpointRow, CheckpointStateRow, INTERACTION_PANES, InteractionPaneRow,
    LATEST_CHECKPOINT_QUERY, PaneEngagementRow, RESTORE_ENGAGEMENT_QUERY,
    RESTORE_INTERACTIONS_QUERY, SOURCE_CHECKPOINTS, TYPE_WINDOWS, TypeWindowRow, USER_CAMPAIGNS,
    USER_SIMILAR, UserCampaignsRow, UserSimilarRow,
};
use eddy_storage::{RetentionReport, day_of_ms};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Time limit of one request (an INSERT of a whole batch, a query).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of applying the whole schema.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(120);

/// The client of the sink and the checkpoint store ([`eddy_storage::clickhouse_client`]).
fn db_client(cfg: &ClickHouseConfig) -> Result<Client, SinkError> {
    Ok(eddy_storage::clickhouse_client(cfg)?)
}

/// Applies the ClickHouse schema to `cfg.database`: the `*.sql` files of `dir` in name order,
/// or with `dir` `None` the schema compiled into eddy (`clickhouse/schema/`,
/// [`eddy_storage::EMBEDDED_SCHEMA`]). Every statement is `IF NOT EXISTS`, so applying twice is
/// harmless. Returns the names of the files applied.
pub fn apply_schema(cfg: &ClickHouseConfig, dir: Option<&Path>) -> Result<Vec<String>, SinkError> {
    let files = match dir {
        Some(dir) => eddy_storage::schema_dir(dir)?,
        None => eddy_storage::embedded_schema(),
    };
    let applied = Blocking::new()?.run("schema apply", SCHEMA_TIMEOUT, async {
        Ok(eddy_storage::apply_schema(cfg, &files).await?)
    })?;
    for name in &applied {
        tracing::info!(file = %name, database = %cfg.database, "schema file applied");
    }
    Ok(applied)
}

/// Drops the database `database` (`DROP DATABASE IF EXISTS`) on the server of `cfg`: how a
/// dropped output version's tables go (`eddy versions drop`). The name is validated first.
pub fn drop_database(cfg: &ClickHouseConfig, database: &str) -> Result<(), SinkError> {
    eddy_storage::valid_database(database)?;
    let sql = format!("DROP DATABASE IF EXISTS {database}");
    Blocking::new()?.run("drop database", SCHEMA_TIMEOUT, async {
        Ok(eddy_storage::clickhouse_server(cfg)
            .query(&sql)
            .execute()
            .await?)
    })?;
    tracing::info!(%database, "database dropped");
    Ok(())
}

/// Checks that every table of [`REQUIRED_TABLES`](eddy_storage::REQUIRED_TABLES) exists in `cfg.database`
/// ([`eddy_storage::check_schema`]); the error names the missing ones and says how to create
/// them.
pub fn check_schema(cfg: &ClickHouseConfig) -> Result<(), SinkError> {
    Blocking::new()?.run("schema check", REQUEST_TIMEOUT, async {
        Ok(eddy_storage::check_schema(cfg).await?)
    })
}

/// Writes finalized windows to ClickHouse: `final_types` into `type_windows`,
/// `final_campaigns` into `campaign_windows`, `final_engagement` into `campaign_engagement`, and
/// snapshots of `similar` / `campaigns` (with `as_of_ms` = the batch watermark) into
/// `user_similar` / `user_campaigns`: one INSERT per table per batch, every row tagged
/// with a fresh, strictly increasing `version` (wall-clock microseconds). Open windows and the
/// live engagement are the speed layer's only. Rows are inserted one INSERT per table and day
/// partition; each INSERT is atomic; a batch whose later INSERT fails is retried whole, which
/// is harmless (ReplacingMergeTree keeps one row per key, the hourly rollups count each minute
/// once, and readers read ClickHouse only up to the boundary, which moves after the batch is
/// written whole).
pub struct ClickHouseSink {
    client: Client,
    rt: Blocking,
    last_version: u64,
}

impl ClickHouseSink {
    /// Builds the client and checks the server answers `SELECT 1`.
    pub fn connect(cfg: &ClickHouseConfig) -> Result<Self, SinkError> {
        let sink = Self::lazy(cfg)?;
        sink.rt.run("clickhouse ping", REQUEST_TIMEOUT, async {
            Ok(sink.client.query("SELECT 1").fetch_one::<u8>().await?)
        })?;
        tracing::info!(url = %cfg.url, database = %cfg.database, "connected to clickhouse");
        Ok(sink)
    }

    /// Like [`ClickHouseSink::connect`] without contacting the server.
    pub fn lazy(cfg: &ClickHouseConfig) -> Result<Self, SinkError> {
        Ok(Self {
            client: db_client(cfg)?,
            rt: Blocking::new()?,
            last_version: 0,
        })
    }
}

/// Inserts `rows` into `table`, one INSERT per day partition (`day_of(row)`: the table's
/// partition key, `docs/storage.md` "Retention"), so each INSERT is one part, hence atomic, and
/// no INSERT spans more partitions than ClickHouse accepts in one block; nothing when empty.
async fn insert_all<R: RowOwned + RowWrite>(
    client: &Client,
    table: &str,
    rows: &[R],
    day_of: impl Fn(&R) -> i64,
) -> Result<(), clickhouse::error::Error> {
    let mut by_day: BTreeMap<i64, Vec<&R>> = BTreeMap::new();
    for row in rows {
        by_day.entry(day_of(row)).or_default().push(row);
    }
    for rows in by_day.values() {
        let mut insert = client.insert::<R>(table).await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
    }
    Ok(())
}

impl EpochSink<CountsBatch> for ClickHouseSink {
    fn name(&self) -> &'static str {
        "clickhouse"
    }

    /// Writes the finalized windows and panes of `batch` (open windows live in Redis only).
    fn write(&mut self, batch: &CountsBatch) -> Result<(), SinkError> {
        if batch.final_types.is_empty()
            && batch.final_campaigns.is_empty()
            && batch.final_engagement.is_empty()
        {
            return Ok(());
        }
        let version = next_version(&mut self.last_version);
        let types: Vec<TypeWindowRow> = batch
            .final_types
            .iter()
            .map(|r| TypeWindowRow {
                window_start_ms: r.window_start_ms,
                event_type: r.event_type.as_str().to_owned(),
                count: r.count,
                sum_micros: r.sum_micros,
                min_micros: r.min_micros,
                max_micros: r.max_micros,
                version,
            })
            .collect();
        let campaigns: Vec<CampaignWindowRow> = batch
            .final_campaigns
            .iter()
            .map(|r| CampaignWindowRow {
                window_start_ms: r.window_start_ms,
                campaign_id: r.campaign_id,
                event_type: r.event_type.as_str().to_owned(),
                count: r.count,
                version,
            })
            .collect();
        let panes: Vec<PaneEngagementRow> = batch
            .final_engagement
            .iter()
            .map(|r| PaneEngagementRow {
                window_start_ms: r.window_start_ms,
                campaign_id: r.campaign_id,
                views: r.views,
                clicks: r.clicks,
                conversions: r.conversions,
                revenue_micros: r.revenue_micros,
                version,
            })
            .collect();
        let client = &self.client;
        self.rt.run("clickhouse insert", REQUEST_TIMEOUT, async {
            insert_all(client, TYPE_WINDOWS, &types, |r| {
                day_of_ms(r.window_start_ms)
            })
            .await?;
            insert_all(client, CAMPAIGN_WINDOWS, &campaigns, |r| {
                day_of_ms(r.window_start_ms)
            })
            .await?;
            insert_all(client, CAMPAIGN_ENGAGEMENT, &panes, |r| {
                day_of_ms(r.window_start_ms)
            })
            .await?;
            Ok(())
        })?;
        tracing::debug!(
            epoch = batch.epoch,
            types = types.len(),
            campaigns = campaigns.len(),
            panes = panes.len(),
            version,
            "clickhouse batch written"
        );
        Ok(())
    }
}

impl EpochSink<SimilarityBatch> for ClickHouseSink {
    fn name(&self) -> &'static str {
        "clickhouse"
    }

    /// Writes a snapshot row per user whose similar users or interaction set changed, and
    /// the interest pairs of the panes final at this epoch.
    fn write(&mut self, batch: &SimilarityBatch) -> Result<(), SinkError> {
        if batch.similar.is_empty()
            && batch.campaigns.is_empty()
            && batch.interaction_panes.is_empty()
        {
            return Ok(());
        }
        let version = next_version(&mut self.last_version);
        let as_of_ms = batch.as_of_ms;
        let similar: Vec<UserSimilarRow> = batch
            .similar
            .iter()
            .map(|s| UserSimilarRow {
                user_id: s.user_id,
                as_of_ms,
                neighbors: s.neighbors.iter().map(|n| n.user_id).collect(),
                shared: s.neighbors.iter().map(|n| n.shared).collect(),
                union_size: s.neighbors.iter().map(|n| n.union).collect(),
                version,
            })
            .collect();
        let campaigns: Vec<UserCampaignsRow> = batch
            .campaigns
            .iter()
            .map(|c| UserCampaignsRow {
                user_id: c.user_id,
                as_of_ms,
                campaigns: c.campaigns.clone(),
                version,
            })
            .collect();
        let panes: Vec<InteractionPaneRow> = batch
            .interaction_panes
            .iter()
            .map(|p| InteractionPaneRow {
                window_start_ms: p.window_start_ms,
                user_id: p.user_id,
                campaign_id: p.campaign_id,
            })
            .collect();
        let client = &self.client;
        self.rt.run("clickhouse insert", REQUEST_TIMEOUT, async {
            insert_all(client, INTERACTION_PANES, &panes, |r| {
                day_of_ms(r.window_start_ms)
            })
            .await?;
            insert_all(client, USER_SIMILAR, &similar, |r| day_of_ms(r.as_of_ms)).await?;
            insert_all(client, USER_CAMPAIGNS, &campaigns, |r| {
                day_of_ms(r.as_of_ms)
            })
            .await?;
            Ok(())
        })?;
        tracing::debug!(
            epoch = batch.epoch,
            similar = similar.len(),
            campaigns = campaigns.len(),
            interaction_panes = panes.len(),
            version,
            "clickhouse similarity batch written"
        );
        Ok(())
    }
}

/// Wall-clock ms now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Applies retention once (blocking): drops the day partitions older than
/// `cfg.retention_days` before `min(watermark_ms, wall clock)`
/// ([`eddy_storage::drop_expired_partitions`]) and prunes old checkpoints
/// ([`eddy_storage::prune_checkpoints`]). [`ClickHouseCheckpoints::save`] runs it whenever
/// the day of the saved watermark (or of the wall clock) changes; call it directly at start
/// (e.g. after `eddy schema apply`) with the latest checkpoint's watermark.
pub fn apply_retention(
    cfg: &ClickHouseConfig,
    watermark_ms: i64,
) -> Result<RetentionReport, SinkError> {
    let report = Blocking::new()?.run("retention", REQUEST_TIMEOUT, async {
        Ok(retention(cfg, watermark_ms).await?)
    })?;
    log_retention(cfg, &report);
    Ok(report)
}

async fn retention(
    cfg: &ClickHouseConfig,
    watermark_ms: i64,
) -> Result<RetentionReport, eddy_storage::StorageError> {
    let mut report = eddy_storage::drop_expired_partitions(cfg, watermark_ms, now_ms()).await?;
    for day in eddy_storage::prune_checkpoints(cfg).await? {
        report.dropped.push(eddy_storage::DroppedPartition {
            table: SOURCE_CHECKPOINTS.to_owned(),
            day,
        });
    }
    Ok(report)
}

fn log_retention(cfg: &ClickHouseConfig, report: &RetentionReport) {
    for d in &report.dropped {
        tracing::info!(database = %cfg.database, table = %d.table, day = d.day, "retention: dropped partition");
    }
    if !report.unpartitioned.is_empty() {
        tracing::warn!(
            database = %cfg.database,
            tables = %report.unpartitioned.join(", "),
            "retention: tables created before day partitioning grow forever (docs/storage.md, Retention)"
        );
    }
}

/// Source checkpoints in ClickHouse table `source_checkpoints`. Saving a checkpoint also
/// applies retention ([`apply_retention`]) when the day of its watermark or of the wall clock
/// changed since the last time it did (at most a few times a day; a failure is logged and
/// retried at the next save, never failing the save).
pub struct ClickHouseCheckpoints {
    client: Client,
    rt: Blocking,
    last_version: u64,
    cfg: ClickHouseConfig,
    /// (watermark day, wall-clock day) of the last successful retention run.
    retention_days_seen: Option<(i64, i64)>,
}

impl ClickHouseCheckpoints {
    /// Builds the client and checks the server answers `SELECT 1`.
    pub fn connect(cfg: &ClickHouseConfig) -> Result<Self, SinkError> {
        let store = Self {
            client: db_client(cfg)?,
            rt: Blocking::new()?,
            last_version: 0,
            cfg: cfg.clone(),
            retention_days_seen: None,
        };
        store.rt.run("clickhouse ping", REQUEST_TIMEOUT, async {
            Ok(store.client.query("SELECT 1").fetch_one::<u8>().await?)
        })?;
        Ok(store)
    }
}

/// The sliding-window state a restart restores ([`ClickHouseCheckpoints::load_state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingState {
    /// Engagement of each (final pane inside the window, campaign).
    pub engagement: Vec<PaneEngagement>,
    /// Each interest pair with its latest final pane inside the window.
    pub interactions: Vec<InteractionPane>,
}

/// How long loading the sliding state may take (millions of rows).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);

impl ClickHouseCheckpoints {
    /// The sliding-window state as of checkpoint watermark `watermark_ms`: the stored final
    /// panes `p` with `p + window_ms <= W` and `p + sliding_ms > W` (closed under `W`, not
    /// retired), engagement rows and, with `interactions`, each interest pair's latest pane
    /// ([`RESTORE_ENGAGEMENT_QUERY`], [`RESTORE_INTERACTIONS_QUERY`]). Every pane closed under a
    /// durable checkpoint's watermark is stored (its rows were written before the checkpoint),
    /// and none of them changes afterwards.
    pub fn load_state(
        &mut self,
        watermark_ms: i64,
        window_ms: i64,
        sliding_ms: i64,
        interactions: bool,
    ) -> Result<SlidingState, SinkError> {
        let from = watermark_ms.saturating_sub(sliding_ms).saturating_add(1);
        let to = watermark_ms.saturating_sub(window_ms);
        let client = &self.client;
        let (engagement, pairs) = self.rt.run("sliding state load", RESTORE_TIMEOUT, async {
            let engagement: Vec<PaneEngagementRow> = client
                .query(RESTORE_ENGAGEMENT_QUERY)
                .bind(from)
                .bind(to)
                .fetch_all()
                .await?;
            let pairs: Vec<InteractionPaneRow> = if interactions {
                client
                    .query(RESTORE_INTERACTIONS_QUERY)
                    .bind(from)
                    .bind(to)
                    .fetch_all()
                    .await?
            } else {
                Vec::new()
            };
            Ok((engagement, pairs))
        })?;
        // Sorted: every process of a cluster loads the same rows in the same order, and its
        // workers take them by index.
        let mut state = SlidingState {
            engagement: engagement
                .into_iter()
                .map(|r| PaneEngagement {
                    window_start_ms: r.window_start_ms,
                    campaign_id: r.campaign_id,
                    views: r.views,
                    clicks: r.clicks,
                    conversions: r.conversions,
                    revenue_micros: r.revenue_micros,
                })
                .collect(),
            interactions: pairs
                .into_iter()
                .map(|r| InteractionPane {
                    window_start_ms: r.window_start_ms,
                    user_id: r.user_id,
                    campaign_id: r.campaign_id,
                })
                .collect(),
        };
        state
            .engagement
            .sort_unstable_by_key(|p| (p.window_start_ms, p.campaign_id));
        state.interactions.sort_unstable();
        Ok(state)
    }
}

impl CheckpointStore for ClickHouseCheckpoints {
    fn load(&mut self, topic: &str) -> Result<Option<Checkpoint>, SinkError> {
        let client = &self.client;
        let (rows, state) = self.rt.run("checkpoint load", REQUEST_TIMEOUT, async {
            let rows: Vec<CheckpointRow> = client
                .query(LATEST_CHECKPOINT_QUERY)
                .bind(topic)
                .bind(topic)
                .fetch_all()
                .await?;
            // The layout of the stored state this checkpoint was written with, if any.
            let state: Vec<CheckpointStateRow> = match rows.first() {
                Some(first) => {
                    client
                        .query(CHECKPOINT_STATE_QUERY)
                        .bind(topic)
                        .bind(first.version)
                        .fetch_all()
                        .await?
                }
                None => Vec::new(),
            };
            Ok((rows, state))
        })?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        if rows
            .iter()
            .any(|r| r.epoch != first.epoch || r.watermark_ms != first.watermark_ms)
        {
            return Err(SinkError::Data(format!(
                "checkpoint rows of topic {topic:?} version {} disagree on epoch/watermark",
                first.version
            )));
        }
        self.last_version = self.last_version.max(first.version);
        Ok(Some(Checkpoint {
            state: state.into_iter().next().map(|r| r.layout),
            topic: topic.to_owned(),
            epoch: first.epoch,
            watermark_ms: first.watermark_ms,
            partitions: rows
                .iter()
                .map(|r| PartitionCheckpoint {
                    partition: r.partition,
                    resume_offset: r.resume_offset,
                    high_offset: r.high_offset,
                })
                .collect(),
        }))
    }

    fn save(&mut self, cp: &Checkpoint) -> Result<(), SinkError> {
        if cp.partitions.is_empty() {
            return Err(SinkError::Data(format!(
                "checkpoint of {:?} has no partitions",
                cp.topic
            )));
        }
        let version = next_version(&mut self.last_version);
        let client = &self.client;
        self.rt.run("checkpoint save", REQUEST_TIMEOUT, async {
            // The layout first: a checkpoint is never visible without it.
            if let Some(layout) = &cp.state {
                let mut insert = client
                    .insert::<CheckpointStateRow>(CHECKPOINT_STATES)
                    .await?;
                insert
                    .write(&CheckpointStateRow {
                        topic: cp.topic.clone(),
                        version,
                        layout: layout.clone(),
                    })
                    .await?;
                insert.end().await?;
            }
            let mut insert = client.insert::<CheckpointRow>(SOURCE_CHECKPOINTS).await?;
            for p in &cp.partitions {
                insert
                    .write(&CheckpointRow {
                        topic: cp.topic.clone(),
                        partition: p.partition,
                        resume_offset: p.resume_offset,
                        high_offset: p.high_offset,
                        watermark_ms: cp.watermark_ms,
                        epoch: cp.epoch,
                        version,
                    })
                    .await?;
            }
            insert.end().await?;
            Ok(())
        })?;
        tracing::info!(topic = %cp.topic, epoch = cp.epoch, watermark_ms = cp.watermark_ms, version, "checkpoint saved");
        let days = (day_of_ms(cp.watermark_ms), day_of_ms(now_ms()));
        if self.retention_days_seen != Some(days) {
            let cfg = &self.cfg;
            match self.rt.run("retention", REQUEST_TIMEOUT, async {
                Ok(retention(cfg, cp.watermark_ms).await?)
            }) {
                Ok(report) => {
                    log_retention(cfg, &report);
                    self.retention_days_seen = Some(days);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention failed; retried at the next checkpoint")
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::Row;
    use eddy_storage::{DAY_MICROS, DAY_MS};
    use eddy_testkit::stores::{ch_exec, ch_fetch, fresh_clickhouse};
    use serde::Deserialize;

    #[derive(Debug, Row, Deserialize)]
    struct Count {
        n: u64,
    }

    fn count(db: &ClickHouseConfig, sql: &str) -> u64 {
        ch_fetch::<Count>(db, sql, |q| q)[0].n
    }

    /// Saving checkpoints applies retention: old event-time days leave the tables, old
    /// checkpoints leave `source_checkpoints`, and the latest checkpoint loads back.
    #[test]
    fn saving_a_checkpoint_applies_retention() {
        let db = fresh_clickhouse("sink_retention");
        let name = &db.database;
        // Event time: day D and day D - 40; the watermark is on day D.
        let d: i64 = 19_675;
        for day in [d - 40, d] {
            ch_exec(
                &db,
                &format!(
                    "INSERT INTO {name}.type_windows VALUES ({}, 'view', 1, 0, NULL, NULL, 1)",
                    day * DAY_MS
                ),
            );
        }
        // A checkpoint saved five wall-clock days ago.
        let today = now_ms() / DAY_MS;
        ch_exec(
            &db,
            &format!(
                "INSERT INTO {name}.source_checkpoints VALUES ('events', 0, 1, 1, 0, 1, {})",
                (today - 5) as u64 * DAY_MICROS
            ),
        );
        let mut store = ClickHouseCheckpoints::connect(&db).unwrap();
        let cp = Checkpoint {
            state: None,
            topic: "events".into(),
            epoch: 9,
            watermark_ms: d * DAY_MS + 5,
            partitions: vec![PartitionCheckpoint {
                partition: 0,
                resume_offset: 10,
                high_offset: 12,
            }],
        };
        store.save(&cp).unwrap();
        assert_eq!(count(&db, "SELECT count() AS n FROM type_windows"), 1);
        assert_eq!(
            count(&db, "SELECT min(window_start_ms) AS n FROM type_windows"),
            (d * DAY_MS) as u64
        );
        assert_eq!(count(&db, "SELECT count() AS n FROM source_checkpoints"), 1);
        assert_eq!(store.load("events").unwrap(), Some(cp));
    }
}
