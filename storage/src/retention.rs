//! Retention: ClickHouse 18.16 has no TTL, so the big tables are partitioned by day
//! (`clickhouse/schema/`, `docs/storage.md` "Retention") and old days are dropped whole
//! (`ALTER TABLE … DROP PARTITION`, a metadata operation: no rewrite, no mutation).
//!
//! * [`drop_expired_partitions`]: the day partitions of [`DAY_PARTITIONED_TABLES`] older than
//!   `clickhouse.retention_days` before a cutoff time (the latest checkpoint's watermark, never
//!   later than the wall clock, so a watermark far in the future cannot empty the tables).
//! * [`prune_checkpoints`]: `source_checkpoints` keeps every checkpoint ever saved; this drops
//!   the wall-clock days before the day preceding every topic's latest checkpoint, so the latest
//!   checkpoint of every topic, and at least a day of history, always remain.
//!
//! A table created before partitioning (`CREATE TABLE IF NOT EXISTS` keeps an existing
//! table's layout) has no partition key: it is reported in
//! [`RetentionReport::unpartitioned`] and left alone (`docs/storage.md` says how to migrate).

use crate::StorageError;
use crate::clients::{clickhouse_server, valid_database};
use crate::rows::{
    CAMPAIGN_ENGAGEMENT, CAMPAIGN_WINDOWS, CAMPAIGN_WINDOWS_HOURLY, CHECKPOINT_STATES,
    INTERACTION_PANES, SOURCE_CHECKPOINTS, TYPE_WINDOWS, TYPE_WINDOWS_HOURLY, USER_CAMPAIGNS,
    USER_SIMILAR,
};
use clickhouse::Row;
use eddy_core::config::ClickHouseConfig;
use serde::Deserialize;

/// One day, ms: the partition of a row is `intDiv(<time column>_ms, DAY_MS)`.
pub const DAY_MS: i64 = 86_400_000;

/// One day, µs: `source_checkpoints` is partitioned by `intDiv(version, DAY_MICROS)`.
pub const DAY_MICROS: u64 = 86_400_000_000;

/// The tables partitioned by event-time day, with the ms column their partition key divides:
/// `PARTITION BY intDiv(<column>, 86400000)`.
pub const DAY_PARTITIONED_TABLES: [(&str, &str); 8] = [
    (TYPE_WINDOWS, "window_start_ms"),
    (CAMPAIGN_WINDOWS, "window_start_ms"),
    (TYPE_WINDOWS_HOURLY, "hour_start_ms"),
    (CAMPAIGN_WINDOWS_HOURLY, "hour_start_ms"),
    (CAMPAIGN_ENGAGEMENT, "window_start_ms"),
    (USER_SIMILAR, "as_of_ms"),
    (USER_CAMPAIGNS, "as_of_ms"),
    (INTERACTION_PANES, "window_start_ms"),
];

/// The day (days since the Unix epoch, the partition value) holding epoch ms `ms`.
pub fn day_of_ms(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// The first day kept: partitions of days before it are dropped. `None` (keep everything)
/// when `retention_days` is 0. The reference time is `min(watermark_ms, now_ms)`; the day
/// holding it and the `retention_days` days before it are kept.
pub fn retention_cutoff_day(watermark_ms: i64, now_ms: i64, retention_days: u32) -> Option<i64> {
    (retention_days > 0)
        .then(|| day_of_ms(watermark_ms.min(now_ms)).saturating_sub(i64::from(retention_days)))
}

/// A day partition dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedPartition {
    /// The table.
    pub table: String,
    /// The partition value: days since the Unix epoch (for `source_checkpoints`, of the
    /// checkpoint's wall-clock version).
    pub day: i64,
}

/// What [`drop_expired_partitions`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// The first day kept, `None` when retention is off (`retention_days = 0`).
    pub cutoff_day: Option<i64>,
    /// Partitions dropped.
    pub dropped: Vec<DroppedPartition>,
    /// Tables of [`DAY_PARTITIONED_TABLES`] whose partition key is not the expected day key
    /// (created before partitioning): left alone.
    pub unpartitioned: Vec<String>,
}

#[derive(Debug, Row, Deserialize)]
struct TableKey {
    name: String,
    partition_key: String,
}

#[derive(Debug, Row, Deserialize)]
struct TablePartition {
    table: String,
    partition: String,
}

/// `expr` without spaces (the server's rendering of a partition key may space it differently).
fn squash(expr: &str) -> String {
    expr.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The active partitions of `tables` in `db`, by table, as integers (non-integer partition
/// values are skipped: they belong to another layout).
async fn partitions(
    client: &clickhouse::Client,
    db: &str,
    tables: &[&str],
) -> Result<Vec<(String, i64)>, StorageError> {
    let rows: Vec<TablePartition> = client
        .query("SELECT DISTINCT table, partition FROM system.parts WHERE database = ? AND active")
        .bind(db)
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .filter(|r| tables.contains(&r.table.as_str()))
        .filter_map(|r| Some((r.table, r.partition.trim().parse::<i64>().ok()?)))
        .collect())
}

/// The partition keys of the tables of `db`, by name.
async fn partition_keys(
    client: &clickhouse::Client,
    db: &str,
) -> Result<Vec<TableKey>, StorageError> {
    Ok(client
        .query("SELECT name, partition_key FROM system.tables WHERE database = ?")
        .bind(db)
        .fetch_all()
        .await?)
}

async fn drop_partition(
    client: &clickhouse::Client,
    db: &str,
    table: &str,
    day: i64,
) -> Result<(), StorageError> {
    // The partition value is an integer we read back from system.parts: safe to inline.
    client
        .query(&format!("ALTER TABLE {db}.{table} DROP PARTITION {day}"))
        .execute()
        .await?;
    Ok(())
}

/// Drops the day partitions of [`DAY_PARTITIONED_TABLES`] in `cfg.database` before
/// [`retention_cutoff_day`]`(watermark_ms, now_ms, cfg.retention_days)`; nothing when
/// `cfg.retention_days` is 0. Tables without the day partition key are reported, not touched;
/// missing tables are skipped ([`check_schema`](crate::check_schema) reports those).
///
/// Call it with the latest checkpoint's watermark (every window before it is final and
/// written) and the wall clock; dropping is idempotent, so calling it often is harmless (it
/// costs two reads of the system tables).
pub async fn drop_expired_partitions(
    cfg: &ClickHouseConfig,
    watermark_ms: i64,
    now_ms: i64,
) -> Result<RetentionReport, StorageError> {
    valid_database(&cfg.database)?;
    let Some(cutoff) = retention_cutoff_day(watermark_ms, now_ms, cfg.retention_days) else {
        return Ok(RetentionReport::default());
    };
    let client = clickhouse_server(cfg);
    let db = cfg.database.as_str();
    let keys = partition_keys(&client, db).await?;
    let mut report = RetentionReport {
        cutoff_day: Some(cutoff),
        ..RetentionReport::default()
    };
    let mut tables = Vec::new();
    for (table, column) in DAY_PARTITIONED_TABLES {
        let Some(k) = keys.iter().find(|k| k.name == table) else {
            continue;
        };
        if squash(&k.partition_key) == format!("intDiv({column},{DAY_MS})") {
            tables.push(table);
        } else {
            report.unpartitioned.push(table.to_owned());
        }
    }
    for (table, day) in partitions(&client, db, &tables).await? {
        // Negative days cannot hold valid events (ts >= 2000): never guessed at.
        if (0..cutoff).contains(&day) {
            drop_partition(&client, db, &table, day).await?;
            report.dropped.push(DroppedPartition { table, day });
        }
    }
    Ok(report)
}

#[derive(Debug, Row, Deserialize)]
struct LatestVersion {
    topics: u64,
    version: u64,
}

/// Marks the checkpoint name of a replay (`{topic}~replay~{id}`, see `eddy replay`): such
/// names do not hold back [`prune_checkpoints`], so a replay abandoned for more than a day
/// loses its checkpoints (and restarts from its plan) instead of keeping every checkpoint.
pub const REPLAY_CHECKPOINT_MARK: &str = "~replay~";

/// Drops the wall-clock day partitions of `source_checkpoints` (and of `checkpoint_states`,
/// partitioned the same way) before the day preceding the
/// oldest of the topics' latest checkpoints (replays' names, [`REPLAY_CHECKPOINT_MARK`],
/// aside): every topic's latest checkpoint, and every checkpoint of the day before it, stay.
/// Returns the days dropped (none when the table has no day partition key, or no checkpoint).
pub async fn prune_checkpoints(cfg: &ClickHouseConfig) -> Result<Vec<i64>, StorageError> {
    valid_database(&cfg.database)?;
    let client = clickhouse_server(cfg);
    let db = cfg.database.as_str();
    let keys = partition_keys(&client, db).await?;
    let partitioned = keys.iter().any(|k| {
        k.name == SOURCE_CHECKPOINTS
            && squash(&k.partition_key) == format!("intDiv(version,{DAY_MICROS})")
    });
    if !partitioned {
        return Ok(Vec::new());
    }
    let latest: LatestVersion = client
        .query(&format!(
            "SELECT count() AS topics, min(v) AS version FROM \
             (SELECT max(version) AS v FROM {db}.{SOURCE_CHECKPOINTS} \
             WHERE position(topic, '{REPLAY_CHECKPOINT_MARK}') = 0 GROUP BY topic)"
        ))
        .fetch_one()
        .await?;
    if latest.topics == 0 {
        return Ok(Vec::new());
    }
    let keep_from = i64::try_from(latest.version / DAY_MICROS).unwrap_or(i64::MAX) - 1;
    let mut dropped = Vec::new();
    for (table, day) in partitions(&client, db, &[SOURCE_CHECKPOINTS, CHECKPOINT_STATES]).await? {
        if (0..keep_from).contains(&day) {
            drop_partition(&client, db, &table, day).await?;
            dropped.push(day);
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_keeps_retention_days_before_the_earlier_of_watermark_and_now() {
        let day = |d: i64| d * DAY_MS;
        assert_eq!(retention_cutoff_day(day(100) + 5, day(200), 30), Some(70));
        // A watermark in the future is capped by the wall clock.
        assert_eq!(retention_cutoff_day(day(900), day(200) + 1, 30), Some(170));
        assert_eq!(retention_cutoff_day(day(100), day(200), 0), None);
        assert_eq!(day_of_ms(-1), -1);
    }

    #[test]
    fn every_day_partitioned_table_declares_its_key() {
        let ddl: String = crate::embedded_schema()
            .into_iter()
            .map(|f| f.sql)
            .collect();
        let ddl = squash(&ddl);
        for (table, column) in DAY_PARTITIONED_TABLES {
            let at = ddl
                .find(&format!("{{database}}.{table}("))
                .unwrap_or_else(|| panic!("{table} is not created"));
            let rest = &ddl[at..];
            let end = rest.find(';').unwrap_or(rest.len());
            assert!(
                rest[..end].contains(&format!("PARTITIONBYintDiv({column},{DAY_MS})")),
                "{table} lacks PARTITION BY intDiv({column}, {DAY_MS})"
            );
        }
        assert!(ddl.contains(&format!("PARTITIONBYintDiv(version,{DAY_MICROS})")));
    }
}
