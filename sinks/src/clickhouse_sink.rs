//! The ClickHouse (batch layer) sink, checkpoint store and schema management.
//!
//! Every client talks RowBinary without schema validation (`with_validation(false)`), because
//! ClickHouse 18.16 lacks `RowBinaryWithNamesAndTypes`, and uses client-side binds (`?`) only.

use crate::runtime::Blocking;
use crate::{CheckpointStore, EpochSink, SinkError, next_version};
use clickhouse::{Client, Row};
use eddy_core::config::ClickHouseConfig;
use eddy_core::{Checkpoint, PartitionCheckpoint, SinkBatch};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// Time limit of one request (an INSERT of a whole batch, a DDL statement, a query).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Tables (and views) `check_schema` requires in the configured database.
pub const REQUIRED_TABLES: [&str; 10] = [
    "type_windows",
    "campaign_windows",
    "type_windows_hourly",
    "type_windows_hourly_mv",
    "campaign_windows_hourly",
    "campaign_windows_hourly_mv",
    "source_checkpoints",
    "campaign_engagement",
    "user_similar",
    "user_recommendations",
];

/// Hourly type rollups with `from_ms <= hour_start_ms < to_ms`, for every event type.
/// Binds: `from_ms` (Int64), `to_ms` (Int64). Columns: `hour_start_ms Int64`,
/// `event_type String`, `count UInt64`, `sum_micros Int64`, `min_micros Nullable(Int64)`,
/// `max_micros Nullable(Int64)`. Per minute only the highest version counts, so the totals equal
/// the sums of `type_windows FINAL`, however often minutes were rewritten. Table names are
/// unqualified: run it with the database set on the client.
pub const TYPE_HOURLY_QUERY: &str = "\
SELECT hour_start_ms, event_type, sum(c) AS count, sum(s) AS sum_micros, \
min(mn) AS min_micros, max(mx) AS max_micros \
FROM (\
SELECT hour_start_ms, event_type, tupleElement(m, 1) AS ws, \
argMax(tupleElement(m, 3), tupleElement(m, 2)) AS c, \
argMax(tupleElement(m, 4), tupleElement(m, 2)) AS s, \
argMax(tupleElement(m, 5), tupleElement(m, 2)) AS mn, \
argMax(tupleElement(m, 6), tupleElement(m, 2)) AS mx \
FROM (\
SELECT hour_start_ms, event_type, arrayJoin(groupUniqArrayMerge(minutes)) AS m \
FROM type_windows_hourly WHERE hour_start_ms >= ? AND hour_start_ms < ? \
GROUP BY hour_start_ms, event_type) \
GROUP BY hour_start_ms, event_type, ws) \
GROUP BY hour_start_ms, event_type \
ORDER BY event_type, hour_start_ms";

/// Hourly campaign rollups of one campaign with `from_ms <= hour_start_ms < to_ms`.
/// Binds: `campaign_id` (UInt64), `from_ms` (Int64), `to_ms` (Int64). Columns:
/// `hour_start_ms Int64`, `campaign_id UInt64`, `event_type String`, `count UInt64`.
pub const CAMPAIGN_HOURLY_QUERY: &str = "\
SELECT hour_start_ms, campaign_id, event_type, sum(c) AS count \
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

#[derive(Debug, Row, Serialize, Deserialize)]
struct TypeWindowRow {
    window_start_ms: i64,
    event_type: String,
    count: u64,
    sum_micros: i64,
    min_micros: Option<i64>,
    max_micros: Option<i64>,
    version: u64,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct CampaignWindowRow {
    window_start_ms: i64,
    campaign_id: u64,
    event_type: String,
    count: u64,
    version: u64,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct PaneEngagementRow {
    window_start_ms: i64,
    campaign_id: u64,
    views: u64,
    clicks: u64,
    conversions: u64,
    revenue_micros: i64,
    version: u64,
}

/// A `user_similar` snapshot: parallel arrays, one entry per neighbor, best first.
#[derive(Debug, Row, Serialize, Deserialize)]
struct UserSimilarRow {
    user_id: u64,
    as_of_ms: i64,
    neighbors: Vec<u64>,
    shared: Vec<u32>,
    union_size: Vec<u32>,
    version: u64,
}

/// A `user_recommendations` snapshot: `items` is the JSON array of the recommendations.
#[derive(Debug, Row, Serialize, Deserialize)]
struct UserRecommendationsRow {
    user_id: u64,
    as_of_ms: i64,
    campaign_ids: Vec<u64>,
    items: String,
    version: u64,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct CheckpointRow {
    topic: String,
    partition: i32,
    resume_offset: i64,
    high_offset: i64,
    watermark_ms: i64,
    epoch: u64,
    version: u64,
}

/// Checks `name` is a plain identifier (it is substituted into DDL).
fn valid_database(name: &str) -> Result<(), SinkError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SinkError::Config(format!(
            "clickhouse.database {name:?} must match [A-Za-z_][A-Za-z0-9_]*"
        )))
    }
}

/// A client for `cfg` without a database set (for DDL that may create it).
fn base_client(cfg: &ClickHouseConfig) -> Client {
    let mut client = Client::default()
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        .with_validation(false)
        .with_compression(clickhouse::Compression::None);
    if !cfg.password.is_empty() {
        client = client.with_password(&cfg.password);
    }
    client
}

/// A client for `cfg` bound to `cfg.database`.
fn db_client(cfg: &ClickHouseConfig) -> Result<Client, SinkError> {
    valid_database(&cfg.database)?;
    Ok(base_client(cfg).with_database(&cfg.database))
}

/// Splits a schema file into statements: strips `--` comments, substitutes `{database}`,
/// splits on `;` and drops empty statements.
fn statements(sql: &str, database: &str) -> Vec<String> {
    let stripped: String = sql
        .lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    stripped
        .replace("{database}", database)
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Applies every `*.sql` file of `dir` in file-name order (the files create database
/// `{database}`, replaced by `cfg.database`, and its tables with `IF NOT EXISTS`, so applying
/// twice is harmless). Returns the names of the files applied.
pub fn apply_schema(cfg: &ClickHouseConfig, dir: &Path) -> Result<Vec<String>, SinkError> {
    valid_database(&cfg.database)?;
    let io = |source| SinkError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?
        .into_iter()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(SinkError::Schema(format!(
            "no *.sql files in {}",
            dir.display()
        )));
    }
    let client = base_client(cfg);
    let rt = Blocking::new()?;
    let mut applied = Vec::new();
    for path in files {
        let sql = std::fs::read_to_string(&path).map_err(|source| SinkError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for stmt in statements(&sql, &cfg.database) {
            rt.run("schema statement", REQUEST_TIMEOUT, async {
                client
                    .query_raw(&stmt)
                    .execute()
                    .await
                    .map_err(|e| SinkError::Schema(format!("{name}: {e}\nstatement: {stmt}")))
            })?;
        }
        tracing::info!(file = %name, database = %cfg.database, "schema file applied");
        applied.push(name);
    }
    Ok(applied)
}

/// Checks that every table of [`REQUIRED_TABLES`] exists in `cfg.database`; the error names the
/// missing ones and says how to create them.
pub fn check_schema(cfg: &ClickHouseConfig) -> Result<(), SinkError> {
    valid_database(&cfg.database)?;
    let client = base_client(cfg);
    let rt = Blocking::new()?;
    let present: Vec<String> = rt.run("schema check", REQUEST_TIMEOUT, async {
        Ok(client
            .query("SELECT name FROM system.tables WHERE database = ?")
            .bind(cfg.database.as_str())
            .fetch_all::<String>()
            .await?)
    })?;
    let missing: Vec<&str> = REQUIRED_TABLES
        .iter()
        .copied()
        .filter(|t| !present.iter().any(|p| p == t))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SinkError::Schema(format!(
            "database {:?} at {} lacks {}: run `eddy schema apply` (clickhouse/schema/*.sql)",
            cfg.database,
            cfg.url,
            missing.join(", ")
        )))
    }
}

/// Writes finalized windows to ClickHouse: `final_types` into `type_windows`,
/// `final_campaigns` into `campaign_windows`, `final_engagement` into `campaign_engagement`, and
/// snapshots of `similar` / `recommendations` (with `as_of_ms` = the batch watermark) into
/// `user_similar` / `user_recommendations`: one INSERT per table per batch, every row tagged
/// with a fresh, strictly increasing `version` (wall-clock microseconds). Open windows and the
/// live engagement are the speed layer's only. Each INSERT is atomic; a batch whose later
/// INSERT fails is retried whole, which is harmless (ReplacingMergeTree keeps one row per key,
/// the hourly rollups count each minute once).
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

impl EpochSink for ClickHouseSink {
    fn name(&self) -> &'static str {
        "clickhouse"
    }

    fn write(&mut self, batch: &SinkBatch) -> Result<(), SinkError> {
        if batch.final_types.is_empty()
            && batch.final_campaigns.is_empty()
            && batch.final_engagement.is_empty()
            && batch.similar.is_empty()
            && batch.recommendations.is_empty()
        {
            return Ok(());
        }
        let version = next_version(&mut self.last_version);
        let as_of_ms = batch.watermark_ms;
        let recommendations = batch
            .recommendations
            .iter()
            .map(|r| {
                Ok(UserRecommendationsRow {
                    user_id: r.user_id,
                    as_of_ms,
                    campaign_ids: r.items.iter().map(|i| i.campaign_id).collect(),
                    items: serde_json::to_string(&r.items).map_err(|e| {
                        SinkError::Data(format!("cannot encode recommendations: {e}"))
                    })?,
                    version,
                })
            })
            .collect::<Result<Vec<_>, SinkError>>()?;
        let client = &self.client;
        self.rt.run("clickhouse insert", REQUEST_TIMEOUT, async {
            if !batch.final_types.is_empty() {
                let mut insert = client.insert::<TypeWindowRow>("type_windows").await?;
                for r in &batch.final_types {
                    insert
                        .write(&TypeWindowRow {
                            window_start_ms: r.window_start_ms,
                            event_type: r.event_type.as_str().to_owned(),
                            count: r.count,
                            sum_micros: r.sum_micros,
                            min_micros: r.min_micros,
                            max_micros: r.max_micros,
                            version,
                        })
                        .await?;
                }
                insert.end().await?;
            }
            if !batch.final_campaigns.is_empty() {
                let mut insert = client
                    .insert::<CampaignWindowRow>("campaign_windows")
                    .await?;
                for r in &batch.final_campaigns {
                    insert
                        .write(&CampaignWindowRow {
                            window_start_ms: r.window_start_ms,
                            campaign_id: r.campaign_id,
                            event_type: r.event_type.as_str().to_owned(),
                            count: r.count,
                            version,
                        })
                        .await?;
                }
                insert.end().await?;
            }
            if !batch.final_engagement.is_empty() {
                let mut insert = client
                    .insert::<PaneEngagementRow>("campaign_engagement")
                    .await?;
                for r in &batch.final_engagement {
                    insert
                        .write(&PaneEngagementRow {
                            window_start_ms: r.window_start_ms,
                            campaign_id: r.campaign_id,
                            views: r.views,
                            clicks: r.clicks,
                            conversions: r.conversions,
                            revenue_micros: r.revenue_micros,
                            version,
                        })
                        .await?;
                }
                insert.end().await?;
            }
            if !batch.similar.is_empty() {
                let mut insert = client.insert::<UserSimilarRow>("user_similar").await?;
                for s in &batch.similar {
                    insert
                        .write(&UserSimilarRow {
                            user_id: s.user_id,
                            as_of_ms,
                            neighbors: s.neighbors.iter().map(|n| n.user_id).collect(),
                            shared: s.neighbors.iter().map(|n| n.shared).collect(),
                            union_size: s.neighbors.iter().map(|n| n.union).collect(),
                            version,
                        })
                        .await?;
                }
                insert.end().await?;
            }
            if !recommendations.is_empty() {
                let mut insert = client
                    .insert::<UserRecommendationsRow>("user_recommendations")
                    .await?;
                for r in &recommendations {
                    insert.write(r).await?;
                }
                insert.end().await?;
            }
            Ok(())
        })?;
        tracing::debug!(
            epoch = batch.epoch,
            types = batch.final_types.len(),
            campaigns = batch.final_campaigns.len(),
            panes = batch.final_engagement.len(),
            similar = batch.similar.len(),
            recommendations = batch.recommendations.len(),
            version,
            "clickhouse batch written"
        );
        Ok(())
    }
}

/// Source checkpoints in ClickHouse table `source_checkpoints`.
pub struct ClickHouseCheckpoints {
    client: Client,
    rt: Blocking,
    last_version: u64,
}

impl ClickHouseCheckpoints {
    /// Builds the client and checks the server answers `SELECT 1`.
    pub fn connect(cfg: &ClickHouseConfig) -> Result<Self, SinkError> {
        let store = Self {
            client: db_client(cfg)?,
            rt: Blocking::new()?,
            last_version: 0,
        };
        store.rt.run("clickhouse ping", REQUEST_TIMEOUT, async {
            Ok(store.client.query("SELECT 1").fetch_one::<u8>().await?)
        })?;
        Ok(store)
    }
}

impl CheckpointStore for ClickHouseCheckpoints {
    fn load(&mut self, topic: &str) -> Result<Option<Checkpoint>, SinkError> {
        let client = &self.client;
        let rows: Vec<CheckpointRow> = self.rt.run("checkpoint load", REQUEST_TIMEOUT, async {
            Ok(client
                .query(
                    "SELECT ?fields FROM source_checkpoints FINAL \
                     WHERE topic = ? AND version = \
                     (SELECT max(version) FROM source_checkpoints WHERE topic = ?) \
                     ORDER BY partition",
                )
                .bind(topic)
                .bind(topic)
                .fetch_all::<CheckpointRow>()
                .await?)
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
            let mut insert = client.insert::<CheckpointRow>("source_checkpoints").await?;
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_substitutes_database() {
        let sql = "-- a; comment\nCREATE DATABASE IF NOT EXISTS {database};\n\n\
                   CREATE TABLE {database}.t (x Int64) -- trailing; comment\nENGINE = Log;\n";
        assert_eq!(
            statements(sql, "db1"),
            vec![
                "CREATE DATABASE IF NOT EXISTS db1".to_owned(),
                "CREATE TABLE db1.t (x Int64) \nENGINE = Log".to_owned()
            ]
        );
    }

    #[test]
    fn rejects_bad_database_names() {
        assert!(valid_database("eddy_test_1").is_ok());
        assert!(valid_database("x; DROP").is_err());
        assert!(valid_database("1abc").is_err());
        assert!(valid_database("").is_err());
    }
}
