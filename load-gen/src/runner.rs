//! The Kafka load runner behind `eddy load-gen`.
//!
//! - **Open loop.** Message `i` is scheduled at `start + i / rate` and its event time is that
//!   scheduled wall-clock time. A slow broker therefore shows up as produce latency (measured
//!   from the scheduled time to the broker's acknowledgement), never as a quietly lower rate.
//!   `rate = 0` produces as fast as possible.
//! - **Freshness.** Every `probe_interval` a probe event (campaign [`PROBE_CAMPAIGN`], a view at
//!   the current time) is produced. A poller asks the query server for that campaign's view
//!   count every 5 ms. When the count reaches `k`, the `k`-th probe is visible, and its
//!   freshness is the time since it was sent. That is event creation to effect visible over
//!   HTTP, end to end.
//! - **Verify.** The runner keeps every valid event it produced. After the run it reads the
//!   dead-letter topic and drops the events eddy ruled late there. It then waits until the
//!   query server's per-type series, and the busiest campaigns' series, equal a from-scratch
//!   recomputation ([`WindowTotals`]), and the busiest campaigns' sliding-window engagement
//!   equals a recomputation over the events still in the window at the answer's `as_of`
//!   ([`crate::expected::engagement`]). On timeout it fails with a readable diff. This assumes
//!   the run is the only producer for its event-time range.
//! - **Over time.** Every second of the run gets its throughput, latency percentiles and, with
//!   `metrics_url` (the pipeline's `/metrics`), its consumer lag ([`crate::timeline`]); the
//!   report carries the series and renders them as an SVG chart ([`Report::plot_svg`]).

use crate::expected::WindowTotals;
use crate::timeline::{Point, Timeline};
use crate::{GenConfig, Generated, Generator};
use eddy_core::{Event, WindowSpec};
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Campaign id reserved for freshness probes.
pub const PROBE_CAMPAIGN: u64 = 4_000_000_000;

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
    /// Window length of the pipeline (for `verify`).
    pub window_ms: i64,
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
}

/// Latency percentiles of one histogram.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Messages produced, probes included.
    pub produced: u64,
    /// Of which malformed.
    pub malformed: u64,
    /// Target rate (0 = as fast as possible).
    pub target_rate: f64,
    /// Produced messages per second, from the start to the last acknowledgement.
    pub achieved_rate: f64,
    /// Seconds from the start to the last acknowledgement.
    pub elapsed_secs: f64,
    /// Scheduled-to-acknowledged latency, microseconds.
    pub produce_latency_us: Percentiles,
    /// Probe sent to visible over HTTP, milliseconds (with a query server).
    pub freshness_ms: Option<Percentiles>,
    /// Probes sent.
    pub probes_sent: u64,
    /// Probes seen over HTTP.
    pub probes_seen: u64,
    /// Events the pipeline ruled late (found on the dead-letter topic), with `verify`.
    pub late_events: Option<u64>,
    /// `Some(true)` when `verify` ran and passed.
    pub verified: Option<bool>,
    /// Largest consumer lag sampled from the pipeline's metrics, messages.
    pub max_consumer_lag: Option<i64>,
    /// One point per second of the run, including the drain after the last message.
    pub timeline: Vec<Point>,
}

impl Report {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let row = |name: &str, unit: &str, p: &Percentiles| {
            format!(
                "{name:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {unit}\n",
                p.count, p.p50, p.p90, p.p99, p.p999, p.max
            )
        };
        let mut out = format!(
            "produced {} messages ({} malformed) in {:.2} s: {:.0} msg/s (target {})\n",
            self.produced,
            self.malformed,
            self.elapsed_secs,
            self.achieved_rate,
            if self.target_rate > 0.0 {
                format!("{:.0}/s", self.target_rate)
            } else {
                "max".into()
            }
        );
        out.push_str(&format!(
            "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "", "count", "p50", "p90", "p99", "p99.9", "max"
        ));
        out.push_str(&row("produce→ack", "µs", &self.produce_latency_us));
        if let Some(f) = &self.freshness_ms {
            out.push_str(&row("event→visible (HTTP)", "ms", f));
            out.push_str(&format!(
                "probes seen {}/{}\n",
                self.probes_seen, self.probes_sent
            ));
        }
        if let Some(v) = self.verified {
            out.push_str(&format!(
                "verify: {} ({} events ruled late by the pipeline)\n",
                if v { "OK" } else { "FAILED" },
                self.late_events.unwrap_or(0)
            ));
        }
        out
    }
}

impl Report {
    /// The time series as an SVG chart: throughput, latency percentiles per second, lag.
    pub fn plot_svg(&self) -> String {
        let title = format!(
            "eddy load-gen: {} msgs at {} ({:.0} msg/s achieved)",
            self.produced,
            if self.target_rate > 0.0 {
                format!("{:.0}/s", self.target_rate)
            } else {
                "max rate".into()
            },
            self.achieved_rate
        );
        crate::plot::svg(
            &title,
            &crate::timeline::panels(&self.timeline, self.target_rate),
        )
    }
}

fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> RunError {
    move |source| RunError::Kafka { op, source }
}

/// Runs the load (see the module docs).
pub async fn run(cfg: RunConfig) -> Result<Report, RunError> {
    if cfg.events.is_none() && cfg.duration.is_none() {
        return Err(RunError::Config("give --events or --duration".into()));
    }
    if cfg.verify && cfg.query_url.is_none() {
        return Err(RunError::Config("--verify needs a query server URL".into()));
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("acks", "all")
        .set("linger.ms", cfg.linger_ms.to_string())
        .set("message.timeout.ms", "60000")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .map_err(kafka("producer"))?;
    let mut gen_cfg = cfg.generator.clone();
    if cfg.rate > 0.0 {
        gen_cfg.start_ts_ms = eddy_core::now_ms();
        gen_cfg.events_per_sec = cfg.rate;
    }
    let mut generator = Generator::new(gen_cfg);

    // Acknowledgements are awaited in order on their own task.
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("valid sigfig")));
    let start = Instant::now();
    let timeline = Arc::new(Mutex::new(Timeline::new(start)));
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, DeliveryFuture)>();
    let acks = {
        let latency = latency.clone();
        let timeline = timeline.clone();
        tokio::spawn(async move {
            let mut failures = 0u64;
            while let Some((scheduled, delivery)) = ack_rx.recv().await {
                match delivery.await {
                    Ok(Ok(_)) => {
                        let now = Instant::now();
                        let us = now.saturating_duration_since(scheduled).as_micros() as u64;
                        latency.lock().expect("not poisoned").record(us.max(1)).ok();
                        timeline.lock().expect("not poisoned").acked(scheduled, now);
                    }
                    _ => failures += 1,
                }
            }
            failures
        })
    };

    // Probes, and the poller that sees them over HTTP.
    let probe_sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let producing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = cfg.query_url.clone().map(|url| {
        let sent = probe_sent.clone();
        let producing = producing.clone();
        let from = eddy_core::now_ms() - 86_400_000;
        tokio::spawn(poll_probes(url, sent, producing, from, timeline.clone()))
    });
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = cfg
        .metrics_url
        .clone()
        .map(|url| tokio::spawn(sample_lag(url, sampling.clone(), timeline.clone())));
    let total = cfg
        .events
        .map(|e| e as f64)
        .or(cfg.duration.map(|d| d.as_secs_f64()));

    let mut valid: Vec<(u64, Event)> = Vec::new();
    let (mut produced, mut malformed, mut probes) = (0u64, 0u64, 0u64);
    let mut next_probe = start;
    let mut last_progress = start;
    loop {
        let n = generator.generated();
        if cfg.events.is_some_and(|e| n >= e) || cfg.duration.is_some_and(|d| start.elapsed() >= d)
        {
            break;
        }
        let scheduled = if cfg.rate > 0.0 {
            start + Duration::from_secs_f64(n as f64 / cfg.rate)
        } else {
            Instant::now()
        };
        if scheduled > Instant::now() {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        if cfg.query_url.is_some() && Instant::now() >= next_probe {
            probes += 1;
            let json = format!(
                r#"{{"event_id":"probe-{}-{probes}","ts":{},"user_id":0,"campaign_id":{PROBE_CAMPAIGN},"event_type":"view"}}"#,
                cfg.generator.run_id,
                eddy_core::now_ms()
            );
            let event = eddy_core::parse_event(json.as_bytes()).expect("probes are valid");
            valid.push((0, event));
            let key = format!("probe-{probes}");
            let sent_at = Instant::now();
            send(
                &producer,
                &cfg.topic,
                &key,
                json.as_bytes(),
                sent_at,
                &ack_tx,
            )
            .await?;
            probe_sent.lock().expect("not poisoned").push(sent_at);
            timeline.lock().expect("not poisoned").sent(sent_at);
            produced += 1;
            next_probe += cfg.probe_interval;
        }
        let msg = generator.next_message();
        let id = generator.generated();
        match &msg {
            Generated::Valid(e, _) => valid.push((id, *e)),
            Generated::Malformed(_) => malformed += 1,
        }
        send(
            &producer,
            &cfg.topic,
            &id.to_string(),
            msg.bytes(),
            scheduled,
            &ack_tx,
        )
        .await?;
        timeline.lock().expect("not poisoned").sent(scheduled);
        produced += 1;
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            let done = match (cfg.events, total) {
                (Some(e), _) => n as f64 / e as f64,
                (None, Some(d)) => secs / d,
                _ => 0.0,
            };
            let last = timeline.lock().expect("not poisoned").points();
            let (acked, lag) = last
                .iter()
                .rev()
                .nth(1)
                .map_or((0, None), |p| (p.acked, p.consumer_lag));
            eprint!(
                "\r{} {produced} msgs, {secs:.0} s, {:.0} msg/s avg, {acked} acked/s{}   ",
                progress_bar(done),
                produced as f64 / secs,
                lag.map(|l| format!(", lag {l}")).unwrap_or_default()
            );
        }
    }
    drop(ack_tx);
    let failures = acks.await.map_err(|e| RunError::Http(e.to_string()))?;
    // Throughput counts until the broker acknowledged the last message.
    let elapsed = start.elapsed().as_secs_f64();
    if failures > 0 {
        return Err(RunError::Kafka {
            op: "deliver",
            source: KafkaError::Canceled,
        })
        .inspect_err(|_| eprintln!("{failures} messages were not acknowledged"));
    }
    producing.store(false, std::sync::atomic::Ordering::SeqCst);
    let (freshness, seen) = match poller {
        Some(p) => {
            let (h, seen) = p.await.map_err(|e| RunError::Http(e.to_string()))?;
            (Some(Percentiles::of(&h)), seen)
        }
        None => (None, 0),
    };
    // Lag is sampled through the drain until verification ends (or now, without it).
    let stop_sampling = |report: &mut Report| {
        sampling.store(false, std::sync::atomic::Ordering::SeqCst);
        report.timeline = timeline.lock().expect("not poisoned").points();
        report.max_consumer_lag = report.timeline.iter().filter_map(|p| p.consumer_lag).max();
    };
    let mut report = Report {
        produced,
        malformed,
        target_rate: cfg.rate,
        achieved_rate: produced as f64 / elapsed.max(1e-9),
        elapsed_secs: elapsed,
        produce_latency_us: Percentiles::of(&latency.lock().expect("not poisoned")),
        freshness_ms: freshness,
        probes_sent: probes,
        probes_seen: seen,
        late_events: None,
        verified: None,
        max_consumer_lag: None,
        timeline: Vec::new(),
    };
    if !cfg.verify {
        stop_sampling(&mut report);
    }
    if cfg.verify {
        let late = late_event_ids(&cfg.brokers, &cfg.dlq_topic)?;
        let window = WindowSpec::new(cfg.window_ms);
        let run_prefix = format!("{}-{}-", cfg.generator.run_id, cfg.generator.seed);
        let mut ruled_late = 0;
        let kept = valid.into_iter().filter_map(|(id, e)| {
            if id > 0 && late.contains(&format!("{run_prefix}{id}")) {
                ruled_late += 1;
                None
            } else {
                Some(e)
            }
        });
        let kept: Vec<Event> = kept.collect();
        let expected = WindowTotals::of(kept.iter().copied(), window);
        report.late_events = Some(ruled_late);
        let url = cfg.query_url.as_deref().expect("checked above");
        let checked = async {
            verify(url, &expected, cfg.window_ms, cfg.verify_timeout).await?;
            verify_engagement(url, &kept, window, cfg.sliding_ms, cfg.verify_timeout).await
        }
        .await;
        stop_sampling(&mut report);
        checked?;
        report.verified = Some(true);
    }
    if let Some(s) = sampler {
        let _ = s.await;
    }
    Ok(report)
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    scheduled: Instant,
    acks: &tokio::sync::mpsc::UnboundedSender<(Instant, DeliveryFuture)>,
) -> Result<(), RunError> {
    loop {
        match producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
            Ok(delivery) => {
                let _ = acks.send((scheduled, delivery));
                return Ok(());
            }
            // A full local queue is the broker falling behind: wait, and let it show as latency.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((source, _)) => {
                return Err(RunError::Kafka {
                    op: "produce",
                    source,
                });
            }
        }
    }
}

/// The probe campaign's total view count over HTTP.
async fn probe_count(client: &reqwest::Client, url: &str, from: i64) -> Option<u64> {
    let to = eddy_core::now_ms() + 3_600_000;
    let body: serde_json::Value = client
        .get(format!("{url}/v1/counts"))
        .query(&[
            ("campaign_id", PROBE_CAMPAIGN.to_string()),
            ("event_type", "view".to_string()),
            ("from", from.to_string()),
            ("to", to.to_string()),
        ])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(
        body["series"]
            .as_array()?
            .iter()
            .filter_map(|p| p["count"].as_u64())
            .sum(),
    )
}

/// `[#####.....] 50%`.
fn progress_bar(done: f64) -> String {
    let filled = (done.clamp(0.0, 1.0) * 20.0).round() as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        done.clamp(0.0, 1.0) * 100.0
    )
}

/// Samples the pipeline's consumer lag and watermark every second while `sampling`.
async fn sample_lag(
    url: String,
    sampling: Arc<std::sync::atomic::AtomicBool>,
    timeline: Arc<Mutex<Timeline>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("a plain client builds");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while sampling.load(std::sync::atomic::Ordering::SeqCst) {
        tick.tick().await;
        let Ok(resp) = client.get(&url).send().await else {
            continue;
        };
        let Ok(text) = resp.text().await else {
            continue;
        };
        let (lag, watermark) = crate::timeline::parse_metrics(&text);
        let wm_lag = watermark
            .filter(|w| *w > 0)
            .map(|w| eddy_core::now_ms() - w);
        timeline
            .lock()
            .expect("not poisoned")
            .lag(Instant::now(), lag, wm_lag);
    }
}

async fn poll_probes(
    url: String,
    sent: Arc<Mutex<Vec<Instant>>>,
    producing: Arc<std::sync::atomic::AtomicBool>,
    from: i64,
    timeline: Arc<Mutex<Timeline>>,
) -> (Histogram<u64>, u64) {
    let client = reqwest::Client::new();
    let mut h = Histogram::<u64>::new(3).expect("valid sigfig");
    let mut seen = 0usize;
    let mut ended: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tick.tick().await;
        if !producing.load(std::sync::atomic::Ordering::SeqCst) {
            let since = *ended.get_or_insert_with(Instant::now);
            let all = sent.lock().expect("not poisoned").len();
            if seen >= all || since.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
        let Some(count) = probe_count(&client, &url, from).await else {
            continue;
        };
        let now = Instant::now();
        let sent = sent.lock().expect("not poisoned");
        while seen < (count as usize).min(sent.len()) {
            let ms = (now - sent[seen]).as_millis().max(1) as u64;
            h.record(ms).ok();
            timeline.lock().expect("not poisoned").fresh(sent[seen], ms);
            seen += 1;
        }
    }
    (h, seen as u64)
}

/// Event ids of the dead letters with reason `late`.
fn late_event_ids(brokers: &str, dlq_topic: &str) -> Result<HashSet<String>, RunError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("eddy-load-gen-verify-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(kafka("dlq consumer"))?;
    let md = consumer
        .fetch_metadata(Some(dlq_topic), Duration::from_secs(10))
        .map_err(kafka("dlq metadata"))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut partitions = 0;
    for t in md.topics().iter().filter(|t| t.name() == dlq_topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(dlq_topic, p.id(), rdkafka::Offset::Beginning)
                .map_err(kafka("dlq assignment"))?;
            partitions += 1;
        }
    }
    consumer.assign(&tpl).map_err(kafka("dlq assign"))?;
    let mut ids = HashSet::new();
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let late = m.headers().is_some_and(|h| {
                    h.iter()
                        .any(|h| h.key == "eddy-reason" && h.value == Some(b"late".as_slice()))
                });
                if late
                    && let Some(id) = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                        .and_then(|v| v["event_id"].as_str().map(str::to_owned))
                {
                    ids.insert(id);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(source)) => {
                return Err(RunError::Kafka {
                    op: "dlq poll",
                    source,
                });
            }
            None => {}
        }
    }
    Ok(ids)
}

/// One window's values as compared: `(count, sum, min, max)` in micro-units.
type Values = (u64, i64, Option<i64>, Option<i64>);

async fn series(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, String)],
) -> Result<BTreeMap<(String, i64), Values>, String> {
    let resp = client
        .get(format!("{url}/v1/counts"))
        .query(params)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    let points = body["series"]
        .as_array()
        .ok_or_else(|| format!("no series in {body}"))?;
    let micros = |v: &serde_json::Value| v.as_f64().map(|a| (a * 1_000_000.0).round() as i64);
    Ok(points
        .iter()
        .map(|p| {
            let key = (
                p["event_type"].as_str().unwrap_or_default().to_owned(),
                p["window_start_ms"].as_i64().unwrap_or_default(),
            );
            let values = (
                p["count"].as_u64().unwrap_or_default(),
                micros(&p["sum_amount"]).unwrap_or(0),
                micros(&p["min_amount"]),
                micros(&p["max_amount"]),
            );
            (key, values)
        })
        .collect())
}

fn diff(
    what: &str,
    want: &BTreeMap<(String, i64), Values>,
    got: &BTreeMap<(String, i64), Values>,
) -> String {
    let mut out = String::new();
    let keys: std::collections::BTreeSet<_> = want.keys().chain(got.keys()).collect();
    for k in keys {
        let (w, g) = (want.get(k), got.get(k));
        if w != g {
            out.push_str(&format!(
                "  {what} {} window {}: expected {w:?}, got {g:?}\n",
                k.0, k.1
            ));
        }
    }
    out
}

/// Waits (up to `timeout`) until the query server's per-type series, and those of the five
/// busiest campaigns, equal `expected`; fails with a diff otherwise.
pub async fn verify(
    url: &str,
    expected: &WindowTotals,
    window_ms: i64,
    timeout: Duration,
) -> Result<(), RunError> {
    let (Some(from), Some(to)) = (
        expected.types.keys().map(|k| k.0).min(),
        expected.types.keys().map(|k| k.0).max(),
    ) else {
        return Ok(());
    };
    let to = to + window_ms;
    let want_types: BTreeMap<(String, i64), Values> = expected
        .types
        .values()
        .map(|r| {
            let key = (r.event_type.to_string(), r.window_start_ms);
            (key, (r.count, r.sum_micros, r.min_micros, r.max_micros))
        })
        .collect();
    let mut volume: BTreeMap<u64, u64> = BTreeMap::new();
    for c in expected.campaigns.values() {
        *volume.entry(c.campaign_id).or_default() += c.count;
    }
    let mut busiest: Vec<(u64, u64)> = volume.into_iter().collect();
    busiest.sort_by_key(|(c, n)| (std::cmp::Reverse(*n), *c));
    let campaigns: Vec<u64> = busiest.into_iter().take(5).map(|(c, _)| c).collect();
    let want_campaign = |c: u64| -> BTreeMap<(String, i64), Values> {
        expected
            .campaigns
            .values()
            .filter(|r| r.campaign_id == c)
            .map(|r| {
                (
                    (r.event_type.to_string(), r.window_start_ms),
                    (r.count, 0, None, None),
                )
            })
            .collect()
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let range = [("from", from.to_string()), ("to", to.to_string())];
        let mut report = String::new();
        match series(&client, url, &range).await {
            Ok(got) => report.push_str(&diff("type", &want_types, &got)),
            Err(e) => report.push_str(&format!("  query failed: {e}\n")),
        }
        for &c in &campaigns {
            let mut params = range.to_vec();
            params.push(("campaign_id", c.to_string()));
            match series(&client, url, &params).await {
                Ok(got) => {
                    report.push_str(&diff(&format!("campaign {c}"), &want_campaign(c), &got))
                }
                Err(e) => report.push_str(&format!("  query failed: {e}\n")),
            }
        }
        if report.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(RunError::Mismatch(report));
        }
    }
}

/// Waits (up to `timeout`) until the sliding-window engagement of the five busiest campaigns
/// of `events` (views, clicks, conversions, revenue), as served by `GET /v1/campaigns/{id}`,
/// equals a from-scratch recomputation at the answer's `as_of_ms`; fails with a diff otherwise.
pub async fn verify_engagement(
    url: &str,
    events: &[Event],
    window: WindowSpec,
    sliding_ms: i64,
    timeout: Duration,
) -> Result<(), RunError> {
    let mut volume: BTreeMap<u64, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e.campaign_id != PROBE_CAMPAIGN) {
        *volume.entry(e.campaign_id).or_default() += 1;
    }
    let mut busiest: Vec<(u64, u64)> = volume.into_iter().collect();
    busiest.sort_by_key(|(c, n)| (std::cmp::Reverse(*n), *c));
    let campaigns: Vec<u64> = busiest.into_iter().take(5).map(|(c, _)| c).collect();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let mut report = String::new();
        for &c in &campaigns {
            let answer: Result<serde_json::Value, String> = async {
                let resp = client
                    .get(format!("{url}/v1/campaigns/{c}"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                resp.json().await.map_err(|e| e.to_string())
            }
            .await;
            let body = match answer {
                Ok(b) => b,
                Err(e) => {
                    report.push_str(&format!("  campaign {c}: query failed: {e}\n"));
                    continue;
                }
            };
            let Some(as_of) = body["as_of_ms"].as_i64() else {
                report.push_str(&format!("  campaign {c}: no answer: {body}\n"));
                continue;
            };
            let want = crate::expected::engagement(events, window, sliding_ms, as_of)
                .get(&c)
                .copied()
                .unwrap_or_default();
            let got = ["views", "clicks", "conversions", "revenue_micros"]
                .map(|f| body[f].as_i64().unwrap_or(-1));
            if got != want {
                report.push_str(&format!(
                    "  campaign {c} engagement as of {as_of}: expected [views, clicks, conversions, revenue_micros] {want:?}, got {got:?}\n"
                ));
            }
        }
        if report.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(RunError::Mismatch(report));
        }
    }
}
