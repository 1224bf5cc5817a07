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

use crate::demo::GeneratorReader;
use crate::kafka::{KafkaCommitter, KafkaDeadLetters, KafkaReader, topic_partitions};
use crate::reader::PartitionReader;
use crate::sink_op::{
    DeadLetterWriter, MemoryDeadLetters, SinkInputs, sink_dead_letters, sink_outputs,
};
use crate::source::{SourceSettings, source};
use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use eddy_core::{Checkpoint, Config, MemoryStore, Metrics, WindowSpec};
use eddy_dataflows::{
    EngagementParams, InteractionParams, SimilarityParams, engagement, interactions,
    recommendations, similar_users, windowed_counts,
};
use eddy_load_gen::GenConfig;
use eddy_operators::{Epoch, TrackWatermark, WatermarkHandle, WatermarkPolicy};
use eddy_sinks::{
    CheckpointStore, ClickHouseCheckpoints, ClickHouseSink, EpochSink, MemoryCheckpoints,
    MemorySink, RedisSink, SinkWorker,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::vec::ToStream;
use timely::dataflow::{ProbeHandle, Scope};

/// Pipeline errors.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Kafka set-up failed.
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaIoError),
    /// A store failed at set-up.
    #[error(transparent)]
    Sink(#[from] eddy_sinks::SinkError),
    /// A worker failed.
    #[error("worker failed: {0}")]
    Worker(String),
}

/// Where records come from and results go.
#[derive(Clone)]
pub enum Mode {
    /// Kafka in, Redis + ClickHouse out (the production shape).
    Kafka,
    /// The embedded demo: generated records in, memory out.
    Demo(DemoSetup),
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

/// Runs the pipeline until `opts.stop` is set.
pub fn run(opts: RunOptions, mode: Mode) -> Result<(), PipelineError> {
    let cfg = opts.config.clone();
    let (partitions, restore) = match &mode {
        Mode::Kafka => {
            eddy_sinks::check_schema(&cfg.clickhouse)?;
            let parts = topic_partitions(&cfg.kafka, &cfg.kafka.topic)?;
            let restore =
                ClickHouseCheckpoints::connect(&cfg.clickhouse)?.load(&cfg.kafka.topic)?;
            if let Some(cp) = &restore {
                tracing::info!(
                    epoch = cp.epoch,
                    watermark_ms = cp.watermark_ms,
                    "restoring checkpoint"
                );
            }
            (parts, restore)
        }
        Mode::Demo(d) => ((0..d.partitions).collect(), None),
    };
    let mode = Arc::new(mode);
    let guards = timely::execute(opts.timely.clone(), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let mine: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| *p as usize % peers == index)
            .collect();
        let result = match &*mode {
            Mode::Kafka => kafka_worker(worker, &opts, &partitions, mine, restore.clone()),
            Mode::Demo(d) => demo_worker(worker, &opts, &partitions, mine, d),
        };
        if let Err(e) = &result {
            tracing::error!(worker = index, error = %e, "worker failed");
            opts.stop.store(true, Ordering::SeqCst);
        }
        result
    })
    .map_err(PipelineError::Worker)?;
    for r in guards.join() {
        r.map_err(PipelineError::Worker)?
            .map_err(PipelineError::Worker)?;
    }
    Ok(())
}

type Commit = Box<dyn FnMut(&Checkpoint) -> Result<(), String>>;

fn kafka_worker(
    worker: &mut timely::worker::Worker,
    opts: &RunOptions,
    all: &[i32],
    mine: Vec<i32>,
    restore: Option<Checkpoint>,
) -> Result<(), String> {
    let cfg = &opts.config;
    let start: HashMap<i32, i64> = restore
        .iter()
        .flat_map(|cp| cp.partitions.iter().map(|p| (p.partition, p.resume_offset)))
        .collect();
    let reader = KafkaReader::new(&cfg.kafka, mine, start, opts.metrics.clone())
        .map_err(|e| e.to_string())?;
    let dlq = KafkaDeadLetters::new(&cfg.kafka).map_err(|e| e.to_string())?;
    let redis: Box<dyn EpochSink> =
        Box::new(RedisSink::connect(&cfg.redis).map_err(|e| e.to_string())?);
    let clickhouse: Box<dyn EpochSink> =
        Box::new(ClickHouseSink::connect(&cfg.clickhouse).map_err(|e| e.to_string())?);
    let sinks = vec![
        SinkWorker::spawn(redis, &cfg.sink, opts.metrics.clone()),
        SinkWorker::spawn(clickhouse, &cfg.sink, opts.metrics.clone()),
    ];
    // The slow path (similar users, recommendations) has its own connections and threads, so
    // its large pane-close batches never queue in front of the counts.
    let slow_sinks = if cfg.similarity.enabled {
        let redis: Box<dyn EpochSink> =
            Box::new(RedisSink::connect(&cfg.redis).map_err(|e| e.to_string())?);
        let clickhouse: Box<dyn EpochSink> =
            Box::new(ClickHouseSink::connect(&cfg.clickhouse).map_err(|e| e.to_string())?);
        vec![
            SinkWorker::spawn(redis, &cfg.sink, opts.metrics.clone()),
            SinkWorker::spawn(clickhouse, &cfg.sink, opts.metrics.clone()),
        ]
    } else {
        Vec::new()
    };
    let commit: Option<Commit> = if worker.index() == 0 {
        let mut store =
            ClickHouseCheckpoints::connect(&cfg.clickhouse).map_err(|e| e.to_string())?;
        let mut boundary = RedisSink::connect(&cfg.redis).map_err(|e| e.to_string())?;
        let committer = KafkaCommitter::new(&cfg.kafka).map_err(|e| e.to_string())?;
        Some(Box::new(move |cp: &Checkpoint| {
            store.save(cp).map_err(|e| e.to_string())?;
            // The boundary and the broker offsets follow the durable checkpoint; failing them
            // only delays freshness and lag reporting, so they are logged, not fatal.
            if let Err(e) = boundary.write_boundary(cp.watermark_ms) {
                tracing::warn!(error = %e, "publishing the boundary to Redis failed");
            }
            if let Err(e) = committer.commit(cp) {
                tracing::warn!(error = %e, "committing offsets to the broker failed");
            }
            Ok(())
        }))
    } else {
        None
    };
    drive(
        worker,
        opts,
        all,
        reader,
        dlq,
        (sinks, slow_sinks),
        commit,
        restore,
    )
}

fn demo_worker(
    worker: &mut timely::worker::Worker,
    opts: &RunOptions,
    all: &[i32],
    mine: Vec<i32>,
    demo: &DemoSetup,
) -> Result<(), String> {
    let reader = GeneratorReader::new(&demo.generator, mine, demo.rate_per_partition);
    let sink: Box<dyn EpochSink> = Box::new(MemorySink::new(demo.store.clone()));
    let sinks = vec![SinkWorker::spawn(
        sink,
        &opts.config.sink,
        opts.metrics.clone(),
    )];
    let slow_sinks = if opts.config.similarity.enabled {
        let slow: Box<dyn EpochSink> = Box::new(MemorySink::new(demo.store.clone()));
        vec![SinkWorker::spawn(
            slow,
            &opts.config.sink,
            opts.metrics.clone(),
        )]
    } else {
        Vec::new()
    };
    let commit: Option<Commit> = if worker.index() == 0 {
        let mut store = MemoryCheckpoints::with_store(demo.store.clone());
        Some(Box::new(move |cp: &Checkpoint| {
            store.save(cp).map_err(|e| e.to_string())
        }))
    } else {
        None
    };
    drive(
        worker,
        opts,
        all,
        reader,
        demo.dead_letters.clone(),
        (sinks, slow_sinks),
        commit,
        None,
    )
}

#[allow(clippy::too_many_arguments)]
fn drive<R: PartitionReader, W: DeadLetterWriter>(
    worker: &mut timely::worker::Worker,
    opts: &RunOptions,
    all: &[i32],
    reader: R,
    dlq: W,
    (sinks, slow_sinks): (Vec<SinkWorker>, Vec<SinkWorker>),
    mut commit: Option<Commit>,
    restore: Option<Checkpoint>,
) -> Result<(), String> {
    let cfg = &opts.config;
    let window = WindowSpec::new(cfg.pipeline.window_ms);
    let floor = restore.as_ref().map_or(i64::MIN, |cp| cp.watermark_ms);
    // Only the coordinating worker takes checkpoints, so only it records candidates.
    let watermark = if commit.is_some() {
        WatermarkHandle::recording_checkpoints(floor)
    } else {
        WatermarkHandle::new(floor)
    };
    let durable: ProbeHandle<Epoch> = ProbeHandle::new();
    let sliding_ms = cfg.engagement.sliding_ms;
    let settings = SourceSettings {
        window,
        retain_ms: sliding_ms,
        epoch: Duration::from_millis(cfg.pipeline.epoch_ms),
        max_records_per_epoch: cfg.pipeline.max_records_per_epoch,
        max_inflight_epochs: cfg.pipeline.max_inflight_epochs,
        idle_timeout: Duration::from_millis(cfg.kafka.idle_timeout_ms),
        restore,
    };
    let policy = WatermarkPolicy {
        window,
        retain_ms: sliding_ms,
        lateness_ms: cfg.pipeline.lateness_ms,
        partitions: all.to_vec(),
        floor_ms: floor,
    };
    let metrics = opts.metrics.clone();
    worker.dataflow::<Epoch, _, _>(|scope| {
        let src = source(
            scope,
            reader,
            settings,
            watermark.clone(),
            durable.clone(),
            metrics,
        );
        let marks = src.progress.track_watermark(policy, watermark.clone());
        // Sliding-window state also takes the replayed history of final windows.
        let sliding_events = src.events.clone().concat(src.history);
        let counts = windowed_counts(src.events, marks.clone(), window);
        let scores = engagement(
            sliding_events.clone(),
            marks.clone(),
            EngagementParams {
                pane: window,
                sliding_ms,
                weights: cfg.engagement.weights(),
                top_k: cfg.engagement.top_k,
            },
        );
        // Two sink paths, both probed for durability: the fast outputs (counts, engagement)
        // are written as soon as their epoch is complete, without waiting for similarity and
        // recommendations (the slow path), whose pane-close batches take longer.
        let fast = SinkInputs {
            types: counts.types,
            campaigns: counts.campaigns,
            engagement: scores.campaigns,
            top: scores.top,
            panes: scores.panes,
            similar: empty(scope),
            recommendations: empty(scope),
            sliding_ms,
            as_of_only: false,
        };
        sink_outputs(fast, marks.clone(), window, sinks).probe_with(&durable);
        if cfg.similarity.enabled {
            let pairs = interactions(
                sliding_events,
                marks.clone(),
                InteractionParams {
                    pane: window,
                    sliding_ms,
                    views_are_interest: cfg.similarity.views_are_interest,
                    // Settled sets: similarity and recommendations change at most once per
                    // pane, spread over a few epochs after the close.
                    emit: eddy_operators::Emit::OnCloseSpread {
                        epochs: cfg.similarity.close_spread_epochs,
                    },
                },
            );
            // One arrangement of the interactions by user, shared by the interaction sets, the
            // candidate generation and the recommendations join.
            let by_user = pairs.clone().arrange_by_key_named("InteractionsByUser");
            let sets = eddy_dataflows::similarity::sets(by_user.clone());
            let similar = similar_users(sets, SimilarityParams::from_config(&cfg.similarity));
            let recs = recommendations(
                similar.clone(),
                by_user,
                pairs,
                scores.settled,
                cfg.similarity.recommendations,
            );
            let slow = SinkInputs {
                types: empty(scope),
                campaigns: empty(scope),
                engagement: empty(scope),
                top: empty(scope),
                panes: empty(scope),
                similar,
                recommendations: recs,
                sliding_ms,
                as_of_only: true,
            };
            sink_outputs(slow, marks, window, slow_sinks).probe_with(&durable);
        }
        sink_dead_letters(src.dead_letters, dlq).probe_with(&durable);
    });
    let every = Duration::from_millis(cfg.pipeline.checkpoint_ms);
    let mut next_checkpoint = Instant::now() + every;
    while !opts.stop.load(Ordering::SeqCst) {
        worker.step_or_park(Some(Duration::from_millis(1)));
        opts.metrics.watermark_ms.set(watermark.latest().max(0));
        let Some(commit) = commit.as_mut() else {
            continue;
        };
        if Instant::now() < next_checkpoint {
            continue;
        }
        let through = durable.with_frontier(|f| f.iter().min().copied());
        let Some(through) = through.and_then(|t| t.checked_sub(1)) else {
            continue;
        };
        if let Some(c) = watermark.take_checkpoint(through) {
            let cp = Checkpoint {
                topic: cfg.kafka.topic.clone(),
                epoch: c.epoch,
                watermark_ms: c.watermark_ms,
                partitions: c.partitions,
            };
            match commit(&cp) {
                Ok(()) => {
                    opts.metrics.checkpoints.inc();
                    next_checkpoint = Instant::now() + every;
                }
                Err(e) => tracing::warn!(error = %e, "checkpoint failed; will retry"),
            }
        }
    }
    // The source never completes on its own: drop the dataflow, or timely would step it
    // forever after this closure returns.
    for id in worker.installed_dataflows() {
        worker.drop_dataflow(id);
    }
    Ok(())
}

/// A collection that never has data: the outputs a sink path does not carry.
fn empty<'scope, D: Clone + 'static>(
    scope: Scope<'scope, Epoch>,
) -> VecCollection<'scope, Epoch, D, isize> {
    Vec::new().to_stream(scope).as_collection()
}

/// Collects dead letters for tests and the demo.
pub fn demo_dead_letters() -> MemoryDeadLetters {
    MemoryDeadLetters(Arc::new(Mutex::new(Vec::new())))
}
