//! [`KafkaDeadLetters`]: the dead-letter producer, an [`EpochSink`] of [`DeadLetterBatch`]es.
//! Every letter is bounded to fit the topic ([`bound_letter`]); a letter the topic refuses for
//! good is logged, counted and skipped, never retried forever.

use super::{KafkaIoError, client};
use eddy_core::config::KafkaConfig;
use eddy_core::metrics::ReasonLabel;
use eddy_core::{Checkpoint, DeadLetter, DeadLetterBatch, Metrics};
use eddy_sinks::{EpochSink, SinkError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

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

/// Bounds `letter` for the dead-letter topic (written by the job whose outputs are under the
/// Redis prefix `output`: its output version, header `eddy-output`): the error header cut to
/// [`MAX_ERROR_HEADER_BYTES`], and the payload cut (with an `eddy-truncated: <original
/// length>` header) when the whole record would exceed `max_bytes` (the producer's
/// `message.max.bytes`), so that [`BoundedLetter::size`] `<= max_bytes` whenever `max_bytes`
/// leaves room for the headers (a few KB).
pub fn bound_letter<'a>(
    letter: &'a DeadLetter,
    source_topic: &str,
    output: &str,
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
            ("eddy-output", truncate_text(output, 256)),
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
    output: String,
    max_bytes: usize,
    metrics: Metrics,
}

impl KafkaDeadLetters {
    /// A producer for `cfg.dlq_topic` (acks=all, `message.max.bytes` =
    /// `cfg.dlq_max_message_bytes`), for the job writing the outputs under the Redis prefix
    /// `output` (several output versions share the dead-letter topic; [`late_before`] reads
    /// back its own job's letters only).
    pub fn new(cfg: &KafkaConfig, output: &str, metrics: Metrics) -> Result<Self, KafkaIoError> {
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
            output: output.to_owned(),
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
        let (source_topic, output, max_bytes) = (&self.source_topic, &self.output, self.max_bytes);
        self.runtime.block_on(async {
            let mut deliveries = Vec::with_capacity(batch.letters.len());
            for l in &batch.letters {
                let bounded = bound_letter(l, source_topic, output, max_bytes);
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

/// The records of `ranges` (`partition -> [from, to)` offsets of `cp.topic`) that were
/// dead-lettered as `late` before the restart by the job writing the outputs under the Redis
/// prefix `output`, read back from the dead-letter topic.
///
/// A restart re-reads from the resume offsets and judges the records again. Lateness depends
/// on each record's partition only ([`crate::source`]) while the partition counts in the
/// watermark; a partition that was idle met a watermark ahead of its own, which the restart
/// cannot know. The dead-letter topic does: every letter below the checkpoint's high offsets
/// is durable (the checkpoint waits for the dead-letter sink), and letters written after it
/// before the crash are read back too. Reads the whole dead-letter topic, up to its high
/// watermark at the call; its retention bounds the cost.
pub fn late_before(
    cfg: &KafkaConfig,
    output: &str,
    cp: &Checkpoint,
    ranges: &HashMap<i32, (i64, i64)>,
) -> Result<HashSet<(i32, i64)>, KafkaIoError> {
    let mut late = HashSet::new();
    if ranges.values().all(|(resume, high)| resume >= high) {
        return Ok(late);
    }
    let client_error = |op| move |source| KafkaIoError::Client { op, source };
    let consumer: BaseConsumer = client(cfg)
        .set("group.id", format!("{}-late-scan", cfg.group_id))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(client_error("dead-letter scan client"))?;
    let dlq_parts = super::topic_partitions(cfg, &cfg.dlq_topic)?;
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &dlq_parts {
        let (low, high) = consumer
            .fetch_watermarks(&cfg.dlq_topic, p, Duration::from_secs(10))
            .map_err(client_error("dead-letter watermarks"))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(&cfg.dlq_topic, p, Offset::Offset(low))
                .map_err(client_error("dead-letter assignment"))?;
        }
    }
    if ends.is_empty() {
        return Ok(late);
    }
    consumer
        .assign(&tpl)
        .map_err(client_error("dead-letter assign"))?;
    let header = |m: &BorrowedMessage<'_>, key: &str| -> Option<String> {
        let headers = m.headers()?;
        headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| std::str::from_utf8(h.value?).ok().map(str::to_owned))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(KafkaIoError::Timeout {
                op: "reading the dead-letter topic back",
            });
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(client_error("dead-letter poll"))?;
        if ends
            .get(&m.partition())
            .is_some_and(|&end| m.offset() + 1 >= end)
        {
            ends.remove(&m.partition());
        }
        // Another output version's letters judged lateness with its own settings and
        // watermark (letters of an eddy before versions carry no `eddy-output`).
        if header(&m, "eddy-reason").as_deref() != Some("late")
            || header(&m, "eddy-source-topic").as_deref() != Some(cp.topic.as_str())
            || header(&m, "eddy-output").is_some_and(|o| o != output)
        {
            continue;
        }
        let partition = header(&m, "eddy-source-partition").and_then(|v| v.parse::<i32>().ok());
        let offset = header(&m, "eddy-source-offset").and_then(|v| v.parse::<i64>().ok());
        if let (Some(partition), Some(offset)) = (partition, offset)
            && ranges
                .get(&partition)
                .is_some_and(|&(resume, high)| (resume..high).contains(&offset))
        {
            late.insert((partition, offset));
        }
    }
    Ok(late)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let b = bound_letter(&l, "events", "eddy", 1_000_000);
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
            let b = bound_letter(&l, "events", "eddy", max);
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
    fn truncate_text_respects_char_boundaries() {
        assert_eq!(truncate_text("abc", 3), "abc");
        assert_eq!(truncate_text("abcdef", 5), "ab…");
        // 'é' is 2 bytes: never cut inside it.
        let t = truncate_text("éééé", 6);
        assert!(t.len() <= 6 && t.ends_with('…'), "{t}");
        assert_eq!(t, "é…");
    }
}
