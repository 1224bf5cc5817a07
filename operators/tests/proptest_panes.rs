//! Property tests of the pane arithmetic of `pane_accumulate` (operators/src/panes.rs) near the
//! numeric limits: event times and watermarks near `i64::MIN` / `i64::MAX`, large panes and
//! sliding lengths, against a model of the documented rule:
//!
//! * a pane `p` is closed once `p + size <= w` (exact), so `OnClose` emits it then;
//! * it is retired once `p + retire_after_ms <= w`, the sum saturating at `i64::MAX` (a pane
//!   whose retirement lies past the end of the range retires at `w = i64::MAX`).
//!
//! After the last watermark, the consolidated output holds exactly the panes that are not
//! retired (and, for `OnClose`, closed), each with its count.

use eddy_core::WindowSpec;
use eddy_operators::{Emit, PaneAccumulate, PaneSpec, Sum};
use proptest::prelude::*;
use std::collections::BTreeMap;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::capture::Extract;
use timely::dataflow::operators::{Capture, Input};

fn any_ts() -> impl Strategy<Value = i64> {
    prop_oneof![
        (0..64i64).prop_map(|d| i64::MIN + d),
        (0..64i64).prop_map(|d| i64::MAX - d),
        (0..1_000i64).prop_map(|d| i64::MIN + d),
        (0..1_000i64).prop_map(|d| i64::MAX - d),
        -1_000..1_000i64,
        any::<i64>(),
    ]
}

/// `(pane size, sliding length)`: the length a multiple of the size.
fn any_spec() -> impl Strategy<Value = (i64, i64)> {
    prop_oneof![
        (1..100i64, 1..5i64).prop_map(|(s, k)| (s, s * k)),
        (1..5i64).prop_map(|k| (i64::MAX / 4, i64::MAX / 4 * k)),
        Just((i64::MAX, i64::MAX)),
        (1..100i64).prop_map(|s| (s, i64::MAX / s * s)),
    ]
}

/// Runs epochs of `(events, watermark)`; returns the consolidated `pane start -> count`.
fn run(spec: PaneSpec, epochs: Vec<(Vec<i64>, i64)>) -> BTreeMap<i64, isize> {
    let captured = timely::example(move |scope| {
        let mut events = InputHandle::new();
        let mut marks = InputHandle::new();
        let out = scope
            .input_from(&mut events)
            .pane_accumulate::<_, Sum<isize>, _>(
                scope.input_from(&mut marks),
                spec,
                "Panes",
                |ts: &i64| Some((*ts, 0u8, 1isize)),
            )
            .inner
            .capture();
        for (e, (ts, w)) in epochs.into_iter().enumerate() {
            let e = e as u64;
            events.advance_to(e);
            marks.advance_to(e);
            for t in ts {
                events.send(t);
            }
            marks.send(w);
        }
        out
    });
    let mut panes = BTreeMap::new();
    for (((start, _key), ()), _time, diff) in captured.extract().into_iter().flat_map(|(_, v)| v) {
        *panes.entry(start).or_insert(0isize) += diff;
    }
    panes.retain(|_, d| *d != 0);
    panes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn panes_close_and_retire_by_the_rule_near_the_limits(
        (size, length) in any_spec(),
        on_close in any::<bool>(),
        raw in proptest::collection::vec(
            (proptest::collection::vec(any_ts(), 0..6), any_ts()), 1..6),
    ) {
        let window = WindowSpec::new(size);
        let emit = if on_close { Emit::OnClose } else { Emit::Live };
        let spec = PaneSpec::sliding(window, length, emit);
        let closed = |p: i64, w: i64| i128::from(p) + i128::from(size) <= i128::from(w);
        let retired = |p: i64, w: i64| p.saturating_add(length) <= w;
        // Watermarks never go back; an event only arrives while its pane is open under the
        // watermark of its epoch (the invariant required from upstream).
        let mut w = i64::MIN;
        let mut epochs = Vec::new();
        let mut counts: BTreeMap<i64, isize> = BTreeMap::new();
        for (ts, mark) in raw {
            w = w.max(mark);
            let ts: Vec<i64> = ts.into_iter().filter(|&t| !closed(window.start(t), w)).collect();
            for &t in &ts {
                *counts.entry(window.start(t)).or_insert(0) += 1;
            }
            epochs.push((ts, w));
        }
        let expected: BTreeMap<i64, isize> = counts
            .into_iter()
            .filter(|&(p, _)| !retired(p, w) && (!on_close || closed(p, w)))
            .collect();
        prop_assert_eq!(run(spec, epochs), expected);
    }
}

/// The first pane of the `i64` range (starting at `i64::MIN`) is emitted when it closes.
#[test]
fn the_pane_at_i64_min_is_emitted_on_close() {
    let spec = PaneSpec::sliding(WindowSpec::new(10), 30, Emit::OnClose);
    let got = run(
        spec,
        vec![(vec![i64::MIN + 3], i64::MIN), (vec![], i64::MIN + 10)],
    );
    assert_eq!(got, BTreeMap::from([(i64::MIN, 1)]));
}

/// The first pane of the `i64` range is not emitted before it closes (it was, on arrival: the
/// "emitted through" mark started at `i64::MIN`, which counted that pane as already closed).
#[test]
fn the_pane_at_i64_min_waits_for_its_close() {
    let spec = PaneSpec::sliding(WindowSpec::new(10), 30, Emit::OnClose);
    let got = run(
        spec,
        vec![(vec![i64::MIN + 3], i64::MIN), (vec![], i64::MIN + 9)],
    );
    assert_eq!(got, BTreeMap::new());
}
