//! Prometheus metrics shared by the worker, the sinks and the query server. Metric names are
//! constants here; labels are fixed sets. Rendered as Prometheus text on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Label: dead-letter reason (`bad_json`, `late`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: String,
}

/// Label: Kafka partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// The partition.
    pub partition: i32,
}

/// Label: sink name (`redis`, `clickhouse`, `memory`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    /// The sink.
    pub sink: String,
}

/// Label: HTTP route and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// Route template, e.g. `/v1/counts`.
    pub route: String,
    /// HTTP status code.
    pub status: u16,
}

/// All of eddy's metrics, cheap to clone (handles share state).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Valid events read from the source.
    pub events_in: Counter,
    /// Records sent to the dead-letter topic, by reason.
    pub dead_letters: Family<ReasonLabel, Counter>,
    /// Dead letters the dead-letter topic refused permanently (logged and skipped), by reason.
    pub dead_letters_dropped: Family<ReasonLabel, Counter>,
    /// Events rejected because their window had closed.
    pub late_events: Counter,
    /// Re-read records skipped on replay because their window was already final.
    pub replay_skipped: Counter,
    /// Consumer lag (high watermark - position), by partition.
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    /// Current event-time watermark, ms.
    pub watermark_ms: Gauge,
    /// Sink write latency, seconds, by sink.
    pub sink_write_seconds: Family<SinkLabel, Histogram>,
    /// Failed sink writes (each is retried), by sink.
    pub sink_errors: Family<SinkLabel, Counter>,
    /// Checkpoints committed.
    pub checkpoints: Counter,
    /// Checkpoint saves that failed (the next candidate is tried at the next interval).
    pub checkpoint_failures: Counter,
    /// Wall-clock ms when the last checkpoint was committed (0: none yet in this process).
    pub last_checkpoint_ms: Gauge,
    /// HTTP requests, by route and status.
    pub http_requests: Family<RouteLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("eddy");
        let events_in = Counter::default();
        registry.register(
            "events_in",
            "Valid events read from the source",
            events_in.clone(),
        );
        let dead_letters = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dead_letters",
            "Records sent to the dead-letter topic",
            dead_letters.clone(),
        );
        let dead_letters_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dead_letters_dropped",
            "Dead letters the dead-letter topic refused permanently (skipped)",
            dead_letters_dropped.clone(),
        );
        let late_events = Counter::default();
        registry.register(
            "late_events",
            "Events whose window had already closed",
            late_events.clone(),
        );
        let replay_skipped = Counter::default();
        registry.register(
            "replay_skipped",
            "Re-read records skipped because their window was already final",
            replay_skipped.clone(),
        );
        let consumer_lag = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "consumer_lag",
            "High watermark minus position",
            consumer_lag.clone(),
        );
        let watermark_ms = Gauge::default();
        registry.register(
            "watermark_ms",
            "Event-time watermark (ms)",
            watermark_ms.clone(),
        );
        let sink_write_seconds = Family::<SinkLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "sink_write_seconds",
            "Sink write latency",
            sink_write_seconds.clone(),
        );
        let sink_errors = Family::<SinkLabel, Counter>::default();
        registry.register(
            "sink_errors",
            "Failed sink writes (retried)",
            sink_errors.clone(),
        );
        let checkpoints = Counter::default();
        registry.register("checkpoints", "Checkpoints committed", checkpoints.clone());
        let checkpoint_failures = Counter::default();
        registry.register(
            "checkpoint_failures",
            "Checkpoint saves that failed",
            checkpoint_failures.clone(),
        );
        let last_checkpoint_ms = Gauge::default();
        registry.register(
            "last_checkpoint_ms",
            "Wall-clock time of the last committed checkpoint (ms; 0 = none yet)",
            last_checkpoint_ms.clone(),
        );
        let http_requests = Family::<RouteLabel, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served",
            http_requests.clone(),
        );
        Self {
            registry: Arc::new(registry),
            events_in,
            dead_letters,
            dead_letters_dropped,
            late_events,
            replay_skipped,
            consumer_lag,
            watermark_ms,
            sink_write_seconds,
            sink_errors,
            checkpoints,
            checkpoint_failures,
            last_checkpoint_ms,
            http_requests,
        }
    }

    /// Counts one dead letter with `reason`.
    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
