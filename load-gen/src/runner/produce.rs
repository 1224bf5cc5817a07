//! The open-loop producer: message `i` is scheduled at `start + i / rate`, sent with its
//! scheduled time, and its acknowledgement is awaited in order on a task of its own, so a slow
//! broker shows as produce latency, never as a quietly lower rate. Probes are interleaved
//! every `probe_interval` when a query server watches for them.

use super::probe::{self, Probes};
use super::{RunConfig, RunError, kafka};
use crate::timeline::Timeline;
use crate::{Generated, Generator};
use eddy_core::Event;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type AckSender = tokio::sync::mpsc::UnboundedSender<(Instant, DeliveryFuture)>;

/// What the producer sent.
pub(super) struct Produced {
    /// Every valid event sent, with its generator index (0 for probes).
    pub valid: Vec<(u64, Event)>,
    /// Messages sent, probes included.
    pub produced: u64,
    /// Of which malformed.
    pub malformed: u64,
    /// Probes sent.
    pub probes: u64,
    /// Seconds from the start to the last acknowledgement.
    pub elapsed_secs: f64,
    /// Scheduled-to-acknowledged latency, µs.
    pub latency: Histogram<u64>,
}

/// A producer for `cfg`'s broker: all replicas acknowledge, `linger.ms` as configured.
pub(super) fn producer(cfg: &RunConfig) -> Result<FutureProducer, RunError> {
    ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("acks", "all")
        .set("linger.ms", cfg.linger_ms.to_string())
        .set("message.timeout.ms", "60000")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .map_err(kafka("producer"))
}

/// The generator of a run: with a rate, event times follow the wall clock.
pub(super) fn generator(cfg: &RunConfig) -> Generator {
    let mut gen_cfg = cfg.generator.clone();
    if cfg.rate > 0.0 {
        gen_cfg.start_ts_ms = eddy_core::now_ms();
        gen_cfg.events_per_sec = cfg.rate;
    }
    Generator::new(gen_cfg)
}

/// Produces until `cfg.events` or `cfg.duration`, then waits for every acknowledgement.
pub(super) async fn produce(
    cfg: &RunConfig,
    producer: FutureProducer,
    mut generator: Generator,
    start: Instant,
    timeline: &Arc<Mutex<Timeline>>,
    probes: &Probes,
) -> Result<Produced, RunError> {
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("valid sigfig")));
    let (ack_tx, ack_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, DeliveryFuture)>();
    let acks = tokio::spawn(await_acks(ack_rx, latency.clone(), timeline.clone()));
    let total = cfg
        .events
        .map(|e| e as f64)
        .or(cfg.duration.map(|d| d.as_secs_f64()));

    let mut valid: Vec<(u64, Event)> = Vec::new();
    let (mut produced, mut malformed, mut probes_sent) = (0u64, 0u64, 0u64);
    let mut next_probe = start;
    let mut last_progress = start;
    loop {
        let n = generator.generated();
        if cfg.events.is_some_and(|e| n >= e) || cfg.duration.is_some_and(|d| start.elapsed() >= d)
        {
            break;
        }
        let scheduled = if cfg.rate > 0.0 {
            start + Duration::from_secs_f64(n as f64 / cfg.rate)
        } else {
            Instant::now()
        };
        if scheduled > Instant::now() {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        if cfg.query_url.is_some() && Instant::now() >= next_probe {
            probes_sent += 1;
            let (key, json, event) = probe::message(cfg.generator.run_id, probes_sent);
            valid.push((0, event));
            let sent_at = Instant::now();
            send(
                &producer,
                &cfg.topic,
                &key,
                json.as_bytes(),
                sent_at,
                &ack_tx,
            )
            .await?;
            probes.lock().expect("not poisoned").push(sent_at);
            timeline.lock().expect("not poisoned").sent(sent_at);
            produced += 1;
            next_probe += cfg.probe_interval;
        }
        let msg = generator.next_message();
        let id = generator.generated();
        match &msg {
            Generated::Valid(e, _) => valid.push((id, *e)),
            Generated::Malformed(_) => malformed += 1,
        }
        let key = id.to_string();
        send(&producer, &cfg.topic, &key, msg.bytes(), scheduled, &ack_tx).await?;
        timeline.lock().expect("not poisoned").sent(scheduled);
        produced += 1;
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            let done = match (cfg.events, total) {
                (Some(e), _) => n as f64 / e as f64,
                (None, Some(d)) => secs / d,
                _ => 0.0,
            };
            let last = timeline.lock().expect("not poisoned").points();
            let (acked, lag) = last
                .iter()
                .rev()
                .nth(1)
                .map_or((0, None), |p| (p.acked, p.consumer_lag));
            eprint!(
                "\r{} {produced} msgs, {secs:.0} s, {:.0} msg/s avg, {acked} acked/s{}   ",
                progress_bar(done),
                produced as f64 / secs,
                lag.map(|l| format!(", lag {l}")).unwrap_or_default()
            );
        }
    }
    drop(ack_tx);
    let failures = acks.await.map_err(|e| RunError::Http(e.to_string()))?;
    // Throughput counts until the broker acknowledged the last message.
    let elapsed_secs = start.elapsed().as_secs_f64();
    if failures > 0 {
        return Err(RunError::Kafka {
            op: "deliver",
            source: KafkaError::Canceled,
        })
        .inspect_err(|_| eprintln!("{failures} messages were not acknowledged"));
    }
    let latency = latency.lock().expect("not poisoned").clone();
    Ok(Produced {
        valid,
        produced,
        malformed,
        probes: probes_sent,
        elapsed_secs,
        latency,
    })
}

/// Awaits acknowledgements in order, recording their latency; returns the failures.
async fn await_acks(
    mut acks: tokio::sync::mpsc::UnboundedReceiver<(Instant, DeliveryFuture)>,
    latency: Arc<Mutex<Histogram<u64>>>,
    timeline: Arc<Mutex<Timeline>>,
) -> u64 {
    let mut failures = 0u64;
    while let Some((scheduled, delivery)) = acks.recv().await {
        match delivery.await {
            Ok(Ok(_)) => {
                let now = Instant::now();
                let us = now.saturating_duration_since(scheduled).as_micros() as u64;
                latency.lock().expect("not poisoned").record(us.max(1)).ok();
                timeline.lock().expect("not poisoned").acked(scheduled, now);
            }
            _ => failures += 1,
        }
    }
    failures
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    scheduled: Instant,
    acks: &AckSender,
) -> Result<(), RunError> {
    loop {
        match producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
            Ok(delivery) => {
                let _ = acks.send((scheduled, delivery));
                return Ok(());
            }
            // A full local queue is the broker falling behind: wait, and let it show as latency.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((source, _)) => {
                return Err(RunError::Kafka {
                    op: "produce",
                    source,
                });
            }
        }
    }
}

/// `[#####.....] 50%`.
fn progress_bar(done: f64) -> String {
    let filled = (done.clamp(0.0, 1.0) * 20.0).round() as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        done.clamp(0.0, 1.0) * 100.0
    )
}
