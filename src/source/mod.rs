//! The source operator: reads partitions, validates events, applies the event-time watermark,
//! and reports per-partition progress.
//!
//! # Protocol (per worker, per epoch `e`)
//! 1. Wait until the watermark `W(e)` is known (every worker has finished epoch `e - 1`).
//! 2. Read records for up to `epoch_ms` (at most `max_records_per_epoch`), unless
//!    `max_inflight_epochs` epochs with data are not yet held by the fresh lane's sinks, or
//!    `max_lagging_epochs` by every sink (backpressure, see [`Backpressure`]).
//!    Each record is one of:
//!    - below the restored checkpoint's high offset, and malformed or in a window already
//!      final under the restored watermark → skipped (it was dead-lettered or counted before
//!      the restart; every record late before the restart is in such a window, as the
//!      watermark only grows), except that a valid event of a final window still inside the
//!      retention (the sliding window) goes to `history`: it rebuilds sliding state only;
//!    - malformed, or dated after its Kafka timestamp (the wall clock for a record without
//!      one, and never later than the wall clock) + `max_future_ms` → dead letter with its
//!      reason (`bad_ts` for the future);
//!    - in a window closed under `W(e)`, or under its partition's own watermark (the largest
//!      event time of the partition's records before it, minus the lateness) → dead letter
//!      `late`. The second bound makes the decision a function of the partition's records
//!      alone (see [`SourceSettings::lateness_ms`]);
//!    - otherwise an on-time event at time `e`.
//! 3. Report the progress of every partition that changed, then advance to `e + 1`.
//!
//! Nothing is dropped silently: every record ends up counted, dead-lettered or (on replay)
//! recognised as already counted.

use crate::reader::{PartitionReader, Record};
use differential_dataflow::{AsCollection, VecCollection};
pub use eddy_core::DeadLetter;
use eddy_core::event::check_not_future;
use eddy_core::{Checkpoint, Event, Metrics, WindowSpec, parse_event};
use eddy_operators::{Epoch, PartitionProgress, WatermarkHandle};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

/// Source settings.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Tumbling window (decides lateness).
    pub window: WindowSpec,
    /// Allowed lateness, ms (`pipeline.lateness_ms`, as in the watermark policy). A record is
    /// late when its window is closed under `max(W(e), own)`, `own` being the largest event
    /// time of the records before it in its partition (this run) minus the lateness. While
    /// its partition counts in the watermark's minimum, `W(e) <= own`, so the decision is that
    /// of `own` alone: it does not depend on how reads were batched into epochs, on the pace
    /// of other partitions, or on a restart (a record a restart does not re-read has an event
    /// time at most the restored watermark plus the lateness, which the restored floor covers).
    /// Only a partition that was idle (out of the minimum) can meet a `W(e)` ahead of its own;
    /// a restart reads the letters of records ruled late before it back
    /// ([`SourceSettings::late_before_restore`]).
    pub lateness_ms: i64,
    /// How long after its start a window's events still feed some state (the sliding window's
    /// length; at least the tumbling window's).
    pub retain_ms: i64,
    /// Epoch length.
    pub epoch: Duration,
    /// Most records per epoch per worker.
    pub max_records_per_epoch: usize,
    /// Most epochs with data in flight before reading pauses, counted until the fresh lane
    /// holds them ([`Backpressure::fresh`]).
    pub max_inflight_epochs: usize,
    /// Most epochs with data in flight before reading pauses, counted until every sink holds
    /// them ([`Backpressure::durable`]): how far the lagging lane may trail.
    pub max_lagging_epochs: usize,
    /// Most records in the epochs in flight until every sink holds them: while catching up
    /// (full epochs), the lagging lane holds no more than the fresh lane's bound allows
    /// (`max_inflight_epochs × max_records_per_epoch` in eddy run).
    pub max_lagging_records: usize,
    /// Quiet time after which a caught-up partition is idle.
    pub idle_timeout: Duration,
    /// Checkpoint restored at start-up, if any.
    pub restore: Option<Checkpoint>,
    /// Whether re-read records of windows final under the restored watermark feed the
    /// sliding-window state (`history`), as when that state is rebuilt by re-reading; `false`
    /// when it was restored from the stores: they are skipped.
    pub replay_history: bool,
    /// Re-read records that were dead-lettered as `late` before the restart, as `(partition,
    /// offset)` (read back from the dead-letter topic, from the resume offsets to the log end
    /// at the restart): they are late again (not applied, not sent again) and never feed the
    /// sliding-window history.
    pub late_before_restore: Arc<HashSet<(i32, i64)>>,
    /// Latest accepted event time after the record's Kafka timestamp (capped at the wall
    /// clock; the wall clock for a record without one), ms (`pipeline.max_future_ms`): a later
    /// event is a dead letter `bad_ts`, so it moves neither the watermark nor the resume
    /// offset. Measured from the record's own timestamp, the decision is the same when the
    /// record is read again after a restart or in a replay.
    pub max_future_ms: i64,
    /// The wall clock that bound is measured from.
    pub clock: WallClock,
}

/// The wall clock, epoch ms: the system's, or any function (tests).
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl WallClock {
    /// The system clock ([`eddy_core::now_ms`]).
    pub fn system() -> Self {
        Self(Arc::new(eddy_core::now_ms))
    }
    /// A clock reading `f()`.
    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
    /// Now, epoch ms.
    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::system()
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WallClock({})", self.now_ms())
    }
}

/// What reading waits for: two probes, each passing epoch `e` once its sinks hold `e`.
///
/// The *fresh* lane is what must stay fresh (counts, engagement, dead letters); the *durable*
/// probe follows every sink, the lagging lane's too (similarity, whose pane-close work takes
/// hundreds of milliseconds). Reading pauses while `max_inflight_epochs` epochs with data are
/// not yet passed by `fresh`, or `max_lagging_epochs` not yet passed by `durable`: a pane
/// close's burst in the lagging lane does not stop the counts, and a slow sink in either lane
/// still bounds what is in flight.
#[derive(Clone)]
pub struct Backpressure {
    /// Passes `e` once the fresh lane's sinks hold `e`.
    pub fresh: ProbeHandle<Epoch>,
    /// Passes `e` once every sink holds `e` (checkpoints follow it too).
    pub durable: ProbeHandle<Epoch>,
}

impl Backpressure {
    /// Two fresh probes.
    pub fn new() -> Self {
        Self {
            fresh: ProbeHandle::new(),
            durable: ProbeHandle::new(),
        }
    }
}

impl Default for Backpressure {
    fn default() -> Self {
        Self::new()
    }
}

/// The source's output streams.
pub struct SourceStreams<'scope> {
    /// On-time events (insert-only).
    pub events: VecCollection<'scope, Epoch, Event, isize>,
    /// Replayed events of windows final before a restart but still inside the retention: they
    /// rebuild sliding-window state only (insert-only).
    pub history: VecCollection<'scope, Epoch, Event, isize>,
    /// Progress reports, for `TrackWatermark`.
    pub progress: StreamVec<'scope, Epoch, PartitionProgress>,
    /// Dead letters.
    pub dead_letters: StreamVec<'scope, Epoch, DeadLetter>,
}

#[derive(Debug, Default)]
struct PartState {
    max_ts: Option<i64>,
    next_offset: i64,
    idle: bool,
    reported: bool,
    changed: bool,
    last_record: Option<Instant>,
    seen_windows: BTreeSet<i64>,
    first_offsets: Vec<(i64, i64)>,
}

/// Builds the source operator over `reader` (see the module docs); reading waits for
/// `backpressure`'s probes.
pub fn source<'scope, R: PartitionReader>(
    scope: Scope<'scope, Epoch>,
    mut reader: R,
    settings: SourceSettings,
    watermark: WatermarkHandle,
    backpressure: Backpressure,
    metrics: Metrics,
) -> SourceStreams<'scope> {
    let mut builder = OperatorBuilder::new("Source".to_owned(), scope);
    let info = builder.operator_info();
    let activator = scope.activator_for(info.address.clone());
    let (events_out, events) = builder.new_output();
    let (history_out, history) = builder.new_output();
    let (progress_out, progress) = builder.new_output();
    let (dead_out, dead_letters) = builder.new_output();
    let mut events_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<(Event, Epoch, isize)>>>::from(events_out);
    let mut history_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<(Event, Epoch, isize)>>>::from(history_out);
    let mut progress_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<PartitionProgress>>>::from(progress_out);
    let mut dead_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<DeadLetter>>>::from(dead_out);

    builder.build(move |mut caps| {
        let mut dead_cap = caps.pop();
        let mut progress_cap = caps.pop();
        let mut history_cap = caps.pop();
        let mut events_cap = caps.pop();
        let window = settings.window;
        let retain = settings.retain_ms.max(window.size_ms);
        let (restore_wm, restore_high): (i64, HashMap<i32, i64>) = match &settings.restore {
            Some(cp) => (
                cp.watermark_ms,
                cp.partitions.iter().map(|p| (p.partition, p.high_offset)).collect(),
            ),
            None => (i64::MIN, HashMap::new()),
        };
        let mut parts: HashMap<i32, PartState> = reader
            .partitions()
            .into_iter()
            .map(|p| (p, PartState { next_offset: reader.start_offset(p), ..PartState::default() }))
            .collect();
        let mut epoch: Epoch = 0;
        let mut epoch_started: Option<Instant> = None;
        let mut read_this_epoch = 0usize;
        // Epochs with data not yet durable, with the records read in each.
        let mut inflight: VecDeque<(Epoch, usize)> = VecDeque::new();
        let mut inflight_records = 0usize;
        let started = Instant::now();
        move |_frontiers| {
            let Some(cap) = events_cap.as_ref() else { return };
            let Some(wm) = watermark.watermark_at(epoch) else {
                // Other workers have not finished the previous epoch yet.
                activator.activate_after(Duration::from_micros(200));
                return;
            };
            let now = Instant::now();
            let began = *epoch_started.get_or_insert(now);
            while let Some(&(e, n)) = inflight.front() {
                if backpressure.durable.less_equal(&e) {
                    break;
                }
                inflight.pop_front();
                inflight_records -= n;
            }
            // The fresh lane passes a prefix of what is in flight.
            let fresh_inflight = inflight
                .iter()
                .rev()
                .take_while(|(e, _)| backpressure.fresh.less_equal(e))
                .count();
            if fresh_inflight < settings.max_inflight_epochs
                && inflight.len() < settings.max_lagging_epochs
                && inflight_records < settings.max_lagging_records
                && read_this_epoch < settings.max_records_per_epoch
            {
                let mut events = events_out.activate();
                let mut events = events.session(cap);
                let mut dead = dead_out.activate();
                let mut dead = dead.session(dead_cap.as_ref().expect("held with events_cap"));
                let mut history = history_out.activate();
                let mut history =
                    history.session(history_cap.as_ref().expect("held with events_cap"));
                let budget = settings.max_records_per_epoch - read_this_epoch;
                let now_ms = settings.clock.now_ms();
                let max_future_ms = settings.max_future_ms;
                let result = reader.poll(budget, &mut |rec: Record<'_>| {
                    let st = parts.entry(rec.partition).or_default();
                    st.next_offset = rec.offset + 1;
                    st.changed = true;
                    st.last_record = Some(now);
                    let replayed = restore_high.get(&rec.partition).is_some_and(|&h| rec.offset < h);
                    // The future bound is measured from the record's Kafka timestamp when it has
                    // one (fixed per record: a record judged `bad_ts` once is judged so after a
                    // restart or in a replay too), else from the wall clock.
                    let produced_ms = rec.timestamp_ms.unwrap_or(now_ms).min(now_ms);
                    let parsed = parse_event(rec.payload).and_then(|ev| {
                        check_not_future(ev.ts_ms, produced_ms, max_future_ms).map(|()| ev)
                    });
                    match parsed {
                        // Dead-lettered before the restart.
                        Err(_) if replayed => {
                            metrics.replay_skipped.inc();
                        }
                        Err(e) => {
                            metrics.dead_letter(e.reason());
                            dead.give(DeadLetter {
                                partition: rec.partition,
                                offset: rec.offset,
                                reason: e.reason().to_owned(),
                                error: e.to_string(),
                                payload: rec.payload.to_vec(),
                            });
                        }
                        Ok(ev) => {
                            if replayed && window.is_closed(ev.ts_ms, restore_wm) {
                                let start = window.start(ev.ts_ms);
                                let was_late = settings
                                    .late_before_restore
                                    .contains(&(rec.partition, rec.offset));
                                if settings.replay_history
                                    && !was_late
                                    && start.saturating_add(retain) > restore_wm
                                {
                                    if st.seen_windows.insert(start) {
                                        st.first_offsets.push((start, rec.offset));
                                    }
                                    history.give((ev, epoch, 1));
                                } else {
                                    metrics.replay_skipped.inc();
                                }
                                return;
                            }
                            let own = st
                                .max_ts
                                .map_or(i64::MIN, |m| m.saturating_sub(settings.lateness_ms));
                            st.max_ts = st.max_ts.max(Some(ev.ts_ms));
                            if !settings.late_before_restore.is_empty()
                                && settings
                                    .late_before_restore
                                    .contains(&(rec.partition, rec.offset))
                            {
                                // Late before the restart (its letter is on the topic): late
                                // again, whatever the watermark it meets now.
                                metrics.replay_skipped.inc();
                                return;
                            }
                            let judged = wm.max(own);
                            if window.is_closed(ev.ts_ms, judged) {
                                metrics.late_events.inc();
                                metrics.dead_letter("late");
                                dead.give(DeadLetter {
                                    partition: rec.partition,
                                    offset: rec.offset,
                                    reason: "late".to_owned(),
                                    error: format!(
                                        "event time {} is in window [{}, {}) already closed by watermark {}",
                                        ev.ts_ms,
                                        window.start(ev.ts_ms),
                                        window.end(ev.ts_ms),
                                        judged
                                    ),
                                    payload: rec.payload.to_vec(),
                                });
                                return;
                            }
                            let start = window.start(ev.ts_ms);
                            if st.seen_windows.insert(start) {
                                st.first_offsets.push((start, rec.offset));
                            }
                            metrics.events_in.inc();
                            events.give((ev, epoch, 1));
                        }
                    }
                });
                match result {
                    Ok(n) => {
                        if n > 0 {
                            match inflight.back_mut() {
                                Some((e, m)) if *e == epoch => *m += n,
                                _ => inflight.push_back((epoch, n)),
                            }
                            inflight_records += n;
                        }
                        read_this_epoch += n;
                    }
                    // The partition set changed or similar: the run cannot go on; the worker
                    // fails with the error (and every other worker stops).
                    Err(e) if R::is_fatal(&e) => panic!("source cannot continue: {e}"),
                    Err(e) => tracing::warn!(error = %e, "source read failed; retrying"),
                }
            }
            if now.duration_since(began) < settings.epoch
                && read_this_epoch < settings.max_records_per_epoch
            {
                activator.activate_after(Duration::from_micros(500));
                return;
            }
            // End of epoch: report progress, then advance every capability.
            {
                let mut progress = progress_out.activate();
                let mut progress = progress.session(progress_cap.as_ref().expect("held"));
                for (&partition, st) in parts.iter_mut() {
                    let quiet = st.last_record.unwrap_or(started);
                    let idle = reader.at_end(partition)
                        && now.duration_since(quiet) >= settings.idle_timeout;
                    if st.changed || !st.reported || idle != st.idle {
                        st.idle = idle;
                        st.changed = false;
                        st.reported = true;
                        // Windows past the retention never need their first offset.
                        let keep = st.seen_windows.split_off(&(wm.saturating_sub(retain).saturating_add(1)));
                        st.seen_windows = keep;
                        progress.give(PartitionProgress {
                            partition,
                            max_ts_ms: st.max_ts,
                            idle,
                            next_offset: st.next_offset,
                            first_offsets: std::mem::take(&mut st.first_offsets),
                        });
                    }
                }
            }
            epoch += 1;
            for c in [&mut events_cap, &mut history_cap, &mut progress_cap, &mut dead_cap].into_iter().flatten() {
                c.downgrade(&epoch);
            }
            epoch_started = None;
            read_this_epoch = 0;
            activator.activate();
        }
    });
    SourceStreams {
        events: events.as_collection(),
        history: history.as_collection(),
        progress,
        dead_letters,
    }
}

#[cfg(test)]
mod tests;
