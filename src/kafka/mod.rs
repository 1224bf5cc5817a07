//! Kafka plumbing: the reader of assigned partitions ([`reader`]), the dead-letter producer
//! ([`dead_letters`]), topic creation and checks, and the offset commit that follows a durable
//! checkpoint. No consumer-group rebalancing, auto-commit off.

mod dead_letters;
mod reader;
mod startup;

pub use dead_letters::{
    BoundedLetter, KafkaDeadLetters, MAX_ERROR_HEADER_BYTES, RECORD_OVERHEAD_BYTES, bound_letter,
    late_before, truncate_text,
};
pub use reader::{KafkaReader, PARTITION_CHECK_INTERVAL, ReaderContext};
pub use startup::{BrokerStartup, FIRST_BACKOFF, MAX_BACKOFF};

use eddy_core::config::KafkaConfig;
use eddy_core::{Checkpoint, PartitionCheckpoint};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Kafka errors, with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaIoError {
    /// A client call failed.
    #[error("kafka {op}: {source}")]
    Client {
        /// What was attempted.
        op: &'static str,
        /// Cause.
        source: KafkaError,
    },
    /// The topic does not exist or has no partitions.
    #[error("kafka topic {0:?} not found (create it with `eddy topics create`)")]
    NoTopic(String),
    /// The topic's partitions changed while eddy was reading it (added, removed, or the topic
    /// deleted): the partition assignment and the watermark cover a fixed set, so the run
    /// stops; a restart reads every partition.
    #[error(
        "the partitions of topic {topic:?} changed from {was:?} to {now:?} while running: \
         stopping (restart eddy to read every partition)"
    )]
    PartitionsChanged {
        /// The topic.
        topic: String,
        /// Partitions at start-up.
        was: Vec<i32>,
        /// Partitions now (empty: the topic is gone).
        now: Vec<i32>,
    },
    /// The restored checkpoint does not belong to the topic as it is now: a partition of the
    /// checkpoint is missing, or its log ends before the checkpoint's high offset (the topic
    /// was deleted and recreated, or truncated). Its offsets would point at other records, so
    /// eddy refuses to start.
    #[error(
        "checkpoint of topic {topic:?} does not match the topic: partition {partition} {problem} \
         (was the topic recreated? start a new job: another topic, or clear the checkpoint)"
    )]
    CheckpointMismatch {
        /// The topic.
        topic: String,
        /// The partition that does not match.
        partition: i32,
        /// What is wrong.
        problem: String,
    },
    /// An operation did not finish in time.
    #[error("kafka: {op} timed out")]
    Timeout {
        /// What was attempted.
        op: &'static str,
    },
    /// The broker did not answer within `kafka.startup_timeout_ms` at start-up.
    #[error("kafka {op}: broker not answering after {timeout_ms} ms of retries: {last}")]
    StartupTimeout {
        /// What was attempted.
        op: &'static str,
        /// The start-up deadline, ms.
        timeout_ms: u64,
        /// The last attempt's error.
        last: Box<KafkaIoError>,
    },
}

impl KafkaIoError {
    /// True when retrying cannot help and the run must stop.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            KafkaIoError::PartitionsChanged { .. } | KafkaIoError::CheckpointMismatch { .. }
        )
    }
}

pub(crate) fn client(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    c
}

/// Creates the source topic (with `cfg.partitions`) and the dead-letter topic if missing.
pub async fn create_topics(cfg: &KafkaConfig) -> Result<(), KafkaIoError> {
    let admin: AdminClient<DefaultClientContext> =
        client(cfg)
            .create()
            .map_err(|source| KafkaIoError::Client {
                op: "admin client",
                source,
            })?;
    let topics = [
        NewTopic::new(&cfg.topic, cfg.partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&cfg.dlq_topic, 1, TopicReplication::Fixed(1)),
    ];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&topics, &opts)
        .await
        .map_err(|source| KafkaIoError::Client {
            op: "create topics",
            source,
        })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaIoError::Client {
                    op: "create topic",
                    source: KafkaError::AdminOp(code),
                })
                .inspect_err(|_| tracing::error!(%topic, "topic creation failed"));
            }
        }
    }
    Ok(())
}

/// Partitions of `topic`, sorted.
pub fn topic_partitions(cfg: &KafkaConfig, topic: &str) -> Result<Vec<i32>, KafkaIoError> {
    let consumer: BaseConsumer = client(cfg)
        .create()
        .map_err(|source| KafkaIoError::Client {
            op: "metadata client",
            source,
        })?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| KafkaIoError::Client {
            op: "fetch metadata",
            source,
        })?;
    let mut parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    parts.sort_unstable();
    if parts.is_empty() {
        return Err(KafkaIoError::NoTopic(topic.to_owned()));
    }
    Ok(parts)
}

/// Refuses a restored checkpoint that does not belong to the topic as it is now: every
/// partition of `cp` must exist, and its log must hold the checkpoint's offsets
/// ([`check_log`]: a log that ends earlier was recreated or truncated; one that starts after
/// the resume offset lost records of open windows to retention). A recreated topic that already holds more records than the checkpoint read is
/// not detected here. Returns the end of each partition's log now (its high watermark).
pub fn check_checkpoint(
    cfg: &KafkaConfig,
    cp: &Checkpoint,
) -> Result<BTreeMap<i32, i64>, KafkaIoError> {
    let parts = topic_partitions(cfg, &cp.topic)?;
    let consumer: BaseConsumer = client(cfg)
        .create()
        .map_err(|source| KafkaIoError::Client {
            op: "watermarks client",
            source,
        })?;
    let mut ends = BTreeMap::new();
    for p in &cp.partitions {
        let mismatch = |problem: String| KafkaIoError::CheckpointMismatch {
            topic: cp.topic.clone(),
            partition: p.partition,
            problem,
        };
        if !parts.contains(&p.partition) {
            return Err(mismatch("no longer exists".into()));
        }
        let (low, high) = consumer
            .fetch_watermarks(&cp.topic, p.partition, Duration::from_secs(10))
            .map_err(|source| KafkaIoError::Client {
                op: "fetch watermarks",
                source,
            })?;
        check_log(p, low, high).map_err(mismatch)?;
        ends.insert(p.partition, high);
    }
    Ok(ends)
}

/// Whether a partition whose log holds offsets `[low, high)` can be restored from `p`: the log
/// must reach the checkpoint's high offset (a log that ends earlier was recreated or
/// truncated), and still hold the resume offset (records of windows open at the checkpoint,
/// deleted by retention, would be missing from them).
///
/// ```
/// use eddy_core::PartitionCheckpoint;
/// let p = PartitionCheckpoint { partition: 0, resume_offset: 10, high_offset: 20 };
/// assert!(eddy::kafka::check_log(&p, 0, 25).is_ok());
/// assert!(eddy::kafka::check_log(&p, 10, 20).is_ok());
/// assert!(eddy::kafka::check_log(&p, 0, 19).unwrap_err().contains("ends at offset 19"));
/// assert!(eddy::kafka::check_log(&p, 11, 25).unwrap_err().contains("starts at offset 11"));
/// // Nothing to re-read: the log may start anywhere up to the high offset.
/// let caught_up = PartitionCheckpoint { partition: 0, resume_offset: 20, high_offset: 20 };
/// assert!(eddy::kafka::check_log(&caught_up, 20, 20).is_ok());
/// ```
pub fn check_log(p: &PartitionCheckpoint, low: i64, high: i64) -> Result<(), String> {
    if high < p.high_offset {
        return Err(format!(
            "ends at offset {high}, before the checkpoint's high offset {}",
            p.high_offset
        ));
    }
    if low > p.resume_offset && p.resume_offset < p.high_offset {
        return Err(format!(
            "starts at offset {low}, after the checkpoint's resume offset {}: retention deleted \
             records of windows still open at the checkpoint; rebuild with `eddy replay --from \
             earliest --then live` (into a fresh version: `--target version:NAME`), or keep the \
             topic's retention above the lateness plus a window",
            p.resume_offset
        ));
    }
    Ok(())
}

/// Commits a checkpoint's resume offsets to the broker (for lag tooling; the checkpoint store
/// is the source of truth on restart).
pub struct KafkaCommitter {
    consumer: BaseConsumer,
    topic: String,
}

impl KafkaCommitter {
    /// A committer for `cfg.group_id`.
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaIoError> {
        let consumer: BaseConsumer = client(cfg)
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|source| KafkaIoError::Client {
                op: "committer",
                source,
            })?;
        Ok(Self {
            consumer,
            topic: cfg.topic.clone(),
        })
    }

    /// Commits `resume_offset` of every partition of `cp`, synchronously.
    pub fn commit(&self, cp: &Checkpoint) -> Result<(), KafkaIoError> {
        let mut tpl = TopicPartitionList::new();
        for p in &cp.partitions {
            tpl.add_partition_offset(&self.topic, p.partition, Offset::Offset(p.resume_offset))
                .map_err(|source| KafkaIoError::Client {
                    op: "commit list",
                    source,
                })?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|source| KafkaIoError::Client {
                op: "commit",
                source,
            })
    }

    /// Offsets committed for `partitions` (for tests and tooling).
    pub fn committed(&self, partitions: &[i32]) -> Result<HashMap<i32, i64>, KafkaIoError> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&self.topic, p);
        }
        let got = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|source| KafkaIoError::Client {
                op: "committed",
                source,
            })?;
        Ok(got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }
}
