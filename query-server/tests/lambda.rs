//! [`LambdaBackend`] against real stores: Redis and ClickHouse started by
//! `scripts/services up redis clickhouse` (override with `EDDY_TEST_REDIS_URL` and
//! `EDDY_TEST_CLICKHOUSE_URL`). Each test has its own ClickHouse database (the schema of
//! `clickhouse/schema/` applied) and Redis key prefix ([`eddy_testkit::stores`]); answers are
//! read as the server's types ([`eddy_core::api`]).

use eddy_core::EventType::{Click, View};
use eddy_core::api::{
    AnswerMeta, CountsResponse, ErrorCode, HealthResponse, HealthStatus, LayerJson, LayersJson,
    RowSource, SeriesPoint, Store,
};
use eddy_core::config::{ClickHouseConfig, RedisConfig};
use eddy_core::{EventType, Metrics};
use eddy_query_server::{AppState, LambdaBackend, ServerQueryLimits, app};
use eddy_storage::keys;
use eddy_testkit::fixtures::{HOUR as H, MIN as M, campaign_point, health, point};
use eddy_testkit::http::{self, Reply, as_read};
use eddy_testkit::stores::{
    PrivateRedis, TestDatabase, TestRedis, ch_exec, fresh_clickhouse, fresh_redis, redis_conn,
};
use eddy_testkit::wait::wait_until_async;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Nothing listens there: a store that is down.
const DOWN: &str = "redis://127.0.0.1:1/";
/// As [`DOWN`], for ClickHouse.
const CH_DOWN: &str = "http://127.0.0.1:1";

/// One test's stores: a fresh Redis prefix and ClickHouse database, removed when it passes.
struct Stores {
    redis: TestRedis,
    ch: TestDatabase,
}

impl Stores {
    fn fresh(name: &str) -> Self {
        Self {
            redis: fresh_redis(name),
            ch: fresh_clickhouse(name),
        }
    }

    /// A query server over these stores, answering within 2 s.
    fn state(&self) -> AppState {
        self.state_at(&self.redis.url, &self.ch.url, Duration::from_secs(2))
    }

    /// A query server over these stores' prefix and database, with Redis at `redis_url` and
    /// ClickHouse at `ch_url` (e.g. [`DOWN`]), answering within `timeout`.
    fn state_at(&self, redis_url: &str, ch_url: &str, timeout: Duration) -> AppState {
        let redis = RedisConfig {
            url: redis_url.into(),
            ..self.redis.config().clone()
        };
        let ch = ClickHouseConfig {
            url: ch_url.into(),
            ..self.ch.config().clone()
        };
        state(&redis, &ch, timeout)
    }
}

/// A query server over a [`LambdaBackend`] of `redis` and `ch`, answering within `timeout`.
fn state(redis: &RedisConfig, ch: &ClickHouseConfig, timeout: Duration) -> AppState {
    let backend = LambdaBackend::new(redis, ch).unwrap().with_timeout(timeout);
    AppState::new(
        Arc::new(backend),
        Metrics::new(),
        ServerQueryLimits {
            max_range_ms: 24 * 3_600_000,
            window_ms: M,
            sliding_ms: 3 * M,
            top_k: 5,
            similar_k: 3,
            recommendations: 2,
            ..ServerQueryLimits::default()
        },
    )
}

async fn get(st: &AppState, uri: &str) -> Reply {
    http::get(app(st.clone()), uri).await
}

/// The fixture of the counts tests, in both stores: ClickHouse holds the final windows at H
/// (and an older version FINAL hides) and H+1m, checkpoints up to H+2m; Redis holds the
/// boundary H+1m, the watermark H+3m and the windows from H on (two of them open).
fn counts_stores(name: &str) -> Stores {
    let s = Stores::fresh(name);
    let db = &s.ch.database;
    for sql in [
        // An older version of (H, click) that FINAL must hide, in its own part.
        format!("INSERT INTO {db}.type_windows VALUES ({H}, 'click', 99, 0, NULL, NULL, 0)"),
        format!(
            "INSERT INTO {db}.type_windows VALUES ({H}, 'click', 3, 1500000, 250000, 1000000, 1), \
             ({}, 'click', 2, 2000000, 500000, 1500000, 1), ({H}, 'view', 10, 0, NULL, NULL, 1)",
            H + M
        ),
        format!(
            "INSERT INTO {db}.campaign_windows VALUES ({H}, 42, 'click', 2, 1), \
             ({H}, 42, 'view', 7, 1), ({H}, 43, 'view', 5, 1)"
        ),
        format!(
            "INSERT INTO {db}.source_checkpoints VALUES ('events', 0, 0, 0, {}, 1, 1), \
             ('events', 0, 0, 0, {}, 2, 2)",
            H + M,
            H + 2 * M
        ),
    ] {
        ch_exec(&s.ch, &sql);
    }

    let p = &s.redis.prefix;
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg(keys::boundary(p)).arg(H + M);
    pipe.cmd("SET").arg(keys::watermark(p)).arg(H + 3 * M);
    pipe.cmd("SET").arg(keys::as_of(p)).arg(eddy_core::now_ms());
    for (t, start, fields) in [
        (
            Click,
            H,
            vec![
                ("count", "3"),
                ("sum", "1500000"),
                ("min", "250000"),
                ("max", "1000000"),
                ("final", "1"),
            ],
        ),
        (
            Click,
            H + M,
            vec![
                ("count", "2"),
                ("sum", "2000000"),
                ("min", "500000"),
                ("max", "1500000"),
                ("final", "1"),
            ],
        ),
        (
            Click,
            H + 2 * M,
            vec![
                ("count", "1"),
                ("sum", "750000"),
                ("min", "750000"),
                ("max", "750000"),
                ("final", "0"),
            ],
        ),
        (
            View,
            H + 2 * M,
            vec![("count", "4"), ("sum", "0"), ("final", "0")],
        ),
    ] {
        pipe.cmd("ZADD")
            .arg(keys::type_windows(p, t))
            .arg(start)
            .arg(start);
        let mut c = redis::cmd("HSET");
        c.arg(keys::type_window(p, t, start));
        for (k, v) in fields {
            c.arg(k).arg(v);
        }
        c.arg("epoch").arg(7);
        pipe.add_command(c);
    }
    // Index entry whose hash expired: skipped.
    pipe.cmd("ZADD")
        .arg(keys::type_windows(p, Click))
        .arg(H + 5 * M)
        .arg(H + 5 * M);
    pipe.cmd("ZADD")
        .arg(keys::campaign_windows(p, 42, Click))
        .arg(H + 2 * M)
        .arg(H + 2 * M);
    pipe.cmd("HSET")
        .arg(keys::campaign_window(p, 42, Click, H + 2 * M))
        .arg("count")
        .arg(1)
        .arg("final")
        .arg(0);
    pipe.exec(&mut redis_conn(&s.redis)).unwrap();
    s
}

/// A per-type point of the fixture (amounts `(sum, min, max)` in units).
fn pt(
    start: i64,
    t: EventType,
    count: u64,
    a: (f64, Option<f64>, Option<f64>),
    fin: bool,
    src: RowSource,
) -> SeriesPoint {
    point(start, t, count, Some(a), fin, src)
}

/// A layer that answered with `windows` windows.
fn answered(source: Store, windows: usize) -> LayerJson {
    LayerJson {
        source,
        available: Some(true),
        windows,
        error: None,
    }
}

#[tokio::test]
async fn lambda_backend_against_real_stores() {
    let stores = counts_stores("qs_real");
    let (redis_url, ch_url) = (stores.redis.url.clone(), stores.ch.url.clone());
    let q = format!("/v1/counts?from={H}&to={}", H + 60 * M);
    let t = Duration::from_secs(2);
    let click_h = (1.5, Some(0.25), Some(1.0));
    let click_h1 = (2.0, Some(0.5), Some(1.5));
    let click_h2 = (0.75, Some(0.75), Some(0.75));
    let none = (0.0, None, None);
    let (ch, redis) = (RowSource::Clickhouse, RowSource::Redis);

    // Both up: ClickHouse up to the boundary (H+1m), Redis after it.
    let st = stores.state();
    let v: CountsResponse = get(&st, &q).await.ok();
    assert_eq!(
        (v.boundary_ms, v.watermark_ms),
        (Some(H + M), Some(H + 3 * M))
    );
    assert!(v.freshness_ms.unwrap() >= 0);
    assert_eq!(v.as_of_ms, Some(H + 3 * M));
    assert!(!v.degraded);
    assert_eq!(
        v.layers,
        LayersJson {
            batch: answered(Store::Clickhouse, 2),
            speed: answered(Store::Redis, 3),
        }
    );
    assert_eq!(
        v.series,
        as_read(&vec![
            pt(H, View, 10, none, true, ch),
            pt(H + 2 * M, View, 4, none, false, redis),
            pt(H, Click, 3, click_h, true, ch),
            pt(H + M, Click, 2, click_h1, true, redis),
            pt(H + 2 * M, Click, 1, click_h2, false, redis),
        ])
    );
    let v: CountsResponse = get(&st, &format!("{q}&campaign_id=42")).await.ok();
    assert_eq!(
        v.series,
        vec![
            campaign_point(H, 42, View, 7, true, ch),
            campaign_point(H, 42, Click, 2, true, ch),
            campaign_point(H + 2 * M, 42, Click, 1, false, redis),
        ]
    );
    // Only after the boundary: ClickHouse not consulted.
    let v: CountsResponse = get(
        &st,
        &format!(
            "/v1/counts?event_type=click&from={}&to={}",
            H + M,
            H + 60 * M
        ),
    )
    .await
    .ok();
    assert_eq!(v.layers.batch.available, None);
    assert_eq!(v.series.len(), 2);
    let h: HealthResponse = get(&st, "/healthz").await.ok();
    assert_eq!(
        h,
        health(
            HealthStatus::Ok,
            &[(Store::Redis, "ok"), (Store::Clickhouse, "ok")]
        )
    );

    // Redis down: ClickHouse alone, boundary from source_checkpoints.
    let st = stores.state_at(DOWN, &ch_url, t);
    let started = Instant::now();
    let v: CountsResponse = get(&st, &q).await.ok();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        (v.boundary_ms, v.watermark_ms, v.updated_at_ms),
        (Some(H + 2 * M), None, None)
    );
    assert_eq!(v.as_of_ms, Some(H + 2 * M));
    assert!(v.degraded);
    assert_eq!(v.layers.speed.available, Some(false));
    let error = v.layers.speed.error.as_deref().unwrap();
    assert!(error.starts_with("redis: "), "{error}");
    assert_eq!(
        v.series,
        as_read(&vec![
            pt(H, View, 10, none, true, ch),
            pt(H, Click, 3, click_h, true, ch),
            pt(H + M, Click, 2, click_h1, true, ch),
        ])
    );
    let reply = get(&st, "/healthz").await;
    assert_eq!(reply.status, 503);
    let h: HealthResponse = reply.json();
    assert_eq!(h.status, HealthStatus::Degraded);
    assert!(h.stores[&Store::Redis].starts_with("down: "), "{h:?}");
    assert_eq!(h.stores[&Store::Clickhouse], "ok");

    // ClickHouse down: everything Redis still holds.
    let st = stores.state_at(&redis_url, CH_DOWN, t);
    let v: CountsResponse = get(&st, &q).await.ok();
    assert!(v.degraded);
    assert_eq!(v.layers.batch.available, Some(false));
    assert_eq!(v.layers.speed.windows, 4);
    assert_eq!(
        v.series,
        as_read(&vec![
            pt(H + 2 * M, View, 4, none, false, redis),
            pt(H, Click, 3, click_h, true, redis),
            pt(H + M, Click, 2, click_h1, true, redis),
            pt(H + 2 * M, Click, 1, click_h2, false, redis),
        ])
    );

    // Both down: 503.
    let st = stores.state_at(DOWN, CH_DOWN, t);
    get(&st, &q).await.error(503, ErrorCode::Unavailable);
}

/// Stores that accept connections but never answer: bounded by the timeout, not a hang.
#[tokio::test]
async fn hanging_stores_time_out() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let t = Duration::from_millis(300);
    let hanging_redis = RedisConfig {
        url: format!("redis://{addr}/"),
        ..RedisConfig::default()
    };
    let hanging_ch = ClickHouseConfig {
        url: format!("http://{addr}"),
        ..ClickHouseConfig::default()
    };
    let st = state(&hanging_redis, &hanging_ch, t);
    let started = Instant::now();
    let reply = get(&st, &format!("/v1/counts?from={H}&to={}", H + M)).await;
    let e = reply.error(503, ErrorCode::Unavailable);
    assert!(e.error.message.contains("timed out"), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(get(&st, "/healthz").await.status, 503);
    assert!(started.elapsed() < Duration::from_secs(3));

    // Redis hangs, ClickHouse answers: degraded, fast.
    let stores = counts_stores("qs_hang");
    let st = stores.state_at(&hanging_redis.url, &stores.ch.url, t);
    let started = Instant::now();
    let v: CountsResponse = get(&st, &format!("/v1/counts?from={H}&to={}", H + M))
        .await
        .ok();
    assert_eq!(v.layers.speed.available, Some(false));
    assert_eq!(v.series.len(), 2);
    assert!(started.elapsed() < Duration::from_secs(2));
    accept.abort();
}

/// The Redis connection recovers after Redis restarts (a private `redis-server`).
#[tokio::test]
async fn redis_connection_recovers_after_restart() {
    let mut server = PrivateRedis::start();
    let st = state(
        &RedisConfig {
            url: server.url(),
            ..RedisConfig::default()
        },
        &ClickHouseConfig {
            url: CH_DOWN.into(),
            ..ClickHouseConfig::default()
        },
        Duration::from_millis(500),
    );
    // ClickHouse is down: /healthz is a 503 whose body says how Redis is.
    let redis_ok = |reply: Reply| reply.json::<HealthResponse>().stores[&Store::Redis] == "ok";
    assert!(redis_ok(get(&st, "/healthz").await));
    server.stop();
    assert!(!redis_ok(get(&st, "/healthz").await));
    server.restart();
    wait_until_async(
        "the redis connection to recover",
        Duration::from_secs(10),
        || async { redis_ok(get(&st, "/healthz").await) },
    )
    .await;
}

/// What an answer from `source` as of `as_of_ms` carries (wall-clock fields cleared by
/// [`Reply::answer`]).
fn meta(as_of_ms: i64, source: Store) -> AnswerMeta {
    AnswerMeta {
        as_of_ms,
        updated_at_ms: None,
        freshness_ms: None,
        source,
    }
}

// ---- Engagement, similar users, recommendations: cache-aside over the real sinks ----

mod engagement {
    use super::*;
    use eddy_core::api::{
        CampaignJson, CampaignResponse, RecommendationsResponse, SimilarUsersResponse,
        TopCampaignsResponse,
    };
    use eddy_core::{Checkpoint, PartitionCheckpoint};
    use eddy_sinks::{
        Batch, CheckpointStore, ClickHouseCheckpoints, ClickHouseSink, EpochSink, RedisSink,
    };
    use eddy_testkit::fixtures::{
        batch, campaign_json, eng, nb, pane, rec, sim_batch, similar, similar_json, user_set,
    };

    /// A recommendation as the server answers it.
    fn json(r: &eddy_core::Recommendation) -> eddy_core::api::RecommendationJson {
        eddy_testkit::http::as_read(&eddy_core::api::RecommendationJson::from(r))
    }

    /// Writes `b` with both real sinks, as the pipeline does.
    fn write<B: Batch>(s: &Stores, b: &B)
    where
        RedisSink: EpochSink<B>,
        ClickHouseSink: EpochSink<B>,
    {
        RedisSink::connect(&s.redis).unwrap().write(b).unwrap();
        ClickHouseSink::connect(&s.ch).unwrap().write(b).unwrap();
    }

    fn redis_del(s: &Stores, keys: &[String]) {
        redis::cmd("DEL")
            .arg(keys)
            .exec(&mut redis_conn(&s.redis))
            .unwrap();
    }

    /// Asserts every answer about the fixture from `source` as of `as_of` (`fresh`: with an
    /// update time): each campaign of `top_list` and the top list (whole, and cut to 1 and 2),
    /// user 7's similar users (the default 3, and 2) and recommendations (`recs`, cut to the
    /// default 2 and to 1).
    async fn assert_answers(
        st: &AppState,
        fresh: bool,
        as_of: i64,
        source: Store,
        top_list: &[CampaignJson],
        recs: &[eddy_core::api::RecommendationJson],
    ) {
        let meta = meta(as_of, source);
        for c in top_list {
            let uri = format!("/v1/campaigns/{}", c.campaign_id);
            let campaign = c.clone();
            assert_eq!(
                get(st, &uri).await.answer::<CampaignResponse>(fresh),
                CampaignResponse { campaign, meta },
                "{uri}"
            );
        }
        let campaigns = top_list.to_vec();
        assert_eq!(
            get(st, "/v1/campaigns/top")
                .await
                .answer::<TopCampaignsResponse>(fresh),
            TopCampaignsResponse {
                k: 5,
                meta,
                campaigns
            }
        );
        for k in [1, 2] {
            let top: TopCampaignsResponse = get(st, &format!("/v1/campaigns/top?k={k}"))
                .await
                .answer(fresh);
            assert_eq!(top.campaigns, top_list[..k], "k={k}");
        }
        let similar = [
            similar_json(8, 2, 3),
            similar_json(9, 1, 4),
            similar_json(10, 1, 5),
        ];
        for (uri, k) in [("/v1/users/7/similar", 3), ("/v1/users/7/similar?k=2", 2)] {
            assert_eq!(
                get(st, uri).await.answer::<SimilarUsersResponse>(fresh),
                SimilarUsersResponse {
                    user_id: 7,
                    k,
                    meta,
                    similar: similar[..k].to_vec()
                },
                "{uri}"
            );
        }
        for (uri, k) in [
            ("/v1/users/7/recommendations", 2),
            ("/v1/users/7/recommendations?k=1", 1),
        ] {
            assert_eq!(
                get(st, uri).await.answer::<RecommendationsResponse>(fresh),
                RecommendationsResponse {
                    user_id: 7,
                    k,
                    meta,
                    recommendations: recs[..k.min(recs.len())].to_vec()
                },
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn engagement_reads_are_cache_aside() {
        let s = Stores::fresh("qs_engagement");
        let (redis_url, ch_url) = (s.redis.url.clone(), s.ch.url.clone());
        let p = s.redis.prefix.clone();
        let sliding = |b| eddy_core::CountsBatch {
            sliding_ms: 3 * M,
            ..b
        };

        // Epoch 1, watermark H+2m: panes H and H+1m final; the live engagement also holds
        // the open pane (campaign 42 has one more view there).
        let mut b1 = sliding(batch(1, H + 2 * M));
        b1.final_engagement = vec![
            pane(H, 42, 10, 2, 1, 5_500_000),
            pane(H, 43, 4, 0, 0, 0),
            pane(H + M, 42, 2, 1, 0, 500_000),
            pane(H + M, 45, 3, 1, 0, 0),
        ];
        let live = vec![
            eng(42, 13, 3, 1, 6_000_000),
            eng(45, 3, 1, 0, 0),
            eng(43, 4, 0, 0, 0),
        ];
        b1.engagement = live.clone();
        b1.top_campaigns = Some(live);
        write(&s, &b1);
        let mut s1 = sim_batch(1, H + 2 * M, 3 * M);
        s1.similar = vec![similar(
            7,
            vec![nb(8, 2, 3), nb(9, 1, 4), nb(10, 1, 5), nb(11, 1, 6)],
        )];
        // Recommendations are ranked at read time from these sets: 45 (from 8 and 9), 43 (from
        // 8); 46 (from 11) has no engagement; 42 is user 7's own.
        s1.campaigns = vec![
            user_set(7, vec![42]),
            user_set(8, vec![42, 43, 45]),
            user_set(9, vec![42, 45]),
            user_set(10, vec![42]),
            user_set(11, vec![42, 46]),
        ];
        write(&s, &s1);
        RedisSink::connect(&s.redis)
            .unwrap()
            .write_boundary(H + 2 * M)
            .unwrap();
        // Epoch 2, watermark H+3m: pane H+2m final (ClickHouse), checkpointed at H+3m. Redis's
        // boundary stays at H+2m, so the two boundaries can be told apart below.
        let mut b2 = sliding(batch(2, H + 3 * M));
        b2.final_engagement = vec![pane(H + 2 * M, 42, 1, 0, 0, 0)];
        write(&s, &b2);
        ClickHouseCheckpoints::connect(&s.ch)
            .unwrap()
            .save(&Checkpoint {
                state: None,
                topic: "events".into(),
                epoch: 2,
                watermark_ms: H + 3 * M,
                partitions: vec![PartitionCheckpoint {
                    partition: 0,
                    resume_offset: 0,
                    high_offset: 0,
                }],
            })
            .unwrap();

        // 1. Both up: Redis answers (the live values).
        let st = s.state();
        let r42 = campaign_json(42, 13, 3, 1, 6_000_000, 53.0);
        let r45 = campaign_json(45, 3, 1, 0, 0, 8.0);
        let r43 = campaign_json(43, 4, 0, 0, 0, 4.0);
        let r45_rec = json(&rec(45, 8.0, vec![nb(8, 2, 3), nb(9, 1, 4)]));
        let recs = [r45_rec.clone(), json(&rec(43, 4.0, vec![nb(8, 2, 3)]))];
        assert_answers(&st, true, H + 2 * M, Store::Redis, &[r42, r45, r43], &recs).await;
        for uri in [
            "/v1/campaigns/99",
            "/v1/users/99/similar",
            "/v1/users/99/recommendations",
        ] {
            get(&st, uri).await.error(404, ErrorCode::NotFound);
        }
        // ClickHouse down: cache hits still answer; a miss cannot be settled (503).
        let ch_down = s.state_at(&redis_url, CH_DOWN, Duration::from_secs(2));
        assert_eq!(
            get(&ch_down, "/v1/campaigns/42")
                .await
                .answer::<CampaignResponse>(true)
                .meta
                .source,
            Store::Redis
        );
        get(&ch_down, "/v1/campaigns/99")
            .await
            .error(503, ErrorCode::Unavailable);

        // 2. Redis misses: ClickHouse answers, at Redis's boundary H+2m (panes H and H+1m).
        redis_del(
            &s,
            &[
                keys::campaign(&p, 42),
                keys::campaign(&p, 43),
                keys::campaign(&p, 45),
                keys::top_campaigns(&p),
                keys::top_campaigns_as_of(&p),
                keys::user_similar(&p, 7),
                keys::user_campaigns(&p, 7),
                keys::user_campaigns(&p, 8),
            ],
        );
        let c42 = campaign_json(42, 12, 3, 1, 6_000_000, 52.0);
        let c45 = campaign_json(45, 3, 1, 0, 0, 8.0);
        let c43 = campaign_json(43, 4, 0, 0, 0, 4.0);
        let top = [c42, c45.clone(), c43];
        assert_answers(&st, true, H + 2 * M, Store::Clickhouse, &top, &recs).await;
        get(&st, "/v1/campaigns/99")
            .await
            .error(404, ErrorCode::NotFound);
        // Without a boundary in Redis: the latest checkpoint's (H+3m: panes H+1m and H+2m).
        redis_del(&s, &[keys::boundary(&p)]);
        let d42 = campaign_json(42, 3, 1, 0, 500_000, 8.0);
        assert_eq!(
            get(&st, "/v1/campaigns/42")
                .await
                .answer::<CampaignResponse>(true),
            CampaignResponse {
                campaign: d42.clone(),
                meta: meta(H + 3 * M, Store::Clickhouse)
            }
        );

        // 3. Redis unavailable: ClickHouse at the latest checkpoint, freshness unknown. Pane H
        // retired: campaign 43 left the window; 42 and 45 tie on score 8 (lower id first). The
        // similar users and sets written at H + 2M still hold at the boundary H + 3M, so 43 is
        // no longer recommended.
        let down = s.state_at(DOWN, &ch_url, Duration::from_secs(2));
        let top = [d42, c45];
        assert_answers(&down, false, H + 3 * M, Store::Clickhouse, &top, &[r45_rec]).await;
        get(&down, "/v1/campaigns/43")
            .await
            .error(404, ErrorCode::NotFound);

        // 4. User 7 loses both lists: Redis keys deleted, empty snapshots in ClickHouse: 404.
        write(&s, &sliding(batch(3, H + 4 * M)));
        let mut b3 = sim_batch(3, H + 4 * M, 3 * M);
        b3.similar = vec![similar(7, vec![])];
        b3.campaigns = vec![user_set(7, vec![])];
        write(&s, &b3);
        for st in [&st, &down] {
            for uri in ["/v1/users/7/similar", "/v1/users/7/recommendations"] {
                get(st, uri).await.error(404, ErrorCode::NotFound);
            }
        }

        // 5. Both down: 503.
        let both = s.state_at(DOWN, CH_DOWN, Duration::from_secs(2));
        for uri in [
            "/v1/campaigns/42",
            "/v1/campaigns/top",
            "/v1/users/7/similar",
            "/v1/users/7/recommendations",
        ] {
            let msg = get(&both, uri)
                .await
                .error(503, ErrorCode::Unavailable)
                .error
                .message;
            assert!(
                msg.contains("redis: ") && msg.contains("clickhouse: "),
                "{uri}: {msg}"
            );
        }
    }
}

// ---- granularity=hour: whole finalized hours from the hourly rollups, exact at the edges ----

mod hourly {
    use super::*;
    use eddy_core::event::micros_to_amount;
    use eddy_core::{
        CampaignWindowCount, Checkpoint, CountsBatch, PartitionCheckpoint, TypeWindowStats,
    };
    use eddy_sinks::{
        CheckpointStore, ClickHouseCheckpoints, ClickHouseSink, EpochSink, RedisSink,
    };
    use eddy_testkit::fixtures::{cw, tw};
    use std::collections::BTreeMap;

    const HOUR: i64 = 3_600_000;
    /// Minute windows from `FIRST` to `LAST`; those ending at or before the watermark `W` are
    /// final (and in ClickHouse); the batch/speed boundary `B` cuts the hour at `H + 2h`.
    const FIRST: i64 = H - 30 * M;
    const LAST: i64 = H + 2 * HOUR + 40 * M;
    const W: i64 = H + 2 * HOUR + 30 * M;
    const B: i64 = H + 2 * HOUR + 20 * M;

    /// Every window written: varied counts and amounts, some minutes without a type.
    fn windows() -> (Vec<TypeWindowStats>, Vec<CampaignWindowCount>) {
        let (mut types, mut campaigns) = (Vec::new(), Vec::new());
        for (i, start) in (FIRST..=LAST).step_by(M as usize).enumerate() {
            for (k, t) in EventType::ALL.into_iter().enumerate() {
                let (i, k) = (i as u64, k as u64);
                if (i + k) % 7 == 3 {
                    continue;
                }
                let count = 1 + (i * 7 + k * 13) % 11;
                let amounts = (t != View).then(|| {
                    let min = 250_000 * (1 + ((i + k) % 5) as i64);
                    let max = min + 1_000_000 * (i % 3) as i64;
                    (min + max + 10_000 * count as i64, min, max)
                });
                types.push(tw(
                    start,
                    t,
                    count,
                    amounts.map_or(0, |a| a.0),
                    amounts.map(|a| a.1),
                    amounts.map(|a| a.2),
                ));
                campaigns.push(cw(start, 42, t, count + 1));
            }
        }
        (types, campaigns)
    }

    /// The expected hourly series: the windows starting in `[from, to)` for which `keep`
    /// holds, summed per event type and hour, with the sources per hour.
    fn expected(
        types: &[TypeWindowStats],
        from: i64,
        to: i64,
        keep: impl Fn(i64) -> bool,
        horizon: i64,
        source: impl Fn(i64) -> RowSource,
    ) -> Vec<SeriesPoint> {
        // Per (type, hour): count, sum, min, max, all final.
        type Hour = (u64, i64, Option<i64>, Option<i64>, bool);
        let mut hours: BTreeMap<(EventType, i64), Hour> = BTreeMap::new();
        for r in types
            .iter()
            .filter(|r| (from..to).contains(&r.window_start_ms) && keep(r.window_start_ms))
        {
            let hour = r.window_start_ms.div_euclid(HOUR) * HOUR;
            let e = hours
                .entry((r.event_type, hour))
                .or_insert((0, 0, None, None, true));
            e.0 += r.count;
            e.1 += r.sum_micros;
            e.2 = match (e.2, r.min_micros) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            e.3 = e.3.max(r.max_micros);
            e.4 &= r.window_start_ms + M <= W;
        }
        let points: Vec<SeriesPoint> = hours
            .into_iter()
            .map(|((t, hour), (count, sum, min, max, fin))| SeriesPoint {
                window_start_ms: hour,
                window_end_ms: hour + HOUR,
                event_type: t,
                campaign_id: None,
                count,
                sum_amount: Some(micros_to_amount(sum)),
                min_amount: min.map(micros_to_amount),
                max_amount: max.map(micros_to_amount),
                is_final: fin && hour + HOUR <= horizon,
                source: source(hour),
            })
            .collect();
        as_read(&points)
    }

    #[tokio::test]
    async fn hourly_counts_read_rollups_and_stay_exact() {
        let s = Stores::fresh("qs_hourly");
        let st = s.state();

        // The windows as the pipeline writes them: final ones to both stores (twice: a
        // replay), open ones to Redis; then one final minute rewritten (a replay with new
        // values: the latest version counts, in the rollups too).
        let (mut types, campaigns) = windows();
        let is_final = |start: i64| start + M <= W;
        let batch = |epoch, types: &[TypeWindowStats], campaigns: &[CampaignWindowCount]| {
            let (ft, ot): (Vec<_>, Vec<_>) = types
                .iter()
                .cloned()
                .partition(|r| is_final(r.window_start_ms));
            let (fc, oc): (Vec<_>, Vec<_>) = campaigns
                .iter()
                .cloned()
                .partition(|r| is_final(r.window_start_ms));
            CountsBatch {
                final_types: ft,
                open_types: ot,
                final_campaigns: fc,
                open_campaigns: oc,
                ..eddy_testkit::fixtures::batch(epoch, W)
            }
        };
        let mut redis_sink = RedisSink::connect(&s.redis).unwrap();
        let mut ch_sink = ClickHouseSink::connect(&s.ch).unwrap();
        let b1 = batch(1, &types, &campaigns);
        for _ in 0..2 {
            redis_sink.write(&b1).unwrap();
            ch_sink.write(&b1).unwrap();
        }
        let rewritten = types
            .iter_mut()
            .find(|r| r.window_start_ms == H + 10 * M && r.event_type == Click)
            .unwrap();
        rewritten.count += 100;
        rewritten.max_micros = Some(99_000_000);
        rewritten.sum_micros += 99_000_000;
        let b2 = batch(2, std::slice::from_ref(rewritten), &[]);
        redis_sink.write(&b2).unwrap();
        ch_sink.write(&b2).unwrap();
        redis_sink.write_boundary(B).unwrap();
        ClickHouseCheckpoints::connect(&s.ch)
            .unwrap()
            .save(&Checkpoint {
                state: None,
                topic: "events".into(),
                epoch: 2,
                watermark_ms: B,
                partitions: vec![PartitionCheckpoint {
                    partition: 0,
                    resume_offset: 0,
                    high_offset: 0,
                }],
            })
            .unwrap();

        // From mid-hour H-1h to mid-hour H+2h: a leading partial hour, whole hours H and
        // H+1h (rollups), and the hour cut by the boundary (minutes from ClickHouse before B,
        // from Redis after).
        let (from, to) = (FIRST + 7 * M, LAST);
        let q =
            |g: &str, extra: &str| format!("/v1/counts?granularity={g}&from={from}&to={to}{extra}");
        let counts =
            |st: AppState, uri: String| async move { get(&st, &uri).await.ok::<CountsResponse>() };
        let hourly = counts(st.clone(), q("hour", "")).await;
        let source = |hour: i64| {
            if hour + HOUR <= B {
                RowSource::Clickhouse
            } else {
                RowSource::Mixed
            }
        };
        assert_eq!(
            hourly.series,
            expected(&types, from, to, |_| true, W, source)
        );
        // The same totals as the minutes, and the same native windows per layer.
        let minutes = counts(st.clone(), q("minute", "")).await;
        assert_eq!(hourly.layers, minutes.layers);
        let batch_windows = types
            .iter()
            .filter(|r| (from..to).contains(&r.window_start_ms) && r.window_start_ms + M <= B)
            .count();
        assert_eq!(hourly.layers.batch.windows, batch_windows);

        // One campaign, one type.
        let v = counts(st.clone(), q("hour", "&campaign_id=42&event_type=click")).await;
        let mut want: BTreeMap<i64, u64> = BTreeMap::new();
        for r in campaigns
            .iter()
            .filter(|r| r.event_type == Click && (from..to).contains(&r.window_start_ms))
        {
            *want
                .entry(r.window_start_ms.div_euclid(HOUR) * HOUR)
                .or_default() += r.count;
        }
        let got: BTreeMap<i64, u64> = v
            .series
            .iter()
            .map(|p| (p.window_start_ms, p.count))
            .collect();
        assert_eq!(got, want, "{v:?}");
        assert!(v.series.iter().all(|p| p.campaign_id == Some(42)));

        // Redis down: ClickHouse alone (every final window it holds), boundary B from the
        // checkpoint.
        let down = s.state_at(DOWN, &s.ch.url, Duration::from_secs(2));
        let v = counts(down, q("hour", "")).await;
        assert_eq!(
            v.series,
            expected(&types, from, to, is_final, B, |_| RowSource::Clickhouse)
        );

        // The whole hours are read from the rollups: a minute only the rollup holds (written
        // into it directly) shows in a fresh backend's hourly answer, not in the minutes, nor
        // in the answer of a backend that cached the hour.
        ch_exec(
            &s.ch,
            &format!(
                "INSERT INTO {db}.type_windows_hourly SELECT toInt64({hour}), 'view', \
                 groupUniqArrayState(tuple(toInt64({ws}), toUInt64(1), toUInt64(1000), \
                 toInt64(0), CAST(NULL AS Nullable(Int64)), CAST(NULL AS Nullable(Int64))))",
                db = s.ch.database,
                hour = H + HOUR,
                ws = H + HOUR + 30 * M + 1,
            ),
        );
        let view_at = |v: &CountsResponse, hour: i64| {
            v.series
                .iter()
                .find(|p| p.event_type == View && p.window_start_ms == hour)
                .map(|p| p.count)
        };
        let before = view_at(&hourly, H + HOUR).unwrap();
        let fresh = counts(s.state(), q("hour", "")).await;
        assert_eq!(view_at(&fresh, H + HOUR), Some(before + 1000));
        let cached = counts(st.clone(), q("hour", "")).await;
        assert_eq!(cached.series, hourly.series);
        let again = counts(s.state(), q("minute", "")).await;
        assert_eq!(again.series, minutes.series);
    }
}
