//! One writer per job, against the real Redis (127.0.0.1:6379) and broker: a second run on the
//! same job refuses to start, a crashed holder's lease is taken over once it expires, and a
//! holder whose lease is taken over stops.

use eddy::fence::{FenceError, JobFence};
use eddy::pipeline::{Mode, PipelineError, RunOptions, run};
use eddy_core::Metrics;
use eddy_testkit::wait::wait_until;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const REDIS: &str = "redis://127.0.0.1:6379/";

fn unique(name: &str) -> String {
    format!(
        "fence_{name}_{}_{}",
        std::process::id(),
        eddy_core::now_ms()
    )
}

fn redis() -> redis::Connection {
    eddy_testkit::services(&[]);
    redis::Client::open(REDIS)
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Sets the lease `key` to `holder` as another run would, expiring after `ttl_ms` if given.
fn set_holder(conn: &mut redis::Connection, key: &str, holder: &str, ttl_ms: Option<u64>) {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(holder);
    if let Some(ttl) = ttl_ms {
        cmd.arg("PX").arg(ttl);
    }
    let _: () = cmd.query(conn).unwrap();
}

/// The holder the lease `key` names, if any.
fn holder(conn: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(conn).unwrap()
}

/// A connection to the test Redis, and the lease key of a job of the test's own.
fn fresh_lease(name: &str) -> (redis::Connection, String) {
    (redis(), JobFence::key(&unique(name), "events"))
}

fn acquire(key: &str, ttl_ms: u64) -> (Result<JobFence, FenceError>, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let fence = JobFence::acquire(
        REDIS,
        key.to_owned(),
        Duration::from_millis(ttl_ms),
        stop.clone(),
    );
    (fence, stop)
}

#[test]
fn a_held_lease_refuses_a_second_holder_until_released() {
    let (mut conn, key) = fresh_lease("held");
    let (a, a_stop) = acquire(&key, 300);
    let a = a.expect("the first run takes the lease");
    // A renews (every 100 ms), so B gives up after waiting 1.5 TTL.
    let (b, _) = acquire(&key, 300);
    assert!(matches!(b, Err(FenceError::Held { .. })), "{:?}", b.err());
    assert!(a.check().is_ok() && !a_stop.load(Ordering::SeqCst));
    drop(a);
    assert_eq!(holder(&mut conn, &key), None, "released on drop");
    let (b, _) = acquire(&key, 300);
    b.expect("free again");
}

#[test]
fn a_crashed_holders_lease_is_taken_once_it_expires() {
    let (mut conn, key) = fresh_lease("crashed");
    // A holder that stopped renewing (killed): its lease expires after its TTL.
    set_holder(&mut conn, &key, "killed-run", Some(400));
    let (c, _) = acquire(&key, 1_000);
    c.expect("taken over after the dead holder's lease expired");
}

#[test]
fn a_holder_whose_lease_is_taken_over_stops() {
    let (mut conn, key) = fresh_lease("taken");
    let (a, a_stop) = acquire(&key, 300);
    let a = a.unwrap();
    set_holder(&mut conn, &key, "another-run", None);
    wait_until("the holder to notice", Duration::from_secs(10), || {
        a_stop.load(Ordering::SeqCst)
    });
    assert!(matches!(a.check(), Err(FenceError::Lost { .. })));
    drop(a);
    assert_eq!(
        holder(&mut conn, &key).as_deref(),
        Some("another-run"),
        "a lost lease is not released"
    );
}

/// Two `eddy run`s on the same job: the second refuses to start while the first runs.
#[test]
fn a_second_run_on_the_same_job_refuses_to_start() {
    let mut conn = redis();
    let cfg = eddy_testkit::pipeline::fresh_config("fence_run");
    eddy_testkit::block_on(eddy::kafka::create_topics(&cfg.kafka)).unwrap();
    let options = |stop: &Arc<AtomicBool>| RunOptions {
        config: cfg.clone(),
        timely: timely::Config::process(1),
        stop: stop.clone(),
        metrics: Metrics::new(),
    };
    let first_stop = Arc::new(AtomicBool::new(false));
    let first = {
        let opts = options(&first_stop);
        std::thread::spawn(move || run(opts, Mode::Kafka))
    };
    let key = JobFence::key(&cfg.redis.prefix, &cfg.kafka.topic);
    wait_until(
        "the first run to hold the job",
        Duration::from_secs(30),
        || holder(&mut conn, &key).is_some(),
    );
    let second_stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let opts = options(&second_stop);
        std::thread::spawn(move || tx.send(run(opts, Mode::Kafka)).unwrap());
    }
    let second = rx.recv_timeout(Duration::from_secs(30));
    second_stop.store(true, Ordering::SeqCst);
    first_stop.store(true, Ordering::SeqCst);
    let second = second.expect("the second run ends by itself");
    assert!(
        matches!(second, Err(PipelineError::Fence(FenceError::Held { .. }))),
        "{second:?}"
    );
    first
        .join()
        .unwrap()
        .expect("the first run ends cleanly when stopped");
}
