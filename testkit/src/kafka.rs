//! The broker side of pipeline tests (tansu on 127.0.0.1:9092, started by
//! `scripts/services up`): producing raw messages to chosen partitions, and reading back the
//! dead-letter topic.

use eddy_core::config::KafkaConfig;
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Largest message [`produce`] sends (bytes): room for oversized test messages.
pub const MAX_MESSAGE_BYTES: usize = 2_000_000;

/// Produces each `(partition, payload)` of `msgs` to `kafka.topic`, in order: each send is
/// acknowledged by every replica before the next, so a partition's offsets follow `msgs`.
pub fn produce<'a>(kafka: &KafkaConfig, msgs: impl IntoIterator<Item = (i32, &'a [u8])>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("acks", "all")
        .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
        .create()
        .expect("a kafka producer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        for (partition, payload) in msgs {
            producer
                .send(
                    FutureRecord::<(), [u8]>::to(&kafka.topic)
                        .partition(partition)
                        .payload(payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap_or_else(|e| panic!("produce to {}/{partition}: {e}", kafka.topic));
        }
    });
}

/// A dead letter as read back: its headers by name (`eddy-reason`, `eddy-source-partition`,
/// `eddy-source-offset`, …) and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Header values by name (lossy UTF-8; empty for a header without value).
    pub headers: BTreeMap<String, String>,
    /// The payload (empty if none).
    pub payload: Vec<u8>,
}

impl DeadLetter {
    /// The value of header `name`; panics if the letter lacks it.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("dead letter without header {name}: {:?}", self.headers))
    }
}

/// Every dead letter on partition 0 of `kafka.dlq_topic`, in topic order: reads until at least
/// `expect` arrived, then until nothing more comes for a second (30 s at most in all).
pub fn dead_letters(kafka: &KafkaConfig, expect: usize) -> Vec<DeadLetter> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("{}-reader", kafka.group_id))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a kafka consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&kafka.dlq_topic, 0, rdkafka::Offset::Beginning)
        .expect("a partition list");
    consumer
        .assign(&tpl)
        .expect("the dead-letter topic assigned");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline
        && (out.len() < expect || quiet_since.elapsed() < Duration::from_secs(1))
    {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            quiet_since = Instant::now();
            let headers = m.headers().expect("dead letters carry headers");
            out.push(DeadLetter {
                headers: headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or(&[]));
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect(),
                payload: m.payload().unwrap_or(&[]).to_vec(),
            });
        }
    }
    out
}
