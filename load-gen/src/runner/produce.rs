//! The open-loop producer: message `i` is scheduled at `start + i / rate`, sent with its
//! scheduled time, and its acknowledgement is awaited in order on a task of its own, so a slow
//! broker shows as produce latency, never as a quietly lower rate. Probes are interleaved
//! every `probe_interval` when a query server watches for them.
//!
//! A broker outage (stopped, restarting, overloaded) costs latency, not the run: the producer
//! keeps undelivered messages queued for [`DELIVERY_TIMEOUT`], and a message the broker
//! refused (e.g. answered with an error while shutting down) is sent again, with backoff,
//! until it is acknowledged or [`DELIVERY_TIMEOUT`] after its scheduled time has passed.

use super::probe::{self, PaneProbes, Probes};
use super::verify::Sent;
use super::{RunConfig, RunError, kafka};
use crate::timeline::Timeline;
use crate::{Generated, Generator};
use eddy_core::Event;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A message's scheduled time, its freshness probe number if it is one, and its delivery.
type Ack = (Instant, Option<usize>, DeliveryFuture);
type AckSender = tokio::sync::mpsc::UnboundedSender<Ack>;

/// How long a message may take to be acknowledged, from its scheduled time, through broker
/// outages and re-sends, before the run fails.
pub(super) const DELIVERY_TIMEOUT: Duration = Duration::from_secs(300);
/// A similarity probe is sent only for a pane that can close at least this long before the
/// run ends (the watermark needs events past the pane's end plus the lateness in every
/// partition, and stops with them).
const PANE_PROBE_MARGIN_MS: i64 = 2_000;
/// First pause before re-sending a refused message; doubles up to 5 s.
const FIRST_RESEND_BACKOFF: Duration = Duration::from_millis(100);

/// What the producer sent.
pub(super) struct Produced {
    /// Every valid event sent, with how a dead letter names it.
    pub valid: Vec<(Sent, Event)>,
    /// Messages sent, probes included.
    pub produced: u64,
    /// Of which malformed.
    pub malformed: u64,
    /// Probes sent.
    pub probes: u64,
    /// Similarity probes sent (five messages each).
    pub pane_probes: u64,
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
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        .set("queue.buffering.max.messages", "200000")
        .create()
        .map_err(kafka("producer"))
}

/// The generator of a run: with an event span, event times spread over the span ending now;
/// else, with a rate, event times follow the wall clock.
pub(super) fn generator(cfg: &RunConfig) -> Generator {
    let mut gen_cfg = cfg.generator.clone();
    match (cfg.event_span, cfg.events) {
        (Some(span), Some(events)) if span.as_secs_f64() > 0.0 => {
            gen_cfg.start_ts_ms = eddy_core::now_ms() - span.as_millis() as i64;
            gen_cfg.events_per_sec = events as f64 / span.as_secs_f64();
        }
        _ if cfg.rate > 0.0 => {
            gen_cfg.start_ts_ms = eddy_core::now_ms();
            gen_cfg.events_per_sec = cfg.rate;
        }
        _ => {}
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
    pane_probes: &PaneProbes,
) -> Result<Produced, RunError> {
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("valid sigfig")));
    let (ack_tx, ack_rx) = tokio::sync::mpsc::unbounded_channel::<Ack>();
    let record = Recorder {
        latency: latency.clone(),
        timeline: timeline.clone(),
        probes: probes.clone(),
    };
    let acks = tokio::spawn(await_acks(
        producer.clone(),
        cfg.topic.clone(),
        ack_rx,
        record,
    ));
    let total = cfg
        .events
        .map(|e| e as f64)
        .or(cfg.duration.map(|d| d.as_secs_f64()));

    let mut valid: Vec<(Sent, Event)> = Vec::new();
    let (mut produced, mut malformed, mut probes_sent) = (0u64, 0u64, 0u64);
    let mut next_probe = start;
    let (mut last_pane, mut pane_probes_sent) = (None, 0u64);
    // Similarity probes only for panes that close while events still flow (the watermark
    // stops with them): when the run ends, in wall-clock ms.
    let started_ms = eddy_core::now_ms();
    let ends_ms = match (cfg.duration, cfg.events) {
        (Some(d), _) => Some(started_ms + d.as_millis() as i64),
        (None, Some(e)) if cfg.rate > 0.0 => Some(started_ms + (e as f64 / cfg.rate * 1e3) as i64),
        _ => None,
    };
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
            let (key, json, event) = probe::message(
                cfg.generator.run_id,
                probes_sent,
                generator.next_nominal_ts(),
            );
            valid.push((Sent::probe(&json), event));
            let msg = (key.as_str(), json.as_str());
            send_now(&producer, &cfg.topic, msg, &ack_tx, timeline, Some(probes)).await?;
            produced += 1;
            next_probe += cfg.probe_interval;
        }
        // A similarity probe at the start of every pane (event times follow the wall clock).
        let now_ms = generator.next_nominal_ts();
        let pane = now_ms.div_euclid(cfg.window_ms.max(1));
        let closes_at = (pane + 1) * cfg.window_ms + cfg.lateness_ms;
        if cfg.pane_probes
            && last_pane != Some(pane)
            && ends_ms.is_none_or(|end| closes_at + PANE_PROBE_MARGIN_MS < end)
        {
            last_pane = Some(pane);
            let (messages, p) =
                probe::pane_messages(cfg.generator.run_id, pane_probes_sent, now_ms, closes_at);
            for (key, json, event) in messages {
                valid.push((Sent::probe(&json), event));
                let msg = (key.as_str(), json.as_str());
                send_now(&producer, &cfg.topic, msg, &ack_tx, timeline, None).await?;
                produced += 1;
            }
            pane_probes.lock().expect("not poisoned").push(p);
            pane_probes_sent += 1;
        }
        let msg = generator.next_message();
        let id = generator.generated();
        match &msg {
            Generated::Valid(e, _) => valid.push((Sent::Generated(id), *e)),
            Generated::Malformed(_) => malformed += 1,
        }
        let key = id.to_string();
        send(
            &producer,
            &cfg.topic,
            &key,
            msg.bytes(),
            (scheduled, None),
            &ack_tx,
        )
        .await?;
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
        pane_probes: pane_probes_sent,
        elapsed_secs,
        latency,
    })
}

/// Sends a probe message `(key, json)` now (scheduled = now) and counts it in the timeline;
/// a freshness probe is added to `probes` (before it is sent: its acknowledgement finds it).
async fn send_now(
    producer: &FutureProducer,
    topic: &str,
    (key, json): (&str, &str),
    acks: &AckSender,
    timeline: &Arc<Mutex<Timeline>>,
    probes: Option<&Probes>,
) -> Result<(), RunError> {
    let sent = Instant::now();
    let probe = probes.map(|p| {
        let mut p = p.lock().expect("not poisoned");
        p.push(probe::Probe { sent, acked: None });
        p.len() - 1
    });
    send(producer, topic, key, json.as_bytes(), (sent, probe), acks).await?;
    timeline.lock().expect("not poisoned").sent(sent);
    Ok(())
}

/// Awaits acknowledgements in order, recording their latency; a refused message is handed to
/// a re-send task of its own ([`resend`]), so the acknowledgements behind it are not held up.
/// Returns the messages never acknowledged.
async fn await_acks(
    producer: FutureProducer,
    topic: String,
    mut acks: tokio::sync::mpsc::UnboundedReceiver<Ack>,
    record: Recorder,
) -> u64 {
    let mut failures = 0u64;
    let mut resends = Vec::new();
    while let Some((scheduled, probe, delivery)) = acks.recv().await {
        match delivery.await {
            Ok(Ok(_)) => record.acked(scheduled, probe),
            Ok(Err((error, msg))) => {
                let (producer, topic, record) = (producer.clone(), topic.clone(), record.clone());
                resends.push(tokio::spawn(async move {
                    let ok = resend(producer, topic, scheduled, error, msg).await;
                    if ok {
                        record.acked(scheduled, probe);
                    }
                    ok
                }));
            }
            // The producer was dropped with the message in its queue.
            Err(_) => failures += 1,
        }
    }
    if !resends.is_empty() {
        eprintln!(
            "\n{} messages refused by the broker, sent again",
            resends.len()
        );
    }
    for r in resends {
        if !matches!(r.await, Ok(true)) {
            failures += 1;
        }
    }
    failures
}

/// Records acknowledgements: scheduled-to-acknowledged latency, the timeline, and when each
/// freshness probe was acknowledged.
#[derive(Clone)]
struct Recorder {
    latency: Arc<Mutex<Histogram<u64>>>,
    timeline: Arc<Mutex<Timeline>>,
    probes: Probes,
}

impl Recorder {
    /// The message scheduled at `scheduled` (freshness probe `probe`, if one) is
    /// acknowledged now.
    fn acked(&self, scheduled: Instant, probe: Option<usize>) {
        let now = Instant::now();
        if let Some(i) = probe {
            self.probes.lock().expect("not poisoned")[i].acked = Some(now);
        }
        let us = now.saturating_duration_since(scheduled).as_micros() as u64;
        self.latency
            .lock()
            .expect("not poisoned")
            .record(us.max(1))
            .ok();
        self.timeline
            .lock()
            .expect("not poisoned")
            .acked(scheduled, now);
    }
}

/// Sends `msg` again (the broker refused it with `error`) until it is acknowledged (true) or
/// [`DELIVERY_TIMEOUT`] after `scheduled` has passed (false). A refused message was not
/// written (the broker answered with an error), so sending it again does not duplicate it.
async fn resend(
    producer: FutureProducer,
    topic: String,
    scheduled: Instant,
    mut error: KafkaError,
    msg: OwnedMessage,
) -> bool {
    let mut backoff = FIRST_RESEND_BACKOFF;
    let deadline = scheduled + DELIVERY_TIMEOUT;
    loop {
        if Instant::now() >= deadline {
            eprintln!("a message was never acknowledged: {error}");
            return false;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic);
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        if let Some(payload) = msg.payload() {
            record = record.payload(payload);
        }
        let delivery = match producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((e, _)) => {
                error = e;
                continue;
            }
        };
        match delivery.await {
            Ok(Ok(_)) => return true,
            Ok(Err((e, _))) => error = e,
            Err(_) => return false,
        }
    }
}

/// Sends a message scheduled at `scheduled` (freshness probe `probe`, if one), handing its
/// delivery to the acknowledgement task.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    (scheduled, probe): (Instant, Option<usize>),
    acks: &AckSender,
) -> Result<(), RunError> {
    loop {
        match producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
            Ok(delivery) => {
                let _ = acks.send((scheduled, probe, delivery));
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

#[cfg(test)]
mod tests {
    use super::super::{RunConfig, run};
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::net::TcpListener;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// A private broker (tansu, as `scripts/services` runs it) on its own port and data
    /// directory; killed when dropped.
    struct Broker {
        child: Child,
        port: u16,
    }

    impl Broker {
        fn start(dir: &Path, port: u16) -> Self {
            // The broker `scripts/services` builds (and installs first if it is missing).
            let services = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services");
            let out = Command::new(&services)
                .arg("tansu-bin")
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .expect("scripts/services runs");
            assert!(out.status.success(), "scripts/services tansu-bin failed");
            let bin = String::from_utf8(out.stdout).expect("a path");
            let bin = bin.trim();
            let url = format!("tcp://127.0.0.1:{port}");
            let child = Command::new(bin)
                .args(["broker", "--listener-url", &url])
                .args(["--advertised-listener-url", &url])
                .args(["--storage-engine", "sqlite://tansu.db"])
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("tansu (scripts/services installs it)");
            let broker = Self { child, port };
            wait("the broker's port", Duration::from_secs(30), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            broker
        }

        /// SIGTERM, as `scripts/services` stops it; waits for the exit.
        fn stop(mut self) {
            let pid = self.child.id();
            let ok = Command::new("sh")
                .args(["-c", &format!("kill -TERM {pid}")])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -TERM {pid}");
            let child = &mut self.child;
            wait("the broker to exit", Duration::from_secs(60), || {
                child.try_wait().unwrap().is_some()
            });
        }

        fn brokers(&self) -> String {
            format!("127.0.0.1:{}", self.port)
        }
    }

    impl Drop for Broker {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn wait(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !ready() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }

    /// Records on `topic` (sum of the partitions' high watermarks), if the broker answers.
    fn records(brokers: &str, topic: &str, partitions: i32) -> Option<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .ok()?;
        (0..partitions)
            .map(|p| {
                let (_, high) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(5))
                    .ok()?;
                Some(high)
            })
            .sum()
    }

    /// A run of 8 s at 1000 messages/s to `topic`, without verification.
    fn run_config(brokers: &str, topic: &str) -> RunConfig {
        RunConfig {
            event_span: None,
            brokers: brokers.into(),
            topic: topic.into(),
            dlq_topic: format!("{topic}.dlq"),
            rate: 1000.0,
            events: None,
            duration: Some(Duration::from_secs(8)),
            generator: crate::GenConfig::default(),
            query_url: None,
            metrics_url: None,
            probe_interval: Duration::from_secs(1),
            linger_ms: 5,
            window_ms: 10_000,
            lateness_ms: 2_000,
            pane_probes: false,
            sliding_ms: 60_000,
            verify: false,
            verify_timeout: Duration::from_secs(10),
        }
    }

    /// A private broker in a fresh directory, and an admin client on it.
    fn fresh_broker(name: &str) -> (Broker, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "load_gen_{name}_{}_{}",
            std::process::id(),
            eddy_core::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        (Broker::start(&dir, port), dir)
    }

    /// Creates `topic` with `partitions` on `brokers`.
    fn create_topic(rt: &tokio::runtime::Runtime, brokers: &str, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .unwrap();
        let created = rt
            .block_on(admin.create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
            .unwrap();
        assert!(created.iter().all(Result::is_ok), "{created:?}");
    }

    /// verify reads the late set again on a mismatch: a `late` dead letter written after the
    /// check started (as the pipeline does when it is still draining a backlog) still takes
    /// its event out of the expected totals. Without the re-read, the check keeps expecting the
    /// event and fails at its timeout. (The query server's address is closed: with the event
    /// expected, every round is a mismatch; once it is known late, nothing is left to ask.)
    #[test]
    fn verify_reads_late_letters_written_after_it_started() {
        let (broker, dir) = fresh_broker("verify_late");
        let brokers = broker.brokers();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut cfg = run_config(&brokers, "late");
        create_topic(&rt, &brokers, &cfg.dlq_topic, 1);
        // A query server that drops every connection: while the event is expected, each round
        // of the check is a mismatch; a first connection means the late set was read once.
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        cfg.query_url = Some(format!("http://{}", server.local_addr().unwrap()));
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        std::thread::spawn(move || {
            loop {
                match server.accept() {
                    Ok((conn, _)) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        drop(conn);
                    }
                    Err(_) => std::thread::park_timeout(Duration::from_millis(10)),
                }
            }
        });
        cfg.verify_timeout = Duration::from_secs(30);
        let g = &cfg.generator;
        let event_id = format!("{}-{}-1", g.run_id, g.seed);
        let event = eddy_core::Event {
            ts_ms: eddy_core::now_ms(),
            user_id: 1,
            campaign_id: 2,
            event_type: eddy_core::EventType::View,
            amount_micros: None,
        };
        let (dlq, check_cfg) = (cfg.dlq_topic.clone(), cfg.clone());
        let checking = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(super::super::verify::check(
                    &check_cfg,
                    vec![(super::Sent::Generated(1), event)],
                ))
        });
        wait("the check's first query", Duration::from_secs(30), || {
            asked.load(Ordering::SeqCst) > 0 || checking.is_finished()
        });
        // The letter arrives after the check read the (empty) dead-letter topic once.
        let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        let payload = format!(r#"{{"event_id":"{event_id}"}}"#);
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "eddy-reason",
            value: Some("late"),
        });
        producer
            .send(
                rdkafka::producer::BaseRecord::to(&dlq)
                    .key("0:0")
                    .payload(&payload)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
        let ruled_late = checking
            .join()
            .unwrap()
            .expect("verified once the letter is read");
        assert_eq!(ruled_late, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The broker is stopped (SIGTERM) and started again while load-gen produces: the run
    /// still ends with every message acknowledged, and the topic holds each exactly once.
    /// Without re-sending refused messages, the produce requests the broker answered with an
    /// error while shutting down fail the run ("N messages were not acknowledged").
    #[test]
    fn a_broker_restart_costs_latency_not_messages() {
        let (broker, dir) = fresh_broker("broker_restart");
        let (brokers, port) = (broker.brokers(), broker.port);
        let topic = "restart";
        let rt = tokio::runtime::Runtime::new().unwrap();
        create_topic(&rt, &brokers, topic, 2);
        let cfg = run_config(&brokers, topic);
        let running = std::thread::spawn(move || rt.block_on(run(cfg)));
        wait("records on the topic", Duration::from_secs(60), || {
            records(&brokers, topic, 2).is_some_and(|n| n >= 1000)
        });
        broker.stop();
        let broker = Broker::start(&dir, port);
        let report = running.join().unwrap().expect("every message acknowledged");
        let on_topic = records(&broker.brokers(), topic, 2).expect("the broker answers");
        assert_eq!(
            on_topic as u64, report.produced,
            "each message exactly once"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
