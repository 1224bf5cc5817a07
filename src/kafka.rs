//! Kafka plumbing: a [`PartitionReader`] over assigned partitions (no consumer-group
//! rebalancing, auto-commit off), the dead-letter producer, topic creation, and the offset
//! commit that follows a durable checkpoint.

use crate::reader::{PartitionReader, Record};
use eddy_core::config::KafkaConfig;
use eddy_core::{Checkpoint, DeadLetterBatch, Metrics};
use eddy_sinks::{EpochSink, SinkError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

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
}

fn client(cfg: &KafkaConfig) -> ClientConfig {
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

/// The reader's librdkafka context: end-of-partition notices (eddy asks for them, to detect
/// caught-up partitions) are not errors, so they are logged at debug level instead of error;
/// other global errors go to `tracing` as errors.
pub struct ReaderContext;

impl rdkafka::client::ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::debug!(%reason, "kafka: end of partition");
        } else {
            tracing::error!(%error, %reason, "kafka client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

/// Reads the partitions assigned to one worker.
pub struct KafkaReader {
    consumer: BaseConsumer<ReaderContext>,
    topic: String,
    partitions: Vec<i32>,
    start: HashMap<i32, i64>,
    at_end: HashSet<i32>,
    metrics: Metrics,
    next_lag_check: Instant,
    positions: HashMap<i32, i64>,
}

impl KafkaReader {
    /// Assigns `partitions`, each starting at `start[p]` (or the beginning of the log).
    pub fn new(
        cfg: &KafkaConfig,
        partitions: Vec<i32>,
        start: HashMap<i32, i64>,
        metrics: Metrics,
    ) -> Result<Self, KafkaIoError> {
        let consumer: BaseConsumer<ReaderContext> = client(cfg)
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", cfg.fetch_wait_max_ms.to_string())
            .create_with_context(ReaderContext)
            .map_err(|source| KafkaIoError::Client {
                op: "consumer",
                source,
            })?;
        let mut tpl = TopicPartitionList::new();
        let mut starts = HashMap::new();
        for &p in &partitions {
            let offset = start.get(&p).copied().unwrap_or(0);
            starts.insert(p, offset);
            tpl.add_partition_offset(&cfg.topic, p, Offset::Offset(offset))
                .map_err(|source| KafkaIoError::Client {
                    op: "assignment",
                    source,
                })?;
        }
        consumer
            .assign(&tpl)
            .map_err(|source| KafkaIoError::Client {
                op: "assign",
                source,
            })?;
        Ok(Self {
            consumer,
            topic: cfg.topic.clone(),
            partitions,
            positions: starts.clone(),
            start: starts,
            at_end: HashSet::new(),
            metrics,
            next_lag_check: Instant::now(),
        })
    }

    fn update_lag(&mut self) {
        if Instant::now() < self.next_lag_check {
            return;
        }
        self.next_lag_check = Instant::now() + Duration::from_secs(1);
        for &p in &self.partitions {
            // A broker round trip inside the worker loop, once a second per partition: kept
            // short so a slow broker costs the metric, not the pipeline's latency.
            if let Ok((_, high)) =
                self.consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_millis(50))
            {
                let pos = self.positions.get(&p).copied().unwrap_or(0);
                self.metrics
                    .consumer_lag
                    .get_or_create(&eddy_core::metrics::PartitionLabel { partition: p })
                    .set((high - pos).max(0));
            }
        }
    }
}

impl PartitionReader for KafkaReader {
    type Error = KafkaIoError;
    fn partitions(&self) -> Vec<i32> {
        self.partitions.clone()
    }
    fn start_offset(&self, partition: i32) -> i64 {
        self.start.get(&partition).copied().unwrap_or(0)
    }
    fn poll(&mut self, max: usize, f: &mut dyn FnMut(Record<'_>)) -> Result<usize, KafkaIoError> {
        let mut n = 0;
        while n < max {
            let timeout = if n == 0 {
                Duration::from_millis(1)
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(timeout) {
                None => break,
                Some(Ok(m)) => {
                    self.at_end.remove(&m.partition());
                    self.positions.insert(m.partition(), m.offset() + 1);
                    f(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        payload: m.payload().unwrap_or(&[]),
                    });
                    n += 1;
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.at_end.insert(p);
                }
                Some(Err(source)) => return Err(KafkaIoError::Client { op: "poll", source }),
            }
        }
        self.update_lag();
        Ok(n)
    }
    fn at_end(&self, partition: i32) -> bool {
        self.at_end.contains(&partition)
    }
}

/// Produces dead letters: value = the original bytes; headers carry the reason, the error and
/// the source topic/partition/offset; key = `"{partition}:{offset}"`.
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    runtime: tokio::runtime::Runtime,
    topic: String,
    source_topic: String,
}

impl KafkaDeadLetters {
    /// A producer for `cfg.dlq_topic` (idempotent producer, acks=all).
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaIoError> {
        let producer: FutureProducer = client(cfg)
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|source| KafkaIoError::Client {
                op: "producer",
                source,
            })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        Ok(Self {
            producer,
            runtime,
            topic: cfg.dlq_topic.clone(),
            source_topic: cfg.topic.clone(),
        })
    }
}

impl EpochSink<DeadLetterBatch> for KafkaDeadLetters {
    fn name(&self) -> &'static str {
        "kafka-dlq"
    }

    /// Produces every letter (key `"{partition}:{offset}"`, the original payload, the reason
    /// and source position in headers) and waits for all acknowledgements.
    fn write(&mut self, batch: &DeadLetterBatch) -> Result<(), SinkError> {
        let producer = &self.producer;
        let topic = &self.topic;
        let source_topic = &self.source_topic;
        self.runtime.block_on(async {
            let mut deliveries = Vec::with_capacity(batch.letters.len());
            for l in &batch.letters {
                let key = format!("{}:{}", l.partition, l.offset);
                let partition = l.partition.to_string();
                let offset = l.offset.to_string();
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "eddy-reason",
                        value: Some(l.reason.as_str()),
                    })
                    .insert(Header {
                        key: "eddy-error",
                        value: Some(l.error.as_str()),
                    })
                    .insert(Header {
                        key: "eddy-source-topic",
                        value: Some(source_topic.as_str()),
                    })
                    .insert(Header {
                        key: "eddy-source-partition",
                        value: Some(partition.as_str()),
                    })
                    .insert(Header {
                        key: "eddy-source-offset",
                        value: Some(offset.as_str()),
                    });
                let record = FutureRecord::to(topic)
                    .key(&key)
                    .payload(&l.payload)
                    .headers(headers);
                // Enqueue now; a full queue fails the batch, which the sink worker retries.
                let delivery = producer.send_result(record).map_err(|(e, _)| e)?;
                deliveries.push(delivery);
            }
            for d in deliveries {
                d.await
                    .map_err(|_| KafkaError::Canceled)?
                    .map_err(|(e, _)| e)?;
            }
            Ok(())
        })
    }
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
