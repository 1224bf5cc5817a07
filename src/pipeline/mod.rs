//! Assembles eddy's dataflow on every timely worker and drives it: source → watermark →
//! windowed counts → sinks, plus the checkpoint coordinator on worker 0.
//!
//! # Commit protocol
//! A probe follows every sink (Redis, ClickHouse or memory, and the dead-letter writer); each
//! sink operator holds epoch `e`'s capability until its sink threads have written `e`. When the
//! probe passes `e` on worker 0, the checkpoint candidate of the newest epoch `<= e` (computed
//! by `TrackWatermark` from the broadcast progress reports, so it covers every partition) is
//! saved to the checkpoint store, then the batch/speed boundary is published and the resume
//! offsets are committed to the broker. A restart loads that checkpoint, re-reads every
//! partition from its resume offset (rebuilding the open windows in full) and skips re-read
//! records of windows already final. Sinks are idempotent, so replayed output is harmless.

mod checkpointer;
mod io;

use crate::kafka::{BrokerStartup, KafkaIoError, topic_partitions};
use crate::reader::PartitionReader;
use crate::sink_op::{SinkCountsOptions, sink_counts, sink_dead_letters, sink_similarity};
use crate::source::{Backpressure, SourceSettings, source};
use checkpointer::Checkpointer;
use differential_dataflow::{AsCollection, VecCollection};
use eddy_core::{Checkpoint, Config, MemoryStore, Metrics, WindowSpec};
use eddy_dataflows::{Inputs, Restored};
use eddy_load_gen::GenConfig;
use eddy_operators::{Epoch, TrackWatermark, WatermarkHandle, WatermarkPolicy};
use eddy_sinks::{
    CheckpointStore, ClickHouseCheckpoints, MemoryDeadLetters, SinkError, SlidingState,
};
use io::{WorkerIo, demo_io, kafka_io};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use timely::dataflow::Scope;
use timely::dataflow::operators::{Concat, Inspect, Probe, ToStream};

/// Pipeline errors.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Kafka set-up or a broker call failed.
    #[error(transparent)]
    Kafka(#[from] KafkaIoError),
    /// A store failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A worker thread failed to start or panicked.
    #[error("worker failed: {0}")]
    Worker(String),
    /// Another run holds the job, or this run lost it (see [`crate::fence`]).
    #[error(transparent)]
    Fence(#[from] crate::fence::FenceError),
    /// The stored sliding-window state was built under other settings than this run's.
    #[error(
        "the sliding-window state stored with the last checkpoint was built with `{stored}`, \
         but this configuration needs `{wanted}`: its panes cannot be restored. Rebuild it from \
         the topic with `eddy replay --from {from} --then live` (re-reads one sliding window), \
         or go back to the previous settings"
    )]
    StateLayout {
        /// The layout the checkpoint records.
        stored: String,
        /// This configuration's layout ([`Config::state_layout`]).
        wanted: String,
        /// Where a rebuilding replay starts: the checkpoint's watermark minus one sliding
        /// window (epoch ms).
        from: i64,
    },
}

/// Where records come from and results go.
#[derive(Clone)]
pub enum Mode {
    /// Kafka in, Redis + ClickHouse out (the production shape).
    Kafka,
    /// The embedded demo: generated records in, memory out.
    Demo(DemoSetup),
    /// `eddy replay`: Kafka in from a saved plan's offsets (up to its end with `--then stop`),
    /// Redis + ClickHouse out, checkpoints under the replay's own name ([`crate::replay`]).
    Replay(crate::replay::ReplaySetup),
}

/// The embedded demo's wiring.
#[derive(Clone)]
pub struct DemoSetup {
    /// Both layers, shared with the query server.
    pub store: Arc<RwLock<MemoryStore>>,
    /// Dead letters kept in memory.
    pub dead_letters: MemoryDeadLetters,
    /// Generator parameters (seed, skew, fractions of late/malformed messages).
    pub generator: GenConfig,
    /// Messages per second per generated partition.
    pub rate_per_partition: f64,
    /// Generated partitions.
    pub partitions: i32,
}

/// What a run needs.
#[derive(Clone)]
pub struct RunOptions {
    /// Configuration.
    pub config: Config,
    /// Timely configuration (workers, processes).
    pub timely: timely::Config,
    /// Set to stop the run (abruptly: no final checkpoint, as a crash would).
    pub stop: Arc<AtomicBool>,
    /// Metrics registry.
    pub metrics: Metrics,
}

impl RunOptions {
    /// One process with `config.pipeline.workers` worker threads, a fresh stop flag and a
    /// fresh metrics registry (an embedded pipeline, as the integration tests run it).
    pub fn in_process(config: &Config) -> Self {
        Self {
            config: config.clone(),
            timely: timely::Config::process(config.pipeline.workers),
            stop: Arc::new(AtomicBool::new(false)),
            metrics: Metrics::new(),
        }
    }
}

/// `(partition, offset)` of the replayed records dead-lettered as late before a restart.
type LateBeforeRestore = Arc<std::collections::HashSet<(i32, i64)>>;

/// What a restart restores: the checkpoint, the records dead-lettered as late before it (when
/// the sliding state is rebuilt by re-reading), and the sliding state loaded from the stores
/// (when it is restored from them).
#[derive(Clone)]
struct Restore {
    checkpoint: Checkpoint,
    late: LateBeforeRestore,
    state: Option<Arc<SlidingState>>,
    /// Per partition, the offset the re-read must reach before the state is caught up
    /// ([`WatermarkPolicy::catch_up_to`]): the end of the log at the restart, so the state
    /// then holds every record the previous run could have read and written (a replay,
    /// bounded by its plan: the checkpoint's high offsets).
    catch_up_to: std::collections::BTreeMap<i32, i64>,
}

/// Loads the sliding-window state of `cp` from ClickHouse when its layout is this
/// configuration's; `None` when the checkpoint has no stored state (the window is re-read).
fn load_sliding_state(
    cfg: &Config,
    cp: &Checkpoint,
) -> Result<Option<Arc<SlidingState>>, PipelineError> {
    let wanted = cfg.state_layout();
    match &cp.state {
        None => {
            tracing::info!(
                "the checkpoint has no stored sliding-window state: re-reading the sliding window"
            );
            Ok(None)
        }
        Some(stored) if *stored != wanted => Err(PipelineError::StateLayout {
            stored: stored.clone(),
            wanted,
            from: cp.watermark_ms.saturating_sub(cfg.engagement.sliding_ms),
        }),
        Some(_) => {
            let started = Instant::now();
            let state = ClickHouseCheckpoints::connect(&cfg.clickhouse)?.load_state(
                cp.watermark_ms,
                cfg.pipeline.window_ms,
                cfg.engagement.sliding_ms,
                cfg.similarity.enabled,
            )?;
            tracing::info!(
                engagement_panes = state.engagement.len(),
                interaction_pairs = state.interactions.len(),
                ms = started.elapsed().as_millis() as u64,
                "sliding-window state restored from ClickHouse"
            );
            Ok(Some(Arc::new(state)))
        }
    }
}

/// Runs the pipeline until `opts.stop` is set.
pub fn run(opts: RunOptions, mode: Mode) -> Result<(), PipelineError> {
    let cfg = opts.config.clone();
    // One writer per job: process 0 of a cluster holds the job's lease for the whole run.
    let first_process = !matches!(
        &opts.timely.communication,
        timely::CommunicationConfig::Cluster { process, .. } if *process != 0
    );
    let fence = match &mode {
        Mode::Kafka | Mode::Replay(_) if first_process => Some(crate::fence::JobFence::acquire(
            &cfg.redis.url,
            crate::fence::JobFence::key(&cfg.redis.prefix, &cfg.kafka.topic),
            crate::fence::LEASE_TTL,
            opts.stop.clone(),
        )?),
        _ => None,
    };
    let (partitions, restore) = match &mode {
        Mode::Kafka | Mode::Replay(_) => {
            eddy_sinks::check_schema(&cfg.clickhouse)?;
            // A broker that does not answer yet (restarting, overloaded) is waited for.
            let broker = BrokerStartup::new(
                Duration::from_millis(cfg.kafka.startup_timeout_ms),
                &opts.stop,
            );
            let parts = broker.retry("source topic metadata", || {
                topic_partitions(&cfg.kafka, &cfg.kafka.topic)
            })?;
            // A replay restores its own checkpoints, never the live job's.
            let name = match &mode {
                Mode::Replay(r) => r.checkpoint_name(),
                _ => cfg.kafka.topic.clone(),
            };
            let restore = ClickHouseCheckpoints::connect(&cfg.clickhouse)?
                .load(&name)?
                .map(|cp| Checkpoint {
                    topic: cfg.kafka.topic.clone(),
                    ..cp
                });
            let restore = match restore {
                Some(cp) => {
                    // A recreated or truncated topic: the checkpoint's offsets name other records.
                    let log_ends = broker.retry("checkpoint check", || {
                        crate::kafka::check_checkpoint(&cfg.kafka, &cp)
                    })?;
                    let catch_up_to = match &mode {
                        Mode::Replay(_) => cp
                            .partitions
                            .iter()
                            .map(|p| (p.partition, p.high_offset))
                            .collect(),
                        _ => log_ends.clone(),
                    };
                    tracing::info!(
                        epoch = cp.epoch,
                        watermark_ms = cp.watermark_ms,
                        "restoring checkpoint"
                    );
                    // A replay rebuilds its state by re-reading (it starts from empty state).
                    let state = match &mode {
                        Mode::Replay(_) => None,
                        _ => load_sliding_state(&cfg, &cp)?,
                    };
                    // Records dead-lettered as late before the restart, from the resume offsets
                    // to the log end: judged late again, never applied (and kept out of the
                    // re-read history).
                    let ranges = cp
                        .partitions
                        .iter()
                        .map(|p| {
                            let end = log_ends.get(&p.partition).copied().unwrap_or(0);
                            (p.partition, (p.resume_offset, end.max(p.high_offset)))
                        })
                        .collect();
                    let late = Arc::new(broker.retry("dead-letter read-back", || {
                        crate::kafka::late_before(&cfg.kafka, &cfg.redis.prefix, &cp, &ranges)
                    })?);
                    Some(Restore {
                        checkpoint: cp,
                        late,
                        state,
                        catch_up_to,
                    })
                }
                None => None,
            };
            (parts, restore)
        }
        Mode::Demo(d) => ((0..d.partitions).collect(), None),
    };
    let mode = Arc::new(mode);
    let stop = opts.stop.clone();
    let guards = timely::execute(opts.timely.clone(), move |worker| {
        guard_worker(worker, &opts.stop, |worker| {
            let index = worker.index();
            let peers = worker.peers();
            let mine: Vec<i32> = partitions
                .iter()
                .copied()
                .filter(|p| *p as usize % peers == index)
                .collect();
            let lead = index == 0;
            let restored = restore.clone();
            let restore = restore.as_ref().map(|r| &r.checkpoint);
            match &*mode {
                Mode::Kafka => kafka_io(
                    &opts,
                    &partitions,
                    mine,
                    start_offsets(restore, None),
                    lead,
                    None,
                )
                .and_then(|io| drive(worker, &opts, &partitions, io, restored, None)),
                Mode::Replay(r) => kafka_io(
                    &opts,
                    &partitions,
                    mine,
                    start_offsets(restore, Some(r)),
                    lead,
                    Some(r),
                )
                .and_then(|io| {
                    let io = io.map_reader(|k| r.reader(k));
                    drive(worker, &opts, &partitions, io, restored, Some(r))
                }),
                Mode::Demo(d) => drive(
                    worker,
                    &opts,
                    &partitions,
                    demo_io(&opts, mine, d, lead),
                    None,
                    None,
                ),
            }
        })
    })
    .map_err(PipelineError::Worker)?;
    let mut first_error = None;
    for r in guards.join() {
        if let Err(e) = r.map_err(PipelineError::Worker).and_then(|r| r) {
            first_error.get_or_insert(e);
        }
    }
    stop.store(true, Ordering::SeqCst);
    if let Some(fence) = &fence {
        fence.check()?;
    }
    first_error.map_or(Ok(()), Err)
}

/// Where each partition's reading starts: the restored checkpoint's resume offsets, else the
/// replay plan's starts, else the beginning of the log.
fn start_offsets(
    restore: Option<&Checkpoint>,
    replay: Option<&crate::replay::ReplaySetup>,
) -> std::collections::HashMap<i32, i64> {
    match (restore, replay) {
        (Some(cp), _) => cp
            .partitions
            .iter()
            .map(|p| (p.partition, p.resume_offset))
            .collect(),
        (None, Some(r)) => r
            .plan
            .partitions
            .iter()
            .map(|p| (p.partition, p.start))
            .collect(),
        (None, None) => Default::default(),
    }
}

/// The rows of `rows` whose index `share` accepts, as a collection at epoch 0 (the dataflow
/// routes each to its key's worker).
fn shared_rows<'scope, D: Clone + 'static>(
    scope: Scope<'scope, Epoch>,
    rows: &[D],
    share: impl Fn(usize) -> bool,
) -> VecCollection<'scope, Epoch, D, isize> {
    rows.iter()
        .enumerate()
        .filter(|(i, _)| share(*i))
        .map(|(_, r)| (r.clone(), 0, 1))
        .collect::<Vec<_>>()
        .to_stream(scope)
        .as_collection()
}

/// Runs one worker's body. If it fails or panics, the failure is logged and `stop` is set, so
/// every other worker stops too (instead of waiting forever for a peer that is gone) and the
/// run ends with the error: a failing worker ends the process loudly, never leaves it alive
/// and idle. Whatever happens, the worker's dataflows are dropped before returning (their
/// sources never complete, so timely would step them forever).
///
/// ```
/// use eddy::pipeline::{PipelineError, guard_worker};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use timely::dataflow::operators::Inspect;
/// use timely::dataflow::operators::vec::ToStream;
///
/// let stop = Arc::new(AtomicBool::new(false));
/// let s = stop.clone();
/// let results = timely::execute(timely::Config::process(2), move |worker| {
///     guard_worker(worker, &s, |worker| {
///         let index = worker.index();
///         worker.dataflow::<u64, _, _>(|scope| {
///             (0..3u64).to_stream(scope).inspect(move |x: &u64| {
///                 if index == 1 && *x == 2 {
///                     panic!("worker 1 breaks");
///                 }
///             });
///         });
///         // Run until told to stop, as the pipeline's workers do.
///         while !s.load(Ordering::SeqCst) {
///             worker.step_or_park(Some(std::time::Duration::from_millis(1)));
///         }
///         Ok(())
///     })
/// })
/// .unwrap()
/// .join();
/// assert!(stop.load(Ordering::SeqCst));
/// assert!(matches!(&results[0], Ok(Ok(()))));
/// assert!(matches!(&results[1], Ok(Err(PipelineError::Worker(m))) if m.contains("worker 1 breaks")));
/// ```
pub fn guard_worker(
    worker: &mut timely::worker::Worker,
    stop: &AtomicBool,
    body: impl FnOnce(&mut timely::worker::Worker) -> Result<(), PipelineError>,
) -> Result<(), PipelineError> {
    let index = worker.index();
    let result =
        std::panic::catch_unwind(AssertUnwindSafe(|| body(&mut *worker))).unwrap_or_else(|panic| {
            Err(PipelineError::Worker(format!(
                "worker {index} panicked: {}",
                panic_message(&*panic)
            )))
        });
    if let Err(e) = &result {
        tracing::error!(worker = index, error = %e, "worker failed; stopping every worker");
        stop.store(true, Ordering::SeqCst);
    }
    let dropped = std::panic::catch_unwind(AssertUnwindSafe(|| {
        for id in worker.installed_dataflows() {
            worker.drop_dataflow(id);
        }
    }));
    if let Err(panic) = dropped {
        // The worker cannot be stopped cleanly: end the process rather than leave it stuck.
        tracing::error!(
            worker = index,
            panic = panic_message(&*panic),
            "cannot drop a failed worker's dataflow; exiting"
        );
        std::process::exit(70);
    }
    result
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Builds the dataflow on this worker (source, watermark, [`eddy_dataflows::build`], the
/// sink paths, all probed for durability) and steps it until `opts.stop`; worker 0 saves a
/// checkpoint every `pipeline.checkpoint_ms` once the sinks hold everything before it.
fn drive<R: PartitionReader>(
    worker: &mut timely::worker::Worker,
    opts: &RunOptions,
    all: &[i32],
    io: WorkerIo<R>,
    restore: Option<Restore>,
    replay: Option<&crate::replay::ReplaySetup>,
) -> Result<(), PipelineError> {
    let cfg = &opts.config;
    let WorkerIo {
        reader,
        counts: counts_sinks,
        similarity: similarity_sinks,
        dead_letters: dlq_sinks,
        commit,
    } = io;
    let window = WindowSpec::new(cfg.pipeline.window_ms);
    let floor = restore.as_ref().map_or(i64::MIN, |r| {
        WatermarkPolicy::bounded_floor(
            r.checkpoint.watermark_ms,
            eddy_core::now_ms(),
            cfg.pipeline.max_future_ms,
        )
    });
    // The sliding state restored from the stores, and the watermark it is final under.
    let state = restore
        .as_ref()
        .and_then(|r| Some((r.state.clone()?, r.checkpoint.watermark_ms)));
    // A live run's checkpoints record the layout of the state the stores hold, and resume at
    // the oldest open window: a restart restores the sliding state from the stores. A replay
    // (which starts from empty state) keeps the whole sliding window re-readable instead.
    let layout = replay.is_none().then(|| cfg.state_layout());
    let retain_ms = match layout {
        Some(_) => window.size_ms,
        None => cfg.engagement.sliding_ms,
    };
    let catch_up_to = restore
        .as_ref()
        .map(|r| r.catch_up_to.clone())
        .unwrap_or_default();
    let rereading_state = restore.as_ref().is_some_and(|r| r.state.is_none());
    let replay_to = restore
        .as_ref()
        .map(|r| {
            r.checkpoint
                .partitions
                .iter()
                .map(|p| (p.partition, p.high_offset))
                .collect()
        })
        .unwrap_or_default();
    // Only the coordinating worker takes checkpoints, so only it records candidates.
    let watermark = if commit.is_some() {
        WatermarkHandle::recording_checkpoints(floor)
    } else {
        WatermarkHandle::new(floor)
    };
    let backpressure = Backpressure::new();
    let durable = backpressure.durable.clone();
    let sliding_ms = cfg.engagement.sliding_ms;
    // One lateness for the source (which rules records late) and the watermark policy (which
    // closes windows): if they differed, a record could be ruled on time for a closed window.
    let lateness_ms = cfg.pipeline.lateness_ms;
    let settings = SourceSettings {
        window,
        lateness_ms,
        // A restart that rebuilds the sliding state feeds re-read records of the whole window
        // to it (the new checkpoints still resume at the open windows: `policy.retain_ms`).
        retain_ms: if rereading_state {
            cfg.engagement.sliding_ms
        } else {
            retain_ms
        },
        epoch: Duration::from_millis(cfg.pipeline.epoch_ms),
        max_records_per_epoch: cfg.pipeline.max_records_per_epoch,
        max_inflight_epochs: cfg.pipeline.max_inflight_epochs,
        max_lagging_epochs: cfg.pipeline.max_lagging_epochs,
        // Catching up (full epochs), the lagging lane holds no more than the fresh one may.
        max_lagging_records: cfg
            .pipeline
            .max_inflight_epochs
            .saturating_mul(cfg.pipeline.max_records_per_epoch),
        idle_timeout: Duration::from_millis(cfg.kafka.idle_timeout_ms),
        late_before_restore: restore.as_ref().map(|r| r.late.clone()).unwrap_or_default(),
        replay_history: rereading_state,
        restore: restore.as_ref().map(|r| r.checkpoint.clone()),
        max_future_ms: cfg.pipeline.max_future_ms,
        clock: crate::source::WallClock::system(),
    };
    let policy = WatermarkPolicy {
        window,
        retain_ms,
        lateness_ms,
        partitions: all.to_vec(),
        floor_ms: floor,
        catch_up_to,
        replay_to,
    };
    let (index, peers) = (worker.index(), worker.peers());
    let metrics = opts.metrics.clone();
    worker.dataflow::<Epoch, _, _>(|scope| {
        let src = source(
            scope,
            reader,
            settings,
            watermark.clone(),
            backpressure.clone(),
            metrics,
        );
        let progress = match replay {
            // A replay learns from the reports when every partition is idle at its end.
            Some(r) => {
                let seen = r.progress.clone();
                src.progress.inspect_core(move |event| {
                    if let Ok((stamp, reports)) = event {
                        let epoch = stamp.iter().max().copied().unwrap_or_default();
                        for r in reports {
                            seen.observe(r.partition, r.idle, r.next_offset, epoch);
                        }
                    }
                })
            }
            None => src.progress,
        };
        let mut marks = progress.track_watermark(policy, watermark.clone());
        if restore.is_some() {
            // The restored watermark from the first epoch on (the tracker reports changes
            // only): the restored panes are closed from the start, as they were.
            marks = marks.concat(std::iter::once(floor).to_stream(scope));
        }
        // This worker's share of the restored state, given at the first epoch.
        let restored = state.as_ref().map(|(state, _)| {
            let share = |i: usize| i % peers == index;
            Restored {
                engagement: shared_rows(scope, &state.engagement, share),
                interactions: shared_rows(scope, &state.interactions, share),
            }
        });
        let out = eddy_dataflows::build(
            cfg,
            Inputs {
                events: src.events,
                history: Some(src.history),
                watermarks: marks.clone(),
                restored,
            },
        );
        // What the stores hold already is not written again: every engagement pane final
        // under the restored checkpoint (also when the re-read rebuilds them: partly, for a
        // while), and the interaction pairs of the panes of a restored state.
        let panes_durable_through = restore.as_ref().map(|r| r.checkpoint.watermark_ms);
        let pairs_durable_through = state.as_ref().map(|(_, w)| *w);
        // Every sink path is probed for durability: an epoch is durable once all hold it.
        // Counts, engagement and dead letters are the fresh lane, similarity the lagging one
        // (see `Backpressure`): its pane-close bursts do not stop the source.
        sink_counts(
            &out.counts,
            &out.engagement,
            marks.clone(),
            SinkCountsOptions {
                window,
                sliding_ms,
                durable_through: panes_durable_through,
                // After a restart, speed-layer values wait until the state is caught up.
                hold_until_caught_up: restore.is_some().then(|| watermark.clone()),
            },
            counts_sinks,
        )
        .probe_with(&backpressure.fresh)
        .probe_with(&durable);
        if let Some(similarity) = &out.similarity {
            sink_similarity(
                similarity,
                marks,
                window,
                sliding_ms,
                pairs_durable_through,
                similarity_sinks,
            )
            .probe_with(&durable);
        }
        sink_dead_letters(src.dead_letters, dlq_sinks)
            .probe_with(&backpressure.fresh)
            .probe_with(&durable);
    });
    let checkpointer = commit.map(|c| Checkpointer::spawn(c, opts.metrics.clone()));
    let every = Duration::from_millis(cfg.pipeline.checkpoint_ms);
    let mut next_checkpoint = Instant::now() + every;
    while !opts.stop.load(Ordering::SeqCst) {
        worker.step_or_park(Some(Duration::from_millis(1)));
        opts.metrics.watermark_ms.set(watermark.latest().max(0));
        let Some(checkpointer) = checkpointer.as_ref() else {
            continue;
        };
        if Instant::now() < next_checkpoint {
            continue;
        }
        let through = durable.with_frontier(|f| f.iter().min().copied());
        let Some(through) = through.and_then(|t| t.checked_sub(1)) else {
            continue;
        };
        // After a restart that rebuilds the sliding state by re-reading, no checkpoint before
        // the re-read is done: until then the state lacks records the restored checkpoint
        // covered, and the panes they fill were never stored. (A restored state is complete
        // from the first epoch: every pane closed since is stored as it closes.)
        if rereading_state && watermark.caught_up_at().is_none_or(|c| through < c) {
            continue;
        }
        if let Some(c) = watermark.take_checkpoint(through) {
            checkpointer.offer(Checkpoint {
                topic: cfg.kafka.topic.clone(),
                epoch: c.epoch,
                watermark_ms: c.watermark_ms,
                partitions: c.partitions,
                state: layout.clone(),
            });
            next_checkpoint = Instant::now() + every;
        }
    }
    // The source never completes on its own: `guard_worker` drops the dataflow.
    Ok(())
}
