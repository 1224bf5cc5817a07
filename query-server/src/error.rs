//! The server's error type and its JSON rendering.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every error a request can end with. Rendered as
/// `{"error": {"code": <code>, "message": <display text>}}` with the matching status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// Invalid query parameters (400, code `bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// No such route (404, code `not_found`).
    #[error("no route for {0}")]
    NotFound(String),
    /// The route exists but no store knows the campaign, user or list asked for (404, code
    /// `not_found`; the message says what is missing).
    #[error("{0}")]
    Missing(String),
    /// The route exists but not for this method (405, code `method_not_allowed`).
    #[error("method {0} not allowed here")]
    MethodNotAllowed(String),
    /// No store could answer (503, code `unavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or unexpected failure (500, code `internal`).
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) | AppError::Missing(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `code` of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::NotFound(_) | AppError::Missing(_) => "not_found",
            AppError::MethodNotAllowed(_) => "method_not_allowed",
            AppError::Unavailable(_) => "unavailable",
            AppError::Internal(_) => "internal",
        }
    }
}

impl From<crate::backend::BackendError> for AppError {
    fn from(e: crate::backend::BackendError) -> Self {
        match e {
            crate::backend::BackendError::Unavailable(_) => AppError::Unavailable(e.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        (self.status(), Json(body)).into_response()
    }
}
