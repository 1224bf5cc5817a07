//! Shared test harness of the dataflow oracle tests: seeded streams in epochs, the source's
//! watermark and late filter, running a dataflow on several workers, and reading its output
//! as of an epoch.

use differential_dataflow::input::Input;
use differential_dataflow::{ExchangeData, VecCollection};
use eddy_core::{Event, EventType, WindowSpec};
use eddy_operators::Epoch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use timely::dataflow::operators::Input as _;
use timely::dataflow::{InputHandle, StreamVec};

/// Shape of a generated stream.
#[derive(Clone, Copy)]
pub struct StreamShape {
    pub users: u64,
    pub campaigns: u64,
    pub max_per_epoch: usize,
    /// Probability of a click, and of a conversion.
    pub click: f64,
    pub conversion: f64,
    /// Probability that a view or click also carries an amount (conversions always do).
    pub other_amounts: f64,
}

/// Seeded stream split in epochs: event times advance ~150 ms per epoch, shuffled within
/// 600 ms (some beyond the lateness), with some far-late events.
pub fn stream(seed: u64, epochs: usize, shape: StreamShape) -> Vec<Vec<Event>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let base = 1_700_000_000_000i64;
    (0..epochs)
        .map(|epoch| {
            let n = rng.random_range(0..shape.max_per_epoch);
            (0..n)
                .map(|_| {
                    let mut ts = base + epoch as i64 * 150 + rng.random_range(-600..200);
                    if rng.random_bool(0.03) {
                        ts -= 5_000;
                    }
                    let x: f64 = rng.random();
                    let event_type = if x < shape.conversion {
                        EventType::Conversion
                    } else if x < shape.conversion + shape.click {
                        EventType::Click
                    } else {
                        EventType::View
                    };
                    Event {
                        ts_ms: ts,
                        user_id: rng.random_range(0..shape.users),
                        campaign_id: rng.random_range(0..shape.campaigns),
                        event_type,
                        amount_micros: (event_type == EventType::Conversion
                            || rng.random_bool(shape.other_amounts))
                        .then(|| rng.random_range(0..5_000_000)),
                    }
                })
                .collect()
        })
        .collect()
}

/// The driver's watermark and late filter, as a source would apply them.
pub fn accept(
    epochs: &[Vec<Event>],
    window: WindowSpec,
    lateness: i64,
) -> (Vec<Vec<Event>>, Vec<i64>) {
    let mut max_ts = i64::MIN;
    let mut wm = i64::MIN;
    let mut accepted = Vec::new();
    let mut marks = Vec::new();
    for batch in epochs {
        if max_ts != i64::MIN {
            wm = wm.max(max_ts - lateness);
        }
        marks.push(wm);
        accepted.push(
            batch
                .iter()
                .copied()
                .filter(|e| !window.is_closed(e.ts_ms, wm))
                .collect(),
        );
        max_ts = max_ts.max(batch.iter().map(|e| e.ts_ms).max().unwrap_or(i64::MIN));
    }
    (accepted, marks)
}

/// Runs `build` on `workers` threads over `accepted` (one epoch per batch, events spread over
/// workers by content), and returns every output update.
pub fn run<D, F>(
    workers: usize,
    accepted: &[Vec<Event>],
    marks: &[i64],
    build: F,
) -> Vec<(D, Epoch, isize)>
where
    D: ExchangeData,
    F: for<'s> Fn(
            VecCollection<'s, Epoch, Event, isize>,
            StreamVec<'s, Epoch, i64>,
        ) -> VecCollection<'s, Epoch, D, isize>
        + Send
        + Sync
        + 'static,
{
    let out: Arc<Mutex<Vec<(D, Epoch, isize)>>> = Arc::default();
    let out2 = out.clone();
    let accepted = Arc::new(accepted.to_vec());
    let marks = Arc::new(marks.to_vec());
    let build = Arc::new(build);
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let out3 = out2.clone();
        let build = build.clone();
        let mut wm_input = InputHandle::new();
        let (mut events, probe) = worker.dataflow::<Epoch, _, _>(|scope| {
            let (events_in, events) = scope.new_collection::<Event, isize>();
            let watermarks = scope.input_from(&mut wm_input);
            let (probe, _) = build(events, watermarks)
                .inspect(move |x| out3.lock().unwrap().push(x.clone()))
                .probe();
            (events_in, probe)
        });
        for (epoch, batch) in accepted.iter().enumerate() {
            let epoch = epoch as Epoch;
            events.advance_to(epoch);
            wm_input.advance_to(epoch);
            wm_input.send(marks[epoch as usize]);
            for (i, e) in batch.iter().enumerate() {
                if (i * 7 + e.user_id as usize) % peers == index {
                    events.insert(*e);
                }
            }
            events.advance_to(epoch + 1);
            wm_input.advance_to(epoch + 1);
            events.flush();
            worker.step_while(|| probe.less_than(&(epoch + 1)));
        }
    })
    .expect("timely runs");
    std::mem::take(&mut *out.lock().unwrap())
}

/// The collection as of `at`: every record with multiplicity one (asserted), sorted.
pub fn as_of<D: Ord + Clone + std::fmt::Debug>(updates: &[(D, Epoch, isize)], at: Epoch) -> Vec<D> {
    let mut acc: BTreeMap<D, isize> = BTreeMap::new();
    for (d, t, r) in updates {
        if *t <= at {
            *acc.entry(d.clone()).or_default() += r;
        }
    }
    acc.into_iter()
        .filter(|(d, r)| {
            assert!(*r == 0 || *r == 1, "multiplicity {r} of {d:?}");
            *r == 1
        })
        .map(|(d, _)| d)
        .collect()
}

/// From scratch: each user's interest campaigns in the sliding window under `w` (only in
/// closed panes when `closed_only`).
pub fn oracle_sets(
    events: &[Event],
    w: i64,
    pane: WindowSpec,
    sliding_ms: i64,
    views_are_interest: bool,
    closed_only: bool,
) -> BTreeMap<u64, Vec<u64>> {
    let mut sets: BTreeMap<u64, std::collections::BTreeSet<u64>> = BTreeMap::new();
    for e in events {
        if pane.start(e.ts_ms) + sliding_ms > w
            && (!closed_only || pane.end(e.ts_ms) <= w)
            && (e.event_type != EventType::View || views_are_interest)
        {
            sets.entry(e.user_id).or_default().insert(e.campaign_id);
        }
    }
    sets.into_iter()
        .map(|(u, s)| (u, s.into_iter().collect()))
        .collect()
}

/// From scratch: every user's `k` most similar users over all pairs (exact Jaccard as a
/// fraction, ties by lower id).
pub fn oracle_similar(sets: &BTreeMap<u64, Vec<u64>>, k: usize) -> Vec<eddy_core::SimilarUsers> {
    let mut out = Vec::new();
    for (u, su) in sets {
        let mut found: Vec<eddy_core::Neighbor> = Vec::new();
        for (v, sv) in sets {
            if u == v {
                continue;
            }
            let shared = su.iter().filter(|c| sv.contains(c)).count() as u32;
            if shared > 0 {
                found.push(eddy_core::Neighbor {
                    user_id: *v,
                    shared,
                    union: (su.len() + sv.len()) as u32 - shared,
                });
            }
        }
        // Best first: compare shared/union exactly by cross-multiplying.
        found.sort_by(|a, b| {
            (b.shared as u64 * a.union as u64)
                .cmp(&(a.shared as u64 * b.union as u64))
                .then(a.user_id.cmp(&b.user_id))
        });
        found.truncate(k);
        if !found.is_empty() {
            out.push(eddy_core::SimilarUsers {
                user_id: *u,
                neighbors: found,
            });
        }
    }
    out
}
