//! The live dashboard at `GET /`: one HTML page with its script and style sheet, embedded in
//! the binary (`include_str!`, no CDN, nothing fetched from the internet). The page polls the
//! JSON routes every second (`/v1/status`, `/healthz`, `/v1/campaigns/top`) and draws its
//! charts as SVG in plain JavaScript; it has a query form for `/v1/counts`, a campaign, the
//! similar users and the recommendations of a user. Not part of the OpenAPI description.

use crate::AppState;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The page (`GET /`).
pub const HTML: &str = include_str!("../assets/dashboard.html");
/// Its script (`GET /dashboard/app.js`).
pub const JS: &str = include_str!("../assets/dashboard.js");
/// Its style sheet (`GET /dashboard/app.css`).
pub const CSS: &str = include_str!("../assets/dashboard.css");

/// One embedded asset with its content type; `no-cache` so a new binary's page is fetched.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `GET /`, `GET /dashboard/app.js`, `GET /dashboard/app.css`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", HTML) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
}
