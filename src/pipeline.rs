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
use crate::kafka::{KafkaCommitter, KafkaDeadLetters, KafkaIoError, KafkaReader, topic_partitions};
use crate::reader::PartitionReader;
use crate::sink_op::{sink_counts, sink_dead_letters, sink_similarity};
use crate::source::{SourceSettings, source};
use eddy_core::{
    Checkpoint, Config, DeadLetterBatch, MemoryStore, Metrics, SimilarityBatch, WindowSpec,
};
use eddy_dataflows::Inputs;
use eddy_load_gen::GenConfig;
use eddy_operators::{Epoch, TrackWatermark, WatermarkHandle, WatermarkPolicy};
use eddy_sinks::{
    Batch, CheckpointStore, ClickHouseCheckpoints, ClickHouseSink, EpochSink, MemoryCheckpoints,
    MemoryDeadLetters, MemorySink, RedisSink, SinkError, SinkWorker,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::Probe;

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
        let lead = index == 0;
        let result = match &*mode {
            Mode::Kafka => kafka_io(&opts, mine, restore.as_ref(), lead)
                .and_then(|io| drive(worker, &opts, &partitions, io, restore.clone())),
            Mode::Demo(d) => drive(
                worker,
                &opts,
                &partitions,
                demo_io(&opts, mine, d, lead),
                None,
            ),
        };
        if let Err(e) = &result {
            tracing::error!(worker = index, error = %e, "worker failed");
            opts.stop.store(true, Ordering::SeqCst);
        }
        result
    })
    .map_err(PipelineError::Worker)?;
    for r in guards.join() {
        r.map_err(PipelineError::Worker)??;
    }
    Ok(())
}

/// Saves a durable checkpoint (and what follows it); the coordinating worker's only.
type Commit = Box<dyn FnMut(&Checkpoint) -> Result<(), PipelineError>>;

/// One worker's connections to the outside: where its records come from and where each sink
/// path writes.
struct WorkerIo<R> {
    reader: R,
    /// Fast path: windowed counts, engagement, top list.
    counts: Vec<SinkWorker>,
    /// Slow path: similar users, recommendations (empty when similarity is off).
    similarity: Vec<SinkWorker<SimilarityBatch>>,
    dead_letters: Vec<SinkWorker<DeadLetterBatch>>,
    /// Worker 0 only: takes checkpoints.
    commit: Option<Commit>,
}

/// Starts one sink thread per store.
fn spawn<B: Batch>(opts: &RunOptions, stores: Vec<Box<dyn EpochSink<B>>>) -> Vec<SinkWorker<B>> {
    stores
        .into_iter()
        .map(|s| SinkWorker::spawn(s, &opts.config.sink, opts.metrics.clone()))
        .collect()
}

/// Kafka in; Redis and ClickHouse out, each sink path with its own connections and threads
/// (so the slow path's large pane-close batches never queue in front of the counts).
fn kafka_io(
    opts: &RunOptions,
    mine: Vec<i32>,
    restore: Option<&Checkpoint>,
    lead: bool,
) -> Result<WorkerIo<KafkaReader>, PipelineError> {
    let cfg = &opts.config;
    let start: HashMap<i32, i64> = restore
        .iter()
        .flat_map(|cp| cp.partitions.iter().map(|p| (p.partition, p.resume_offset)))
        .collect();
    fn stores<B: Batch>(cfg: &Config) -> Result<Vec<Box<dyn EpochSink<B>>>, PipelineError>
    where
        RedisSink: EpochSink<B>,
        ClickHouseSink: EpochSink<B>,
    {
        Ok(vec![
            Box::new(RedisSink::connect(&cfg.redis)?),
            Box::new(ClickHouseSink::connect(&cfg.clickhouse)?),
        ])
    }
    let commit: Option<Commit> = if lead {
        let mut store = ClickHouseCheckpoints::connect(&cfg.clickhouse)?;
        let mut boundary = RedisSink::connect(&cfg.redis)?;
        let committer = KafkaCommitter::new(&cfg.kafka)?;
        Some(Box::new(move |cp: &Checkpoint| {
            store.save(cp)?;
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
    Ok(WorkerIo {
        reader: KafkaReader::new(&cfg.kafka, mine, start, opts.metrics.clone())?,
        counts: spawn(opts, stores(cfg)?),
        similarity: spawn(
            opts,
            if cfg.similarity.enabled {
                stores(cfg)?
            } else {
                Vec::new()
            },
        ),
        dead_letters: spawn(opts, vec![Box::new(KafkaDeadLetters::new(&cfg.kafka)?)]),
        commit,
    })
}

/// Generated records in; the demo's in-memory layers out.
fn demo_io(
    opts: &RunOptions,
    mine: Vec<i32>,
    demo: &DemoSetup,
    lead: bool,
) -> WorkerIo<GeneratorReader> {
    fn memory<B: Batch>(demo: &DemoSetup) -> Vec<Box<dyn EpochSink<B>>>
    where
        MemorySink: EpochSink<B>,
    {
        vec![Box::new(MemorySink::new(demo.store.clone()))]
    }
    let commit: Option<Commit> = lead.then(|| {
        let mut store = MemoryCheckpoints::with_store(demo.store.clone());
        Box::new(move |cp: &Checkpoint| Ok(store.save(cp)?)) as Commit
    });
    WorkerIo {
        reader: GeneratorReader::new(&demo.generator, mine, demo.rate_per_partition),
        counts: spawn(opts, memory(demo)),
        similarity: spawn(
            opts,
            if opts.config.similarity.enabled {
                memory(demo)
            } else {
                Vec::new()
            },
        ),
        dead_letters: spawn(opts, vec![Box::new(demo.dead_letters.clone())]),
        commit,
    }
}

/// Builds the dataflow on this worker (source, watermark, [`eddy_dataflows::build`], the
/// sink paths, all probed for durability) and steps it until `opts.stop`; worker 0 saves a
/// checkpoint every `pipeline.checkpoint_ms` once the sinks hold everything before it.
fn drive<R: PartitionReader>(
    worker: &mut timely::worker::Worker,
    opts: &RunOptions,
    all: &[i32],
    io: WorkerIo<R>,
    restore: Option<Checkpoint>,
) -> Result<(), PipelineError> {
    let cfg = &opts.config;
    let WorkerIo {
        reader,
        counts: counts_sinks,
        similarity: similarity_sinks,
        dead_letters: dlq_sinks,
        mut commit,
    } = io;
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
        let out = eddy_dataflows::build(
            cfg,
            Inputs {
                events: src.events,
                history: Some(src.history),
                watermarks: marks.clone(),
            },
        );
        // Every sink path is probed for durability: an epoch is durable once all hold it.
        sink_counts(
            &out.counts,
            &out.engagement,
            marks.clone(),
            window,
            sliding_ms,
            counts_sinks,
        )
        .probe_with(&durable);
        if let Some(similarity) = &out.similarity {
            sink_similarity(similarity, marks, sliding_ms, similarity_sinks).probe_with(&durable);
        }
        sink_dead_letters(src.dead_letters, dlq_sinks).probe_with(&durable);
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
