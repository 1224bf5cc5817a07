//! HTTP-level tests of the query server over a [`MemoryBackend`] (and a scripted backend for
//! degraded and failing stores).

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use eddy_core::{
    CampaignEngagement, CampaignWindowCount, Checkpoint, EventType, MemoryStore, Metrics, Neighbor,
    Recommendation, Score, SimilarUsers, SinkBatch, TypeWindowStats, UserRecommendations, Weights,
    recommendation_score,
};
use eddy_query_server::{
    AppState, Backend, BackendAnswer, BackendError, BoxFuture, EngagementQuery, LayerStatus,
    MemoryBackend, RowSource, ServerQueryLimits, Sourced, Store, StoreHealth, WindowQuery,
    WindowRow, app,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::{Arc, RwLock};
use tower::ServiceExt;

/// An hour-aligned epoch ms (2023-11-14T22:00:00Z).
const H: i64 = 1_699_999_200_000;
const M: i64 = 60_000;

fn tw(
    start: i64,
    t: EventType,
    count: u64,
    sum: i64,
    min: Option<i64>,
    max: Option<i64>,
) -> TypeWindowStats {
    TypeWindowStats {
        window_start_ms: start,
        event_type: t,
        count,
        sum_micros: sum,
        min_micros: min,
        max_micros: max,
    }
}

fn cw(start: i64, c: u64, t: EventType, count: u64) -> CampaignWindowCount {
    CampaignWindowCount {
        window_start_ms: start,
        campaign_id: c,
        event_type: t,
        count,
    }
}

/// Watermark H+2m; checkpoint (boundary) at H+1m. So windows starting at H are final and in the
/// batch layer, the click window at H+1m is final but still in the speed layer, later ones open.
fn store() -> Arc<RwLock<MemoryStore>> {
    use EventType::*;
    let mut s = MemoryStore::default();
    s.apply(&SinkBatch {
        epoch: 1,
        watermark_ms: H + M,
        window_size_ms: M,
        open_types: vec![tw(H + M, Click, 1, 100_000, Some(100_000), Some(100_000))],
        ..Default::default()
    });
    s.apply(&SinkBatch {
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

async fn call(state: &AppState, method: &str, uri: &str) -> (StatusCode, Option<String>, String) {
    let resp = app(state.clone())
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ct, String::from_utf8(body.to_vec()).unwrap())
}

async fn get_json(state: &AppState, uri: &str) -> (StatusCode, Value) {
    let (status, ct, body) = call(state, "GET", uri).await;
    assert_eq!(ct.as_deref(), Some("application/json"), "{uri}: {body}");
    (status, serde_json::from_str(&body).unwrap())
}

/// GETs a counts query, checks `as_of_ms` (the later of watermark and boundary) and strips
/// it with the wall-clock fields.
async fn counts(state: &AppState, qs: &str) -> Value {
    let (status, mut v) = get_json(state, &format!("/v1/counts?{qs}")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let as_of = v["as_of_ms"].as_i64().expect("as_of_ms set");
    let wm = v["watermark_ms"].as_i64().unwrap();
    let boundary = v["boundary_ms"].as_i64().unwrap();
    assert_eq!(as_of, wm.max(boundary), "{v}");
    let updated = v["updated_at_ms"].as_i64().expect("updated_at_ms set");
    let fresh = v["freshness_ms"].as_i64().expect("freshness_ms set");
    assert!(updated > H && (0..60_000).contains(&fresh), "{v}");
    let o = v.as_object_mut().unwrap();
    o.remove("as_of_ms");
    o.remove("updated_at_ms");
    o.remove("freshness_ms");
    v
}

fn point(
    start: i64,
    t: &str,
    count: u64,
    amounts: Option<(f64, Option<f64>, Option<f64>)>,
    fin: bool,
    source: &str,
) -> Value {
    let (sum, min, max) = match amounts {
        Some((s, a, b)) => (json!(s), json!(a), json!(b)),
        None => (Value::Null, Value::Null, Value::Null),
    };
    json!({
        "window_start_ms": start, "window_end_ms": start + M, "event_type": t,
        "campaign_id": null, "count": count, "sum_amount": sum, "min_amount": min,
        "max_amount": max, "final": fin, "source": source,
    })
}

fn layers(batch: usize, speed: usize) -> Value {
    json!({
        "batch": {"source": "memory", "available": true, "windows": batch, "error": null},
        "speed": {"source": "memory", "available": true, "windows": speed, "error": null},
    })
}

#[tokio::test]
async fn per_type_minute_series_marks_batch_and_speed() {
    let st = memory_state();
    let v = counts(&st, &format!("from={H}&to={}", H + 120 * M)).await;
    let b = "memory-batch";
    let s = "memory-speed";
    assert_eq!(
        v,
        json!({
            "query": {"event_type": null, "campaign_id": null, "from": H, "to": H + 120 * M,
                      "granularity": "minute"},
            "granularity": "minute",
            "window_ms": M,
            "watermark_ms": H + 2 * M,
            "boundary_ms": H + M,
            "degraded": false,
            "layers": layers(2, 4),
            "series": [
                point(H, "view", 10, Some((0.0, None, None)), true, b),
                point(H + 2 * M, "view", 4, Some((0.0, None, None)), false, s),
                point(H, "click", 3, Some((1.5, Some(0.25), Some(1.0))), true, b),
                point(H + M, "click", 2, Some((2.0, Some(0.5), Some(1.5))), true, s),
                point(H + 2 * M, "click", 1, Some((0.75, Some(0.75), Some(0.75))), false, s),
                point(H + 60 * M, "conversion", 1, Some((20.0, Some(20.0), Some(20.0))), false, s),
            ],
        })
    );
}

#[tokio::test]
async fn event_type_filter_and_range_bounds() {
    let st = memory_state();
    // `from` inclusive, `to` exclusive, on window starts.
    let v = counts(
        &st,
        &format!("event_type=click&from={}&to={}", H + M, H + 2 * M),
    )
    .await;
    assert_eq!(
        v["series"],
        json!([point(
            H + M,
            "click",
            2,
            Some((2.0, Some(0.5), Some(1.5))),
            true,
            "memory-speed"
        )])
    );
    assert_eq!(v["query"]["event_type"], "click");
    assert_eq!(v["layers"], layers(0, 1));

    let v = counts(
        &st,
        &format!(
            "event_type=view&from={H}&to={}&granularity=minute",
            H + 3 * M
        ),
    )
    .await;
    assert_eq!(
        v["series"],
        json!([
            point(H, "view", 10, Some((0.0, None, None)), true, "memory-batch"),
            point(
                H + 2 * M,
                "view",
                4,
                Some((0.0, None, None)),
                false,
                "memory-speed"
            ),
        ])
    );

    let v = counts(
        &st,
        &format!("event_type=conversion&from={H}&to={}", H + 60 * M),
    )
    .await;
    assert_eq!(v["series"], json!([]));
    assert_eq!(v["layers"], layers(0, 0));
}

#[tokio::test]
async fn campaign_series() {
    let st = memory_state();
    let v = counts(&st, &format!("campaign_id=42&from={H}&to={}", H + 60 * M)).await;
    let c = |start: i64, t: &str, count: u64, fin: bool, src: &str| {
        let mut p = point(start, t, count, None, fin, src);
        p["campaign_id"] = json!(42);
        p
    };
    assert_eq!(
        v,
        json!({
            "query": {"event_type": null, "campaign_id": 42, "from": H, "to": H + 60 * M,
                      "granularity": "minute"},
            "granularity": "minute",
            "window_ms": M,
            "watermark_ms": H + 2 * M,
            "boundary_ms": H + M,
            "degraded": false,
            "layers": layers(2, 1),
            "series": [
                c(H, "view", 7, true, "memory-batch"),
                c(H, "click", 2, true, "memory-batch"),
                c(H + 2 * M, "click", 1, false, "memory-speed"),
            ],
        })
    );
    let v = counts(
        &st,
        &format!("campaign_id=43&event_type=click&from={H}&to={}", H + M),
    )
    .await;
    assert_eq!(v["series"].as_array().unwrap().len(), 1);
    assert_eq!(v["series"][0]["count"], 1);
    assert_eq!(v["series"][0]["campaign_id"], 43);
    let v = counts(&st, &format!("campaign_id=44&from={H}&to={}", H + M)).await;
    assert_eq!(v["series"], json!([]));
}

#[tokio::test]
async fn hourly_granularity_aggregates_minutes() {
    let st = memory_state();
    let v = counts(
        &st,
        &format!("granularity=hour&from={H}&to={}", H + 120 * M),
    )
    .await;
    let hour =
        |start: i64, t: &str, count: u64, amounts: (f64, Option<f64>, Option<f64>), src: &str| {
            let mut p = point(start, t, count, Some(amounts), false, src);
            p["window_end_ms"] = json!(start + 3_600_000);
            p
        };
    assert_eq!(v["granularity"], "hour");
    assert_eq!(v["query"]["granularity"], "hour");
    assert_eq!(v["layers"], layers(2, 4));
    assert_eq!(
        v["series"],
        json!([
            hour(H, "view", 14, (0.0, None, None), "mixed"),
            // 1.5 + 2.0 + 0.75; min of mins, max of maxes.
            hour(H, "click", 6, (4.25, Some(0.25), Some(1.5)), "mixed"),
            hour(
                H + 3_600_000,
                "conversion",
                1,
                (20.0, Some(20.0), Some(20.0)),
                "memory-speed"
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
        v["series"],
        json!([{
            "window_start_ms": H, "window_end_ms": H + 3_600_000, "event_type": "click",
            "campaign_id": 42, "count": 3, "sum_amount": null, "min_amount": null,
            "max_amount": null, "final": false, "source": "mixed",
        }])
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
        (
            format!("from={H}&to={}&event_type=like", H + M),
            "`event_type`: unknown variant `like`",
        ),
        (
            format!("from={H}&to={}&event_type=", H + M),
            "`event_type`: unknown variant",
        ),
        (
            format!("from={H}&to={}&campaign_id=-3", H + M),
            "`campaign_id`: invalid digit",
        ),
        (
            format!("from={H}&to={}&campaign_id=abc", H + M),
            "`campaign_id`: invalid digit",
        ),
        (
            format!("from={H}&to={}&granularity=day", H + M),
            "`granularity`: unknown variant `day`",
        ),
        (
            format!("from={H}&to={}&limit=10", H + M),
            "unknown field `limit`",
        ),
        (
            format!("from={H}&to={}&from={H}", H + M),
            "duplicate field `from`",
        ),
    ];
    for (qs, needle) in cases {
        let (status, v) = get_json(&st, &format!("/v1/counts?{qs}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{qs}: {v}");
        assert_eq!(v["error"]["code"], "bad_request", "{qs}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{qs}: {msg:?} lacks {needle:?}");
        assert_eq!(v.as_object().unwrap().len(), 1);
        assert_eq!(v["error"].as_object().unwrap().len(), 2);
    }
}

#[tokio::test]
async fn unknown_route_and_method_are_json() {
    let st = memory_state();
    let (status, v) = get_json(&st, "/v2/nope?x=1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        v,
        json!({"error": {"code": "not_found", "message": "no route for GET /v2/nope"}})
    );
    let (status, ct, body) = call(&st, "POST", "/v1/counts").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(ct.as_deref(), Some("application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn healthz_and_metrics() {
    let st = memory_state();
    let (status, v) = get_json(&st, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"status": "ok", "stores": {"memory": "ok"}}));
    get_json(&st, "/nope").await;
    get_json(&st, "/v1/counts?from=1").await;

    let (status, ct, body) = call(&st, "GET", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.unwrap().starts_with("text/plain; version=0.0.4"));
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
        _id: u64,
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
    let (status, v) = get_json(&st, &format!("/v1/counts?from={H}&to={}", H + M)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["degraded"], true);
    assert_eq!(
        (&v["updated_at_ms"], &v["freshness_ms"], &v["watermark_ms"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    // The answer reflects the batch layer up to the boundary.
    assert_eq!(v["as_of_ms"], H + M);
    assert_eq!(
        v["layers"],
        json!({
            "batch": {"source": "clickhouse", "available": true, "windows": 1, "error": null},
            "speed": {"source": "redis", "available": false, "windows": 0,
                      "error": "redis: connection refused"},
        })
    );
    assert_eq!(
        v["series"],
        json!([point(
            H,
            "conversion",
            2,
            Some((3.000001, Some(0.000001), Some(3.0))),
            true,
            "clickhouse"
        )])
    );
    let (status, v) = get_json(&st, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        v,
        json!({"status": "degraded",
               "stores": {"redis": "down: connection refused", "clickhouse": "ok"}})
    );

    let st = state_with(Arc::new(Scripted {
        answer: Err(BackendError::Unavailable("both down".into())),
        health: vec![],
    }));
    let (status, v) = get_json(&st, &format!("/v1/counts?from={H}&to={}", H + M)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"]["code"], "unavailable");
    assert_eq!(v["error"]["message"], "no store available: both down");
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

fn eng(
    campaign_id: u64,
    views: u64,
    clicks: u64,
    conversions: u64,
    revenue: i64,
) -> CampaignEngagement {
    CampaignEngagement {
        campaign_id,
        views,
        clicks,
        conversions,
        revenue_micros: revenue,
        score: Weights::default().score(views, clicks, conversions),
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
    s.apply(&SinkBatch {
        epoch: 3,
        watermark_ms: H + 3 * M,
        window_size_ms: M,
        sliding_ms: 10 * M,
        engagement: top.clone(),
        top_campaigns: Some(top),
        similar: vec![
            SimilarUsers {
                user_id: 7,
                neighbors: vec![nb(8, 2, 3), nb(9, 1, 4), nb(10, 1, 5), nb(11, 1, 6)],
            },
            SimilarUsers {
                user_id: 8,
                neighbors: vec![nb(7, 2, 3)],
            },
        ],
        recommendations: vec![UserRecommendations {
            user_id: 7,
            items: vec![
                rec(45, 8.0, vec![nb(8, 1, 2), nb(9, 1, 4)]),
                rec(43, 4.0, vec![nb(8, 1, 2)]),
                rec(46, 1.0, vec![nb(9, 1, 4)]),
            ],
        }],
        ..Default::default()
    });
    s.apply(&SinkBatch {
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

/// GETs `uri` expecting 200, checks and strips `updated_at_ms` and `freshness_ms`.
async fn ok_json(state: &AppState, uri: &str) -> Value {
    let (status, mut v) = get_json(state, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {v}");
    let updated = v["updated_at_ms"].as_i64().expect("updated_at_ms set");
    let fresh = v["freshness_ms"].as_i64().expect("freshness_ms set");
    assert!(updated > H && (0..60_000).contains(&fresh), "{v}");
    v.as_object_mut().unwrap().remove("updated_at_ms");
    v.as_object_mut().unwrap().remove("freshness_ms");
    v
}

/// `v` as the tests read it back: serde_json's default float parsing may differ from the exact
/// value in the last bit, so expected values go through the same text round trip.
fn as_read(v: Value) -> Value {
    serde_json::from_str(&v.to_string()).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn campaign_json(
    id: u64,
    views: u64,
    clicks: u64,
    conversions: u64,
    revenue: f64,
    revenue_micros: i64,
    ctr: Value,
    conversion_rate: Value,
    score: f64,
) -> Value {
    as_read(json!({
        "campaign_id": id, "views": views, "clicks": clicks, "conversions": conversions,
        "revenue": revenue, "revenue_micros": revenue_micros, "ctr": ctr,
        "conversion_rate": conversion_rate, "score": score,
    }))
}

#[tokio::test]
async fn campaign_engagement_from_memory() {
    let st = engagement_state();
    let mut expected = campaign_json(42, 10, 2, 1, 5.5, 5_500_000, json!(0.2), json!(0.5), 45.0);
    expected["as_of_ms"] = json!(H + 3 * M);
    expected["source"] = json!("memory");
    assert_eq!(ok_json(&st, "/v1/campaigns/42").await, expected);
    // No clicks: conversion_rate null.
    let v = ok_json(&st, "/v1/campaigns/43").await;
    assert_eq!(
        (&v["ctr"], &v["conversion_rate"], &v["score"]),
        (&json!(0.0), &Value::Null, &json!(4.0))
    );
    // No views either: ctr null too. Written by the later batch.
    let mut expected = campaign_json(47, 0, 0, 0, 2.0, 2_000_000, Value::Null, Value::Null, 0.0);
    expected["as_of_ms"] = json!(H + 4 * M);
    expected["source"] = json!("memory");
    assert_eq!(ok_json(&st, "/v1/campaigns/47").await, expected);

    let (status, v) = get_json(&st, "/v1/campaigns/44").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        v,
        json!({"error": {"code": "not_found",
                         "message": "campaign 44 has no engagement in the sliding window"}})
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
        let (status, v) = get_json(&st, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert_eq!(v["error"]["code"], "bad_request");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{uri}: {msg:?} lacks {needle:?}");
    }
}

#[tokio::test]
async fn top_campaigns_from_memory() {
    let st = engagement_state();
    let c42 = campaign_json(42, 10, 2, 1, 5.5, 5_500_000, json!(0.2), json!(0.5), 45.0);
    let c45 = campaign_json(45, 3, 1, 0, 0.0, 0, json!(1.0 / 3.0), json!(0.0), 8.0);
    let c43 = campaign_json(43, 4, 0, 0, 0.0, 0, json!(0.0), Value::Null, 4.0);
    // Default k = 10, capped at engagement.top_k (5): the whole list.
    assert_eq!(
        ok_json(&st, "/v1/campaigns/top").await,
        json!({"k": 5, "as_of_ms": H + 4 * M, "source": "memory",
               "campaigns": [c42.clone(), c45.clone(), c43]})
    );
    assert_eq!(
        ok_json(&st, "/v1/campaigns/top?k=2").await,
        json!({"k": 2, "as_of_ms": H + 4 * M, "source": "memory", "campaigns": [c42, c45]})
    );
    for qs in [
        "k=0", "k=6", "k=-1", "k=two", "k=", "k=1&k=2", "limit=3", "k=2&x=1",
    ] {
        let (status, v) = get_json(&st, &format!("/v1/campaigns/top?{qs}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{qs}: {v}");
        assert_eq!(v["error"]["code"], "bad_request", "{qs}");
    }
    // No top list yet: 404.
    let (status, v) = get_json(&memory_state(), "/v1/campaigns/top").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["message"], "no top list of campaigns yet");
}

#[tokio::test]
async fn similar_users_and_recommendations_from_memory() {
    let st = engagement_state();
    let sim = |user_id: u64, shared: u32, union: u32| {
        as_read(
            json!({"user_id": user_id, "jaccard": shared as f64 / union as f64,
               "shared": shared, "union": union}),
        )
    };
    // Default k = similarity.k (3).
    assert_eq!(
        ok_json(&st, "/v1/users/7/similar").await,
        json!({"user_id": 7, "k": 3, "as_of_ms": H + 3 * M, "source": "memory",
               "similar": [sim(8, 2, 3), sim(9, 1, 4), sim(10, 1, 5)]})
    );
    assert_eq!(
        ok_json(&st, "/v1/users/8/similar?k=1").await["similar"],
        json!([sim(7, 2, 3)])
    );
    assert_eq!(
        ok_json(&st, "/v1/users/7/similar?k=1").await["similar"],
        json!([sim(8, 2, 3)])
    );

    // Default k = similarity.recommendations (2).
    assert_eq!(
        ok_json(&st, "/v1/users/7/recommendations").await,
        json!({"user_id": 7, "k": 2, "as_of_ms": H + 3 * M, "source": "memory",
        "recommendations": [
            {"campaign_id": 45, "score": 6.0, "campaign_score": 8.0,
             "because": [{"user_id": 8, "jaccard": 0.5}, {"user_id": 9, "jaccard": 0.25}]},
            {"campaign_id": 43, "score": 2.0, "campaign_score": 4.0,
             "because": [{"user_id": 8, "jaccard": 0.5}]},
        ]})
    );
    assert_eq!(
        ok_json(&st, "/v1/users/7/recommendations?k=1").await["recommendations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    for (uri, status, needle) in [
        (
            "/v1/users/9/similar",
            StatusCode::NOT_FOUND,
            "user 9 has no similar users",
        ),
        (
            "/v1/users/8/recommendations",
            StatusCode::NOT_FOUND,
            "user 8 has no recommendations",
        ),
        (
            "/v1/users/x/similar",
            StatusCode::BAD_REQUEST,
            "user id must be an unsigned integer",
        ),
        (
            "/v1/users/-7/recommendations",
            StatusCode::BAD_REQUEST,
            "user id",
        ),
        (
            "/v1/users/7/similar?k=4",
            StatusCode::BAD_REQUEST,
            "from 1 to 3",
        ),
        (
            "/v1/users/7/similar?k=0",
            StatusCode::BAD_REQUEST,
            "from 1 to 3",
        ),
        (
            "/v1/users/7/recommendations?k=3",
            StatusCode::BAD_REQUEST,
            "from 1 to 2",
        ),
        (
            "/v1/users/7/recommendations?n=1",
            StatusCode::BAD_REQUEST,
            "unknown field `n`",
        ),
        ("/v1/users/7", StatusCode::NOT_FOUND, "no route"),
    ] {
        let (s, v) = get_json(&st, uri).await;
        assert_eq!(s, status, "{uri}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{uri}: {msg:?} lacks {needle:?}");
    }

    // Counted per route template.
    let (_, _, body) = call(&st, "GET", "/metrics").await;
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
        let (status, v) = get_json(&down, uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {v}");
        assert_eq!(
            v,
            json!({"error": {"code": "unavailable", "message": "no store available: both down"}})
        );
        let (status, v) = get_json(&empty, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {v}");
        assert_eq!(v["error"]["code"], "not_found");
    }
}
