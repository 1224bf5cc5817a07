//! Oracle tests of a restart from sink-held state (issue 13 Part 1) for [`build`]: a run
//! restarted from the durable outputs of an earlier run (final engagement panes and
//! interaction panes), fed only the records of windows still open under the checkpoint's
//! watermark plus the records after the checkpoint, ends with the same outputs as an
//! uninterrupted run, on any worker count.
//!
//! Shape of a test:
//! * run A: uninterrupted over all epochs (`accept`ed events, watermark `W(e)` at `e`);
//! * a *store*, as the sinks hold it: the engagement pane rows inserted (a final pane never
//!   changes: asserted) and the interaction-pane facts emitted, through a checkpoint epoch `k`;
//! * run B: a fresh dataflow (another worker count) fed at epoch 0 the restored rows of the
//!   store (engagement panes `p` with `p + size <= W < p + sliding`, `W = W(k)`, and each
//!   interest pair's latest such interaction pane), then the re-read records of epochs `<= k`
//!   whose window is open under `W` (split over `reread` epochs; those of closed windows are
//!   skipped, as the source does), then the epochs after `k` with their own watermarks;
//! * B's epoch `b` stands for A's epoch `k + b - (reread - 1)`; from the epoch where the
//!   spread of settled pairs cannot differ any more, B's outputs as of `b` equal A's as of the
//!   mapped epoch (live engagement, top list, final panes, open windows, closed windows that
//!   close after the checkpoint, interaction sets, similar users), and B's interaction-pane
//!   facts are A's facts after `k`, at the mapped epochs. With the watermark floor at B's
//!   epoch 0, B emits no fact of a pane closed under `W` (the store holds them already).
//! * chains of restarts: each restart's store is the previous store plus the restarted run's
//!   durable outputs through the next checkpoint (but its pane rows of panes final under its
//!   own restore watermark: stored already, the sinks do not write them again);
//! * a restart that rebuilds the state by re-reading (a checkpoint without stored state, after
//!   a run that stored engagement panes but no interaction panes): the records of final
//!   windows still inside the sliding window are re-read as `history`; a later restart from
//!   the store must find their panes' pairs in it.
//!
//! Two ways the watermark reaches a restarted dataflow: the floor `W` at its epoch 0 (with the
//! restored rows: they are replays of closed panes), or, as `TrackWatermark` does today
//! (`src/pipeline`), nothing until the re-read is done (the epoch that announces the catch-up
//! carries `max(W, W(k + 1))`): the restored rows then look like events of open panes until
//! it arrives. Both converge to A's outputs; the second re-emits the restored interaction pairs
//! as facts (duplicates of stored rows, which `sink_similarity` drops as `durable_through`).

use crate::build::{Inputs, Restored, build};
use crate::testing::{StreamShape, accept, as_of, oracle_sets, oracle_similar, stream};
use differential_dataflow::input::Input as _;
use eddy_core::config::SimilarityAlgorithm;
use eddy_core::{
    CampaignEngagement, CampaignWindowCount, Config, Event, InteractionPane, PaneEngagement,
    SimilarUsers, TypeWindowStats, UserCampaigns, WindowSpec,
};
use eddy_operators::Epoch;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use timely::dataflow::InputHandle;
use timely::dataflow::operators::{Input as _, Inspect as _, Probe as _};

const PANE: i64 = 1_000;
const SLIDING: i64 = 4_000;
const LATENESS: i64 = 400;
const EPOCHS: usize = 60;

/// Every output of [`build`] that a restart must reproduce, in one collection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Out {
    Campaign(CampaignEngagement),
    Top(Vec<CampaignEngagement>),
    Pane(PaneEngagement),
    Similar(SimilarUsers),
    Set(UserCampaigns),
    OpenType(TypeWindowStats),
    OpenCampaign(CampaignWindowCount),
    ClosedType(TypeWindowStats),
    ClosedCampaign(CampaignWindowCount),
}

impl Out {
    /// The window of a closed-window row.
    fn closed_window(&self) -> Option<i64> {
        match self {
            Out::ClosedType(r) => Some(r.window_start_ms),
            Out::ClosedCampaign(r) => Some(r.window_start_ms),
            _ => None,
        }
    }
}

/// One epoch of a run: the events, the re-read events of final windows (`history`) and the
/// watermark sent (if any).
#[derive(Clone, Default)]
struct Step {
    events: Vec<Event>,
    history: Vec<Event>,
    mark: Option<i64>,
}

/// What a run produced: every update of [`Out`], and the interaction-pane facts with their
/// epochs.
struct Ran {
    updates: Vec<(Out, Epoch, isize)>,
    facts: Vec<(InteractionPane, Epoch)>,
}

/// Rows restored at epoch 0.
#[derive(Clone, Default)]
struct RestoredRows {
    engagement: Vec<PaneEngagement>,
    interactions: Vec<InteractionPane>,
}

fn config(spread: u64, mode: SimilarityAlgorithm, views_are_interest: bool) -> Config {
    let mut cfg = Config::default();
    cfg.pipeline.window_ms = PANE;
    cfg.engagement.sliding_ms = SLIDING;
    cfg.engagement.top_k = 3;
    cfg.similarity.enabled = true;
    cfg.similarity.mode = mode;
    cfg.similarity.views_are_interest = views_are_interest;
    cfg.similarity.k = 3;
    cfg.similarity.bands = 6;
    cfg.similarity.rows_per_band = 2;
    cfg.similarity.bucket_size = 64;
    cfg.similarity.close_spread_epochs = spread;
    cfg
}

/// Runs [`build`] on `workers` workers over `steps`, with `restored` (split over the workers
/// by row index, as the pipeline does) at epoch 0, and a `history` input if `with_history`.
fn execute(
    cfg: &Config,
    workers: usize,
    steps: &[Step],
    restored: Option<RestoredRows>,
    with_history: bool,
) -> Ran {
    let out: Arc<Mutex<Vec<(Out, Epoch, isize)>>> = Arc::default();
    let facts: Arc<Mutex<Vec<(InteractionPane, Epoch)>>> = Arc::default();
    let (out2, facts2) = (out.clone(), facts.clone());
    let steps = Arc::new(steps.to_vec());
    let cfg = Arc::new(cfg.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let (out3, facts3) = (out2.clone(), facts2.clone());
        let mut marks = InputHandle::new();
        let (mut events, mut history, mut restore_in, probe) =
            worker.dataflow::<Epoch, _, _>(|scope| {
                let (events_in, events) = scope.new_collection::<Event, isize>();
                let (history_in, history) = scope.new_collection::<Event, isize>();
                let watermarks = scope.input_from(&mut marks);
                let (restore_in, restored_collections) = if restored.is_some() {
                    let (e_in, e) = scope.new_collection::<PaneEngagement, isize>();
                    let (i_in, i) = scope.new_collection::<InteractionPane, isize>();
                    (
                        Some((e_in, i_in)),
                        Some(Restored {
                            engagement: e,
                            interactions: i,
                        }),
                    )
                } else {
                    (None, None)
                };
                let outputs = build(
                    &cfg,
                    Inputs {
                        events,
                        history: with_history.then_some(history),
                        watermarks,
                        restored: restored_collections,
                    },
                );
                let probe = timely::dataflow::ProbeHandle::new();
                outputs.probe_with(&probe);
                let c = outputs.counts;
                let e = outputs.engagement;
                let s = outputs.similarity.expect("similarity is enabled");
                e.campaigns
                    .map(Out::Campaign)
                    .concat(e.top.map(Out::Top))
                    .concat(e.panes.map(Out::Pane))
                    .concat(s.similar.map(Out::Similar))
                    .concat(s.sets.map(Out::Set))
                    .concat(c.types.map(Out::OpenType))
                    .concat(c.campaigns.map(Out::OpenCampaign))
                    .concat(c.closed_types.map(Out::ClosedType))
                    .concat(c.closed_campaigns.map(Out::ClosedCampaign))
                    .inspect(move |x| out3.lock().unwrap().push(x.clone()))
                    .probe_with(&probe);
                s.interaction_panes
                    .inspect_core(move |event| {
                        if let Ok((stamp, data)) = event {
                            let times: Vec<Epoch> = stamp.into_iter().copied().collect();
                            assert_eq!(times.len(), 1, "facts travel at one epoch");
                            let mut facts = facts3.lock().unwrap();
                            facts.extend(data.iter().map(|f| (*f, times[0])));
                        }
                    })
                    .probe_with(&probe);
                (events_in, history_in, restore_in, probe)
            });
        if let (Some((e_in, i_in)), Some(rows)) = (restore_in.as_mut(), restored.as_ref()) {
            for (i, row) in rows.engagement.iter().enumerate() {
                if i % peers == index {
                    e_in.insert(*row);
                }
            }
            for (i, row) in rows.interactions.iter().enumerate() {
                if i % peers == index {
                    i_in.insert(*row);
                }
            }
        }
        // Given at the first epoch only.
        drop(restore_in);
        for (epoch, step) in steps.iter().enumerate() {
            let epoch = epoch as Epoch;
            events.advance_to(epoch);
            history.advance_to(epoch);
            marks.advance_to(epoch);
            if let Some(m) = step.mark {
                marks.send(m);
            }
            for (i, e) in step.events.iter().enumerate() {
                if (i * 7 + e.user_id as usize) % peers == index {
                    events.insert(*e);
                }
            }
            for (i, e) in step.history.iter().enumerate() {
                if (i * 7 + e.user_id as usize) % peers == index {
                    history.insert(*e);
                }
            }
            events.advance_to(epoch + 1);
            history.advance_to(epoch + 1);
            marks.advance_to(epoch + 1);
            events.flush();
            history.flush();
            worker.step_while(|| probe.less_than(&(epoch + 1)));
        }
    })
    .expect("timely runs");
    let updates = std::mem::take(&mut *out.lock().unwrap());
    let facts = std::mem::take(&mut *facts.lock().unwrap());
    Ran { updates, facts }
}

/// What the sinks hold: every engagement pane row inserted, and every interaction-pane fact.
#[derive(Clone, Default)]
struct Store {
    panes: BTreeMap<(i64, u64), PaneEngagement>,
    interactions: BTreeSet<InteractionPane>,
}

impl Store {
    /// Adds the durable outputs of `ran` through epoch `through`: its pane rows but those of
    /// panes final under `durable_through` (a restarted run's restore watermark: stored
    /// already, not written again), and its facts if `facts`.
    fn absorb(&mut self, ran: &Ran, through: Epoch, durable_through: Option<i64>, facts: bool) {
        let window = WindowSpec::new(PANE);
        let stored = |p: i64| durable_through.is_some_and(|w| window.is_closed(p, w));
        for (o, t, d) in &ran.updates {
            if let (Out::Pane(row), true) = (o, *t <= through && *d > 0) {
                if stored(row.window_start_ms) {
                    continue;
                }
                let old = self
                    .panes
                    .insert((row.window_start_ms, row.campaign_id), *row);
                assert!(
                    old.is_none_or(|old| old == *row),
                    "a final pane changed: {old:?} then {row:?}"
                );
            }
        }
        for (f, t) in &ran.facts {
            if facts && *t <= through {
                self.interactions.insert(*f);
            }
        }
    }

    /// What a restart under watermark `w` loads: the final panes inside the sliding window,
    /// and each pair's latest such interaction pane.
    fn restore(&self, w: i64) -> RestoredRows {
        let inside = |p: i64| p + PANE <= w && p + SLIDING > w;
        let engagement = self
            .panes
            .values()
            .filter(|r| inside(r.window_start_ms))
            .copied()
            .collect();
        let mut latest: BTreeMap<(u64, u64), i64> = BTreeMap::new();
        for f in self
            .interactions
            .iter()
            .filter(|f| inside(f.window_start_ms))
        {
            let p = latest.entry((f.user_id, f.campaign_id)).or_insert(i64::MIN);
            *p = (*p).max(f.window_start_ms);
        }
        let interactions = latest
            .into_iter()
            .map(
                |((user_id, campaign_id), window_start_ms)| InteractionPane {
                    window_start_ms,
                    user_id,
                    campaign_id,
                },
            )
            .collect();
        RestoredRows {
            engagement,
            interactions,
        }
    }
}

/// How a restarted run is fed.
#[derive(Clone, Copy, Debug)]
struct Restart {
    /// The checkpoint: A's epoch `k`, with watermark `W(k)`.
    at: usize,
    /// Workers of the restarted run.
    workers: usize,
    /// Epochs the re-read of the open windows is spread over (at least one).
    reread: usize,
    /// Whether the watermark floor `W(k)` is sent at epoch 0 (else the first watermark comes
    /// with the first epoch after the re-read).
    floor_at_start: bool,
    /// Rebuild the state by re-reading instead (a checkpoint without stored state: the first
    /// restart only, after a run that stored nothing): the records of final windows still in
    /// the sliding window are re-read too, as `history`.
    rebuild: bool,
}

/// The steps of a run restarted at checkpoint `r.at`: re-read records of windows open under
/// `W`, then the epochs after the checkpoint. Returns them and the offset `o` such that the
/// restarted run's epoch `o + j` stands for A's epoch `r.at + j`.
fn restarted_steps(accepted: &[Vec<Event>], marks: &[i64], r: Restart) -> (Vec<Step>, usize) {
    let window = WindowSpec::new(PANE);
    let w = marks[r.at];
    // In log order: records of open windows, and with `rebuild` those of final windows
    // still inside the sliding window.
    let reread: Vec<Event> = accepted[..=r.at]
        .iter()
        .flatten()
        .filter(|e| {
            !window.is_closed(e.ts_ms, w) || (r.rebuild && window.start(e.ts_ms) + SLIDING > w)
        })
        .copied()
        .collect();
    let chunk = reread.len().div_ceil(r.reread).max(1);
    let mut steps: Vec<Step> = reread
        .chunks(chunk)
        .map(|c| {
            let (history, events) = c.iter().partition(|e| window.is_closed(e.ts_ms, w));
            Step {
                events,
                history,
                mark: None,
            }
        })
        .collect();
    steps.resize(r.reread, Step::default());
    if r.floor_at_start {
        steps[0].mark = Some(w);
    }
    let offset = r.reread - 1;
    for e in r.at + 1..accepted.len() {
        steps.push(Step {
            events: accepted[e].clone(),
            history: Vec::new(),
            mark: Some(marks[e].max(w)),
        });
    }
    (steps, offset)
}

/// The outputs to compare, as of `at`, leaving out the closed windows final under `w` (the
/// store holds them; a restarted run does not recompute them).
fn comparable(updates: &[(Out, Epoch, isize)], at: Epoch, w: i64) -> Vec<Out> {
    let window = WindowSpec::new(PANE);
    as_of(updates, at)
        .into_iter()
        .filter(|o| o.closed_window().is_none_or(|s| !window.is_closed(s, w)))
        .collect()
}

/// Restarts `chain` (checkpoints in increasing order) after run A of `seed` on `workers_a`
/// workers, and checks every restarted run against A (and the last one against the oracles).
fn check(seed: u64, cfg: &Config, workers_a: usize, chain: &[Restart]) {
    let shape = StreamShape {
        users: 30,
        campaigns: 8,
        max_per_epoch: 40,
        click: 0.3,
        conversion: 0.1,
        other_amounts: 0.1,
    };
    let window = WindowSpec::new(PANE);
    let spread = cfg.similarity.close_spread_epochs.max(1) as usize;
    let (accepted, marks) = accept(&stream(seed, EPOCHS, shape), window, LATENESS);
    let steps: Vec<Step> = accepted
        .iter()
        .zip(&marks)
        .map(|(events, m)| Step {
            events: events.clone(),
            history: Vec::new(),
            mark: Some(*m),
        })
        .collect();
    let a = execute(cfg, workers_a, &steps, None, false);
    let ctx = format!("seed {seed} A on {workers_a} workers, chain {chain:?}");
    // A's facts: one per (pane, pair), each at the epoch that closes its pane.
    let distinct: BTreeSet<InteractionPane> = a.facts.iter().map(|(f, _)| *f).collect();
    assert_eq!(distinct.len(), a.facts.len(), "{ctx}: duplicate facts");

    let mut store = Store::default();
    // The run the next checkpoint is taken from, and how its epochs map to A's: its epoch
    // `offset + j` is A's `at + j`.
    let mut runs: Vec<(Ran, usize, usize)> = Vec::new();
    for (i, &r) in chain.iter().enumerate() {
        let (prev, last_offset, last_at) = runs
            .last()
            .map_or((&a, 0, 0), |(ran, offset, at)| (ran, *offset, *at));
        assert!(r.at > last_at || i == 0, "checkpoints in order");
        assert!(!r.rebuild || i == 0, "a rebuild is the first restart");
        let w = marks[r.at];
        assert!(w > i64::MIN, "{ctx}: the checkpoint has a watermark");
        // The run before a rebuild stored its engagement panes, but no interaction panes
        // (an older eddy).
        let durable_through = (i > 0).then(|| marks[last_at]);
        let facts = !(i == 0 && r.rebuild);
        store.absorb(
            prev,
            (last_offset + r.at - last_at) as Epoch,
            durable_through,
            facts,
        );
        let restored = (!r.rebuild).then(|| store.restore(w));
        if let Some(restored) = &restored {
            assert!(
                restored.engagement.len() > 5 && restored.interactions.len() > 5,
                "{ctx}: something to restore at {}",
                r.at
            );
        }
        if i == 1 && chain[0].rebuild {
            // The restored pairs include some of panes that were final before the rebuild.
            let w0 = marks[chain[0].at];
            let old = restored
                .iter()
                .flat_map(|r| &r.interactions)
                .filter(|f| window.is_closed(f.window_start_ms, w0))
                .count();
            assert!(
                old > 5,
                "{ctx}: {old} restored pairs of panes re-read as history"
            );
        }
        let (b_steps, offset) = restarted_steps(&accepted, &marks, r);
        let b = execute(cfg, r.workers, &b_steps, restored.clone(), r.rebuild);
        let restored = restored.unwrap_or_default();
        let ctx = format!("{ctx}, restart {i} at {}", r.at);
        // Outputs: equal to A's at every mapped epoch once the spread cannot differ.
        let from = if r.floor_at_start { spread - 1 } else { spread };
        let mut compared = 0;
        for j in from..accepted.len() - r.at {
            let (bt, at) = ((offset + j) as Epoch, (r.at + j) as Epoch);
            let got = comparable(&b.updates, bt, w);
            let want = comparable(&a.updates, at, w);
            if got != want {
                let missing: Vec<_> = want.iter().filter(|o| !got.contains(o)).collect();
                let extra: Vec<_> = got.iter().filter(|o| !want.contains(o)).collect();
                panic!("{ctx}: A's epoch {at}: missing {missing:#?}\nextra {extra:#?}");
            }
            compared += want.len();
        }
        assert!(compared > 1_000, "{ctx}: {compared} rows compared");
        // No closed window final under W is computed again.
        assert!(
            b.updates
                .iter()
                .filter_map(|(o, _, _)| o.closed_window())
                .all(|s| !window.is_closed(s, w)),
            "{ctx}: a closed window final under the checkpoint was emitted again"
        );
        // Facts of panes closing after the checkpoint: A's, at the mapped epochs.
        let mut got: Vec<(InteractionPane, Epoch)> = b
            .facts
            .iter()
            .filter(|(f, _)| !window.is_closed(f.window_start_ms, w))
            .copied()
            .collect();
        got.sort();
        let mut want: Vec<(InteractionPane, Epoch)> = a
            .facts
            .iter()
            .filter(|(_, t)| *t as usize > r.at)
            .map(|(f, t)| (*f, *t - r.at as Epoch + offset as Epoch))
            .collect();
        want.sort();
        assert_eq!(got, want, "{ctx}: facts after the checkpoint");
        assert!(!want.is_empty(), "{ctx}: panes close after the checkpoint");
        // Facts of panes final under W are in the store already: with the floor at epoch 0
        // none is emitted again; without it, only copies of restored rows.
        let again: Vec<&InteractionPane> = b
            .facts
            .iter()
            .map(|(f, _)| f)
            .filter(|f| window.is_closed(f.window_start_ms, w))
            .collect();
        if r.rebuild {
            // The re-read records of final panes are stored as facts again (the run before
            // stored nothing).
        } else if r.floor_at_start {
            assert!(
                again.is_empty(),
                "{ctx}: durable facts emitted again: {again:?}"
            );
        } else {
            assert!(
                again.iter().all(|f| restored.interactions.contains(f)),
                "{ctx}: new facts of panes final under the checkpoint: {again:?}"
            );
        }
        runs.push((b, offset, r.at));
    }
    let (last, last_offset, last_at) = runs.last().expect("at least one restart");
    // The last run's final sets and similar users, from scratch.
    let end = EPOCHS - 1;
    let all: Vec<Event> = accepted.iter().flatten().copied().collect();
    let sets = oracle_sets(
        &all,
        marks[end],
        window,
        SLIDING,
        cfg.similarity.views_are_interest,
        true,
    );
    let at = (last_offset + end - last_at) as Epoch;
    let got_sets: BTreeMap<u64, Vec<u64>> = as_of(&last.updates, at)
        .into_iter()
        .filter_map(|o| match o {
            Out::Set(s) => Some((s.user_id, s.campaigns)),
            _ => None,
        })
        .collect();
    assert_eq!(got_sets, sets, "{ctx}: final sets");
    assert!(sets.len() > 10, "{ctx}: users in the window");
    if cfg.similarity.mode == SimilarityAlgorithm::Exact {
        let got: Vec<SimilarUsers> = as_of(&last.updates, at)
            .into_iter()
            .filter_map(|o| match o {
                Out::Similar(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            oracle_similar(&sets, cfg.similarity.k),
            "{ctx}: final similar"
        );
    }
}

fn restart(at: usize, workers: usize, reread: usize, floor_at_start: bool) -> Restart {
    Restart {
        at,
        workers,
        reread,
        floor_at_start,
        rebuild: false,
    }
}

/// One restart, the floor at epoch 0, on 1, 2 and 4 workers (A on another count).
#[test]
fn a_restart_from_the_store_equals_the_uninterrupted_run() {
    let cfg = config(1, SimilarityAlgorithm::Exact, false);
    check(1, &cfg, 2, &[restart(25, 1, 1, true)]);
    check(2, &cfg, 1, &[restart(33, 4, 2, true)]);
    check(3, &cfg, 1, &[restart(40, 2, 3, true)]);
}

/// Settled pairs spread over a few epochs after a close; views as interest; MinHash.
#[test]
fn a_restart_with_spread_and_minhash_equals_the_uninterrupted_run() {
    let cfg = config(3, SimilarityAlgorithm::Exact, true);
    check(4, &cfg, 1, &[restart(30, 2, 2, true)]);
    let cfg = config(2, SimilarityAlgorithm::MinHash, false);
    check(5, &cfg, 2, &[restart(22, 1, 1, true)]);
}

/// Restarts of restarts: each store holds the earlier runs' durable outputs.
#[test]
fn chained_restarts_equal_the_uninterrupted_run() {
    let cfg = config(2, SimilarityAlgorithm::Exact, false);
    check(
        6,
        &cfg,
        1,
        &[
            restart(18, 2, 1, true),
            restart(30, 4, 2, true),
            restart(44, 1, 1, true),
        ],
    );
}

/// The watermark as the pipeline's `TrackWatermark` delivers it after a restart: nothing at
/// epoch 0 (the floor is only announced with the catch-up). The restored rows are counted
/// once it arrives; the outputs converge to A's all the same.
#[test]
fn a_restart_without_the_floor_at_epoch_0_converges() {
    let cfg = config(1, SimilarityAlgorithm::Exact, false);
    check(7, &cfg, 2, &[restart(27, 1, 2, false)]);
    let cfg = config(3, SimilarityAlgorithm::Exact, false);
    check(
        8,
        &cfg,
        1,
        &[restart(35, 2, 1, false), restart(47, 1, 2, true)],
    );
}

/// A restart that rebuilds the state by re-reading (its checkpoint has no stored state: the
/// run before stored nothing), then, within one sliding window, a restart from what the
/// rebuilding run stored: the pairs of the panes it re-read as history must be in the store.
#[test]
fn a_restart_after_a_rebuild_by_re_reading_restores_the_re_read_panes() {
    let rebuild = |at, workers, floor_at_start| Restart {
        rebuild: true,
        ..restart(at, workers, 2, floor_at_start)
    };
    let cfg = config(1, SimilarityAlgorithm::Exact, false);
    check(9, &cfg, 1, &[rebuild(25, 2, true), restart(33, 1, 1, true)]);
    let cfg = config(2, SimilarityAlgorithm::Exact, false);
    check(
        10,
        &cfg,
        2,
        &[rebuild(30, 1, false), restart(36, 2, 2, true)],
    );
}
