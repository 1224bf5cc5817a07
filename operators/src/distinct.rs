//! `sliding_distinct`: the distinct set of keys with an event inside a sliding window, in state
//! proportional to the distinct keys (never keys × panes).
//!
//! With the panes of [`PaneSpec`] (see [`panes`](crate::panes): a pane starting at `p` is
//! *closed* once `p + size <= w` and *retired* once `p + length <= w`), a key belongs to the set
//! at epoch `e` iff an event of it, received at an epoch `<= e`, lies in a pane that *counts*
//! and is not retired under the watermark of `e` (the largest received so far):
//! * [`Emit::Live`]: every pane counts, open ones included;
//! * [`Emit::OnClose`]: only closed panes count (a key enters when a pane holding it closes, or
//!   at once when an event replays into a closed pane);
//! * [`Emit::OnCloseSpread`]: the `OnClose` set, except that a key entering it at epoch `c`
//!   because a pane closed is inserted at `c + hash(k) % epochs` (the slot of
//!   [`Emit::OnCloseSpread`], `DefaultHasher`), and a key leaving at `e` is retracted at
//!   `max(e, its insertion)`; a key entering by a replay is inserted at once.
//!
//! This is the set `pane_accumulate` followed by `distinct` computes, but for one case of
//! [`Emit::OnCloseSpread`]: when a watermark retires a key's pane and closes a newer pane of
//! it, `pane_accumulate` retracts the old pane at once and inserts the new one at its slot, so
//! the key is missing for up to `epochs - 1` epochs; here it stays, with no update.
//!
//! Only the *latest* counted pane of a key decides whether it is in the set, so each worker
//! keeps, per key it owns, that pane (and the epoch its insertion was emitted at), plus an index
//! pane → keys whose latest pane it is (a key refreshed by a newer pane leaves its old pane's
//! set at once), plus, in the on-close modes, the keys of each open pane until it closes. A
//! retiring pane retracts exactly the keys still indexed under it. State: two entries per key in
//! the set, plus one per `(open pane, key)`; output: one insertion when a key enters, one
//! retraction when it leaves, nothing when a newer pane refreshes it.

use crate::{Emit, Epoch, EpochStash, PaneSpec};
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Operator;
use timely::dataflow::operators::vec::Map;

/// The number of state entries held by the operators that share it (summed over them).
///
/// A clone shares the count. Each operator adds the change of its own state after every
/// activation, so the value is exact whenever its operators are quiescent (e.g. after a probe
/// has passed an epoch and before the next epoch's input is released). Give each worker its
/// own gauge to read per-worker state, or one clone to all of them for the total.
#[derive(Debug, Clone, Default)]
pub struct StateGauge(Arc<AtomicUsize>);

impl StateGauge {
    /// A gauge at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries currently held.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves the gauge from `before` to `after` (one operator's own count).
    fn record(&self, before: usize, after: usize) {
        if after > before {
            self.0.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.0.fetch_sub(before - after, Ordering::Relaxed);
        }
    }
}

/// Which of `spread` epochs after a close key `k` is inserted in (as `pane_accumulate`).
fn spread_slot<K: Hash>(key: &K, spread: u64) -> u64 {
    if spread <= 1 {
        return 0;
    }
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish() % spread
}

/// The distinct set of keys with an event in a sliding window (see the module docs).
pub trait SlidingDistinct<'scope, E> {
    /// `logic` maps an event to `(event_time_ms, key)` or `None` to skip it; it runs on the
    /// sending worker. `(event_time, key)` then moves to worker `route(&key) % peers` (timely's
    /// [`Exchange`]), where the key's whole state lives and its output updates are produced:
    /// e.g. route `(user, campaign)` keys by `Hashable::hashed(&user)` (differential's
    /// exchange hash) to keep a user's keys on the worker that `arrange_by_key` by user would
    /// send them to. `watermarks` carries the watermark of epoch `e` at time `e` on every
    /// worker (the same values on all). `gauge` receives the number of entries held: two per
    /// key in the set (its latest pane and its index entry) plus one per `(open pane, key)` in
    /// the on-close modes.
    ///
    /// Epochs are processed in order, once both inputs are complete through them: the
    /// watermark of epoch `e` is applied first, then the events of `e`. An event of a retired
    /// pane is dropped; one of a closed pane (a replay) counts at once, at its epoch. Each
    /// key's multiplicity is 0 or 1 at every epoch. Events are insert-only (the operator sees
    /// no retractions of events).
    ///
    /// ```
    /// use eddy_core::WindowSpec;
    /// use eddy_operators::{Emit, PaneSpec, SlidingDistinct, StateGauge};
    /// use timely::dataflow::InputHandle;
    /// use timely::dataflow::operators::{Input, Capture, capture::Extract};
    ///
    /// // Panes of 10 ms in a 20 ms sliding window, counted when they close.
    /// let spec = PaneSpec::sliding(WindowSpec::new(10), 20, Emit::OnClose);
    /// let gauge = StateGauge::new();
    /// let g = gauge.clone();
    /// let captured = timely::example(move |scope| {
    ///     let mut events = InputHandle::new();
    ///     let mut marks = InputHandle::new();
    ///     let out = scope
    ///         .input_from(&mut events)
    ///         .sliding_distinct(scope.input_from(&mut marks), spec, "Distinct",
    ///             |k: &u32| u64::from(*k), &g, |&(ts, k): &(i64, u32)| Some((ts, k)))
    ///         .inner
    ///         .capture();
    ///     // epoch 0: key 7 in panes 0 and 10; watermark 0 (nothing closed).
    ///     events.send((3, 7)); events.send((5, 7)); events.send((12, 7)); marks.send(0);
    ///     // epoch 1: watermark 10 closes pane 0 (7 enters); epoch 2: 20 retires pane 0 and
    ///     // closes pane 10 (7 stays, refreshed: no update); epoch 3: 30 retires pane 10.
    ///     for (epoch, w) in [(1, 10), (2, 20), (3, 30)] {
    ///         events.advance_to(epoch); marks.advance_to(epoch); marks.send(w);
    ///     }
    ///     out
    /// });
    /// let mut updates: Vec<_> = captured.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// updates.sort_by_key(|u| u.1);
    /// assert_eq!(updates, vec![(7, 1, 1), (7, 3, -1)]);
    /// assert_eq!(gauge.get(), 0, "nothing held once every pane retired");
    /// ```
    fn sliding_distinct<K, R, L>(
        self,
        watermarks: StreamVec<'scope, Epoch, i64>,
        spec: PaneSpec,
        name: &str,
        route: R,
        gauge: &StateGauge,
        logic: L,
    ) -> VecCollection<'scope, Epoch, K, isize>
    where
        K: ExchangeData + Hash + Eq,
        R: Fn(&K) -> u64 + 'static,
        L: FnMut(&E) -> Option<(i64, K)> + 'static;

    /// [`sliding_distinct`](SlidingDistinct::sliding_distinct) (same arguments, same set), plus
    /// a stream of *closed-pane facts* (on-close modes only; empty with [`Emit::Live`]): at the
    /// epoch whose watermark closes pane `p`, one `(p, key)` per key with an event in `p`
    /// received while it was open, on the key's worker, never retracted. These are the
    /// `(pane, key)` rows a pane contributes once it is final, e.g. to store them and restore
    /// the set after a restart by replaying them as events of closed panes (which count at
    /// once). A pane that retires as it closes yields no facts; neither do events of closed
    /// panes (replays).
    ///
    /// ```
    /// use eddy_core::WindowSpec;
    /// use eddy_operators::{Emit, PaneSpec, SlidingDistinct, StateGauge};
    /// use timely::dataflow::InputHandle;
    /// use timely::dataflow::operators::{Input, Capture, capture::Extract};
    ///
    /// let spec = PaneSpec::sliding(WindowSpec::new(10), 20, Emit::OnClose);
    /// let (set, facts) = timely::example(move |scope| {
    ///     let mut events = InputHandle::new();
    ///     let mut marks = InputHandle::new();
    ///     let (set, facts) = scope.input_from(&mut events).sliding_distinct_closing(
    ///         scope.input_from(&mut marks), spec, "Distinct", |k: &u32| u64::from(*k),
    ///         &StateGauge::new(), |&(ts, k): &(i64, u32)| Some((ts, k)));
    ///     // epoch 0: key 7 twice in pane 0, key 8 in pane 10; epoch 1: watermark 10 closes
    ///     // pane 0; epoch 2: key 9 replayed into the closed pane 0 (no fact).
    ///     events.send((3, 7)); events.send((5, 7)); events.send((12, 8)); marks.send(0);
    ///     events.advance_to(1); marks.advance_to(1); marks.send(10);
    ///     events.advance_to(2); marks.advance_to(2); marks.send(10); events.send((4, 9));
    ///     (set.inner.capture(), facts.capture())
    /// });
    /// let facts: Vec<_> = facts.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// assert_eq!(facts, vec![(0, 7)], "pane 0 closed at epoch 1 with key 7");
    /// let set: Vec<_> = set.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// assert_eq!(set, vec![(7, 1, 1), (9, 2, 1)]);
    /// ```
    #[allow(clippy::type_complexity)]
    fn sliding_distinct_closing<K, R, L>(
        self,
        watermarks: StreamVec<'scope, Epoch, i64>,
        spec: PaneSpec,
        name: &str,
        route: R,
        gauge: &StateGauge,
        logic: L,
    ) -> (
        VecCollection<'scope, Epoch, K, isize>,
        StreamVec<'scope, Epoch, (i64, K)>,
    )
    where
        K: ExchangeData + Hash + Eq,
        R: Fn(&K) -> u64 + 'static,
        L: FnMut(&E) -> Option<(i64, K)> + 'static;
}

/// One output record of the operator: a set update or a closed-pane fact.
#[derive(Clone)]
enum Out<K> {
    Set(K),
    Closed(i64, K),
}

/// One worker's state (see the module docs).
struct State<K> {
    spec: PaneSpec,
    spread: u64,
    live: bool,
    /// The watermark applied (`None`: none yet).
    watermark: Option<i64>,
    /// Key → its latest counted pane and the epoch its insertion was emitted at.
    latest: HashMap<K, (i64, Epoch)>,
    /// Counted pane → the keys whose latest pane it is (never empty).
    index: BTreeMap<i64, HashSet<K>>,
    /// On-close modes: open pane → the keys with an event in it.
    open: BTreeMap<i64, HashSet<K>>,
    /// Entries of `index`, summed.
    indexed: usize,
    /// Entries of `open`, summed.
    open_keys: usize,
    /// Updates to emit, by epoch.
    out: BTreeMap<Epoch, Vec<(K, Epoch, isize)>>,
    /// Closed-pane facts to emit at the current epoch, when wanted.
    facts: Option<Vec<(i64, K)>>,
}

impl<K: ExchangeData + Hash + Eq> State<K> {
    fn new(spec: PaneSpec, facts: bool) -> Self {
        Self {
            spec,
            spread: match spec.emit {
                Emit::OnCloseSpread { epochs } => epochs.max(1),
                _ => 1,
            },
            live: spec.emit == Emit::Live,
            watermark: None,
            latest: HashMap::new(),
            index: BTreeMap::new(),
            open: BTreeMap::new(),
            indexed: 0,
            open_keys: 0,
            out: BTreeMap::new(),
            facts: facts.then(Vec::new),
        }
    }

    /// Entries held (what the gauge reports): keys, index entries (as many) and open keys.
    fn size(&self) -> usize {
        self.latest.len() + self.indexed + self.open_keys
    }

    /// Whether pane `p` is at or before `w - by` (exact, no overflow).
    fn passed(&self, p: i64, by: i64) -> bool {
        self.watermark
            .and_then(|w| w.checked_sub(by))
            .is_some_and(|through| p <= through)
    }

    fn emit(&mut self, key: K, at: Epoch, diff: isize) {
        self.out.entry(at).or_default().push((key, at, diff));
    }

    /// Counts an event of `key` in pane `p` (open or closed): an insertion at `at` if the key
    /// is not in the set, else a move to `p` if `p` is newer than its latest pane.
    fn count(&mut self, key: K, p: i64, at: Epoch) {
        match self.latest.get_mut(&key) {
            Some((q, _)) if *q >= p => {}
            Some((q, _)) => {
                let old = std::mem::replace(q, p);
                if let Some(keys) = self.index.get_mut(&old) {
                    if keys.remove(&key) {
                        self.indexed -= 1;
                    }
                    if keys.is_empty() {
                        self.index.remove(&old);
                    }
                }
                if self.index.entry(p).or_default().insert(key) {
                    self.indexed += 1;
                }
            }
            None => {
                self.latest.insert(key.clone(), (p, at));
                if self.index.entry(p).or_default().insert(key.clone()) {
                    self.indexed += 1;
                }
                self.emit(key, at, 1);
            }
        }
    }

    /// One event of epoch `time`, after the watermark of `time` was applied (and before the
    /// panes it retires are retired).
    fn event(&mut self, ts: i64, key: K, time: Epoch) {
        let p = self.spec.pane.start(ts);
        if self.passed(p, self.spec.retire_after_ms) {
            return;
        }
        if self.live || self.passed(p, self.spec.pane.size_ms) {
            self.count(key, p, time);
        } else if self.open.entry(p).or_default().insert(key) {
            self.open_keys += 1;
        }
    }

    /// Applies watermark `w` at epoch `time`: drops the open panes it retires and counts the
    /// ones it closes (retirement of counted panes waits for [`Self::retire`]).
    fn advance(&mut self, w: i64, time: Epoch) {
        if self.watermark.is_some_and(|old| old >= w) {
            return;
        }
        self.watermark = Some(w);
        let length = self.spec.retire_after_ms;
        while let Some((&p, _)) = self.open.first_key_value() {
            if !self.passed(p, self.spec.pane.size_ms) {
                break;
            }
            let (_, keys) = self.open.pop_first().expect("checked");
            self.open_keys -= keys.len();
            // An open pane that retires as it closes is never counted.
            if self.passed(p, length) {
                continue;
            }
            for key in keys {
                if let Some(facts) = self.facts.as_mut() {
                    facts.push((p, key.clone()));
                }
                let at = time + spread_slot(&key, self.spread);
                self.count(key, p, at);
            }
        }
    }

    /// Retires the counted panes the watermark has passed, at epoch `time`, after its panes
    /// closed and its events were folded in: a key they refreshed has left the retiring
    /// pane's set, so it stays without an update.
    fn retire(&mut self, time: Epoch) {
        let length = self.spec.retire_after_ms;
        while let Some((&p, _)) = self.index.first_key_value() {
            if !self.passed(p, length) {
                break;
            }
            let (_, keys) = self.index.pop_first().expect("checked");
            self.indexed -= keys.len();
            for key in keys {
                let (_, inserted) = self.latest.remove(&key).expect("indexed keys are held");
                self.emit(key, time.max(inserted), -1);
            }
        }
    }
}

impl<'scope, E: Clone + 'static> SlidingDistinct<'scope, E> for StreamVec<'scope, Epoch, E> {
    fn sliding_distinct<K, R, L>(
        self,
        watermarks: StreamVec<'scope, Epoch, i64>,
        spec: PaneSpec,
        name: &str,
        route: R,
        gauge: &StateGauge,
        logic: L,
    ) -> VecCollection<'scope, Epoch, K, isize>
    where
        K: ExchangeData + Hash + Eq,
        R: Fn(&K) -> u64 + 'static,
        L: FnMut(&E) -> Option<(i64, K)> + 'static,
    {
        set_updates(operator(
            self, watermarks, spec, name, route, gauge, logic, false,
        ))
    }

    fn sliding_distinct_closing<K, R, L>(
        self,
        watermarks: StreamVec<'scope, Epoch, i64>,
        spec: PaneSpec,
        name: &str,
        route: R,
        gauge: &StateGauge,
        logic: L,
    ) -> (
        VecCollection<'scope, Epoch, K, isize>,
        StreamVec<'scope, Epoch, (i64, K)>,
    )
    where
        K: ExchangeData + Hash + Eq,
        R: Fn(&K) -> u64 + 'static,
        L: FnMut(&E) -> Option<(i64, K)> + 'static,
    {
        let out = operator(self, watermarks, spec, name, route, gauge, logic, true);
        let set = set_updates(out.clone());
        let facts = out.flat_map(|(out, _, _)| match out {
            Out::Closed(p, k) => Some((p, k)),
            Out::Set(_) => None,
        });
        (set, facts)
    }
}

/// The set updates of the operator's output.
fn set_updates<'scope, K: ExchangeData>(
    out: StreamVec<'scope, Epoch, (Out<K>, Epoch, isize)>,
) -> VecCollection<'scope, Epoch, K, isize> {
    out.flat_map(|(out, t, d)| match out {
        Out::Set(k) => Some((k, t, d)),
        Out::Closed(..) => None,
    })
    .as_collection()
}

/// The operator behind both methods; closed-pane facts are produced only with `facts`.
#[allow(clippy::too_many_arguments)]
fn operator<'scope, E, K, R, L>(
    stream: StreamVec<'scope, Epoch, E>,
    watermarks: StreamVec<'scope, Epoch, i64>,
    spec: PaneSpec,
    name: &str,
    route: R,
    gauge: &StateGauge,
    mut logic: L,
    facts: bool,
) -> StreamVec<'scope, Epoch, (Out<K>, Epoch, isize)>
where
    E: Clone + 'static,
    K: ExchangeData + Hash + Eq,
    R: Fn(&K) -> u64 + 'static,
    L: FnMut(&E) -> Option<(i64, K)> + 'static,
{
    assert!(spec.retire_after_ms >= spec.pane.size_ms);
    let gauge = gauge.clone();
    let keyed = stream.flat_map(move |e| logic(&e));
    let exchange = Exchange::new(move |(_, k): &(i64, K)| route(k));
    keyed.binary_frontier(watermarks, exchange, Pipeline, name, move |_cap, _info| {
        let mut state = State::<K>::new(spec, facts);
        let mut events = EpochStash::<(i64, K)>::default();
        let mut marks = EpochStash::<i64>::default();
        move |(input, events_frontier), (marks_in, marks_frontier), output| {
            let before = state.size();
            input.for_each(|cap, data| events.absorb(cap, data));
            marks_in.for_each(|cap, data| marks.absorb(cap, data));
            // Epochs in order, once both inputs are complete through them: the watermark of
            // an epoch closes panes, then its events are folded in, then the panes it
            // retires leave.
            while let Some(time) = [events.first_epoch(), marks.first_epoch()]
                .into_iter()
                .flatten()
                .min()
            {
                if events_frontier.less_equal(&time) || marks_frontier.less_equal(&time) {
                    break;
                }
                let mut cap = None;
                if marks.first_epoch() == Some(time) {
                    let (c, ws) = marks.pop_if(|_| true).expect("checked");
                    if let Some(w) = ws.into_iter().max() {
                        state.advance(w, time);
                    }
                    cap = Some(c);
                }
                if events.first_epoch() == Some(time) {
                    let (c, data) = events.pop_if(|_| true).expect("checked");
                    for (ts, key) in data {
                        state.event(ts, key, time);
                    }
                    cap = Some(c);
                }
                state.retire(time);
                let cap = cap.expect("an epoch was popped");
                if let Some(facts) = state.facts.as_mut().filter(|f| !f.is_empty()) {
                    output
                        .session(&cap)
                        .give_iterator(facts.drain(..).map(|(p, k)| (Out::Closed(p, k), time, 1)));
                }
                for (at, updates) in std::mem::take(&mut state.out) {
                    let delayed = cap.delayed(&at);
                    output
                        .session(&delayed)
                        .give_iterator(updates.into_iter().map(|(k, t, d)| (Out::Set(k), t, d)));
                }
            }
            gauge.record(before, state.size());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_core::WindowSpec;
    use std::collections::BTreeMap;
    use timely::dataflow::InputHandle;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::{Capture, Input};

    /// Runs epochs of `(events (ts, key), watermark)` on one worker; returns the updates and
    /// the gauge at the end.
    fn run(
        spec: PaneSpec,
        epochs: Vec<(Vec<(i64, u64)>, i64)>,
    ) -> (Vec<(u64, Epoch, isize)>, usize) {
        let gauge = StateGauge::new();
        let g = gauge.clone();
        let captured = timely::example(move |scope| {
            let mut events = InputHandle::new();
            let mut marks = InputHandle::new();
            let out = scope
                .input_from(&mut events)
                .sliding_distinct(
                    scope.input_from(&mut marks),
                    spec,
                    "Distinct",
                    |k: &u64| *k,
                    &g,
                    |e: &(i64, u64)| Some(*e),
                )
                .inner
                .capture();
            for (e, (batch, w)) in epochs.into_iter().enumerate() {
                events.advance_to(e as Epoch);
                marks.advance_to(e as Epoch);
                for x in batch {
                    events.send(x);
                }
                marks.send(w);
            }
            out
        });
        let mut updates: Vec<_> = captured
            .extract()
            .into_iter()
            .flat_map(|(_, v)| v)
            .collect();
        updates.sort_by_key(|u| (u.1, u.0, -u.2));
        (updates, gauge.get())
    }

    fn as_of(updates: &[(u64, Epoch, isize)], at: Epoch) -> BTreeMap<u64, isize> {
        let mut acc = BTreeMap::new();
        for (k, t, r) in updates {
            if *t <= at {
                *acc.entry(*k).or_insert(0) += r;
            }
        }
        acc.retain(|_, r| *r != 0);
        acc
    }

    #[test]
    fn a_refreshed_key_emits_nothing_until_its_latest_pane_retires() {
        // Panes of 10 in a window of 30; key 1 in panes 0, 10, 20, 30 (one per epoch).
        let spec = PaneSpec::sliding(WindowSpec::new(10), 30, Emit::Live);
        let epochs = (0..8)
            .map(|e| {
                let batch = if e < 4 { vec![(e * 10 + 1, 1)] } else { vec![] };
                (batch, e * 10)
            })
            .collect();
        let (updates, held) = run(spec, epochs);
        // Enters at epoch 0; pane 30 retires under watermark 60 (epoch 6).
        assert_eq!(updates, vec![(1, 0, 1), (1, 6, -1)]);
        assert_eq!(held, 0);
    }

    #[test]
    fn spread_insertions_and_retractions_stay_ordered() {
        let spec = PaneSpec::sliding(WindowSpec::new(10), 20, Emit::OnCloseSpread { epochs: 4 });
        // 40 keys in pane 0; closed and retired together by watermark 20 at epoch 1: never in.
        // 40 keys in pane 20, closed at epoch 3 (w 30), retired at epoch 4 (w 40).
        let epochs = vec![
            ((0..40).map(|k| (5, k)).collect(), 0),
            (vec![], 20),
            ((0..40).map(|k| (25, k)).collect(), 20),
            (vec![], 30),
            (vec![], 40),
            (vec![], 40),
            (vec![], 40),
            (vec![], 40),
        ];
        let (updates, held) = run(spec, epochs);
        assert_eq!(held, 0);
        for at in 0..8 {
            assert!(as_of(&updates, at).values().all(|r| *r == 1), "epoch {at}");
        }
        assert!(as_of(&updates, 2).is_empty());
        assert!(!as_of(&updates, 3).is_empty());
        assert!(as_of(&updates, 7).is_empty());
        // Every key inserted in 3..=6 and retracted at max(4, its insertion).
        for k in 0..40u64 {
            let mine: Vec<_> = updates.iter().filter(|u| u.0 == k).collect();
            assert_eq!(mine.len(), 2, "{mine:?}");
            assert!((3..7).contains(&mine[0].1) && mine[0].2 == 1, "{mine:?}");
            assert_eq!(mine[1].1, mine[0].1.max(4));
        }
    }
}
