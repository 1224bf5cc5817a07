//! [`LambdaBackend`] against real stores: Redis and ClickHouse started by
//! `scripts/services up redis clickhouse` (override with `EDDY_TEST_REDIS_URL` and
//! `EDDY_TEST_CLICKHOUSE_URL`). Uses its own ClickHouse database (`eddy_qs_<pid>`, dropped at
//! the end) and Redis key prefix; the tests sharing them hold [`SHARED`].

use axum::body::Body;
use axum::http::{Request, StatusCode};
use eddy_core::EventType::{Click, View};
use eddy_core::Metrics;
use eddy_core::config::{ClickHouseConfig, RedisConfig};
use eddy_query_server::{AppState, LambdaBackend, ServerQueryLimits, app};
use eddy_storage::keys;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const H: i64 = 1_699_999_200_000;
const M: i64 = 60_000;

/// Held by the tests that set up and drop the shared database and key prefix.
static SHARED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts Redis and ClickHouse once per test binary.
fn services() {
    eddy_testkit::services(&["redis", "clickhouse"]);
}

/// A store URL: the variable if set, else the loopback service started by the script.
fn env(name: &str) -> String {
    if let Ok(v) = std::env::var(name) {
        return v;
    }
    services();
    match name {
        "EDDY_TEST_REDIS_URL" => "redis://127.0.0.1:6379/".into(),
        "EDDY_TEST_CLICKHOUSE_URL" => "http://127.0.0.1:8123".into(),
        _ => panic!("unknown store variable {name}"),
    }
}

/// Polls `pred` every 20 ms until it holds, panicking with `what` after `limit`.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut pred: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while !pred().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tick.tick().await;
    }
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

fn names() -> (String, String) {
    let id = std::process::id();
    (format!("eddy_qs_{id}"), format!("qs{id}"))
}

fn cfgs(redis_url: &str, ch_url: &str) -> (RedisConfig, ClickHouseConfig) {
    let (db, prefix) = names();
    (
        RedisConfig {
            url: redis_url.into(),
            prefix,
            window_ttl_secs: 7200,
        },
        ClickHouseConfig {
            url: ch_url.into(),
            database: db,
            ..Default::default()
        },
    )
}

/// A client for the test's ClickHouse server (no database set).
fn ch_server() -> clickhouse::Client {
    eddy_storage::clickhouse_server(&ClickHouseConfig {
        url: env("EDDY_TEST_CLICKHOUSE_URL"),
        ..Default::default()
    })
}

/// An async connection to the test's Redis.
async fn redis_async() -> redis::aio::MultiplexedConnection {
    let cfg = RedisConfig {
        url: env("EDDY_TEST_REDIS_URL"),
        ..Default::default()
    };
    eddy_storage::redis_client(&cfg)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Drops and re-creates database `cfg.database` with the schema of `clickhouse/schema`.
async fn fresh_database(cfg: &ClickHouseConfig) {
    ch_server()
        .query(&format!("DROP DATABASE IF EXISTS {}", cfg.database))
        .execute()
        .await
        .unwrap();
    let applied = eddy_storage::apply_schema(cfg, &eddy_storage::embedded_schema())
        .await
        .unwrap();
    assert_eq!(applied.len(), eddy_storage::EMBEDDED_SCHEMA.len());
}

async fn setup() {
    let (db, p) = names();
    let (_, ch_cfg) = cfgs(
        &env("EDDY_TEST_REDIS_URL"),
        &env("EDDY_TEST_CLICKHOUSE_URL"),
    );
    fresh_database(&ch_cfg).await;
    let ch = ch_server();
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
        ch.query(&sql)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    let mut r = redis_async().await;
    let now = eddy_core::now_ms();
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg(keys::boundary(&p)).arg(H + M);
    pipe.cmd("SET").arg(keys::watermark(&p)).arg(H + 3 * M);
    pipe.cmd("SET").arg(keys::as_of(&p)).arg(now);
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
            .arg(keys::type_windows(&p, t))
            .arg(start)
            .arg(start);
        let mut c = redis::cmd("HSET");
        c.arg(keys::type_window(&p, t, start));
        for (k, v) in fields {
            c.arg(k).arg(v);
        }
        c.arg("epoch").arg(7);
        pipe.add_command(c);
    }
    // Index entry whose hash expired: skipped.
    pipe.cmd("ZADD")
        .arg(keys::type_windows(&p, Click))
        .arg(H + 5 * M)
        .arg(H + 5 * M);
    pipe.cmd("ZADD")
        .arg(keys::campaign_windows(&p, 42, Click))
        .arg(H + 2 * M)
        .arg(H + 2 * M);
    pipe.cmd("HSET")
        .arg(keys::campaign_window(&p, 42, Click, H + 2 * M))
        .arg("count")
        .arg(1)
        .arg("final")
        .arg(0);
    let _: () = pipe.query_async(&mut r).await.unwrap();
}

async fn teardown() {
    let (db, p) = names();
    drop_all(&db, &p).await;
}

/// Drops database `db` and deletes every Redis key under prefix `p`.
async fn drop_all(db: &str, p: &str) {
    ch_server()
        .query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await
        .unwrap();
    let mut r = redis_async().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}:*"))
        .query_async(&mut r)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut r)
            .await
            .unwrap();
    }
}

fn state(redis_url: &str, ch_url: &str, timeout: Duration) -> AppState {
    let (r, c) = cfgs(redis_url, ch_url);
    let backend = LambdaBackend::new(&r, &c).unwrap().with_timeout(timeout);
    AppState::new(
        Arc::new(backend),
        Metrics::new(),
        ServerQueryLimits {
            max_range_ms: 24 * 3_600_000,
            window_ms: M,
            ..ServerQueryLimits::default()
        },
    )
}

async fn get(st: &AppState, uri: &str) -> (StatusCode, Value) {
    let resp = app(st.clone())
        .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_str(std::str::from_utf8(&body).unwrap()).unwrap(),
    )
}

fn pt(
    start: i64,
    t: &str,
    count: u64,
    a: (f64, Option<f64>, Option<f64>),
    fin: bool,
    src: &str,
) -> Value {
    json!({
        "window_start_ms": start, "window_end_ms": start + M, "event_type": t,
        "campaign_id": null, "count": count, "sum_amount": a.0, "min_amount": a.1,
        "max_amount": a.2, "final": fin, "source": src,
    })
}

fn cpt(start: i64, t: &str, count: u64, fin: bool, src: &str) -> Value {
    json!({
        "window_start_ms": start, "window_end_ms": start + M, "event_type": t,
        "campaign_id": 42, "count": count, "sum_amount": null, "min_amount": null,
        "max_amount": null, "final": fin, "source": src,
    })
}

const DOWN: &str = "redis://127.0.0.1:1/";
const CH_DOWN: &str = "http://127.0.0.1:1";

#[tokio::test]
async fn lambda_backend_against_real_stores() {
    let _shared = SHARED.lock().await;
    setup().await;
    let redis_url = env("EDDY_TEST_REDIS_URL");
    let ch_url = env("EDDY_TEST_CLICKHOUSE_URL");
    let q = format!("/v1/counts?from={H}&to={}", H + 60 * M);
    let t = Duration::from_secs(2);
    let click_h = (1.5, Some(0.25), Some(1.0));
    let click_h1 = (2.0, Some(0.5), Some(1.5));
    let click_h2 = (0.75, Some(0.75), Some(0.75));
    let none = (0.0, None, None);

    // Both up: ClickHouse up to the boundary (H+1m), Redis after it.
    let st = state(&redis_url, &ch_url, t);
    let (s, v) = get(&st, &q).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["boundary_ms"].as_i64(), v["watermark_ms"].as_i64()),
        (Some(H + M), Some(H + 3 * M))
    );
    assert!(v["freshness_ms"].as_i64().unwrap() >= 0);
    assert_eq!(v["as_of_ms"].as_i64(), Some(H + 3 * M));
    assert_eq!(v["degraded"], false);
    assert_eq!(
        v["layers"],
        json!({"batch": {"source": "clickhouse", "available": true, "windows": 2, "error": null},
               "speed": {"source": "redis", "available": true, "windows": 3, "error": null}})
    );
    assert_eq!(
        v["series"],
        json!([
            pt(H, "view", 10, none, true, "clickhouse"),
            pt(H + 2 * M, "view", 4, none, false, "redis"),
            pt(H, "click", 3, click_h, true, "clickhouse"),
            pt(H + M, "click", 2, click_h1, true, "redis"),
            pt(H + 2 * M, "click", 1, click_h2, false, "redis"),
        ])
    );
    let (s, v) = get(&st, &format!("{q}&campaign_id=42")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["series"],
        json!([
            cpt(H, "view", 7, true, "clickhouse"),
            cpt(H, "click", 2, true, "clickhouse"),
            cpt(H + 2 * M, "click", 1, false, "redis"),
        ])
    );
    // Only after the boundary: ClickHouse not consulted.
    let (_, v) = get(
        &st,
        &format!(
            "/v1/counts?event_type=click&from={}&to={}",
            H + M,
            H + 60 * M
        ),
    )
    .await;
    assert_eq!(v["layers"]["batch"]["available"], Value::Null);
    assert_eq!(v["series"].as_array().unwrap().len(), 2);
    let (s, v) = get(&st, "/healthz").await;
    assert_eq!(
        (s, v),
        (
            StatusCode::OK,
            json!({"status": "ok", "stores": {"redis": "ok", "clickhouse": "ok"}})
        )
    );

    // Redis down: ClickHouse alone, boundary from source_checkpoints.
    let st = state(DOWN, &ch_url, t);
    let started = Instant::now();
    let (s, v) = get(&st, &q).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["boundary_ms"].as_i64(),
            &v["watermark_ms"],
            &v["updated_at_ms"]
        ),
        (Some(H + 2 * M), &Value::Null, &Value::Null)
    );
    assert_eq!(v["as_of_ms"].as_i64(), Some(H + 2 * M));
    assert_eq!(v["degraded"], true);
    assert_eq!(v["layers"]["speed"]["available"], false);
    assert!(
        v["layers"]["speed"]["error"]
            .as_str()
            .unwrap()
            .starts_with("redis: ")
    );
    assert_eq!(
        v["series"],
        json!([
            pt(H, "view", 10, none, true, "clickhouse"),
            pt(H, "click", 3, click_h, true, "clickhouse"),
            pt(H + M, "click", 2, click_h1, true, "clickhouse"),
        ])
    );
    let (s, v) = get(&st, "/healthz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        v["stores"]["redis"].as_str().unwrap().starts_with("down: "),
        "{v}"
    );
    assert_eq!(v["stores"]["clickhouse"], "ok");

    // ClickHouse down: everything Redis still holds.
    let st = state(&redis_url, CH_DOWN, t);
    let (s, v) = get(&st, &q).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["degraded"], true);
    assert_eq!(v["layers"]["batch"]["available"], false);
    assert_eq!(v["layers"]["speed"]["windows"], 4);
    assert_eq!(
        v["series"],
        json!([
            pt(H + 2 * M, "view", 4, none, false, "redis"),
            pt(H, "click", 3, click_h, true, "redis"),
            pt(H + M, "click", 2, click_h1, true, "redis"),
            pt(H + 2 * M, "click", 1, click_h2, false, "redis"),
        ])
    );

    // Both down: 503.
    let st = state(DOWN, CH_DOWN, t);
    let (s, v) = get(&st, &q).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "unavailable");

    teardown().await;
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
    let st = state(&format!("redis://{addr}/"), &format!("http://{addr}"), t);
    let started = Instant::now();
    let (s, v) = get(&st, &format!("/v1/counts?from={H}&to={}", H + M)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{v}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let (s, _) = get(&st, "/healthz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(3));

    // Redis hangs, ClickHouse answers: degraded, fast.
    let _shared = SHARED.lock().await;
    setup().await;
    let st = state(
        &format!("redis://{addr}/"),
        &env("EDDY_TEST_CLICKHOUSE_URL"),
        t,
    );
    let started = Instant::now();
    let (s, v) = get(&st, &format!("/v1/counts?from={H}&to={}", H + M)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["layers"]["speed"]["available"], false);
    assert_eq!(v["series"].as_array().unwrap().len(), 2);
    assert!(started.elapsed() < Duration::from_secs(2));
    teardown().await;
    accept.abort();
}

/// The Redis connection recovers after Redis restarts (spawns `redis-server` on port 6391).
#[tokio::test]
async fn redis_connection_recovers_after_restart() {
    let start = || {
        std::process::Command::new("redis-server")
            .args(["--port", "6391", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server")
    };
    services();
    let mut server = start();
    wait_until("redis-server on 6391", Duration::from_secs(10), || {
        port_open(6391)
    })
    .await;
    let st = state(
        "redis://127.0.0.1:6391/",
        CH_DOWN,
        Duration::from_millis(500),
    );
    let healthy = |v: &Value| v["stores"]["redis"] == "ok";
    let (_, v) = get(&st, "/healthz").await;
    assert!(healthy(&v), "{v}");
    server.kill().unwrap();
    server.wait().unwrap();
    let (_, v) = get(&st, "/healthz").await;
    assert!(!healthy(&v), "{v}");
    let mut server = start();
    wait_until(
        "the redis connection to recover",
        Duration::from_secs(10),
        || async { healthy(&get(&st, "/healthz").await.1) },
    )
    .await;
    server.kill().unwrap();
    server.wait().unwrap();
}

// ---- Engagement, similar users, recommendations: cache-aside over the real sinks ----

mod engagement {
    use super::*;
    use eddy_core::{
        CampaignEngagement, Checkpoint, CountsBatch, Neighbor, PaneEngagement, PartitionCheckpoint,
        Recommendation, Score, SimilarUsers, SimilarityBatch, UserRecommendations, Weights,
        recommendation_score,
    };
    use eddy_sinks::{
        Batch, CheckpointStore, ClickHouseCheckpoints, ClickHouseSink, EpochSink, RedisSink,
    };

    fn names() -> (String, String) {
        let id = std::process::id();
        (format!("eddy_qse_{id}"), format!("qse{id}"))
    }

    fn cfgs(redis_url: &str, ch_url: &str) -> (RedisConfig, ClickHouseConfig) {
        let (db, prefix) = names();
        (
            RedisConfig {
                url: redis_url.into(),
                prefix,
                window_ttl_secs: 7200,
            },
            ClickHouseConfig {
                url: ch_url.into(),
                database: db,
                ..Default::default()
            },
        )
    }

    fn state(redis_url: &str, ch_url: &str) -> AppState {
        let (r, c) = cfgs(redis_url, ch_url);
        let backend = LambdaBackend::new(&r, &c)
            .unwrap()
            .with_timeout(Duration::from_secs(2));
        AppState::new(
            Arc::new(backend),
            Metrics::new(),
            ServerQueryLimits {
                max_range_ms: 24 * 3_600_000,
                window_ms: M,
                sliding_ms: 3 * M,
                weights: Weights::default(),
                top_k: 5,
                similar_k: 3,
                recommendations: 2,
            },
        )
    }

    async fn redis_del(keys: &[String]) {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut redis_async().await)
            .await
            .unwrap();
    }

    async fn clean() {
        let (db, p) = names();
        drop_all(&db, &p).await;
    }

    fn eng(id: u64, views: u64, clicks: u64, conversions: u64, revenue: i64) -> CampaignEngagement {
        CampaignEngagement {
            campaign_id: id,
            views,
            clicks,
            conversions,
            revenue_micros: revenue,
            score: Weights::default().score(views, clicks, conversions),
        }
    }

    fn pane(
        start: i64,
        id: u64,
        views: u64,
        clicks: u64,
        conv: u64,
        revenue: i64,
    ) -> PaneEngagement {
        PaneEngagement {
            window_start_ms: start,
            campaign_id: id,
            views,
            clicks,
            conversions: conv,
            revenue_micros: revenue,
        }
    }

    fn nb(user_id: u64, shared: u32, union: u32) -> Neighbor {
        Neighbor {
            user_id,
            shared,
            union,
        }
    }

    fn rec(campaign_id: u64, campaign_score: f64, because: Vec<Neighbor>) -> Recommendation {
        Recommendation {
            campaign_id,
            score: recommendation_score(&because, Score(campaign_score)),
            campaign_score: Score(campaign_score),
            because,
        }
    }

    fn batch(epoch: u64, watermark_ms: i64) -> CountsBatch {
        CountsBatch {
            epoch,
            watermark_ms,
            window_size_ms: M,
            sliding_ms: 3 * M,
            ..Default::default()
        }
    }

    /// A slow-path batch of `epoch`, stamped `as_of_ms`.
    fn similarity(epoch: u64, as_of_ms: i64) -> SimilarityBatch {
        SimilarityBatch {
            epoch,
            as_of_ms,
            sliding_ms: 3 * M,
            ..Default::default()
        }
    }

    /// Writes `b` with both real sinks, as the pipeline does.
    fn write<B: Batch>(cfg: &(RedisConfig, ClickHouseConfig), b: &B)
    where
        RedisSink: EpochSink<B>,
        ClickHouseSink: EpochSink<B>,
    {
        RedisSink::connect(&cfg.0).unwrap().write(b).unwrap();
        ClickHouseSink::connect(&cfg.1).unwrap().write(b).unwrap();
    }

    /// GETs `uri` expecting `status`; checks `freshness_ms` is set (`fresh`) or null, and strips it.
    async fn get_ok(st: &AppState, uri: &str, fresh: bool) -> Value {
        let (s, mut v) = get(st, uri).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {v}");
        if fresh {
            let f = v["freshness_ms"]
                .as_i64()
                .unwrap_or_else(|| panic!("{uri}: {v}"));
            assert!((0..60_000).contains(&f), "{uri}: {v}");
        } else {
            assert_eq!(v["freshness_ms"], Value::Null, "{uri}: {v}");
        }
        assert_eq!(v["updated_at_ms"].is_null(), !fresh, "{uri}: {v}");
        v.as_object_mut().unwrap().remove("updated_at_ms");
        v.as_object_mut().unwrap().remove("freshness_ms");
        v
    }

    /// `v` as the tests read it back: serde_json's default float parsing may differ from the
    /// exact value in the last bit, so expected values go through the same text round trip.
    fn as_read(v: Value) -> Value {
        serde_json::from_str(&v.to_string()).unwrap()
    }

    fn campaign(id: u64, v: u64, c: u64, cv: u64, revenue_micros: i64, score: f64) -> Value {
        let ratio = |a: u64, b: u64| {
            if b == 0 {
                Value::Null
            } else {
                json!(a as f64 / b as f64)
            }
        };
        as_read(json!({
            "campaign_id": id, "views": v, "clicks": c, "conversions": cv,
            "revenue": revenue_micros as f64 / 1e6, "revenue_micros": revenue_micros,
            "ctr": ratio(c, v), "conversion_rate": ratio(cv, c), "score": score,
        }))
    }

    fn with(mut v: Value, as_of: i64, source: &str) -> Value {
        v["as_of_ms"] = json!(as_of);
        v["source"] = json!(source);
        v
    }

    fn sim(user_id: u64, shared: u32, union: u32) -> Value {
        as_read(
            json!({"user_id": user_id, "jaccard": shared as f64 / union as f64,
               "shared": shared, "union": union}),
        )
    }

    fn recs_json() -> Value {
        json!([
            {"campaign_id": 45, "score": 6.0, "campaign_score": 8.0,
             "because": [{"user_id": 8, "jaccard": 0.5}, {"user_id": 9, "jaccard": 0.25}]},
            {"campaign_id": 43, "score": 2.0, "campaign_score": 4.0,
             "because": [{"user_id": 8, "jaccard": 0.5}]},
        ])
    }

    async fn status(st: &AppState, uri: &str) -> (StatusCode, String) {
        let (s, v) = get(st, uri).await;
        (s, v["error"]["code"].as_str().unwrap_or("").to_owned())
    }

    #[tokio::test]
    async fn engagement_reads_are_cache_aside() {
        let redis_url = env("EDDY_TEST_REDIS_URL");
        let ch_url = env("EDDY_TEST_CLICKHOUSE_URL");
        clean().await;
        let cfg = cfgs(&redis_url, &ch_url);
        let p = cfg.0.prefix.clone();
        fresh_database(&cfg.1).await;

        // Epoch 1, watermark H+2m: panes H and H+1m final; the live engagement also holds
        // the open pane (campaign 42 has one more view there).
        let mut b1 = batch(1, H + 2 * M);
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
        write(&cfg, &b1);
        let mut s1 = similarity(1, H + 2 * M);
        s1.similar = vec![SimilarUsers {
            user_id: 7,
            neighbors: vec![nb(8, 2, 3), nb(9, 1, 4), nb(10, 1, 5), nb(11, 1, 6)],
        }];
        s1.recommendations = vec![UserRecommendations {
            user_id: 7,
            items: vec![
                rec(45, 8.0, vec![nb(8, 1, 2), nb(9, 1, 4)]),
                rec(43, 4.0, vec![nb(8, 1, 2)]),
                rec(46, 1.0, vec![nb(9, 1, 4)]),
            ],
        }];
        write(&cfg, &s1);
        RedisSink::connect(&cfg.0)
            .unwrap()
            .write_boundary(H + 2 * M)
            .unwrap();
        // Epoch 2, watermark H+3m: pane H+2m final (ClickHouse), checkpointed at H+3m. Redis's
        // boundary stays at H+2m, so the two boundaries can be told apart below.
        let mut b2 = batch(2, H + 3 * M);
        b2.final_engagement = vec![pane(H + 2 * M, 42, 1, 0, 0, 0)];
        write(&cfg, &b2);
        ClickHouseCheckpoints::connect(&cfg.1)
            .unwrap()
            .save(&Checkpoint {
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
        let st = state(&redis_url, &ch_url);
        let r42 = campaign(42, 13, 3, 1, 6_000_000, 53.0);
        let r45 = campaign(45, 3, 1, 0, 0, 8.0);
        let r43 = campaign(43, 4, 0, 0, 0, 4.0);
        assert_eq!(
            get_ok(&st, "/v1/campaigns/42", true).await,
            with(r42.clone(), H + 2 * M, "redis")
        );
        assert_eq!(
            get_ok(&st, "/v1/campaigns/top", true).await,
            json!({"k": 5, "as_of_ms": H + 2 * M, "source": "redis",
                   "campaigns": [r42.clone(), r45.clone(), r43.clone()]})
        );
        assert_eq!(
            get_ok(&st, "/v1/campaigns/top?k=2", true).await["campaigns"],
            json!([r42.clone(), r45.clone()])
        );
        assert_eq!(
            get_ok(&st, "/v1/users/7/similar", true).await,
            json!({"user_id": 7, "k": 3, "as_of_ms": H + 2 * M, "source": "redis",
                   "similar": [sim(8, 2, 3), sim(9, 1, 4), sim(10, 1, 5)]})
        );
        assert_eq!(
            get_ok(&st, "/v1/users/7/recommendations", true).await,
            json!({"user_id": 7, "k": 2, "as_of_ms": H + 2 * M, "source": "redis",
                   "recommendations": recs_json()})
        );
        for uri in [
            "/v1/campaigns/99",
            "/v1/users/99/similar",
            "/v1/users/99/recommendations",
        ] {
            assert_eq!(
                status(&st, uri).await,
                (StatusCode::NOT_FOUND, "not_found".into()),
                "{uri}"
            );
        }
        // ClickHouse down: cache hits still answer; a miss cannot be settled (503).
        let ch_down = state(&redis_url, CH_DOWN);
        assert_eq!(
            get_ok(&ch_down, "/v1/campaigns/42", true).await["source"],
            "redis"
        );
        assert_eq!(
            status(&ch_down, "/v1/campaigns/99").await,
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into())
        );

        // 2. Redis misses: ClickHouse answers, at Redis's boundary H+2m (panes H and H+1m).
        redis_del(&[
            keys::campaign(&p, 42),
            keys::campaign(&p, 43),
            keys::campaign(&p, 45),
            keys::top_campaigns(&p),
            keys::top_campaigns_as_of(&p),
            keys::user_similar(&p, 7),
            keys::user_recs(&p, 7),
        ])
        .await;
        let c42 = campaign(42, 12, 3, 1, 6_000_000, 52.0);
        let c45 = campaign(45, 3, 1, 0, 0, 8.0);
        let c43 = campaign(43, 4, 0, 0, 0, 4.0);
        assert_eq!(
            get_ok(&st, "/v1/campaigns/42", true).await,
            with(c42.clone(), H + 2 * M, "clickhouse")
        );
        assert_eq!(
            get_ok(&st, "/v1/campaigns/43", true).await,
            with(c43.clone(), H + 2 * M, "clickhouse")
        );
        assert_eq!(
            get_ok(&st, "/v1/campaigns/top", true).await,
            json!({"k": 5, "as_of_ms": H + 2 * M, "source": "clickhouse",
                   "campaigns": [c42.clone(), c45.clone(), c43.clone()]})
        );
        assert_eq!(
            get_ok(&st, "/v1/campaigns/top?k=1", true).await["campaigns"],
            json!([c42.clone()])
        );
        assert_eq!(
            get_ok(&st, "/v1/users/7/similar?k=2", true).await,
            json!({"user_id": 7, "k": 2, "as_of_ms": H + 2 * M, "source": "clickhouse",
                   "similar": [sim(8, 2, 3), sim(9, 1, 4)]})
        );
        assert_eq!(
            get_ok(&st, "/v1/users/7/recommendations", true).await,
            json!({"user_id": 7, "k": 2, "as_of_ms": H + 2 * M, "source": "clickhouse",
                   "recommendations": recs_json()})
        );
        assert_eq!(
            status(&st, "/v1/campaigns/99").await,
            (StatusCode::NOT_FOUND, "not_found".into())
        );
        // Without a boundary in Redis: the latest checkpoint's (H+3m: panes H+1m and H+2m).
        redis_del(&[keys::boundary(&p)]).await;
        let d42 = campaign(42, 3, 1, 0, 500_000, 8.0);
        assert_eq!(
            get_ok(&st, "/v1/campaigns/42", true).await,
            with(d42.clone(), H + 3 * M, "clickhouse")
        );

        // 3. Redis unavailable: ClickHouse at the latest checkpoint, freshness unknown.
        let down = state(DOWN, &ch_url);
        assert_eq!(
            get_ok(&down, "/v1/campaigns/42", false).await,
            with(d42.clone(), H + 3 * M, "clickhouse")
        );
        // Pane H retired: campaign 43 left the window; 42 and 45 tie on score 8 (lower id first).
        assert_eq!(
            status(&down, "/v1/campaigns/43").await,
            (StatusCode::NOT_FOUND, "not_found".into())
        );
        assert_eq!(
            get_ok(&down, "/v1/campaigns/top", false).await,
            json!({"k": 5, "as_of_ms": H + 3 * M, "source": "clickhouse",
                   "campaigns": [d42, c45]})
        );
        assert_eq!(
            get_ok(&down, "/v1/users/7/similar", false).await,
            // The snapshot written at H + 2M still holds at the boundary H + 3M.
            json!({"user_id": 7, "k": 3, "as_of_ms": H + 3 * M, "source": "clickhouse",
                   "similar": [sim(8, 2, 3), sim(9, 1, 4), sim(10, 1, 5)]})
        );
        assert_eq!(
            get_ok(&down, "/v1/users/7/recommendations?k=1", false).await["recommendations"],
            json!([recs_json()[0]])
        );

        // 4. User 7 loses both lists: Redis keys deleted, empty snapshots in ClickHouse: 404.
        write(&cfg, &batch(3, H + 4 * M));
        let mut b3 = similarity(3, H + 4 * M);
        b3.similar = vec![SimilarUsers {
            user_id: 7,
            neighbors: vec![],
        }];
        b3.recommendations = vec![UserRecommendations {
            user_id: 7,
            items: vec![],
        }];
        write(&cfg, &b3);
        for st in [&st, &down] {
            for uri in ["/v1/users/7/similar", "/v1/users/7/recommendations"] {
                assert_eq!(
                    status(st, uri).await,
                    (StatusCode::NOT_FOUND, "not_found".into()),
                    "{uri}"
                );
            }
        }

        // 5. Both down: 503.
        let both = state(DOWN, CH_DOWN);
        for uri in [
            "/v1/campaigns/42",
            "/v1/campaigns/top",
            "/v1/users/7/similar",
            "/v1/users/7/recommendations",
        ] {
            let (s, v) = get(&both, uri).await;
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {v}");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(
                msg.contains("redis: ") && msg.contains("clickhouse: "),
                "{uri}: {msg}"
            );
        }
        clean().await;
    }
}

// ---- granularity=hour: whole finalized hours from the hourly rollups, exact at the edges ----

mod hourly {
    use super::*;
    use eddy_core::event::micros_to_amount;
    use eddy_core::{
        CampaignWindowCount, Checkpoint, CountsBatch, EventType, PartitionCheckpoint,
        TypeWindowStats,
    };
    use eddy_sinks::{
        CheckpointStore, ClickHouseCheckpoints, ClickHouseSink, EpochSink, RedisSink,
    };
    use std::collections::BTreeMap;

    const HOUR: i64 = 3_600_000;
    /// Minute windows from `FIRST` to `LAST`; those ending at or before the watermark `W` are
    /// final (and in ClickHouse); the batch/speed boundary `B` cuts the hour at `H + 2h`.
    const FIRST: i64 = H - 30 * M;
    const LAST: i64 = H + 2 * HOUR + 40 * M;
    const W: i64 = H + 2 * HOUR + 30 * M;
    const B: i64 = H + 2 * HOUR + 20 * M;

    fn names() -> (String, String) {
        let id = std::process::id();
        (format!("eddy_qsh_{id}"), format!("qsh{id}"))
    }

    fn state(redis_url: &str) -> AppState {
        let (db, prefix) = names();
        let r = RedisConfig {
            url: redis_url.into(),
            prefix,
            window_ttl_secs: 7200,
        };
        let c = ClickHouseConfig {
            url: env("EDDY_TEST_CLICKHOUSE_URL"),
            database: db,
            ..Default::default()
        };
        let backend = LambdaBackend::new(&r, &c)
            .unwrap()
            .with_timeout(Duration::from_secs(2));
        AppState::new(
            Arc::new(backend),
            Metrics::new(),
            ServerQueryLimits {
                max_range_ms: 24 * 3_600_000,
                window_ms: M,
                ..ServerQueryLimits::default()
            },
        )
    }

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
                types.push(TypeWindowStats {
                    window_start_ms: start,
                    event_type: t,
                    count,
                    sum_micros: amounts.map_or(0, |a| a.0),
                    min_micros: amounts.map(|a| a.1),
                    max_micros: amounts.map(|a| a.2),
                });
                campaigns.push(CampaignWindowCount {
                    window_start_ms: start,
                    campaign_id: 42,
                    event_type: t,
                    count: count + 1,
                });
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
        source: impl Fn(i64) -> &'static str,
    ) -> Value {
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
        let points: Vec<Value> = hours
            .into_iter()
            .map(|((t, hour), (count, sum, min, max, fin))| {
                let amount = |v: Option<i64>| v.map(micros_to_amount);
                json!({
                    "window_start_ms": hour, "window_end_ms": hour + HOUR, "event_type": t,
                    "campaign_id": null, "count": count,
                    "sum_amount": micros_to_amount(sum),
                    "min_amount": amount(min), "max_amount": amount(max),
                    "final": fin && hour + HOUR <= horizon, "source": source(hour),
                })
            })
            .collect();
        serde_json::from_str(&Value::Array(points).to_string()).unwrap()
    }

    #[tokio::test]
    async fn hourly_counts_read_rollups_and_stay_exact() {
        let redis_url = env("EDDY_TEST_REDIS_URL");
        let (db, p) = names();
        drop_all(&db, &p).await;
        let st = state(&redis_url);
        let ch_cfg = ClickHouseConfig {
            url: env("EDDY_TEST_CLICKHOUSE_URL"),
            database: db.clone(),
            ..Default::default()
        };
        fresh_database(&ch_cfg).await;
        let redis_cfg = RedisConfig {
            url: redis_url.clone(),
            prefix: p.clone(),
            window_ttl_secs: 7200,
        };

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
                epoch,
                watermark_ms: W,
                window_size_ms: M,
                final_types: ft,
                open_types: ot,
                final_campaigns: fc,
                open_campaigns: oc,
                ..CountsBatch::default()
            }
        };
        let mut redis_sink = RedisSink::connect(&redis_cfg).unwrap();
        let mut ch_sink = ClickHouseSink::connect(&ch_cfg).unwrap();
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
        ClickHouseCheckpoints::connect(&ch_cfg)
            .unwrap()
            .save(&Checkpoint {
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
        let (s, hourly) = get(&st, &q("hour", "")).await;
        assert_eq!(s, StatusCode::OK, "{hourly}");
        let source = |hour: i64| {
            if hour + HOUR <= B {
                "clickhouse"
            } else {
                "mixed"
            }
        };
        assert_eq!(
            hourly["series"],
            expected(&types, from, to, |_| true, W, source)
        );
        // The same totals as the minutes, and the same native windows per layer.
        let (_, minutes) = get(&st, &q("minute", "")).await;
        assert_eq!(hourly["layers"], minutes["layers"]);
        let batch_windows = types
            .iter()
            .filter(|r| (from..to).contains(&r.window_start_ms) && r.window_start_ms + M <= B)
            .count();
        assert_eq!(hourly["layers"]["batch"]["windows"], batch_windows);

        // One campaign, one type.
        let (_, v) = get(&st, &q("hour", "&campaign_id=42&event_type=click")).await;
        let mut want: BTreeMap<i64, u64> = BTreeMap::new();
        for r in campaigns
            .iter()
            .filter(|r| r.event_type == Click && (from..to).contains(&r.window_start_ms))
        {
            *want
                .entry(r.window_start_ms.div_euclid(HOUR) * HOUR)
                .or_default() += r.count;
        }
        let got: BTreeMap<i64, u64> = v["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["window_start_ms"].as_i64().unwrap(),
                    p["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, want, "{v}");
        assert!(
            v["series"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["campaign_id"] == 42)
        );

        // Redis down: ClickHouse alone (every final window it holds), boundary B from the
        // checkpoint.
        let down = state(DOWN);
        let (s, v) = get(&down, &q("hour", "")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            v["series"],
            expected(&types, from, to, is_final, B, |_| "clickhouse")
        );

        // The whole hours are read from the rollups: a minute only the rollup holds (written
        // into it directly) shows in a fresh backend's hourly answer, not in the minutes, nor
        // in the answer of a backend that cached the hour.
        ch_server()
            .query(&format!(
                "INSERT INTO {db}.type_windows_hourly SELECT toInt64({hour}), 'view', \
                 groupUniqArrayState(tuple(toInt64({ws}), toUInt64(1), toUInt64(1000), \
                 toInt64(0), CAST(NULL AS Nullable(Int64)), CAST(NULL AS Nullable(Int64))))",
                hour = H + HOUR,
                ws = H + HOUR + 30 * M + 1,
            ))
            .execute()
            .await
            .unwrap();
        let view_at = |v: &Value, hour: i64| {
            v["series"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["event_type"] == "view" && p["window_start_ms"] == hour)
                .map(|p| p["count"].as_u64().unwrap())
        };
        let before = view_at(&hourly, H + HOUR).unwrap();
        let (_, fresh) = get(&state(&redis_url), &q("hour", "")).await;
        assert_eq!(view_at(&fresh, H + HOUR), Some(before + 1000));
        let (_, cached) = get(&st, &q("hour", "")).await;
        assert_eq!(cached["series"], hourly["series"]);
        let (_, again) = get(&state(&redis_url), &q("minute", "")).await;
        assert_eq!(again["series"], minutes["series"]);

        drop_all(&db, &p).await;
    }
}
