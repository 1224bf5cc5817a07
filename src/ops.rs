//! The operations endpoint of `eddy run` (`--metrics-listen`): Prometheus `/metrics`, and a
//! liveness `/healthz` from the age of the last committed checkpoint. A worker or store that
//! is stuck stops checkpoints, so the endpoint turns 503 after `pipeline.liveness_timeout_ms`
//! and an orchestrator can restart the process.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use eddy_core::Metrics;
use eddy_core::api::{HealthStatus, LivenessResponse};

/// What the endpoint needs.
#[derive(Clone)]
pub struct Ops {
    /// The process's metrics (`last_checkpoint_ms` among them).
    pub metrics: Metrics,
    /// Wall-clock ms the process started at (the age before a first checkpoint).
    pub started_ms: i64,
    /// `pipeline.liveness_timeout_ms`.
    pub timeout_ms: u64,
}

impl Ops {
    /// Liveness at wall-clock `now_ms`.
    ///
    /// ```
    /// use eddy::ops::Ops;
    /// use eddy_core::Metrics;
    /// use eddy_core::api::HealthStatus;
    ///
    /// let ops = Ops { metrics: Metrics::new(), started_ms: 1_000, timeout_ms: 500 };
    /// assert_eq!(ops.liveness(1_400).status, HealthStatus::Ok); // starting up
    /// assert_eq!(ops.liveness(1_600).status, HealthStatus::Degraded); // no checkpoint yet
    /// ops.metrics.last_checkpoint_ms.set(1_550);
    /// assert_eq!(ops.liveness(1_600).status, HealthStatus::Ok);
    /// assert_eq!(ops.liveness(2_100).checkpoint_age_ms, 550);
    /// assert_eq!(ops.liveness(2_100).status, HealthStatus::Degraded);
    /// ```
    pub fn liveness(&self, now_ms: i64) -> LivenessResponse {
        let last = self.metrics.last_checkpoint_ms.get();
        let last_checkpoint_ms = (last > 0).then_some(last);
        let age = now_ms - last_checkpoint_ms.unwrap_or(self.started_ms);
        let status = if age <= self.timeout_ms as i64 {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        };
        LivenessResponse {
            status,
            last_checkpoint_ms,
            checkpoint_age_ms: age,
            timeout_ms: self.timeout_ms,
        }
    }
}

/// `/metrics` and `/healthz`.
pub fn router(ops: Ops) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

async fn healthz(State(ops): State<Ops>) -> Response {
    let body = ops.liveness(eddy_core::now_ms());
    let status = match body.status {
        HealthStatus::Ok => StatusCode::OK,
        HealthStatus::Degraded => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(ops): State<Ops>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ops.metrics.render(),
    )
        .into_response()
}
