//! The similarity loop: one timely iterative scope whose rounds, per epoch, maintain the
//! owner-partitioned [`State`] and compute similar users and recommendations from it (see
//! [`super::similar_users`] and [`crate::recommendations`] for what they compute).
//!
//! Rounds of epoch `e` (times `(e, r)`), processed in lexicographic order on every worker:
//! 0. apply the epoch's interaction changes (owners) and settled scores (every worker);
//! 1. probe each changed user on every worker (score, offer, answer);
//! 2. owners rebuild the changed users' buffers; users whose buffer lost its proof are probed
//!    again;
//! 3. owners rebuild those; lists are now final: owners whose user's top `k` changed ask the
//!    neighbors' owners for their sets;
//! 4. owners answer with the sets;
//! 5. owners compute the recommendations of every user whose list, set or campaign scores
//!    changed, before and after, and emit both outputs' changes at `e`.

use super::state::FastMap;
use super::state::{Buffer, Part, State};
use super::{SimilarityParams, mix};
use differential_dataflow::{AsCollection, VecCollection};
use eddy_core::{
    Neighbor, Recommendation, Score, SimilarUsers, UserRecommendations, recommendation_score_of,
};
use eddy_operators::Epoch;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Concat, ConnectLoop, Enter, Feedback, Leave, OkErr};
use timely::order::Product;

/// An input of the loop, addressed to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum In {
    /// An interaction `(user, campaign)` entered or left (to the user's owner).
    Pair(u64, u64, isize),
    /// A campaign's settled score entered or left (to every worker).
    Score(u64, Score, isize),
}

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
    /// Send `user`'s set to the owner of `to_user`.
    SetRequest { user: u64, to_user: u64 },
    /// The set of `user`, a neighbor of `to_user`.
    SetReply {
        user: u64,
        to_user: u64,
        set: Vec<u64>,
    },
}

/// What the loop operator emits.
enum Out {
    Loop((u64, Msg)),
    Similar((SimilarUsers, Epoch, isize)),
    Recs((UserRecommendations, Epoch, isize)),
}

/// The worker that owns `user`'s set, buckets, neighbor list and recommendations.
pub(crate) fn owner(user: u64, peers: usize) -> u64 {
    mix(user) % peers as u64
}

/// Round whose end makes lists final (set requests go out).
const LISTS_FINAL: u32 = 3;
/// Round after which an epoch's changes are emitted.
const LAST_ROUND: u32 = 5;

/// A capability of the loop: `(epoch, round)`.
type LoopCap = Capability<Product<Epoch, u32>>;

/// The two outputs of the loop.
pub(crate) struct LoopOutputs<'scope> {
    pub(crate) similar: VecCollection<'scope, Epoch, SimilarUsers, isize>,
    pub(crate) recommendations: VecCollection<'scope, Epoch, UserRecommendations, isize>,
}

/// Builds the loop over `pairs` (settled interactions) and `settled` (settled campaign
/// scores); `recommendations` is N (0: no recommendations are computed).
pub(crate) fn similarity_loop<'scope>(
    pairs: VecCollection<'scope, Epoch, (u64, u64), isize>,
    settled: Option<VecCollection<'scope, Epoch, (u64, Score), isize>>,
    params: SimilarityParams,
    recommendations: usize,
) -> LoopOutputs<'scope> {
    let outer = pairs.inner.scope();
    let peers = outer.peers();
    let mut input = pairs
        .inner
        .map(move |((u, c), _, r)| (owner(u, peers), In::Pair(u, c, r)));
    if let Some(settled) = settled {
        let scores = settled.inner.flat_map(move |((c, s), _, r)| {
            (0..peers as u64).map(move |to| (to, In::Score(c, s, r)))
        });
        input = input.concat(scores);
    }
    let (similar, recs) = outer.iterative::<u32, _, _>(|inner| {
        let (handle, cycle) = inner.feedback::<Vec<(u64, Msg)>>(Product::new(0, 1));
        let out = input
            .enter(inner)
            .binary_frontier::<_, CapacityContainerBuilder<Vec<Out>>, _, _, _, _>(
                cycle,
                Exchange::new(|(to, _): &(u64, In)| *to),
                Exchange::new(|(to, _): &(u64, Msg)| *to),
                "Similarity",
                move |_cap, _info| {
                    let mut w = Worker::new(params, recommendations, peers);
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
                        loop {
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
                            if work == Some(next) {
                                let (cap, work) = w.work.remove(&next).expect("the first key");
                                // Rounds up to LISTS_FINAL may change lists; later rounds
                                // only exchange sets.
                                if next.1 <= LISTS_FINAL {
                                    w.hooks.entry((next.0, LISTS_FINAL)).or_insert_with(|| {
                                        cap.delayed(&Product::new(next.0, LISTS_FINAL))
                                    });
                                }
                                let mut session = output.session(&cap);
                                w.round(next, work, &mut |m| session.give(Out::Loop(m)));
                            } else {
                                let (t, cap) = w.hooks.pop_first().expect("the first key");
                                let mut session = output.session(&cap);
                                if t.1 == LISTS_FINAL {
                                    w.hooks.insert(
                                        (t.0, LAST_ROUND),
                                        cap.delayed(&Product::new(t.0, LAST_ROUND)),
                                    );
                                    w.lists_final(&mut |m| session.give(Out::Loop(m)));
                                } else {
                                    w.emit(t.0, &mut |o| session.give(o));
                                }
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
        let (similar, recs) = rest.ok_err::<Vec<_>, _, Vec<_>, _, _>(|o| match o {
            Out::Similar(u) => Ok(u),
            Out::Recs(u) => Err(u),
            Out::Loop(_) => unreachable!("loop messages were split off"),
        });
        (similar.leave(outer), recs.leave(outer))
    });
    LoopOutputs {
        similar: similar.as_collection(),
        recommendations: recs.as_collection(),
    }
}

/// The buffered work of one `(epoch, round)`.
#[derive(Default)]
struct Work {
    ins: Vec<In>,
    msgs: Vec<Msg>,
}

/// One worker's loop: the similarity state, the recommendation inputs, and the bookkeeping of
/// the epoch in progress.
struct Worker {
    state: State,
    peers: usize,
    /// Recommendations kept per user (0: none computed).
    n: usize,
    /// Buffered work by `(epoch, round)`, with its capability.
    work: BTreeMap<(Epoch, u32), (LoopCap, Work)>,
    /// Per epoch: `(e, LISTS_FINAL)` then `(e, LAST_ROUND)`, run once those rounds are done.
    hooks: BTreeMap<(Epoch, u32), LoopCap>,
    /// Settled campaign scores (every worker holds all of them: one per campaign).
    scores: FastMap<u64, Score>,
    /// Owned users' neighbors' sets, in the order of their top `k`.
    neighbor_sets: FastMap<u64, Vec<Box<[u64]>>>,
    /// The epoch in progress.
    epoch: Option<Epoch>,
    /// This epoch: owned users whose set changed, with their set before.
    old_sets: FastMap<u64, Vec<u64>>,
    /// This epoch: campaigns whose score changed, with their score before.
    old_scores: FastMap<u64, Option<Score>>,
    /// This epoch: owned users whose top `k` changed (before, now), once lists are final.
    lists: Vec<(u64, Vec<Neighbor>, Vec<Neighbor>)>,
    /// This epoch: owned users holding a user whose set changed (their neighbors' sets are
    /// fetched again even if their list did not change: a set can change without changing
    /// the similarity).
    refetch: HashSet<u64>,
    /// This epoch: the neighbors' sets fetched (by user, then neighbor).
    fetched: FastMap<u64, HashMap<u64, Vec<u64>>>,
}

impl Worker {
    fn new(params: SimilarityParams, n: usize, peers: usize) -> Self {
        Self {
            state: State::new(params.mode, params.k, peers),
            peers,
            n,
            work: BTreeMap::new(),
            hooks: BTreeMap::new(),
            scores: FastMap::default(),
            neighbor_sets: FastMap::default(),
            epoch: None,
            old_sets: FastMap::default(),
            old_scores: FastMap::default(),
            lists: Vec::new(),
            refetch: HashSet::new(),
            fetched: FastMap::default(),
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

    /// Runs round `t.1` of epoch `t.0`.
    fn round(&mut self, t: (Epoch, u32), work: Work, send: &mut dyn FnMut((u64, Msg))) {
        let (epoch, round) = t;
        if self.epoch != Some(epoch) {
            self.epoch = Some(epoch);
            self.old_sets.clear();
            self.old_scores.clear();
            self.lists.clear();
            self.refetch.clear();
            self.fetched.clear();
        }
        if !work.ins.is_empty() {
            self.apply(work.ins, send);
        }
        let mut stale = Vec::new();
        let mut replies: BTreeMap<u64, Vec<Part>> = BTreeMap::new();
        for msg in work.msgs {
            match msg {
                Msg::Probe { user, set, changed } => {
                    if changed && self.n > 0 {
                        self.refetch.extend(self.state.holders_of(user));
                    }
                    let old_sets = &self.old_sets;
                    let skip = |x: u64| old_sets.contains_key(&x);
                    let found = self.state.probe(user, &set, changed, &skip);
                    stale.extend(found.stale);
                    if !set.is_empty() {
                        let (items, tau) = (found.items, found.tau);
                        send((owner(user, self.peers), Msg::Reply { user, items, tau }));
                    }
                }
                Msg::Reply { user, items, tau } => {
                    replies.entry(user).or_default().push((items, tau));
                }
                Msg::SetRequest { user, to_user } => {
                    let set = self.state.set(user).to_vec();
                    send((
                        owner(to_user, self.peers),
                        Msg::SetReply { user, to_user, set },
                    ));
                }
                Msg::SetReply { user, to_user, set } => {
                    self.fetched.entry(to_user).or_default().insert(user, set);
                }
            }
        }
        let cap = self.state.cap();
        for (user, parts) in replies {
            self.state.set_buffer(user, Buffer::merge(parts, cap));
        }
        // Buffers that lost their proof: rebuilt from every worker's answer.
        stale.sort_unstable();
        stale.dedup();
        debug_assert!(round < LISTS_FINAL || stale.is_empty());
        for x in stale {
            self.state.set_buffer(x, Buffer::default());
            let set = self.state.set(x).to_vec();
            if !set.is_empty() {
                self.broadcast(send, x, &set, false);
            }
        }
    }

    /// Round 0: applies the epoch's interaction changes (consolidated per pair) and score
    /// changes, and probes the users whose set changed.
    fn apply(&mut self, ins: Vec<In>, send: &mut dyn FnMut((u64, Msg))) {
        let mut pairs = Vec::new();
        let mut scores: BTreeMap<u64, Vec<(Score, isize)>> = BTreeMap::new();
        for i in ins {
            match i {
                In::Pair(u, c, r) => pairs.push((u, c, r)),
                In::Score(c, s, r) => scores.entry(c).or_default().push((s, r)),
            }
        }
        for (c, updates) in scores {
            let before = self.scores.get(&c).copied();
            // The collection holds at most one score per campaign: net insertions win.
            let mut net: Vec<(Score, isize)> = Vec::new();
            if let Some(b) = before {
                net.push((b, 1));
            }
            for (s, r) in updates {
                match net.iter_mut().find(|(x, _)| *x == s) {
                    Some(slot) => slot.1 += r,
                    None => net.push((s, r)),
                }
            }
            net.retain(|(_, r)| *r > 0);
            let now = net.first().map(|(s, _)| *s);
            if now != before {
                self.old_scores.entry(c).or_insert(before);
                match now {
                    Some(s) => self.scores.insert(c, s),
                    None => self.scores.remove(&c),
                };
            }
        }
        pairs.sort_unstable_by_key(|(u, c, _)| (*u, *c));
        let mut i = 0;
        while i < pairs.len() {
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
                self.state.set_buffer(user, Buffer::default());
                self.state.replace_set(user, set.clone());
                self.broadcast(send, user, &set, true);
            }
        }
    }

    /// Lists are final: remembers which changed, and asks for the sets of their neighbors.
    fn lists_final(&mut self, send: &mut dyn FnMut((u64, Msg))) {
        self.lists = self.state.take_dirty();
        if self.n == 0 {
            return;
        }
        let listed: HashSet<u64> = self.lists.iter().map(|(x, _, _)| *x).collect();
        self.refetch.retain(|x| !listed.contains(x));
        let mut ask: Vec<(u64, Vec<Neighbor>)> = self
            .lists
            .iter()
            .map(|(x, _, now)| (*x, now.clone()))
            .collect();
        ask.extend(self.refetch.iter().map(|x| (*x, self.state.top(*x))));
        for (x, now) in ask {
            for nb in now {
                let req = Msg::SetRequest {
                    user: nb.user_id,
                    to_user: x,
                };
                send((owner(nb.user_id, self.peers), req));
            }
        }
    }

    /// Emits the epoch's changes of similar users and recommendations.
    fn emit(&mut self, epoch: Epoch, give: &mut dyn FnMut(Out)) {
        let lists = std::mem::take(&mut self.lists);
        for (user_id, before, now) in &lists {
            if !before.is_empty() {
                let s = SimilarUsers {
                    user_id: *user_id,
                    neighbors: before.clone(),
                };
                give(Out::Similar((s, epoch, -1)));
            }
            if !now.is_empty() {
                let s = SimilarUsers {
                    user_id: *user_id,
                    neighbors: now.clone(),
                };
                give(Out::Similar((s, epoch, 1)));
            }
        }
        if self.n > 0 {
            self.emit_recommendations(epoch, lists, give);
        }
    }

    /// Recomputes, before and after this epoch, the recommendations of every owned user whose
    /// list, set or campaign scores changed, and emits the differences.
    fn emit_recommendations(
        &mut self,
        epoch: Epoch,
        lists: Vec<(u64, Vec<Neighbor>, Vec<Neighbor>)>,
        give: &mut dyn FnMut(Out),
    ) {
        let mut users: Vec<(u64, Option<Vec<Neighbor>>)> = Vec::new();
        let listed: HashSet<u64> = lists.iter().map(|(x, _, _)| *x).collect();
        for (x, before, _) in lists {
            users.push((x, Some(before)));
        }
        for x in &self.refetch {
            users.push((*x, None));
        }
        if self.old_scores.is_empty() {
            for x in self.old_sets.keys() {
                if !listed.contains(x) {
                    users.push((*x, None));
                }
            }
        } else {
            // Settled scores changed: every owned user with neighbors may re-rank.
            for x in self.neighbor_sets.keys() {
                if !listed.contains(x) {
                    users.push((*x, None));
                }
            }
        }
        users.sort_unstable_by_key(|(x, _)| *x);
        users.dedup_by_key(|(x, _)| *x);
        let old_score = |c: &u64,
                         scores: &FastMap<u64, Score>,
                         old: &FastMap<u64, Option<Score>>| match old.get(c)
        {
            Some(s) => *s,
            None => scores.get(c).copied(),
        };
        for (x, list_before) in users {
            let now_list = self.state.top(x);
            let list_before = list_before.unwrap_or_else(|| now_list.clone());
            let set_now = self.state.set(x).to_vec();
            let set_before = self
                .old_sets
                .get(&x)
                .cloned()
                .unwrap_or_else(|| set_now.clone());
            let sets_before = self.neighbor_sets.remove(&x).unwrap_or_default();
            let before = recommend(
                &list_before,
                &sets_before,
                &set_before,
                |c| old_score(c, &self.scores, &self.old_scores),
                self.n,
            );
            let sets_now: Vec<Box<[u64]>> = match self.fetched.remove(&x) {
                Some(mut got) => now_list
                    .iter()
                    .map(|nb| {
                        got.remove(&nb.user_id)
                            .unwrap_or_default()
                            .into_boxed_slice()
                    })
                    .collect(),
                None if listed.contains(&x) || self.refetch.contains(&x) => Vec::new(),
                None => sets_before,
            };
            let after = recommend(
                &now_list,
                &sets_now,
                &set_now,
                |c| self.scores.get(c).copied(),
                self.n,
            );
            if !now_list.is_empty() {
                self.neighbor_sets.insert(x, sets_now);
            }
            if before != after {
                if !before.is_empty() {
                    let r = UserRecommendations {
                        user_id: x,
                        items: before,
                    };
                    give(Out::Recs((r, epoch, -1)));
                }
                if !after.is_empty() {
                    let r = UserRecommendations {
                        user_id: x,
                        items: after,
                    };
                    give(Out::Recs((r, epoch, 1)));
                }
            }
        }
    }
}

/// A user's top `n` recommendations from its top-`k` list, its neighbors' sets (same order),
/// its own set and the settled scores: campaigns of the neighbors' sets not in `mine` and with
/// a settled score, each scored `Σ jaccard × score` over the neighbors who have it (best
/// first), best first, ties by lower campaign id.
fn recommend(
    list: &[Neighbor],
    sets: &[Box<[u64]>],
    mine: &[u64],
    score: impl Fn(&u64) -> Option<Score>,
    n: usize,
) -> Vec<Recommendation> {
    // (campaign, index of the neighbor in `list`): sorted, each campaign's neighbors come
    // best first, as `list` is.
    let mut pairs: Vec<(u64, usize)> = Vec::new();
    for (i, set) in sets.iter().enumerate().take(list.len()) {
        pairs.extend(
            set.iter()
                .filter(|c| mine.binary_search(c).is_err())
                .map(|c| (*c, i)),
        );
    }
    pairs.sort_unstable();
    // (score, campaign, campaign score, range of `pairs`).
    let mut scored: Vec<(Score, u64, Score, usize, usize)> = Vec::new();
    let mut a = 0;
    while a < pairs.len() {
        let c = pairs[a].0;
        let b = a + pairs[a..].partition_point(|p| p.0 == c);
        if let Some(cs) = score(&c) {
            let s = recommendation_score_of(pairs[a..b].iter().map(|p| &list[p.1]), cs);
            scored.push((s, c, cs, a, b));
        }
        a = b;
    }
    scored.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    scored.truncate(n);
    scored
        .into_iter()
        .map(
            |(score, campaign_id, campaign_score, a, b)| Recommendation {
                campaign_id,
                score,
                campaign_score,
                because: pairs[a..b].iter().map(|p| list[p.1]).collect(),
            },
        )
        .collect()
}
