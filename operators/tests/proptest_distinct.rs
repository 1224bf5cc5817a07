//! Property test of `sliding_distinct` and `sliding_distinct_closing` (operators/src/distinct.rs)
//! against a brute-force oracle over random streams: random pane sizes and window lengths, every
//! `Emit` mode, 1–4 workers,
//! random (sometimes missing, sometimes going back) watermarks, events in open, closed (replays)
//! and retired panes, and epochs fed ahead of the dataflow (so events of later epochs reach the
//! operator before earlier watermarks are applied).
//!
//! The oracle recomputes the set from scratch at every epoch `e`, under the running maximum
//! `W(e)` of the watermarks sent through `e`:
//! * `Live`: keys with an event (sent at an epoch `<= e`) in a pane not retired under `W(e)`;
//! * `OnClose`: the same, in a pane closed and not retired under `W(e)`;
//! * `OnCloseSpread { epochs }`: the `OnClose` set, where a key entering at `e` because a pane
//!   holding one of its earlier events closed at `e` enters at `e + hash(key) % epochs` instead,
//!   and a key leaving at `e` leaves at `max(e, its entry)`.
//!
//! Each key's multiplicity is 0 or 1 at every epoch, the updates are exactly the entries and
//! exits (in `Live`/`OnClose`: no update when a newer pane refreshes a key), and the final
//! gauge is exact (two entries per key in the set plus the `(open pane, key)` pairs).
//!
//! `sliding_distinct_closing`, run in the same dataflow on the same inputs, produces the same
//! set updates and gauge, and its closed-pane facts are checked against their own oracle: at
//! epoch `e`, exactly one `(p, key)` per key with an event in a pane `p` that `W(e)` closes
//! and `W(e - 1)` did not, sent at an epoch whose watermark left `p` open (never for events
//! of already-closed panes: replays), unless `W(e)` also retires `p`; none in `Live`.
//!
//! Restart from the facts (on-close modes, streams without replays, as a source with a late
//! filter feeds them): a run restarted at epoch `k` with the facts through `k` of panes inside
//! the window under `W(k)` (each key's latest such pane, given as events of closed panes at
//! epoch 0, with watermark `W(k)`), the events through `k` of panes open under `W(k)`, and the
//! epochs after `k`, has the uninterrupted run's set at every later epoch (once the spread of
//! the insertions at a close cannot differ) and its facts after `k`, and emits no fact of a
//! pane closed under `W(k)`; on another worker count.

use eddy_core::WindowSpec;
use eddy_operators::{Emit, Epoch, PaneSpec, SlidingDistinct, StateGauge};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use timely::dataflow::InputHandle;
use timely::dataflow::operators::{Input, Inspect, Probe};

type Key = u64;

/// One epoch: events `(ts, key, worker)`, the watermark sent (if any), and whether the driver
/// waits for the dataflow to finish the epoch before feeding the next.
#[derive(Debug, Clone)]
struct Epochal {
    events: Vec<(i64, Key, usize)>,
    mark: Option<i64>,
    wait: bool,
}

/// The slot of `OnCloseSpread` (the operator's documented `hash(key) % epochs`).
fn slot(key: &Key, spread: u64) -> u64 {
    if spread <= 1 {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish() % spread
}

/// What one run produced: `sliding_distinct`'s updates and final gauge, and
/// `sliding_distinct_closing`'s updates, final gauge and facts `(pane, key, epoch)`.
struct Ran {
    updates: Vec<(Key, Epoch, isize)>,
    held: usize,
    closing_updates: Vec<(Key, Epoch, isize)>,
    closing_held: usize,
    facts: Vec<(i64, Key, Epoch)>,
}

/// Runs both operators (on the same inputs, in one dataflow) on `workers` workers.
fn run(workers: usize, spec: PaneSpec, epochs: &[Epochal]) -> Ran {
    type Shared<T> = Arc<Mutex<Vec<T>>>;
    let out: Shared<(Key, Epoch, isize)> = Arc::default();
    let closing_out: Shared<(Key, Epoch, isize)> = Arc::default();
    let facts: Shared<(i64, Key, Epoch)> = Arc::default();
    let gauge = StateGauge::new();
    let closing_gauge = StateGauge::new();
    let shared = (
        out.clone(),
        closing_out.clone(),
        facts.clone(),
        gauge.clone(),
        closing_gauge.clone(),
    );
    let epochs = Arc::new(epochs.to_vec());
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let (out3, closing_out3, facts3, gauge3, closing_gauge3) = shared.clone();
        let mut events = InputHandle::new();
        let mut marks = InputHandle::new();
        let probe = worker.dataflow::<Epoch, _, _>(|scope| {
            let events = scope.input_from(&mut events);
            let marks = scope.input_from(&mut marks);
            let (probe, _) = events
                .clone()
                .sliding_distinct(
                    marks.clone(),
                    spec,
                    "Distinct",
                    // A poor hash on purpose: neighbouring keys share a worker.
                    |k: &Key| *k / 2,
                    &gauge3,
                    |e: &(i64, Key)| Some(*e),
                )
                .inner
                .inspect(move |u| out3.lock().unwrap().push(*u))
                .probe();
            let (set, closed) = events.sliding_distinct_closing(
                marks,
                spec,
                "DistinctClosing",
                |k: &Key| *k / 2,
                &closing_gauge3,
                |e: &(i64, Key)| Some(*e),
            );
            set.inner
                .inspect(move |u| closing_out3.lock().unwrap().push(*u))
                .probe_with(&probe);
            closed
                .inspect_core(move |event| {
                    if let Ok((stamp, data)) = event {
                        let times: Vec<Epoch> = stamp.into_iter().copied().collect();
                        assert_eq!(times.len(), 1, "facts travel at one epoch");
                        let mut facts = facts3.lock().unwrap();
                        facts.extend(data.iter().map(|&(p, k)| (p, k, times[0])));
                    }
                })
                .probe_with(&probe);
            probe
        });
        for (e, epoch) in epochs.iter().enumerate() {
            let e = e as Epoch;
            events.advance_to(e);
            marks.advance_to(e);
            for &(ts, k, w) in &epoch.events {
                if w % worker.peers() == index {
                    events.send((ts, k));
                }
            }
            if let Some(m) = epoch.mark {
                marks.send(m);
            }
            events.advance_to(e + 1);
            marks.advance_to(e + 1);
            if epoch.wait {
                worker.step_while(|| probe.less_than(&(e + 1)));
            }
        }
    })
    .expect("timely runs");
    let take = |v: &Mutex<Vec<(Key, Epoch, isize)>>| std::mem::take(&mut *v.lock().unwrap());
    Ran {
        updates: take(&out),
        held: gauge.get(),
        closing_updates: take(&closing_out),
        closing_held: closing_gauge.get(),
        facts: std::mem::take(&mut *facts.lock().unwrap()),
    }
}

/// The expected updates `(key, time) -> diff` (consolidated) and the final gauge.
fn oracle(spec: PaneSpec, epochs: &[Epochal]) -> (BTreeMap<(Key, Epoch), isize>, usize) {
    let size = spec.pane.size_ms;
    let length = spec.retire_after_ms;
    let passed = |p: i64, w: Option<i64>, by: i64| {
        w.and_then(|w| w.checked_sub(by))
            .is_some_and(|through| p <= through)
    };
    let live = spec.emit == Emit::Live;
    let spread = match spec.emit {
        Emit::OnCloseSpread { epochs } => epochs.max(1),
        _ => 1,
    };
    // Watermark applied after each epoch.
    let mut marks: Vec<Option<i64>> = Vec::new();
    let mut w: Option<i64> = None;
    for epoch in epochs {
        if let Some(m) = epoch.mark {
            w = Some(w.map_or(m, |w| w.max(m)));
        }
        marks.push(w);
    }
    // (pane, key, epoch sent) of every event.
    let sent: Vec<(i64, Key, usize)> = epochs
        .iter()
        .enumerate()
        .flat_map(|(e, epoch)| {
            epoch
                .events
                .iter()
                .map(move |&(ts, k, _)| (spec.pane.start(ts), k, e))
        })
        .collect();
    let set_at = |e: usize| -> BTreeSet<Key> {
        sent.iter()
            .filter(|&&(p, _, at)| {
                at <= e && !passed(p, marks[e], length) && (live || passed(p, marks[e], size))
            })
            .map(|&(_, k, _)| k)
            .collect()
    };
    let mut updates: BTreeMap<(Key, Epoch), isize> = BTreeMap::new();
    let mut entered: BTreeMap<Key, Epoch> = BTreeMap::new();
    let mut prev = BTreeSet::new();
    for e in 0..epochs.len() {
        let cur = set_at(e);
        for &k in cur.difference(&prev) {
            let by_close = e > 0
                && sent.iter().any(|&(p, key, at)| {
                    key == k
                        && at < e
                        && passed(p, marks[e], size)
                        && !passed(p, marks[e - 1], size)
                        && !passed(p, marks[e], length)
                });
            let at = e as Epoch + if by_close { slot(&k, spread) } else { 0 };
            entered.insert(k, at);
            *updates.entry((k, at)).or_default() += 1;
        }
        for &k in prev.difference(&cur) {
            let at = (e as Epoch).max(entered[&k]);
            *updates.entry((k, at)).or_default() -= 1;
        }
        prev = cur;
    }
    updates.retain(|_, d| *d != 0);
    let last = epochs.len() - 1;
    let open: BTreeSet<(i64, Key)> = sent
        .iter()
        .filter(|&&(p, _, _)| !live && !passed(p, marks[last], size))
        .map(|&(p, k, _)| (p, k))
        .collect();
    (updates, 2 * prev.len() + open.len())
}

/// The expected closed-pane facts `(pane, key, epoch)`, sorted: at epoch `e`, one per key with
/// an event in a pane that `W(e)` closes and `W(e - 1)` did not, sent at an epoch whose
/// watermark left the pane open (not a replay), unless `W(e)` retires the pane too. None in
/// `Live`.
fn oracle_facts(spec: PaneSpec, epochs: &[Epochal]) -> Vec<(i64, Key, Epoch)> {
    if spec.emit == Emit::Live {
        return Vec::new();
    }
    let size = spec.pane.size_ms;
    let length = spec.retire_after_ms;
    let passed = |p: i64, w: Option<i64>, by: i64| {
        w.and_then(|w| w.checked_sub(by))
            .is_some_and(|through| p <= through)
    };
    // W(e): the running maximum of the watermarks sent through `e`.
    let mut marks: Vec<Option<i64>> = Vec::new();
    let mut w: Option<i64> = None;
    for epoch in epochs {
        if let Some(m) = epoch.mark {
            w = Some(w.map_or(m, |w| w.max(m)));
        }
        marks.push(w);
    }
    let mut facts = BTreeSet::new();
    for (at, epoch) in epochs.iter().enumerate() {
        for &(ts, k, _) in &epoch.events {
            let p = spec.pane.start(ts);
            // A replay (or an event of a retired pane): its pane was closed when it arrived.
            if passed(p, marks[at], size) {
                continue;
            }
            // The epoch that closes the pane, if any.
            let Some(closes) = (at + 1..epochs.len()).find(|&e| passed(p, marks[e], size)) else {
                continue;
            };
            if !passed(p, marks[closes], length) {
                facts.insert((p, k, closes as Epoch));
            }
        }
    }
    facts.into_iter().collect()
}

fn any_epochs(size: i64, length: i64) -> impl Strategy<Value = Vec<Epochal>> {
    let epoch = (
        proptest::collection::vec((-(length + 2 * size)..3 * size, 0..8u64, 0..3usize), 0..6),
        prop_oneof![
            6 => (0..size).prop_map(Some),
            1 => (-3 * size..0).prop_map(Some),
            1 => Just(None),
        ],
        any::<bool>(),
    );
    proptest::collection::vec(epoch, 1..30).prop_map(move |raw| {
        // Event times and watermarks relative to a clock that advances by the mark's offset.
        let mut clock = 1_000i64;
        raw.into_iter()
            .map(|(events, mark, wait)| {
                let events = events
                    .into_iter()
                    .map(|(off, k, w)| (clock + off, k, w))
                    .collect();
                let mark = mark.map(|m| {
                    if m >= 0 {
                        clock += m;
                        clock
                    } else {
                        clock + m
                    }
                });
                Epochal { events, mark, wait }
            })
            .collect()
    })
}

/// The running maximum `W(e)` of the watermarks sent through each epoch.
fn running_marks(epochs: &[Epochal]) -> Vec<Option<i64>> {
    let mut w: Option<i64> = None;
    epochs
        .iter()
        .map(|epoch| {
            if let Some(m) = epoch.mark {
                w = Some(w.map_or(m, |w| w.max(m)));
            }
            w
        })
        .collect()
}

/// Whether pane `p` is at or before `w - by`.
fn passed(p: i64, w: Option<i64>, by: i64) -> bool {
    w.and_then(|w| w.checked_sub(by))
        .is_some_and(|through| p <= through)
}

/// `epochs` without the events of panes already closed when they arrive (what a source with a
/// late filter feeds).
fn without_replays(spec: PaneSpec, epochs: &[Epochal]) -> Vec<Epochal> {
    let marks = running_marks(epochs);
    epochs
        .iter()
        .zip(&marks)
        .map(|(epoch, &w)| Epochal {
            events: epoch
                .events
                .iter()
                .copied()
                .filter(|&(ts, _, _)| !passed(spec.pane.start(ts), w, spec.pane.size_ms))
                .collect(),
            ..epoch.clone()
        })
        .collect()
}

/// The epochs of a run restarted at `k` from `a`'s facts through `k` (see the module docs).
fn restarted(spec: PaneSpec, epochs: &[Epochal], k: usize, a: &Ran) -> Vec<Epochal> {
    let w = running_marks(epochs)[k];
    let mut latest: BTreeMap<Key, i64> = BTreeMap::new();
    for &(p, key, t) in &a.facts {
        if t as usize <= k && !passed(p, w, spec.retire_after_ms) {
            let q = latest.entry(key).or_insert(p);
            *q = (*q).max(p);
        }
    }
    // Restored rows are events at their pane's start, on any worker.
    let mut first: Vec<(i64, Key, usize)> = latest
        .into_iter()
        .enumerate()
        .map(|(i, (key, p))| (p, key, i))
        .collect();
    first.extend(
        epochs[..=k]
            .iter()
            .flat_map(|e| e.events.iter().copied())
            .filter(|&(ts, _, _)| !passed(spec.pane.start(ts), w, spec.pane.size_ms)),
    );
    let mut out = vec![Epochal {
        events: first,
        mark: w,
        wait: true,
    }];
    out.extend(epochs[k + 1..].iter().cloned());
    out
}

/// The set as of `at` from its updates.
fn set_as_of(updates: &[(Key, Epoch, isize)], at: Epoch) -> BTreeMap<Key, isize> {
    let mut acc: BTreeMap<Key, isize> = BTreeMap::new();
    for &(k, t, d) in updates {
        if t <= at {
            *acc.entry(k).or_default() += d;
        }
    }
    acc.retain(|_, d| *d != 0);
    acc
}

fn any_restore_case() -> impl Strategy<Value = (PaneSpec, usize, usize, Vec<Epochal>, usize)> {
    (
        1..20i64,
        1..5i64,
        prop_oneof![
            Just(Emit::OnClose),
            (1..5u64).prop_map(|epochs| Emit::OnCloseSpread { epochs }),
        ],
        1..=4usize,
        1..=4usize,
        any::<prop::sample::Index>(),
    )
        .prop_flat_map(|(size, panes, emit, workers_a, workers_b, k)| {
            let spec = PaneSpec::sliding(WindowSpec::new(size), size * panes, emit);
            any_epochs(size, size * panes).prop_map(move |epochs| {
                let epochs = without_replays(spec, &epochs);
                let k = k.index(epochs.len());
                (spec, workers_a, workers_b, epochs, k)
            })
        })
}

fn any_case() -> impl Strategy<Value = (PaneSpec, usize, Vec<Epochal>)> {
    (
        1..20i64,
        1..5i64,
        prop_oneof![
            Just(Emit::Live),
            Just(Emit::OnClose),
            (1..5u64).prop_map(|epochs| Emit::OnCloseSpread { epochs }),
        ],
        1..=4usize,
    )
        .prop_flat_map(|(size, panes, emit, workers)| {
            let spec = PaneSpec::sliding(WindowSpec::new(size), size * panes, emit);
            (Just(spec), Just(workers), any_epochs(size, size * panes))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn sliding_distinct_matches_the_oracle((spec, workers, epochs) in any_case()) {
        let ran = run(workers, spec, &epochs);
        let (updates, held) = (&ran.updates, ran.held);
        let (want, want_held) = oracle(spec, &epochs);
        let mut got: BTreeMap<(Key, Epoch), isize> = BTreeMap::new();
        let mut raw: BTreeMap<(Key, Epoch), usize> = BTreeMap::new();
        for &(k, t, d) in updates {
            *got.entry((k, t)).or_default() += d;
            *raw.entry((k, t)).or_default() += 1;
        }
        got.retain(|_, d| *d != 0);
        prop_assert_eq!(&got, &want, "spec {:?} workers {}", spec, workers);
        // Multiplicity 0 or 1 at every epoch.
        let mut acc: BTreeMap<Key, isize> = BTreeMap::new();
        let mut by_time: BTreeMap<Epoch, Vec<(Key, isize)>> = BTreeMap::new();
        for (&(k, t), &d) in &got {
            by_time.entry(t).or_default().push((k, d));
        }
        for (t, changes) in by_time {
            for (k, d) in changes {
                let m = acc.entry(k).or_default();
                *m += d;
                prop_assert!(*m == 0 || *m == 1, "key {} multiplicity {} at {}", k, m, t);
            }
        }
        // Without spread, one update per entry or exit: nothing when a key is refreshed.
        if !matches!(spec.emit, Emit::OnCloseSpread { epochs } if epochs > 1) {
            prop_assert!(raw.values().all(|n| *n == 1), "redundant updates: {:?}", raw);
        }
        prop_assert_eq!(held, want_held, "gauge");
        // `sliding_distinct_closing`: the same set updates (one by one) and state ...
        let sorted = |u: &[(Key, Epoch, isize)]| {
            let mut u = u.to_vec();
            u.sort();
            u
        };
        prop_assert_eq!(
            sorted(&ran.closing_updates),
            sorted(updates),
            "closing set, spec {:?} workers {}",
            spec,
            workers
        );
        prop_assert_eq!(ran.closing_held, want_held, "closing gauge");
        // ... and exactly the oracle's facts, each once, at the epoch that closes the pane.
        let mut facts = ran.facts.clone();
        facts.sort();
        prop_assert_eq!(
            facts,
            oracle_facts(spec, &epochs),
            "facts (pane, key, epoch), spec {:?} workers {}",
            spec,
            workers
        );
    }
}

proptest! {
    // Two runs (of both operators) per case.
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn a_restart_from_the_facts_has_the_same_set_and_facts(
        (spec, workers_a, workers_b, epochs, k) in any_restore_case()
    ) {
        let a = run(workers_a, spec, &epochs);
        let b_epochs = restarted(spec, &epochs, k, &a);
        let b = run(workers_b, spec, &b_epochs);
        let spread = match spec.emit {
            Emit::OnCloseSpread { epochs } => epochs.max(1) as usize,
            _ => 1,
        };
        let ctx = format!("spec {spec:?} workers {workers_a} then {workers_b}, restart at {k}");
        // B's epoch `j` is A's `k + j`.
        for j in spread - 1..b_epochs.len() {
            prop_assert_eq!(
                set_as_of(&b.closing_updates, j as Epoch),
                set_as_of(&a.closing_updates, (k + j) as Epoch),
                "{} epoch {}", ctx, j
            );
        }
        let w = running_marks(&epochs)[k];
        let mut got: Vec<(i64, Key, Epoch)> = b.facts.clone();
        got.sort();
        prop_assert!(
            got.iter().all(|&(p, _, _)| !passed(p, w, spec.pane.size_ms)),
            "{}: facts of panes final at the restart: {:?}", ctx, got
        );
        let mut want: Vec<(i64, Key, Epoch)> = a
            .facts
            .iter()
            .filter(|&&(_, _, t)| t as usize > k)
            .map(|&(p, key, t)| (p, key, t - k as Epoch))
            .collect();
        want.sort();
        prop_assert_eq!(got, want, "{}: facts", ctx);
    }
}
