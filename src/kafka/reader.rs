//! [`KafkaReader`]: the partitions assigned to one worker, with a partition watcher and a lag
//! watcher on threads of their own (no metadata or watermark call on a worker thread).

use super::{KafkaIoError, client};
use crate::reader::{PartitionReader, Record};
use eddy_core::Metrics;
use eddy_core::config::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

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
    topic: String,
    partitions: Vec<i32>,
    start: HashMap<i32, i64>,
    at_end: HashSet<i32>,
    metrics: Metrics,
    positions: HashMap<i32, i64>,
    /// Kafka timestamp (ms) of the last record read, per partition (for the lag in time).
    last_timestamps: HashMap<i32, i64>,
    watch: PartitionWatch,
    highs: HighWatermarks,
}

impl KafkaReader {
    /// Assigns `partitions`, each starting at `start[p]` (or the beginning of the log);
    /// `topic_partitions` are all the topic's partitions as found at start-up (the watcher
    /// compares with them). Makes no broker call: a broker that does not answer shows in
    /// [`PartitionReader::poll`], where it is retried, never as a failed start.
    pub fn new(
        cfg: &KafkaConfig,
        topic_partitions: Vec<i32>,
        partitions: Vec<i32>,
        start: HashMap<i32, i64>,
        metrics: Metrics,
    ) -> Result<Self, KafkaIoError> {
        Self::with_partition_check(
            cfg,
            topic_partitions,
            partitions,
            start,
            metrics,
            PARTITION_CHECK_INTERVAL,
        )
    }

    /// [`KafkaReader::new`], checking the topic's partitions every `every`.
    pub fn with_partition_check(
        cfg: &KafkaConfig,
        topic_partitions: Vec<i32>,
        partitions: Vec<i32>,
        start: HashMap<i32, i64>,
        metrics: Metrics,
        every: Duration,
    ) -> Result<Self, KafkaIoError> {
        let list_cfg = cfg.clone();
        let watch = PartitionWatch::spawn(cfg.topic.clone(), topic_partitions, every, move || {
            super::topic_partitions(&list_cfg, &list_cfg.topic)
        });
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
            highs: HighWatermarks::spawn(cfg, partitions.clone())?,
            partitions,
            positions: starts.clone(),
            last_timestamps: HashMap::new(),
            start: starts,
            at_end: HashSet::new(),
            metrics,
            watch,
        })
    }

    /// Consumer lag per partition from the latest high watermarks (fetched off this thread),
    /// in records and in time (age of the last record read while behind).
    fn update_lag(&self) {
        let now = eddy_core::now_ms();
        for &p in &self.partitions {
            if let Some(high) = self.highs.get(p) {
                let pos = self.positions.get(&p).copied().unwrap_or(0);
                let label = eddy_core::metrics::PartitionLabel { partition: p };
                let lag = (high - pos).max(0);
                self.metrics.consumer_lag.get_or_create(&label).set(lag);
                let age = match (lag, self.last_timestamps.get(&p)) {
                    (0, _) => Some(0),
                    (_, Some(ts)) => Some(now.saturating_sub(*ts).max(0)),
                    (_, None) => None,
                };
                if let Some(age) = age {
                    self.metrics.consumer_lag_ms.get_or_create(&label).set(age);
                }
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
                    let timestamp_ms = m.timestamp().to_millis();
                    if let Some(ts) = timestamp_ms {
                        self.last_timestamps.insert(m.partition(), ts);
                    }
                    f(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        payload: m.payload().unwrap_or(&[]),
                        timestamp_ms,
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
    fn pause(&mut self, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(partition, error = %e, "cannot pause a partition; its records are dropped instead");
        }
    }
    fn at_end(&self, partition: i32) -> bool {
        self.at_end.contains(&partition)
    }
    fn is_fatal(error: &KafkaIoError) -> bool {
        error.is_fatal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

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
}
