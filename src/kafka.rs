//! Kafka plumbing: a [`PartitionReader`] over assigned partitions (no consumer-group
//! rebalancing, auto-commit off), the dead-letter producer, topic creation, and the offset
//! commit that follows a durable checkpoint.

use crate::reader::{PartitionReader, Record};
use eddy_core::config::KafkaConfig;
use eddy_core::metrics::ReasonLabel;
use eddy_core::{Checkpoint, DeadLetter, DeadLetterBatch, Metrics};
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
use std::sync::{Arc, Condvar, Mutex};
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

/// Refuses a restored checkpoint that does not belong to the topic as it is now: every
/// partition of `cp` must exist, and its log must reach the checkpoint's high offset (a log
/// that ends earlier was recreated or truncated: the checkpoint's offsets would name other
/// records). A recreated topic that already holds more records than the checkpoint read is
/// not detected here.
pub fn check_checkpoint(cfg: &KafkaConfig, cp: &Checkpoint) -> Result<(), KafkaIoError> {
    let parts = topic_partitions(cfg, &cp.topic)?;
    let consumer: BaseConsumer = client(cfg)
        .create()
        .map_err(|source| KafkaIoError::Client {
            op: "watermarks client",
            source,
        })?;
    for p in &cp.partitions {
        let mismatch = |problem: String| KafkaIoError::CheckpointMismatch {
            topic: cp.topic.clone(),
            partition: p.partition,
            problem,
        };
        if !parts.contains(&p.partition) {
            return Err(mismatch("no longer exists".into()));
        }
        let (_, high) = consumer
            .fetch_watermarks(&cp.topic, p.partition, Duration::from_secs(10))
            .map_err(|source| KafkaIoError::Client {
                op: "fetch watermarks",
                source,
            })?;
        if high < p.high_offset {
            return Err(mismatch(format!(
                "ends at offset {high}, before the checkpoint's high offset {}",
                p.high_offset
            )));
        }
    }
    Ok(())
}

/// How often [`KafkaReader`]'s watcher thread compares the topic's partitions with those at
/// start-up.
pub const PARTITION_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Watches a topic's partitions on its own thread (metadata calls never block a worker):
/// records the first change seen, until dropped.
struct PartitionWatch {
    changed: Arc<Mutex<Option<KafkaIoError>>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl PartitionWatch {
    /// Compares `list()` (the topic's partitions now; `NoTopic` when it is gone) with `was`
    /// every `every`.
    fn spawn(
        topic: String,
        was: Vec<i32>,
        every: Duration,
        list: impl Fn() -> Result<Vec<i32>, KafkaIoError> + Send + 'static,
    ) -> Self {
        let changed = Arc::new(Mutex::new(None));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (c, s) = (changed.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("partition-watch".into())
            .spawn(move || {
                loop {
                    {
                        let (lock, cv) = &*s;
                        let stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                        let (stopped, _) = cv
                            .wait_timeout_while(stopped, every, |stopped| !*stopped)
                            .unwrap_or_else(|e| e.into_inner());
                        if *stopped {
                            return;
                        }
                    }
                    let now = match list() {
                        Ok(now) => now,
                        Err(KafkaIoError::NoTopic(_)) => Vec::new(),
                        // The broker is unreachable: not a change; try again later.
                        Err(e) => {
                            tracing::debug!(error = %e, "partition check failed");
                            continue;
                        }
                    };
                    if now != was {
                        *c.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(KafkaIoError::PartitionsChanged {
                                topic: topic.clone(),
                                was,
                                now,
                            });
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the partition watcher");
        }
        Self { changed, stop }
    }

    fn take(&self) -> Option<KafkaIoError> {
        self.changed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl Drop for PartitionWatch {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
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

/// The high watermark of each of a reader's partitions, fetched once a second on a thread of
/// its own with its own client (a broker round trip never blocks a worker), until dropped.
struct HighWatermarks {
    highs: Arc<Mutex<HashMap<i32, i64>>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl HighWatermarks {
    fn spawn(cfg: &KafkaConfig, partitions: Vec<i32>) -> Result<Self, KafkaIoError> {
        let client: BaseConsumer = client(cfg)
            .create()
            .map_err(|source| KafkaIoError::Client {
                op: "watermarks client",
                source,
            })?;
        let topic = cfg.topic.clone();
        let highs = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (h, s) = (highs.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("lag-watch".into())
            .spawn(move || {
                loop {
                    for &p in &partitions {
                        if let Ok((_, high)) =
                            client.fetch_watermarks(&topic, p, Duration::from_secs(2))
                        {
                            h.lock().unwrap_or_else(|e| e.into_inner()).insert(p, high);
                        }
                    }
                    let (lock, cv) = &*s;
                    let stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                    let (stopped, _) = cv
                        .wait_timeout_while(stopped, Duration::from_secs(1), |stopped| !*stopped)
                        .unwrap_or_else(|e| e.into_inner());
                    if *stopped {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the lag watcher");
        }
        Ok(Self { highs, stop })
    }

    /// The latest high watermark fetched for `partition`.
    fn get(&self, partition: i32) -> Option<i64> {
        let highs = self.highs.lock().unwrap_or_else(|e| e.into_inner());
        highs.get(&partition).copied()
    }
}

impl Drop for HighWatermarks {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

/// Reads the partitions assigned to one worker.
///
/// A watcher thread compares the topic's partitions with those at start-up every
/// [`PARTITION_CHECK_INTERVAL`]; after a change (partitions added or removed, topic deleted)
/// [`PartitionReader::poll`] fails with [`KafkaIoError::PartitionsChanged`], a fatal error
/// ([`PartitionReader::is_fatal`]): the source stops the run.
pub struct KafkaReader {
    consumer: BaseConsumer<ReaderContext>,
    partitions: Vec<i32>,
    start: HashMap<i32, i64>,
    at_end: HashSet<i32>,
    metrics: Metrics,
    positions: HashMap<i32, i64>,
    watch: PartitionWatch,
    highs: HighWatermarks,
}

impl KafkaReader {
    /// Assigns `partitions`, each starting at `start[p]` (or the beginning of the log).
    pub fn new(
        cfg: &KafkaConfig,
        partitions: Vec<i32>,
        start: HashMap<i32, i64>,
        metrics: Metrics,
    ) -> Result<Self, KafkaIoError> {
        Self::with_partition_check(cfg, partitions, start, metrics, PARTITION_CHECK_INTERVAL)
    }

    /// [`KafkaReader::new`], checking the topic's partitions every `every`.
    pub fn with_partition_check(
        cfg: &KafkaConfig,
        partitions: Vec<i32>,
        start: HashMap<i32, i64>,
        metrics: Metrics,
        every: Duration,
    ) -> Result<Self, KafkaIoError> {
        let list_cfg = cfg.clone();
        let watch = PartitionWatch::spawn(
            cfg.topic.clone(),
            topic_partitions(cfg, &cfg.topic)?,
            every,
            move || topic_partitions(&list_cfg, &list_cfg.topic),
        );
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
            highs: HighWatermarks::spawn(cfg, partitions.clone())?,
            partitions,
            positions: starts.clone(),
            start: starts,
            at_end: HashSet::new(),
            metrics,
            watch,
        })
    }

    /// Consumer lag per partition from the latest high watermarks (fetched off this thread).
    fn update_lag(&self) {
        for &p in &self.partitions {
            if let Some(high) = self.highs.get(p) {
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
        if let Some(changed) = self.watch.take() {
            return Err(changed);
        }
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
    fn is_fatal(error: &KafkaIoError) -> bool {
        error.is_fatal()
    }
}

/// Longest `eddy-error` header of a dead letter, bytes: a longer error text (serde quotes a
/// bad field whole) is cut at a character boundary and ends with `…`.
pub const MAX_ERROR_HEADER_BYTES: usize = 1_024;

/// Bytes of a dead letter's size budget kept for the record's framing (record batch header,
/// varint lengths, timestamps), on top of key, header names and values, and payload.
pub const RECORD_OVERHEAD_BYTES: usize = 512;

/// A dead letter as produced: every part bounded so the record fits `max_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedLetter<'a> {
    /// `"{partition}:{offset}"`.
    pub key: String,
    /// Header names and values, in order: `eddy-reason`, `eddy-error` (at most
    /// [`MAX_ERROR_HEADER_BYTES`]), `eddy-source-topic`, `eddy-source-partition`,
    /// `eddy-source-offset`, and `eddy-truncated` (the original payload length) when the
    /// payload was cut.
    pub headers: Vec<(&'static str, String)>,
    /// The original payload, or its first bytes when the whole would not fit.
    pub payload: &'a [u8],
}

impl BoundedLetter<'_> {
    /// Key + header names and values + payload + [`RECORD_OVERHEAD_BYTES`]: an upper bound of
    /// the record's size as the producer counts it against `message.max.bytes`.
    pub fn size(&self) -> usize {
        RECORD_OVERHEAD_BYTES
            + self.key.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 10)
                .sum::<usize>()
            + self.payload.len()
    }
}

/// `text` cut to at most `max` bytes at a character boundary, ending with `…` when cut.
pub fn truncate_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    const MARK: &str = "…";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// Bounds `letter` for the dead-letter topic: the error header cut to
/// [`MAX_ERROR_HEADER_BYTES`], and the payload cut (with an `eddy-truncated: <original
/// length>` header) when the whole record would exceed `max_bytes` (the producer's
/// `message.max.bytes`), so that [`BoundedLetter::size`] `<= max_bytes` whenever `max_bytes`
/// leaves room for the headers (a few KB).
pub fn bound_letter<'a>(
    letter: &'a DeadLetter,
    source_topic: &str,
    max_bytes: usize,
) -> BoundedLetter<'a> {
    let mut out = BoundedLetter {
        key: format!("{}:{}", letter.partition, letter.offset),
        headers: vec![
            ("eddy-reason", truncate_text(&letter.reason, 64)),
            (
                "eddy-error",
                truncate_text(&letter.error, MAX_ERROR_HEADER_BYTES),
            ),
            ("eddy-source-topic", truncate_text(source_topic, 256)),
            ("eddy-source-partition", letter.partition.to_string()),
            ("eddy-source-offset", letter.offset.to_string()),
        ],
        payload: &letter.payload,
    };
    if out.size() > max_bytes {
        let original = letter.payload.len();
        out.headers.push(("eddy-truncated", original.to_string()));
        let room = max_bytes.saturating_sub(out.size() - original);
        out.payload = &letter.payload[..room.min(original)];
    }
    out
}

/// Produces dead letters: value = the original bytes (cut to fit, see [`bound_letter`]);
/// headers carry the reason, the error and the source topic/partition/offset; key =
/// `"{partition}:{offset}"`.
///
/// A letter the broker or producer refuses for good (not [`SinkError::is_retryable`], e.g.
/// `MessageSizeTooLarge` from a broker with a lower limit than `kafka.dlq_max_message_bytes`)
/// is logged, counted in `dead_letters_dropped{reason}` and skipped; the batch's other letters
/// are still written. Any other failure fails the batch, which the sink worker retries (letters
/// already delivered may then be written twice: at least once).
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    runtime: tokio::runtime::Runtime,
    topic: String,
    source_topic: String,
    max_bytes: usize,
    metrics: Metrics,
}

impl KafkaDeadLetters {
    /// A producer for `cfg.dlq_topic` (acks=all, `message.max.bytes` =
    /// `cfg.dlq_max_message_bytes`).
    pub fn new(cfg: &KafkaConfig, metrics: Metrics) -> Result<Self, KafkaIoError> {
        let producer: FutureProducer = client(cfg)
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("message.max.bytes", cfg.dlq_max_message_bytes.to_string())
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
            max_bytes: cfg.dlq_max_message_bytes,
            metrics,
        })
    }
}

/// Logs and counts a letter refused for good.
fn drop_letter(metrics: &Metrics, letter: &DeadLetter, error: &SinkError) {
    tracing::error!(
        partition = letter.partition,
        offset = letter.offset,
        reason = %letter.reason,
        %error,
        "dead letter refused permanently by the dead-letter topic; skipped"
    );
    metrics
        .dead_letters_dropped
        .get_or_create(&ReasonLabel {
            reason: letter.reason.clone(),
        })
        .inc();
}

impl EpochSink<DeadLetterBatch> for KafkaDeadLetters {
    fn name(&self) -> &'static str {
        "kafka-dlq"
    }

    /// Produces every letter (bounded by [`bound_letter`]) and waits for all
    /// acknowledgements; permanently refused letters are skipped (see the type's docs).
    fn write(&mut self, batch: &DeadLetterBatch) -> Result<(), SinkError> {
        let producer = &self.producer;
        let topic = &self.topic;
        let metrics = &self.metrics;
        let (source_topic, max_bytes) = (&self.source_topic, self.max_bytes);
        self.runtime.block_on(async {
            let mut deliveries = Vec::with_capacity(batch.letters.len());
            for l in &batch.letters {
                let bounded = bound_letter(l, source_topic, max_bytes);
                let mut headers = OwnedHeaders::new_with_capacity(bounded.headers.len());
                for (key, value) in &bounded.headers {
                    headers = headers.insert(Header {
                        key,
                        value: Some(value.as_str()),
                    });
                }
                let record = FutureRecord::to(topic)
                    .key(&bounded.key)
                    .payload(bounded.payload)
                    .headers(headers);
                // Enqueue now; a full queue fails the batch, which the sink worker retries.
                match producer.send_result(record) {
                    Ok(delivery) => deliveries.push((l, delivery)),
                    Err((e, _)) => {
                        let e = SinkError::Kafka(e);
                        if e.is_retryable() {
                            return Err(e);
                        }
                        drop_letter(metrics, l, &e);
                    }
                }
            }
            let mut failed = None;
            for (l, d) in deliveries {
                match d.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => {
                        let e = SinkError::Kafka(e);
                        if e.is_retryable() {
                            failed.get_or_insert(e);
                        } else {
                            drop_letter(metrics, l, &e);
                        }
                    }
                    Err(_) => {
                        failed.get_or_insert(SinkError::Kafka(KafkaError::Canceled));
                    }
                }
            }
            failed.map_or(Ok(()), Err)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn letter(error: String, payload: Vec<u8>) -> DeadLetter {
        DeadLetter {
            partition: 3,
            offset: 1_234_567,
            reason: "bad_json".into(),
            error,
            payload,
        }
    }

    #[test]
    fn small_letters_are_written_whole() {
        let l = letter("invalid event JSON: eof".into(), b"{".to_vec());
        let b = bound_letter(&l, "events", 1_000_000);
        assert_eq!(b.payload, b"{");
        assert_eq!(b.key, "3:1234567");
        assert!(b.headers.iter().all(|(k, _)| *k != "eddy-truncated"));
        assert_eq!(b.headers[1].1, "invalid event JSON: eof");
    }

    #[test]
    fn large_letters_are_cut_to_fit_with_a_marker() {
        // The issue's case: a ~900 KB message whose error text repeats the bad field.
        let field = "é".repeat(450_000);
        let l = letter(
            format!("invalid event JSON: invalid type: string {field:?}, expected u64"),
            format!(r#"{{"user_id":"{field}"}}"#).into_bytes(),
        );
        for max in [1_000_000, 300_000, 8_192] {
            let b = bound_letter(&l, "events", max);
            assert!(b.size() <= max, "{} > {max}", b.size());
            let error = &b.headers[1].1;
            assert!(error.len() <= MAX_ERROR_HEADER_BYTES && error.ends_with('…'));
            assert!(error.starts_with("invalid event JSON: invalid type: string"));
            let marker = b.headers.iter().find(|(k, _)| *k == "eddy-truncated");
            if max > l.payload.len() + 2_048 {
                // With the error bounded, the whole payload fits: no marker.
                assert_eq!((marker, b.payload), (None, &l.payload[..]));
            } else {
                assert_eq!(marker.map(|(_, v)| v.as_str()), Some("900014"));
                assert!(l.payload.starts_with(b.payload));
                assert!(b.payload.len() > max - 2_048, "the payload keeps what fits");
            }
        }
    }

    #[test]
    fn the_partition_watch_reports_the_first_change() {
        // The topic's partitions as the broker reports them over time: unchanged, a failed
        // metadata call (not a change), then a partition added.
        let answers = Mutex::new(vec![
            Ok(vec![0, 1]),
            Err(KafkaIoError::Client {
                op: "fetch metadata",
                source: KafkaError::Canceled,
            }),
            Ok(vec![0, 1]),
            Ok(vec![0, 1, 2]),
        ]);
        let calls = Arc::new(Mutex::new(0usize));
        let c = calls.clone();
        let watch = PartitionWatch::spawn(
            "events".into(),
            vec![0, 1],
            Duration::from_millis(1),
            move || {
                *c.lock().unwrap() += 1;
                let mut a = answers.lock().unwrap();
                if a.is_empty() {
                    Ok(vec![0, 1, 2])
                } else {
                    a.remove(0)
                }
            },
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let changed = loop {
            if let Some(e) = watch.take() {
                break e;
            }
            assert!(Instant::now() < deadline, "no change reported");
            std::thread::park_timeout(Duration::from_millis(5));
        };
        assert!(changed.is_fatal());
        assert!(
            matches!(&changed, KafkaIoError::PartitionsChanged { topic, was, now }
                if topic == "events" && was == &[0, 1] && now == &[0, 1, 2]),
            "{changed}"
        );
        assert_eq!(
            *calls.lock().unwrap(),
            4,
            "stops watching after the first change"
        );

        // A deleted topic is a change too (no partitions).
        let gone =
            PartitionWatch::spawn("events".into(), vec![0], Duration::from_millis(1), || {
                Err(KafkaIoError::NoTopic("events".into()))
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        let changed = loop {
            if let Some(e) = gone.take() {
                break e;
            }
            assert!(Instant::now() < deadline, "no change reported");
            std::thread::park_timeout(Duration::from_millis(5));
        };
        assert!(matches!(&changed, KafkaIoError::PartitionsChanged { now, .. } if now.is_empty()));
    }

    #[test]
    fn truncate_text_respects_char_boundaries() {
        assert_eq!(truncate_text("abc", 3), "abc");
        assert_eq!(truncate_text("abcdef", 5), "ab…");
        // 'é' is 2 bytes: never cut inside it.
        let t = truncate_text("éééé", 6);
        assert!(t.len() <= 6 && t.ends_with('…'), "{t}");
        assert_eq!(t, "é…");
    }
}
