//! Prometheus metrics shared by the worker, the sinks and the query server. Metric names are
//! constants here; labels are fixed sets. Rendered as Prometheus text on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

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
    /// Consumer lag in time, by partition: while the partition has lag, ms from the Kafka
    /// timestamp of the last record read to now; 0 when caught up.
    pub consumer_lag_ms: Family<PartitionLabel, Gauge>,
    /// Current event-time watermark, ms.
    pub watermark_ms: Gauge,
    /// Sink write latency, seconds, by sink.
    pub sink_write_seconds: Family<SinkLabel, Histogram>,
    /// Failed sink writes (each is retried), by sink.
    pub sink_errors: Family<SinkLabel, Counter>,
    /// Wall-clock ms of each sink's last completed write (what it serves is that fresh).
    pub sink_last_write_ms: Family<SinkLabel, Gauge>,
    /// The last failed write of each sink: wall-clock ms and error (operator status, not a
    /// Prometheus metric; [`Metrics::sink_failed`] keeps it).
    pub sink_last_error: Arc<Mutex<BTreeMap<String, (i64, String)>>>,
    /// Checkpoints committed.
    pub checkpoints: Counter,
    /// Checkpoint saves that failed (the next candidate is tried at the next interval).
    pub checkpoint_failures: Counter,
    /// Wall-clock ms when the last checkpoint was committed (0: none yet in this process).
    pub last_checkpoint_ms: Gauge,
    /// How long saving the last committed checkpoint took, ms.
    pub checkpoint_duration_ms: Gauge,
    /// Epoch of the last committed checkpoint.
    pub checkpoint_epoch: Gauge,
    /// Resume offset of each partition in the last committed checkpoint (a restart reads
    /// from there).
    pub checkpoint_resume_offset: Family<PartitionLabel, Gauge>,
    /// HTTP requests, by route and status.
    pub http_requests: Family<RouteLabel, Counter>,
    /// `eddy replay`: offsets read so far of the plan, by partition.
    pub replay_offsets_done: Family<PartitionLabel, Gauge>,
    /// `eddy replay`: offsets the plan reads, by partition.
    pub replay_offsets_total: Family<PartitionLabel, Gauge>,
    /// `eddy replay`: fraction of the plan's offsets read (0 to 1).
    pub replay_progress_ratio: Gauge<f64, AtomicU64>,
    /// `eddy replay`: records read per second over the last progress interval.
    pub replay_records_per_second: Gauge<f64, AtomicU64>,
    /// `eddy replay`: estimated seconds until the plan's end is read (-1: unknown).
    pub replay_eta_seconds: Gauge,
    /// `eddy replay`: the `--to` time (ms) the event-time watermark is heading for (0: `--to`
    /// is not a time).
    pub replay_to_ms: Gauge,
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
        let consumer_lag_ms = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "consumer_lag_ms",
            "Ms from the timestamp of the last record read to now while behind (0: caught up)",
            consumer_lag_ms.clone(),
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
        let sink_last_write_ms = Family::<SinkLabel, Gauge>::default();
        registry.register(
            "sink_last_write_ms",
            "Wall-clock time of the sink's last completed write (ms)",
            sink_last_write_ms.clone(),
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
        let checkpoint_duration_ms = Gauge::default();
        registry.register(
            "checkpoint_duration_ms",
            "Time to save the last committed checkpoint (ms)",
            checkpoint_duration_ms.clone(),
        );
        let checkpoint_epoch = Gauge::default();
        registry.register(
            "checkpoint_epoch",
            "Epoch of the last committed checkpoint",
            checkpoint_epoch.clone(),
        );
        let checkpoint_resume_offset = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "checkpoint_resume_offset",
            "Resume offset of each partition in the last committed checkpoint",
            checkpoint_resume_offset.clone(),
        );
        let http_requests = Family::<RouteLabel, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served",
            http_requests.clone(),
        );
        let replay_offsets_done = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "replay_offsets_done",
            "eddy replay: offsets of the plan read so far",
            replay_offsets_done.clone(),
        );
        let replay_offsets_total = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "replay_offsets_total",
            "eddy replay: offsets the plan reads",
            replay_offsets_total.clone(),
        );
        let replay_progress_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "replay_progress_ratio",
            "eddy replay: fraction of the plan read (0 to 1)",
            replay_progress_ratio.clone(),
        );
        let replay_records_per_second = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "replay_records_per_second",
            "eddy replay: records read per second",
            replay_records_per_second.clone(),
        );
        let replay_eta_seconds = Gauge::default();
        registry.register(
            "replay_eta_seconds",
            "eddy replay: estimated seconds to the plan's end (-1: unknown)",
            replay_eta_seconds.clone(),
        );
        let replay_to_ms = Gauge::default();
        registry.register(
            "replay_to_ms",
            "eddy replay: the --to time the watermark heads for (ms; 0: not a time)",
            replay_to_ms.clone(),
        );
        Self {
            registry: Arc::new(registry),
            events_in,
            dead_letters,
            dead_letters_dropped,
            late_events,
            replay_skipped,
            consumer_lag,
            consumer_lag_ms,
            watermark_ms,
            sink_write_seconds,
            sink_errors,
            sink_last_write_ms,
            sink_last_error: Arc::default(),
            checkpoints,
            checkpoint_failures,
            last_checkpoint_ms,
            checkpoint_duration_ms,
            checkpoint_epoch,
            checkpoint_resume_offset,
            http_requests,
            replay_offsets_done,
            replay_offsets_total,
            replay_progress_ratio,
            replay_records_per_second,
            replay_eta_seconds,
            replay_to_ms,
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

    /// Counts a failed write of `sink` (`sink_errors`) and keeps `error` as its last one.
    pub fn sink_failed(&self, sink: &SinkLabel, error: &str) {
        self.sink_errors.get_or_create(sink).inc();
        self.sink_last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sink.sink.clone(), (crate::now_ms(), error.to_owned()));
    }

    /// The last failed write of each sink: sink name to (wall-clock ms, error).
    pub fn sink_last_errors(&self) -> BTreeMap<String, (i64, String)> {
        self.sink_last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
