//! The dashboard at `/`: the page and its embedded assets are served with their content types,
//! and the page only refers to assets the server has (nothing from another host).

use eddy_core::Metrics;
use eddy_query_server::{AppState, MemoryBackend, ServerQueryLimits, app, dashboard};
use eddy_testkit::http;
use std::sync::Arc;

fn server() -> axum::Router {
    app(AppState::new(
        Arc::new(MemoryBackend::empty()),
        Metrics::new(),
        ServerQueryLimits::default(),
    ))
}

#[tokio::test]
async fn serves_the_page_and_its_assets() {
    for (uri, content_type, body) in [
        ("/", "text/html; charset=utf-8", dashboard::HTML),
        (
            "/dashboard/app.js",
            "text/javascript; charset=utf-8",
            dashboard::JS,
        ),
        (
            "/dashboard/app.css",
            "text/css; charset=utf-8",
            dashboard::CSS,
        ),
    ] {
        let reply = http::get(server(), uri).await;
        assert_eq!(reply.status, 200, "{uri}");
        assert_eq!(reply.content_type.as_deref(), Some(content_type), "{uri}");
        assert_eq!(reply.body, body, "{uri}");
    }
    assert!(dashboard::HTML.contains("<title>eddy dashboard</title>"));
}

/// Every `src=`/`href=` of the page is a path of this server (or a data: URL) that answers
/// 200: the page works offline, from the binary alone.
#[tokio::test]
async fn the_page_refers_only_to_served_assets() {
    let mut refs = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in dashboard::HTML.match_indices(attr) {
            let rest = &dashboard::HTML[i + attr.len()..];
            refs.push(&rest[..rest.find('"').unwrap()]);
        }
    }
    assert!(refs.contains(&"/dashboard/app.js") && refs.contains(&"/dashboard/app.css"));
    for r in refs {
        if r.starts_with("data:") {
            continue;
        }
        assert!(r.starts_with('/'), "{r} is not on this server");
        let reply = http::get(server(), r).await;
        assert_eq!(reply.status, 200, "{r}");
    }
    // The script fetches only routes of this server.
    for route in ["/v1/status", "/healthz", "/v1/campaigns/top"] {
        assert!(dashboard::JS.contains(route), "{route}");
    }
    // No other host (the SVG namespace is a name, not fetched).
    let js = dashboard::JS.replace("http://www.w3.org/2000/svg", "");
    assert!(!js.contains("http://") && !js.contains("https://"));
}

/// The dashboard's routes are not in the OpenAPI description (which lists the JSON API).
#[test]
fn not_in_the_openapi_description() {
    let api = serde_json::to_value(eddy_query_server::openapi()).unwrap();
    let paths = api["paths"].as_object().unwrap();
    assert!(!paths.contains_key("/") && !paths.keys().any(|p| p.starts_with("/dashboard")));
}
