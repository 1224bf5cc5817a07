//! How far a replay is: per-partition offsets read (updated by each worker's
//! [`BoundedReader`]), the partitions reported idle at their end (from the source's progress
//! reports), and a reporter thread that turns them into log lines, a terminal progress line
//! and the `eddy_replay_*` metrics.

use super::ReplayPlan;
use crate::reader::{PartitionReader, Record};
use eddy_core::Metrics;
use eddy_core::metrics::PartitionLabel;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Shared progress of one replay (one process).
pub struct ReplayProgress {
    /// `(start, end)` of each partition, from the plan.
    ranges: HashMap<i32, (i64, i64)>,
    /// Next offset read per partition (starts at the plan's start or the restored resume).
    position: HashMap<i32, AtomicI64>,
    /// Epoch at which the partition was last reported idle at its end, or -1.
    idle_at_end: HashMap<i32, AtomicI64>,
    /// Set once the caught-up condition was met (logged once).
    caught_up: AtomicBool,
    /// Set once the replay read its whole plan and every result is durable.
    finished: AtomicBool,
    /// Records read by this process.
    read: AtomicU64,
}

impl ReplayProgress {
    /// Progress of `plan`, each partition's reading at `position` (start, or a restored resume
    /// offset).
    pub fn new(plan: &ReplayPlan, position: &HashMap<i32, i64>) -> Self {
        Self {
            ranges: plan
                .partitions
                .iter()
                .map(|p| (p.partition, (p.start, p.end)))
                .collect(),
            position: plan
                .partitions
                .iter()
                .map(|p| {
                    let at = position.get(&p.partition).copied().unwrap_or(p.start);
                    (p.partition, AtomicI64::new(at))
                })
                .collect(),
            idle_at_end: plan
                .partitions
                .iter()
                .map(|p| (p.partition, AtomicI64::new(-1)))
                .collect(),
            caught_up: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            read: AtomicU64::new(0),
        }
    }

    /// `(done, total)` offsets of `partition`.
    pub fn partition(&self, partition: i32) -> (i64, i64) {
        let (start, end) = self.ranges.get(&partition).copied().unwrap_or((0, 0));
        let at = self
            .position
            .get(&partition)
            .map_or(start, |a| a.load(Ordering::Relaxed));
        ((at.min(end) - start).max(0), (end - start).max(0))
    }

    /// `(done, total)` offsets over every partition.
    pub fn totals(&self) -> (i64, i64) {
        self.ranges.keys().fold((0, 0), |(d, t), p| {
            let (pd, pt) = self.partition(*p);
            (d + pd, t + pt)
        })
    }

    /// Whether every partition has been read up to its end.
    pub fn read_to_end(&self) -> bool {
        self.ranges.iter().all(|(p, (_, end))| {
            self.position
                .get(p)
                .is_some_and(|a| a.load(Ordering::Relaxed) >= *end)
        })
    }

    /// Records a source progress report of `partition` at `epoch`: idle with `next_offset`.
    pub fn observe(&self, partition: i32, idle: bool, next_offset: i64, epoch: u64) {
        let Some(slot) = self.idle_at_end.get(&partition) else {
            return;
        };
        let end = self.ranges.get(&partition).map_or(i64::MAX, |r| r.1);
        let at_end = idle && next_offset >= end;
        slot.store(if at_end { epoch as i64 } else { -1 }, Ordering::SeqCst);
    }

    /// The latest epoch at which a partition was reported idle at its end, once every
    /// partition has been: a checkpoint taken after it holds the final watermark.
    pub fn all_idle_at_end(&self) -> Option<u64> {
        let mut latest = 0;
        for slot in self.idle_at_end.values() {
            let e = slot.load(Ordering::SeqCst);
            if e < 0 {
                return None;
            }
            latest = latest.max(e as u64);
        }
        Some(latest)
    }

    /// Marks the caught-up condition; true the first time.
    pub fn set_caught_up(&self) -> bool {
        !self.caught_up.swap(true, Ordering::SeqCst)
    }

    /// Whether the replay caught up with its plan's end.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::SeqCst)
    }

    /// Marks the replay finished.
    pub fn set_finished(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }

    /// Whether the replay read its whole plan and every result is durable.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    fn advance(&self, partition: i32, next: i64, n: u64) {
        if let Some(a) = self.position.get(&partition) {
            a.fetch_max(next, Ordering::Relaxed);
        }
        self.read.fetch_add(n, Ordering::Relaxed);
    }
}

/// A reader bounded by a replay plan: hands over only the records before each partition's end
/// (when `bounded`), pauses a partition that reached it, reports it at its end, keeps the
/// replay's progress, and reads at most `rate_limit` records per second if set.
pub struct BoundedReader<R> {
    inner: R,
    /// `(partition, end, next offset)` of each partition this reader owns.
    parts: Vec<(i32, i64, i64)>,
    bounded: bool,
    progress: Arc<ReplayProgress>,
    rate: Option<TokenBucket>,
}

impl<R: PartitionReader> BoundedReader<R> {
    /// Wraps `inner`; `bounded`: stop each partition at its plan end (`--then stop`).
    pub fn new(
        inner: R,
        plan: &ReplayPlan,
        bounded: bool,
        progress: Arc<ReplayProgress>,
        rate_limit: Option<f64>,
    ) -> Self {
        let mut parts: Vec<(i32, i64, i64)> = inner
            .partitions()
            .into_iter()
            .map(|p| (p, plan.end(p).unwrap_or(i64::MAX), inner.start_offset(p)))
            .collect();
        let mut inner = inner;
        if bounded {
            for (p, end, next) in &parts {
                if next >= end {
                    inner.pause(*p);
                }
            }
        }
        parts.sort_unstable();
        Self {
            inner,
            parts,
            bounded,
            progress,
            rate: rate_limit.filter(|r| *r > 0.0).map(TokenBucket::new),
        }
    }
}

impl<R: PartitionReader> PartitionReader for BoundedReader<R> {
    type Error = R::Error;
    fn partitions(&self) -> Vec<i32> {
        self.inner.partitions()
    }
    fn start_offset(&self, partition: i32) -> i64 {
        self.inner.start_offset(partition)
    }
    fn poll(&mut self, max: usize, f: &mut dyn FnMut(Record<'_>)) -> Result<usize, R::Error> {
        let max = match &mut self.rate {
            Some(bucket) => bucket.take(max),
            None => max,
        };
        if max == 0 || (self.bounded && self.parts.iter().all(|(_, end, next)| next >= end)) {
            return Ok(0);
        }
        let parts = &mut self.parts;
        let bounded = self.bounded;
        let mut handed = 0;
        let mut reached = Vec::new();
        let result = self.inner.poll(max, &mut |rec: Record<'_>| {
            let Some(slot) = parts.iter_mut().find(|s| s.0 == rec.partition) else {
                return;
            };
            if bounded && rec.offset >= slot.1 {
                return;
            }
            slot.2 = rec.offset + 1;
            if bounded && slot.2 >= slot.1 {
                reached.push(rec.partition);
            }
            handed += 1;
            f(rec);
        });
        for p in reached {
            self.inner.pause(p);
        }
        for (p, _, next) in &self.parts {
            self.progress.advance(*p, *next, 0);
        }
        self.progress
            .read
            .fetch_add(handed as u64, Ordering::Relaxed);
        if let Some(bucket) = &mut self.rate {
            bucket.give_back(max - handed);
        }
        result.map(|_| handed)
    }
    fn at_end(&self, partition: i32) -> bool {
        let reached = self
            .parts
            .iter()
            .any(|(p, end, next)| *p == partition && next >= end);
        (self.bounded && reached) || self.inner.at_end(partition)
    }
    fn is_fatal(error: &R::Error) -> bool {
        R::is_fatal(error)
    }
}

/// At most `rate` records per second, in bursts of at most one second's worth.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            tokens: 0.0,
            last: Instant::now(),
        }
    }
    fn take(&mut self, want: usize) -> usize {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate)
            .min(self.rate.max(1.0));
        self.last = now;
        let n = (self.tokens.floor() as usize).min(want);
        self.tokens -= n as f64;
        n
    }
    fn give_back(&mut self, n: usize) {
        self.tokens += n as f64;
    }
}

/// Reports progress every `every` until dropped: the `eddy_replay_*` metrics, a progress line
/// redrawn in place when stderr is a terminal, and a log line every 10 s.
pub struct Reporter {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    /// Starts the reporter of `progress`; `to_ms`: the `--to` time, if one.
    pub fn spawn(
        progress: Arc<ReplayProgress>,
        metrics: Metrics,
        to_ms: Option<i64>,
        every: Duration,
    ) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = stop.clone();
        metrics.replay_to_ms.set(to_ms.unwrap_or(0));
        let handle = std::thread::Builder::new()
            .name("replay-progress".into())
            .spawn(move || {
                let tty = std::io::stderr().is_terminal();
                let mut last = (Instant::now(), progress.read.load(Ordering::Relaxed));
                let mut rate = 0.0f64;
                let mut since_log = Instant::now();
                loop {
                    {
                        let (lock, cv) = &*s;
                        let stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                        let (stopped, _) = cv
                            .wait_timeout_while(stopped, every, |st| !*st)
                            .unwrap_or_else(|e| e.into_inner());
                        if *stopped {
                            if tty {
                                eprintln!();
                            }
                            return;
                        }
                    }
                    let now = Instant::now();
                    let read = progress.read.load(Ordering::Relaxed);
                    let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
                    let instant = (read - last.1) as f64 / secs;
                    rate = if rate == 0.0 {
                        instant
                    } else {
                        0.5 * rate + 0.5 * instant
                    };
                    last = (now, read);
                    let line = report(&progress, &metrics, rate, to_ms);
                    if tty {
                        eprint!("\r\x1b[2K{line}");
                        let _ = std::io::stderr().flush();
                    }
                    if since_log.elapsed() >= Duration::from_secs(10) {
                        tracing::info!(target: "eddy::replay", "{line}");
                        since_log = Instant::now();
                    }
                }
            })
            .ok();
        Self { stop, handle }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Sets the metrics from `progress` and returns the progress line.
fn report(progress: &ReplayProgress, metrics: &Metrics, rate: f64, to_ms: Option<i64>) -> String {
    let mut parts: Vec<i32> = progress.ranges.keys().copied().collect();
    parts.sort_unstable();
    let mut per = Vec::new();
    for p in parts {
        let (done, total) = progress.partition(p);
        let label = PartitionLabel { partition: p };
        metrics.replay_offsets_done.get_or_create(&label).set(done);
        metrics
            .replay_offsets_total
            .get_or_create(&label)
            .set(total);
        per.push(format!("{p}:{done}/{total}"));
    }
    let (done, total) = progress.totals();
    let ratio = if total > 0 {
        done as f64 / total as f64
    } else {
        1.0
    };
    let eta = if done >= total {
        0
    } else if rate > 0.0 {
        ((total - done) as f64 / rate).ceil() as i64
    } else {
        -1
    };
    metrics.replay_progress_ratio.set(ratio);
    metrics.replay_records_per_second.set(rate);
    metrics.replay_eta_seconds.set(eta);
    let wm = metrics.watermark_ms.get();
    let eta_text = if eta < 0 {
        "?".to_owned()
    } else {
        format!("{eta}s")
    };
    let to_text = to_ms.map_or(String::new(), |t| format!(" / to {t}"));
    format!(
        "replay {:5.1}% {done}/{total} offsets, {rate:.0} records/s, ETA {eta_text}, watermark {wm}{to_text} [{}]",
        ratio * 100.0,
        per.join(" ")
    )
}
