//! The OpenAPI 3.1 description of the query server, generated from the code: every route is
//! registered through [`utoipa_axum::routes!`] in [`crate::routes`], so a route cannot exist
//! without its `#[utoipa::path]` description; the bodies and parameters are the
//! [`eddy_core::api`] types (`ToSchema` / `IntoParams`). Served at `GET /openapi.json` and
//! committed as `docs/openapi.json` (a test checks that the two agree; regenerate with
//! `EDDY_WRITE_OPENAPI=1 cargo test -p eddy-query-server --test openapi`).

use eddy_core::api::{ErrorBody, HealthResponse};
use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToResponse, ToSchema};

/// The document's fixed parts: title, description, tags and the shared error responses (the
/// paths are added by the router, [`crate::routes`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "eddy query server",
        description = "Window counts, campaign engagement, similar users and recommendations \
computed by eddy's pipeline, read from the batch layer (ClickHouse) and the speed layer (Redis), \
or from the embedded demo's memory store.\n\n\
Times are epoch milliseconds. Every answer's `as_of_ms` is the event-time watermark it \
reflects; `updated_at_ms` / `freshness_ms` are wall-clock.\n\n\
Every error is JSON `{\"error\": {\"code\", \"message\"}}` (`ErrorBody`). Any parameter a route \
does not define, or a repeated one, is a 400. Load is shed, never queued: past \
`server.max_concurrent_requests` requests in progress, or past `server.request_timeout_ms`, a \
request is answered 503 `unavailable` with `Retry-After: 1`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(
        schemas(ErrorBody),
        responses(BadRequest, NotFound, Internal, Unavailable)
    ),
    tags(
        (name = "counts", description = "Window counts merged from the batch and speed layers"),
        (name = "campaigns", description = "Campaign engagement over the sliding window"),
        (name = "users", description = "Similar users and recommendations"),
        (name = "operations", description = "Health, metrics and this description"),
    )
)]
pub(crate) struct ApiDoc;

/// Shorthand of the 400 of every `/v1` route.
#[derive(ToResponse)]
#[response(
    description = "Invalid path or query parameter, or an unknown or repeated one (code \
                   `bad_request`); the message names the parameter"
)]
#[allow(dead_code)] // a description, never built
pub(crate) struct BadRequest(ErrorBody);

/// Shorthand of a 404 of a route that looks something up.
#[derive(ToResponse)]
#[response(
    description = "No store knows the campaign or user, or there is no list yet (code `not_found`)"
)]
#[allow(dead_code)] // a description, never built
pub(crate) struct NotFound(ErrorBody);

/// Shorthand of the 500 of the routes that check the server's configuration.
#[derive(ToResponse)]
#[response(description = "A bug or a misconfigured server (code `internal`)")]
#[allow(dead_code)] // a description, never built
pub(crate) struct Internal(ErrorBody);

/// Shorthand of the 503 every route may answer.
#[derive(ToResponse)]
#[response(
    description = "Overloaded or timed out (with `Retry-After: 1`), or no store could answer \
                   (code `unavailable`)",
    headers(("Retry-After" = u32, description = "Seconds to wait; sent when overloaded"))
)]
#[allow(dead_code)] // a description, never built
pub(crate) struct Unavailable(ErrorBody);

/// The body of a 503 of `GET /healthz`: a store is down (`HealthResponse`), or the server
/// shed the request (`ErrorBody`).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // a description, never built
pub(crate) enum HealthOrUnavailable {
    /// A store did not answer.
    Health(HealthResponse),
    /// Overloaded or timed out.
    Unavailable(ErrorBody),
}

/// The `{id}` of `/v1/campaigns/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // a description, never built (the handler takes `crate::query::CampaignId`)
pub(crate) struct CampaignPath {
    /// The campaign (an unsigned 64-bit integer).
    id: u64,
}

/// The `{id}` of `/v1/users/{id}/...`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // a description, never built (the handler takes `crate::query::UserId`)
pub(crate) struct UserPath {
    /// The user (an unsigned 64-bit integer).
    id: u64,
}
