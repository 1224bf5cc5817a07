//! The server's error type and its JSON rendering.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eddy_core::api::{ErrorBody, ErrorCode, ErrorDetail};

/// Every error a request can end with. Rendered as an [`ErrorBody`]
/// `{"error": {"code": <code>, "message": <display text>}}` with the matching status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// Invalid path or query parameters (400, code `bad_request`).
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
    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::BadRequest(_) => ErrorCode::BadRequest,
            AppError::NotFound(_) | AppError::Missing(_) => ErrorCode::NotFound,
            AppError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            AppError::Unavailable(_) => ErrorCode::Unavailable,
            AppError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
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
        (self.status(), Json(self.body())).into_response()
    }
}
