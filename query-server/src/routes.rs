//! Routes, the counts and health handlers, and request counting (response types are in
//! [`eddy_core::api`]).

use crate::backend::{BackendAnswer, LayerStatus, WindowQuery, WindowRow};
use crate::error::AppError;
use crate::openapi::{ApiDoc, BadRequest, HealthOrUnavailable, Internal, Unavailable};
use crate::query::CountsParams;
use crate::{AppState, ServerQueryLimits};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use eddy_core::api::{
    CountsQuery, CountsResponse, Granularity, HealthResponse, HealthStatus, LayerJson, LayersJson,
    QueryEcho, RowSource, SeriesPoint,
};
use eddy_core::event::micros_to_amount;
use eddy_core::metrics::RouteLabel;
use eddy_core::{EventType, Metrics};
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const HOUR_MS: i64 = 3_600_000;

/// Every route, each with its OpenAPI description (a route is only added through
/// [`routes!`], which takes the handler's `#[utoipa::path]`).
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(counts))
        .routes(routes!(crate::engagement::top_campaigns))
        .routes(routes!(crate::engagement::campaign))
        .routes(routes!(crate::engagement::similar_users))
        .routes(routes!(crate::engagement::recommendations))
        .routes(routes!(crate::status::status))
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// The OpenAPI description of [`router`]'s routes (built once).
pub(crate) fn openapi() -> &'static utoipa::openapi::OpenApi {
    static API: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| api_router().into_openapi());
    &API
}

pub(crate) fn router(state: AppState) -> Router {
    let (routes, _) = api_router().split_for_parts();
    routes
        .merge(crate::dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(Overload::new(&state.config)),
            limit_requests,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// The overload limits of one router: a permit per request in progress, and a time limit.
struct Overload {
    permits: Arc<Semaphore>,
    max: usize,
    timeout: Duration,
}

impl Overload {
    fn new(limits: &ServerQueryLimits) -> Self {
        let max = limits
            .max_concurrent_requests
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            timeout: limits.request_timeout,
        }
    }
}

/// A 503 (`unavailable`) with `Retry-After: 1`.
fn overloaded(message: String) -> Response {
    let mut resp = AppError::Unavailable(message).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Sheds load instead of queueing it: past `max_concurrent_requests` requests in progress, a
/// request is answered 503 at once; a request running longer than `request_timeout` is
/// abandoned (its future dropped) and answered 503.
async fn limit_requests(State(limits): State<Arc<Overload>>, req: Request, next: Next) -> Response {
    let Ok(_permit) = limits.permits.clone().try_acquire_owned() else {
        return overloaded(format!(
            "overloaded: {} requests in progress (server.max_concurrent_requests); retry later",
            limits.max
        ));
    };
    match tokio::time::timeout(limits.timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => overloaded(format!(
            "request timed out after {} ms (server.request_timeout_ms)",
            limits.timeout.as_millis()
        )),
    }
}

async fn count_requests(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let resp = next.run(req).await;
    metrics
        .http_requests
        .get_or_create(&RouteLabel {
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::NotFound(format!("{method} {}", uri.path()))
}

async fn method_not_allowed(method: Method) -> AppError {
    AppError::MethodNotAllowed(method.to_string())
}

/// Prometheus text of the server's metrics (`eddy_http_requests_total{route, status}` counts
/// every request).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4",
         body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 503, response = Unavailable),
    )
)]
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Whether every store answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "Every store answered", body = HealthResponse),
        (status = 503, description = "A store is down (`status` is `degraded`, the store's \
                                      entry says why), or the request was shed",
         body = HealthOrUnavailable),
    )
)]
async fn healthz(State(state): State<AppState>) -> Response {
    let checks = state.backend.health().await;
    let all_ok = checks.iter().all(|c| c.status.is_ok());
    let stores = checks
        .into_iter()
        .map(|c| {
            let s = match c.status {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("down: {e}"),
            };
            (c.store, s)
        })
        .collect();
    let (status, health) = if all_ok {
        (StatusCode::OK, HealthStatus::Ok)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, HealthStatus::Degraded)
    };
    let body = HealthResponse {
        status: health,
        stores,
    };
    (status, Json(body)).into_response()
}

/// Window counts of `[from, to)`, per event type or for one campaign, merged from the batch
/// layer (finalized windows up to the boundary) and the speed layer (later windows).
///
/// `from < to`, `to - from <= server.max_range_ms` and at most `server.max_points` points per
/// series must hold, else a 400 naming the limit. A degraded answer (one layer failed) is
/// still a 200; with both layers down, a 503.
#[utoipa::path(
    get,
    path = "/v1/counts",
    tag = "counts",
    params(CountsQuery),
    responses(
        (status = 200, description = "The merged series", body = CountsResponse),
        (status = 400, response = BadRequest),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn counts(
    State(state): State<AppState>,
    params: CountsParams,
) -> Result<Json<CountsResponse>, AppError> {
    let window_ms = state.config.window_ms;
    if window_ms <= 0 {
        return Err(AppError::Internal("server window_ms must be > 0".into()));
    }
    let query = WindowQuery {
        event_type: params.event_type,
        campaign_id: params.campaign_id,
        from_ms: params.from_ms,
        to_ms: params.to_ms,
        window_ms,
    };
    let answer = match params.granularity {
        Granularity::Minute => state.backend.counts(query),
        // Whole finalized hours may come from hourly rollups; `hour_series` sums per hour.
        Granularity::Hour => state.backend.hourly_counts(query),
    }
    .await
    .inspect_err(|e| tracing::warn!(error = %e, "counts query failed"))?;
    let degraded = answer.batch.available == Some(false) || answer.speed.available == Some(false);
    if degraded {
        tracing::warn!(batch = ?answer.batch.error, speed = ?answer.speed.error, "degraded answer");
    }
    Ok(Json(build_response(
        params,
        window_ms,
        answer,
        eddy_core::now_ms(),
    )))
}

/// This description (OpenAPI 3.1, generated from the code).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI 3.1 description of this server",
         body = Object, content_type = "application/json"),
        (status = 503, response = Unavailable),
    )
)]
async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(openapi())
}

fn build_response(
    params: CountsParams,
    window_ms: i64,
    answer: BackendAnswer,
    now_ms: i64,
) -> CountsResponse {
    let BackendAnswer {
        watermark_ms,
        boundary_ms,
        updated_at_ms,
        batch,
        speed,
        rows,
    } = answer;
    let degraded = batch.available == Some(false) || speed.available == Some(false);
    let horizon = match (watermark_ms, boundary_ms) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let series = match params.granularity {
        Granularity::Minute => minute_series(rows, window_ms),
        Granularity::Hour => hour_series(rows, horizon),
    };
    CountsResponse {
        query: QueryEcho {
            event_type: params.event_type,
            campaign_id: params.campaign_id,
            from: params.from_ms,
            to: params.to_ms,
            granularity: params.granularity,
        },
        granularity: params.granularity,
        window_ms,
        watermark_ms,
        boundary_ms,
        as_of_ms: horizon,
        updated_at_ms,
        freshness_ms: updated_at_ms.map(|a| now_ms.saturating_sub(a)),
        degraded,
        layers: LayersJson {
            batch: layer_json(batch),
            speed: layer_json(speed),
        },
        series,
    }
}

fn layer_json(l: LayerStatus) -> LayerJson {
    LayerJson {
        source: l.source,
        available: l.available,
        windows: l.windows,
        error: l.error,
    }
}

fn amounts_json(a: Option<crate::backend::Amounts>) -> (Option<f64>, Option<f64>, Option<f64>) {
    match a {
        None => (None, None, None),
        Some(a) => (
            Some(micros_to_amount(a.sum_micros)),
            a.min_micros.map(micros_to_amount),
            a.max_micros.map(micros_to_amount),
        ),
    }
}

fn minute_series(mut rows: Vec<WindowRow>, window_ms: i64) -> Vec<SeriesPoint> {
    rows.sort_by_key(|r| (r.event_type, r.window_start_ms));
    rows.into_iter()
        .map(|r| {
            let (sum_amount, min_amount, max_amount) = amounts_json(r.amounts);
            SeriesPoint {
                window_start_ms: r.window_start_ms,
                window_end_ms: r.window_start_ms.saturating_add(window_ms),
                event_type: r.event_type,
                campaign_id: r.campaign_id,
                count: r.count,
                sum_amount,
                min_amount,
                max_amount,
                is_final: r.is_final,
                source: r.source,
            }
        })
        .collect()
}

/// Sums native windows per hour of their start. The hour is final when every window in it is
/// and the hour has ended under `horizon` (the later of watermark and boundary).
fn hour_series(rows: Vec<WindowRow>, horizon: Option<i64>) -> Vec<SeriesPoint> {
    struct Acc {
        campaign_id: Option<u64>,
        count: u64,
        amounts: Option<crate::backend::Amounts>,
        all_final: bool,
        source: RowSource,
    }
    let mut hours: BTreeMap<(EventType, i64), Acc> = BTreeMap::new();
    for r in rows {
        let hour = r.window_start_ms.div_euclid(HOUR_MS) * HOUR_MS;
        match hours.get_mut(&(r.event_type, hour)) {
            None => {
                hours.insert(
                    (r.event_type, hour),
                    Acc {
                        campaign_id: r.campaign_id,
                        count: r.count,
                        amounts: r.amounts,
                        all_final: r.is_final,
                        source: r.source,
                    },
                );
            }
            Some(acc) => {
                acc.count = acc.count.saturating_add(r.count);
                acc.amounts = match (acc.amounts, r.amounts) {
                    (Some(a), Some(b)) => Some(crate::backend::Amounts {
                        sum_micros: a.sum_micros.saturating_add(b.sum_micros),
                        min_micros: match (a.min_micros, b.min_micros) {
                            (Some(x), Some(y)) => Some(x.min(y)),
                            (x, y) => x.or(y),
                        },
                        max_micros: a.max_micros.max(b.max_micros),
                    }),
                    (a, b) => a.or(b),
                };
                acc.all_final &= r.is_final;
                if acc.source != r.source {
                    acc.source = RowSource::Mixed;
                }
            }
        }
    }
    hours
        .into_iter()
        .map(|((event_type, hour), acc)| {
            let end = hour.saturating_add(HOUR_MS);
            let (sum_amount, min_amount, max_amount) = amounts_json(acc.amounts);
            SeriesPoint {
                window_start_ms: hour,
                window_end_ms: end,
                event_type,
                campaign_id: acc.campaign_id,
                count: acc.count,
                sum_amount,
                min_amount,
                max_amount,
                is_final: acc.all_final && horizon.is_some_and(|h| end <= h),
                source: acc.source,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Amounts;

    fn row(
        start: i64,
        count: u64,
        sum: i64,
        min: Option<i64>,
        max: Option<i64>,
        fin: bool,
        src: RowSource,
    ) -> WindowRow {
        WindowRow {
            window_start_ms: start,
            event_type: EventType::Click,
            campaign_id: None,
            count,
            amounts: Some(Amounts {
                sum_micros: sum,
                min_micros: min,
                max_micros: max,
            }),
            is_final: fin,
            source: src,
        }
    }

    #[test]
    fn hours_combine_min_max_and_sources() {
        let rows = vec![
            row(-60_000, 1, 5, Some(5), Some(5), true, RowSource::Redis),
            row(0, 2, 0, None, None, true, RowSource::Redis),
            row(
                60_000,
                3,
                7_000_000,
                Some(1_000_000),
                Some(6_000_000),
                true,
                RowSource::Clickhouse,
            ),
            row(
                3_540_000,
                4,
                1_500_000,
                Some(500_000),
                Some(1_000_000),
                true,
                RowSource::Redis,
            ),
        ];
        let s = hour_series(rows, Some(3_600_000));
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].window_start_ms, s[0].window_end_ms), (-3_600_000, 0));
        assert_eq!(
            (s[0].count, s[0].sum_amount, s[0].is_final),
            (1, Some(0.000005), true)
        );
        assert_eq!((s[1].window_start_ms, s[1].count), (0, 9));
        assert_eq!(s[1].sum_amount, Some(8.5));
        assert_eq!((s[1].min_amount, s[1].max_amount), (Some(0.5), Some(6.0)));
        assert_eq!(s[1].source, RowSource::Mixed);
        assert!(s[1].is_final);
        // Not final when the hour has not ended under the horizon.
        let s = hour_series(
            vec![row(0, 1, 0, None, None, true, RowSource::Redis)],
            Some(3_599_999),
        );
        assert!(!s[0].is_final);
        assert_eq!(
            (s[0].min_amount, s[0].max_amount, s[0].sum_amount),
            (None, None, Some(0.0))
        );
    }
}
