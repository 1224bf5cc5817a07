//! The command-line flags of the `eddy` subcommands that run the dataflow (`demo`, `run`), as
//! clap [`Args`] structs the binary flattens; each turns into the library's own options. The
//! load generator's flags live in its crate (`eddy_load_gen::runner::LoadGenArgs`).

use crate::pipeline::DemoSetup;
use clap::Args;
use eddy_core::{Config, ConfigError, MemoryStore};
use eddy_load_gen::GenConfig;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// The timely cluster flags could not make a timely configuration.
#[derive(Debug, thiserror::Error)]
#[error("timely configuration: {0}")]
pub struct TimelyConfigError(pub String);

/// Workers and cluster of a timely run.
#[derive(Args, Clone, Debug)]
pub struct TimelyArgs {
    /// Worker threads per process (overrides pipeline.workers).
    #[arg(short = 'w', long)]
    pub workers: Option<usize>,
    /// Number of processes in a timely cluster.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub processes: usize,
    /// This process's index in the cluster.
    #[arg(short = 'p', long, default_value_t = 0)]
    pub process: usize,
    /// Host file for cluster mode: one `host:port` per line, one line per process.
    #[arg(short = 'H', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
}

impl TimelyArgs {
    /// The timely configuration: these flags, with `pipeline.workers` unless `-w` is given.
    pub fn config(&self, cfg: &Config) -> Result<timely::Config, TimelyConfigError> {
        let workers = self.workers.unwrap_or(cfg.pipeline.workers);
        let mut args = vec![
            "eddy".to_string(),
            "-w".into(),
            workers.to_string(),
            "-n".into(),
            self.processes.to_string(),
            "-p".into(),
            self.process.to_string(),
        ];
        if let Some(h) = &self.hostfile {
            args.push("-h".into());
            args.push(h.display().to_string());
        }
        timely::Config::from_args(args.into_iter()).map_err(TimelyConfigError)
    }
}

/// `eddy demo`: generated events → the same dataflow → in-memory layers → HTTP.
#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Workers and cluster.
    #[command(flatten)]
    pub timely: TimelyArgs,
    /// Generated messages per second (total).
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    /// Generated partitions.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Window length, ms (the demo defaults to 10 s windows so they close quickly).
    #[arg(long, default_value_t = 10_000)]
    pub window_ms: i64,
    /// Allowed lateness, ms.
    #[arg(long, default_value_t = 2_000)]
    pub lateness_ms: i64,
    /// Sliding window of the engagement scores and interaction sets, ms (a multiple of
    /// the window; the demo defaults to 10 minutes so events visibly slide out).
    #[arg(long, default_value_t = 600_000)]
    pub sliding_ms: i64,
    /// Fraction of malformed messages (they go to the in-memory dead-letter log).
    #[arg(long, default_value_t = 0.001)]
    pub malformed_fraction: f64,
    /// Fraction of late events.
    #[arg(long, default_value_t = 0.001)]
    pub late_fraction: f64,
    /// Query server address.
    #[arg(long)]
    pub listen: Option<String>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Minutes of windows the in-memory layers keep (older ones are dropped).
    #[arg(long, default_value_t = 60)]
    pub retention_minutes: i64,
}

impl DemoArgs {
    /// Applies the demo's windows, lateness, sliding window, idle timeout and listen address
    /// to `cfg`, and validates the result.
    pub fn configure(&self, cfg: &mut Config) -> Result<(), ConfigError> {
        cfg.pipeline.window_ms = self.window_ms;
        cfg.pipeline.lateness_ms = self.lateness_ms;
        cfg.engagement.sliding_ms = self.sliding_ms;
        cfg.kafka.idle_timeout_ms = 500;
        if let Some(l) = &self.listen {
            cfg.server.listen = l.clone();
        }
        cfg.validate()
    }

    /// The in-memory layers, keeping `--retention-minutes` of windows.
    pub fn store(&self) -> Arc<RwLock<MemoryStore>> {
        Arc::new(RwLock::new(MemoryStore::with_retention(
            self.retention_minutes * 60_000,
        )))
    }

    /// The demo's wiring over `store`: generated events at `--rate` over `--partitions`, with
    /// disorder within the lateness and late events well past it.
    pub fn setup(&self, store: Arc<RwLock<MemoryStore>>) -> DemoSetup {
        let generator = GenConfig {
            start_ts_ms: eddy_core::now_ms(),
            max_disorder_ms: self.lateness_ms / 2,
            late_by_ms: self.window_ms + self.lateness_ms * 2,
            malformed_fraction: self.malformed_fraction,
            late_fraction: self.late_fraction,
            ..GenConfig::default()
        };
        DemoSetup {
            store,
            dead_letters: eddy_sinks::MemoryDeadLetters::default(),
            generator,
            rate_per_partition: self.rate / self.partitions.max(1) as f64,
            partitions: self.partitions,
        }
    }

    /// What the demo prints once it serves on `listen`: example queries.
    pub fn banner(&self, listen: &str) -> String {
        let (rate, window_ms, l) = (self.rate, self.window_ms, listen);
        let now = eddy_core::now_ms();
        let (from, to) = (now - 3_600_000, now + 3_600_000);
        format!(
            "eddy demo: dashboard at http://{l}/ (open it in a browser)\n  \
             {rate} events/s into {window_ms} ms windows, serving on http://{l}\n  \
             curl 'http://{l}/v1/counts?event_type=click&from={from}&to={to}'\n  \
             curl 'http://{l}/v1/counts?campaign_id=0&from={from}&to={to}&granularity=hour'\n  \
             curl 'http://{l}/v1/campaigns/top?k=5' ; curl http://{l}/v1/campaigns/0\n  \
             curl http://{l}/v1/users/0/similar ; curl http://{l}/v1/users/0/recommendations\n  \
             curl http://{l}/healthz ; curl http://{l}/metrics\n"
        )
    }
}

/// `eddy replay`: re-read a range of the source topic through the pipeline into the live
/// outputs (backfill). See [`crate::replay`].
#[derive(Args, Clone, Debug)]
pub struct ReplayArgs {
    /// Workers and cluster (a replay runs in one process).
    #[command(flatten)]
    pub timely: TimelyArgs,
    /// Where to start: `earliest`, an RFC 3339 time or epoch ms (the first record whose Kafka
    /// timestamp is at or after it, per partition), or `partition:offset,…` (every partition).
    #[arg(long)]
    pub from: String,
    /// Where to stop (exclusive): `now` (the end of each partition when planned), a time, or
    /// `partition:offset,…`.
    #[arg(long, default_value = "now")]
    pub to: String,
    /// After the end: `stop` (exit once every result is durable) or `live` (go on as
    /// `eddy run`, taking over the live job's checkpoints).
    #[arg(long, default_value = "stop", value_parser = ["stop", "live"])]
    pub then: String,
    /// Where results go: `live` (the served outputs, rewritten idempotently) or
    /// `version:NAME` (a separate version, built beside the live job, that readers see once
    /// `eddy promote NAME` switches to it).
    #[arg(long, default_value = "live")]
    pub target: String,
    /// Most records read per second (`N` or `N/s`), over all workers.
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Print the resolved offsets per partition, the records to read and whether the broker
    /// still retains them; read nothing, save nothing. Exits with an error if a start expired.
    #[arg(long)]
    pub dry_run: bool,
    /// Read the plan through the pipeline's Kafka readers and discard the records, printing
    /// records/s: the broker's read ceiling (for benchmarks). Saves nothing, writes nothing.
    #[arg(long, conflicts_with = "dry_run")]
    pub read_only: bool,
    /// Discard an unfinished replay plan of another request instead of refusing to start.
    #[arg(long)]
    pub fresh: bool,
    /// Also serve /metrics (with the `eddy_replay_*` progress figures) on this address.
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

impl ReplayArgs {
    /// The request these flags make.
    pub fn request(&self) -> Result<crate::replay::ReplayRequest, crate::replay::ReplayError> {
        use crate::replay::{ReplayError, ReplayRequest, parse_end, parse_start};
        self.target()
            .map_err(|e| ReplayError::BadSpec(e.to_string()))?;
        Ok(ReplayRequest {
            from: parse_start(&self.from)?,
            to: parse_end(&self.to)?,
            then_live: self.then == "live",
        })
    }

    /// `--target` parsed.
    pub fn target(&self) -> Result<crate::version::Target, crate::version::VersionError> {
        crate::version::Target::parse(&self.target)
    }

    /// `--rate-limit` in records per second.
    ///
    /// ```
    /// use clap::Parser;
    /// #[derive(Parser)]
    /// struct Cli { #[command(flatten)] r: eddy::cli::ReplayArgs }
    /// let cli = Cli::parse_from(["eddy", "--from", "earliest", "--rate-limit", "500/s"]);
    /// assert_eq!(cli.r.rate_limit_per_s().unwrap(), Some(500.0));
    /// ```
    pub fn rate_limit_per_s(&self) -> Result<Option<f64>, crate::replay::ReplayError> {
        let Some(r) = &self.rate_limit else {
            return Ok(None);
        };
        let n = r.trim().trim_end_matches("/s").trim();
        match n.parse::<f64>() {
            Ok(v) if v > 0.0 && v.is_finite() => Ok(Some(v)),
            _ => Err(crate::replay::ReplayError::BadSpec(format!(
                "--rate-limit {r:?}: expected N/s with N > 0"
            ))),
        }
    }
}
