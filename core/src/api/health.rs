//! `GET /healthz` and the error body of every route.

use super::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Overall health in a [`HealthResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Every store answered (HTTP 200).
    Ok,
    /// At least one store did not (HTTP 503).
    Degraded,
}

/// Body of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok` when every store answered.
    pub status: HealthStatus,
    /// Per store: `ok`, or `down: <reason>`.
    pub stores: BTreeMap<Store, String>,
}

/// Body of `GET /healthz` on `eddy run --metrics-listen`: liveness from the age of the last
/// committed checkpoint (a stuck worker or store stops checkpoints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LivenessResponse {
    /// `ok` (HTTP 200) while checkpoints are committed within `timeout_ms`; `degraded` (503)
    /// once none has been for longer.
    pub status: HealthStatus,
    /// Wall-clock ms of the last committed checkpoint, `null` before the first.
    #[schema(required = true)]
    pub last_checkpoint_ms: Option<i64>,
    /// Ms since the last checkpoint (since the process started, before the first).
    pub checkpoint_age_ms: i64,
    /// The limit, `pipeline.liveness_timeout_ms`.
    pub timeout_ms: u64,
}

/// Machine-readable error code of an [`ErrorBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: invalid path or query parameters.
    BadRequest,
    /// 404: unknown route, campaign, user or list.
    NotFound,
    /// 405: the route exists, not for this method.
    MethodNotAllowed,
    /// 503: no store could answer.
    Unavailable,
    /// 500: a bug or unexpected failure.
    Internal,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// What kind of error.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
}

/// Body of every error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}
