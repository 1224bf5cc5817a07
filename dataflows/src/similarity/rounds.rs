//! The similarity loop: one timely iterative scope whose rounds, per epoch, maintain the
//! owner-partitioned [`State`] and compute similar users from it (see
//! [`super::similar_users`] for what they compute), and emit the changed interaction sets
//! (recommendations are ranked from both at read time, see [`eddy_core::recommend`]).
//!
//! Rounds of epoch `e` (times `(e, r)`), processed in lexicographic order on every worker:
//! 0. apply the epoch's interaction changes (owners);
//! 1. probe each changed user on every worker (score, offer, answer);
//! 2. owners rebuild the changed users' buffers; users whose buffer lost its proof are probed
//!    again;
//! 3. owners rebuild those; lists are now final: owners emit the changes of the lists and
//!    sets of their users at `e`.
//!
//! A round is worked a slice at a time ([`SimilarityParams::slice`]): the operator yields its
//! worker between slices (the other dataflows, the source and the sinks run meanwhile) and
//! resumes on its next activation. Slicing changes when the work is done, never what it
//! computes: a round's work is done in the same order whatever the slices.

use super::state::FastMap;
use super::state::{Buffer, PRELOAD_BATCH, Part, State};
use super::{SimilarityParams, mix};
use differential_dataflow::{AsCollection, VecCollection};
use eddy_core::{Neighbor, SimilarUsers, UserCampaigns};
use eddy_operators::Epoch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, ConnectLoop, Enter, Feedback, Leave, OkErr};
use timely::order::Product;

/// An input of the loop, addressed to a worker: an interaction `(user, campaign)` entered or
/// left (to the user's owner).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct In(u64, u64, isize);

/// A message of the loop, addressed to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Msg {
    /// Score `user`'s set against your users; with `changed`, also offer it to them.
    Probe {
        user: u64,
        set: Vec<u64>,
        changed: bool,
    },
    /// One worker's best candidates of `user`, and the best of its others.
    Reply {
        user: u64,
        items: Vec<Neighbor>,
        tau: Option<Neighbor>,
    },
}

/// What the loop operator emits.
enum Out {
    Loop((u64, Msg)),
    Similar((SimilarUsers, Epoch, isize)),
    Sets((UserCampaigns, Epoch, isize)),
}

/// The worker that owns `user`'s set, buckets and neighbor list.
pub(crate) fn owner(user: u64, peers: usize) -> u64 {
    mix(user) % peers as u64
}

/// Round whose end makes lists final: the epoch's changes are emitted then.
const LISTS_FINAL: u32 = 3;

/// A capability of the loop: `(epoch, round)`.
type LoopCap = Capability<Product<Epoch, u32>>;

/// Probes answered between two looks at the clock (2 in tests, so that they yield mid-phase).
const PROBES_PER_CHECK: usize = if cfg!(test) { 2 } else { 32 };

/// The two outputs of the loop.
pub(crate) struct LoopOutputs<'scope> {
    pub(crate) similar: VecCollection<'scope, Epoch, SimilarUsers, isize>,
    pub(crate) sets: VecCollection<'scope, Epoch, UserCampaigns, isize>,
}

/// Builds the loop over `pairs` (settled interactions); with `emit_sets`, the users' sets
/// are emitted too (else that output stays empty).
pub(crate) fn similarity_loop<'scope>(
    pairs: VecCollection<'scope, Epoch, (u64, u64), isize>,
    params: SimilarityParams,
    emit_sets: bool,
) -> LoopOutputs<'scope> {
    let outer = pairs.inner.scope();
    let peers = outer.peers();
    let input = pairs
        .inner
        .map(move |((u, c), _, r)| (owner(u, peers), In(u, c, r)));
    let (similar, sets) = outer.iterative::<u32, _, _>(|inner| {
        let (handle, cycle) = inner.feedback::<Vec<(u64, Msg)>>(Product::new(0, 1));
        let out = input
            .enter(inner)
            .binary_frontier::<_, CapacityContainerBuilder<Vec<Out>>, _, _, _, _>(
                cycle,
                Exchange::new(|(to, _): &(u64, In)| *to),
                Exchange::new(|(to, _): &(u64, Msg)| *to),
                "Similarity",
                move |_cap, info| {
                    let mut w = Worker::new(params, emit_sets, peers);
                    let activator = inner.activator_for(info.address);
                    move |(ins, ins_frontier), (msgs, msgs_frontier), output| {
                        ins.for_each(|cap, data| {
                            // Everything in this loop is sent under one capability: one time.
                            debug_assert_eq!(cap.stamp().len(), 1);
                            if let Some(time) = cap.stamp().iter().next().cloned() {
                                let slot = w.slot(&time, || cap.delayed(&time, 0));
                                slot.ins.extend(data.drain(..).map(|(_, i)| i));
                            }
                        });
                        msgs.for_each(|cap, data| {
                            // Everything in this loop is sent under one capability: one time.
                            debug_assert_eq!(cap.stamp().len(), 1);
                            if let Some(time) = cap.stamp().iter().next().cloned() {
                                let slot = w.slot(&time, || cap.delayed(&time, 0));
                                slot.msgs.extend(data.drain(..).map(|(_, m)| m));
                            }
                        });
                        let frontiers = [ins_frontier.frontier(), msgs_frontier.frontier()];
                        // Everything that may still arrive comes lexicographically after `t`.
                        let done = |t: (Epoch, u32)| {
                            frontiers
                                .iter()
                                .all(|f| f.iter().all(|p| (p.outer, p.inner) > t))
                        };
                        // A pane close can give the loop hundreds of milliseconds of work:
                        // unsliced, the worker's other operators (counts, the source reading
                        // Kafka, the sinks) would wait for all of it.
                        let deadline = Instant::now() + params.slice;
                        let out_of_time = || Instant::now() >= deadline;
                        // Every activation does some work (a zero slice still progresses).
                        let mut worked = false;
                        loop {
                            if let Some((cap, mut run)) = w.running.take() {
                                let finished = {
                                    let mut session = output.session(&cap);
                                    w.step(&mut run, &out_of_time, &mut |m| {
                                        session.give(Out::Loop(m))
                                    })
                                };
                                if !finished {
                                    w.running = Some((cap, run));
                                    activator.activate();
                                    break;
                                }
                                worked = true;
                                continue;
                            }
                            let work = w.work.keys().next().copied();
                            let hook = w.hooks.keys().next().copied();
                            let next = match (work, hook) {
                                (Some(a), Some(b)) => a.min(b),
                                (a, b) => match a.or(b) {
                                    Some(t) => t,
                                    None => break,
                                },
                            };
                            if !done(next) {
                                break;
                            }
                            if worked && out_of_time() {
                                activator.activate();
                                break;
                            }
                            worked = true;
                            if work == Some(next) {
                                let (cap, work) = w.work.remove(&next).expect("the first key");
                                debug_assert!(next.1 <= LISTS_FINAL);
                                w.hooks.entry((next.0, LISTS_FINAL)).or_insert_with(|| {
                                    cap.delayed(&Product::new(next.0, LISTS_FINAL))
                                });
                                w.running = Some((cap, w.begin(next, work)));
                            } else {
                                let (t, cap) = w.hooks.pop_first().expect("the first key");
                                let mut session = output.session(&cap);
                                w.emit(t.0, &mut |o| session.give(o));
                            }
                        }
                    }
                },
            );
        let (msgs, rest) = out.ok_err::<Vec<_>, _, Vec<_>, _, _>(|o| match o {
            Out::Loop(m) => Ok(m),
            other => Err(other),
        });
        msgs.connect_loop(handle);
        let (similar, sets) = rest.ok_err::<Vec<_>, _, Vec<_>, _, _>(|o| match o {
            Out::Similar(u) => Ok(u),
            Out::Sets(u) => Err(u),
            Out::Loop(_) => unreachable!("loop messages were split off"),
        });
        (similar.leave(outer), sets.leave(outer))
    });
    LoopOutputs {
        similar: similar.as_collection(),
        sets: sets.as_collection(),
    }
}

/// The buffered work of one `(epoch, round)`.
#[derive(Default)]
struct Work {
    ins: Vec<In>,
    msgs: Vec<Msg>,
}

/// One worker's loop: the similarity state and the bookkeeping of the epoch in progress.
struct Worker {
    state: State,
    peers: usize,
    /// Whether the changed sets are emitted.
    emit_sets: bool,
    /// Buffered work by `(epoch, round)`, with its capability.
    work: BTreeMap<(Epoch, u32), (LoopCap, Work)>,
    /// Per epoch: `(e, LISTS_FINAL)`, run once that round is done.
    hooks: BTreeMap<(Epoch, u32), LoopCap>,
    /// The epoch in progress.
    epoch: Option<Epoch>,
    /// This epoch: owned users whose set changed, with their set before.
    old_sets: FastMap<u64, Vec<u64>>,
    /// The round being worked on, with its capability, if it yielded before its end.
    running: Option<(LoopCap, Running)>,
}

/// A round in progress: the rest of its work, in the order it is done.
struct Running {
    t: (Epoch, u32),
    phase: Phase,
    /// Probes to answer (user, set, whether it changed), in arrival order.
    probes: Vec<(u64, Vec<u64>, bool)>,
    /// Every worker's answers, by user, to merge once all probes are answered.
    replies: Vec<(u64, Vec<Part>)>,
    /// Users whose buffer lost its proof, found by the probes.
    stale: Vec<u64>,
}

/// Where a [`Running`] round is; each phase resumes at `next`.
enum Phase {
    /// Round 0: the epoch's interaction changes sorted by `(user, campaign)`; `next` indexes
    /// `pairs`, `nth` counts the users applied.
    Apply {
        pairs: Vec<(u64, u64, isize)>,
        users: Vec<u64>,
        next: usize,
        nth: usize,
    },
    /// Answering `probes[next..]`.
    Probe { next: usize },
    /// Merging `replies[next..]` into buffers.
    Merge { next: usize },
    /// Rebuilding the buffers of `stale[next..]` (sorted, deduplicated).
    Stale { next: usize },
}

impl Worker {
    fn new(params: SimilarityParams, emit_sets: bool, peers: usize) -> Self {
        Self {
            state: State::new(params.mode, params.k, peers),
            peers,
            emit_sets,
            work: BTreeMap::new(),
            hooks: BTreeMap::new(),
            epoch: None,
            old_sets: FastMap::default(),
            running: None,
        }
    }

    /// The buffered work of `time`, created with the capability `cap` if new.
    fn slot(&mut self, time: &Product<Epoch, u32>, cap: impl FnOnce() -> LoopCap) -> &mut Work {
        &mut self
            .work
            .entry((time.outer, time.inner))
            .or_insert_with(|| (cap(), Work::default()))
            .1
    }

    fn broadcast(&self, send: &mut dyn FnMut((u64, Msg)), user: u64, set: &[u64], changed: bool) {
        for to in 0..self.peers as u64 {
            let set = set.to_vec();
            send((to, Msg::Probe { user, set, changed }));
        }
    }

    /// Starts round `t.1` of epoch `t.0` on its buffered `work`.
    fn begin(&mut self, t: (Epoch, u32), work: Work) -> Running {
        if self.epoch != Some(t.0) {
            self.epoch = Some(t.0);
            self.old_sets.clear();
            self.state.clear_changed();
        }
        let mut probes = Vec::new();
        let mut replies: BTreeMap<u64, Vec<Part>> = BTreeMap::new();
        for msg in work.msgs {
            match msg {
                Msg::Probe { user, set, changed } => probes.push((user, set, changed)),
                Msg::Reply { user, items, tau } => {
                    replies.entry(user).or_default().push((items, tau));
                }
            }
        }
        let phase = if work.ins.is_empty() {
            Phase::Probe { next: 0 }
        } else {
            let mut pairs: Vec<(u64, u64, isize)> =
                work.ins.into_iter().map(|In(u, c, r)| (u, c, r)).collect();
            pairs.sort_unstable_by_key(|(u, c, _)| (*u, *c));
            // The users, to load their slots a batch at a time ahead of the work on them.
            let mut users: Vec<u64> = pairs.iter().map(|(u, _, _)| *u).collect();
            users.dedup();
            Phase::Apply {
                pairs,
                users,
                next: 0,
                nth: 0,
            }
        };
        Running {
            t,
            phase,
            probes,
            replies: replies.into_iter().collect(),
            stale: Vec::new(),
        }
    }

    /// Works on `run` until its round is done (true) or `out_of_time` (false: call again).
    /// Round 0 applies the epoch's interaction changes and probes the users whose set changed;
    /// every round answers its probes, then merges the answers into the owners' buffers, then
    /// probes again the users whose buffer lost its proof.
    fn step(
        &mut self,
        run: &mut Running,
        out_of_time: &dyn Fn() -> bool,
        send: &mut dyn FnMut((u64, Msg)),
    ) -> bool {
        loop {
            match &mut run.phase {
                Phase::Apply {
                    pairs,
                    users,
                    next,
                    nth,
                } => {
                    if *next == pairs.len() {
                        run.phase = Phase::Probe { next: 0 };
                        continue;
                    }
                    if *nth % PRELOAD_BATCH == 0 {
                        self.state
                            .preload(users[*nth..].iter().take(PRELOAD_BATCH).copied());
                    }
                    *nth += 1;
                    *next = self.apply_user(pairs, *next, send);
                    if *nth % PRELOAD_BATCH == 0 && *next < pairs.len() && out_of_time() {
                        return false;
                    }
                }
                Phase::Probe { next } => {
                    let end = run.probes.len().min(*next + PROBES_PER_CHECK);
                    for (user, set, changed) in &run.probes[*next..end] {
                        let found = self.state.probe(*user, set, *changed);
                        run.stale.extend(found.stale);
                        if !set.is_empty() {
                            let (items, tau) = (found.items, found.tau);
                            let to = owner(*user, self.peers);
                            send((
                                to,
                                Msg::Reply {
                                    user: *user,
                                    items,
                                    tau,
                                },
                            ));
                        }
                    }
                    *next = end;
                    if end == run.probes.len() {
                        run.probes = Vec::new();
                        // The buffer of a changed user is kept through rounds 0 and 1 (stale,
                        // offered nothing) and must be replaced now: every worker answers the
                        // probe of a non-empty set.
                        debug_assert!(
                            run.t.1 != 2
                                || self.old_sets.keys().all(|u| {
                                    self.state.set(*u).is_empty()
                                        || run.replies.binary_search_by_key(u, |r| r.0).is_ok()
                                }),
                            "a changed user's buffer was not replaced"
                        );
                        run.phase = Phase::Merge { next: 0 };
                    } else if out_of_time() {
                        return false;
                    }
                }
                Phase::Merge { next } => {
                    // Users are scattered over the state: each batch's slots are prefetched
                    // together first.
                    let end = run.replies.len().min(*next + PRELOAD_BATCH);
                    let batch = &mut run.replies[*next..end];
                    self.state.preload(batch.iter().map(|(user, _)| *user));
                    let cap = self.state.cap();
                    for (user, parts) in batch {
                        let parts = std::mem::take(parts);
                        self.state.set_buffer(*user, Buffer::merge(parts, cap));
                    }
                    *next = end;
                    if end == run.replies.len() {
                        run.replies = Vec::new();
                        run.stale.sort_unstable();
                        run.stale.dedup();
                        debug_assert!(run.t.1 < LISTS_FINAL || run.stale.is_empty());
                        run.phase = Phase::Stale { next: 0 };
                    } else if out_of_time() {
                        return false;
                    }
                }
                Phase::Stale { next } => {
                    // Buffers that lost their proof: rebuilt from every worker's answer.
                    let end = run.stale.len().min(*next + PRELOAD_BATCH);
                    let batch = &run.stale[*next..end];
                    self.state.preload(batch.iter().copied());
                    for &x in batch {
                        self.state.set_buffer(x, Buffer::default());
                        let set = self.state.set(x).to_vec();
                        if !set.is_empty() {
                            self.broadcast(send, x, &set, false);
                        }
                    }
                    *next = end;
                    if end == run.stale.len() {
                        return true;
                    }
                    if out_of_time() {
                        return false;
                    }
                }
            }
        }
    }

    /// Applies the changes of the user of `pairs[i]` (consolidated per campaign) and probes
    /// it if its set changed; returns the index of the next user's first pair.
    fn apply_user(
        &mut self,
        pairs: &[(u64, u64, isize)],
        mut i: usize,
        send: &mut dyn FnMut((u64, Msg)),
    ) -> usize {
        let user = pairs[i].0;
        let before = self.state.set(user).to_vec();
        let mut set = before.clone();
        while i < pairs.len() && pairs[i].0 == user {
            let c = pairs[i].1;
            let mut r = 0;
            while i < pairs.len() && pairs[i].0 == user && pairs[i].1 == c {
                r += pairs[i].2;
                i += 1;
            }
            match (r.signum(), set.binary_search(&c)) {
                (1, Err(at)) => set.insert(at, c),
                (-1, Ok(at)) => {
                    set.remove(at);
                }
                _ => {}
            }
        }
        if set != before {
            self.old_sets.entry(user).or_insert(before);
            if set.is_empty() {
                self.state.set_buffer(user, Buffer::default());
            }
            // Otherwise the buffer is kept until every worker's answer replaces it this
            // epoch (round 2): marked changed, it is offered nothing meanwhile, and
            // replacing it then moves only the holder entries that really change.
            self.state.replace_set(user, set.clone());
            self.state.mark_changed(user);
            self.broadcast(send, user, &set, true);
        }
        i
    }

    /// Lists are final: emits the epoch's changes of the owned users' lists and sets.
    fn emit(&mut self, epoch: Epoch, give: &mut dyn FnMut(Out)) {
        self.state.drain_dirty(|user_id, before, now| {
            if !before.is_empty() {
                let s = SimilarUsers {
                    user_id,
                    neighbors: before.to_vec(),
                };
                give(Out::Similar((s, epoch, -1)));
            }
            if !now.is_empty() {
                let s = SimilarUsers {
                    user_id,
                    neighbors: now.to_vec(),
                };
                give(Out::Similar((s, epoch, 1)));
            }
        });
        if !self.emit_sets {
            return;
        }
        let mut changed: Vec<(u64, Vec<u64>)> = self.old_sets.drain().collect();
        changed.sort_unstable_by_key(|(u, _)| *u);
        for (user_id, before) in changed {
            if !before.is_empty() {
                let c = UserCampaigns {
                    user_id,
                    campaigns: before,
                };
                give(Out::Sets((c, epoch, -1)));
            }
            let now = self.state.set(user_id);
            if !now.is_empty() {
                let c = UserCampaigns {
                    user_id,
                    campaigns: now.to_vec(),
                };
                give(Out::Sets((c, epoch, 1)));
            }
        }
    }
}
