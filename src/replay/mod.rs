//! `eddy replay`: re-reads a range of the source topic through the same pipeline as `eddy run`
//! (a replay is a run with a start plan and an end condition), for backfills.
//!
//! # Life of a replay
//! 1. **Plan.** `--from` / `--to` are resolved once to per-partition offsets ([`resolve`]):
//!    times through the broker's offsets-for-times, each answer checked against the
//!    partition's watermarks and the timestamp of the record it names (tansu 0.6 answers
//!    offset 0 for a time after the last record: read as the log end). A start the broker no
//!    longer retains is refused ([`ReplayPlan::check`]). The plan is saved in Redis
//!    ([`eddy_storage::keys::replay_plan`]) before anything is read (`plan saved`).
//! 2. **Read.** The pipeline reads every partition from its start (`--then stop`: up to its
//!    end, [`BoundedReader`]), writing the live outputs (Redis, ClickHouse; the sinks are
//!    idempotent per batch) and saving checkpoints under the replay's own name
//!    ([`ReplayPlan::checkpoint_name`]), never the live job's. It holds the job's lease, so it
//!    never runs beside `eddy run` on the same outputs.
//! 3. **Resume.** A replay interrupted (even by SIGKILL) and started again with the same
//!    request finds its plan and its last checkpoint, and resumes from that checkpoint as a
//!    restarted `eddy run` does, not from the start.
//! 4. **End.** `--then stop`: once every partition is read to its end and reported idle, the
//!    next durable checkpoint holds the final watermark: the plan is marked done
//!    (`replay finished`) and the process exits. `--then live`: once a durable checkpoint
//!    covers every partition's end (`caught up`), it is saved as the live job's checkpoint too
//!    and the run goes on as `eddy run` (checkpoints under the topic, offsets committed).

mod plan;
mod progress;

pub use plan::{
    EndSpec, PartitionPlan, PlanStore, ReplayPlan, ReplayRequest, StartSpec, parse_end,
    parse_start, resolve, resolve_time,
};
pub use progress::{BoundedReader, ReplayProgress, Reporter};

use crate::kafka::{BrokerStartup, KafkaIoError};
use eddy_core::{Checkpoint, Config};
use eddy_sinks::{CheckpointStore, ClickHouseCheckpoints, SinkError};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Replay errors.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A `--from` / `--to` that cannot be parsed or does not fit the topic.
    #[error("replay: {0}")]
    BadSpec(String),
    /// The start of a partition is below the broker's log start: those records are gone.
    #[error(
        "replay of topic {topic:?}: partition {partition} start offset {start} is no longer \
         retained by the broker (its log starts at {low}); replay from a later --from"
    )]
    NotRetained {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The planned start.
        start: i64,
        /// The broker's log start.
        low: i64,
    },
    /// An unfinished replay of another request is saved.
    #[error(
        "an unfinished replay of topic {topic:?} with another request is saved ({saved}); run \
         it again with the same arguments to resume it, or pass --fresh to discard it"
    )]
    OtherPlan {
        /// The topic.
        topic: String,
        /// The saved request.
        saved: String,
    },
    /// The topic's partitions differ from the saved plan's.
    #[error("topic {topic:?} has partitions {now:?}, the saved replay plan {planned:?}")]
    Partitions {
        /// The topic.
        topic: String,
        /// In the plan.
        planned: Vec<i32>,
        /// Now.
        now: Vec<i32>,
    },
    /// A broker call failed.
    #[error(transparent)]
    Kafka(#[from] KafkaIoError),
    /// Redis (the plan store) failed.
    #[error("replay plan store: {0}")]
    Redis(#[from] redis::RedisError),
    /// A store failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The saved plan cannot be read or written.
    #[error("replay plan: {0}")]
    Plan(String),
}

/// What the pipeline needs to run a replay ([`crate::pipeline::Mode::Replay`]).
#[derive(Clone)]
pub struct ReplaySetup {
    /// The plan.
    pub plan: Arc<ReplayPlan>,
    /// Shared progress.
    pub progress: Arc<ReplayProgress>,
    /// Records per second over the whole process (`--rate-limit`).
    pub rate_limit: Option<f64>,
    /// The worker count (the rate limit is shared among workers).
    pub workers: usize,
    /// Set once the checkpoints are the live job's (`--then live`, caught up).
    handed_over: Arc<AtomicBool>,
    redis_url: String,
    redis_prefix: String,
    clickhouse: eddy_core::config::ClickHouseConfig,
}

impl ReplaySetup {
    /// Whether the replay stops at its plan's end (`--then stop`).
    pub fn bounded(&self) -> bool {
        !self.plan.request.then_live
    }

    /// The name this replay's checkpoints are saved (and restored) under.
    pub fn checkpoint_name(&self) -> String {
        self.plan.checkpoint_name()
    }

    /// Whether checkpoints are now saved as the live job's.
    pub fn handed_over(&self) -> bool {
        self.handed_over.load(Ordering::SeqCst)
    }

    /// Wraps a worker's reader: bounded by the plan, counted in the progress, rate-limited.
    pub fn reader<R: crate::reader::PartitionReader>(&self, inner: R) -> BoundedReader<R> {
        BoundedReader::new(
            inner,
            &self.plan,
            self.bounded(),
            self.progress.clone(),
            self.rate_limit.map(|r| r / self.workers.max(1) as f64),
        )
    }

    /// Saves the durable checkpoint `cp` (taken by the pipeline) where it belongs, and moves
    /// the replay on: `caught up` once it covers every partition's end, `replay finished`
    /// (plan marked done, `stop` set) once it also holds the final watermark (`--then stop`),
    /// or hand-over to the live job's checkpoints (`--then live`).
    pub fn save_checkpoint(
        &self,
        store: &mut dyn CheckpointStore,
        cp: &Checkpoint,
        stop: &AtomicBool,
    ) -> Result<(), ReplayError> {
        if self.handed_over() {
            store.save(cp)?;
            return Ok(());
        }
        let mut own = cp.clone();
        own.topic = self.checkpoint_name();
        store.save(&own)?;
        let covers_end = cp.partitions.iter().all(|p| {
            self.plan
                .end(p.partition)
                .is_some_and(|e| p.high_offset >= e)
        });
        if !covers_end {
            return Ok(());
        }
        if self.plan.request.then_live {
            store.save(cp)?;
            self.handed_over.store(true, Ordering::SeqCst);
            self.progress.set_caught_up();
            self.mark_done()?;
            self.drop_own_checkpoints();
            tracing::info!(
                target: "eddy::replay",
                epoch = cp.epoch,
                watermark_ms = cp.watermark_ms,
                "replay caught up: its checkpoint is now the live job's; going on as eddy run"
            );
            return Ok(());
        }
        if self.progress.set_caught_up() {
            tracing::info!(target: "eddy::replay", epoch = cp.epoch, "replay caught up: every partition read to its end");
        }
        let settled = self
            .progress
            .all_idle_at_end()
            .is_some_and(|e| cp.epoch > e);
        if settled {
            self.mark_done()?;
            self.drop_own_checkpoints();
            self.progress.set_finished();
            tracing::info!(
                target: "eddy::replay",
                epoch = cp.epoch,
                watermark_ms = cp.watermark_ms,
                records = self.plan.records(),
                "replay finished: every result is durable"
            );
            stop.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Deletes the replay's checkpoints once it is done: no later run restores them, and
    /// checkpoint retention (which keeps every day from the oldest name's latest checkpoint)
    /// must not be held back by them. A failure is only logged (rows left behind).
    fn drop_own_checkpoints(&self) {
        let name = self.checkpoint_name();
        let deleted = eddy_storage::clickhouse_client(&self.clickhouse)
            .map_err(|e| e.to_string())
            .and_then(|client| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(
                    client
                        .query(&format!(
                            "ALTER TABLE {} DELETE WHERE topic = ?",
                            eddy_storage::SOURCE_CHECKPOINTS
                        ))
                        .bind(&name)
                        .execute(),
                )
                .map_err(|e| e.to_string())
            });
        if let Err(e) = deleted {
            tracing::warn!(target: "eddy::replay", checkpoint = %name, error = %e, "cannot delete the replay's checkpoints");
        }
    }

    fn mark_done(&self) -> Result<(), ReplayError> {
        let mut plan = (*self.plan).clone();
        plan.done = true;
        PlanStore::connect(&self.redis_url, &self.redis_prefix, &plan.topic)?.save(&plan)
    }
}

/// `--dry-run`: resolves `request` (the broker waited for up to `kafka.startup_timeout_ms`)
/// without saving anything.
pub fn dry_run(cfg: &Config, request: &ReplayRequest) -> Result<ReplayPlan, ReplayError> {
    let stop = AtomicBool::new(false);
    let broker = BrokerStartup::new(Duration::from_millis(cfg.kafka.startup_timeout_ms), &stop);
    retry_resolve(&broker, cfg, request)
}

fn retry_resolve(
    broker: &BrokerStartup<'_>,
    cfg: &Config,
    request: &ReplayRequest,
) -> Result<ReplayPlan, ReplayError> {
    let mut last = None;
    let got = broker.retry("replay plan", || match resolve(&cfg.kafka, request) {
        Ok(plan) => Ok(Some(plan)),
        Err(ReplayError::Kafka(e)) => Err(e),
        Err(other) => {
            last = Some(other);
            Ok(None)
        }
    })?;
    match (got, last) {
        (Some(plan), _) => Ok(plan),
        (None, Some(e)) => Err(e),
        (None, None) => Err(ReplayError::Plan("no plan".into())),
    }
}

/// Finds the unfinished plan of the same `request` (resume) or makes and saves a new one
/// (`plan saved`), checks the broker still retains where reading starts, and returns the
/// pipeline's replay setup. `fresh`: discard an unfinished plan of another request.
pub fn prepare(
    cfg: &Config,
    request: &ReplayRequest,
    fresh: bool,
    rate_limit: Option<f64>,
    workers: usize,
) -> Result<ReplaySetup, ReplayError> {
    let mut plans = PlanStore::connect(&cfg.redis.url, &cfg.redis.prefix, &cfg.kafka.topic)?;
    let stop = AtomicBool::new(false);
    let broker = BrokerStartup::new(Duration::from_millis(cfg.kafka.startup_timeout_ms), &stop);
    let saved = plans.load()?.filter(|p| !p.done);
    let mut checkpoints = ClickHouseCheckpoints::connect(&cfg.clickhouse)?;
    let (plan, restored) = match saved {
        Some(plan) if plan.request == *request => {
            let restored = checkpoints.load(&plan.checkpoint_name())?;
            tracing::info!(
                target: "eddy::replay",
                plan = plan.id,
                records = plan.records(),
                checkpoint = restored.as_ref().map(|c| c.epoch),
                "resuming the saved replay plan"
            );
            (plan, restored)
        }
        Some(plan) if !fresh => {
            return Err(ReplayError::OtherPlan {
                topic: cfg.kafka.topic.clone(),
                saved: format!("{:?}", plan.request),
            });
        }
        _ => {
            let plan = retry_resolve(&broker, cfg, request)?;
            plan.check()?;
            plans.save(&plan)?;
            tracing::info!(
                target: "eddy::replay",
                plan = plan.id,
                key = %eddy_storage::keys::replay_plan(&cfg.redis.prefix, &cfg.kafka.topic),
                records = plan.records(),
                "replay plan saved"
            );
            (plan, None)
        }
    };
    // Where reading starts now must still be retained.
    let now = broker.retry("replay plan", || {
        crate::kafka::topic_partitions(&cfg.kafka, &cfg.kafka.topic)
    })?;
    let planned: Vec<i32> = plan.partitions.iter().map(|p| p.partition).collect();
    if now != planned {
        return Err(ReplayError::Partitions {
            topic: cfg.kafka.topic.clone(),
            planned,
            now,
        });
    }
    let position: HashMap<i32, i64> = match &restored {
        Some(cp) => cp
            .partitions
            .iter()
            .map(|p| (p.partition, p.resume_offset))
            .collect(),
        None => plan
            .partitions
            .iter()
            .map(|p| (p.partition, p.start))
            .collect(),
    };
    let lows = broker.retry("replay retention check", || log_starts(cfg, &planned))?;
    for p in &plan.partitions {
        let from = position[&p.partition];
        let low = lows.get(&p.partition).copied().unwrap_or(0);
        if from < low && from < p.end {
            return Err(ReplayError::NotRetained {
                topic: plan.topic.clone(),
                partition: p.partition,
                start: from,
                low,
            });
        }
    }
    Ok(ReplaySetup {
        progress: Arc::new(ReplayProgress::new(&plan, &position)),
        plan: Arc::new(plan),
        rate_limit,
        workers,
        handed_over: Arc::new(AtomicBool::new(false)),
        redis_url: cfg.redis.url.clone(),
        redis_prefix: cfg.redis.prefix.clone(),
        clickhouse: cfg.clickhouse.clone(),
    })
}

/// The log start (low watermark) of each of `partitions`.
fn log_starts(cfg: &Config, partitions: &[i32]) -> Result<HashMap<i32, i64>, KafkaIoError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = crate::kafka::client(&cfg.kafka)
        .create()
        .map_err(|source| KafkaIoError::Client {
            op: "watermarks client",
            source,
        })?;
    partitions
        .iter()
        .map(|&p| {
            consumer
                .fetch_watermarks(&cfg.kafka.topic, p, Duration::from_secs(10))
                .map(|(low, _)| (p, low))
                .map_err(|source| KafkaIoError::Client {
                    op: "fetch watermarks",
                    source,
                })
        })
        .collect()
}

/// What [`read_only`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadOnlyReport {
    /// Records read.
    pub records: u64,
    /// Wall-clock seconds from the first poll to the last partition's end.
    pub seconds: f64,
}

impl ReadOnlyReport {
    /// Records per second.
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-9)
    }
}

/// Reads `plan` through the pipeline's readers ([`crate::kafka::KafkaReader`], one per
/// worker thread, partitions dealt as `eddy run` deals them) and discards the records: the
/// broker's read ceiling, to compare a replay's throughput with (`--read-only`).
pub fn read_only(
    cfg: &Config,
    plan: &ReplayPlan,
    workers: usize,
) -> Result<ReadOnlyReport, ReplayError> {
    use crate::reader::PartitionReader;
    let all: Vec<i32> = plan.partitions.iter().map(|p| p.partition).collect();
    let start: HashMap<i32, i64> = plan
        .partitions
        .iter()
        .map(|p| (p.partition, p.start))
        .collect();
    let progress = Arc::new(ReplayProgress::new(plan, &start));
    let metrics = eddy_core::Metrics::new();
    let began = std::time::Instant::now();
    let records = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|w| {
                let mine: Vec<i32> = all
                    .iter()
                    .copied()
                    .filter(|p| *p as usize % workers.max(1) == w)
                    .collect();
                let (all, start, progress, metrics) = (
                    all.clone(),
                    start.clone(),
                    progress.clone(),
                    metrics.clone(),
                );
                s.spawn(move || -> Result<u64, ReplayError> {
                    let inner =
                        crate::kafka::KafkaReader::new(&cfg.kafka, all, mine, start, metrics)?;
                    let mut reader = BoundedReader::new(inner, plan, true, progress, None);
                    let parts = reader.partitions();
                    let mut n = 0u64;
                    while !parts.iter().all(|p| reader.at_end(*p)) {
                        match reader.poll(10_000, &mut |_| n += 1) {
                            Ok(_) => {}
                            Err(e) if crate::kafka::KafkaIoError::is_fatal(&e) => {
                                return Err(e.into());
                            }
                            Err(e) => tracing::warn!(error = %e, "read failed; retrying"),
                        }
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .sum::<Result<u64, ReplayError>>()
    })?;
    Ok(ReadOnlyReport {
        records,
        seconds: began.elapsed().as_secs_f64(),
    })
}
