//! `track_watermark`: the event-time watermark and the source checkpoint, computed identically
//! on every worker from broadcast per-partition progress reports.
//!
//! # Protocol
//! At the end of each epoch `e` in which anything changed, the source that owns partition `p`
//! reports a [`PartitionProgress`] at time `e`: the largest event time seen in `p`, whether `p`
//! is idle (caught up and quiet for the idle timeout), the next offset to read, and the first
//! offset of each window first seen in `p` during `e`. Reports are broadcast, so once the
//! frontier of reports passes `e - 1` every worker holds the same reports for epochs `< e` and
//! computes the same watermark for epoch `e`:
//!
//! `W(e) = max(W(e-1), floor, min over non-idle partitions of max_ts) - lateness`
//! (if every partition is idle, the max over partitions is used, so idle inputs never stall
//! progress; a partition that has not yet seen an event holds the watermark back).
//!
//! Sources read epoch `e` only once `W(e)` is known ([`WatermarkHandle::watermark_at`]) and
//! reject events whose window is closed under it. The watermark is emitted at time `e` when it
//! changes, for the windowed operators and the sinks.
//!
//! The checkpoint of epoch `e` ([`EpochCheckpoint`]) gives, per partition, the first offset that
//! still feeds a window open under `W(e)`, or still inside the retention (`retain_ms`, the
//! sliding window) (resume here to rebuild open windows and sliding state) and the next
//! offset after everything read before `e` (records below it whose window is closed are skipped
//! on replay). It is valid once every sink has written epoch `e`.

use crate::{Epoch, EpochStash};
use eddy_core::{PartitionCheckpoint, WindowSpec};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::operators::vec::Broadcast;

/// What a source says about one partition at the end of an epoch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionProgress {
    /// The partition.
    pub partition: i32,
    /// Largest event time seen in the partition so far (this run), if any.
    pub max_ts_ms: Option<i64>,
    /// Caught up and quiet for the idle timeout: excluded from the watermark's minimum.
    pub idle: bool,
    /// Next offset to read.
    pub next_offset: i64,
    /// `(window_start, offset)` of the first record of each window first seen this epoch.
    pub first_offsets: Vec<(i64, i64)>,
}

/// Watermark parameters.
#[derive(Debug, Clone)]
pub struct WatermarkPolicy {
    /// Tumbling windows whose closing the watermark decides.
    pub window: WindowSpec,
    /// How long after its start a window's records are still needed to rebuild state on a
    /// restart: the longest window any dataflow keeps (a sliding window's length; at least
    /// `window.size_ms`). The resume offset is the first offset of a window younger than this.
    pub retain_ms: i64,
    /// Allowed lateness, ms.
    pub lateness_ms: i64,
    /// Every partition of the source (across all workers).
    pub partitions: Vec<i32>,
    /// Lowest watermark (a restored checkpoint's), or `i64::MIN`.
    pub floor_ms: i64,
    /// After a restart, the offset each partition must reach before the state is *caught
    /// up* ([`WatermarkHandle::caught_up_at`]); empty: caught up from the start.
    pub catch_up_to: BTreeMap<i32, i64>,
    /// After a restart, the restored checkpoint's high offsets: until every partition has
    /// re-read up to its own, the watermark stays at the floor. A re-read record below them
    /// was judged before the crash against a watermark at most the checkpoint's (the floor),
    /// so its window, open under the floor, must still be open when it is read again, however
    /// far ahead the other partitions' re-reads are.
    pub replay_to: BTreeMap<i32, i64>,
}

impl WatermarkPolicy {
    /// The floor to restore from a checkpoint's watermark: never later than the wall clock
    /// `now_ms` + `max_future_ms` (`pipeline.max_future_ms`), so a watermark carried into the
    /// future (by a version without that bound, or a clock set wrong) does not survive the
    /// restart and make every new event late.
    ///
    /// Together with the sources rejecting event times after their wall clock +
    /// `max_future_ms` (`bad_ts`), this keeps `W(e) <= wall clock + max_future_ms - lateness`:
    /// reports only carry accepted event times.
    pub fn bounded_floor(checkpoint_watermark_ms: i64, now_ms: i64, max_future_ms: i64) -> i64 {
        checkpoint_watermark_ms.min(now_ms.saturating_add(max_future_ms.max(0)))
    }
}

/// A checkpoint candidate for one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochCheckpoint {
    /// The epoch.
    pub epoch: Epoch,
    /// `W(epoch)`.
    pub watermark_ms: i64,
    /// One entry per partition, sorted.
    pub partitions: Vec<PartitionCheckpoint>,
}

#[derive(Debug, Default)]
struct Log {
    /// All reports of epochs `< known_before` are applied.
    known_before: Epoch,
    watermark: i64,
    /// Checkpoint candidates not yet taken, by epoch (kept only on the coordinating worker).
    checkpoints: BTreeMap<Epoch, EpochCheckpoint>,
    /// Whether this worker takes checkpoints (and so records candidates).
    records_checkpoints: bool,
    /// The first epoch whose state holds every record below the catch-up offsets.
    caught_up: Option<Epoch>,
    /// Every partition has re-read up to [`WatermarkPolicy::replay_to`].
    replayed: bool,
}

/// Most checkpoint candidates kept. Dropping the oldest only delays a checkpoint: the newest
/// durable candidate subsumes older ones.
const MAX_CANDIDATES: usize = 4_096;

/// Per-worker shared view of the watermark (read by the source and the checkpoint committer).
#[derive(Debug, Clone, Default)]
pub struct WatermarkHandle(Rc<RefCell<Log>>);

impl WatermarkHandle {
    /// A handle whose epoch-0 watermark is `floor_ms`. It records no checkpoint candidates.
    pub fn new(floor_ms: i64) -> Self {
        Self(Rc::new(RefCell::new(Log {
            watermark: floor_ms,
            ..Log::default()
        })))
    }
    /// A handle that also records checkpoint candidates, for the worker that takes them
    /// ([`WatermarkHandle::take_checkpoint`]).
    pub fn recording_checkpoints(floor_ms: i64) -> Self {
        Self(Rc::new(RefCell::new(Log {
            watermark: floor_ms,
            records_checkpoints: true,
            ..Log::default()
        })))
    }
    /// `W(epoch)`, once every report of earlier epochs has been applied.
    pub fn watermark_at(&self, epoch: Epoch) -> Option<i64> {
        let log = self.0.borrow();
        (log.known_before >= epoch).then_some(log.watermark)
    }
    /// After a restart, the first epoch `c` whose state holds every record the previous run
    /// had read (every partition's reads reached [`WatermarkPolicy::catch_up_to`] during
    /// epochs `< c`); `Some(0)` without a catch-up; `None` while catching up. The same on
    /// every worker, and known to an operator reading the watermark stream once that stream
    /// passes `c - 1`: the stream carries a value at `c` (the watermark, repeated if
    /// unchanged), so an operator holding outputs back until `c` is woken at `c`.
    pub fn caught_up_at(&self) -> Option<Epoch> {
        self.0.borrow().caught_up
    }
    /// The latest watermark computed.
    pub fn latest(&self) -> i64 {
        self.0.borrow().watermark
    }
    /// Removes and returns the newest checkpoint candidate with epoch `<= through`
    /// (older candidates are dropped: the newest subsumes them).
    pub fn take_checkpoint(&self, through: Epoch) -> Option<EpochCheckpoint> {
        let mut log = self.0.borrow_mut();
        let rest = log.checkpoints.split_off(&(through + 1));
        let taken = std::mem::replace(&mut log.checkpoints, rest);
        taken.into_values().next_back()
    }
}

#[derive(Debug, Default)]
struct PartitionState {
    max_ts: Option<i64>,
    idle: bool,
    next_offset: i64,
    first_offsets: BTreeMap<i64, i64>,
}

/// Computes the watermark from progress reports (see the module docs).
pub trait TrackWatermark<'scope> {
    /// Broadcasts the reports, maintains `handle`, and returns the stream of watermark changes
    /// (`W(e)` at time `e`) on every worker.
    ///
    /// ```
    /// use eddy_core::WindowSpec;
    /// use eddy_operators::{PartitionProgress, TrackWatermark, WatermarkHandle, WatermarkPolicy};
    /// use timely::dataflow::operators::{ToStream, Capture, capture::Extract};
    ///
    /// let captured = timely::example(|scope| {
    ///     let report = |partition, ts| PartitionProgress {
    ///         partition, max_ts_ms: Some(ts), idle: false, next_offset: 1, first_offsets: vec![],
    ///     };
    ///     let policy = WatermarkPolicy {
    ///         window: WindowSpec::new(1_000), retain_ms: 1_000, lateness_ms: 100, partitions: vec![0, 1],
    ///         floor_ms: i64::MIN, catch_up_to: Default::default(), replay_to: Default::default(),
    ///     };
    ///     vec![report(0, 5_000), report(1, 3_000)]
    ///         .to_stream(scope)
    ///         .track_watermark(policy, WatermarkHandle::new(i64::MIN))
    ///         .capture()
    /// });
    /// // Reports at epoch 0 set the watermark of epoch 1: min(5000, 3000) - 100.
    /// assert_eq!(captured.extract(), vec![(1, vec![2_900])]);
    /// ```
    fn track_watermark(
        self,
        policy: WatermarkPolicy,
        handle: WatermarkHandle,
    ) -> StreamVec<'scope, Epoch, i64>;
}

impl<'scope> TrackWatermark<'scope> for StreamVec<'scope, Epoch, PartitionProgress> {
    fn track_watermark(
        self,
        policy: WatermarkPolicy,
        handle: WatermarkHandle,
    ) -> StreamVec<'scope, Epoch, i64> {
        self.broadcast()
            .unary_frontier(Pipeline, "TrackWatermark", move |_cap, _info| {
                let mut pending = EpochStash::<PartitionProgress>::default();
                let mut parts: HashMap<i32, PartitionState> = HashMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| pending.absorb(cap, data));
                    // The frontier's least element: every report of earlier epochs is here.
                    // Input closed: every report is here; complete the epoch after the last one.
                    let closed = || pending.last_epoch().map(|t| t.saturating_add(1));
                    let Some(known_before) =
                        frontier.frontier().iter().min().copied().or_else(closed)
                    else {
                        return;
                    };
                    drain(
                        &mut pending,
                        known_before,
                        &mut parts,
                        &policy,
                        &handle,
                        output,
                    );
                }
            })
    }
}

/// Whether partition `p` has been read up to `offset`, or to its end (idle: a log that ends
/// before `offset`, e.g. emptied by retention or ending in transaction markers, has nothing
/// more to read).
fn reached(parts: &HashMap<i32, PartitionState>, p: i32, offset: i64) -> bool {
    parts
        .get(&p)
        .is_some_and(|s| s.next_offset >= offset || s.idle)
}

fn drain(
    pending: &mut EpochStash<PartitionProgress>,
    known_before: Epoch,
    parts: &mut HashMap<i32, PartitionState>,
    policy: &WatermarkPolicy,
    handle: &WatermarkHandle,
    output: &mut timely::dataflow::operators::generic::OutputBuilderSession<
        '_,
        Epoch,
        timely::container::CapacityContainerBuilder<Vec<i64>>,
    >,
) {
    let mut last_cap = None;
    while let Some((cap, reports)) = pending.pop_if(|t| *t < known_before) {
        for r in reports {
            let st = parts.entry(r.partition).or_default();
            st.max_ts = st.max_ts.max(r.max_ts_ms);
            st.idle = r.idle;
            st.next_offset = st.next_offset.max(r.next_offset);
            for (start, offset) in r.first_offsets {
                st.first_offsets.entry(start).or_insert(offset);
            }
        }
        last_cap = Some(cap);
    }
    let mut log = handle.0.borrow_mut();
    if known_before <= log.known_before {
        return;
    }
    log.known_before = known_before;
    let Some(cap) = last_cap else { return };
    // Watermark for epoch `known_before` (saturating at the epoch range's end).
    let active: Vec<Option<i64>> = policy
        .partitions
        .iter()
        .filter(|p| parts.get(p).is_none_or(|s| !s.idle))
        .map(|p| parts.get(p).and_then(|s| s.max_ts))
        .collect();
    let candidate = if active.is_empty() {
        parts.values().filter_map(|s| s.max_ts).max()
    } else if active.iter().all(Option::is_some) {
        active.iter().flatten().min().copied()
    } else {
        None
    };
    let before = log.watermark;
    log.replayed = log.replayed || policy.replay_to.iter().all(|(p, o)| reached(parts, *p, *o));
    if let Some(c) = candidate.filter(|_| log.replayed) {
        log.watermark = log.watermark.max(c.saturating_sub(policy.lateness_ms));
    }
    log.watermark = log.watermark.max(policy.floor_ms);
    let w = log.watermark;
    let mut announce = false;
    if log.caught_up.is_none() {
        if policy.catch_up_to.is_empty() {
            log.caught_up = Some(0);
        } else if policy
            .catch_up_to
            .iter()
            .all(|(p, o)| reached(parts, *p, *o))
        {
            log.caught_up = Some(known_before);
            announce = true;
        }
    }
    for st in parts.values_mut() {
        // Windows past the retention no longer hold the resume offset back.
        let retain = policy.retain_ms.max(policy.window.size_ms);
        let open = st
            .first_offsets
            .split_off(&w.saturating_sub(retain).saturating_add(1));
        st.first_offsets = open;
    }
    let epoch = known_before;
    if log.records_checkpoints && policy.partitions.iter().all(|p| parts.contains_key(p)) {
        let mut partitions: Vec<PartitionCheckpoint> = policy
            .partitions
            .iter()
            .map(|p| {
                let st = &parts[p];
                PartitionCheckpoint {
                    partition: *p,
                    resume_offset: st
                        .first_offsets
                        .values()
                        .min()
                        .copied()
                        .unwrap_or(st.next_offset)
                        .min(st.next_offset),
                    high_offset: st.next_offset,
                }
            })
            .collect();
        partitions.sort();
        log.checkpoints.insert(
            epoch,
            EpochCheckpoint {
                epoch,
                watermark_ms: w,
                partitions,
            },
        );
        while log.checkpoints.len() > MAX_CANDIDATES {
            log.checkpoints.pop_first();
        }
    }
    if w != before || announce {
        let cap = cap.delayed(&epoch);
        output.session(&cap).give(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::dataflow::operators::ToStream;

    /// Feeds two partitions' reports at epoch 0 and returns, for epoch 1, the checkpoint the
    /// handle gives (if any) and its latest watermark.
    fn run(recording: bool) -> (Option<EpochCheckpoint>, i64) {
        timely::execute_directly(move |worker| {
            let handle = if recording {
                WatermarkHandle::recording_checkpoints(i64::MIN)
            } else {
                WatermarkHandle::new(i64::MIN)
            };
            let h = handle.clone();
            worker.dataflow::<Epoch, _, _>(move |scope| {
                let report =
                    |partition, ts, next_offset, first: Vec<(i64, i64)>| PartitionProgress {
                        partition,
                        max_ts_ms: Some(ts),
                        idle: false,
                        next_offset,
                        first_offsets: first,
                    };
                let policy = WatermarkPolicy {
                    window: WindowSpec::new(1_000),
                    retain_ms: 1_000,
                    lateness_ms: 100,
                    partitions: vec![0, 1],
                    floor_ms: i64::MIN,
                    catch_up_to: Default::default(),
                    replay_to: Default::default(),
                };
                vec![
                    report(0, 5_000, 10, vec![(4_000, 3), (5_000, 7)]),
                    report(1, 3_000, 4, vec![(3_000, 0)]),
                ]
                .to_stream(scope)
                .track_watermark(policy, h);
            });
            while worker.step() {}
            let cp = handle.take_checkpoint(1);
            assert!(handle.take_checkpoint(1).is_none(), "taken once");
            (cp, handle.latest())
        })
    }

    #[test]
    fn only_the_recording_handle_keeps_checkpoints() {
        let (cp, latest) = run(true);
        let cp = cp.expect("a checkpoint for epoch 1");
        // W(1) = min(5000, 3000) - 100 = 2900: every window seen is still open, so each
        // partition resumes at the first offset of its oldest window.
        assert_eq!((cp.watermark_ms, latest), (2_900, 2_900));
        assert_eq!(
            cp.partitions,
            vec![
                PartitionCheckpoint {
                    partition: 0,
                    resume_offset: 3,
                    high_offset: 10
                },
                PartitionCheckpoint {
                    partition: 1,
                    resume_offset: 0,
                    high_offset: 4
                },
            ]
        );
        assert_eq!(run(false), (None, 2_900));
    }

    /// Feeds `epochs` of `(partition, max_ts, next_offset, idle)` reports to a tracker with `policy`,
    /// one epoch at a time; returns, after each epoch `e`, `W(e + 1)` and the catch-up epoch
    /// known then, and the watermark stream.
    #[allow(clippy::type_complexity)]
    fn run_epochs(
        policy: WatermarkPolicy,
        epochs: Vec<Vec<(i32, i64, i64, bool)>>,
    ) -> (Vec<(i64, Option<Epoch>)>, Vec<(Epoch, Vec<i64>)>) {
        use timely::dataflow::operators::Input;
        use timely::dataflow::operators::capture::{Capture, Extract};
        let (seen, marks) = timely::execute_directly(move |worker| {
            let handle = WatermarkHandle::new(policy.floor_ms);
            let h = handle.clone();
            let mut input = timely::dataflow::InputHandle::new();
            let captured = worker.dataflow::<Epoch, _, _>(|scope| {
                scope
                    .input_from(&mut input)
                    .track_watermark(policy, h)
                    .capture()
            });
            let mut seen = Vec::new();
            for (epoch, reports) in epochs.into_iter().enumerate() {
                for (partition, ts, next_offset, idle) in reports {
                    input.send(PartitionProgress {
                        partition,
                        max_ts_ms: Some(ts),
                        idle,
                        next_offset,
                        first_offsets: vec![],
                    });
                }
                let next = epoch as Epoch + 1;
                input.advance_to(next);
                worker.step_while(|| handle.watermark_at(next).is_none());
                seen.push((handle.watermark_at(next).unwrap(), handle.caught_up_at()));
            }
            drop(input);
            while worker.step() {}
            (seen, captured)
        });
        (seen, marks.extract())
    }

    fn restart_policy(floor_ms: i64) -> WatermarkPolicy {
        WatermarkPolicy {
            window: WindowSpec::new(1_000),
            retain_ms: 1_000,
            lateness_ms: 100,
            partitions: vec![0, 1],
            floor_ms,
            catch_up_to: Default::default(),
            replay_to: Default::default(),
        }
    }

    /// A restart must re-read partition 0 up to offset 8 and partition 1 up to 4: partition 1
    /// is there at epoch 0, partition 0 only at epoch 2, so the state is caught up at epoch 3,
    /// and the watermark stream carries a value at 3 although the watermark did not move.
    #[test]
    fn catch_up_is_known_at_the_epoch_after_the_last_partition_reaches_its_offset() {
        let policy = WatermarkPolicy {
            catch_up_to: [(0, 8), (1, 4)].into_iter().collect(),
            ..restart_policy(i64::MIN)
        };
        let epochs = vec![
            vec![(0, 5_000, 5, false), (1, 3_000, 4, false)],
            vec![(0, 5_000, 7, false)],
            vec![(0, 5_000, 8, false)],
        ];
        let (seen, marks) = run_epochs(policy, epochs);
        let caught_up: Vec<Option<Epoch>> = seen.iter().map(|(_, c)| *c).collect();
        assert_eq!(caught_up, vec![None, None, Some(3)]);
        assert_eq!(marks, vec![(1, vec![2_900]), (3, vec![2_900])]);
    }

    /// After a restart from a checkpoint at watermark 2 000 with high offsets 6 (partition 0)
    /// and 4 (partition 1): partition 1's re-read is done at epoch 0 with events far ahead, and
    /// partition 0 has re-read up to offset 5 only; the watermark stays at the floor until
    /// partition 0 reaches 6 (at epoch 1), although both partitions' events are past it.
    #[test]
    fn the_watermark_stays_at_the_floor_until_every_partition_is_re_read() {
        let policy = WatermarkPolicy {
            replay_to: [(0, 6), (1, 4)].into_iter().collect(),
            ..restart_policy(2_000)
        };
        let epochs = vec![
            vec![(0, 4_000, 5, false), (1, 9_000, 4, false)],
            vec![(0, 4_500, 6, false)],
        ];
        let (seen, _) = run_epochs(policy.clone(), epochs);
        let marks: Vec<i64> = seen.iter().map(|(w, _)| *w).collect();
        assert_eq!(marks, vec![2_000, 4_400]);
        // A partition whose log ends before its offset (emptied by retention) is read once it
        // is idle at its end: neither the watermark nor the catch-up waits for it forever.
        let policy = WatermarkPolicy {
            catch_up_to: policy.replay_to.clone(),
            ..policy
        };
        let epochs = vec![
            vec![(0, 4_000, 5, false), (1, 9_000, 4, false)],
            vec![(0, 4_000, 5, true)],
        ];
        let (seen, _) = run_epochs(policy, epochs);
        assert_eq!(seen, vec![(2_000, None), (8_900, Some(2))]);
    }

    #[test]
    fn a_restored_floor_never_runs_ahead_of_the_wall_clock() {
        let now = 1_767_225_600_000;
        let year_2090 = 3_786_825_600_000;
        assert_eq!(
            WatermarkPolicy::bounded_floor(year_2090, now, 300_000),
            now + 300_000
        );
        assert_eq!(
            WatermarkPolicy::bounded_floor(now - 5, now, 300_000),
            now - 5
        );
        assert_eq!(
            WatermarkPolicy::bounded_floor(i64::MAX, i64::MAX - 1, 10),
            i64::MAX
        );
    }
}
