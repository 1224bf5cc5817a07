//! HTTP test support for the query server: requests to an [`axum::Router`] in process or to a
//! server on a loopback port, and answers decoded into the server's own types
//! ([`eddy_core::api`]), so tests never index into untyped JSON.

use axum::body::Body;
use axum::http::{Request, header};
use eddy_core::api::{
    AnswerMeta, CampaignResponse, ErrorBody, ErrorCode, RecommendationsResponse,
    SimilarUsersResponse, TopCampaignsResponse,
};
use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::net::SocketAddr;
use tower::ServiceExt;

/// One HTTP answer: status, content type and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The body decoded as `T`; panics (showing the body) if it is not JSON of exactly that
    /// shape: `T` serialized again must give back the same JSON (no field unknown to `T`).
    pub fn json<T: Serialize + DeserializeOwned>(&self) -> T {
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "not JSON ({}): {}",
            self.status,
            self.body
        );
        let t: T = serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "cannot decode a {} from {} {}: {e}",
                std::any::type_name::<T>(),
                self.status,
                self.body
            )
        });
        let raw: serde_json::Value = serde_json::from_str(&self.body).expect("JSON");
        assert_eq!(
            serde_json::to_value(&t).expect("serializable"),
            raw,
            "the body has fields a {} lacks",
            std::any::type_name::<T>()
        );
        t
    }

    /// The body of a 200 decoded as `T`; panics if the status is another.
    pub fn ok<T: Serialize + DeserializeOwned>(&self) -> T {
        assert_eq!(self.status, 200, "{}", self.body);
        self.json()
    }

    /// The error body of an answer with `status` and `code`; panics if it is anything else.
    pub fn error(&self, status: u16, code: ErrorCode) -> ErrorBody {
        assert_eq!(self.status, status, "{}", self.body);
        let e: ErrorBody = self.json();
        assert_eq!(e.error.code, code, "{}", self.body);
        e
    }

    /// The body of a 200 decoded as an engagement, similar-users or recommendations answer,
    /// with its wall-clock fields checked and cleared (so the rest compares exactly): with
    /// `fresh`, `updated_at_ms` within the last minute and `freshness_ms` under a minute;
    /// without, both `null` (no store reported an update time).
    pub fn answer<T: Serialize + DeserializeOwned + Debug + Answer>(&self, fresh: bool) -> T {
        let mut t: T = self.ok();
        let meta = t.meta_mut();
        let (updated, freshness) = (meta.updated_at_ms.take(), meta.freshness_ms.take());
        if fresh {
            let now = eddy_core::now_ms();
            let updated = updated.unwrap_or_else(|| panic!("updated_at_ms unset: {}", self.body));
            let freshness =
                freshness.unwrap_or_else(|| panic!("freshness_ms unset: {}", self.body));
            assert!(
                (now - 60_000..=now).contains(&updated) && (0..60_000).contains(&freshness),
                "{}",
                self.body
            );
        } else {
            assert_eq!((updated, freshness), (None, None), "{}", self.body);
        }
        t
    }

    /// `Ok(T)` for a 200, `Err((status, error body))` otherwise.
    pub fn result<T: Serialize + DeserializeOwned>(&self) -> Result<T, (u16, ErrorBody)> {
        if self.status == 200 {
            Ok(self.json())
        } else {
            Err((self.status, self.json()))
        }
    }
}

/// An answer carrying an [`AnswerMeta`] (read with [`Reply::answer`]).
pub trait Answer {
    /// The answer's meta.
    fn meta_mut(&mut self) -> &mut AnswerMeta;
}

macro_rules! answers {
    ($($t:ty),*) => {$(
        impl Answer for $t {
            fn meta_mut(&mut self) -> &mut AnswerMeta {
                &mut self.meta
            }
        }
    )*};
}
answers!(
    CampaignResponse,
    TopCampaignsResponse,
    SimilarUsersResponse,
    RecommendationsResponse
);

/// Sends `method uri` (empty body) to `app` in process.
pub async fn call(app: axum::Router, method: &str, uri: &str) -> Reply {
    let resp = app
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .expect("a valid request"),
        )
        .await
        .expect("the router answers");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().expect("an ASCII content type").to_owned());
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("a readable body")
        .to_bytes();
    Reply {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).expect("a UTF-8 body"),
    }
}

/// `GET uri` to `app` in process.
pub async fn get(app: axum::Router, uri: &str) -> Reply {
    call(app, "GET", uri).await
}

/// Serves `app` on a free loopback port, on a runtime of its own: the server lives as long as
/// the returned runtime.
pub fn serve(app: axum::Router) -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    (runtime, addr)
}

/// `GET http://{addr}{path}` over TCP, blocking (for tests that are not async).
pub fn get_blocking(addr: SocketAddr, path: &str) -> Reply {
    send_blocking(
        reqwest::Client::new().get(format!("http://{addr}{path}")),
        path,
    )
}

/// `GET http://{addr}{path}?{query}` over TCP with `query` URL-encoded (e.g. an
/// [`eddy_core::api::CountsQuery`]), blocking.
pub fn get_query_blocking(addr: SocketAddr, path: &str, query: &impl Serialize) -> Reply {
    send_blocking(
        reqwest::Client::new()
            .get(format!("http://{addr}{path}"))
            .query(query),
        path,
    )
}

fn send_blocking(request: reqwest::RequestBuilder, path: &str) -> Reply {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let resp = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().expect("an ASCII content type").to_owned());
        let body = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Reply {
            status,
            content_type,
            body,
        }
    })
}

/// `v` as a client reads it back: serde_json's default float parsing may differ from the exact
/// value in the last bit, so expected values go through the same text round trip as answers.
pub fn as_read<T: Serialize + DeserializeOwned + Debug>(v: &T) -> T {
    let text = serde_json::to_string(v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}
