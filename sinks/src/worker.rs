//! [`SinkWorker`]: one sink on its own thread behind a bounded queue.

use crate::{Batch, EpochSink};
use eddy_core::config::SinkConfig;
use eddy_core::metrics::SinkLabel;
use eddy_core::{CountsBatch, Metrics};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// After [`SinkWorker::shutdown`], a failing write gets this many more attempts before the
/// worker gives up on it and on everything still queued.
pub const SHUTDOWN_ATTEMPTS: u32 = 3;

/// A sink on its own thread with a bounded queue.
///
/// * Batches are written in the order sent, each atomically (one [`EpochSink::write`]).
/// * A failed write is retried with capped exponential backoff (`sink.initial_backoff_ms`
///   doubling up to `sink.max_backoff_ms`), forever while running: nothing is dropped, and
///   while the store is down the queue fills up and [`SinkWorker::try_send`] reports it full.
/// * When batches are waiting in the queue as the worker becomes free (the store is behind),
///   consecutive batches are merged into one ([`merge_batches`]: later values win) of at most
///   `sink.max_batch_rows` rows (a single larger batch is written as is), so a slow store
///   catches up in fewer, larger atomic writes.
/// * Latency of successful writes goes to `metrics.sink_write_seconds{sink}`, each failed
///   attempt to `metrics.sink_errors{sink}` (the last error kept: `Metrics::sink_failed`).
///
/// Shutdown (explicit or on drop) writes everything still queued, then joins the thread. While
/// shutting down, a failing write is retried at most [`SHUTDOWN_ATTEMPTS`] more times; then that
/// batch and all remaining ones are dropped (logged at error level, and not acknowledged), so
/// shutdown against a dead store ends after a few backoff periods instead of hanging.
pub struct SinkWorker<B: Batch = CountsBatch> {
    tx: Option<SyncSender<Arc<B>>>,
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
    name: &'static str,
}

struct Shared {
    /// Highest acknowledged epoch + 1; 0 = none yet.
    acked: AtomicU64,
    stopping: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    fn is_stopping(&self) -> bool {
        *self.stopping.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `d`, or less if shutdown starts meanwhile.
    fn pause(&self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut stopping = self.stopping.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            if *stopping || now >= deadline {
                return;
            }
            stopping = self
                .wake
                .wait_timeout(stopping, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl<B: Batch> SinkWorker<B> {
    /// Starts a thread named `sink-{name}` writing to `sink`, with a queue of
    /// `cfg.queue_depth` batches.
    pub fn spawn(sink: Box<dyn EpochSink<B>>, cfg: &SinkConfig, metrics: Metrics) -> Self {
        let name = sink.name();
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue_depth.max(1));
        let shared = Arc::new(Shared {
            acked: AtomicU64::new(0),
            stopping: Mutex::new(false),
            wake: Condvar::new(),
        });
        let run = Run {
            sink,
            rx,
            shared: shared.clone(),
            metrics,
            label: SinkLabel {
                sink: name.to_owned(),
            },
            initial_backoff: Duration::from_millis(cfg.initial_backoff_ms.max(1)),
            max_backoff: Duration::from_millis(
                cfg.max_backoff_ms.max(cfg.initial_backoff_ms).max(1),
            ),
            max_rows: cfg.max_batch_rows.max(1),
            carry: None,
        };
        let handle = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || run.run())
            .expect("cannot spawn a sink thread");
        Self {
            tx: Some(tx),
            shared,
            handle: Some(handle),
            name,
        }
    }

    /// The sink's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Queues `batch` without blocking. `Err` gives the batch back when the queue is full
    /// (backpressure: try again later) or the worker thread has died.
    pub fn try_send(&self, batch: Arc<B>) -> Result<(), Arc<B>> {
        match &self.tx {
            Some(tx) => tx.try_send(batch).map_err(|e| match e {
                TrySendError::Full(b) | TrySendError::Disconnected(b) => b,
            }),
            None => Err(batch),
        }
    }

    /// The highest epoch whose batch, and every batch sent before it, is durably written.
    pub fn acked_through(&self) -> Option<u64> {
        match self.shared.acked.load(Ordering::Acquire) {
            0 => None,
            n => Some(n - 1),
        }
    }

    /// Writes everything still queued (see the type's docs for a dead store) and joins the
    /// thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        *self
            .shared
            .stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_all();
        drop(self.tx.take());
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            tracing::error!(sink = self.name, "sink thread panicked");
        }
    }
}

impl<B: Batch> Drop for SinkWorker<B> {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Run<B: Batch> {
    sink: Box<dyn EpochSink<B>>,
    rx: Receiver<Arc<B>>,
    shared: Arc<Shared>,
    metrics: Metrics,
    label: SinkLabel,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_rows: usize,
    /// A batch taken from the queue that did not fit into the previous merged write.
    carry: Option<Arc<B>>,
}

impl<B: Batch> Run<B> {
    fn run(mut self) {
        let name = self.sink.name();
        while let Some(batch) = self.next_write() {
            if !self.write_split(&batch, self.max_rows) {
                let mut dropped = 1 + usize::from(self.carry.take().is_some());
                while self.rx.try_recv().is_ok() {
                    dropped += 1;
                }
                // The senders are gone (shutdown), so nothing else can arrive.
                tracing::error!(
                    sink = name,
                    dropped,
                    "sink still failing at shutdown: gave up"
                );
                return;
            }
            self.shared
                .acked
                .fetch_max(batch.epoch().saturating_add(1), Ordering::AcqRel);
        }
        tracing::debug!(sink = name, "sink worker finished");
    }

    /// The next batch to write: the oldest waiting one, merged with those queued behind it.
    /// `None` once shut down and drained.
    fn next_write(&mut self) -> Option<Arc<B>> {
        let first = match self.carry.take() {
            Some(b) => b,
            None => self.rx.recv().ok()?,
        };
        let mut merged: Option<B> = None;
        let mut total = first.rows();
        while let Ok(next) = self.rx.try_recv() {
            let n = next.rows();
            if total + n > self.max_rows {
                self.carry = Some(next);
                break;
            }
            total += n;
            merged = Some(merged.as_ref().unwrap_or(&first).merge(&next));
        }
        Some(match merged {
            Some(m) => Arc::new(m),
            None => first,
        })
    }

    /// Writes `batch` in parts of at most `limit` rows when it is larger and can be split
    /// ([`Batch::split`]), each part retried until written; a part whose write times out is
    /// split in two and the halves written instead, so a batch too large for the store's time
    /// limit is never retried whole forever. False if it gave up during shutdown.
    fn write_split(&mut self, batch: &B, limit: usize) -> bool {
        if batch.rows() > limit
            && let Some(parts) = batch.split(limit)
        {
            return parts.iter().all(|p| self.write_split(p, limit));
        }
        match self.write_with_retries(batch) {
            Written::Yes => true,
            Written::GaveUp => false,
            Written::TimedOut => {
                let half = batch.rows().div_ceil(2).max(1);
                tracing::warn!(
                    sink = self.sink.name(),
                    epoch = batch.epoch(),
                    rows = batch.rows(),
                    "sink write timed out: writing the batch in halves"
                );
                self.write_split(batch, half)
            }
        }
    }

    /// Writes `batch`, retrying until it succeeds; a timeout of a batch that can be split is
    /// handed back ([`Written::TimedOut`]) instead of retried.
    fn write_with_retries(&mut self, batch: &B) -> Written {
        let name = self.sink.name();
        let mut backoff = self.initial_backoff;
        let mut attempt: u64 = 0;
        let mut attempts_while_stopping = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.sink.write(batch)));
            let error = match result {
                Ok(Ok(())) => {
                    self.metrics
                        .sink_write_seconds
                        .get_or_create(&self.label)
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics
                        .sink_last_write_ms
                        .get_or_create(&self.label)
                        .set(eddy_core::now_ms());
                    if attempt > 1 {
                        tracing::info!(
                            sink = name,
                            epoch = batch.epoch(),
                            attempt,
                            "sink write succeeded after retries"
                        );
                    }
                    return Written::Yes;
                }
                Ok(Err(e)) if e.is_timeout() && batch.rows() > 1 && batch.split(1).is_some() => {
                    self.metrics.sink_failed(&self.label, &e.to_string());
                    return Written::TimedOut;
                }
                Ok(Err(e)) => {
                    let retryable = e.is_retryable();
                    if retryable {
                        tracing::warn!(sink = name, epoch = batch.epoch(), attempt, error = %e, "sink write failed; retrying");
                    } else {
                        tracing::error!(sink = name, epoch = batch.epoch(), attempt, error = %e, "sink write failed (needs an operator); retrying");
                    }
                    e.to_string()
                }
                Err(_) => {
                    tracing::error!(
                        sink = name,
                        epoch = batch.epoch(),
                        attempt,
                        "sink write panicked; retrying"
                    );
                    "panic".to_owned()
                }
            };
            self.metrics.sink_failed(&self.label, &error);
            if self.shared.is_stopping() {
                attempts_while_stopping += 1;
                if attempts_while_stopping > SHUTDOWN_ATTEMPTS {
                    tracing::error!(sink = name, epoch = batch.epoch(), error = %error, "giving up at shutdown");
                    return Written::GaveUp;
                }
                // Do not cut the backoff short while stopping: pause() returns at once then.
                std::thread::sleep(backoff);
            } else {
                self.shared.pause(backoff);
            }
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }
}

/// How [`Run::write_with_retries`] ended.
enum Written {
    Yes,
    /// Still failing at shutdown.
    GaveUp,
    /// The store's time limit ran out: split the batch.
    TimedOut,
}
