//! One worker's connections to the outside, for Kafka (Redis, ClickHouse, the broker) or for
//! the embedded demo (generated records, memory).

use super::checkpointer::Commit;
use super::{DemoSetup, PipelineError, RunOptions};
use crate::demo::GeneratorReader;
use crate::kafka::{KafkaCommitter, KafkaDeadLetters, KafkaReader};
use eddy_core::{Checkpoint, Config, DeadLetterBatch, SimilarityBatch};
use eddy_sinks::{
    Batch, CheckpointStore, ClickHouseCheckpoints, ClickHouseSink, EpochSink, MemoryCheckpoints,
    MemorySink, RedisSink, SinkWorker,
};
use std::collections::HashMap;

/// One worker's connections to the outside: where its records come from and where each sink
/// path writes.
pub(super) struct WorkerIo<R> {
    pub(super) reader: R,
    /// Fast path: windowed counts, engagement, top list.
    pub(super) counts: Vec<SinkWorker>,
    /// Slow path: similar users, recommendations (empty when similarity is off).
    pub(super) similarity: Vec<SinkWorker<SimilarityBatch>>,
    pub(super) dead_letters: Vec<SinkWorker<DeadLetterBatch>>,
    /// Worker 0 only: takes checkpoints.
    pub(super) commit: Option<Commit>,
}

impl<R> WorkerIo<R> {
    /// The same connections with the reader wrapped by `f`.
    pub(super) fn map_reader<S>(self, f: impl FnOnce(R) -> S) -> WorkerIo<S> {
        WorkerIo {
            reader: f(self.reader),
            counts: self.counts,
            similarity: self.similarity,
            dead_letters: self.dead_letters,
            commit: self.commit,
        }
    }
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
pub(super) fn kafka_io(
    opts: &RunOptions,
    all: &[i32],
    mine: Vec<i32>,
    start: HashMap<i32, i64>,
    lead: bool,
    replay: Option<&crate::replay::ReplaySetup>,
) -> Result<WorkerIo<KafkaReader>, PipelineError> {
    let cfg = &opts.config;
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
        let replay = replay.cloned();
        let stop = opts.stop.clone();
        Some(Box::new(move |cp: &Checkpoint| {
            // A replay saves under its own name until it hands over to the live job; the
            // broker offsets are the live job's only.
            let live = match &replay {
                Some(r) => {
                    r.save_checkpoint(&mut store, cp, &stop)
                        .map_err(|e| PipelineError::Worker(format!("replay checkpoint: {e}")))?;
                    r.handed_over()
                }
                None => {
                    store.save(cp)?;
                    true
                }
            };
            // The boundary and the broker offsets follow the durable checkpoint; failing them
            // only delays freshness and lag reporting, so they are logged, not fatal.
            if let Err(e) = boundary.write_boundary(cp.watermark_ms) {
                tracing::warn!(error = %e, "publishing the boundary to Redis failed");
            }
            if live && let Err(e) = committer.commit(cp) {
                tracing::warn!(error = %e, "committing offsets to the broker failed");
            }
            Ok(())
        }))
    } else {
        None
    };
    Ok(WorkerIo {
        reader: KafkaReader::new(&cfg.kafka, all.to_vec(), mine, start, opts.metrics.clone())?,
        counts: spawn(opts, stores(cfg)?),
        similarity: spawn(
            opts,
            if cfg.similarity.enabled {
                stores(cfg)?
            } else {
                Vec::new()
            },
        ),
        dead_letters: spawn(
            opts,
            vec![Box::new(KafkaDeadLetters::new(
                &cfg.kafka,
                &cfg.redis.prefix,
                opts.metrics.clone(),
            )?)],
        ),
        commit,
    })
}

/// Generated records in; the demo's in-memory layers out.
pub(super) fn demo_io(
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
