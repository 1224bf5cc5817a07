//! Property tests of the watermark rule (`track_watermark`, operators/src/watermark.rs) near
//! the numeric limits, against an exact model in `i128`:
//!
//! `W(e) = max(W(e-1), floor, M - lateness)` where `M` is the minimum over non-idle
//! partitions of their largest event time (the maximum over all partitions when every one is
//! idle; no candidate while a non-idle partition has seen nothing), saturated to `i64`.
//! Also: `W` is monotone and never below the floor, never above the largest reported event
//! time minus the lateness (or the floor), and with event times bounded by wall clock +
//! `max_future_ms` and the floor from `WatermarkPolicy::bounded_floor`, never above wall
//! clock + `max_future_ms`.

use eddy_core::WindowSpec;
use eddy_operators::{PartitionProgress, TrackWatermark, WatermarkHandle, WatermarkPolicy};
use proptest::prelude::*;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::Input;

/// One report: (partition index, largest event time, idle).
type Report = (usize, Option<i64>, bool);

fn any_ts() -> impl Strategy<Value = i64> {
    prop_oneof![
        (0..1_000i64).prop_map(|d| i64::MIN + d),
        (0..1_000i64).prop_map(|d| i64::MAX - d),
        -1_000..1_000i64,
        1_600_000_000_000..1_800_000_000_000i64,
        any::<i64>(),
    ]
}

fn any_lateness() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        0..10_000i64,
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>(),
    ]
}

fn reports(partitions: usize, ts: BoxedStrategy<i64>) -> impl Strategy<Value = Vec<Vec<Report>>> {
    let report = (
        0..partitions,
        proptest::option::weighted(0.9, ts),
        any::<bool>(),
    );
    proptest::collection::vec(proptest::collection::vec(report, 0..4), 1..8)
}

/// Runs the operator: the reports of epoch `e` are sent at `e`; returns `W(e + 1)` for each.
fn run(policy: WatermarkPolicy, epochs: Vec<Vec<Report>>) -> Vec<i64> {
    timely::execute_directly(move |worker| {
        let handle = WatermarkHandle::new(policy.floor_ms);
        let mut input = InputHandle::new();
        let partitions = policy.partitions.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .track_watermark(policy, handle.clone());
        });
        let mut out = Vec::new();
        for (e, reports) in epochs.into_iter().enumerate() {
            for (p, max_ts_ms, idle) in reports {
                input.send(PartitionProgress {
                    partition: partitions[p],
                    max_ts_ms,
                    idle,
                    next_offset: e as i64,
                    first_offsets: max_ts_ms.map(|ts| (ts, e as i64)).into_iter().collect(),
                });
            }
            let next = e as u64 + 1;
            input.advance_to(next);
            while handle.watermark_at(next).is_none() {
                worker.step();
            }
            out.push(handle.latest());
        }
        out
    })
}

/// The rule, exactly.
fn model(partitions: usize, floor: i64, lateness: i64, epochs: &[Vec<Report>]) -> Vec<i64> {
    let mut state: Vec<Option<(Option<i64>, bool)>> = vec![None; partitions];
    let mut w = floor;
    let mut out = Vec::new();
    for reports in epochs {
        for &(p, ts, idle) in reports {
            let prev = state[p].and_then(|s| s.0);
            state[p] = Some((prev.max(ts), idle));
        }
        let active: Vec<Option<i64>> = state
            .iter()
            .filter(|s| s.is_none_or(|s| !s.1))
            .map(|s| s.and_then(|s| s.0))
            .collect();
        let candidate = if active.is_empty() {
            state.iter().filter_map(|s| s.and_then(|s| s.0)).max()
        } else if active.iter().all(Option::is_some) {
            active.iter().flatten().min().copied()
        } else {
            None
        };
        if let Some(c) = candidate {
            let exact = i128::from(c) - i128::from(lateness);
            let c = exact.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            w = w.max(c);
        }
        w = w.max(floor);
        out.push(w);
    }
    out
}

fn policy(partitions: usize, lateness_ms: i64, floor_ms: i64, size: i64) -> WatermarkPolicy {
    WatermarkPolicy {
        window: WindowSpec::new(size),
        retain_ms: size,
        lateness_ms,
        partitions: (0..partitions as i32).map(|p| p * 3 + 1).collect(),
        floor_ms,
        catch_up_to: Default::default(),
        replay_to: Default::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn watermark_follows_the_rule_near_the_limits(
        (partitions, epochs) in (1usize..4)
            .prop_flat_map(|n| (Just(n), reports(n, any_ts().boxed()))),
        lateness in any_lateness(),
        floor in prop_oneof![Just(i64::MIN), any_ts()],
        size in prop_oneof![Just(1i64), 1..100_000i64, Just(i64::MAX)],
    ) {
        let got = run(policy(partitions, lateness, floor, size), epochs.clone());
        prop_assert_eq!(&got, &model(partitions, floor, lateness, &epochs));
        let max_seen = epochs.iter().flatten().filter_map(|r| r.1).max();
        let mut prev = floor;
        for &w in &got {
            prop_assert!(w >= prev && w >= floor);
            let bound = max_seen.map_or(floor, |m| floor.max(m.saturating_sub(lateness)));
            prop_assert!(w <= bound, "{} above {}", w, bound);
            prev = w;
        }
    }

    #[test]
    fn watermark_never_runs_ahead_of_wall_clock_plus_max_future(
        (partitions, offsets) in (1usize..4).prop_flat_map(|n| {
            // Event times as offsets below now + max_future (sources reject later ones).
            let below = prop_oneof![0..1_000i64, any::<i64>().prop_map(|x| (x / 2).abs())];
            (Just(n), reports(n, below.boxed()))
        }),
        now in prop_oneof![
            1_600_000_000_000..1_800_000_000_000i64,
            (0..1_000i64).prop_map(|d| i64::MAX - d),
        ],
        max_future in prop_oneof![Just(0i64), 0..600_000i64, Just(i64::MAX), Just(-1i64)],
        lateness in prop_oneof![Just(0i64), 0..10_000i64, Just(i64::MAX)],
        checkpoint in any_ts(),
    ) {
        let limit = now.saturating_add(max_future.max(0));
        let epochs: Vec<Vec<Report>> = offsets
            .into_iter()
            .map(|e| {
                e.into_iter()
                    .map(|(p, off, idle)| (p, off.map(|o| limit.saturating_sub(o)), idle))
                    .collect()
            })
            .collect();
        let floor = WatermarkPolicy::bounded_floor(checkpoint, now, max_future);
        prop_assert!(floor <= limit && floor <= checkpoint);
        let got = run(policy(partitions, lateness, floor, 60_000), epochs);
        for w in got {
            prop_assert!(w <= limit, "watermark {} ahead of {}", w, limit);
        }
    }
}
