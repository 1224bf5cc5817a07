//! User interaction sets: the campaigns each user showed interest in within the sliding window.

use crate::similarity::mix;
use differential_dataflow::VecCollection;
use eddy_core::{Event, EventType, InteractionPane, WindowSpec};
use eddy_operators::{Emit, Epoch, PaneSpec, SlidingDistinct, StateGauge};
use timely::dataflow::StreamVec;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::vec::Map;

/// Parameters of [`interactions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InteractionParams {
    /// Panes: the tumbling window the sliding window advances by.
    pub pane: WindowSpec,
    /// Sliding window length, ms (a multiple of the pane size).
    pub sliding_ms: i64,
    /// Whether views count as interest (clicks and conversions always do).
    pub views_are_interest: bool,
    /// [`Emit::Live`]: every pane inside the window counts, open ones included.
    /// [`Emit::OnClose`]: only closed panes count (*settled* sets, which change at most once
    /// per pane: what the similarity and recommendation dataflows use, see `similarity`).
    pub emit: Emit,
}

impl InteractionParams {
    /// Whether an event of this type shows interest.
    pub fn is_interest(&self, t: EventType) -> bool {
        t != EventType::View || self.views_are_interest
    }
}

/// The set of `(user_id, campaign_id)` pairs with at least one interest event in the sliding
/// window, each with multiplicity one, maintained incrementally:
///
/// ```sql
/// SELECT DISTINCT user_id, campaign_id FROM events
/// WHERE tumble_start(ts, :S) + :L > watermark()
///   AND (NOT :settled OR tumble_start(ts, :S) + :S <= watermark())  -- Emit::OnClose
///   AND (event_type IN ('click', 'conversion') OR (:views_are_interest AND event_type = 'view'));
/// ```
///
/// A [`SlidingDistinct`] keyed by pair: each pair is held once, with the latest pane that
/// holds an interest event of it, and leaves the set when that pane retires (state: the pairs
/// in the window plus the pairs of open panes, never pairs × panes). With
/// [`Emit::OnCloseSpread`] a pair entering at a pane close is inserted at `close + slot(pair)`.
///
/// Placement: the pairs of user `u` live (and their updates are produced) on worker
/// `mix(u) % peers` ([`mix`]), the owner of `u` in the similarity loop, so the pairs reach
/// their owner without crossing workers.
pub fn interactions<'scope>(
    events: VecCollection<'scope, Epoch, Event, isize>,
    watermarks: StreamVec<'scope, Epoch, i64>,
    params: InteractionParams,
) -> VecCollection<'scope, Epoch, (u64, u64), isize> {
    interactions_with_gauge(events, watermarks, params, &StateGauge::new())
}

/// [`interactions`], reporting the entries it holds to `gauge` (see [`SlidingDistinct`]: two
/// per pair in the set, one per pair of each open pane in the on-close modes).
pub fn interactions_with_gauge<'scope>(
    events: VecCollection<'scope, Epoch, Event, isize>,
    watermarks: StreamVec<'scope, Epoch, i64>,
    params: InteractionParams,
    gauge: &StateGauge,
) -> VecCollection<'scope, Epoch, (u64, u64), isize> {
    interactions_restorable(events, None, watermarks, params, gauge).0
}

/// The interest pair of each event (insert-only: a positive difference is an event), with its
/// pane: what [`interactions_restorable`] keeps, and what a re-read of final panes stores.
pub fn interest_pairs<'scope>(
    events: VecCollection<'scope, Epoch, Event, isize>,
    params: InteractionParams,
) -> StreamVec<'scope, Epoch, InteractionPane> {
    events.inner.flat_map(move |(e, _, d)| {
        (d > 0 && params.is_interest(e.event_type)).then_some(InteractionPane {
            window_start_ms: params.pane.start(e.ts_ms),
            user_id: e.user_id,
            campaign_id: e.campaign_id,
        })
    })
}

/// [`interactions_with_gauge`] with a restored state, plus the durable form of the state:
/// * `restored`: `(pane, user, campaign)` rows of final panes (for each pair, at least its
///   latest final pane inside the sliding window, as [`interactions_restorable`]'s second
///   output reported them before a restart), counted as events of closed panes: the set equals
///   that of an uninterrupted run, while no record of those panes is read again;
/// * the second output: in the on-close modes, at the epoch whose watermark closes a pane,
///   the pane's interest pairs (`SELECT DISTINCT tumble_start(ts, :S), user_id, campaign_id`
///   over the pane's interest events), never retracted: what a restart restores from.
///
/// Restored rows produce no second-output rows (they are durable already).
#[allow(clippy::type_complexity)]
pub fn interactions_restorable<'scope>(
    events: VecCollection<'scope, Epoch, Event, isize>,
    restored: Option<VecCollection<'scope, Epoch, InteractionPane, isize>>,
    watermarks: StreamVec<'scope, Epoch, i64>,
    params: InteractionParams,
    gauge: &StateGauge,
) -> (
    VecCollection<'scope, Epoch, (u64, u64), isize>,
    StreamVec<'scope, Epoch, InteractionPane>,
) {
    let mut pairs = interest_pairs(events, params);
    if let Some(restored) = restored {
        pairs = pairs.concat(restored.inner.flat_map(|(p, _, d)| (d > 0).then_some(p)));
    }
    let (set, facts) = pairs.sliding_distinct_closing(
        watermarks,
        PaneSpec::sliding(params.pane, params.sliding_ms, params.emit),
        "Interactions",
        |(user, _): &(u64, u64)| mix(*user),
        gauge,
        |p: &InteractionPane| Some((p.window_start_ms, (p.user_id, p.campaign_id))),
    );
    let facts = facts.map(
        |(window_start_ms, (user_id, campaign_id))| InteractionPane {
            window_start_ms,
            user_id,
            campaign_id,
        },
    );
    (set, facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{StreamShape, accept, as_of, oracle_sets, run, stream};

    fn check(seed: u64, workers: usize, views_are_interest: bool, emit: Emit) {
        let params = InteractionParams {
            pane: WindowSpec::new(1_000),
            sliding_ms: 3_000,
            views_are_interest,
            emit,
        };
        let shape = StreamShape {
            users: 30,
            campaigns: 8,
            max_per_epoch: 40,
            click: 0.3,
            conversion: 0.1,
            other_amounts: 0.0,
        };
        let (accepted, marks) = accept(&stream(seed, 70, shape), params.pane, 400);
        let updates = run(workers, &accepted, &marks, move |events, marks| {
            interactions(events, marks, params)
        });
        let mut all = Vec::new();
        let mut left = 0;
        for (epoch, batch) in accepted.iter().enumerate() {
            all.extend(batch.iter().copied());
            let sets = oracle_sets(
                &all,
                marks[epoch],
                params.pane,
                params.sliding_ms,
                views_are_interest,
                emit == Emit::OnClose,
            );
            let want: Vec<(u64, u64)> = sets
                .iter()
                .flat_map(|(u, s)| s.iter().map(move |c| (*u, *c)))
                .collect();
            let got = as_of(&updates, epoch as Epoch);
            if epoch > 0 {
                left += as_of(&updates, epoch as Epoch - 1)
                    .iter()
                    .filter(|p| !got.contains(p))
                    .count();
            }
            assert_eq!(got, want, "seed {seed} epoch {epoch}");
        }
        assert!(left > 20, "pairs slide out of the window ({left})");
    }

    /// Per-epoch samples of a run of [`interactions_with_gauge`] on `workers` workers: the
    /// gauges summed over the workers after each epoch.
    fn gauge_run(
        workers: usize,
        accepted: &[Vec<Event>],
        marks: &[i64],
        params: InteractionParams,
    ) -> Vec<usize> {
        use differential_dataflow::input::Input as _;
        use std::sync::{Arc, Mutex};
        use timely::dataflow::InputHandle;
        use timely::dataflow::operators::{Input as _, Probe as _};
        let samples: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(vec![0; accepted.len()]));
        let samples2 = samples.clone();
        let accepted = Arc::new(accepted.to_vec());
        let marks = Arc::new(marks.to_vec());
        timely::execute(timely::Config::process(workers), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            // One gauge per worker: its operator is quiescent when it is read (below).
            let gauge = StateGauge::new();
            let g = gauge.clone();
            let mut wm_input = InputHandle::new();
            let (mut events, probe) = worker.dataflow::<Epoch, _, _>(|scope| {
                let (events_in, events) = scope.new_collection::<Event, isize>();
                let watermarks = scope.input_from(&mut wm_input);
                let (probe, _) = interactions_with_gauge(events, watermarks, params, &g)
                    .inner
                    .probe();
                (events_in, probe)
            });
            for (epoch, batch) in accepted.iter().enumerate() {
                let e = epoch as Epoch;
                events.advance_to(e);
                wm_input.advance_to(e);
                wm_input.send(marks[epoch]);
                for (i, ev) in batch.iter().enumerate() {
                    if i % peers == index {
                        events.insert(*ev);
                    }
                }
                events.advance_to(e + 1);
                wm_input.advance_to(e + 1);
                events.flush();
                worker.step_while(|| probe.less_than(&(e + 1)));
                // Epoch `e` is done everywhere, and `e + 1` cannot start before this worker
                // releases its inputs past it: the gauge holds the state after `e`, exactly.
                samples2.lock().unwrap()[epoch] += gauge.get();
            }
        })
        .expect("timely runs");
        std::mem::take(&mut *samples.lock().unwrap())
    }

    /// State at constant key cardinality over 20 windows: exactly one entry per pair in the
    /// window (plus its index entry) and per pair of an open pane, flat once the window is
    /// full, and far below the `(pane, pair)` entries a per-pane design holds.
    #[test]
    fn state_is_bounded_by_the_pairs_in_the_window() {
        use rand::{Rng, SeedableRng};
        use std::collections::{BTreeMap, BTreeSet};
        let pane = WindowSpec::new(1_000);
        let window_panes = 16;
        // 10 users x 10 campaigns = 100 pairs; 200 events per pane, 2 epochs per pane.
        let epochs = 2 * window_panes * 20;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let base = 1_700_000_000_000i64;
        let raw: Vec<Vec<Event>> = (0..epochs)
            .map(|epoch| {
                (0..100)
                    .map(|_| Event {
                        ts_ms: base + epoch as i64 * 500 + rng.random_range(-300..200),
                        user_id: rng.random_range(0..10),
                        campaign_id: rng.random_range(0..10),
                        event_type: EventType::Click,
                        amount_micros: None,
                    })
                    .collect()
            })
            .collect();
        let (accepted, marks) = accept(&raw, pane, 200);
        for emit in [Emit::Live, Emit::OnCloseSpread { epochs: 3 }] {
            let params = InteractionParams {
                pane,
                sliding_ms: window_panes as i64 * 1_000,
                views_are_interest: false,
                emit,
            };
            let held = gauge_run(2, &accepted, &marks, params);
            // From scratch: the (pane, pair) entries of the panes not retired.
            let mut panes: BTreeMap<i64, BTreeSet<(u64, u64)>> = BTreeMap::new();
            let mut per_pane = Vec::new();
            let mut max_open = 0;
            for (epoch, batch) in accepted.iter().enumerate() {
                let w = marks[epoch];
                for e in batch {
                    panes
                        .entry(pane.start(e.ts_ms))
                        .or_default()
                        .insert((e.user_id, e.campaign_id));
                }
                panes.retain(|p, _| p + params.sliding_ms > w);
                let counted: BTreeSet<(u64, u64)> = panes
                    .iter()
                    .filter(|(p, _)| emit == Emit::Live || *p + pane.size_ms <= w)
                    .flat_map(|(_, pairs)| pairs.iter().copied())
                    .collect();
                let open: usize = panes
                    .iter()
                    .filter(|(p, _)| emit != Emit::Live && *p + pane.size_ms > w)
                    .map(|(_, pairs)| pairs.len())
                    .sum();
                let entries: usize = panes.values().map(BTreeSet::len).sum();
                max_open = max_open.max(open);
                assert_eq!(
                    held[epoch],
                    2 * counted.len() + open,
                    "{emit:?} epoch {epoch}"
                );
                per_pane.push(entries);
            }
            let n = held.len();
            let middle = held[n / 4..n / 2].iter().max().unwrap();
            let end = held[3 * n / 4..].iter().max().unwrap();
            // Two entries per pair of the key space, plus the pairs of the open panes.
            assert!(*end <= 2 * 100 + max_open, "{end} > 200 + {max_open}");
            assert!(end * 10 <= middle * 11, "flat: {middle} then {end}");
            // A design that keeps (pane, pair) entries holds several times more.
            let last = per_pane[n - 1];
            assert!(
                held[n - 1] * 3 < last,
                "{} entries vs {last} (pane, pair) entries",
                held[n - 1]
            );
        }
    }

    /// Each user's pairs are produced on worker `mix(user) % peers` (the similarity owner).
    #[test]
    fn pairs_live_on_their_users_owner() {
        use differential_dataflow::input::Input as _;
        use std::sync::{Arc, Mutex};
        use timely::dataflow::InputHandle;
        use timely::dataflow::operators::{Input as _, Inspect as _};
        let params = InteractionParams {
            pane: WindowSpec::new(1_000),
            sliding_ms: 3_000,
            views_are_interest: true,
            emit: Emit::OnCloseSpread { epochs: 2 },
        };
        let shape = StreamShape {
            users: 50,
            campaigns: 8,
            max_per_epoch: 40,
            click: 0.3,
            conversion: 0.1,
            other_amounts: 0.0,
        };
        let (accepted, marks) = accept(&stream(5, 40, shape), params.pane, 400);
        let seen: Arc<Mutex<Vec<(u64, usize, usize)>>> = Arc::default();
        let seen2 = seen.clone();
        timely::execute(timely::Config::process(3), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let seen3 = seen2.clone();
            let mut wm_input = InputHandle::new();
            let mut events = worker.dataflow::<Epoch, _, _>(|scope| {
                let (events_in, events) = scope.new_collection::<Event, isize>();
                interactions(events, scope.input_from(&mut wm_input), params)
                    .inner
                    .inspect(move |((u, _), _, _)| seen3.lock().unwrap().push((*u, index, peers)));
                events_in
            });
            for (epoch, batch) in accepted.iter().enumerate() {
                events.advance_to(epoch as Epoch);
                wm_input.advance_to(epoch as Epoch);
                wm_input.send(marks[epoch]);
                for (i, e) in batch.iter().enumerate() {
                    if i % peers == index {
                        events.insert(*e);
                    }
                }
            }
        })
        .expect("timely runs");
        let seen = seen.lock().unwrap();
        assert!(seen.len() > 100, "{} updates", seen.len());
        for &(u, worker, peers) in seen.iter() {
            assert_eq!(mix(u) % peers as u64, worker as u64, "user {u}");
        }
    }

    #[test]
    fn matches_oracle() {
        for seed in 0..3 {
            check(seed, 1, false, Emit::Live);
            check(seed + 100, 3, false, Emit::Live);
            check(seed + 200, 2, false, Emit::OnClose);
        }
        check(7, 2, true, Emit::Live);
        check(8, 3, true, Emit::OnClose);
    }
}
