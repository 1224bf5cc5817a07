//! Operator status end to end: a process's publisher keeps its record in the real Redis
//! (`scripts/services`) fresh, and `eddy status` shows what the query server answers: the
//! records of `eddy run` through `eddy serve` (real broker, Redis, ClickHouse), or the demo's.

use eddy_core::Metrics;
use eddy_core::api::{ProcessIdentity, ProcessStatus, StatusResponse, Store};
use eddy_storage::status::{status_field, status_key};
use eddy_testkit::free_port;
use eddy_testkit::stores::{fresh_redis, redis_conn};
use eddy_testkit::wait::wait_for;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The record of `identity` in the status hash under `prefix`, if any.
fn record(
    con: &mut redis::Connection,
    prefix: &str,
    identity: &ProcessIdentity,
) -> Option<ProcessStatus> {
    let json: Option<String> = redis::cmd("HGET")
        .arg(status_key(prefix))
        .arg(status_field(identity))
        .query(con)
        .unwrap();
    json.map(|j| serde_json::from_str(&j).unwrap())
}

#[test]
fn the_publisher_keeps_the_record_fresh_and_writes_a_last_one() {
    eddy_testkit::services(&["redis"]);
    let redis = fresh_redis("status_publisher");
    let mut con = redis_conn(&redis);
    let metrics = Metrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    let identity = ProcessIdentity::this_process(3, "run");
    let publisher =
        eddy::status::spawn_publisher(&redis, identity.clone(), metrics.clone(), stop.clone())
            .unwrap();
    let first = wait_for("a first record", Duration::from_secs(10), || {
        record(&mut con, &redis.prefix, &identity)
    });
    assert_eq!(first.identity, identity);
    assert_eq!(first.watermark_ms, None);
    assert!(first.rss_bytes.is_some_and(|b| b > 0));
    // Later figures reach Redis without anything else happening: it publishes repeatedly.
    metrics.watermark_ms.set(12_345);
    let later = wait_for(
        "a record with the new watermark",
        Duration::from_secs(10),
        || record(&mut con, &redis.prefix, &identity).filter(|r| r.watermark_ms == Some(12_345)),
    );
    assert!(later.updated_at_ms >= first.updated_at_ms);
    // On stop, one last record with the final figures.
    metrics.events_in.inc_by(7);
    stop.store(true, Ordering::SeqCst);
    publisher.join().unwrap();
    let last = record(&mut con, &redis.prefix, &identity).unwrap();
    assert_eq!(last.events_in, 7);
}

/// A child killed when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn eddy_status(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["status", "--url", url])
        .args(args)
        .env_remove("EDDY_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn eddy_status_shows_the_demo() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _demo = Killed(
        Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["demo", "--rate", "500", "--seconds", "120"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_remove("EDDY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let status: StatusResponse = wait_for(
        "events in the demo's status",
        Duration::from_secs(60),
        || {
            let out = eddy_status(&url, &["--json"]);
            let status: StatusResponse = serde_json::from_slice(&out.stdout).ok()?;
            (status.processes.first()?.status.events_in > 0).then_some(status)
        },
    );
    assert_eq!(status.source, Store::Memory);
    assert_eq!(status.processes[0].status.identity.mode, "demo");
    assert!(!status.processes[0].stale);

    // --watch --json: one answer per second, each newer than the last.
    let mut watch = Killed(
        Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["status", "--watch", "--json", "--url", &url])
            .env_remove("EDDY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(watch.0.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let line = lines.next().unwrap().unwrap();
        let answer: StatusResponse = serde_json::from_str(&line).unwrap();
        seen.push(answer.now_ms);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    drop(watch);

    let out = eddy_status(&url, &[]);
    assert!(out.status.success());
    let screen = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "eddy status:",
        "process 0 (demo)",
        "events in",
        "watermark",
        "dead letters",
    ] {
        assert!(screen.contains(needle), "{needle:?} not in\n{screen}");
    }
}

#[test]
fn eddy_status_without_a_server_fails() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = eddy_status(&url, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/v1/status"), "{err}");
}

#[test]
fn eddy_status_shows_eddy_run_through_eddy_serve() {
    let cfg = eddy_testkit::pipeline::fresh_config("status_run");
    eddy_testkit::block_on(eddy::kafka::create_topics(&cfg.kafka)).unwrap();
    let _run = Killed(
        Command::new(env!("CARGO_BIN_EXE_eddy"))
            .arg("run")
            .envs(eddy_testkit::pipeline::run_env(&cfg))
            .env("EDDY_PIPELINE__CHECKPOINT_MS", "100")
            .env_remove("EDDY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let port = free_port();
    let _serve = Killed(
        Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .envs(eddy_testkit::pipeline::run_env(&cfg))
            .env_remove("EDDY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let t0 = eddy_core::now_ms();
    let mut msgs: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            format!(
                r#"{{"event_id":"s{i}","ts":{},"user_id":{i},"campaign_id":1,"event_type":"view"}}"#,
                t0 + i
            )
            .into_bytes()
        })
        .collect();
    msgs.push(b"not json".to_vec());
    eddy_testkit::kafka::produce(&cfg.kafka, msgs.iter().map(|m| (0, m.as_slice())));
    let status = wait_for("eddy run's record", Duration::from_secs(90), || {
        let out = eddy_status(&url, &["--json"]);
        let status: StatusResponse = serde_json::from_slice(&out.stdout).ok()?;
        let p = &status.processes.first()?.status;
        let letters: u64 = p.dead_letters.values().sum();
        let checkpointed = !p.checkpoint.resume_offsets.is_empty();
        (p.events_in == 5 && letters == 1 && !p.partitions.is_empty() && checkpointed)
            .then_some(status)
    });
    assert_eq!(status.source, Store::Redis);
    assert_eq!(status.processes.len(), 1);
    let p = &status.processes[0];
    assert_eq!(
        (p.status.identity.mode.as_str(), p.status.identity.process),
        ("run", 0)
    );
    assert!(!p.stale);
    assert_eq!(p.status.partitions[0].partition, 0);
    // Caught up: no lag in records, none in time.
    assert_eq!(p.status.partitions[0].lag_ms, Some(0));
    let c = &p.status.checkpoint;
    assert!(c.committed > 0 && c.epoch.is_some() && c.duration_ms.is_some());
    assert_eq!(c.resume_offsets[0].partition, 0);
    assert!((0..=6).contains(&c.resume_offsets[0].offset));
}
