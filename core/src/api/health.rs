//! `GET /healthz` and the error body of every route.

use super::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Overall health in a [`HealthResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Every store answered (HTTP 200).
    Ok,
    /// At least one store did not (HTTP 503).
    Degraded,
}

/// Body of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok` when every store answered.
    pub status: HealthStatus,
    /// Per store: `ok`, or `down: <reason>`.
    pub stores: BTreeMap<Store, String>,
}

/// Machine-readable error code of an [`ErrorBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What kind of error.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
}

/// Body of every error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}
