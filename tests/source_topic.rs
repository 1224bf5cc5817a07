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
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh topic (one partition) and ClickHouse database for `name`.
fn config(name: &str) -> Config {
    eddy_testkit::services(&[]);
    let unique = format!("{name}_{}_{}", std::process::id(), eddy_core::now_ms());
    let mut cfg = Config::default();
    cfg.kafka.topic = format!("src_{unique}");
    cfg.kafka.dlq_topic = format!("src_{unique}.dlq");
    cfg.kafka.group_id = format!("src_{unique}");
    cfg.kafka.partitions = 1;
    cfg.pipeline.workers = 1;
    cfg.similarity.enabled = false;
    cfg.redis.prefix = format!("src_{unique}");
    cfg.clickhouse.database = format!("eddy_src_{name}");
    rt().block_on(async {
        reqwest::Client::new()
            .post(&cfg.clickhouse.url)
            .body(format!(
                "DROP DATABASE IF EXISTS {}",
                cfg.clickhouse.database
            ))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    });
    eddy_sinks::apply_schema(&cfg.clickhouse, None).unwrap();
    rt().block_on(eddy::kafka::create_topics(&cfg.kafka))
        .unwrap();
    cfg
}

fn produce(cfg: &Config, n: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .create()
        .unwrap();
    rt().block_on(async {
        for i in 0..n {
            let payload = format!(
                r#"{{"event_id":"{i}","ts":1767225600000,"user_id":1,"campaign_id":1,"event_type":"view"}}"#
            );
            producer
                .send(
                    FutureRecord::<(), str>::to(&cfg.kafka.topic)
                        .partition(0)
                        .payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    });
}

fn checkpoint(cfg: &Config, partition: i32, high_offset: i64) -> Checkpoint {
    Checkpoint {
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
    check_checkpoint(&cfg.kafka, &checkpoint(&cfg, 0, 3)).expect("the log reaches offset 3");
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
