//! What reads cost the batch layer, against the real stores (each test its own ClickHouse
//! database and Redis prefix, [`eddy_testkit::stores`]): ids that neither store knows cost one
//! ClickHouse query, not one per request (negative cache, cleared when the batch/speed
//! boundary moves); a hot series stays in the finalized-window cache however many other series
//! are read. ClickHouse queries are counted by [`LambdaBackend::clickhouse_queries`].

use eddy_core::config::{ClickHouseConfig, RedisConfig};
use eddy_core::{EventType, Weights};
use eddy_query_server::{Backend, EngagementQuery, LambdaBackend, RowSource, Store, WindowQuery};
use eddy_storage::keys;
use eddy_testkit::fixtures::{HOUR as H, MIN as M};
use eddy_testkit::stores::{ch_exec, fresh_clickhouse, fresh_redis, redis_conn};

fn set_boundary(redis: &RedisConfig, boundary_ms: i64) {
    redis::cmd("SET")
        .arg(keys::boundary(&redis.prefix))
        .arg(boundary_ms)
        .exec(&mut redis_conn(redis))
        .unwrap();
}

const Q: EngagementQuery = EngagementQuery {
    window_ms: M,
    sliding_ms: 10 * M,
    weights: Weights {
        view: 1.0,
        click: 5.0,
        conversion: 25.0,
    },
};

fn backend(redis: &RedisConfig, ch: &ClickHouseConfig) -> LambdaBackend {
    LambdaBackend::new(redis, ch).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_cost_one_clickhouse_query_until_the_boundary_moves() {
    let db = fresh_clickhouse("qs_negative");
    let redis = fresh_redis("qs_negative");
    set_boundary(&redis, H + 5 * M);
    let b = backend(&redis, &db);

    // Each kind of lookup: the first miss asks ClickHouse, the repeats do not. Recommendations
    // are ranked from the similar users: a user without any costs the similar users' query.
    let lookups = async |b: &LambdaBackend| {
        assert_eq!(b.campaign(Q, 999).await.unwrap(), None);
        assert_eq!(b.similar_users(999).await.unwrap(), None);
        assert_eq!(b.recommendations(Q, 999, 10).await.unwrap(), None);
    };
    let before = b.clickhouse_queries();
    lookups(&b).await;
    assert_eq!(b.clickhouse_queries() - before, 2, "one query per kind");
    for _ in 0..20 {
        lookups(&b).await;
    }
    assert_eq!(
        b.clickhouse_queries() - before,
        2,
        "repeated misses asked ClickHouse again"
    );

    // The campaign's first pane is written and the boundary moves past it: the miss is
    // forgotten and the campaign is found in ClickHouse.
    ch_exec(
        &db,
        &format!(
            "INSERT INTO {}.campaign_engagement VALUES ({}, 999, 4, 1, 0, 0, 1)",
            db.database,
            H + 5 * M
        ),
    );
    set_boundary(&redis, H + 6 * M);
    let found = b
        .campaign(Q, 999)
        .await
        .unwrap()
        .expect("found after the move");
    assert_eq!((found.value.views, found.value.clicks), (4, 1));
    assert_eq!(found.source, Store::Clickhouse);
    assert_eq!(found.as_of_ms, H + 6 * M);
    // The users are asked for again once, then cached again.
    let before = b.clickhouse_queries();
    for _ in 0..3 {
        assert_eq!(b.similar_users(999).await.unwrap(), None);
        assert_eq!(b.recommendations(Q, 999, 10).await.unwrap(), None);
    }
    assert_eq!(b.clickhouse_queries() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_series_stays_cached_among_many_others() {
    let db = fresh_clickhouse("qs_lru");
    let redis = fresh_redis("qs_lru");
    set_boundary(&redis, H + 10 * M);
    ch_exec(
        &db,
        &format!(
            "INSERT INTO {}.type_windows VALUES ({H}, 'click', 3, 0, NULL, NULL, 1)",
            db.database
        ),
    );
    let b = backend(&redis, &db).with_batch_cache(4, 10_000);
    let query = |campaign_id| WindowQuery {
        event_type: Some(EventType::Click),
        campaign_id,
        from_ms: H,
        to_ms: H + 10 * M,
        window_ms: M,
    };
    let hot = b.counts(query(None)).await.unwrap();
    assert_eq!(hot.rows.len(), 1);
    assert_eq!(hot.rows[0].source, RowSource::Clickhouse);
    for campaign in 0..20 {
        // Another series, read once (a ClickHouse query each).
        let before = b.clickhouse_queries();
        b.counts(query(Some(campaign))).await.unwrap();
        assert_eq!(b.clickhouse_queries() - before, 1);
        // The hot series is answered from the cache.
        let before = b.clickhouse_queries();
        assert_eq!(b.counts(query(None)).await.unwrap(), hot);
        assert_eq!(
            b.clickhouse_queries() - before,
            0,
            "hot series evicted after {campaign} other series"
        );
    }
}
