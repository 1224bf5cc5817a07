//! SinkWorker: ordering, coalescing, acknowledgements, retries and backpressure, shutdown.

use eddy_core::EventType::{Click, View};
use eddy_core::config::SinkConfig;
use eddy_core::{Checkpoint, CountsBatch, MemoryStore, Metrics, SimilarityBatch};
use eddy_sinks::{
    CheckpointStore, EpochSink, MemoryCheckpoints, MemorySink, RedisSink, SinkError, SinkWorker,
    merge_batches,
};
use eddy_storage::keys;
use eddy_testkit::fixtures::{HOUR, MIN, batch, cw, nb, similar, tw};
use eddy_testkit::stores::{fresh_redis, redis_conn};
use eddy_testkit::wait::wait_for;
use redis::Commands;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Records every write; each write first waits for a permit, and fails while `failures` > 0.
struct Gated {
    entered: Sender<u64>,
    permits: Receiver<()>,
    written: Arc<Mutex<Vec<CountsBatch>>>,
    failures: Arc<Mutex<u32>>,
}

impl EpochSink for Gated {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn write(&mut self, batch: &CountsBatch) -> Result<(), SinkError> {
        let _ = self.entered.send(batch.epoch);
        self.permits
            .recv()
            .map_err(|_| SinkError::Data("gate closed".into()))?;
        let mut f = self.failures.lock().unwrap();
        if *f > 0 {
            *f -= 1;
            return Err(SinkError::Timeout {
                what: "test write",
                after: Duration::ZERO,
            });
        }
        self.written.lock().unwrap().push(batch.clone());
        Ok(())
    }
}

type Written = Arc<Mutex<Vec<CountsBatch>>>;

/// The sink, its "entered write" signal, its permits and what it wrote.
fn gated(failures: u32) -> (Gated, Receiver<u64>, Sender<()>, Written) {
    let (tx, rx) = channel();
    let (entered_tx, entered) = channel();
    let written = Arc::new(Mutex::new(Vec::new()));
    let sink = Gated {
        entered: entered_tx,
        permits: rx,
        written: written.clone(),
        failures: Arc::new(Mutex::new(failures)),
    };
    (sink, entered, tx, written)
}

fn cfg(queue_depth: usize) -> SinkConfig {
    SinkConfig {
        max_batch_rows: 1000,
        initial_backoff_ms: 5,
        max_backoff_ms: 20,
        queue_depth,
    }
}

fn one(epoch: u64, start: i64, count: u64, fin: bool) -> Arc<CountsBatch> {
    let mut b = batch(epoch, HOUR + epoch as i64);
    let row = tw(start, View, count, 0, None, None);
    if fin {
        b.final_types.push(row)
    } else {
        b.open_types.push(row)
    }
    b.open_campaigns.push(cw(start, 1, Click, count));
    Arc::new(b)
}

#[test]
fn merge_keeps_later_values_and_finality() {
    let a = one(1, HOUR, 1, false);
    let mut b = (*one(2, HOUR, 2, true)).clone();
    b.open_types.push(tw(HOUR + MIN, View, 7, 0, None, None));
    let m = merge_batches(&a, &b);
    assert_eq!(m.epoch, 2);
    assert_eq!(m.watermark_ms, HOUR + 2);
    assert_eq!(m.final_types, vec![tw(HOUR, View, 2, 0, None, None)]);
    assert_eq!(m.open_types, vec![tw(HOUR + MIN, View, 7, 0, None, None)]);
    assert_eq!(m.open_campaigns, vec![cw(HOUR, 1, Click, 2)]);
    assert!(m.final_campaigns.is_empty());
}

#[test]
fn writes_in_order_coalesces_when_behind_and_acks() {
    let (sink, entered, permits, written) = gated(0);
    let metrics = Metrics::new();
    let worker = SinkWorker::spawn(Box::new(sink), &cfg(8), metrics.clone());
    assert_eq!(worker.acked_through(), None);
    worker.try_send(one(1, HOUR, 1, false)).unwrap();
    // The worker holds batch 1 (waiting for its permit) while 2..=5 queue up behind it.
    assert_eq!(entered.recv_timeout(Duration::from_secs(5)), Ok(1));
    for e in 2..=5 {
        worker.try_send(one(e, HOUR, e, e == 5)).unwrap();
    }
    permits.send(()).unwrap(); // batch 1 alone
    permits.send(()).unwrap(); // 2..=5 merged
    wait_for("ack of 5", Duration::from_secs(5), || {
        (worker.acked_through() == Some(5)).then_some(())
    });
    let w = written.lock().unwrap().clone();
    assert_eq!(w.len(), 2, "{w:#?}");
    assert_eq!(w[0], *one(1, HOUR, 1, false));
    assert_eq!(w[1].epoch, 5);
    assert_eq!(w[1].final_types, vec![tw(HOUR, View, 5, 0, None, None)]);
    assert!(w[1].open_types.is_empty());
    assert_eq!(w[1].open_campaigns, vec![cw(HOUR, 1, Click, 5)]);
    drop(permits);
    worker.shutdown();
    assert!(
        metrics
            .render()
            .contains("eddy_sink_write_seconds_count{sink=\"memory\"} 2"),
        "{}",
        metrics.render()
    );
}

#[test]
fn retries_failed_writes_without_dropping() {
    let (sink, _entered, permits, written) = gated(3);
    let metrics = Metrics::new();
    let worker = SinkWorker::spawn(Box::new(sink), &cfg(2), metrics.clone());
    for _ in 0..4 {
        permits.send(()).unwrap();
    }
    worker.try_send(one(1, HOUR, 1, true)).unwrap();
    wait_for("ack after retries", Duration::from_secs(5), || {
        (worker.acked_through() == Some(1)).then_some(())
    });
    assert_eq!(written.lock().unwrap().len(), 1);
    assert!(
        metrics
            .render()
            .contains("eddy_sink_errors_total{sink=\"memory\"} 3"),
        "{}",
        metrics.render()
    );
    assert!(metrics.sink_last_errors().contains_key("memory"));
    assert!(
        metrics
            .render()
            .contains("eddy_sink_last_write_ms{sink=\"memory\"}"),
        "{}",
        metrics.render()
    );
    drop(permits);
    worker.shutdown();
}

#[test]
fn shutdown_drains_the_queue_into_memory() {
    let store = Arc::new(RwLock::new(MemoryStore::default()));
    let worker = SinkWorker::spawn(
        Box::new(MemorySink::new(store.clone())),
        &cfg(16),
        Metrics::new(),
    );
    for e in 1..=10 {
        worker
            .try_send(one(e, HOUR + (e as i64 % 3) * MIN, e, false))
            .unwrap();
    }
    worker.shutdown();
    let s = store.read().unwrap();
    assert_eq!(s.epoch, 10);
    let rows: Vec<u64> = s
        .type_windows(Some(View), HOUR, HOUR + 3 * MIN)
        .iter()
        .map(|r| r.row.count)
        .collect();
    assert_eq!(rows, vec![9, 10, 8]);

    let mut cps = MemoryCheckpoints::with_store(store.clone());
    drop(s);
    assert_eq!(cps.load("events").unwrap(), None);
    let cp = Checkpoint {
        state: None,
        topic: "events".into(),
        epoch: 10,
        watermark_ms: HOUR,
        partitions: vec![],
    };
    cps.save(&cp).unwrap();
    assert_eq!(cps.load("events").unwrap(), Some(cp));
    assert_eq!(store.read().unwrap().boundary_ms, Some(HOUR));
}

#[test]
fn dead_redis_backpressures_and_shutdown_gives_up() {
    let redis_cfg = eddy_core::config::RedisConfig {
        url: "redis://127.0.0.1:1/".into(),
        prefix: "eddy_test_dead".into(),
        ..Default::default()
    };
    let metrics = Metrics::new();
    let worker = SinkWorker::spawn(
        Box::new(RedisSink::lazy(&redis_cfg).unwrap()),
        &cfg(2),
        metrics.clone(),
    );
    let mut sent = 0u64;
    let rejected = wait_for("a full queue", Duration::from_secs(10), || {
        match worker.try_send(one(sent + 1, HOUR, 1, false)) {
            Ok(()) => {
                sent += 1;
                None
            }
            Err(b) => Some(b),
        }
    });
    assert_eq!(rejected.epoch, sent + 1, "the rejected batch is given back");
    // At least a full queue (2) was accepted; more if the worker took (and merged) some.
    assert!((2..=4).contains(&sent), "sent {sent}");
    assert_eq!(worker.acked_through(), None);
    wait_for("errors counted", Duration::from_secs(5), || {
        metrics
            .render()
            .contains("eddy_sink_errors_total{sink=\"redis\"}")
            .then_some(())
    });
    let started = Instant::now();
    worker.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[test]
fn worker_writes_to_real_redis() {
    let rc = fresh_redis("worker");
    let p = rc.prefix.clone();
    let worker = SinkWorker::spawn(
        Box::new(RedisSink::connect(&rc).unwrap()),
        &cfg(4),
        Metrics::new(),
    );
    let mut pending: Vec<Arc<CountsBatch>> = (1..=20).map(|e| one(e, HOUR, e, e == 20)).collect();
    pending.reverse();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(b) = pending.pop() {
        if let Err(b) = worker.try_send(b) {
            assert!(Instant::now() < deadline, "redis worker stuck");
            pending.push(b);
            std::thread::yield_now();
        }
    }
    wait_for("ack of 20", Duration::from_secs(10), || {
        (worker.acked_through() == Some(20)).then_some(())
    });
    worker.shutdown();
    let mut con = redis_conn(&rc);
    let h: std::collections::HashMap<String, String> =
        con.hgetall(keys::type_window(&p, View, HOUR)).unwrap();
    assert_eq!(h.get("count").map(String::as_str), Some("20"));
    assert_eq!(h.get("final").map(String::as_str), Some("1"));
    assert_eq!(h.get("epoch").map(String::as_str), Some("20"));
}

/// Records the users of each similarity write; a write of more than `max_ok` users times out,
/// as a store's time limit does for a batch too large.
struct TimeLimited {
    max_ok: usize,
    writes: Arc<Mutex<Vec<Vec<u64>>>>,
}

impl EpochSink<SimilarityBatch> for TimeLimited {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn write(&mut self, batch: &SimilarityBatch) -> Result<(), SinkError> {
        let users: Vec<u64> = batch
            .similar
            .iter()
            .map(|s| s.user_id)
            .chain(batch.campaigns.iter().map(|c| c.user_id))
            .collect();
        if users.len() > self.max_ok {
            return Err(SinkError::Timeout {
                what: "test write",
                after: Duration::ZERO,
            });
        }
        self.writes.lock().unwrap().push(users);
        Ok(())
    }
}

/// A pane-close batch larger than `sink.max_batch_rows` is written in parts of at most that
/// many rows; a part the store times out on is split in halves instead of retried whole
/// forever; the epoch is acknowledged once every part is written.
#[test]
fn large_pane_close_batches_are_split() {
    let writes = Arc::new(Mutex::new(Vec::new()));
    let sink = TimeLimited {
        max_ok: 4,
        writes: writes.clone(),
    };
    let config = SinkConfig {
        max_batch_rows: 10,
        ..cfg(4)
    };
    let worker = SinkWorker::spawn(Box::new(sink), &config, Metrics::new());
    let batch = SimilarityBatch {
        epoch: 7,
        as_of_ms: HOUR,
        sliding_ms: MIN,
        similar: (0..25)
            .map(|u| similar(u, vec![nb(u + 100, 1, 2)]))
            .collect(),
        campaigns: Vec::new(),
        interaction_panes: Vec::new(),
    };
    assert!(worker.try_send(Arc::new(batch)).is_ok());
    wait_for("epoch 7 acknowledged", Duration::from_secs(10), || {
        worker.acked_through().filter(|&e| e >= 7)
    });
    let writes = writes.lock().unwrap();
    // Parts of 10, 10 and 5 rows, each too large for the store, halved until they fit.
    assert!(writes.iter().all(|w| w.len() <= 4), "{writes:?}");
    let users: Vec<u64> = writes.iter().flatten().copied().collect();
    assert_eq!(
        users,
        (0..25).collect::<Vec<_>>(),
        "every user once, in order"
    );
}
