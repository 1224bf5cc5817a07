//! Retention against the real ClickHouse (each test its own database with eddy's schema): day
//! partitions older than `clickhouse.retention_days` are dropped from every day-partitioned
//! table, the cutoff never passes the wall clock, a table of the old layout (no partition key)
//! is reported and left alone, and old checkpoints are pruned without losing any topic's
//! latest one.

use clickhouse::Row;
use eddy_core::config::ClickHouseConfig;
use eddy_storage::*;
use eddy_testkit::stores::{ch_exec, ch_fetch, fresh_clickhouse};
use serde::Deserialize;

/// A day (days since the epoch) of 2023, as ms.
const D: i64 = 19_675;

fn day(d: i64) -> i64 {
    d * DAY_MS
}

#[derive(Debug, Row, Deserialize)]
struct Count {
    n: u64,
}

fn count(db: &ClickHouseConfig, table: &str) -> u64 {
    ch_fetch::<Count>(db, &format!("SELECT count() AS n FROM {table}"), |q| q)[0].n
}

/// Days (partition values) of `table`'s active parts.
fn days(db: &ClickHouseConfig, table: &str) -> Vec<i64> {
    #[derive(Debug, Row, Deserialize)]
    struct P {
        partition: String,
    }
    let mut days: Vec<i64> = ch_fetch::<P>(
        db,
        "SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active",
        |q| q.bind(db.database.as_str()).bind(table),
    )
    .into_iter()
    .map(|p| p.partition.parse().unwrap())
    .collect();
    days.sort_unstable();
    days
}

/// One row on day `d` (at 01:00) in every day-partitioned table (the hourly rollups through
/// their materialized views).
fn write_day(db: &ClickHouseConfig, d: i64) {
    let t = day(d) + 3_600_000;
    let db_name = &db.database;
    for sql in [
        format!("INSERT INTO {db_name}.type_windows VALUES ({t}, 'click', 1, 0, NULL, NULL, 1)"),
        format!("INSERT INTO {db_name}.campaign_windows VALUES ({t}, 7, 'click', 1, 1)"),
        format!("INSERT INTO {db_name}.campaign_engagement VALUES ({t}, 7, 1, 0, 0, 0, 1)"),
        format!("INSERT INTO {db_name}.user_similar VALUES (3, {t}, [4], [1], [2], 1)"),
        format!("INSERT INTO {db_name}.user_campaigns VALUES (3, {t}, [7], 1)"),
        format!("INSERT INTO {db_name}.interaction_panes VALUES ({t}, 3, 7)"),
    ] {
        ch_exec(db, &sql);
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn drops_day_partitions_past_retention_from_every_table() {
    let db = fresh_clickhouse("storage_retention");
    for d in [D - 40, D - 31, D - 30, D - 1, D] {
        write_day(&db, d);
    }
    let cfg = ClickHouseConfig {
        retention_days: 30,
        ..db.config().clone()
    };
    // Watermark late on day D, wall clock later still: days before D - 30 go.
    let report = run(drop_expired_partitions(&cfg, day(D) + 5, day(D + 100))).unwrap();
    assert_eq!(report.cutoff_day, Some(D - 30));
    assert!(report.unpartitioned.is_empty(), "{report:?}");
    assert_eq!(report.dropped.len(), 2 * DAY_PARTITIONED_TABLES.len());
    for (table, _) in DAY_PARTITIONED_TABLES {
        assert_eq!(days(&db, table), vec![D - 30, D - 1, D], "{table}");
        assert_eq!(count(&db, table), 3, "{table}");
    }
    // Idempotent.
    let again = run(drop_expired_partitions(&cfg, day(D) + 5, day(D + 100))).unwrap();
    assert!(again.dropped.is_empty());

    // A watermark far in the future is capped by the wall clock.
    let report = run(drop_expired_partitions(&cfg, day(D + 10_000), day(D) + 1)).unwrap();
    assert_eq!(report.cutoff_day, Some(D - 30));
    assert!(report.dropped.is_empty());

    // retention_days = 0 keeps everything.
    let keep = ClickHouseConfig {
        retention_days: 0,
        ..cfg.clone()
    };
    let report = run(drop_expired_partitions(
        &keep,
        day(D + 1_000),
        day(D + 1_000),
    ))
    .unwrap();
    assert_eq!(report, RetentionReport::default());
    assert_eq!(count(&db, TYPE_WINDOWS), 3);
}

#[test]
fn a_table_of_the_old_layout_is_reported_and_kept() {
    let db = fresh_clickhouse("storage_retention_old");
    let name = &db.database;
    // campaign_engagement as created before day partitioning.
    ch_exec(&db, &format!("DROP TABLE {name}.campaign_engagement"));
    ch_exec(
        &db,
        &format!(
            "CREATE TABLE {name}.campaign_engagement (window_start_ms Int64, campaign_id UInt64, \
             views UInt64, clicks UInt64, conversions UInt64, revenue_micros Int64, \
             version UInt64) ENGINE = ReplacingMergeTree(version) \
             ORDER BY (campaign_id, window_start_ms)"
        ),
    );
    write_day(&db, D - 40);
    write_day(&db, D);
    let report = run(drop_expired_partitions(&db, day(D), day(D))).unwrap();
    assert_eq!(report.unpartitioned, vec![CAMPAIGN_ENGAGEMENT.to_owned()]);
    assert_eq!(count(&db, CAMPAIGN_ENGAGEMENT), 2);
    assert_eq!(count(&db, TYPE_WINDOWS), 1);
    // The schema check still passes, and applying the schema again keeps the old table.
    run(check_schema(&db)).unwrap();
    run(apply_schema(&db, &embedded_schema())).unwrap();
    assert_eq!(count(&db, CAMPAIGN_ENGAGEMENT), 2);
}

#[test]
fn old_checkpoints_are_pruned_and_every_latest_one_kept() {
    let db = fresh_clickhouse("storage_checkpoints");
    let v = |d: i64| d as u64 * DAY_MICROS + 1_000;
    let save = |topic: &str, d: i64| {
        ch_exec(
            &db,
            &format!(
                "INSERT INTO {}.source_checkpoints VALUES ('{topic}', 0, 1, 2, 3, 4, {})",
                db.database,
                v(d)
            ),
        );
    };
    // No checkpoint: nothing to do.
    assert!(run(prune_checkpoints(&db)).unwrap().is_empty());
    for d in [D - 9, D - 5, D - 2, D - 1, D] {
        save("a", d);
    }
    save("b", D - 5);
    // An abandoned replay's checkpoints do not hold pruning back.
    save(&format!("a{REPLAY_CHECKPOINT_MARK}1"), D - 9);
    // Topic b's latest checkpoint is from D - 5: it and the day before it stay.
    assert_eq!(run(prune_checkpoints(&db)).unwrap(), vec![D - 9]);
    assert_eq!(days(&db, SOURCE_CHECKPOINTS), vec![D - 5, D - 2, D - 1, D]);
    // Topic b moves on: only the last two days remain.
    save("b", D);
    let mut dropped = run(prune_checkpoints(&db)).unwrap();
    dropped.sort_unstable();
    assert_eq!(dropped, vec![D - 5, D - 2]);
    assert_eq!(days(&db, SOURCE_CHECKPOINTS), vec![D - 1, D]);
    let latest: Vec<CheckpointRow> =
        ch_fetch(&db, LATEST_CHECKPOINT_QUERY, |q| q.bind("b").bind("b"));
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].version, v(D));
}
