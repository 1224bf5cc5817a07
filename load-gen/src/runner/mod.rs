//! The Kafka load runner behind `eddy load-gen`, by concern:
//!
//! - **Open loop** ([`produce`](self)): message `i` is scheduled at `start + i / rate` and its
//!   event time is that scheduled wall-clock time. A slow broker therefore shows up as produce
//!   latency (measured from the scheduled time to the broker's acknowledgement), never as a
//!   quietly lower rate. `rate = 0` produces as fast as possible.
//! - **Freshness** (`probe`): every `probe_interval` a probe event (campaign
//!   [`PROBE_CAMPAIGN`], a view by [`probe::PROBE_USER`] at the generator's current time) is
//!   produced. A poller asks the query
//!   server for that campaign's view count every 5 ms. When the count reaches `k`, the `k`-th
//!   probe is visible, and its freshness is the time since it was sent. That is event creation
//!   to effect visible over HTTP, end to end.
//! - **Verify** ([`verify()`], [`verify_engagement`]): the runner keeps every valid event it
//!   produced, drops those the pipeline ruled late (read back from the dead-letter topic) and
//!   waits until the query server's answers equal a from-scratch recomputation
//!   ([`crate::expected`]); on timeout it fails with a readable diff. This assumes the run is
//!   the only producer for its event-time range.
//! - **Over time** ([`crate::timeline`]): every second of the run gets its throughput, latency
//!   percentiles and, with `metrics_url` (the pipeline's `/metrics`), its consumer lag; the
//!   [`Report`] carries the series and renders them as an SVG chart ([`Report::plot_svg`]).
//! - **Flags** ([`LoadGenArgs`]): the `eddy load-gen` command line, turned into a
//!   [`RunConfig`] under eddy's configuration.

mod args;
mod probe;
mod produce;
mod verify;

pub use crate::report::{Percentiles, Report};
pub use args::LoadGenArgs;
pub use probe::PROBE_CAMPAIGN;
pub use verify::{verify, verify_engagement};

use crate::GenConfig;
use crate::timeline::Timeline;
use eddy_core::api::ErrorBody;
use hdrhistogram::Histogram;
use rdkafka::error::KafkaError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Source topic.
    pub topic: String,
    /// Dead-letter topic (read by `verify`).
    pub dlq_topic: String,
    /// Target messages per second (0 = as fast as possible).
    pub rate: f64,
    /// Stop after this many messages (probes not included).
    pub events: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// With `events`: event times spread evenly over this much event time, ending when the
    /// run starts (instead of following the wall clock).
    pub event_span: Option<Duration>,
    /// Generator parameters. With a rate, event times follow the wall clock.
    pub generator: GenConfig,
    /// Query server base URL (`http://127.0.0.1:8080`) for probes and `verify`.
    pub query_url: Option<String>,
    /// The pipeline's Prometheus endpoint (`http://127.0.0.1:9100/metrics`), sampled every
    /// second for its consumer lag and watermark.
    pub metrics_url: Option<String>,
    /// Time between freshness probes.
    pub probe_interval: Duration,
    /// Producer `linger.ms`: larger batches, fewer broker requests, more latency.
    pub linger_ms: u64,
    /// Window length of the pipeline (for `verify`, and the panes of the similarity probes).
    pub window_ms: i64,
    /// Allowed lateness of the pipeline: a pane can close this long after its end.
    pub lateness_ms: i64,
    /// Send a similarity probe per pane and measure when it shows in the recommendations
    /// over HTTP (needs a query server, event times following the wall clock, similarity on).
    pub pane_probes: bool,
    /// Sliding-window length of the pipeline's engagement scores (for `verify`).
    pub sliding_ms: i64,
    /// Check the pipeline's answers against the expected totals.
    pub verify: bool,
    /// How long `verify` waits for the pipeline to drain.
    pub verify_timeout: Duration,
}

/// Run errors.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A Kafka call failed.
    #[error("kafka {op}: {source}")]
    Kafka {
        /// What was attempted.
        op: &'static str,
        /// Cause.
        source: KafkaError,
    },
    /// A query-server call failed.
    #[error("query server: {0}")]
    Http(String),
    /// The pipeline's answers differ from the expected totals.
    #[error("verification failed:\n{0}")]
    Mismatch(String),
    /// The configuration cannot work.
    #[error("invalid load-gen configuration: {0}")]
    Config(String),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The report or the plot could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> RunError {
    move |source| RunError::Kafka { op, source }
}

/// `GET url?query`, deserialized as the query server's response type `T` (from
/// [`eddy_core::api`]); a failed request or an error answer becomes its message.
async fn get<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    query: &impl Serialize,
) -> Result<T, String> {
    let resp = client
        .get(url)
        .query(query)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(match serde_json::from_str::<ErrorBody>(&body) {
            Ok(e) => format!("{status}: {}", e.error.message),
            Err(_) => format!("{status}: {body}"),
        });
    }
    resp.json().await.map_err(|e| e.to_string())
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        count: h.len(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

/// Runs the load (see the module docs).
pub async fn run(cfg: RunConfig) -> Result<Report, RunError> {
    if cfg.events.is_none() && cfg.duration.is_none() {
        return Err(RunError::Config("give --events or --duration".into()));
    }
    if cfg.verify && cfg.query_url.is_none() {
        return Err(RunError::Config("--verify needs a query server URL".into()));
    }
    let producer = produce::producer(&cfg)?;
    let generator = produce::generator(&cfg);
    let start = Instant::now();
    let timeline = Arc::new(Mutex::new(Timeline::new(start)));

    // Probes, and the poller that sees them over HTTP; the lag sampler.
    let probes: probe::Probes = Arc::default();
    let pane_probes: probe::PaneProbes = Arc::default();
    let producing = Arc::new(AtomicBool::new(true));
    let pane_poller = cfg
        .query_url
        .clone()
        .filter(|_| cfg.pane_probes)
        .map(|url| {
            tokio::spawn(probe::poll_panes(
                url,
                pane_probes.clone(),
                producing.clone(),
                cfg.window_ms,
            ))
        });
    let poller = cfg.query_url.clone().map(|url| {
        let from = eddy_core::now_ms() - 86_400_000;
        let poll = probe::poll(
            url,
            probes.clone(),
            producing.clone(),
            from,
            timeline.clone(),
        );
        tokio::spawn(poll)
    });
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = cfg
        .metrics_url
        .clone()
        .map(|url| tokio::spawn(probe::sample_lag(url, sampling.clone(), timeline.clone())));

    let sent = produce::produce(
        &cfg,
        producer,
        generator,
        start,
        &timeline,
        &probes,
        &pane_probes,
    )
    .await?;
    producing.store(false, Ordering::SeqCst);
    let (pane_freshness, pane_seen) = match pane_poller {
        Some(p) => {
            let (h, seen) = p.await.map_err(|e| RunError::Http(e.to_string()))?;
            (Some(percentiles(&h)), seen)
        }
        None => (None, 0),
    };
    let (freshness, ack_to_visible, seen) = match poller {
        Some(p) => {
            let (h, visible) = p.await.map_err(|e| RunError::Http(e.to_string()))?;
            // Every acknowledgement is in: `produce` awaited them all.
            let acked = probe::ack_to_visible(&probes.lock().expect("not poisoned"), &visible);
            let seen = visible.len() as u64;
            (Some(percentiles(&h)), Some(percentiles(&acked)), seen)
        }
        None => (None, None, 0),
    };
    // Lag is sampled through the drain until verification ends (or now, without it).
    let stop_sampling = |report: &mut Report| {
        sampling.store(false, Ordering::SeqCst);
        report.timeline = timeline.lock().expect("not poisoned").points();
        report.max_consumer_lag = report.timeline.iter().filter_map(|p| p.consumer_lag).max();
    };
    let mut report = Report {
        produced: sent.produced,
        malformed: sent.malformed,
        target_rate: cfg.rate,
        achieved_rate: sent.produced as f64 / sent.elapsed_secs.max(1e-9),
        elapsed_secs: sent.elapsed_secs,
        produce_latency_us: percentiles(&sent.latency),
        freshness_ms: freshness,
        ack_to_visible_ms: ack_to_visible,
        probes_sent: sent.probes,
        probes_seen: seen,
        similarity_freshness_ms: pane_freshness,
        similarity_probes_sent: sent.pane_probes,
        similarity_probes_seen: pane_seen,
        late_events: None,
        verified: None,
        max_consumer_lag: None,
        timeline: Vec::new(),
    };
    if cfg.verify {
        let checked = verify::check(&cfg, sent.valid).await;
        stop_sampling(&mut report);
        report.late_events = Some(checked?);
        report.verified = Some(true);
    } else {
        stop_sampling(&mut report);
    }
    if let Some(s) = sampler {
        let _ = s.await;
    }
    Ok(report)
}
