//! `GET /v1/status`: the demo's own metrics digested, or the records `eddy run` processes
//! publish in the real Redis (`scripts/services`).

use eddy_core::Metrics;
use eddy_core::api::{ErrorCode, ProcessIdentity, ProcessStatus, StatusResponse, Store};
use eddy_core::config::RedisConfig;
use eddy_query_server::{AppState, MemoryBackend, ServerQueryLimits, StatusSource, app};
use eddy_storage::status::publish_status;
use eddy_testkit::http;
use eddy_testkit::stores::{fresh_redis, redis_conn};
use eddy_testkit::wait::wait_for_async;
use std::sync::Arc;
use std::time::Duration;

fn state(metrics: Metrics) -> AppState {
    AppState::new(
        Arc::new(MemoryBackend::empty()),
        metrics,
        ServerQueryLimits::default(),
    )
}

#[tokio::test]
async fn the_demo_answers_its_own_metrics() {
    let metrics = Metrics::new();
    metrics.watermark_ms.set(1_000);
    metrics.dead_letter("bad_json");
    let server = app(state(metrics.clone()));
    let reply = http::get(server.clone(), "/v1/status").await;
    let status: StatusResponse = reply.ok();
    assert_eq!(status.source, Store::Memory);
    assert_eq!(status.processes.len(), 1);
    let p = &status.processes[0];
    assert_eq!(p.status.identity.mode, "demo");
    assert_eq!(p.status.watermark_ms, Some(1_000));
    assert_eq!(p.status.dead_letters["bad_json"], 1);
    assert!(!p.stale);
    assert_eq!(p.status.events_in_per_second, None);
    // Once the first answer is a second old, later ones measure rates from it.
    metrics.events_in.inc_by(100);
    let rate = wait_for_async("a rate", Duration::from_secs(10), || {
        let server = server.clone();
        async move {
            let status: StatusResponse = http::get(server, "/v1/status").await.ok();
            status.processes[0].status.events_in_per_second
        }
    })
    .await;
    assert!(rate > 0.0 && rate <= 100.0, "{rate}");
    // No query parameter is accepted.
    http::get(app(state(Metrics::new())), "/v1/status?x=1")
        .await
        .error(400, ErrorCode::BadRequest);
}

fn record(process: usize, watermark_ms: i64, now_ms: i64) -> ProcessStatus {
    let metrics = Metrics::new();
    metrics.watermark_ms.set(watermark_ms);
    let identity = ProcessIdentity {
        process,
        ..ProcessIdentity::this_process(0, "run")
    };
    ProcessStatus::digest(identity, &metrics, None, None, now_ms)
}

#[tokio::test]
async fn serve_answers_every_published_process() {
    eddy_testkit::services(&["redis"]);
    let redis = fresh_redis("status_route");
    let now = eddy_core::now_ms();
    let mut con = redis_conn(&redis);
    publish_status(&mut con, &redis.prefix, &record(1, 5, now - 60_000)).unwrap();
    publish_status(&mut con, &redis.prefix, &record(0, 7, now)).unwrap();
    let source = StatusSource::redis(&redis, Duration::from_secs(2)).unwrap();
    let server = app(state(Metrics::new()).with_status(source));
    let status: StatusResponse = http::get(server, "/v1/status").await.ok();
    assert_eq!(status.source, Store::Redis);
    let seen: Vec<_> = status
        .processes
        .iter()
        .map(|p| (p.status.identity.process, p.status.watermark_ms, p.stale))
        .collect();
    assert_eq!(seen, vec![(0, Some(7), false), (1, Some(5), true)]);
    assert_eq!(status.serving_version, None, "base is served");
    // A job writing another output version keeps its own record; the served version shows.
    let v2 = eddy_core::version::Version::parse("v2").unwrap();
    let mut other = record(0, 9, now);
    other.identity = other.identity.writing(&v2);
    publish_status(&mut con, &redis.prefix, &other).unwrap();
    eddy_storage::versions::set_serving(&mut con, &redis.prefix, &v2).unwrap();
    let source = StatusSource::redis(&redis, Duration::from_secs(2)).unwrap();
    let server = app(state(Metrics::new()).with_status(source));
    let status: StatusResponse = http::get(server, "/v1/status").await.ok();
    assert_eq!(status.serving_version.as_deref(), Some("v2"));
    let seen: Vec<_> = status
        .processes
        .iter()
        .map(|p| (p.status.identity.version.clone(), p.status.watermark_ms))
        .collect();
    assert_eq!(seen[..2], [(None, Some(7)), (Some("v2".into()), Some(9))]);
}

#[tokio::test]
async fn redis_down_is_a_503() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    let cfg = RedisConfig {
        url,
        ..RedisConfig::default()
    };
    let source = StatusSource::redis(&cfg, Duration::from_millis(500)).unwrap();
    let server = app(state(Metrics::new()).with_status(source));
    http::get(server, "/v1/status")
        .await
        .error(503, ErrorCode::Unavailable);
}

#[test]
fn the_redis_source_is_made_outside_a_runtime() {
    // `eddy serve` builds its state before its runtime runs: no connection may be made here.
    let source = StatusSource::redis(&RedisConfig::default(), Duration::from_secs(1));
    assert!(source.is_ok());
}
