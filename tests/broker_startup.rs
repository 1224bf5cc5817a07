//! `eddy run` started while the broker does not answer: it waits, retrying with backoff (each
//! attempt logged), and starts once the broker answers; past `kafka.startup_timeout_ms` it
//! exits with an error that says so. The silent broker is the real one behind a loopback proxy
//! that stops forwarding ([`Proxy`]); Redis and ClickHouse are the real ones
//! (`scripts/services`).

use eddy_testkit::block_on;
use eddy_testkit::free_port;
use eddy_testkit::proxy::Proxy;
use eddy_testkit::wait::wait_until;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KAFKA: &str = "127.0.0.1:9092";

/// `eddy run` as a child (killed when dropped) whose stderr is collected line by line.
struct Eddy {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    ops: String,
}

impl Eddy {
    /// Starts `eddy run` on its own topic, database and Redis prefix (created first, on the
    /// real broker), reaching the broker at `brokers`.
    fn start(name: &str, brokers: &str, env: &[(&str, &str)]) -> Self {
        let cfg = eddy_testkit::pipeline::fresh_config(&format!("startup_{name}"));
        block_on(eddy::kafka::create_topics(&cfg.kafka)).unwrap();
        let ops = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
        cmd.args(["run", "--metrics-listen", &ops])
            .envs(eddy_testkit::pipeline::run_env(&cfg))
            .env("EDDY_KAFKA__BROKERS", brokers)
            .env("EDDY_PIPELINE__CHECKPOINT_MS", "100")
            .env("EDDY_LOG", "info")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("eddy run: {line}");
                lines.lock().unwrap().push(line);
            }
        });
        Self { child, stderr, ops }
    }

    /// Stderr lines so far that contain `needle`.
    fn logged(&self, needle: &str) -> usize {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// `eddy_checkpoints_total` on `/metrics`, if it answers.
    fn checkpoints(&self) -> Option<f64> {
        let url = format!("http://{}/metrics", self.ops);
        let body = block_on(async move { reqwest::get(url).await.ok()?.text().await.ok() })?;
        body.lines()
            .filter(|l| l.starts_with("eddy_checkpoints_total"))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Eddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const RETRYING: &str = "broker not answering at start-up; retrying";

/// A broker that answers nothing at start-up (the proxy holds every request) is retried, with
/// each attempt logged, and the run starts once it answers. Without the retries, the first
/// metadata timeout ends `eddy run` with an error.
#[test]
fn run_waits_for_a_silent_broker_and_starts_when_it_answers() {
    let kafka = Proxy::start(KAFKA.parse().unwrap());
    kafka.pause();
    let mut eddy = Eddy::start("waits", &kafka.addr().to_string(), &[]);
    wait_until(
        "two start-up attempts logged",
        Duration::from_secs(60),
        || eddy.logged(RETRYING) >= 2 || !eddy.running(),
    );
    assert!(
        eddy.running(),
        "eddy run exited while the broker was silent: {:?}",
        eddy.child.try_wait()
    );
    kafka.resume();
    wait_until(
        "a first checkpoint after the broker answered",
        Duration::from_secs(90),
        || eddy.checkpoints().is_some_and(|n| n >= 1.0) || !eddy.running(),
    );
    assert!(
        eddy.running(),
        "eddy run exited: {:?}",
        eddy.child.try_wait()
    );
    assert!(eddy.logged("broker answered") >= 1);
}

/// Past `kafka.startup_timeout_ms` of retries, `eddy run` exits non-zero and says why.
#[test]
fn run_gives_up_on_a_silent_broker_after_the_startup_timeout() {
    let kafka = Proxy::start(KAFKA.parse().unwrap());
    kafka.pause();
    let started = Instant::now();
    let mut eddy = Eddy::start(
        "gives_up",
        &kafka.addr().to_string(),
        &[("EDDY_KAFKA__STARTUP_TIMEOUT_MS", "12000")],
    );
    wait_until("eddy run to give up", Duration::from_secs(90), || {
        !eddy.running()
    });
    let status = eddy.child.wait().unwrap();
    assert!(!status.success(), "{status}");
    assert!(
        started.elapsed() >= Duration::from_secs(12),
        "gave up before the deadline: {:?}",
        started.elapsed()
    );
    wait_until("the give-up message", Duration::from_secs(5), || {
        eddy.logged("broker not answering after 12000 ms of retries") >= 1
    });
    assert!(eddy.logged(RETRYING) >= 1);
    kafka.resume();
}

/// A worker's reader is built from the partitions found at start-up (where the broker is
/// waited for) and makes no broker call of its own: a broker that stops answering between the
/// start-up checks and the workers' set-up cannot fail the run (it did: `worker failed …
/// kafka fetch metadata: OperationTimedOut` in the kill -9 scenario of `scripts/chaos`).
#[test]
fn a_reader_starts_without_asking_a_silent_broker() {
    let kafka = Proxy::start(KAFKA.parse().unwrap());
    kafka.pause();
    let cfg = eddy_core::config::KafkaConfig {
        brokers: kafka.addr().to_string(),
        topic: format!("startup_reader_{}", std::process::id()),
        ..Default::default()
    };
    let reader = eddy::kafka::KafkaReader::new(
        &cfg,
        vec![0, 1],
        vec![0],
        Default::default(),
        eddy_core::Metrics::new(),
    );
    assert!(reader.is_ok(), "{:?}", reader.err());
    kafka.resume();
}
