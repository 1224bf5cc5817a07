//! The checks of the `http_params` fuzz target, shared with the stable regression test
//! `query-server/tests/fuzz_corpus_http.rs` (included there with `#[path]`): the real router
//! over a populated `MemoryBackend`, driven in process with `tower::ServiceExt::oneshot`.
//!
//! An input is one byte choosing the method and a route prefix, then the rest of the request
//! target (bytes outside printable ASCII, and `#`, are percent-encoded so every input reaches
//! the router; `%`, `?`, `&`, `=`, `/` stay as they are).

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Method, Request, header};
use eddy_core::api::{
    CampaignResponse, CountsResponse, HealthResponse, RecommendationsResponse,
    SimilarUsersResponse, StatusResponse, TopCampaignsResponse,
};
use eddy_core::rows::{CampaignWindowCount, Checkpoint, CountsBatch, TypeWindowStats};
use eddy_core::{EventType, MemoryStore, Metrics};
use eddy_query_server::{AppState, MemoryBackend, ServerQueryLimits};
use http_body_util::BodyExt;
use std::sync::{Arc, RwLock};
use tower::ServiceExt;

/// An hour-aligned epoch-ms time near 2023-11-14.
pub const H: i64 = 1_699_999_200_000;
/// One minute, the window length of [`state`].
pub const M: i64 = 60_000;

/// Route prefixes the first input byte chooses from.
const PREFIXES: [&str; 10] = [
    "/v1/counts?",
    "/v1/counts?from=1699999200000&to=1700002800000&",
    "/v1/counts?from=1699999200000&to=1700002800000&granularity=hour&",
    "/v1/campaigns/top?",
    "/v1/campaigns/",
    "/v1/users/",
    "/v1/users/1/similar?",
    "/v1/users/1/recommendations?",
    "/healthz?",
    "/",
];

/// Limits of [`state`].
pub fn limits() -> ServerQueryLimits {
    ServerQueryLimits {
        max_range_ms: 24 * 3_600_000,
        window_ms: M,
        sliding_ms: 10 * M,
        top_k: 5,
        similar_k: 3,
        recommendations: 2,
        max_points: 2_000,
        ..ServerQueryLimits::default()
    }
}

fn tw(start: i64, event_type: EventType, count: u64, amount: Option<i64>) -> TypeWindowStats {
    TypeWindowStats {
        window_start_ms: start,
        event_type,
        count,
        sum_micros: amount.unwrap_or(0) * count as i64,
        min_micros: amount,
        max_micros: amount,
    }
}

fn cw(start: i64, campaign_id: u64, event_type: EventType, count: u64) -> CampaignWindowCount {
    CampaignWindowCount {
        window_start_ms: start,
        campaign_id,
        event_type,
        count,
    }
}

/// A memory store with final windows (batch layer, before the checkpoint at `H + 1m`), open
/// ones after it, and campaign counts; behind the real router state.
pub fn state() -> AppState {
    use EventType::*;
    let mut s = MemoryStore::default();
    s.apply(&CountsBatch {
        epoch: 1,
        watermark_ms: H + 2 * M,
        window_size_ms: M,
        open_types: vec![
            tw(H + 2 * M, Click, 1, Some(750_000)),
            tw(H + 2 * M, View, 4, None),
            tw(H + 59 * M, Conversion, 1, Some(i64::MAX / 2)),
            tw(H + 60 * M, Conversion, 2, Some(20_000_000)),
        ],
        open_campaigns: vec![cw(H + 2 * M, 42, Click, 1)],
        final_types: vec![
            tw(H, Click, 3, Some(500_000)),
            tw(H, View, 10, None),
            tw(H + M, Conversion, 2, Some(10_000_000_000_000)),
        ],
        final_campaigns: vec![cw(H, 42, Click, 2), cw(H, u64::MAX, View, 7)],
        ..Default::default()
    });
    s.apply_checkpoint(&Checkpoint {
        state: None,
        topic: "events".into(),
        epoch: 1,
        watermark_ms: H + M,
        partitions: vec![],
    });
    AppState::new(
        Arc::new(MemoryBackend::new(Arc::new(RwLock::new(s)))),
        Metrics::new(),
        limits(),
    )
}

/// The request an input stands for: `None` when the bytes do not form a valid request target
/// (a client could not send it; hyper would refuse it before the router).
pub fn request_of(data: &[u8]) -> Option<Request<Body>> {
    let (&first, rest) = data.split_first()?;
    let method = if first & 0x80 != 0 {
        Method::POST
    } else {
        Method::GET
    };
    let mut uri = String::from(PREFIXES[usize::from(first & 0x7f) % PREFIXES.len()]);
    for &b in rest {
        if b.is_ascii_graphic() && b != b'#' {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .ok()
}

/// What a 200 of `path` must deserialize to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Counts,
    Top,
    Campaign,
    Similar,
    Recommendations,
    Health,
    Metrics,
    Status,
    OpenApi,
    /// The dashboard's page and assets: (path, content type prefix).
    Dashboard(&'static str),
}

fn answer_of(path: &str) -> Option<Answer> {
    let segs: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    Some(match segs.as_slice() {
        ["v1", "counts"] => Answer::Counts,
        ["v1", "campaigns", "top"] => Answer::Top,
        ["v1", "campaigns", id] if !id.is_empty() => Answer::Campaign,
        ["v1", "users", id, "similar"] if !id.is_empty() => Answer::Similar,
        ["v1", "users", id, "recommendations"] if !id.is_empty() => Answer::Recommendations,
        ["healthz"] => Answer::Health,
        ["metrics"] => Answer::Metrics,
        ["v1", "status"] => Answer::Status,
        ["openapi.json"] => Answer::OpenApi,
        [""] => Answer::Dashboard("text/html"),
        ["dashboard", "app.js"] => Answer::Dashboard("text/javascript"),
        ["dashboard", "app.css"] => Answer::Dashboard("text/css"),
        _ => return None,
    })
}

fn parses<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) {
    if let Err(e) = serde_json::from_slice::<T>(body) {
        panic!(
            "a 200 body is not a {what}: {e}: {}",
            String::from_utf8_lossy(body)
        );
    }
}

/// Sends the request `data` stands for through `app` and checks the answer (panicking on a
/// violation): no 5xx; a 2xx only on a known route, with a JSON body of that route's
/// documented type (Prometheus text for `/metrics`); any other answer a JSON
/// `{"error": {"code", "message"}}` whose code matches the status. Returns the status, or
/// `None` when `data` is no valid request target.
pub async fn check_http(app: axum::Router, data: &[u8]) -> Option<u16> {
    let req = request_of(data)?;
    let uri = req.uri().clone();
    let answer = answer_of(uri.path());
    let resp = app.oneshot(req).await.expect("the router is infallible");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("a readable body")
        .to_bytes();
    let show = || format!("{uri} -> {status}: {}", String::from_utf8_lossy(&body));
    assert!(!status.is_server_error(), "5xx: {}", show());
    if status.is_success() {
        assert_eq!(status.as_u16(), 200, "{}", show());
        let answer = answer.unwrap_or_else(|| panic!("200 on an unknown route: {}", show()));
        if answer == Answer::Metrics {
            assert!(content_type.starts_with("text/plain"), "{}", show());
            return Some(200);
        }
        if let Answer::Dashboard(kind) = answer {
            assert!(content_type.starts_with(kind), "{}", show());
            return Some(200);
        }
        assert!(content_type.starts_with("application/json"), "{}", show());
        match answer {
            Answer::Counts => {
                parses::<CountsResponse>(&body, "CountsResponse");
                let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                let points = v["series"].as_array().map_or(0, Vec::len);
                // At most max_points per series: 3 event types, or one campaign's 3 types.
                assert!(points <= 3 * limits().max_points, "{}", show());
            }
            Answer::Top => parses::<TopCampaignsResponse>(&body, "TopCampaignsResponse"),
            Answer::Campaign => parses::<CampaignResponse>(&body, "CampaignResponse"),
            Answer::Similar => parses::<SimilarUsersResponse>(&body, "SimilarUsersResponse"),
            Answer::Recommendations => {
                parses::<RecommendationsResponse>(&body, "RecommendationsResponse")
            }
            Answer::Health => parses::<HealthResponse>(&body, "HealthResponse"),
            Answer::Status => parses::<StatusResponse>(&body, "StatusResponse"),
            Answer::OpenApi => parses::<serde_json::Value>(&body, "JSON document"),
            Answer::Metrics | Answer::Dashboard(_) => unreachable!(),
        }
        return Some(200);
    }
    assert!(content_type.starts_with("application/json"), "{}", show());
    let v: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", show()));
    let expected = match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        _ => panic!("undocumented status: {}", show()),
    };
    assert_eq!(v["error"]["code"], expected, "{}", show());
    assert!(v["error"]["message"].is_string(), "{}", show());
    Some(status.as_u16())
}
