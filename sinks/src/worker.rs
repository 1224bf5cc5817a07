//! [`SinkWorker`]: one sink on its own thread behind a bounded queue.

use crate::{Batch, EpochSink};
use eddy_core::config::SinkConfig;
use eddy_core::metrics::SinkLabel;
use eddy_core::{
    CampaignEngagement, CampaignWindowCount, CountsBatch, DeadLetterBatch, EventType, Metrics,
    PaneEngagement, SimilarUsers, SimilarityBatch, TypeWindowStats, UserRecommendations,
};
use std::collections::BTreeMap;
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
///   attempt to `metrics.sink_errors{sink}`.
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
            if !self.write_with_retries(&batch) {
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

    /// Writes `batch`, retrying until it succeeds; false if it gave up during shutdown.
    fn write_with_retries(&mut self, batch: &B) -> bool {
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
                    if attempt > 1 {
                        tracing::info!(
                            sink = name,
                            epoch = batch.epoch(),
                            attempt,
                            "sink write succeeded after retries"
                        );
                    }
                    return true;
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
            self.metrics.sink_errors.get_or_create(&self.label).inc();
            if self.shared.is_stopping() {
                attempts_while_stopping += 1;
                if attempts_while_stopping > SHUTDOWN_ATTEMPTS {
                    tracing::error!(sink = name, epoch = batch.epoch(), error = %error, "giving up at shutdown");
                    return false;
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

/// Merges two consecutive batches into one equivalent write: `later`'s rows win over
/// `earlier`'s for the same key, epoch and watermark are the larger ones, `window_size_ms` and
/// `sliding_ms` are `later`'s.
///
/// * Windows (by type or campaign, event type and start): the later row wins, so a window that
///   became final in `later` is final.
/// * Campaign engagement (by campaign id): the later of update and removal wins (within one
///   batch a removal counts after an update, as the sinks apply them).
/// * `final_engagement` by `(window_start_ms, campaign_id)`: the later row wins.
/// * `top_campaigns`: `later`'s when `Some`, else `earlier`'s.
pub fn merge_batches(earlier: &CountsBatch, later: &CountsBatch) -> CountsBatch {
    let mut types: BTreeMap<(EventType, i64), (TypeWindowStats, bool)> = BTreeMap::new();
    let mut campaigns: BTreeMap<(u64, EventType, i64), (CampaignWindowCount, bool)> =
        BTreeMap::new();
    // Campaign id -> Some(new engagement) or None (removed).
    let mut engagement: BTreeMap<u64, Option<CampaignEngagement>> = BTreeMap::new();
    let mut panes: BTreeMap<(i64, u64), PaneEngagement> = BTreeMap::new();
    for b in [earlier, later] {
        for (list, fin) in [(&b.open_types, false), (&b.final_types, true)] {
            for r in list {
                types.insert((r.event_type, r.window_start_ms), (*r, fin));
            }
        }
        for (list, fin) in [(&b.open_campaigns, false), (&b.final_campaigns, true)] {
            for r in list {
                campaigns.insert((r.campaign_id, r.event_type, r.window_start_ms), (*r, fin));
            }
        }
        for e in &b.engagement {
            engagement.insert(e.campaign_id, Some(*e));
        }
        for &c in &b.engagement_removed {
            engagement.insert(c, None);
        }
        for p in &b.final_engagement {
            panes.insert((p.window_start_ms, p.campaign_id), *p);
        }
    }
    let mut out = CountsBatch {
        epoch: earlier.epoch.max(later.epoch),
        watermark_ms: earlier.watermark_ms.max(later.watermark_ms),
        window_size_ms: later.window_size_ms,
        sliding_ms: later.sliding_ms,
        top_campaigns: later
            .top_campaigns
            .clone()
            .or_else(|| earlier.top_campaigns.clone()),
        final_engagement: panes.into_values().collect(),
        ..CountsBatch::default()
    };
    for (r, fin) in types.into_values() {
        if fin {
            out.final_types.push(r)
        } else {
            out.open_types.push(r)
        }
    }
    for (r, fin) in campaigns.into_values() {
        if fin {
            out.final_campaigns.push(r)
        } else {
            out.open_campaigns.push(r)
        }
    }
    for (c, e) in engagement {
        match e {
            Some(e) => out.engagement.push(e),
            None => out.engagement_removed.push(c),
        }
    }
    out
}

impl Batch for CountsBatch {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn rows(&self) -> usize {
        self.open_types.len()
            + self.open_campaigns.len()
            + self.final_types.len()
            + self.final_campaigns.len()
            + self.engagement.len()
            + self.engagement_removed.len()
            + self.final_engagement.len()
            + self.top_campaigns.as_ref().map_or(0, Vec::len)
    }

    fn merge(&self, later: &Self) -> Self {
        merge_batches(self, later)
    }
}

impl Batch for SimilarityBatch {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn rows(&self) -> usize {
        self.similar.len() + self.recommendations.len()
    }

    /// Per user, the later list wins (an empty list, "none any more", included); `as_of_ms`
    /// and `sliding_ms` are `later`'s.
    fn merge(&self, later: &Self) -> Self {
        let mut similar: BTreeMap<u64, &SimilarUsers> = BTreeMap::new();
        let mut recommendations: BTreeMap<u64, &UserRecommendations> = BTreeMap::new();
        for b in [self, later] {
            similar.extend(b.similar.iter().map(|s| (s.user_id, s)));
            recommendations.extend(b.recommendations.iter().map(|r| (r.user_id, r)));
        }
        Self {
            epoch: self.epoch.max(later.epoch),
            as_of_ms: self.as_of_ms.max(later.as_of_ms),
            sliding_ms: later.sliding_ms,
            similar: similar.into_values().cloned().collect(),
            recommendations: recommendations.into_values().cloned().collect(),
        }
    }
}

impl Batch for DeadLetterBatch {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn rows(&self) -> usize {
        self.letters.len()
    }

    /// Letters are records, not keyed values: merging keeps every letter, in order.
    fn merge(&self, later: &Self) -> Self {
        let mut letters = Vec::with_capacity(self.letters.len() + later.letters.len());
        letters.extend_from_slice(&self.letters);
        letters.extend_from_slice(&later.letters);
        Self {
            epoch: self.epoch.max(later.epoch),
            letters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_core::{Neighbor, Recommendation, Score, Weights};

    fn eng(campaign_id: u64, views: u64) -> CampaignEngagement {
        CampaignEngagement {
            campaign_id,
            views,
            clicks: 1,
            conversions: 0,
            revenue_micros: 0,
            score: Weights::default().score(views, 1, 0),
        }
    }

    fn pane(window_start_ms: i64, campaign_id: u64, views: u64) -> PaneEngagement {
        PaneEngagement {
            window_start_ms,
            campaign_id,
            views,
            clicks: 0,
            conversions: 0,
            revenue_micros: 0,
        }
    }

    fn nb(user_id: u64) -> Neighbor {
        Neighbor {
            user_id,
            shared: 1,
            union: 3,
        }
    }

    fn sim(user_id: u64, neighbors: &[u64]) -> SimilarUsers {
        SimilarUsers {
            user_id,
            neighbors: neighbors.iter().map(|&u| nb(u)).collect(),
        }
    }

    fn recs(user_id: u64, campaigns: &[u64]) -> UserRecommendations {
        UserRecommendations {
            user_id,
            items: campaigns
                .iter()
                .map(|&campaign_id| Recommendation {
                    campaign_id,
                    score: Score(1.5),
                    campaign_score: Score(4.5),
                    because: vec![nb(9)],
                })
                .collect(),
        }
    }

    #[test]
    fn merge_coalesces_engagement_and_top_list() {
        let earlier = CountsBatch {
            epoch: 1,
            watermark_ms: 100,
            window_size_ms: 10,
            sliding_ms: 40,
            // 1: updated, then removed later. 2: removed, then updated later. 3: earlier only.
            // 4: updated in both. 5: removed only.
            engagement: vec![eng(1, 1), eng(3, 3), eng(4, 4)],
            engagement_removed: vec![2, 5],
            final_engagement: vec![pane(0, 1, 1), pane(0, 2, 2), pane(10, 1, 3)],
            top_campaigns: Some(vec![eng(4, 4), eng(3, 3)]),
            ..CountsBatch::default()
        };
        let later = CountsBatch {
            epoch: 2,
            watermark_ms: 110,
            window_size_ms: 10,
            sliding_ms: 50,
            engagement: vec![eng(2, 20), eng(4, 40)],
            engagement_removed: vec![1],
            final_engagement: vec![pane(0, 2, 22), pane(20, 3, 5)],
            top_campaigns: None,
            ..CountsBatch::default()
        };
        let m = merge_batches(&earlier, &later);
        assert_eq!(
            (m.epoch, m.watermark_ms, m.window_size_ms, m.sliding_ms),
            (2, 110, 10, 50)
        );
        assert_eq!(m.engagement, vec![eng(2, 20), eng(3, 3), eng(4, 40)]);
        assert_eq!(m.engagement_removed, vec![1, 5]);
        assert_eq!(
            m.final_engagement,
            vec![
                pane(0, 1, 1),
                pane(0, 2, 22),
                pane(10, 1, 3),
                pane(20, 3, 5)
            ]
        );
        // No top list later: the earlier one stays.
        assert_eq!(m.top_campaigns, Some(vec![eng(4, 4), eng(3, 3)]));
        assert_eq!(m.rows(), 3 + 2 + 4 + 2);

        // A later top list wins, also an empty one.
        let newer = CountsBatch {
            epoch: 3,
            watermark_ms: 120,
            top_campaigns: Some(vec![]),
            ..CountsBatch::default()
        };
        assert_eq!(merge_batches(&m, &newer).top_campaigns, Some(vec![]));
        assert_eq!(
            merge_batches(&newer, &later).top_campaigns,
            Some(vec![]),
            "a later None keeps the earlier Some"
        );
        // Merging a batch with itself changes nothing (idempotent).
        let again = merge_batches(&m, &m);
        assert_eq!(again, m);
    }

    #[test]
    fn merge_coalesces_similarity_and_recommendations() {
        let earlier = SimilarityBatch {
            epoch: 1,
            as_of_ms: 100,
            sliding_ms: 40,
            similar: vec![sim(7, &[8, 9]), sim(8, &[7])],
            recommendations: vec![recs(7, &[1, 2]), recs(8, &[3])],
        };
        let later = SimilarityBatch {
            epoch: 2,
            as_of_ms: 110,
            sliding_ms: 50,
            similar: vec![sim(7, &[]), sim(9, &[7])],
            recommendations: vec![recs(8, &[]), recs(9, &[4])],
        };
        let m = earlier.merge(&later);
        assert_eq!((m.epoch, m.as_of_ms, m.sliding_ms), (2, 110, 50));
        assert_eq!(m.similar, vec![sim(7, &[]), sim(8, &[7]), sim(9, &[7])]);
        assert_eq!(
            m.recommendations,
            vec![recs(7, &[1, 2]), recs(8, &[]), recs(9, &[4])]
        );
        assert_eq!(m.rows(), 6);
        assert_eq!(m.merge(&m), m, "merging with itself changes nothing");
    }
}
