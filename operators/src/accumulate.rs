//! `windowed_accumulate`: per-worker pre-aggregation of events into tumbling windows, emitting
//! differential updates, and retracting a window's contributions once the watermark closes it.
//!
//! Each worker folds its own events into a local accumulator per `(window_start, key)` and emits
//! only the *change* of that accumulator per input message (a combiner: a hot key costs one
//! update per message, not one per event). When a watermark `w` arrives at epoch `e` (and every
//! event of earlier epochs has been seen), each window with `end <= w` emits, at `e`, updates
//! that cancel everything it emitted. Downstream, a window's accumulation therefore reads its
//! final value up to epoch `e - 1` and vanishes at `e`, so differential's arrangements stay
//! bounded by the number of open windows.
//!
//! The special case of [`PaneAccumulate`](crate::PaneAccumulate) with tumbling panes.
//!
//! Invariant required from upstream: no event of a window closed by the watermark of epoch `e`
//! arrives at an epoch `>= e` (eddy's source rejects such events as late).

use crate::{Epoch, PaneAccumulate, PaneSpec, Panes};
use differential_dataflow::ExchangeData;
use differential_dataflow::difference::Semigroup;
use eddy_core::WindowSpec;
use std::hash::Hash;
use timely::dataflow::StreamVec;

/// A per-window, per-key local state that turns inputs into differential updates.
pub trait Accumulator: Default + 'static {
    /// What one event contributes.
    type Input;
    /// Data suffix of the emitted updates (`()` for plain sums).
    type Data: ExchangeData;
    /// Difference type of the emitted updates.
    type Diff: Semigroup + ExchangeData;
    /// Folds one input in; returns true when this made the accumulator dirty (it had nothing
    /// to flush before).
    fn add(&mut self, input: Self::Input) -> bool;
    /// Emits the updates for everything added since the last flush.
    fn flush(&mut self, emit: &mut dyn FnMut(Self::Data, Self::Diff));
    /// Emits updates that cancel every update this accumulator ever flushed.
    fn retract(self, emit: &mut dyn FnMut(Self::Data, Self::Diff));
}

/// Sums an abelian difference (counts, `(count, sum)` pairs, ...).
pub struct Sum<R> {
    flushed: Option<R>,
    pending: Option<R>,
}

impl<R> Default for Sum<R> {
    fn default() -> Self {
        Self {
            flushed: None,
            pending: None,
        }
    }
}

impl<R> Accumulator for Sum<R>
where
    R: differential_dataflow::difference::Abelian + ExchangeData,
{
    type Input = R;
    type Data = ();
    type Diff = R;
    fn add(&mut self, input: R) -> bool {
        match &mut self.pending {
            Some(p) => {
                p.plus_equals(&input);
                false
            }
            None => {
                self.pending = Some(input);
                true
            }
        }
    }
    fn flush(&mut self, emit: &mut dyn FnMut((), R)) {
        if let Some(p) = self.pending.take()
            && !p.is_zero()
        {
            match &mut self.flushed {
                Some(f) => f.plus_equals(&p),
                None => self.flushed = Some(p.clone()),
            }
            emit((), p);
        }
    }
    fn retract(self, emit: &mut dyn FnMut((), R)) {
        if let Some(mut f) = self.flushed
            && !f.is_zero()
        {
            f.negate();
            emit((), f);
        }
    }
}

/// Tracks minimum and maximum of `i64` values: emits a value (diff `+1`) only when it improves
/// the local min or max, so a window emits O(log n) candidates for n values in random order.
/// Downstream, the min/max over the candidates of all workers is the min/max of all values.
#[derive(Default)]
pub struct MinMax {
    min: Option<i64>,
    max: Option<i64>,
    emitted: Vec<i64>,
    pending: Vec<i64>,
}

impl Accumulator for MinMax {
    type Input = i64;
    type Data = i64;
    type Diff = isize;
    fn add(&mut self, v: i64) -> bool {
        let mut improves = false;
        if self.min.is_none_or(|m| v < m) {
            self.min = Some(v);
            improves = true;
        }
        if self.max.is_none_or(|m| v > m) {
            self.max = Some(v);
            improves = true;
        }
        if improves {
            self.pending.push(v);
        }
        improves && self.pending.len() == 1
    }
    fn flush(&mut self, emit: &mut dyn FnMut(i64, isize)) {
        for v in self.pending.drain(..) {
            emit(v, 1);
            self.emitted.push(v);
        }
    }
    fn retract(self, emit: &mut dyn FnMut(i64, isize)) {
        for v in self.emitted {
            emit(v, -1);
        }
    }
}

/// Updates `((window_start, key), data)` with the accumulator's difference type.
pub type Windowed<'scope, K, A> = Panes<'scope, K, A>;

/// Pre-aggregates a stream of events into tumbling windows (see the module docs).
///
/// Implemented for every stream that implements [`PaneAccumulate`]: a tumbling window is a pane
/// retired as it closes, emitted live ([`PaneSpec::tumbling`]).
pub trait WindowedAccumulate<'scope, E>: PaneAccumulate<'scope, E> + Sized {
    /// `logic` maps an event to `(event_time_ms, key, input)` or `None` to skip it; the result
    /// holds updates `((window_start, key), data)` with the accumulator's difference type.
    /// `watermarks` carries the watermark of epoch `e` at time `e` (one per worker).
    ///
    /// ```
    /// use eddy_core::WindowSpec;
    /// use eddy_operators::{Sum, WindowedAccumulate};
    /// use timely::dataflow::operators::{ToStream, Capture, capture::Extract};
    /// use differential_dataflow::AsCollection;
    ///
    /// let captured = timely::example(|scope| {
    ///     let events = vec![(1_000i64, "a"), (1_500, "a"), (2_500, "b")].to_stream(scope);
    ///     let watermarks = Vec::<i64>::new().to_stream(scope);
    ///     events
    ///         .windowed_accumulate::<_, Sum<isize>, _>(watermarks, WindowSpec::new(1_000), "Count",
    ///             |(ts, k): &(i64, &'static str)| Some((*ts, k.to_string(), 1isize)))
    ///         .consolidate()
    ///         .inner
    ///         .capture()
    /// });
    /// let mut updates: Vec<_> = captured.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// updates.sort();
    /// assert_eq!(updates, vec![
    ///     (((1_000, "a".to_string()), ()), 0, 2),
    ///     (((2_000, "b".to_string()), ()), 0, 1),
    /// ]);
    /// ```
    fn windowed_accumulate<K, A, L>(
        self,
        watermarks: StreamVec<'scope, Epoch, i64>,
        window: WindowSpec,
        name: &str,
        logic: L,
    ) -> Windowed<'scope, K, A>
    where
        K: ExchangeData + Hash + Eq,
        A: Accumulator,
        L: FnMut(&E) -> Option<(i64, K, A::Input)> + 'static,
    {
        self.pane_accumulate::<K, A, L>(watermarks, PaneSpec::tumbling(window), name, logic)
    }
}

impl<'scope, E, S: PaneAccumulate<'scope, E>> WindowedAccumulate<'scope, E> for S {}
