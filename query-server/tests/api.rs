//! HTTP-level tests of the query server over a [`MemoryBackend`] (and a scripted backend for
//! degraded and failing stores).

use eddy_core::api::{
    AnswerMeta, CampaignJson, CampaignResponse, CountsResponse, ErrorCode, Granularity,
    HealthResponse, HealthStatus, LayerJson, LayersJson, QueryEcho, RecommendationsResponse,
    SeriesPoint, SimilarUsersResponse, TopCampaignsResponse,
};
use eddy_core::{
    CampaignEngagement, Checkpoint, CountsBatch, EventType, MemoryStore, Metrics, Neighbor,
    Recommendation, SimilarityBatch,
};
use eddy_query_server::{
    AppState, Backend, BackendAnswer, BackendError, BoxFuture, EngagementQuery, LayerStatus,
    MemoryBackend, RowSource, ServerQueryLimits, Sourced, Store, StoreHealth, WindowQuery,
    WindowRow, app,
};
use eddy_testkit::fixtures::{
    HOUR as H, MIN as M, cw, eng, health, nb, point, rec, similar as similar_users, similar_json,
    tw, user_set,
};
use eddy_testkit::http::{self, Reply, as_read};
use std::sync::{Arc, RwLock};

/// Watermark H+2m; checkpoint (boundary) at H+1m. So windows starting at H are final and in the
/// batch layer, the click window at H+1m is final but still in the speed layer, later ones open.
fn store() -> Arc<RwLock<MemoryStore>> {
    use EventType::*;
    let mut s = MemoryStore::default();
    s.apply(&CountsBatch {
        epoch: 1,
        watermark_ms: H + M,
        window_size_ms: M,
        open_types: vec![tw(H + M, Click, 1, 100_000, Some(100_000), Some(100_000))],
        ..Default::default()
    });
    s.apply(&CountsBatch {
        epoch: 2,
        watermark_ms: H + 2 * M,
        window_size_ms: M,
        open_types: vec![
            tw(H + 2 * M, Click, 1, 750_000, Some(750_000), Some(750_000)),
            tw(H + 2 * M, View, 4, 0, None, None),
            tw(
                H + 60 * M,
                Conversion,
                1,
                20_000_000,
                Some(20_000_000),
                Some(20_000_000),
            ),
        ],
        open_campaigns: vec![cw(H + 2 * M, 42, Click, 1)],
        final_types: vec![
            tw(H, Click, 3, 1_500_000, Some(250_000), Some(1_000_000)),
            tw(H, View, 10, 0, None, None),
            tw(H + M, Click, 2, 2_000_000, Some(500_000), Some(1_500_000)),
        ],
        final_campaigns: vec![cw(H, 42, Click, 2), cw(H, 42, View, 7), cw(H, 43, Click, 1)],
        ..Default::default()
    });
    s.apply_checkpoint(&Checkpoint {
        state: None,
        topic: "events".into(),
        epoch: 2,
        watermark_ms: H + M,
        partitions: vec![],
    });
    Arc::new(RwLock::new(s))
}

fn state_with(backend: Arc<dyn Backend>) -> AppState {
    AppState::new(
        backend,
        Metrics::new(),
        ServerQueryLimits {
            max_range_ms: 24 * 3_600_000,
            window_ms: M,
            sliding_ms: 10 * M,
            top_k: 5,
            similar_k: 3,
            recommendations: 2,
            ..ServerQueryLimits::default()
        },
    )
}

fn memory_state() -> AppState {
    state_with(Arc::new(MemoryBackend::new(store())))
}

async fn call(state: &AppState, method: &str, uri: &str) -> Reply {
    http::call(app(state.clone()), method, uri).await
}

async fn get(state: &AppState, uri: &str) -> Reply {
    call(state, "GET", uri).await
}

/// GETs a counts query expecting 200; checks `as_of_ms` (the later of watermark and boundary)
/// and the wall-clock fields, and clears the latter.
async fn counts(state: &AppState, qs: &str) -> CountsResponse {
    let mut r: CountsResponse = get(state, &format!("/v1/counts?{qs}")).await.ok();
    let (wm, boundary) = (r.watermark_ms.unwrap(), r.boundary_ms.unwrap());
    assert_eq!(r.as_of_ms, Some(wm.max(boundary)), "{r:?}");
    let updated = r.updated_at_ms.take().expect("updated_at_ms set");
    let fresh = r.freshness_ms.take().expect("freshness_ms set");
    assert!(updated > H && (0..60_000).contains(&fresh), "{r:?}");
    r
}

fn layer(source: Store, windows: usize) -> LayerJson {
    LayerJson {
        source,
        available: Some(true),
        windows,
        error: None,
    }
}

fn layers(batch: usize, speed: usize) -> LayersJson {
    LayersJson {
        batch: layer(Store::Memory, batch),
        speed: layer(Store::Memory, speed),
    }
}

/// The memory store's answer (watermark H+2m, boundary H+1m) to `query`, with wall-clock
/// fields cleared as [`counts`] does.
fn memory_answer(query: QueryEcho, layers: LayersJson, series: Vec<SeriesPoint>) -> CountsResponse {
    CountsResponse {
        granularity: query.granularity,
        query,
        window_ms: M,
        watermark_ms: Some(H + 2 * M),
        boundary_ms: Some(H + M),
        as_of_ms: Some(H + 2 * M),
        updated_at_ms: None,
        freshness_ms: None,
        degraded: false,
        layers,
        series,
    }
}

fn echo(event_type: Option<EventType>, campaign_id: Option<u64>, from: i64, to: i64) -> QueryEcho {
    QueryEcho {
        event_type,
        campaign_id,
        from,
        to,
        granularity: Granularity::Minute,
    }
}

#[tokio::test]
async fn per_type_minute_series_marks_batch_and_speed() {
    use EventType::*;
    let st = memory_state();
    let v = counts(&st, &format!("from={H}&to={}", H + 120 * M)).await;
    let b = RowSource::MemoryBatch;
    let s = RowSource::MemorySpeed;
    assert_eq!(
        v,
        as_read(&memory_answer(
            echo(None, None, H, H + 120 * M),
            layers(2, 4),
            vec![
                point(H, View, 10, Some((0.0, None, None)), true, b),
                point(H + 2 * M, View, 4, Some((0.0, None, None)), false, s),
                point(H, Click, 3, Some((1.5, Some(0.25), Some(1.0))), true, b),
                point(H + M, Click, 2, Some((2.0, Some(0.5), Some(1.5))), true, s),
                point(
                    H + 2 * M,
                    Click,
                    1,
                    Some((0.75, Some(0.75), Some(0.75))),
                    false,
                    s
                ),
                point(
                    H + 60 * M,
                    Conversion,
                    1,
                    Some((20.0, Some(20.0), Some(20.0))),
                    false,
                    s
                ),
            ],
        ))
    );
}

#[tokio::test]
async fn event_type_filter_and_range_bounds() {
    use EventType::*;
    let st = memory_state();
    // `from` inclusive, `to` exclusive, on window starts.
    let v = counts(
        &st,
        &format!("event_type=click&from={}&to={}", H + M, H + 2 * M),
    )
    .await;
    assert_eq!(
        v.series,
        vec![point(
            H + M,
            Click,
            2,
            Some((2.0, Some(0.5), Some(1.5))),
            true,
            RowSource::MemorySpeed
        )]
    );
    assert_eq!(v.query.event_type, Some(Click));
    assert_eq!(v.layers, layers(0, 1));

    let v = counts(
        &st,
        &format!(
            "event_type=view&from={H}&to={}&granularity=minute",
            H + 3 * M
        ),
    )
    .await;
    assert_eq!(
        v.series,
        vec![
            point(
                H,
                View,
                10,
                Some((0.0, None, None)),
                true,
                RowSource::MemoryBatch
            ),
            point(
                H + 2 * M,
                View,
                4,
                Some((0.0, None, None)),
                false,
                RowSource::MemorySpeed
            ),
        ]
    );

    let v = counts(
        &st,
        &format!("event_type=conversion&from={H}&to={}", H + 60 * M),
    )
    .await;
    assert_eq!(v.series, vec![]);
    assert_eq!(v.layers, layers(0, 0));
}

#[tokio::test]
async fn campaign_series() {
    use EventType::*;
    let st = memory_state();
    let v = counts(&st, &format!("campaign_id=42&from={H}&to={}", H + 60 * M)).await;
    let c = |start: i64, t: EventType, count: u64, fin: bool, src: RowSource| SeriesPoint {
        campaign_id: Some(42),
        ..point(start, t, count, None, fin, src)
    };
    assert_eq!(
        v,
        memory_answer(
            echo(None, Some(42), H, H + 60 * M),
            layers(2, 1),
            vec![
                c(H, View, 7, true, RowSource::MemoryBatch),
                c(H, Click, 2, true, RowSource::MemoryBatch),
                c(H + 2 * M, Click, 1, false, RowSource::MemorySpeed),
            ],
        )
    );
    let v = counts(
        &st,
        &format!("campaign_id=43&event_type=click&from={H}&to={}", H + M),
    )
    .await;
    assert_eq!(v.series.len(), 1);
    assert_eq!(v.series[0].count, 1);
    assert_eq!(v.series[0].campaign_id, Some(43));
    let v = counts(&st, &format!("campaign_id=44&from={H}&to={}", H + M)).await;
    assert_eq!(v.series, vec![]);
}

#[tokio::test]
async fn hourly_granularity_aggregates_minutes() {
    use EventType::*;
    let st = memory_state();
    let v = counts(
        &st,
        &format!("granularity=hour&from={H}&to={}", H + 120 * M),
    )
    .await;
    let hour = |start: i64,
                t: EventType,
                count: u64,
                amounts: (f64, Option<f64>, Option<f64>),
                src: RowSource| SeriesPoint {
        window_end_ms: start + 3_600_000,
        ..point(start, t, count, Some(amounts), false, src)
    };
    assert_eq!(v.granularity, Granularity::Hour);
    assert_eq!(v.query.granularity, Granularity::Hour);
    assert_eq!(v.layers, layers(2, 4));
    assert_eq!(
        v.series,
        as_read(&vec![
            hour(H, View, 14, (0.0, None, None), RowSource::Mixed),
            // 1.5 + 2.0 + 0.75; min of mins, max of maxes.
            hour(H, Click, 6, (4.25, Some(0.25), Some(1.5)), RowSource::Mixed),
            hour(
                H + 3_600_000,
                Conversion,
                1,
                (20.0, Some(20.0), Some(20.0)),
                RowSource::MemorySpeed
            ),
        ])
    );
    // Campaign hours: counts only.
    let v = counts(
        &st,
        &format!(
            "granularity=hour&campaign_id=42&event_type=click&from={H}&to={}",
            H + 60 * M
        ),
    )
    .await;
    assert_eq!(
        v.series,
        vec![SeriesPoint {
            window_end_ms: H + 3_600_000,
            campaign_id: Some(42),
            ..point(H, Click, 3, None, false, RowSource::Mixed)
        }]
    );
}

#[tokio::test]
async fn bad_parameters_are_400_json() {
    let st = memory_state();
    let cases = [
        ("".to_owned(), "missing field `from`"),
        (format!("from={H}"), "missing field `to`"),
        (format!("to={H}"), "missing field `from`"),
        (format!("from={H}&to={H}"), "less than"),
        (format!("from={}&to={H}", H + 1), "less than"),
        (format!("from={H}&to={}", H + 24 * 3_600_000 + 1), "maximum"),
        (format!("from={H}.5&to={}", H + M), "`from`: invalid digit"),
        (
            format!("from=yesterday&to={}", H + M),
            "`from`: invalid digit",
        ),
        (
            format!("from={H}&to=99999999999999999999"),
            "`to`: number too large",
        ),
    ];
    // A valid range with one more parameter.
    let valid = format!("from={H}&to={}", H + M);
    let cases = cases.into_iter().chain(
        [
            ("&event_type=like", "`event_type`: unknown variant `like`"),
            ("&event_type=", "`event_type`: unknown variant"),
            ("&campaign_id=-3", "`campaign_id`: invalid digit"),
            ("&campaign_id=abc", "`campaign_id`: invalid digit"),
            ("&granularity=day", "`granularity`: unknown variant `day`"),
            ("&limit=10", "unknown field `limit`"),
            (&format!("&from={H}"), "duplicate field `from`"),
        ]
        .map(|(extra, needle)| (format!("{valid}{extra}"), needle)),
    );
    for (qs, needle) in cases {
        // `error` checks the status, the code and that the body has no other field.
        let e = get(&st, &format!("/v1/counts?{qs}"))
            .await
            .error(400, ErrorCode::BadRequest);
        let msg = e.error.message;
        assert!(msg.contains(needle), "{qs}: {msg:?} lacks {needle:?}");
    }
}

#[tokio::test]
async fn unknown_route_and_method_are_json() {
    let st = memory_state();
    let e = get(&st, "/v2/nope?x=1")
        .await
        .error(404, ErrorCode::NotFound);
    assert_eq!(e.error.message, "no route for GET /v2/nope");
    call(&st, "POST", "/v1/counts")
        .await
        .error(405, ErrorCode::MethodNotAllowed);
}

#[tokio::test]
async fn healthz_and_metrics() {
    let st = memory_state();
    let h: HealthResponse = get(&st, "/healthz").await.ok();
    assert_eq!(h, health(HealthStatus::Ok, &[(Store::Memory, "ok")]));
    get(&st, "/nope").await.error(404, ErrorCode::NotFound);
    get(&st, "/v1/counts?from=1")
        .await
        .error(400, ErrorCode::BadRequest);

    let Reply {
        status,
        content_type,
        body,
    } = get(&st, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(body.contains("# TYPE eddy_http_requests counter"), "{body}");
    assert!(
        body.contains(r#"eddy_http_requests_total{route="/healthz",status="200"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"eddy_http_requests_total{route="unmatched",status="404"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"eddy_http_requests_total{route="/v1/counts",status="400"} 1"#),
        "{body}"
    );
}

/// A backend answering from a script, to exercise degraded and failing stores.
struct Scripted {
    answer: Result<BackendAnswer, BackendError>,
    health: Vec<StoreHealth>,
}

impl Scripted {
    /// Engagement reads: the scripted error, or nothing found.
    fn nothing<T: Send + 'static>(&self) -> BoxFuture<'_, Result<Option<T>, BackendError>> {
        let a = self.answer.clone().map(|_| None);
        Box::pin(async move { a })
    }
}

impl Backend for Scripted {
    fn counts(&self, _q: WindowQuery) -> BoxFuture<'_, Result<BackendAnswer, BackendError>> {
        let a = self.answer.clone();
        Box::pin(async move { a })
    }
    fn health(&self) -> BoxFuture<'_, Vec<StoreHealth>> {
        let h = self.health.clone();
        Box::pin(async move { h })
    }
    fn campaign(
        &self,
        _q: EngagementQuery,
        _id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<CampaignEngagement>>, BackendError>> {
        self.nothing()
    }
    fn top_campaigns(
        &self,
        _q: EngagementQuery,
        _k: usize,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<CampaignEngagement>>>, BackendError>> {
        self.nothing()
    }
    fn similar_users(
        &self,
        _id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Neighbor>>>, BackendError>> {
        self.nothing()
    }
    fn recommendations(
        &self,
        _query: EngagementQuery,
        _id: u64,
        _n: usize,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Recommendation>>>, BackendError>> {
        self.nothing()
    }
}

#[tokio::test]
async fn degraded_and_unavailable_stores() {
    let answer = BackendAnswer {
        watermark_ms: None,
        boundary_ms: Some(H + M),
        updated_at_ms: None,
        batch: LayerStatus::ok(Store::Clickhouse, 1),
        speed: LayerStatus::failed(Store::Redis, "redis: connection refused".into()),
        rows: vec![WindowRow {
            window_start_ms: H,
            event_type: EventType::Conversion,
            campaign_id: None,
            count: 2,
            amounts: Some(eddy_query_server::Amounts {
                sum_micros: 3_000_001,
                min_micros: Some(1),
                max_micros: Some(3_000_000),
            }),
            is_final: true,
            source: RowSource::Clickhouse,
        }],
    };
    let down = vec![
        StoreHealth {
            store: Store::Redis,
            status: Err("connection refused".into()),
        },
        StoreHealth {
            store: Store::Clickhouse,
            status: Ok(()),
        },
    ];
    let st = state_with(Arc::new(Scripted {
        answer: Ok(answer),
        health: down,
    }));
    let v: CountsResponse = get(&st, &format!("/v1/counts?from={H}&to={}", H + M))
        .await
        .ok();
    assert_eq!(
        v,
        as_read(&CountsResponse {
            query: echo(None, None, H, H + M),
            granularity: Granularity::Minute,
            window_ms: M,
            watermark_ms: None,
            boundary_ms: Some(H + M),
            // The answer reflects the batch layer up to the boundary.
            as_of_ms: Some(H + M),
            updated_at_ms: None,
            freshness_ms: None,
            degraded: true,
            layers: LayersJson {
                batch: layer(Store::Clickhouse, 1),
                speed: LayerJson {
                    source: Store::Redis,
                    available: Some(false),
                    windows: 0,
                    error: Some("redis: connection refused".into()),
                },
            },
            series: vec![point(
                H,
                EventType::Conversion,
                2,
                Some((3.000001, Some(0.000001), Some(3.0))),
                true,
                RowSource::Clickhouse
            )],
        })
    );
    let h: HealthResponse = get(&st, "/healthz").await.json();
    assert_eq!(
        h,
        health(
            HealthStatus::Degraded,
            &[
                (Store::Redis, "down: connection refused"),
                (Store::Clickhouse, "ok")
            ]
        )
    );
    assert_eq!(get(&st, "/healthz").await.status, 503);

    let st = state_with(Arc::new(Scripted {
        answer: Err(BackendError::Unavailable("both down".into())),
        health: vec![],
    }));
    let e = get(&st, &format!("/v1/counts?from={H}&to={}", H + M))
        .await
        .error(503, ErrorCode::Unavailable);
    assert_eq!(e.error.message, "no store available: both down");
}

#[tokio::test]
async fn serves_over_tcp_and_shuts_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(eddy_query_server::serve_with_shutdown(
        listener,
        memory_state(),
        async move {
            let _ = rx.await;
        },
    ));
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(
        out.ends_with(r#"{"status":"ok","stores":{"memory":"ok"}}"#),
        "{out}"
    );
    tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}

// ---- Campaign engagement, similar users, recommendations ----

/// Engagement at watermark H+3m (campaigns 42..=45, users 7 and 8), then at H+4m campaign 44
/// leaves the window, 47 enters it and the top list is rewritten.
fn engagement_state() -> AppState {
    let mut s = MemoryStore::default();
    let top = vec![
        eng(42, 10, 2, 1, 5_500_000),
        eng(45, 3, 1, 0, 0),
        eng(43, 4, 0, 0, 0),
        eng(44, 0, 0, 0, 1_000_000),
    ];
    s.apply(&CountsBatch {
        epoch: 3,
        watermark_ms: H + 3 * M,
        window_size_ms: M,
        sliding_ms: 10 * M,
        engagement: top.clone(),
        top_campaigns: Some(top),
        ..Default::default()
    });
    s.apply_similarity(&SimilarityBatch {
        interaction_panes: Vec::new(),
        epoch: 3,
        as_of_ms: H + 3 * M,
        sliding_ms: 10 * M,
        similar: vec![
            similar_users(
                7,
                vec![nb(8, 2, 3), nb(9, 1, 4), nb(10, 1, 5), nb(11, 1, 6)],
            ),
            similar_users(8, vec![nb(7, 2, 3)]),
        ],
        // User 7 is recommended 45 (from 8 and 9) and 43 (from 8); 44 leaves the window
        // below and 46 has no engagement; user 8 has nothing its neighbor 7 lacks.
        campaigns: vec![
            user_set(7, vec![42]),
            user_set(8, vec![42, 43, 45]),
            user_set(9, vec![42, 45]),
            user_set(10, vec![42]),
            user_set(11, vec![42, 44, 46]),
        ],
    });
    s.apply(&CountsBatch {
        epoch: 4,
        watermark_ms: H + 4 * M,
        window_size_ms: M,
        sliding_ms: 10 * M,
        engagement: vec![eng(47, 0, 0, 0, 2_000_000)],
        engagement_removed: vec![44],
        top_campaigns: Some(vec![
            eng(42, 10, 2, 1, 5_500_000),
            eng(45, 3, 1, 0, 0),
            eng(43, 4, 0, 0, 0),
        ]),
        ..Default::default()
    });
    state_with(Arc::new(MemoryBackend::new(Arc::new(RwLock::new(s)))))
}

/// What the memory store's answers carry (wall-clock fields cleared by [`Reply::answer`]).
fn memory_meta(as_of_ms: i64) -> AnswerMeta {
    AnswerMeta {
        as_of_ms,
        updated_at_ms: None,
        freshness_ms: None,
        source: Store::Memory,
    }
}

/// GETs one campaign expecting 200, its meta fresh ([`Reply::answer`]).
async fn campaign(state: &AppState, uri: &str) -> CampaignResponse {
    get(state, uri).await.answer(true)
}

/// GETs the top list expecting 200, its meta fresh.
async fn top(state: &AppState, uri: &str) -> TopCampaignsResponse {
    get(state, uri).await.answer(true)
}

/// GETs similar users expecting 200, their meta fresh.
async fn similar(state: &AppState, uri: &str) -> SimilarUsersResponse {
    get(state, uri).await.answer(true)
}

/// GETs recommendations expecting 200, their meta fresh.
async fn recommendations(state: &AppState, uri: &str) -> RecommendationsResponse {
    get(state, uri).await.answer(true)
}

#[allow(clippy::too_many_arguments)]
fn campaign_json(
    id: u64,
    views: u64,
    clicks: u64,
    conversions: u64,
    revenue: f64,
    revenue_micros: i64,
    ctr: Option<f64>,
    conversion_rate: Option<f64>,
    score: f64,
) -> CampaignJson {
    as_read(&CampaignJson {
        campaign_id: id,
        views,
        clicks,
        conversions,
        revenue,
        revenue_micros,
        ctr,
        conversion_rate,
        score,
    })
}

#[tokio::test]
async fn campaign_engagement_from_memory() {
    let st = engagement_state();
    assert_eq!(
        campaign(&st, "/v1/campaigns/42").await,
        CampaignResponse {
            campaign: campaign_json(42, 10, 2, 1, 5.5, 5_500_000, Some(0.2), Some(0.5), 45.0),
            meta: memory_meta(H + 3 * M),
        }
    );
    // No clicks: conversion_rate null.
    let v = campaign(&st, "/v1/campaigns/43").await.campaign;
    assert_eq!((v.ctr, v.conversion_rate, v.score), (Some(0.0), None, 4.0));
    // No views either: ctr null too. Written by the later batch.
    assert_eq!(
        campaign(&st, "/v1/campaigns/47").await,
        CampaignResponse {
            campaign: campaign_json(47, 0, 0, 0, 2.0, 2_000_000, None, None, 0.0),
            meta: memory_meta(H + 4 * M),
        }
    );

    let e = get(&st, "/v1/campaigns/44")
        .await
        .error(404, ErrorCode::NotFound);
    assert_eq!(
        e.error.message,
        "campaign 44 has no engagement in the sliding window"
    );
    for (uri, needle) in [
        (
            "/v1/campaigns/abc",
            "campaign id must be an unsigned integer",
        ),
        ("/v1/campaigns/-1", "campaign id"),
        ("/v1/campaigns/18446744073709551616", "campaign id"),
        ("/v1/campaigns/4.2", "campaign id"),
        ("/v1/campaigns/42?k=1", "unknown field `k`"),
    ] {
        let e = get(&st, uri).await.error(400, ErrorCode::BadRequest);
        let msg = e.error.message;
        assert!(msg.contains(needle), "{uri}: {msg:?} lacks {needle:?}");
    }
}

#[tokio::test]
async fn top_campaigns_from_memory() {
    let st = engagement_state();
    let c42 = campaign_json(42, 10, 2, 1, 5.5, 5_500_000, Some(0.2), Some(0.5), 45.0);
    let c45 = campaign_json(45, 3, 1, 0, 0.0, 0, Some(1.0 / 3.0), Some(0.0), 8.0);
    let c43 = campaign_json(43, 4, 0, 0, 0.0, 0, Some(0.0), None, 4.0);
    // Default k = 10, capped at engagement.top_k (5): the whole list.
    assert_eq!(
        top(&st, "/v1/campaigns/top").await,
        TopCampaignsResponse {
            k: 5,
            meta: memory_meta(H + 4 * M),
            campaigns: vec![c42.clone(), c45.clone(), c43],
        }
    );
    assert_eq!(
        top(&st, "/v1/campaigns/top?k=2").await,
        TopCampaignsResponse {
            k: 2,
            meta: memory_meta(H + 4 * M),
            campaigns: vec![c42, c45],
        }
    );
    for qs in [
        "k=0", "k=6", "k=-1", "k=two", "k=", "k=1&k=2", "limit=3", "k=2&x=1",
    ] {
        get(&st, &format!("/v1/campaigns/top?{qs}"))
            .await
            .error(400, ErrorCode::BadRequest);
    }
    // No top list yet: 404.
    let e = get(&memory_state(), "/v1/campaigns/top")
        .await
        .error(404, ErrorCode::NotFound);
    assert_eq!(e.error.message, "no top list of campaigns yet");
}

#[tokio::test]
async fn similar_users_and_recommendations_from_memory() {
    let st = engagement_state();
    let sim = similar_json;
    // Default k = similarity.k (3).
    assert_eq!(
        similar(&st, "/v1/users/7/similar").await,
        SimilarUsersResponse {
            user_id: 7,
            k: 3,
            meta: memory_meta(H + 3 * M),
            similar: vec![sim(8, 2, 3), sim(9, 1, 4), sim(10, 1, 5)],
        }
    );
    assert_eq!(
        similar(&st, "/v1/users/8/similar?k=1").await.similar,
        vec![sim(7, 2, 3)]
    );
    assert_eq!(
        similar(&st, "/v1/users/7/similar?k=1").await.similar,
        vec![sim(8, 2, 3)]
    );

    // Default k = similarity.recommendations (2).
    assert_eq!(
        recommendations(&st, "/v1/users/7/recommendations").await,
        RecommendationsResponse {
            user_id: 7,
            k: 2,
            meta: memory_meta(H + 3 * M),
            recommendations: vec![
                as_read(&eddy_core::api::RecommendationJson::from(&rec(
                    45,
                    8.0,
                    vec![nb(8, 2, 3), nb(9, 1, 4)]
                ))),
                as_read(&eddy_core::api::RecommendationJson::from(&rec(
                    43,
                    4.0,
                    vec![nb(8, 2, 3)]
                ))),
            ],
        }
    );
    assert_eq!(
        recommendations(&st, "/v1/users/7/recommendations?k=1")
            .await
            .recommendations
            .len(),
        1
    );

    for (uri, status, code, needle) in [
        (
            "/v1/users/9/similar",
            404,
            ErrorCode::NotFound,
            "user 9 has no similar users",
        ),
        (
            "/v1/users/8/recommendations",
            404,
            ErrorCode::NotFound,
            "user 8 has no recommendations",
        ),
        (
            "/v1/users/x/similar",
            400,
            ErrorCode::BadRequest,
            "user id must be an unsigned integer",
        ),
        (
            "/v1/users/-7/recommendations",
            400,
            ErrorCode::BadRequest,
            "user id",
        ),
        (
            "/v1/users/7/similar?k=4",
            400,
            ErrorCode::BadRequest,
            "from 1 to 3",
        ),
        (
            "/v1/users/7/similar?k=0",
            400,
            ErrorCode::BadRequest,
            "from 1 to 3",
        ),
        (
            "/v1/users/7/recommendations?k=3",
            400,
            ErrorCode::BadRequest,
            "from 1 to 2",
        ),
        (
            "/v1/users/7/recommendations?n=1",
            400,
            ErrorCode::BadRequest,
            "unknown field `n`",
        ),
        ("/v1/users/7", 404, ErrorCode::NotFound, "no route"),
    ] {
        let msg = get(&st, uri).await.error(status, code).error.message;
        assert!(msg.contains(needle), "{uri}: {msg:?} lacks {needle:?}");
    }

    // Counted per route template.
    let body = get(&st, "/metrics").await.body;
    assert!(
        body.contains(r#"eddy_http_requests_total{route="/v1/users/{id}/similar",status="200"} 3"#),
        "{body}"
    );
    assert!(
        body.contains(
            r#"eddy_http_requests_total{route="/v1/users/{id}/recommendations",status="400"} 3"#
        ),
        "{body}"
    );
}

#[tokio::test]
async fn engagement_routes_report_unavailable_and_missing() {
    let down = state_with(Arc::new(Scripted {
        answer: Err(BackendError::Unavailable("both down".into())),
        health: vec![],
    }));
    let empty = state_with(Arc::new(Scripted {
        answer: Ok(BackendAnswer {
            watermark_ms: None,
            boundary_ms: None,
            updated_at_ms: None,
            batch: LayerStatus::skipped(Store::Clickhouse),
            speed: LayerStatus::skipped(Store::Redis),
            rows: vec![],
        }),
        health: vec![],
    }));
    for uri in [
        "/v1/campaigns/top",
        "/v1/campaigns/1",
        "/v1/users/1/similar",
        "/v1/users/1/recommendations",
    ] {
        let e = get(&down, uri).await.error(503, ErrorCode::Unavailable);
        assert_eq!(e.error.message, "no store available: both down", "{uri}");
        get(&empty, uri).await.error(404, ErrorCode::NotFound);
    }
}
