//! The `eddy` command line: `demo`, `run`, `replay`, `promote`, `versions`, `serve`,
//! `schema apply`, `topics create`, `load-gen`, `status`. Configuration: `--config FILE` (or
//! `EDDY_CONFIG`), then `EDDY_*` variables, then flags. Each subcommand's flags belong to the crate that runs it ([`eddy::cli`],
//! [`eddy_load_gen::runner::LoadGenArgs`]); this file only dispatches.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use eddy::cli::{DemoArgs, ReplayArgs, TimelyArgs};
use eddy::pipeline::{Mode, RunOptions, run};
use eddy::version::Target;
use eddy_core::version::Version;
use eddy_core::{Config, Metrics};
use eddy_load_gen::runner::LoadGenArgs;
use eddy_query_server::{
    AppState, MemoryBackend, REFRESH_INTERVAL, ServerQueryLimits, VersionedBackend,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// jemalloc, not the system allocator: the dataflow frees bursts of small records (a pane
/// close emits hundreds of thousands of neighbor lists) that glibc's allocator coalesces and
/// splits again, a tenth of the CPU at scale (README "Memory and the allocator").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

#[derive(Subcommand)]
enum Command {
    /// Embedded demo: generated events → the same dataflow → in-memory layers → HTTP.
    /// Needs no broker, ClickHouse or Redis.
    Demo(DemoArgs),
    /// Worker: Kafka → dataflow → Redis + ClickHouse.
    Run {
        #[command(flatten)]
        timely: TimelyArgs,
        /// Also serve /metrics on this address.
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Which outputs to write: `live` (the version the query server serves, read at
        /// start; the job stops once another version is promoted) or `version:NAME`.
        #[arg(long, default_value = "live")]
        target: String,
    },
    /// Re-read a range of the source topic through the pipeline into the live outputs
    /// (backfill): resolves --from/--to to offsets once, saves the plan, resumes an
    /// interrupted replay from its own checkpoints.
    Replay(ReplayArgs),
    /// Serve output version NAME (built by `eddy replay --target version:NAME`; `base`: the
    /// outputs the configuration names): checks it is caught up with the served version and
    /// kept current by a job, then switches the query servers to it (each within 500 ms).
    Promote {
        /// The version.
        name: String,
        /// Promote even if its replay is not done, no job keeps it current or its
        /// checkpoint is behind the served version's.
        #[arg(long)]
        force: bool,
        /// Seconds to wait for its checkpoint to catch up with the served version's.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Output versions: `list` (default) or `drop NAME`.
    Versions {
        #[command(subcommand)]
        action: Option<VersionsAction>,
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
    LoadGen(LoadGenArgs),
    /// Every pipeline process's lag, watermark, checkpoints, sinks and dead letters on one
    /// screen (from the query server's /v1/status); `--watch` refreshes, `--json` for scripts.
    Status(eddy::status::StatusArgs),
}

#[derive(Subcommand)]
enum SchemaAction {
    /// Apply every clickhouse/schema/*.sql in order (idempotent).
    Apply {
        /// Schema directory; without it, the schema compiled into eddy (clickhouse/schema).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum VersionsAction {
    /// Every version: served or not, its job, its replay, its checkpoint's watermark.
    List,
    /// Delete a version's outputs (Redis keys, ClickHouse database); refused while it is
    /// served or written.
    Drop {
        /// The version.
        name: String,
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
        Command::Demo(demo) => {
            demo.configure(&mut cfg)?;
            let store = demo.store();
            let mode = Mode::Demo(demo.setup(store.clone()));
            let state = AppState::new(
                Arc::new(MemoryBackend::new(store)),
                metrics.clone(),
                ServerQueryLimits::from_config(&cfg),
            );
            let server = spawn_server(cfg.server.listen.clone(), state, stop.clone())?;
            print!("{}", demo.banner(&cfg.server.listen));
            stop_on_signal_or_timeout(stop.clone(), demo.seconds, cfg.pipeline.shutdown_timeout_ms);
            run_pipeline(cfg, &demo.timely, stop, metrics, mode, Some(server))?;
        }
        Command::Run {
            timely,
            metrics_listen,
            target,
        } => {
            let target = Target::parse(&target)?;
            let (version, out) = eddy::version::resolve(&cfg, &target, false)?;
            let server = spawn_ops(metrics_listen, &out, &metrics, &stop)?;
            stop_on_signal_or_timeout(stop.clone(), None, cfg.pipeline.shutdown_timeout_ms);
            let identity = eddy_core::api::ProcessIdentity::this_process(timely.process, "run")
                .writing(&version);
            // Status records and the served version live under the base prefix.
            let status =
                eddy::status::spawn_publisher(&cfg.redis, identity, metrics.clone(), stop.clone())?;
            let served = target == Target::Live;
            let watcher = eddy::version::watch_serving(&cfg, version, served, stop.clone())?;
            run_pipeline(out, &timely, stop, metrics, Mode::Kafka, server)?;
            let _ = status.join();
            let _ = watcher.join();
        }
        Command::Promote { name, force, wait } => {
            let version = Version::parse(&name)?;
            let wait = std::time::Duration::from_secs(wait);
            let before = eddy::version::promote(&cfg, &version, force, wait)?;
            if before == version {
                println!("version {version} was already served");
            } else {
                println!("serving version {version} (was {before})");
            }
        }
        Command::Versions { action } => match action.unwrap_or(VersionsAction::List) {
            VersionsAction::List => {
                for v in eddy::version::list(&cfg)? {
                    println!("{}", v.line());
                }
            }
            VersionsAction::Drop { name } => {
                let version = Version::parse(&name)?;
                eddy::version::drop_version(&cfg, &version)?;
                println!("version {version} dropped");
            }
        },
        Command::Replay(args) => replay(args, cfg, metrics, stop)?,
        Command::Serve { listen } => {
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            // The version `{prefix}:serving` names, re-read every 500 ms (`eddy promote`).
            let backend = Arc::new(
                VersionedBackend::new(&cfg.redis, &cfg.clickhouse).context("query backend")?,
            );
            let _refresher = VersionedBackend::spawn_refresher(&backend, REFRESH_INTERVAL)?;
            let status = eddy_query_server::StatusSource::redis(
                &cfg.redis,
                std::time::Duration::from_millis(cfg.server.request_timeout_ms),
            )?;
            let state = AppState::new(backend, metrics, ServerQueryLimits::from_config(&cfg))
                .with_status(status);
            stop_on_signal_or_timeout(stop.clone(), None, cfg.pipeline.shutdown_timeout_ms);
            let server = spawn_server(cfg.server.listen.clone(), state, stop)?;
            let _ = server.join();
        }
        Command::Schema {
            action: SchemaAction::Apply { dir },
        } => {
            let applied = eddy_sinks::apply_schema(&cfg.clickhouse, dir.as_deref())?;
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
        Command::LoadGen(args) => {
            args.run(&cfg)?;
        }
        Command::Status(args) => args.run(&cfg, &stop)?,
    }
    Ok(())
}

/// `/metrics` and `/healthz` of a worker on `addr`, if given.
fn spawn_ops(
    addr: Option<String>,
    cfg: &Config,
    metrics: &Metrics,
    stop: &Arc<AtomicBool>,
) -> Result<Option<std::thread::JoinHandle<()>>> {
    let Some(addr) = addr else { return Ok(None) };
    let ops = eddy::ops::Ops {
        metrics: metrics.clone(),
        started_ms: eddy_core::now_ms(),
        timeout_ms: cfg.pipeline.liveness_timeout_ms,
    };
    let router = eddy::ops::router(ops);
    Ok(Some(spawn_http(
        addr,
        stop.clone(),
        |listener, shutdown| async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        },
    )?))
}

/// `eddy replay`: `--dry-run` prints the plan; otherwise the pipeline runs the plan (resumed
/// if saved) until it is finished (`--then stop`) or stopped.
fn replay(args: ReplayArgs, cfg: Config, metrics: Metrics, stop: Arc<AtomicBool>) -> Result<()> {
    let request = args.request()?;
    if args.dry_run {
        let plan = eddy::replay::dry_run(&cfg, &request)?;
        print!("{}", plan.table());
        plan.check()?;
        return Ok(());
    }
    let workers = args.timely.workers.unwrap_or(cfg.pipeline.workers);
    let base = cfg;
    let target = args.target()?;
    let create = matches!(target, Target::Version(Version::Named(_)));
    let (version, cfg) = if args.read_only {
        (Version::Base, base.clone())
    } else {
        eddy::version::resolve(&base, &target, create)?
    };
    if args.read_only {
        let plan = eddy::replay::dry_run(&cfg, &request)?;
        plan.check()?;
        let r = eddy::replay::read_only(&cfg, &plan, workers)?;
        println!(
            "read {} records in {:.2} s: {:.0} records/s ({workers} readers)",
            r.records,
            r.seconds,
            r.rate()
        );
        return Ok(());
    }
    if args.timely.processes > 1 {
        anyhow::bail!("eddy replay runs in one process (use -w for more workers)");
    }
    let setup = eddy::replay::prepare(
        &cfg,
        &request,
        args.fresh,
        args.rate_limit_per_s()?,
        workers,
    )?;
    print!("{}", setup.plan.table());
    let to_ms = match request.to {
        eddy::replay::EndSpec::Time(t) => Some(t),
        _ => None,
    };
    let server = spawn_ops(args.metrics_listen.clone(), &cfg, &metrics, &stop)?;
    let reporter = eddy::replay::Reporter::spawn(
        setup.progress.clone(),
        metrics.clone(),
        to_ms,
        std::time::Duration::from_secs(1),
    );
    stop_on_signal_or_timeout(stop.clone(), None, cfg.pipeline.shutdown_timeout_ms);
    let identity = eddy_core::api::ProcessIdentity::this_process(0, "replay").writing(&version);
    let status =
        eddy::status::spawn_publisher(&base.redis, identity, metrics.clone(), stop.clone())?;
    let served = target == Target::Live;
    let watcher = eddy::version::watch_serving(&base, version, served, stop.clone())?;
    let progress = setup.progress.clone();
    run_pipeline(
        cfg,
        &args.timely,
        stop,
        metrics,
        Mode::Replay(setup),
        server,
    )?;
    let _ = status.join();
    let _ = watcher.join();
    drop(reporter);
    if !progress.finished() && !request.then_live {
        anyhow::bail!("replay stopped before its end; run the same command again to resume it");
    }
    Ok(())
}

/// Runs the pipeline until `stop`, then stops `server` (if any) and waits for it.
fn run_pipeline(
    config: Config,
    timely: &TimelyArgs,
    stop: Arc<AtomicBool>,
    metrics: Metrics,
    mode: Mode,
    server: Option<std::thread::JoinHandle<()>>,
) -> Result<()> {
    let opts = RunOptions {
        timely: timely.config(&config)?,
        config,
        stop: stop.clone(),
        metrics,
    };
    run(opts, mode)?;
    stop.store(true, Ordering::SeqCst);
    if let Some(s) = server {
        let _ = s.join();
    }
    Ok(())
}

/// Serves the query server's routes over `state` on `addr` until `stop`.
fn spawn_server(
    addr: String,
    state: AppState,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    spawn_http(addr, stop, |listener, shutdown| {
        eddy_query_server::serve_with_shutdown(listener, state, shutdown)
    })
}

/// Binds `addr` and runs `serve(listener, shutdown)` on a thread with its own runtime; the
/// `shutdown` future completes once `stop` is set.
fn spawn_http<F, Fut, E>(
    addr: String,
    stop: Arc<AtomicBool>,
    serve: F,
) -> Result<std::thread::JoinHandle<()>>
where
    F: FnOnce(tokio::net::TcpListener, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut
        + Send
        + 'static,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&addr))
        .with_context(|| format!("binding {addr}"))?;
    Ok(std::thread::spawn(move || {
        rt.block_on(async move {
            let shutdown = Box::pin(async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            });
            if let Err(e) = serve(listener, shutdown).await {
                tracing::error!(error = %e, "http server failed");
            }
        });
    }))
}

/// Sets `stop` on the first SIGINT/SIGTERM (or after `seconds`); a second signal exits at
/// once (code 130). Once `stop` is set, the process gets `pipeline.shutdown_timeout_ms` to
/// flush its sinks; past that it exits with code 1, so a stop never hangs on a stuck store.
fn stop_on_signal_or_timeout(stop: Arc<AtomicBool>, seconds: Option<u64>, shutdown_ms: u64) {
    let s2 = stop.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            // Registered once: a signal arriving while the first is handled is not lost.
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut signals = 0;
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                signals += 1;
                if signals > 1 {
                    tracing::error!("second stop signal: exiting now");
                    std::process::exit(130);
                }
                tracing::info!("stopping (a second Ctrl-C exits at once)");
                s2.store(true, Ordering::SeqCst);
            }
        });
    });
    if let Some(secs) = seconds {
        let s3 = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            s3.store(true, Ordering::SeqCst);
        });
    }
    // The shutdown deadline: polls the flag (this thread does nothing else).
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            std::thread::park_timeout(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(shutdown_ms));
        tracing::error!(
            timeout_ms = shutdown_ms,
            "shutdown did not finish in pipeline.shutdown_timeout_ms (a store is stuck?): exiting"
        );
        std::process::exit(1);
    });
}
