//! Property tests of `WindowSpec` arithmetic near the numeric limits: any `i64` event time
//! (negative, near `i64::MIN` / `i64::MAX`) and any positive window size.
//!
//! The exact window of `ts` is `[floor(ts / size) * size, that + size)`, computed here in
//! `i128`. Where it fits in `i64`, `start`/`end` must equal it; where it does not (only the
//! first and last partial windows of the `i64` range), they saturate to `i64::MIN` /
//! `i64::MAX` instead of overflowing.

use eddy_core::WindowSpec;
use proptest::prelude::*;

/// Exact `(start, end)` of the window of `ts`.
fn exact(size: i64, ts: i64) -> (i128, i128) {
    let start = i128::from(ts).div_euclid(i128::from(size)) * i128::from(size);
    (start, start + i128::from(size))
}

fn clamp(x: i128) -> i64 {
    x.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Event times biased to the interesting places: the limits, zero, and anywhere.
fn any_ts() -> impl Strategy<Value = i64> {
    prop_oneof![
        (0..10_000i64).prop_map(|d| i64::MIN + d),
        (0..10_000i64).prop_map(|d| i64::MAX - d),
        -10_000..10_000i64,
        any::<i64>(),
    ]
}

fn any_size() -> impl Strategy<Value = i64> {
    prop_oneof![
        1..100_000i64,
        Just(60_000i64),
        Just(i64::MAX),
        (0..1_000i64).prop_map(|d| i64::MAX - d),
        1..=i64::MAX,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_096))]

    #[test]
    fn start_and_end_are_the_exact_window_saturated(size in any_size(), ts in any_ts()) {
        let w = WindowSpec::new(size);
        let (start, end) = exact(size, ts);
        prop_assert_eq!(w.start(ts), clamp(start));
        prop_assert_eq!(w.end(ts), clamp(end));
        // The window holds ts, and every time of it maps to the same window.
        prop_assert!(w.start(ts) <= ts && (ts < w.end(ts) || w.end(ts) == i64::MAX));
        prop_assert_eq!(w.start(w.start(ts)), w.start(ts));
    }

    #[test]
    fn is_closed_means_the_watermark_reached_the_end(
        size in any_size(),
        ts in any_ts(),
        watermark in any_ts(),
    ) {
        let w = WindowSpec::new(size);
        let (_, end) = exact(size, ts);
        // Exact when the end fits; the last (partial) window of the range closes only at
        // i64::MAX.
        prop_assert_eq!(w.is_closed(ts, watermark), clamp(end) <= watermark);
        prop_assert_eq!(w.is_closed(ts, watermark), end <= i128::from(watermark) || (end > i128::from(i64::MAX) && watermark == i64::MAX));
        // Monotone in the watermark.
        if w.is_closed(ts, watermark) {
            prop_assert!(w.is_closed(ts, watermark.saturating_add(1)));
        }
    }

    #[test]
    fn windows_are_ordered(size in any_size(), a in any_ts(), b in any_ts()) {
        let w = WindowSpec::new(size);
        if a <= b {
            prop_assert!(w.start(a) <= w.start(b));
            prop_assert!(w.end(a) <= w.end(b));
        }
    }
}
