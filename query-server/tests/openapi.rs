//! The OpenAPI description: generated from the code, served at `/openapi.json`, committed as
//! `docs/openapi.json`. When the code changes the description, regenerate the file with
//! `EDDY_WRITE_OPENAPI=1 cargo test -p eddy-query-server --test openapi`.

use eddy_core::Metrics;
use eddy_core::api::ErrorCode;
use eddy_query_server::{AppState, MemoryBackend, ServerQueryLimits, app, openapi, openapi_json};
use eddy_testkit::http;
use serde_json::Value;
use std::sync::Arc;

fn server() -> axum::Router {
    app(AppState::new(
        Arc::new(MemoryBackend::empty()),
        Metrics::new(),
        ServerQueryLimits::default(),
    ))
}

#[test]
fn committed_description_matches_the_code() {
    let path = eddy_testkit::repo().join("docs/openapi.json");
    let generated = openapi_json();
    if std::env::var_os("EDDY_WRITE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the description the code generates: regenerate it with \
         `EDDY_WRITE_OPENAPI=1 cargo test -p eddy-query-server --test openapi` and commit it"
    );
}

#[tokio::test]
async fn served_at_openapi_json() {
    let reply = http::get(server(), "/openapi.json").await;
    assert_eq!(reply.status, 200);
    let served: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(served, serde_json::to_value(openapi()).unwrap());
    assert_eq!(served["openapi"], "3.1.0");
}

/// Every described path is a route of the server (answered by a handler, not the JSON 404 of
/// an unknown route), and every operation describes its parameters' and answers' shapes.
#[tokio::test]
async fn every_described_path_is_served() {
    let api = serde_json::to_value(openapi()).unwrap();
    let paths = api["paths"].as_object().unwrap();
    let mut described: Vec<&str> = paths.keys().map(String::as_str).collect();
    described.sort();
    assert_eq!(
        described,
        [
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/v1/campaigns/top",
            "/v1/campaigns/{id}",
            "/v1/counts",
            "/v1/status",
            "/v1/users/{id}/recommendations",
            "/v1/users/{id}/similar",
        ]
    );
    for (path, item) in paths {
        let uri = path.replace("{id}", "1");
        let reply = http::get(server(), &uri).await;
        if reply.status == 404 {
            let body = reply.error(404, ErrorCode::NotFound);
            assert!(
                !body.error.message.starts_with("no route"),
                "{path} is described but not served"
            );
        }
        let get = &item["get"];
        assert!(get["summary"].is_string(), "{path}: no summary");
        let responses = get["responses"].as_object().unwrap();
        assert!(responses.contains_key("200"), "{path}: no 200");
        assert!(responses.contains_key("503"), "{path}: no 503 (overload)");
        if path.starts_with("/v1/") {
            assert!(responses.contains_key("400"), "{path}: no 400");
        }
        // The status the server gave is described.
        assert!(
            responses.contains_key(&reply.status.to_string()),
            "{path}: answered {} which is not described",
            reply.status
        );
    }
}
