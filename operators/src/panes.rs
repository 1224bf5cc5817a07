//! `pane_accumulate`: per-worker pre-aggregation of events into panes (tumbling windows) that
//! stay in a sliding window until the watermark retires them, emitted either live or once
//! each pane closes.
//!
//! A sliding window of length `L` advancing one pane (of size `S`, `L` a multiple of `S`) at a
//! time is the union of its panes: under watermark `w` a pane starting at `p` is
//! * **open** while `p + S > w` (events may still arrive),
//! * **closed** once `p + S <= w` (its value is final),
//! * **retired** once `p + L <= w` (it has slid out of the window).
//!
//! Each worker folds its events into a local [`Accumulator`] per `(pane, key)`. With
//! [`Emit::Live`] the change of an accumulator is emitted per input message (a combiner: a hot
//! key costs one update per message); with [`Emit::OnClose`] a pane's accumulators are
//! emitted once, at the epoch whose watermark closes it (so downstream sees only final panes;
//! anything that still arrives for a closed pane, such as a replay, is emitted as it comes).
//! When the watermark retires a pane, every update it emitted is cancelled at that epoch:
//! events leave the sliding window as retractions, never by recomputation, and differential's
//! state stays bounded by the panes inside the window.
//!
//! Tumbling windows are the special case `L = S` with live emission
//! ([`WindowedAccumulate`](crate::WindowedAccumulate)).

use crate::{Accumulator, Epoch, EpochStash};
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use eddy_core::WindowSpec;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

/// When a pane's accumulators are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Per input message, as events arrive.
    Live,
    /// Once, when the watermark closes the pane.
    OnClose,
    /// Once per key, in the `epochs` epochs starting with the one whose watermark closes the
    /// pane: key `k` at `close + hash(k) % epochs`. This spreads the downstream work of a pane
    /// close (one large batch) over several epochs, so later epochs do not wait behind it.
    OnCloseSpread {
        /// Epochs to spread over (1 = [`Emit::OnClose`]).
        epochs: u64,
    },
}

/// Which of `spread` epochs after a close key `k` is emitted in (deterministic).
fn spread_slot<K: Hash>(key: &K, spread: u64) -> u64 {
    if spread <= 1 {
        return 0;
    }
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish() % spread
}

/// Panes of a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaneSpec {
    /// The panes (tumbling windows).
    pub pane: WindowSpec,
    /// A pane is retired once the watermark reaches `pane_start + retire_after_ms`
    /// (the sliding window's length; `>= pane.size_ms`).
    pub retire_after_ms: i64,
    /// When accumulators are emitted.
    pub emit: Emit,
}

impl PaneSpec {
    /// Tumbling windows: live, retired when closed.
    pub fn tumbling(window: WindowSpec) -> Self {
        Self {
            pane: window,
            retire_after_ms: window.size_ms,
            emit: Emit::Live,
        }
    }
    /// A sliding window of `length_ms` (a multiple of the pane size) advancing one pane at a
    /// time.
    pub fn sliding(pane: WindowSpec, length_ms: i64, emit: Emit) -> Self {
        assert!(
            length_ms >= pane.size_ms && length_ms % pane.size_ms == 0,
            "the sliding length must be a positive multiple of the pane size"
        );
        Self {
            pane,
            retire_after_ms: length_ms,
            emit,
        }
    }
}

/// Updates `((pane_start, key), data)` with the accumulator's difference type.
pub type Panes<'scope, K, A> =
    VecCollection<'scope, Epoch, ((i64, K), <A as Accumulator>::Data), <A as Accumulator>::Diff>;

/// Pre-aggregates events into the panes of a sliding window (see the module docs).
pub trait PaneAccumulate<'scope, E> {
    /// `logic` maps an event to `(event_time_ms, key, input)` or `None` to skip it.
    /// `watermarks` carries the watermark of epoch `e` at time `e` (one per worker).
    ///
    /// Invariant required from upstream: after the watermark of epoch `e` closes a pane, no
    /// event of it arrives at an epoch `>= e`, except replays of panes not yet retired.
    ///
    /// ```
    /// use eddy_core::WindowSpec;
    /// use eddy_operators::{Emit, PaneAccumulate, PaneSpec, Sum};
    /// use timely::dataflow::InputHandle;
    /// use timely::dataflow::operators::{Input, Probe, Capture, capture::Extract};
    ///
    /// // Panes of 10 ms in a 20 ms sliding window, emitted when they close.
    /// let spec = PaneSpec::sliding(WindowSpec::new(10), 20, Emit::OnClose);
    /// let captured = timely::example(move |scope| {
    ///     let mut events = InputHandle::new();
    ///     let mut marks = InputHandle::new();
    ///     let out = scope
    ///         .input_from(&mut events)
    ///         .pane_accumulate::<_, Sum<isize>, _>(scope.input_from(&mut marks), spec, "Count",
    ///             |ts: &i64| Some((*ts, 7u32, 1isize)))
    ///         .consolidate()
    ///         .inner
    ///         .capture();
    ///     // epoch 0: two events in pane 0, one in pane 10; watermark 0 (nothing closed).
    ///     events.send(3); events.send(5); events.send(12); marks.send(0);
    ///     // epoch 1: watermark 10 closes pane 0; epoch 2: 20 closes pane 10;
    ///     // epoch 3: 30 retires pane 10 (pane 0 retired at epoch 2).
    ///     for (epoch, w) in [(1, 10), (2, 20), (3, 30)] {
    ///         events.advance_to(epoch); marks.advance_to(epoch); marks.send(w);
    ///     }
    ///     out
    /// });
    /// let mut updates: Vec<_> = captured.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// updates.sort_by_key(|u| (u.1, u.0));
    /// assert_eq!(updates, vec![
    ///     (((0, 7), ()), 1, 2),   // pane 0 closes: emitted
    ///     (((0, 7), ()), 2, -2),  // pane 0 retires
    ///     (((10, 7), ()), 2, 1),  // pane 10 closes
    ///     (((10, 7), ()), 3, -1), // pane 10 retires
    /// ]);
    /// ```
    fn pane_accumulate<K, A, L>(
        self,
        watermarks: StreamVec<'scope, Epoch, i64>,
        spec: PaneSpec,
        name: &str,
        logic: L,
    ) -> Panes<'scope, K, A>
    where
        K: ExchangeData + Hash + Eq,
        A: Accumulator,
        L: FnMut(&E) -> Option<(i64, K, A::Input)> + 'static;
}

impl<'scope, E: Clone + 'static> PaneAccumulate<'scope, E> for StreamVec<'scope, Epoch, E> {
    fn pane_accumulate<K, A, L>(
        self,
        watermarks: StreamVec<'scope, Epoch, i64>,
        spec: PaneSpec,
        name: &str,
        mut logic: L,
    ) -> Panes<'scope, K, A>
    where
        K: ExchangeData + Hash + Eq,
        A: Accumulator,
        L: FnMut(&E) -> Option<(i64, K, A::Input)> + 'static,
    {
        assert!(spec.retire_after_ms >= spec.pane.size_ms);
        let window = spec.pane;
        let live = spec.emit == Emit::Live;
        let spread = match spec.emit {
            Emit::OnCloseSpread { epochs } => epochs.max(1),
            _ => 1,
        };
        self.binary_frontier(watermarks, Pipeline, Pipeline, name, move |_cap, _info| {
            // pane start -> key -> local accumulator, for panes not yet retired.
            let mut panes: BTreeMap<i64, HashMap<K, A>> = BTreeMap::new();
            // OnClose: panes starting at or before this have been emitted (`None`: none yet;
            // not `i64::MIN`, which would count the pane starting there as emitted).
            let mut closed_through: Option<i64> = None;
            // Spread closes: the epoch each pane's close began at.
            let mut closed_at: BTreeMap<i64, Epoch> = BTreeMap::new();
            // watermarks not yet applied, by epoch.
            let mut pending = EpochStash::<i64>::default();
            let mut touched: Vec<(i64, K)> = Vec::new();
            move |(events, events_frontier), (marks, _), output| {
                events.for_each(|cap, data| {
                    let time = *cap.least().expect("a message has a time");
                    let mut session = output.session(&cap);
                    for event in data.iter() {
                        if let Some((ts, key, input)) = logic(event) {
                            let start = window.start(ts);
                            let emit_now = live || closed_through.is_some_and(|c| start <= c);
                            let slot = panes.entry(start).or_default();
                            if let Some(acc) = slot.get_mut(&key) {
                                if acc.add(input) && emit_now {
                                    touched.push((start, key));
                                }
                            } else {
                                let mut acc = A::default();
                                acc.add(input);
                                slot.insert(key.clone(), acc);
                                if emit_now {
                                    touched.push((start, key));
                                }
                            }
                        }
                    }
                    for (start, key) in touched.drain(..) {
                        if let Some(acc) = panes.get_mut(&start).and_then(|s| s.get_mut(&key)) {
                            acc.flush(&mut |d, r| {
                                session.give((((start, key.clone()), d), time, r));
                            });
                        }
                    }
                });
                marks.for_each(|cap, data| pending.absorb(cap, data));
                // Apply watermarks once every event of earlier epochs has been folded in.
                while let Some((cap, marks)) = pending.pop_if(|t| !events_frontier.less_than(t)) {
                    let time = *cap.time();
                    let Some(w) = marks.into_iter().max() else {
                        continue;
                    };
                    // Updates by the epoch they are emitted at (`time`, or later for a pane
                    // close spread over several epochs).
                    let mut out: BTreeMap<Epoch, Vec<_>> = BTreeMap::new();
                    // Retire panes that slid out of the window (never emitted if they retire
                    // as they close).
                    while let Some((&start, _)) = panes.first_key_value() {
                        if start.saturating_add(spec.retire_after_ms) > w {
                            break;
                        }
                        let (_, keys) = panes.pop_first().expect("checked");
                        // Never before the pane's spread emission has completed.
                        let at = closed_at
                            .remove(&start)
                            .map_or(time, |c: Epoch| time.max(c + spread - 1));
                        if live || closed_through.is_some_and(|c| start <= c) {
                            let slot = out.entry(at).or_default();
                            for (key, acc) in keys {
                                acc.retract(&mut |d, r| {
                                    slot.push((((start, key.clone()), d), at, r));
                                });
                            }
                        }
                    }
                    if !live {
                        // Emit panes this watermark closes, each key at `time + slot(key)`.
                        // Panes with `start + size <= w`, exactly: none while `w - size` is
                        // below i64::MIN.
                        if let Some(through) = w.checked_sub(window.size_ms)
                            && closed_through.is_none_or(|c| through > c)
                        {
                            // c < through, so c + 1 cannot overflow.
                            let lo = closed_through.map_or(i64::MIN, |c| c + 1);
                            for (&start, keys) in panes.range_mut(lo..=through) {
                                if spread > 1 {
                                    closed_at.insert(start, time);
                                }
                                for (key, acc) in keys.iter_mut() {
                                    let at = time + spread_slot(key, spread);
                                    let slot = out.entry(at).or_default();
                                    acc.flush(&mut |d, r| {
                                        slot.push((((start, key.clone()), d), at, r));
                                    });
                                }
                            }
                            closed_through = Some(through);
                        }
                    }
                    for (at, updates) in out {
                        let delayed = cap.delayed(&at);
                        output.session(&delayed).give_iterator(updates.into_iter());
                    }
                }
            }
        })
        .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sum;
    use std::collections::BTreeMap;
    use timely::dataflow::InputHandle;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::{Capture, Input};

    type Update = (((i64, u64), ()), Epoch, isize);

    /// Runs 40 keys through one pane closed at epoch 1 and retired at epoch 3, emitted as
    /// `emit`; returns the updates.
    fn run(emit: Emit) -> Vec<Update> {
        let spec = PaneSpec::sliding(WindowSpec::new(10), 30, emit);
        timely::example(move |scope| {
            let mut events = InputHandle::new();
            let mut marks = InputHandle::new();
            let out = scope
                .input_from(&mut events)
                .pane_accumulate::<_, Sum<isize>, _>(
                    scope.input_from(&mut marks),
                    spec,
                    "Spread",
                    |(ts, k): &(i64, u64)| Some((*ts, *k, 1isize)),
                )
                .inner
                .capture();
            for k in 0..40u64 {
                events.send((5, k));
            }
            marks.send(0);
            for (epoch, w) in [(1, 10), (2, 20), (3, 30), (4, 30), (5, 30)] {
                events.advance_to(epoch);
                marks.advance_to(epoch);
                marks.send(w);
            }
            out
        })
        .extract()
        .into_iter()
        .flat_map(|(_, v)| v)
        .collect()
    }

    fn as_of(updates: &[Update], at: Epoch) -> BTreeMap<u64, isize> {
        let mut acc = BTreeMap::new();
        for (((_, k), ()), t, r) in updates {
            if *t <= at {
                *acc.entry(*k).or_insert(0) += r;
            }
        }
        acc.retain(|_, r| *r != 0);
        acc
    }

    #[test]
    fn spread_close_emits_every_key_once_within_the_spread() {
        let plain = run(Emit::OnClose);
        let spread = run(Emit::OnCloseSpread { epochs: 2 });
        // Closed at epoch 1: plain emits all 40 keys then; spread emits them at 1 or 2.
        assert_eq!(as_of(&plain, 1).len(), 40);
        let early = as_of(&spread, 1).len();
        assert!(early > 0 && early < 40, "{early} keys at the close epoch");
        assert_eq!(as_of(&spread, 2), as_of(&plain, 2));
        // Retired under watermark 30 (epoch 3): nothing left, in both.
        assert!(as_of(&plain, 3).is_empty());
        assert!(as_of(&spread, 3).is_empty());
        assert!(spread.iter().all(|(_, t, _)| *t <= 3));
        // Never negative in between.
        for at in 0..6 {
            assert!(as_of(&spread, at).values().all(|r| *r == 1), "epoch {at}");
        }
    }

    #[test]
    fn spread_retraction_waits_for_the_spread_emission() {
        // Spread over 4 epochs from epoch 1; retirement at epoch 3 must wait until epoch 4.
        let spread = run(Emit::OnCloseSpread { epochs: 4 });
        assert_eq!(as_of(&spread, 4).len(), 0);
        for at in 0..6 {
            assert!(as_of(&spread, at).values().all(|r| *r == 1), "epoch {at}");
        }
        assert!(spread.iter().any(|(_, t, r)| *t == 4 && *r < 0));
    }
}
