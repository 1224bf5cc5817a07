//! `closed_windows`: the final rows of a collection of *open* tumbling windows, as the
//! watermark closes them.
//!
//! Windowed aggregates in eddy hold only the open windows: when the watermark of epoch `e`
//! reaches a window's end, its rows are retracted at `e` (that is what keeps differential's
//! state bounded, see [`WindowedAccumulate`](crate::WindowedAccumulate)). No on-time event of a
//! closed window arrives at `e` or later, so a retraction at `e` of a row whose window is closed
//! under `W(e)` can only be the close itself, and the retracted value is the window's final
//! value. This operator turns those retractions into insertions: its output holds, from the
//! closing epoch on, the final row of every window closed so far. It is a stream of facts
//! ("this window is final with these values"), never retracted, for sinks that record final
//! windows; nothing should arrange it.

use crate::{Epoch, EpochStash};
use differential_dataflow::{AsCollection, Data, VecCollection};
use eddy_core::WindowSpec;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

/// Final rows of closed windows (see the module docs).
///
/// ```
/// use differential_dataflow::input::Input;
/// use eddy_core::WindowSpec;
/// use eddy_operators::ClosedWindows;
/// use std::sync::{Arc, Mutex};
/// use timely::dataflow::InputHandle;
/// use timely::dataflow::operators::{Input as _, Probe};
///
/// // (window start, count) rows of 10 ms windows; the watermark closes [0, 10) at epoch 2.
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let out = seen.clone();
/// timely::execute_directly(move |worker| {
///     let mut marks = InputHandle::new();
///     let (mut rows, probe) = worker.dataflow::<u64, _, _>(|scope| {
///         let (rows_in, rows) = scope.new_collection::<(i64, u64), isize>();
///         let watermarks = scope.input_from(&mut marks);
///         let out = out.clone();
///         let (probe, _) = rows
///             .closed_windows(watermarks, WindowSpec::new(10), |r| r.0, "Closed")
///             .inspect(move |x| out.lock().unwrap().push(*x))
///             .probe();
///         (rows_in, probe)
///     });
///     rows.insert((0, 1)); // epoch 0: window 0 holds 1 event
///     marks.send(5);
///     for epoch in 1..=3u64 {
///         rows.advance_to(epoch);
///         marks.advance_to(epoch);
///         match epoch {
///             1 => { rows.remove((0, 1)); rows.insert((0, 2)); marks.send(8); } // 2 events
///             2 => { rows.remove((0, 2)); marks.send(12); } // closed: retracted
///             _ => marks.send(12),
///         }
///         rows.flush();
///         worker.step_while(|| probe.less_than(&epoch));
///     }
/// });
/// // The value changed at epoch 1 (not a close); the close at epoch 2 reports the final row.
/// assert_eq!(*seen.lock().unwrap(), vec![((0, 2), 2, 1)]);
/// ```
pub trait ClosedWindows<'scope, D> {
    /// The final row of each window of `self` (rows of open windows, `start` giving a row's
    /// window start) at the epoch whose watermark closes the window. `watermarks` carries
    /// `W(e)` at epoch `e` on every worker; each worker reports the rows it holds.
    fn closed_windows(
        self,
        watermarks: StreamVec<'scope, Epoch, i64>,
        window: WindowSpec,
        start: impl Fn(&D) -> i64 + 'static,
        name: &str,
    ) -> VecCollection<'scope, Epoch, D, isize>;
}

impl<'scope, D: Data> ClosedWindows<'scope, D> for VecCollection<'scope, Epoch, D, isize> {
    fn closed_windows(
        self,
        watermarks: StreamVec<'scope, Epoch, i64>,
        window: WindowSpec,
        start: impl Fn(&D) -> i64 + 'static,
        name: &str,
    ) -> VecCollection<'scope, Epoch, D, isize> {
        self.inner
            .binary_frontier(watermarks, Pipeline, Pipeline, name, move |_cap, _info| {
                let mut rows = EpochStash::<(D, isize)>::default();
                let mut marks = EpochStash::<i64>::default();
                let mut watermark = i64::MIN;
                move |(input, rows_frontier), (mark_input, marks_frontier), output| {
                    input.for_each(|cap, data| {
                        // Only a retraction can be a close: insertions are not kept.
                        data.retain(|(_, _, diff)| *diff < 0);
                        rows.absorb_updates(cap, data)
                    });
                    mark_input.for_each(|cap, data| marks.absorb(cap, data));
                    // An epoch is complete once neither input can still deliver data for it.
                    let done =
                        |t: &Epoch| !rows_frontier.less_equal(t) && !marks_frontier.less_equal(t);
                    loop {
                        let next_rows = rows.first_epoch().filter(|t| done(t));
                        let next_mark = marks.first_epoch().filter(|t| done(t));
                        // Watermarks of an epoch apply before (and to) its rows.
                        match (next_mark, next_rows) {
                            (Some(m), r) if r.is_none_or(|r| m <= r) => {
                                let (_, ws) = marks.pop_if(|_| true).expect("checked");
                                watermark = ws.into_iter().fold(watermark, i64::max);
                            }
                            (_, Some(_)) => {
                                let (cap, updates) = rows.pop_if(|_| true).expect("checked");
                                let time = *cap.time();
                                let mut session = output.session(&cap);
                                for (row, diff) in updates {
                                    if diff < 0 && window.is_closed(start(&row), watermark) {
                                        session.give((row, time, -diff));
                                    }
                                }
                            }
                            _ => break,
                        }
                    }
                }
            })
            .as_collection()
    }
}
