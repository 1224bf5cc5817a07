//! Typed configuration: built-in defaults, then a TOML file, then `EDDY_*` environment
//! variables (`EDDY_SECTION__FIELD=value`, e.g. `EDDY_KAFKA__BROKERS=127.0.0.1:9092`), then
//! command-line flags (applied by the binary). `config/eddy.toml` documents every field.
//!
//! The layers are merged by [figment](https://docs.rs/figment). Unknown sections and fields
//! are rejected in every layer. Numbers and booleans may also be written as strings (an
//! environment value always is one): `"5000"`, and for booleans `true`/`false`, `yes`/`no`,
//! `on`/`off`, `1`/`0`.

use figment::providers::{Format, Serialized, Toml};
use figment::value::Map;
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML (after env overrides) does not fit the schema.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// All of eddy's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka source and dead-letter topic.
    pub kafka: KafkaConfig,
    /// Dataflow settings (windows, watermark, epochs).
    pub pipeline: PipelineConfig,
    /// Redis speed layer.
    pub redis: RedisConfig,
    /// ClickHouse batch layer.
    pub clickhouse: ClickHouseConfig,
    /// Query server.
    pub server: ServerConfig,
    /// Sink batching and retries.
    pub sink: SinkConfig,
    /// Campaign engagement over the sliding window.
    pub engagement: EngagementConfig,
    /// User similarity and recommendations.
    pub similarity: SimilarityConfig,
}

/// Campaign engagement settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngagementConfig {
    /// Sliding window length, ms (a multiple of `pipeline.window_ms`: the window advances one
    /// tumbling window at a time).
    pub sliding_ms: i64,
    /// Score weight of a view.
    pub weight_view: f64,
    /// Score weight of a click.
    pub weight_click: f64,
    /// Score weight of a conversion.
    pub weight_conversion: f64,
    /// Length of the live top list of campaigns by score.
    pub top_k: usize,
}

impl Default for EngagementConfig {
    fn default() -> Self {
        Self {
            sliding_ms: 86_400_000,
            weight_view: 1.0,
            weight_click: 5.0,
            weight_conversion: 25.0,
            top_k: 100,
        }
    }
}

impl EngagementConfig {
    /// The score weights.
    pub fn weights(&self) -> crate::Weights {
        crate::Weights {
            view: self.weight_view,
            click: self.weight_click,
            conversion: self.weight_conversion,
        }
    }
}

/// User similarity and recommendation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimilarityConfig {
    /// Whether similarity and recommendations run at all (counts and engagement always do).
    pub enabled: bool,
    /// How candidate pairs are found (`minhash` or `exact`).
    pub mode: SimilarityAlgorithm,
    /// Whether views count as interest (by default only clicks and conversions do).
    pub views_are_interest: bool,
    /// Similar users kept per user.
    pub k: usize,
    /// LSH bands.
    pub bands: usize,
    /// MinHash values per band.
    pub rows_per_band: usize,
    /// LSH candidates per band: a user's candidates in a bucket are the `bucket_size` members
    /// nearest it in hash order, so a popular campaign costs O(bucket_size) per change, not
    /// O(audience).
    pub bucket_size: usize,
    /// Recommendations one request returns at most (and by default): they are ranked at read
    /// time, so this bounds the answer, not any state.
    pub recommendations: usize,
    /// When a window closes, its settled interactions reach the similarity dataflow spread
    /// over this many epochs (by user), so later epochs do not wait behind one large batch.
    pub close_spread_epochs: u64,
    /// How long the similarity loop works before it lets the other operators of its worker
    /// run (counts, the source, the sinks), µs. It resumes where it stopped; answers do not
    /// depend on it.
    pub slice_us: u64,
}

impl Default for SimilarityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: SimilarityAlgorithm::MinHash,
            views_are_interest: false,
            k: 10,
            bands: 16,
            rows_per_band: 2,
            bucket_size: 32,
            recommendations: 10,
            close_spread_epochs: 1,
            slice_us: 1000,
        }
    }
}

/// How similar users are found (`similarity.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimilarityAlgorithm {
    /// `minhash`: MinHash signatures + LSH banding propose candidate pairs, scored exactly
    /// (bounded cost per change).
    #[default]
    MinHash,
    /// `exact`: every pair of users sharing a campaign (O(audience²) per campaign; small data
    /// and tests).
    Exact,
}

impl std::fmt::Display for SimilarityAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MinHash => "minhash",
            Self::Exact => "exact",
        })
    }
}

/// Kafka settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Source topic.
    pub topic: String,
    /// Dead-letter topic for malformed and late events.
    pub dlq_topic: String,
    /// Consumer group id used for offset commits (partitions are assigned, not rebalanced).
    pub group_id: String,
    /// Partitions to create when `eddy` creates the topics.
    pub partitions: i32,
    /// A caught-up partition with no new record for this long stops holding the watermark back.
    pub idle_timeout_ms: u64,
    /// Consumer `fetch.wait.max.ms`: how long the broker may hold a fetch with no new data.
    /// Lower is fresher; higher puts less load on the broker. tansu 0.6 holds every fetch
    /// this long, data or not: a floor on freshness at any rate, and the broker's fetch rate.
    pub fetch_wait_max_ms: u64,
    /// The dead-letter producer's `message.max.bytes`, and the size every dead letter is cut
    /// to (payload truncated, with an `eddy-truncated` header, when key + headers + payload
    /// would not fit). At most the broker's `message.max.bytes` for the dead-letter topic.
    pub dlq_max_message_bytes: usize,
    /// At start-up, how long `eddy run` retries a broker that does not answer (bounded
    /// exponential backoff, each attempt logged) before it exits with an error, ms.
    pub startup_timeout_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "events".into(),
            dlq_topic: "events.dlq".into(),
            group_id: "eddy".into(),
            partitions: 4,
            idle_timeout_ms: 2_000,
            fetch_wait_max_ms: 10,
            dlq_max_message_bytes: 1_000_000,
            startup_timeout_ms: 120_000,
        }
    }
}

/// Dataflow settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Tumbling window length, ms.
    pub window_ms: i64,
    /// Allowed lateness, ms: watermark = min over active partitions of max event time - this.
    pub lateness_ms: i64,
    /// Length of a dataflow epoch (the unit of processing time and of sink batches), ms.
    pub epoch_ms: u64,
    /// Most records a worker reads into one epoch.
    pub max_records_per_epoch: usize,
    /// Most epochs with data a worker may have in flight before it stops reading (backpressure).
    pub max_inflight_epochs: usize,
    /// Most epochs with data a worker may have in flight, counted until *every* sink holds
    /// them, before it stops reading: the similarity path (whose pane-close work takes
    /// hundreds of milliseconds) may trail the counts by this many epochs while counts keep
    /// flowing under `max_inflight_epochs` (but never by more records than
    /// `max_inflight_epochs × max_records_per_epoch`). At least `max_inflight_epochs`.
    pub max_lagging_epochs: usize,
    /// Timely worker threads in this process.
    pub workers: usize,
    /// How often a durable checkpoint is written and offsets committed, ms.
    pub checkpoint_ms: u64,
    /// Latest accepted event time, as ms after the wall clock: an event dated later is a dead
    /// letter `bad_ts`, so the watermark never runs further ahead of the wall clock than this
    /// (minus `lateness_ms`). Default 5 minutes: well above the clock skew of NTP-synced
    /// producers, and one skewed event can close at most this much of the future early.
    pub max_future_ms: i64,
    /// After a stop is asked (Ctrl-C, SIGTERM), how long `eddy run` / `eddy demo` may take to
    /// flush its sinks before the process exits anyway (with an error), ms.
    pub shutdown_timeout_ms: u64,
    /// `eddy run`'s `/healthz` (on `--metrics-listen`) turns 503 when no checkpoint has been
    /// committed for this long (a stuck worker or store), ms.
    pub liveness_timeout_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            window_ms: 60_000,
            lateness_ms: 10_000,
            epoch_ms: 20,
            max_records_per_epoch: 200_000,
            max_inflight_epochs: 8,
            max_lagging_epochs: 128,
            workers: 2,
            checkpoint_ms: 1_000,
            max_future_ms: 300_000,
            shutdown_timeout_ms: 10_000,
            liveness_timeout_ms: 60_000,
        }
    }
}

/// Redis settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Connection URL.
    pub url: String,
    /// Key prefix (all keys are `{prefix}:...`).
    pub prefix: String,
    /// TTL of window keys, seconds (open and recently closed windows).
    pub window_ttl_secs: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            prefix: "eddy".into(),
            window_ttl_secs: 7200,
        }
    }
}

/// ClickHouse settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP URL.
    pub url: String,
    /// Database holding eddy's tables.
    pub database: String,
    /// User.
    pub user: String,
    /// Password (empty for none).
    pub password: String,
    /// Days of event time kept in the day-partitioned tables: partitions whose day ends more
    /// than this many days before the latest checkpoint's watermark (never later than the wall
    /// clock) are dropped; 0 keeps everything. Must cover `engagement.sliding_ms` plus a day
    /// (a restart restores the window's panes from these tables).
    pub retention_days: u32,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "eddy".into(),
            user: "default".into(),
            password: String::new(),
            retention_days: 30,
        }
    }
}

/// Query server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: String,
    /// Widest time range one query may ask for, ms.
    pub max_range_ms: i64,
    /// Most points per series one `/v1/counts` answer may hold (windows, or hours with
    /// `granularity=hour`); a wider query is a 400 naming this limit.
    pub max_points: usize,
    /// Time limit of one request, ms: past it the answer is a 503 (`unavailable`).
    pub request_timeout_ms: u64,
    /// Most requests served at once; one more is answered 503 (`unavailable`) at once.
    pub max_concurrent_requests: usize,
    /// Time limit for a client to send a request's headers, ms: past it the connection is
    /// closed.
    pub header_read_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_range_ms: 31 * 24 * 3_600_000,
            max_points: 50_000,
            request_timeout_ms: 10_000,
            max_concurrent_requests: 512,
            header_read_timeout_ms: 10_000,
        }
    }
}

/// Sink settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Most rows in one write (larger batches are split into several atomic writes... never
    /// reordered).
    pub max_batch_rows: usize,
    /// First retry delay after a failed write, ms (doubles up to `max_backoff_ms`).
    pub initial_backoff_ms: u64,
    /// Cap of the retry delay, ms.
    pub max_backoff_ms: u64,
    /// Sink batches queued per sink before the dataflow waits (backpressure).
    pub queue_depth: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            max_batch_rows: 50_000,
            initial_backoff_ms: 50,
            max_backoff_ms: 5_000,
            queue_depth: 4,
        }
    }
}

impl Config {
    /// The layout of the sliding-window state the stores hold under this configuration, as
    /// recorded in each checkpoint ([`crate::Checkpoint::state`]): the settings that decide
    /// which rows are stored (pane size, sliding length, which events are interest, whether
    /// interaction panes are written at all). A restart restores the stored state only when
    /// its layout equals the running one. Weights, top-K and similarity parameters are not
    /// part of it: the stored panes hold raw counts and pairs, and everything else is
    /// recomputed from them.
    ///
    /// ```
    /// let mut cfg = eddy_core::Config::default();
    /// let before = cfg.state_layout();
    /// cfg.engagement.weight_click = 9.0;
    /// assert_eq!(cfg.state_layout(), before, "weights are applied to restored counts");
    /// cfg.engagement.sliding_ms *= 2;
    /// assert_ne!(cfg.state_layout(), before);
    /// ```
    pub fn state_layout(&self) -> String {
        let interactions = match (self.similarity.enabled, self.similarity.views_are_interest) {
            (false, _) => "none",
            (true, false) => "clicks+conversions",
            (true, true) => "views+clicks+conversions",
        };
        format!(
            "v1 window_ms={} sliding_ms={} interaction_panes={interactions}",
            self.pipeline.window_ms, self.engagement.sliding_ms
        )
    }

    /// Loads defaults, then `path` (if given), then `EDDY_SECTION__FIELD` variables from `env`
    /// (others, such as `EDDY_CONFIG` or `EDDY_LOG`, are ignored), and validates the result.
    ///
    /// Unknown sections and fields are errors, in the file and in the environment alike; a
    /// value of the wrong type is reported with the key or variable that gave it.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            // figment treats a missing file as an empty one: opening it first keeps that an error.
            std::fs::File::open(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            figment = figment.merge(Toml::file_exact(path));
        }
        let config: Config = figment
            .merge(EnvVars::from_iter(env))
            .extract_lossy()
            .map_err(|e| {
                let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
                ConfigError::Invalid(all.join("; "))
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks cross-field invariants.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.pipeline.window_ms <= 0 {
            return bad("pipeline.window_ms must be > 0");
        }
        if self.pipeline.lateness_ms < 0 {
            return bad("pipeline.lateness_ms must be >= 0");
        }
        if self.pipeline.epoch_ms == 0 || self.pipeline.workers == 0 {
            return bad("pipeline.epoch_ms and pipeline.workers must be > 0");
        }
        if self.pipeline.max_inflight_epochs == 0 || self.sink.queue_depth == 0 {
            return bad("pipeline.max_inflight_epochs and sink.queue_depth must be > 0");
        }
        if self.pipeline.max_lagging_epochs < self.pipeline.max_inflight_epochs {
            return bad("pipeline.max_lagging_epochs must be >= pipeline.max_inflight_epochs");
        }
        let e = &self.engagement;
        if e.sliding_ms < self.pipeline.window_ms || e.sliding_ms % self.pipeline.window_ms != 0 {
            return bad("engagement.sliding_ms must be a positive multiple of pipeline.window_ms");
        }
        if ![e.weight_view, e.weight_click, e.weight_conversion]
            .iter()
            .all(|w| w.is_finite())
        {
            return bad("engagement weights must be finite numbers");
        }
        if e.top_k == 0 {
            return bad("engagement.top_k must be > 0");
        }
        let s = &self.similarity;
        if s.k == 0
            || s.bands == 0
            || s.rows_per_band == 0
            || s.bucket_size < 2
            || s.recommendations == 0
        {
            return bad(
                "similarity.k, bands, rows_per_band, recommendations must be > 0 and bucket_size >= 2",
            );
        }
        if self.kafka.partitions <= 0 {
            return bad("kafka.partitions must be > 0");
        }
        // A restart restores the sliding window's panes from ClickHouse's day partitions:
        // retention must keep them (the day of the oldest pane, and the day before).
        let retained_ms = i64::from(self.clickhouse.retention_days) * 86_400_000;
        if self.clickhouse.retention_days > 0 && retained_ms < e.sliding_ms + 86_400_000 {
            return bad(
                "clickhouse.retention_days must cover engagement.sliding_ms plus a day (a restart \
                 restores the sliding window's panes from ClickHouse), or be 0 (keep everything)",
            );
        }
        Ok(())
    }
}

/// The `EDDY_SECTION__FIELD=value` variables as a figment provider. Values stay strings
/// (`extract_lossy` reads numbers and booleans out of them where the field wants one), so
/// `EDDY_KAFKA__TOPIC=123` is the topic "123"; figment's own `Env` provider would parse it as a
/// number, and it reads only the process environment.
struct EnvVars(figment::value::Dict);

impl FromIterator<(String, String)> for EnvVars {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(vars: I) -> Self {
        let mut sections = figment::value::Dict::new();
        for (key, value) in vars {
            let Some((section, field)) = key
                .strip_prefix("EDDY_")
                .and_then(|rest| rest.split_once("__"))
                .filter(|(s, f)| !s.is_empty() && !f.is_empty() && !f.contains("__"))
            else {
                continue; // EDDY_CONFIG, EDDY_LOG and other non-field variables
            };
            let table = sections
                .entry(section.to_ascii_lowercase())
                .or_insert_with(|| figment::value::Dict::new().into());
            if let figment::value::Value::Dict(_, fields) = table {
                fields.insert(field.to_ascii_lowercase(), value.into());
            }
        }
        Self(sections)
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment").interpolater(|_, keys: &[&str]| {
            format!("EDDY_{}", keys.join("__").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, figment::value::Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}
