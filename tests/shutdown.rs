//! Stopping and watching the real `eddy` process: a stop signal ends it within
//! `pipeline.shutdown_timeout_ms` even when a store hangs mid-write, a second signal ends it at
//! once, and `/healthz` of `eddy run` follows the checkpoints. Real broker, Redis and ClickHouse
//! (`scripts/services`); a hung store is a real one behind a loopback proxy that stops
//! forwarding ([`Proxy`]).

use eddy_core::api::{HealthStatus, LivenessResponse};
use eddy_testkit::free_port;
use eddy_testkit::proxy::Proxy;
use eddy_testkit::wait::wait_until;
use eddy_testkit::{block_on, kafka};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const REDIS: &str = "127.0.0.1:6379";
const CLICKHOUSE: &str = "127.0.0.1:8123";

/// `GET http://{addr}{path}`: status and body, `None` if nothing answers.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let url = format!("http://{addr}{path}");
    block_on(async move {
        let r = reqwest::get(url).await.ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    })
}

/// The value of metric `name` (first sample) on `/metrics` of `addr`, if it answers.
fn metric(addr: &str, name: &str) -> Option<f64> {
    let (_, body) = get(addr, "/metrics")?;
    body.lines()
        .filter(|l| l.starts_with(name))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `/healthz` of `eddy run`: status code and liveness.
fn liveness(addr: &str) -> Option<(u16, LivenessResponse)> {
    let (code, body) = get(addr, "/healthz")?;
    Some((code, serde_json::from_str(&body).ok()?))
}

/// A child process killed (if still running) when the test ends, passed or failed.
struct Eddy(Child);

impl Eddy {
    fn spawn(cmd: &mut Command) -> Self {
        Self(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    }

    /// Sends `signal` (`INT`, `TERM`).
    fn signal(&self, signal: &str) {
        // The shell's builtin `kill`: no dependency on procps.
        let ok = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", self.0.id())])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// Waits for the exit; `None` if it still runs after `limit`.
    fn exit_within(&mut self, limit: Duration) -> Option<(ExitStatus, Duration)> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some((status, started.elapsed()));
            }
            if started.elapsed() > limit {
                return None;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
}

impl Drop for Eddy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `eddy run` on its own topic, database and Redis prefix.
struct Run {
    eddy: Eddy,
    /// `--metrics-listen` address.
    ops: String,
    topic: String,
}

/// Starts `eddy run` with Redis and ClickHouse reached at `redis` and `clickhouse` (a proxy or
/// the real address) and extra `EDDY_*` settings, then waits for its first checkpoint.
fn start_run(name: &str, redis: SocketAddr, clickhouse: SocketAddr, env: &[(&str, &str)]) -> Run {
    let cfg = eddy_testkit::pipeline::fresh_config(&format!("shutdown_{name}"));
    block_on(eddy::kafka::create_topics(&cfg.kafka)).unwrap();
    let ops = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(["run", "--metrics-listen", &ops])
        .envs(eddy_testkit::pipeline::run_env(&cfg))
        .env("EDDY_CLICKHOUSE__URL", format!("http://{clickhouse}"))
        .env("EDDY_REDIS__URL", format!("redis://{redis}/"))
        .env("EDDY_PIPELINE__CHECKPOINT_MS", "100");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let eddy = Eddy::spawn(&mut cmd);
    wait_until("a first checkpoint", Duration::from_secs(60), || {
        metric(&ops, "eddy_checkpoints_total").is_some_and(|n| n >= 1.0)
    });
    Run {
        eddy,
        ops,
        topic: cfg.kafka.topic,
    }
}

/// Produces one valid event, dated now, to `topic`.
fn produce_one(topic: &str) {
    let now = eddy_core::now_ms();
    let payload = format!(
        r#"{{"event_id":"s{now}","ts":{now},"user_id":1,"campaign_id":2,"event_type":"view"}}"#
    );
    let cfg = eddy_core::config::KafkaConfig {
        topic: topic.to_owned(),
        ..Default::default()
    };
    kafka::produce(&cfg, [(0, payload.as_bytes())]);
}

/// `eddy run` with Redis behind `redis`, frozen in the middle of a window write.
fn run_with_stuck_redis(name: &str, redis: &Proxy, shutdown_ms: &str) -> Run {
    let run = start_run(
        name,
        redis.addr(),
        CLICKHOUSE.parse().unwrap(),
        &[("EDDY_PIPELINE__SHUTDOWN_TIMEOUT_MS", shutdown_ms)],
    );
    redis.pause();
    produce_one(&run.topic);
    wait_until(
        "a Redis window write stuck in the proxy",
        Duration::from_secs(60),
        || redis.holds(b":tw:"),
    );
    run
}

/// Redis hangs in the middle of a sink write; SIGTERM still ends the process within the
/// shutdown timeout (2 s here), with a non-zero exit. Without the deadline, the stuck write
/// and its shutdown retries hold the process for tens of seconds.
#[test]
fn a_stuck_store_cannot_hold_a_stop() {
    let redis = Proxy::start(REDIS.parse().unwrap());
    let mut run = run_with_stuck_redis("deadline", &redis, "2000");
    run.eddy.signal("TERM");
    let (status, took) = run
        .eddy
        .exit_within(Duration::from_secs(8))
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
    let redis = Proxy::start(REDIS.parse().unwrap());
    let mut run = run_with_stuck_redis("second", &redis, "120000");
    run.eddy.signal("TERM");
    // The first signal was handled once the ops server (stopped with the rest) is gone; only
    // then is a second one distinct (the kernel merges a pending repeat).
    wait_until(
        "the first signal to be handled",
        Duration::from_secs(30),
        || get(&run.ops, "/metrics").is_none(),
    );
    run.eddy.signal("TERM");
    let (status, took) = run
        .eddy
        .exit_within(Duration::from_secs(10))
        .expect("eddy run still running after two SIGTERMs");
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    redis.resume();
}

/// `/healthz` of `eddy run --metrics-listen` is liveness: it turns 503 when checkpoints stop
/// (ClickHouse hangs in the middle of a checkpoint save), and 200 again once they resume.
#[test]
fn liveness_follows_checkpoints() {
    let clickhouse = Proxy::start(CLICKHOUSE.parse().unwrap());
    let mut run = start_run(
        "liveness",
        REDIS.parse().unwrap(),
        clickhouse.addr(),
        &[("EDDY_PIPELINE__LIVENESS_TIMEOUT_MS", "1500")],
    );
    assert!(matches!(liveness(&run.ops), Some((200, l)) if l.status == HealthStatus::Ok));
    clickhouse.pause();
    wait_until(
        "a checkpoint save stuck in the proxy",
        Duration::from_secs(30),
        // A save inserts the checkpoint's state layout, then its offsets.
        || clickhouse.holds(b"checkpoint_states") || clickhouse.holds(b"source_checkpoints"),
    );
    wait_until(
        "/healthz to report the stall",
        Duration::from_secs(30),
        || {
            liveness(&run.ops).is_some_and(|(code, l)| {
                code == 503 && l.status == HealthStatus::Degraded && l.checkpoint_age_ms > 1_500
            })
        },
    );
    clickhouse.resume();
    produce_one(&run.topic);
    wait_until("/healthz to recover", Duration::from_secs(30), || {
        liveness(&run.ops).is_some_and(|(code, l)| code == 200 && l.status == HealthStatus::Ok)
    });
    run.eddy.signal("TERM");
    let (status, _) = run
        .eddy
        .exit_within(Duration::from_secs(10))
        .expect("eddy run stops");
    assert!(status.success(), "{status}");
}

/// Ctrl-C stops `eddy demo` cleanly and promptly.
#[test]
fn ctrl_c_stops_the_demo_cleanly() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut eddy =
        Eddy::spawn(Command::new(env!("CARGO_BIN_EXE_eddy")).args(["demo", "--listen", &listen]));
    wait_until("the demo to count events", Duration::from_secs(60), || {
        metric(&listen, "eddy_events_in_total").is_some_and(|n| n > 0.0)
    });
    eddy.signal("INT");
    let (status, took) = eddy
        .exit_within(Duration::from_secs(10))
        .expect("eddy demo still running");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
