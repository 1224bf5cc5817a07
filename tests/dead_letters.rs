//! Dead letters against the real broker (tansu on 127.0.0.1:9092, started by
//! `scripts/services up`): one oversized bad message costs one bounded dead letter, a letter the
//! dead-letter topic refuses for good is counted and skipped, and in both cases the pipeline
//! keeps counting (its checkpoint passes the bad message).

use eddy::pipeline::{Mode, RunOptions, run};
use eddy_core::metrics::ReasonLabel;
use eddy_core::{Config, Metrics};
use eddy_storage::CheckpointRow;
use eddy_testkit::kafka::{dead_letters, produce};
use eddy_testkit::stores::ch_fetch;
use eddy_testkit::wait::wait_until;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// 2026-01-01T00:00:00Z: event times of the valid events.
const T0: i64 = 1_767_225_600_000;
/// Valid events produced after the bad message(s).
const VALID: i64 = 20;

/// A fresh topic pair, consumer group, Redis prefix and ClickHouse database for `name`.
fn config(name: &str) -> Config {
    let mut cfg = eddy_testkit::pipeline::fresh_config(&format!("dlq_{name}"));
    cfg.kafka.idle_timeout_ms = 300;
    cfg.pipeline.window_ms = 10_000;
    cfg.pipeline.lateness_ms = 2_000;
    cfg.pipeline.checkpoint_ms = 100;
    cfg.sink.max_backoff_ms = 200;
    eddy_testkit::block_on(eddy::kafka::create_topics(&cfg.kafka)).unwrap();
    cfg
}

/// High offset of partition 0 in the latest checkpoint.
fn checkpoint_high(cfg: &Config) -> Option<i64> {
    let topic = cfg.kafka.topic.as_str();
    let rows: Vec<CheckpointRow> = ch_fetch(
        &cfg.clickhouse,
        eddy_storage::LATEST_CHECKPOINT_QUERY,
        |q| q.bind(topic).bind(topic),
    );
    rows.iter()
        .find(|r| r.partition == 0)
        .map(|r| r.high_offset)
}

/// Produces `msgs` to partition 0 of the source topic, in order.
fn produce_all(cfg: &Config, msgs: &[Vec<u8>]) {
    produce(&cfg.kafka, msgs.iter().map(|m| (0, m.as_slice())));
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
    let opts = RunOptions::in_process(cfg);
    let (stop, metrics) = (opts.stop.clone(), opts.metrics.clone());
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
        wait_until(
            "the checkpoint to pass every message",
            Duration::from_secs(60),
            || checkpoint_high(cfg) == Some(n),
        );
        assert_eq!(self.metrics.events_in.get(), VALID as u64);
    }
}

#[test]
fn an_oversized_bad_message_costs_one_bounded_dead_letter() {
    let cfg = config("oversized");
    // ~900 KB: with the error text quoting the field whole, the letter was ~1.8 MB, above the
    // producer's 1 MB limit, and retried forever.
    let big = long_user_id(900_000);
    let mut msgs = vec![big.clone()];
    msgs.extend(valid_events());
    produce_all(&cfg, &msgs);
    let p = start(&cfg);
    p.wait_past(&cfg, msgs.len() as i64);
    let letters = dead_letters(&cfg.kafka, 1);
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
    produce_all(&cfg, &msgs);
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
    let letters = dead_letters(&cfg.kafka, 1);
    assert_eq!(
        letters.len(),
        1,
        "the small letter of the same batch is written"
    );
    assert_eq!(letters[0].payload, b"{not json");
    assert_eq!(letters[0].headers["eddy-source-offset"], "1");
    p.stop();
}
