//! The `eddy load-gen` command line ([`LoadGenArgs`]) and how it becomes a [`RunConfig`].

use super::{Report, RunConfig, RunError};
use crate::GenConfig;
use eddy_core::Config;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Produce generated events to Kafka, open loop at a target rate, measuring produce latency
/// and end-to-end freshness; `--verify` checks the answers over HTTP.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadGenArgs {
    /// Target messages per second (0 = as fast as possible).
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Stop after this many messages.
    #[arg(long)]
    pub events: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Spread the event times of the `--events` messages evenly over this many seconds of
    /// event time ending now, instead of following the wall clock: e.g. `--events 10000000
    /// --event-span-secs 90000` fills a 24 h sliding window (plus an hour) in minutes.
    #[arg(long, requires = "events")]
    pub event_span_secs: Option<f64>,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Run id, part of every event_id (default: the current time).
    #[arg(long)]
    pub run_id: Option<u64>,
    /// Distinct users and campaigns.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// Distinct campaigns.
    #[arg(long, default_value_t = 1_000)]
    pub campaigns: u64,
    /// Zipf exponent of campaign popularity.
    #[arg(long, default_value_t = 1.1)]
    pub campaign_zipf: f64,
    /// Fraction of malformed messages.
    #[arg(long, default_value_t = 0.0)]
    pub malformed_fraction: f64,
    /// Fraction of late events.
    #[arg(long, default_value_t = 0.0)]
    pub late_fraction: f64,
    /// Query server for freshness probes and --verify (default: http://{server.listen}).
    #[arg(long)]
    pub query_url: Option<String>,
    /// Skip the freshness probes (no query server needed).
    #[arg(long)]
    pub no_probes: bool,
    /// Skip the similarity probes (one per pane, polled in the recommendations); they are on
    /// when probes are, similarity is enabled and event times follow the wall clock.
    #[arg(long)]
    pub no_similarity_probes: bool,
    /// Milliseconds between freshness probes.
    #[arg(long, default_value_t = 100)]
    pub probe_interval_ms: u64,
    /// Producer linger.ms (batching: fewer broker requests, more latency).
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Check the pipeline's answers against the expected totals; exit non-zero on a diff.
    #[arg(long)]
    pub verify: bool,
    /// Seconds --verify waits for the pipeline to drain.
    #[arg(long, default_value_t = 120)]
    pub verify_timeout: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write an SVG chart of throughput, latency and lag over time here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The pipeline's Prometheus endpoint (`eddy run --metrics-listen`), sampled every
    /// second for consumer lag and watermark, e.g. http://127.0.0.1:9100/metrics.
    #[arg(long)]
    pub metrics_url: Option<String>,
}

impl LoadGenArgs {
    /// The run these flags ask for against the pipeline configured by `cfg` (brokers, topics,
    /// windows, lateness, and the query server's address unless `--query-url` is given).
    pub fn run_config(&self, cfg: &Config) -> RunConfig {
        let query_url = (!self.no_probes || self.verify).then(|| {
            self.query_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", cfg.server.listen))
        });
        RunConfig {
            brokers: cfg.kafka.brokers.clone(),
            topic: cfg.kafka.topic.clone(),
            dlq_topic: cfg.kafka.dlq_topic.clone(),
            rate: self.rate,
            events: self.events,
            duration: self.duration.map(Duration::from_secs_f64),
            event_span: self.event_span_secs.map(Duration::from_secs_f64),
            generator: GenConfig {
                seed: self.seed,
                run_id: self.run_id.unwrap_or_else(|| eddy_core::now_ms() as u64),
                users: self.users,
                campaigns: self.campaigns,
                campaign_zipf: self.campaign_zipf,
                malformed_fraction: self.malformed_fraction,
                late_fraction: self.late_fraction,
                max_disorder_ms: cfg.pipeline.lateness_ms / 2,
                late_by_ms: cfg.pipeline.window_ms + cfg.pipeline.lateness_ms * 2,
                ..GenConfig::default()
            },
            query_url,
            metrics_url: self.metrics_url.clone(),
            probe_interval: Duration::from_millis(self.probe_interval_ms),
            linger_ms: self.linger_ms,
            window_ms: cfg.pipeline.window_ms,
            lateness_ms: cfg.pipeline.lateness_ms,
            pane_probes: !self.no_probes
                && !self.no_similarity_probes
                && cfg.similarity.enabled
                && self.event_span_secs.is_none()
                && self.rate > 0.0,
            sliding_ms: cfg.engagement.sliding_ms,
            verify: self.verify,
            verify_timeout: Duration::from_secs(self.verify_timeout),
        }
    }

    /// Runs the load on a runtime of its own, prints the report's table and writes the
    /// `--report` and `--plot` files.
    pub fn run(&self, cfg: &Config) -> Result<Report, RunError> {
        let rt = tokio::runtime::Runtime::new().map_err(RunError::Runtime)?;
        let result = rt.block_on(super::run(self.run_config(cfg)));
        eprintln!();
        let report = result?;
        print!("{}", report.table());
        if let Some(path) = &self.report {
            let json = serde_json::to_string_pretty(&report).expect("a report serializes");
            write(path, json)?;
        }
        if let Some(path) = &self.plot {
            write(path, report.plot_svg())?;
        }
        Ok(report)
    }
}

fn write(path: &Path, contents: String) -> Result<(), RunError> {
    std::fs::write(path, contents).map_err(|source| RunError::Write {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadGenArgs,
    }

    fn parse(args: &[&str]) -> LoadGenArgs {
        Cli::parse_from(std::iter::once("load-gen").chain(args.iter().copied())).args
    }

    #[test]
    fn flags_become_the_run_under_the_configuration() {
        let mut cfg = Config::default();
        cfg.server.listen = "10.0.0.1:8080".into();
        cfg.kafka.topic = "t".into();
        cfg.pipeline.window_ms = 10_000;
        cfg.pipeline.lateness_ms = 2_000;
        let args = parse(&[
            "--rate",
            "500",
            "--events",
            "9",
            "--seed",
            "7",
            "--run-id",
            "3",
            "--users",
            "11",
            "--campaigns",
            "5",
            "--late-fraction",
            "0.5",
            "--probe-interval-ms",
            "20",
            "--verify",
            "--verify-timeout",
            "4",
            "--duration",
            "1.5",
        ]);
        let run = args.run_config(&cfg);
        assert_eq!(
            (run.topic.as_str(), run.rate, run.events),
            ("t", 500.0, Some(9))
        );
        assert_eq!(run.query_url.as_deref(), Some("http://10.0.0.1:8080"));
        assert_eq!(run.duration, Some(Duration::from_millis(1_500)));
        assert_eq!(run.probe_interval, Duration::from_millis(20));
        assert_eq!(
            (run.verify, run.verify_timeout),
            (true, Duration::from_secs(4))
        );
        let g = &run.generator;
        assert_eq!((g.seed, g.run_id, g.users, g.campaigns), (7, 3, 11, 5));
        assert_eq!(
            (g.late_fraction, g.max_disorder_ms, g.late_by_ms),
            (0.5, 1_000, 14_000)
        );
        assert_eq!(run.window_ms, 10_000);
    }

    #[test]
    fn no_probes_without_verify_needs_no_query_server() {
        let cfg = Config::default();
        assert_eq!(parse(&["--no-probes"]).run_config(&cfg).query_url, None);
        let url = parse(&["--no-probes", "--verify", "--query-url", "http://q:1"])
            .run_config(&cfg)
            .query_url;
        assert_eq!(url.as_deref(), Some("http://q:1"));
        let defaults = parse(&[]);
        assert_eq!(
            (defaults.rate, defaults.linger_ms, defaults.users),
            (10_000.0, 5, 100_000)
        );
    }
}
