//! The `eddy` command line: `demo`, `run`, `serve`, `schema apply`, `topics create`,
//! `load-gen`. Configuration: `--config FILE` (or `EDDY_CONFIG`), then `EDDY_*` variables,
//! then flags.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use eddy::pipeline::{DemoSetup, Mode, RunOptions, demo_dead_letters, run};
use eddy_core::{Config, MemoryStore, Metrics};
use eddy_load_gen::GenConfig;
use eddy_load_gen::runner::RunConfig;
use eddy_query_server::{AppState, LambdaBackend, MemoryBackend, ServerQueryLimits};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

#[derive(Parser)]
#[command(
    name = "eddy",
    version,
    about = "Incremental, event-time campaign analytics on timely/differential dataflow"
)]
struct Cli {
    /// Configuration file (TOML; see config/eddy.toml).
    #[arg(long, global = true, env = "EDDY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct TimelyArgs {
    /// Worker threads per process (overrides pipeline.workers).
    #[arg(short = 'w', long)]
    workers: Option<usize>,
    /// Number of processes in a timely cluster.
    #[arg(short = 'n', long, default_value_t = 1)]
    processes: usize,
    /// This process's index in the cluster.
    #[arg(short = 'p', long, default_value_t = 0)]
    process: usize,
    /// Host file for cluster mode: one `host:port` per line, one line per process.
    #[arg(short = 'H', long = "hostfile")]
    hostfile: Option<PathBuf>,
}

impl TimelyArgs {
    fn config(&self, cfg: &Config) -> Result<timely::Config> {
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
        timely::Config::from_args(args.into_iter())
            .map_err(|e| anyhow::anyhow!("timely config: {e}"))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Embedded demo: generated events → the same dataflow → in-memory layers → HTTP.
    /// Needs no broker, ClickHouse or Redis.
    Demo {
        #[command(flatten)]
        timely: TimelyArgs,
        /// Generated messages per second (total).
        #[arg(long, default_value_t = 20_000.0)]
        rate: f64,
        /// Generated partitions.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Window length, ms (the demo defaults to 10 s windows so they close quickly).
        #[arg(long, default_value_t = 10_000)]
        window_ms: i64,
        /// Allowed lateness, ms.
        #[arg(long, default_value_t = 2_000)]
        lateness_ms: i64,
        /// Sliding window of the engagement scores and interaction sets, ms (a multiple of
        /// the window; the demo defaults to 10 minutes so events visibly slide out).
        #[arg(long, default_value_t = 600_000)]
        sliding_ms: i64,
        /// Fraction of malformed messages (they go to the in-memory dead-letter log).
        #[arg(long, default_value_t = 0.001)]
        malformed_fraction: f64,
        /// Fraction of late events.
        #[arg(long, default_value_t = 0.001)]
        late_fraction: f64,
        /// Query server address.
        #[arg(long)]
        listen: Option<String>,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// Minutes of windows the in-memory layers keep (older ones are dropped).
        #[arg(long, default_value_t = 60)]
        retention_minutes: i64,
    },
    /// Worker: Kafka → dataflow → Redis + ClickHouse.
    Run {
        #[command(flatten)]
        timely: TimelyArgs,
        /// Also serve /metrics on this address.
        #[arg(long)]
        metrics_listen: Option<String>,
    },
    /// Query server over Redis (speed layer) and ClickHouse (batch layer).
    Serve {
        /// Listen address (overrides server.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// ClickHouse schema management.
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// Kafka topic management.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Produce generated events to Kafka, open loop at a target rate, measuring produce
    /// latency and end-to-end freshness; `--verify` checks the answers over HTTP.
    LoadGen {
        /// Target messages per second (0 = as fast as possible).
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        /// Stop after this many messages.
        #[arg(long)]
        events: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Run id, part of every event_id (default: the current time).
        #[arg(long)]
        run_id: Option<u64>,
        /// Distinct users and campaigns.
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        /// Distinct campaigns.
        #[arg(long, default_value_t = 1_000)]
        campaigns: u64,
        /// Zipf exponent of campaign popularity.
        #[arg(long, default_value_t = 1.1)]
        campaign_zipf: f64,
        /// Fraction of malformed messages.
        #[arg(long, default_value_t = 0.0)]
        malformed_fraction: f64,
        /// Fraction of late events.
        #[arg(long, default_value_t = 0.0)]
        late_fraction: f64,
        /// Query server for freshness probes and --verify (default: http://{server.listen}).
        #[arg(long)]
        query_url: Option<String>,
        /// Skip the freshness probes (no query server needed).
        #[arg(long)]
        no_probes: bool,
        /// Milliseconds between freshness probes.
        #[arg(long, default_value_t = 100)]
        probe_interval_ms: u64,
        /// Producer linger.ms (batching: fewer broker requests, more latency).
        #[arg(long, default_value_t = 5)]
        linger_ms: u64,
        /// Check the pipeline's answers against the expected totals; exit non-zero on a diff.
        #[arg(long)]
        verify: bool,
        /// Seconds --verify waits for the pipeline to drain.
        #[arg(long, default_value_t = 120)]
        verify_timeout: u64,
        /// Write the report as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write an SVG chart of throughput, latency and lag over time here.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// The pipeline's Prometheus endpoint (`eddy run --metrics-listen`), sampled every
        /// second for consumer lag and watermark, e.g. http://127.0.0.1:9100/metrics.
        #[arg(long)]
        metrics_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum SchemaAction {
    /// Apply every clickhouse/schema/*.sql in order (idempotent).
    Apply {
        /// Schema directory.
        #[arg(long, default_value = "clickhouse/schema")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Create the source and dead-letter topics if missing.
    Create,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDDY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k != "EDDY_CONFIG")
        .collect();
    let mut cfg = Config::load(cli.config.as_deref(), env).context("loading configuration")?;
    let metrics = Metrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    match cli.command {
        Command::Demo {
            timely,
            rate,
            partitions,
            window_ms,
            lateness_ms,
            sliding_ms,
            malformed_fraction,
            late_fraction,
            listen,
            seconds,
            retention_minutes,
        } => {
            cfg.pipeline.window_ms = window_ms;
            cfg.pipeline.lateness_ms = lateness_ms;
            cfg.engagement.sliding_ms = sliding_ms;
            cfg.kafka.idle_timeout_ms = 500;
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            cfg.validate()?;
            let store = Arc::new(RwLock::new(MemoryStore::with_retention(
                retention_minutes * 60_000,
            )));
            let generator = GenConfig {
                start_ts_ms: eddy_core::now_ms(),
                max_disorder_ms: lateness_ms / 2,
                late_by_ms: window_ms + lateness_ms * 2,
                malformed_fraction,
                late_fraction,
                ..GenConfig::default()
            };
            let mode = Mode::Demo(DemoSetup {
                store: store.clone(),
                dead_letters: demo_dead_letters(),
                generator,
                rate_per_partition: rate / partitions.max(1) as f64,
                partitions,
            });
            let state = AppState::new(
                Arc::new(MemoryBackend::new(store)),
                metrics.clone(),
                ServerQueryLimits::from_config(&cfg),
            );
            let server = spawn_server(cfg.server.listen.clone(), state, stop.clone())?;
            let l = &cfg.server.listen;
            let (from, to) = (
                eddy_core::now_ms() - 3_600_000,
                eddy_core::now_ms() + 3_600_000,
            );
            println!(
                "eddy demo: {rate} events/s into {window_ms} ms windows, serving on http://{l}"
            );
            println!("  curl 'http://{l}/v1/counts?event_type=click&from={from}&to={to}'");
            println!(
                "  curl 'http://{l}/v1/counts?campaign_id=0&from={from}&to={to}&granularity=hour'"
            );
            println!("  curl 'http://{l}/v1/campaigns/top?k=5' ; curl http://{l}/v1/campaigns/0");
            println!(
                "  curl http://{l}/v1/users/0/similar ; curl http://{l}/v1/users/0/recommendations"
            );
            println!("  curl http://{l}/healthz ; curl http://{l}/metrics");
            stop_on_signal_or_timeout(stop.clone(), seconds);
            let opts = RunOptions {
                timely: timely.config(&cfg)?,
                config: cfg,
                stop: stop.clone(),
                metrics,
            };
            run(opts, mode)?;
            stop.store(true, Ordering::SeqCst);
            let _ = server.join();
        }
        Command::Run {
            timely,
            metrics_listen,
        } => {
            let server = match metrics_listen {
                Some(addr) => {
                    let state = AppState::new(
                        Arc::new(MemoryBackend::new(Arc::new(RwLock::new(
                            MemoryStore::default(),
                        )))),
                        metrics.clone(),
                        ServerQueryLimits::from_config(&cfg),
                    );
                    Some(spawn_server(addr, state, stop.clone())?)
                }
                None => None,
            };
            stop_on_signal_or_timeout(stop.clone(), None);
            let opts = RunOptions {
                timely: timely.config(&cfg)?,
                config: cfg,
                stop: stop.clone(),
                metrics,
            };
            run(opts, Mode::Kafka)?;
            stop.store(true, Ordering::SeqCst);
            if let Some(s) = server {
                let _ = s.join();
            }
        }
        Command::Serve { listen } => {
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            let backend =
                LambdaBackend::new(&cfg.redis, &cfg.clickhouse).context("query backend")?;
            let state = AppState::new(
                Arc::new(backend),
                metrics,
                ServerQueryLimits::from_config(&cfg),
            );
            stop_on_signal_or_timeout(stop.clone(), None);
            let server = spawn_server(cfg.server.listen.clone(), state, stop)?;
            let _ = server.join();
        }
        Command::Schema {
            action: SchemaAction::Apply { dir },
        } => {
            let applied = eddy_sinks::apply_schema(&cfg.clickhouse, &dir)?;
            for f in applied {
                println!("applied {f}");
            }
        }
        Command::Topics {
            action: TopicsAction::Create,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(eddy::kafka::create_topics(&cfg.kafka))?;
            println!(
                "topics {} ({} partitions) and {} ready",
                cfg.kafka.topic, cfg.kafka.partitions, cfg.kafka.dlq_topic
            );
        }
        Command::LoadGen {
            rate,
            events,
            duration,
            seed,
            run_id,
            users,
            campaigns,
            campaign_zipf,
            malformed_fraction,
            late_fraction,
            query_url,
            no_probes,
            probe_interval_ms,
            linger_ms,
            verify,
            verify_timeout,
            report,
            plot,
            metrics_url,
        } => {
            let query_url = (!no_probes || verify)
                .then(|| query_url.unwrap_or_else(|| format!("http://{}", cfg.server.listen)));
            let run = RunConfig {
                brokers: cfg.kafka.brokers.clone(),
                topic: cfg.kafka.topic.clone(),
                dlq_topic: cfg.kafka.dlq_topic.clone(),
                rate,
                events,
                duration: duration.map(std::time::Duration::from_secs_f64),
                generator: GenConfig {
                    seed,
                    run_id: run_id.unwrap_or_else(|| eddy_core::now_ms() as u64),
                    users,
                    campaigns,
                    campaign_zipf,
                    malformed_fraction,
                    late_fraction,
                    max_disorder_ms: cfg.pipeline.lateness_ms / 2,
                    late_by_ms: cfg.pipeline.window_ms + cfg.pipeline.lateness_ms * 2,
                    ..GenConfig::default()
                },
                query_url,
                metrics_url,
                probe_interval: std::time::Duration::from_millis(probe_interval_ms),
                linger_ms,
                window_ms: cfg.pipeline.window_ms,
                sliding_ms: cfg.engagement.sliding_ms,
                verify,
                verify_timeout: std::time::Duration::from_secs(verify_timeout),
            };
            let rt = tokio::runtime::Runtime::new()?;
            let result = rt.block_on(eddy_load_gen::runner::run(run));
            eprintln!();
            let r = result?;
            print!("{}", r.table());
            if let Some(path) = report {
                std::fs::write(&path, serde_json::to_string_pretty(&r)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(path) = plot {
                std::fs::write(&path, r.plot_svg())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

fn spawn_server(
    addr: String,
    state: AppState,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&addr))
        .with_context(|| format!("binding {addr}"))?;
    Ok(std::thread::spawn(move || {
        rt.block_on(async move {
            let shutdown = async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            };
            if let Err(e) = eddy_query_server::serve_with_shutdown(listener, state, shutdown).await
            {
                tracing::error!(error = %e, "query server failed");
            }
        });
    }))
}

fn stop_on_signal_or_timeout(stop: Arc<AtomicBool>, seconds: Option<u64>) {
    let s2 = stop.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        s2.store(true, Ordering::SeqCst);
    });
    if let Some(secs) = seconds {
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            stop.store(true, Ordering::SeqCst);
        });
    }
}
