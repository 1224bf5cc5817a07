//! Dead letters against the real broker (tansu on 127.0.0.1:9092, started by
//! `scripts/services up`): one oversized bad message costs one bounded dead letter, a letter the
//! dead-letter topic refuses for good is counted and skipped, and in both cases the pipeline
//! keeps counting (its checkpoint passes the bad message).

use eddy::pipeline::{Mode, RunOptions, run};
use eddy_core::metrics::ReasonLabel;
use eddy_core::{Config, Metrics};
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// 2026-01-01T00:00:00Z: event times of the valid events.
const T0: i64 = 1_767_225_600_000;
/// Valid events produced after the bad message(s).
const VALID: i64 = 20;

/// Waits for `pred` to hold, polling, or panics after `secs` with `what`.
fn wait_for(secs: u64, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh topic pair, consumer group, Redis prefix and ClickHouse database for `name`.
fn config(name: &str) -> Config {
    eddy_testkit::services(&[]);
    let unique = format!("{name}_{}_{}", std::process::id(), eddy_core::now_ms());
    let mut cfg = Config::default();
    cfg.kafka.topic = format!("dlq_{unique}");
    cfg.kafka.dlq_topic = format!("dlq_{unique}.dlq");
    cfg.kafka.group_id = format!("dlq_{unique}");
    cfg.kafka.partitions = 1;
    cfg.kafka.idle_timeout_ms = 300;
    cfg.pipeline.window_ms = 10_000;
    cfg.pipeline.lateness_ms = 2_000;
    cfg.pipeline.checkpoint_ms = 100;
    cfg.pipeline.workers = 1;
    cfg.similarity.enabled = false;
    cfg.sink.max_backoff_ms = 200;
    cfg.redis.prefix = format!("dlq_{unique}");
    cfg.clickhouse.database = format!("eddy_dlq_{name}");
    ch(
        &cfg,
        &format!("DROP DATABASE IF EXISTS {}", cfg.clickhouse.database),
    );
    eddy_sinks::apply_schema(&cfg.clickhouse, None).unwrap();
    rt().block_on(eddy::kafka::create_topics(&cfg.kafka))
        .unwrap();
    cfg
}

/// Runs a ClickHouse statement (test-authored SQL only) and returns JSONEachRow rows.
fn ch(cfg: &Config, sql: &str) -> Vec<serde_json::Value> {
    let body = rt().block_on(async {
        reqwest::Client::new()
            .post(&cfg.clickhouse.url)
            .body(format!("{sql} FORMAT JSONEachRow"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("clickhouse said {body}: {e}")))
        .collect()
}

/// High offset of partition 0 in the latest checkpoint.
fn checkpoint_high(cfg: &Config) -> Option<i64> {
    let db = &cfg.clickhouse.database;
    let rows = ch(
        cfg,
        &format!(
            "SELECT high_offset FROM {db}.source_checkpoints \
             WHERE version = (SELECT max(version) FROM {db}.source_checkpoints) AND partition = 0"
        ),
    );
    let v = &rows.first()?["high_offset"];
    Some(match v {
        serde_json::Value::String(s) => s.parse().unwrap(),
        v => v.as_i64().unwrap(),
    })
}

fn produce(cfg: &Config, msgs: &[Vec<u8>]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("acks", "all")
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    rt().block_on(async {
        for m in msgs {
            producer
                .send(
                    FutureRecord::<(), [u8]>::to(&cfg.kafka.topic)
                        .partition(0)
                        .payload(m),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    });
}

/// Valid views, 100 ms apart from [`T0`].
fn valid_events() -> Vec<Vec<u8>> {
    (0..VALID)
        .map(|i| {
            format!(
                r#"{{"event_id":"v{i}","ts":{},"user_id":{i},"campaign_id":1,"event_type":"view"}}"#,
                T0 + i * 100
            )
            .into_bytes()
        })
        .collect()
}

/// A view whose `user_id` is a string of `len` bytes (bad_json, and serde's error quotes it).
fn long_user_id(len: usize) -> Vec<u8> {
    format!(
        r#"{{"event_id":"big","ts":{T0},"user_id":"{}","campaign_id":1,"event_type":"view"}}"#,
        "u".repeat(len)
    )
    .into_bytes()
}

struct Pipeline {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
    metrics: Metrics,
}

fn start(cfg: &Config) -> Pipeline {
    let stop = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::new();
    let opts = RunOptions {
        config: cfg.clone(),
        timely: timely::Config::process(cfg.pipeline.workers),
        stop: stop.clone(),
        metrics: metrics.clone(),
    };
    let handle = std::thread::spawn(move || run(opts, Mode::Kafka).expect("pipeline runs"));
    Pipeline {
        stop,
        handle,
        metrics,
    }
}

impl Pipeline {
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("pipeline thread");
    }

    /// Waits until a durable checkpoint covers `n` records of partition 0 and every valid
    /// event was counted: nothing stalls behind the bad message.
    fn wait_past(&self, cfg: &Config, n: i64) {
        wait_for(60, "the checkpoint to pass every message", || {
            checkpoint_high(cfg) == Some(n)
        });
        assert_eq!(self.metrics.events_in.get(), VALID as u64);
    }
}

/// A dead letter as read back: headers by name, and the payload.
struct Letter {
    headers: BTreeMap<String, String>,
    payload: Vec<u8>,
}

/// Every dead letter on the DLQ topic: reads until `expect` arrived, then until nothing more
/// comes for a second.
fn dead_letters(cfg: &Config, expect: usize) -> Vec<Letter> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", format!("{}-reader", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&cfg.kafka.dlq_topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline
        && (out.len() < expect || quiet_since.elapsed() < Duration::from_secs(1))
    {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            quiet_since = Instant::now();
            let headers = m.headers().expect("dead letters carry headers");
            out.push(Letter {
                headers: headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or(&[])).into_owned(),
                        )
                    })
                    .collect(),
                payload: m.payload().unwrap_or(&[]).to_vec(),
            });
        }
    }
    out
}

#[test]
fn an_oversized_bad_message_costs_one_bounded_dead_letter() {
    let cfg = config("oversized");
    // ~900 KB: with the error text quoting the field whole, the letter was ~1.8 MB, above the
    // producer's 1 MB limit, and retried forever.
    let big = long_user_id(900_000);
    let mut msgs = vec![big.clone()];
    msgs.extend(valid_events());
    produce(&cfg, &msgs);
    let p = start(&cfg);
    p.wait_past(&cfg, msgs.len() as i64);
    let letters = dead_letters(&cfg, 1);
    assert_eq!(letters.len(), 1, "one dead letter");
    let l = &letters[0];
    assert_eq!(l.headers["eddy-reason"], "bad_json");
    assert_eq!(l.headers["eddy-source-offset"], "0");
    assert!(l.headers["eddy-error"].len() <= eddy::kafka::MAX_ERROR_HEADER_BYTES);
    let size = l.payload.len() + l.headers.values().map(String::len).sum::<usize>();
    assert!(size <= cfg.kafka.dlq_max_message_bytes, "{size} bytes");
    // The whole payload fits once the error is bounded; a marker says when it did not.
    match l.headers.get("eddy-truncated") {
        None => assert_eq!(l.payload, big),
        Some(n) => {
            assert_eq!(n, &big.len().to_string());
            assert!(big.starts_with(&l.payload));
        }
    }
    assert_eq!(
        p.metrics
            .dead_letters_dropped
            .get_or_create(&ReasonLabel {
                reason: "bad_json".into()
            })
            .get(),
        0
    );
    p.stop();
}

#[test]
fn a_letter_refused_for_good_is_counted_and_skipped() {
    let mut cfg = config("refused");
    // librdkafka's smallest limit: a letter whose bounded error alone exceeds it cannot be
    // produced at all (MessageSizeTooLarge, permanent); truncated payloads are written.
    cfg.kafka.dlq_max_message_bytes = 1_000;
    let mut msgs = vec![
        long_user_id(5_000),
        b"{not json".to_vec(),
        long_user_id(3_000),
    ];
    msgs.extend(valid_events());
    produce(&cfg, &msgs);
    let p = start(&cfg);
    p.wait_past(&cfg, msgs.len() as i64);
    let dropped = p
        .metrics
        .dead_letters_dropped
        .get_or_create(&ReasonLabel {
            reason: "bad_json".into(),
        })
        .get();
    assert_eq!(dropped, 2, "both long letters refused, counted and skipped");
    let letters = dead_letters(&cfg, 1);
    assert_eq!(
        letters.len(),
        1,
        "the small letter of the same batch is written"
    );
    assert_eq!(letters[0].payload, b"{not json");
    assert_eq!(letters[0].headers["eddy-source-offset"], "1");
    p.stop();
}
