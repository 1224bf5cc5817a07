//! Stopping the real `eddy` process: a stop signal ends it within
//! `pipeline.shutdown_timeout_ms` even when a store hangs mid-write, and a second signal ends
//! it at once. Real broker, Redis and ClickHouse (`scripts/services`); the hung store is Redis
//! behind a loopback proxy that stops forwarding.

use eddy_testkit::proxy::Proxy;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `pred` until it holds, panicking after `secs`.
fn wait_for(secs: u64, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of metric `name` (first sample) on `/metrics` of `addr`, if it answers.
fn metric(addr: &str, name: &str) -> Option<f64> {
    let url = format!("http://{addr}/metrics");
    let body = rt().block_on(async { reqwest::get(url).await.ok()?.text().await.ok() })?;
    body.lines()
        .filter(|l| l.starts_with(name))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Sends `signal` (`INT`, `TERM`) to the process.
fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal}");
}

/// Waits for the process to exit; `None` if it still runs after `limit` (then it is killed).
fn exit_within(child: &mut Child, limit: Duration) -> Option<(ExitStatus, Duration)> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((status, started.elapsed()));
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// `eddy run` on a fresh topic (returned), database and prefix, with Redis reached through
/// `redis` and a shutdown timeout of `shutdown_ms`.
fn start_run(name: &str, redis: SocketAddr, metrics: &str, shutdown_ms: u64) -> (Child, String) {
    eddy_testkit::services(&[]);
    let unique = format!("{name}_{}_{}", std::process::id(), eddy_core::now_ms());
    let mut cfg = eddy_core::Config::default();
    cfg.kafka.topic = format!("shutdown_{unique}");
    cfg.kafka.dlq_topic = format!("shutdown_{unique}.dlq");
    cfg.kafka.partitions = 1;
    cfg.clickhouse.database = format!("eddy_shutdown_{name}");
    eddy_sinks::apply_schema(&cfg.clickhouse, None).unwrap();
    rt().block_on(eddy::kafka::create_topics(&cfg.kafka))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["run", "--metrics-listen", metrics])
        .env("EDDY_KAFKA__TOPIC", &cfg.kafka.topic)
        .env("EDDY_KAFKA__DLQ_TOPIC", &cfg.kafka.dlq_topic)
        .env("EDDY_KAFKA__GROUP_ID", format!("shutdown_{unique}"))
        .env("EDDY_KAFKA__PARTITIONS", "1")
        .env("EDDY_CLICKHOUSE__DATABASE", &cfg.clickhouse.database)
        .env("EDDY_REDIS__URL", format!("redis://{redis}/"))
        .env("EDDY_REDIS__PREFIX", format!("shutdown_{unique}"))
        .env("EDDY_PIPELINE__CHECKPOINT_MS", "100")
        .env(
            "EDDY_PIPELINE__SHUTDOWN_TIMEOUT_MS",
            shutdown_ms.to_string(),
        )
        .env("EDDY_PIPELINE__WORKERS", "1")
        .env("EDDY_SIMILARITY__ENABLED", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    (child, cfg.kafka.topic)
}

/// Starts `eddy run` with Redis behind `proxy`, waits for a first checkpoint, then freezes
/// Redis and produces an event whose window write hangs in the proxy.
fn run_with_stuck_redis(name: &str, redis: &Proxy, shutdown_ms: u64) -> (Child, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let (child, topic) = start_run(name, redis.addr(), &metrics, shutdown_ms);
    wait_for(60, "a first checkpoint", || {
        metric(&metrics, "eddy_checkpoints_total").is_some_and(|n| n >= 1.0)
    });
    redis.pause();
    produce_one(&topic);
    wait_for(60, "a Redis window write stuck in the proxy", || {
        redis.holds(b":tw:")
    });
    (child, metrics)
}

/// Produces one valid event now to `topic`.
fn produce_one(topic: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9092")
        .create()
        .unwrap();
    let now = eddy_core::now_ms();
    let payload = format!(
        r#"{{"event_id":"s{now}","ts":{now},"user_id":1,"campaign_id":2,"event_type":"view"}}"#
    );
    rt().block_on(producer.send(
        FutureRecord::<(), str>::to(topic).payload(&payload),
        Duration::from_secs(30),
    ))
    .map_err(|(e, _)| e)
    .unwrap();
}

/// Redis hangs in the middle of a sink write; SIGTERM still ends the process within the
/// shutdown timeout (2 s here), with a non-zero exit. Without the deadline, the stuck write
/// and its shutdown retries hold the process for tens of seconds.
#[test]
fn a_stuck_store_cannot_hold_a_stop() {
    let redis = Proxy::start("127.0.0.1:6379".parse().unwrap());
    let (mut child, _) = run_with_stuck_redis("deadline", &redis, 2_000);
    signal(&child, "TERM");
    let (status, took) = exit_within(&mut child, Duration::from_secs(8))
        .expect("eddy run still running 8 s after SIGTERM with a stuck store");
    assert!(
        !status.success(),
        "a forced shutdown is an error exit: {status}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
    redis.resume();
}

/// With a long shutdown timeout and a stuck store, a second stop signal ends the process at
/// once, with exit code 130.
#[test]
fn a_second_signal_exits_at_once() {
    let redis = Proxy::start("127.0.0.1:6379".parse().unwrap());
    let (mut child, metrics) = run_with_stuck_redis("second", &redis, 120_000);
    signal(&child, "TERM");
    // The first signal was handled once the metrics server (stopped with the rest) is gone;
    // only then is a second one distinct (the kernel merges a pending repeat).
    wait_for(30, "the first signal to be handled", || {
        metric(&metrics, "eddy_").is_none()
    });
    signal(&child, "TERM");
    let (status, took) = exit_within(&mut child, Duration::from_secs(10))
        .expect("eddy run still running after two SIGTERMs");
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    redis.resume();
}

/// Ctrl-C stops `eddy demo` cleanly and promptly.
#[test]
fn ctrl_c_stops_the_demo_cleanly() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["demo", "--listen", &listen])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for(60, "the demo to count events", || {
        metric(&listen, "eddy_events_in_total").is_some_and(|n| n > 0.0)
    });
    signal(&child, "INT");
    let (status, took) =
        exit_within(&mut child, Duration::from_secs(10)).expect("eddy demo still running");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
