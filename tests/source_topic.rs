//! The source topic changing under eddy, against the real broker (tansu on 127.0.0.1:9092): a
//! checkpoint that does not belong to the topic as it is now (recreated or truncated) is
//! refused at start-up.
//!
//! Partitions changing while running are tested in `eddy::kafka`'s unit tests (the partition
//! watcher) and `eddy::source`'s (a fatal reader error stops the run): tansu cannot add
//! partitions (CreatePartitions is unsupported), and deleting a topic under a librdkafka
//! consumer crashes librdkafka's metadata cache (SIGSEGV in `rd_kafka_metadata_cache_find`)
//! with tansu's metadata answers.

use eddy::kafka::{KafkaIoError, check_checkpoint};
use eddy::pipeline::{Mode, RunOptions, run};
use eddy_core::{Checkpoint, Config, Metrics, PartitionCheckpoint};
use eddy_sinks::{CheckpointStore, ClickHouseCheckpoints};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// A fresh topic (one partition) and ClickHouse database for `name`.
fn config(name: &str) -> Config {
    let cfg = eddy_testkit::pipeline::fresh_config(&format!("src_{name}"));
    eddy_testkit::block_on(eddy::kafka::create_topics(&cfg.kafka)).unwrap();
    cfg
}

/// Produces `n` views to partition 0 of the source topic.
fn produce(cfg: &Config, n: usize) {
    let payloads: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"event_id":"{i}","ts":1767225600000,"user_id":1,"campaign_id":1,"event_type":"view"}}"#
            )
        })
        .collect();
    eddy_testkit::kafka::produce(&cfg.kafka, payloads.iter().map(|p| (0, p.as_bytes())));
}

fn checkpoint(cfg: &Config, partition: i32, high_offset: i64) -> Checkpoint {
    Checkpoint {
        state: None,
        topic: cfg.kafka.topic.clone(),
        epoch: 7,
        watermark_ms: 1_767_225_600_000,
        partitions: vec![PartitionCheckpoint {
            partition,
            resume_offset: 0,
            high_offset,
        }],
    }
}

#[test]
fn a_checkpoint_the_topic_does_not_reach_is_refused() {
    let cfg = config("recreated");
    produce(&cfg, 3);
    let ends = check_checkpoint(&cfg.kafka, &checkpoint(&cfg, 0, 2)).expect("the log reaches 2");
    assert_eq!(
        ends,
        [(0, 3)].into(),
        "the end of the log, where a restart catches up to"
    );
    let err = check_checkpoint(&cfg.kafka, &checkpoint(&cfg, 0, 10)).unwrap_err();
    assert!(
        matches!(&err, KafkaIoError::CheckpointMismatch { partition: 0, .. }),
        "{err}"
    );
    let err = check_checkpoint(&cfg.kafka, &checkpoint(&cfg, 5, 1)).unwrap_err();
    assert!(
        matches!(&err, KafkaIoError::CheckpointMismatch { partition: 5, .. }),
        "{err}"
    );

    // As `eddy run` meets it: a checkpoint saved before the topic was recreated with fewer
    // records. The run refuses to start, with the error, instead of reading other records.
    ClickHouseCheckpoints::connect(&cfg.clickhouse)
        .unwrap()
        .save(&checkpoint(&cfg, 0, 10))
        .unwrap();
    let opts = RunOptions {
        config: cfg.clone(),
        timely: timely::Config::process(1),
        stop: Arc::new(AtomicBool::new(false)),
        metrics: Metrics::new(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = opts.stop.clone();
    std::thread::spawn(move || tx.send(run(opts, Mode::Kafka)).unwrap());
    let result = rx.recv_timeout(Duration::from_secs(30));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = result
        .expect("the run ends by itself")
        .expect_err("the run refuses the checkpoint");
    assert!(
        err.to_string().contains("does not match the topic"),
        "{err}"
    );
}
