//! ClickHouseSink, ClickHouseCheckpoints and the schema against a real ClickHouse
//! (`scripts/services up redis clickhouse`).

use eddy_core::EventType::{Click, Conversion, View};
use eddy_core::{Checkpoint, CountsBatch, PartitionCheckpoint};
use eddy_sinks::{
    CheckpointStore, ClickHouseCheckpoints, ClickHouseSink, EpochSink, apply_schema, check_schema,
};
use eddy_storage::{
    CAMPAIGN_HOURLY_QUERY, CampaignHourlyRow, CampaignWindowRow, ENGAGEMENT_QUERY,
    EngagementSumRow, LATEST_CAMPAIGNS_QUERY, LATEST_SIMILAR_QUERY, PaneEngagementRow,
    TYPE_HOURLY_QUERY, TYPE_WINDOWS_QUERY, TypeHourlyRow, TypeWindowRow, UserCampaignsRow,
    UserSimilarRow,
};
use eddy_testkit::fixtures::*;
use eddy_testkit::stores::{ch_exec, ch_fetch, clickhouse_url, fresh_clickhouse};

/// A type-window row as read back (versions are the writer's; tests compare them as 0).
fn t(
    start: i64,
    ty: &str,
    count: u64,
    sum: i64,
    min: Option<i64>,
    max: Option<i64>,
) -> TypeWindowRow {
    TypeWindowRow {
        window_start_ms: start,
        event_type: ty.into(),
        count,
        sum_micros: sum,
        min_micros: min,
        max_micros: max,
        version: 0,
    }
}

fn c(start: i64, id: u64, ty: &str, count: u64) -> CampaignWindowRow {
    CampaignWindowRow {
        window_start_ms: start,
        campaign_id: id,
        event_type: ty.into(),
        count,
        version: 0,
    }
}

/// Every type window (FINAL), by event type then start, versions zeroed.
fn type_rows(cfg: &eddy_core::config::ClickHouseConfig) -> Vec<TypeWindowRow> {
    let mut rows: Vec<TypeWindowRow> =
        ch_fetch(cfg, TYPE_WINDOWS_QUERY, |q| q.bind(i64::MIN).bind(i64::MAX));
    rows.sort_by(|a, b| {
        (&a.event_type, a.window_start_ms).cmp(&(&b.event_type, b.window_start_ms))
    });
    rows.into_iter()
        .map(|r| TypeWindowRow { version: 0, ..r })
        .collect()
}

/// Every campaign window (FINAL), by campaign, type, start, versions zeroed.
fn campaign_rows(cfg: &eddy_core::config::ClickHouseConfig) -> Vec<CampaignWindowRow> {
    let rows: Vec<CampaignWindowRow> = ch_fetch(
        cfg,
        "SELECT ?fields FROM campaign_windows FINAL \
         ORDER BY campaign_id, event_type, window_start_ms",
        |q| q,
    );
    rows.into_iter()
        .map(|r| CampaignWindowRow { version: 0, ..r })
        .collect()
}

#[test]
fn schema_applies_twice_and_is_checked() {
    let cfg = fresh_clickhouse("schema");
    check_schema(&cfg).unwrap();
    // Idempotent.
    let again = apply_schema(&cfg, Some(&eddy_testkit::repo().join("clickhouse/schema"))).unwrap();
    assert_eq!(
        again,
        [
            "001_database.sql",
            "002_windows.sql",
            "003_rollups.sql",
            "004_checkpoints.sql",
            "005_engagement.sql",
            "006_state.sql"
        ]
    );
    check_schema(&cfg).unwrap();

    let missing = eddy_core::config::ClickHouseConfig {
        url: clickhouse_url(),
        database: "eddy_test_no_such_db".into(),
        ..Default::default()
    };
    let err = check_schema(&missing).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("type_windows") && msg.contains("source_checkpoints"),
        "{msg}"
    );
    assert!(msg.contains("eddy schema apply"), "{msg}");
    assert!(!err.is_retryable());

    let bad = eddy_core::config::ClickHouseConfig {
        url: clickhouse_url(),
        database: "x; DROP".into(),
        ..Default::default()
    };
    assert!(apply_schema(&bad, None).is_err());
    assert!(apply_schema(&cfg, Some(&eddy_testkit::repo().join("no_such_dir"))).is_err());
}

#[test]
fn writes_final_rows_only_and_replays_converge() {
    let cfg = fresh_clickhouse("sink");
    let mut sink = ClickHouseSink::connect(&cfg).unwrap();
    assert_eq!(EpochSink::<CountsBatch>::name(&sink), "clickhouse");
    let mut b = batch(3, HOUR + 2 * MIN);
    b.open_types = vec![tw(HOUR + 2 * MIN, View, 99, 0, None, None)];
    b.open_campaigns = vec![cw(HOUR + 2 * MIN, 5, View, 99)];
    b.final_types = vec![
        tw(HOUR, View, 10, 0, None, None),
        tw(
            HOUR + MIN,
            Conversion,
            2,
            3_000_000,
            Some(1_000_000),
            Some(2_000_000),
        ),
    ];
    b.final_campaigns = vec![cw(HOUR, 5, View, 6), cw(HOUR, 6, View, 4)];
    sink.write(&b).unwrap();
    let conversion = t(
        HOUR + MIN,
        "conversion",
        2,
        3_000_000,
        Some(1_000_000),
        Some(2_000_000),
    );
    assert_eq!(
        type_rows(&cfg),
        vec![conversion.clone(), t(HOUR, "view", 10, 0, None, None)]
    );
    assert_eq!(
        campaign_rows(&cfg),
        vec![c(HOUR, 5, "view", 6), c(HOUR, 6, "view", 4)]
    );

    // The same batch again, then an updated version of one window of each table.
    sink.write(&b).unwrap();
    let mut b2 = batch(4, HOUR + 3 * MIN);
    b2.final_types = vec![tw(HOUR, View, 11, 0, None, None)];
    b2.final_campaigns = vec![cw(HOUR, 6, View, 5)];
    sink.write(&b2).unwrap();
    // A fresh sink (as after a restart) replays the first batch: versions still increase.
    let mut sink2 = ClickHouseSink::connect(&cfg).unwrap();
    sink2.write(&b2).unwrap();
    // Empty batches write nothing.
    sink2.write(&CountsBatch::default()).unwrap();

    assert_eq!(
        type_rows(&cfg),
        vec![conversion, t(HOUR, "view", 11, 0, None, None)]
    );
    assert_eq!(
        campaign_rows(&cfg),
        vec![c(HOUR, 5, "view", 6), c(HOUR, 6, "view", 5)]
    );
}

#[test]
fn hourly_rollups_equal_minute_sums_under_replay() {
    let cfg = fresh_clickhouse("rollup");
    let mut sink = ClickHouseSink::connect(&cfg).unwrap();
    let mut b1 = batch(1, HOUR + 61 * MIN);
    b1.final_types = vec![
        tw(
            HOUR,
            Conversion,
            2,
            5_000_000,
            Some(1_000_000),
            Some(4_000_000),
        ),
        tw(
            HOUR + MIN,
            Conversion,
            1,
            7_000_000,
            Some(7_000_000),
            Some(7_000_000),
        ),
        tw(HOUR + 59 * MIN, View, 100, 0, None, None),
        tw(HOUR + 60 * MIN, View, 50, 0, None, None),
    ];
    b1.final_campaigns = vec![
        cw(HOUR, 9, Click, 3),
        cw(HOUR + 30 * MIN, 9, Click, 4),
        cw(HOUR + 60 * MIN, 9, Click, 5),
        cw(HOUR, 8, Click, 1000),
    ];
    sink.write(&b1).unwrap();
    // Replays: the identical batch, twice, from two sinks.
    sink.write(&b1).unwrap();
    ClickHouseSink::connect(&cfg).unwrap().write(&b1).unwrap();
    // A rewrite of one minute with new values (latest version wins, as in FINAL).
    let mut b2 = batch(2, HOUR + 62 * MIN);
    b2.final_types = vec![tw(
        HOUR + MIN,
        Conversion,
        2,
        9_000_000,
        Some(2_000_000),
        Some(7_000_000),
    )];
    b2.final_campaigns = vec![cw(HOUR + 30 * MIN, 9, Click, 6)];
    sink.write(&b2).unwrap();
    sink.write(&b2).unwrap();

    let hourly: Vec<TypeHourlyRow> = ch_fetch(&cfg, TYPE_HOURLY_QUERY, |q| {
        q.bind(HOUR).bind(HOUR + 2 * 60 * MIN)
    });
    let hr = |h: i64, ty: &str, count, sum, min, max, windows| TypeHourlyRow {
        hour_start_ms: h,
        event_type: ty.into(),
        count,
        sum_micros: sum,
        min_micros: min,
        max_micros: max,
        windows,
    };
    assert_eq!(
        hourly,
        vec![
            hr(
                HOUR,
                "conversion",
                4,
                14_000_000,
                Some(1_000_000),
                Some(7_000_000),
                2
            ),
            hr(HOUR, "view", 100, 0, None, None, 1),
            hr(HOUR + 60 * MIN, "view", 50, 0, None, None, 1),
        ]
    );
    // Equal to the sums of the FINAL minute rows.
    let from_minutes: Vec<TypeHourlyRow> = ch_fetch(
        &cfg,
        "SELECT intDiv(window_start_ms, 3600000) * 3600000 AS hour_start_ms, event_type, \
         sum(count) AS count, sum(sum_micros) AS sum_micros, min(min_micros) AS min_micros, \
         max(max_micros) AS max_micros, count() AS windows FROM type_windows FINAL \
         GROUP BY hour_start_ms, event_type ORDER BY event_type, hour_start_ms",
        |q| q,
    );
    assert_eq!(hourly, from_minutes);

    let campaign: Vec<CampaignHourlyRow> = ch_fetch(&cfg, CAMPAIGN_HOURLY_QUERY, |q| {
        q.bind(9u64).bind(HOUR).bind(HOUR + 2 * 60 * MIN)
    });
    assert_eq!(
        campaign,
        vec![
            CampaignHourlyRow {
                hour_start_ms: HOUR,
                campaign_id: 9,
                event_type: "click".into(),
                count: 9,
                windows: 2
            },
            CampaignHourlyRow {
                hour_start_ms: HOUR + 60 * MIN,
                campaign_id: 9,
                event_type: "click".into(),
                count: 5,
                windows: 1
            },
        ]
    );

    // Background merges do not change the answer either.
    ch_exec(
        &cfg,
        &format!("OPTIMIZE TABLE {}.type_windows_hourly FINAL", cfg.database),
    );
    ch_exec(
        &cfg,
        &format!(
            "OPTIMIZE TABLE {}.campaign_windows_hourly FINAL",
            cfg.database
        ),
    );
    let again: Vec<TypeHourlyRow> = ch_fetch(&cfg, TYPE_HOURLY_QUERY, |q| {
        q.bind(HOUR).bind(HOUR + 2 * 60 * MIN)
    });
    assert_eq!(again, hourly);
}

#[test]
fn checkpoints_round_trip_latest_version() {
    let cfg = fresh_clickhouse("checkpoints");
    let mut store = ClickHouseCheckpoints::connect(&cfg).unwrap();
    assert_eq!(store.load("events").unwrap(), None);
    let pc = |partition, resume_offset, high_offset| PartitionCheckpoint {
        partition,
        resume_offset,
        high_offset,
    };
    let cp1 = Checkpoint {
        state: None,
        topic: "events".into(),
        epoch: 10,
        watermark_ms: HOUR,
        partitions: vec![pc(0, 5, 9), pc(1, 0, 3), pc(2, 7, 7)],
    };
    store.save(&cp1).unwrap();
    assert_eq!(store.load("events").unwrap(), Some(cp1.clone()));
    let cp2 = Checkpoint {
        state: None,
        topic: "events".into(),
        epoch: 20,
        watermark_ms: HOUR + MIN,
        partitions: vec![pc(0, 8, 12), pc(1, 3, 3)],
    };
    store.save(&cp2).unwrap();
    let other = Checkpoint {
        state: None,
        topic: "other".into(),
        epoch: 1,
        watermark_ms: 0,
        partitions: vec![pc(0, 1, 1)],
    };
    store.save(&other).unwrap();

    let mut fresh = ClickHouseCheckpoints::connect(&cfg).unwrap();
    assert_eq!(fresh.load("events").unwrap(), Some(cp2.clone()));
    assert_eq!(fresh.load("other").unwrap(), Some(other));
    assert_eq!(fresh.load("missing").unwrap(), None);
    // A save after a load is newer than what was loaded.
    let cp3 = Checkpoint { epoch: 30, ..cp2 };
    fresh.save(&cp3).unwrap();
    assert_eq!(store.load("events").unwrap(), Some(cp3));
}

/// Every row of `sql` (`SELECT ?fields FROM <table> FINAL ORDER BY …`), versions zeroed.
fn unversioned<T>(
    cfg: &eddy_core::config::ClickHouseConfig,
    sql: &str,
    zero: impl Fn(T) -> T,
) -> Vec<T>
where
    T: clickhouse::RowOwned + clickhouse::RowRead + Send,
{
    ch_fetch(cfg, sql, |q| q).into_iter().map(zero).collect()
}

fn pane_rows(cfg: &eddy_core::config::ClickHouseConfig) -> Vec<PaneEngagementRow> {
    unversioned(
        cfg,
        "SELECT ?fields FROM campaign_engagement FINAL ORDER BY campaign_id, window_start_ms",
        |r| PaneEngagementRow { version: 0, ..r },
    )
}

fn similar_rows(cfg: &eddy_core::config::ClickHouseConfig) -> Vec<UserSimilarRow> {
    unversioned(
        cfg,
        "SELECT ?fields FROM user_similar FINAL ORDER BY user_id, as_of_ms",
        |r| UserSimilarRow { version: 0, ..r },
    )
}

fn set_rows(cfg: &eddy_core::config::ClickHouseConfig) -> Vec<UserCampaignsRow> {
    unversioned(
        cfg,
        "SELECT ?fields FROM user_campaigns FINAL ORDER BY user_id, as_of_ms",
        |r| UserCampaignsRow { version: 0, ..r },
    )
}

fn prow(start: i64, id: u64, v: u64, c: u64, cv: u64, r: i64) -> PaneEngagementRow {
    PaneEngagementRow {
        window_start_ms: start,
        campaign_id: id,
        views: v,
        clicks: c,
        conversions: cv,
        revenue_micros: r,
        version: 0,
    }
}

#[test]
fn writes_engagement_panes_and_user_snapshots() {
    let cfg = fresh_clickhouse("engagement");
    check_schema(&cfg).unwrap();
    let mut sink = ClickHouseSink::connect(&cfg).unwrap();
    let w1 = HOUR + 2 * MIN;
    let mut b1 = batch(3, w1);
    b1.sliding_ms = 2 * MIN;
    // Live engagement and the top list are Redis-only.
    b1.engagement = vec![eng(42, 99, 0, 0, 0)];
    b1.top_campaigns = Some(vec![eng(42, 99, 0, 0, 0)]);
    b1.final_engagement = vec![
        pane(HOUR, 42, 10, 2, 1, 5_000_000),
        pane(HOUR, 43, 3, 0, 0, 0),
        pane(HOUR + MIN, 42, 1, 1, 0, 0),
    ];
    let mut s1 = sim_batch(3, w1, 2 * MIN);
    s1.similar = vec![similar(7, vec![nb(8, 2, 3), nb(9, 1, 4)])];
    s1.campaigns = vec![user_set(7, vec![43, 44])];
    sink.write(&b1).unwrap();
    sink.write(&s1).unwrap();

    // Every row of one write carries the same version; a later write a higher one.
    let versions = |sql: &str| -> Vec<u64> { ch_fetch(&cfg, sql, |q| q) };
    let panes = versions("SELECT DISTINCT version FROM campaign_engagement");
    let users = versions(
        "SELECT DISTINCT version FROM (SELECT version FROM user_similar \
         UNION ALL SELECT version FROM user_campaigns)",
    );
    assert_eq!((panes.len(), users.len()), (1, 1), "{panes:?} {users:?}");
    assert!(users[0] > panes[0]);

    let panes1 = vec![
        prow(HOUR, 42, 10, 2, 1, 5_000_000),
        prow(HOUR + MIN, 42, 1, 1, 0, 0),
        prow(HOUR, 43, 3, 0, 0, 0),
    ];
    let similar1 = UserSimilarRow {
        user_id: 7,
        as_of_ms: w1,
        neighbors: vec![8, 9],
        shared: vec![2, 1],
        union_size: vec![3, 4],
        version: 0,
    };
    let set1 = UserCampaignsRow {
        user_id: 7,
        as_of_ms: w1,
        campaigns: vec![43, 44],
        version: 0,
    };
    assert_eq!(pane_rows(&cfg), panes1);
    assert_eq!(similar_rows(&cfg), vec![similar1]);
    assert_eq!(set_rows(&cfg), vec![set1]);

    // Replays (also from a fresh sink) converge to the same rows.
    sink.write(&b1).unwrap();
    sink.write(&s1).unwrap();
    let mut fresh = ClickHouseSink::connect(&cfg).unwrap();
    fresh.write(&b1).unwrap();
    fresh.write(&s1).unwrap();
    assert_eq!(pane_rows(&cfg), panes1);
    assert_eq!(similar_rows(&cfg).len(), 1);
    assert_eq!(set_rows(&cfg).len(), 1);

    // Later: a pane rewritten, user 7 loses both lists (an empty snapshot each).
    let w2 = HOUR + 3 * MIN;
    let mut b2 = batch(4, w2);
    b2.final_engagement = vec![
        pane(HOUR, 43, 4, 0, 0, 0),
        pane(HOUR + 2 * MIN, 43, 1, 0, 0, 7),
    ];
    let mut s2 = sim_batch(4, w2, 2 * MIN);
    s2.similar = vec![similar(7, vec![]), similar(9, vec![nb(7, 1, 4)])];
    s2.campaigns = vec![user_set(7, vec![])];
    for _ in 0..2 {
        sink.write(&b2).unwrap();
        sink.write(&s2).unwrap();
    }
    assert_eq!(
        pane_rows(&cfg),
        vec![
            prow(HOUR, 42, 10, 2, 1, 5_000_000),
            prow(HOUR + MIN, 42, 1, 1, 0, 0),
            prow(HOUR, 43, 4, 0, 0, 0),
            prow(HOUR + 2 * MIN, 43, 1, 0, 0, 7),
        ]
    );
    // The latest snapshot, as readers query it (docs/storage.md).
    let latest = |user: u64| -> Vec<UserSimilarRow> {
        let rows: Vec<UserSimilarRow> = ch_fetch(&cfg, LATEST_SIMILAR_QUERY, |q| q.bind(user));
        rows.into_iter()
            .map(|r| UserSimilarRow { version: 0, ..r })
            .collect()
    };
    assert_eq!(
        latest(7),
        vec![UserSimilarRow {
            user_id: 7,
            as_of_ms: w2,
            neighbors: vec![],
            shared: vec![],
            union_size: vec![],
            version: 0,
        }]
    );
    assert_eq!(latest(9)[0].neighbors, vec![7]);
    assert_eq!(latest(1), vec![]);
    assert_eq!(similar_rows(&cfg).len(), 3, "snapshots are kept as history");
    let r: Vec<UserCampaignsRow> = ch_fetch(&cfg, LATEST_CAMPAIGNS_QUERY, |q| q.bind(vec![7u64]));
    assert_eq!(
        r.into_iter()
            .map(|r| UserCampaignsRow { version: 0, ..r })
            .collect::<Vec<_>>(),
        vec![UserCampaignsRow {
            user_id: 7,
            as_of_ms: w2,
            campaigns: vec![],
            version: 0,
        }]
    );

    // The sliding-window sum of docs/storage.md, at boundary B = HOUR + 3 min with a 3-minute
    // sliding window of 1-minute panes: the closed panes not yet retired start at HOUR + 1 min
    // and HOUR + 2 min (the pane at HOUR retired at B; the one at B is still open).
    let b = HOUR + 3 * MIN;
    let sums: Vec<EngagementSumRow> = ch_fetch(&cfg, ENGAGEMENT_QUERY, |q| {
        q.bind(b - MIN).bind(b - 3 * MIN)
    });
    assert_eq!(
        sums,
        vec![
            EngagementSumRow {
                campaign_id: 42,
                views: 1,
                clicks: 1,
                conversions: 0,
                revenue_micros: 0
            },
            EngagementSumRow {
                campaign_id: 43,
                views: 1,
                clicks: 0,
                conversions: 0,
                revenue_micros: 7
            },
        ]
    );
}
