//! The query server's overload limits over real HTTP on a loopback port
//! ([`eddy_query_server::serve`]): a concurrency limit and a request timeout answered with a
//! JSON 503, a header-read timeout that closes a trickling connection, and a bound on the points
//! of a `/v1/counts` answer (a JSON 400 naming the limit). The slow store is a real
//! [`MemoryBackend`] behind a gate the test opens.

use eddy_core::api::{CountsResponse, ErrorCode};
use eddy_core::{CampaignEngagement, MemoryStore, Metrics, Neighbor, Recommendation};
use eddy_query_server::{
    AppState, Backend, BackendAnswer, BackendError, BoxFuture, EngagementQuery, MemoryBackend,
    ServerQueryLimits, Sourced, StoreHealth, WindowQuery,
};
use eddy_testkit::http::Reply;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const M: i64 = 60_000;
/// Longest any step of these tests may take before it counts as a hang.
const PATIENCE: Duration = Duration::from_secs(10);

/// A [`MemoryBackend`] whose `counts` waits for a permit of `gate` (the test adds permits to let
/// requests through); `waiting` counts the calls waiting.
struct Gated {
    inner: MemoryBackend,
    gate: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

impl Backend for Gated {
    fn counts(&self, query: WindowQuery) -> BoxFuture<'_, Result<BackendAnswer, BackendError>> {
        Box::pin(async move {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let permit = self.gate.acquire().await.expect("gate open");
            permit.forget();
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.inner.counts(query).await
        })
    }
    fn health(&self) -> BoxFuture<'_, Vec<StoreHealth>> {
        self.inner.health()
    }
    fn campaign(
        &self,
        query: EngagementQuery,
        campaign_id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<CampaignEngagement>>, BackendError>> {
        self.inner.campaign(query, campaign_id)
    }
    fn top_campaigns(
        &self,
        query: EngagementQuery,
        k: usize,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<CampaignEngagement>>>, BackendError>> {
        self.inner.top_campaigns(query, k)
    }
    fn similar_users(
        &self,
        user_id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Neighbor>>>, BackendError>> {
        self.inner.similar_users(user_id)
    }
    fn recommendations(
        &self,
        query: EngagementQuery,
        user_id: u64,
        n: usize,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Recommendation>>>, BackendError>> {
        self.inner.recommendations(query, user_id, n)
    }
}

struct Server {
    addr: SocketAddr,
    gate: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

/// Serves a gated memory backend with `limits` on a free loopback port.
fn server(limits: ServerQueryLimits) -> Server {
    let gate = Arc::new(Semaphore::new(0));
    let waiting = Arc::new(AtomicUsize::new(0));
    let backend = Gated {
        inner: MemoryBackend::new(Arc::new(RwLock::new(MemoryStore::default()))),
        gate: gate.clone(),
        waiting: waiting.clone(),
    };
    let state = AppState::new(Arc::new(backend), Metrics::new(), limits);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(eddy_query_server::serve(listener, state));
        addr
    });
    Server {
        addr,
        gate,
        waiting,
        _runtime: runtime,
    }
}

fn limits() -> ServerQueryLimits {
    ServerQueryLimits {
        window_ms: M,
        max_range_ms: 24 * 3_600_000,
        ..ServerQueryLimits::default()
    }
}

/// `GET path` over a fresh connection, waiting at most [`PATIENCE`] for the whole answer.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(PATIENCE))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let content_type = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-type")
            .then(|| v.trim().to_owned())
    });
    Ok(Reply {
        status,
        content_type,
        body: body.to_owned(),
    })
}

/// Waits (polling, up to [`PATIENCE`]) until `pred` holds.
fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

const COUNTS: &str = "/v1/counts?from=0&to=600000";

#[test]
fn requests_past_the_concurrency_limit_are_answered_503_at_once() {
    let srv = server(ServerQueryLimits {
        max_concurrent_requests: 2,
        request_timeout: Duration::from_secs(60),
        ..limits()
    });
    let addr = srv.addr;
    let held: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(addr, COUNTS)))
        .collect();
    wait_until("two requests in the backend", || {
        srv.waiting.load(Ordering::SeqCst) == 2
    });
    // A third request, to any route, is shed: a JSON 503, not a wait.
    let started = Instant::now();
    for path in [COUNTS, "/healthz"] {
        let shed = get(addr, path).expect("an answer, not a hang");
        let e = shed.error(503, ErrorCode::Unavailable);
        assert!(
            e.error.message.contains("server.max_concurrent_requests"),
            "{}",
            e.error.message
        );
    }
    assert!(started.elapsed() < PATIENCE);
    // Once the store answers, the held requests complete normally, and the server takes new
    // ones again.
    srv.gate.add_permits(100);
    for h in held {
        let r = h.join().unwrap().unwrap();
        let _: CountsResponse = r.ok();
    }
    let _: CountsResponse = get(addr, COUNTS).unwrap().ok();
}

#[test]
fn a_request_past_the_timeout_is_answered_503() {
    let srv = server(ServerQueryLimits {
        request_timeout: Duration::from_millis(200),
        ..limits()
    });
    // The gate stays closed: the store never answers.
    let r = get(srv.addr, COUNTS).expect("an answer, not a hang");
    let e = r.error(503, ErrorCode::Unavailable);
    assert!(
        e.error.message.contains("server.request_timeout_ms"),
        "{}",
        e.error.message
    );
    // The abandoned request released its slot: the health route still answers.
    assert_eq!(get(srv.addr, "/healthz").unwrap().status, 200);
}

#[test]
fn a_client_trickling_headers_is_disconnected() {
    let srv = server(ServerQueryLimits {
        header_read_timeout: Duration::from_millis(200),
        ..limits()
    });
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    // The headers never end.
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        // Closed by the server (possibly after a 408).
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("connection still open after {:?}: {e}", started.elapsed()),
    }
    assert!(started.elapsed() < PATIENCE);
    // Well-behaved clients are still served.
    assert_eq!(get(srv.addr, "/healthz").unwrap().status, 200);
}

#[test]
fn counts_answers_are_bounded_in_points_per_series() {
    let srv = server(ServerQueryLimits {
        max_points: 100,
        ..limits()
    });
    srv.gate.add_permits(1_000);
    // 100 windows: served.
    let _: CountsResponse = get(srv.addr, &format!("/v1/counts?from=0&to={}", 100 * M))
        .unwrap()
        .ok();
    // 101 windows: a 400 naming the limit, however few windows the stores hold.
    let r = get(srv.addr, &format!("/v1/counts?from=0&to={}", 100 * M + 1)).unwrap();
    let e = r.error(400, ErrorCode::BadRequest);
    assert!(
        e.error.message.contains("server.max_points") && e.error.message.contains("101"),
        "{}",
        e.error.message
    );
    // Hours are the points of an hourly answer.
    let hourly = get(
        srv.addr,
        &format!("/v1/counts?from=0&to={}&granularity=hour", 24 * 60 * M),
    )
    .unwrap();
    let _: CountsResponse = hourly.ok();
}
