//! User–user similarity: the top-K users by Jaccard similarity of their interaction sets.

mod state;

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::{AsCollection, VecCollection};
use eddy_core::{Neighbor, SimilarUsers};
use eddy_operators::Epoch;
use serde::{Deserialize, Serialize};
use state::{Buffer, Part, State};
use std::collections::{BTreeMap, HashSet};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{Capability, ConnectLoop, Enter, Feedback, Leave, OkErr};
use timely::order::Product;

/// `(user_id, campaign_id)` interactions arranged by user, shared by every consumer.
pub type ByUser<'scope> = Arranged<'scope, TraceAgent<ValSpine<u64, u64, Epoch, isize>>>;

/// How candidate pairs are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimilarityMode {
    /// Every user sharing a campaign is a candidate: exact, but O(audience) per change.
    Exact,
    /// MinHash signatures with LSH banding: users whose signatures agree on every value of
    /// some band share a bucket; a user's candidates in a bucket are the `bucket_size` members
    /// nearest it in hash order (`bucket_size / workers`, rounded up, on each worker), so a
    /// change costs O(bands × bucket_size), however popular a campaign is.
    MinHash {
        /// Bands.
        bands: usize,
        /// Signature values per band.
        rows: usize,
        /// Candidates per band (>= 2).
        bucket_size: usize,
    },
}

/// Parameters of [`similar_users`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimilarityParams {
    /// Similar users kept per user.
    pub k: usize,
    /// Candidate generation.
    pub mode: SimilarityMode,
}

impl SimilarityParams {
    /// The parameters of a configuration (`mode = "exact"`, or MinHash with its settings).
    pub fn from_config(cfg: &eddy_core::config::SimilarityConfig) -> Self {
        use eddy_core::config::SimilarityAlgorithm;
        Self {
            k: cfg.k,
            mode: match cfg.mode {
                SimilarityAlgorithm::Exact => SimilarityMode::Exact,
                SimilarityAlgorithm::MinHash => SimilarityMode::MinHash {
                    bands: cfg.bands,
                    rows: cfg.rows_per_band,
                    bucket_size: cfg.bucket_size,
                },
            },
        }
    }
}

/// A 64-bit mixer (splitmix64's finalizer): the hash family of the signatures and buckets.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The `bands` LSH bucket keys of a (non-empty) set: band `b` hashes the minima of hash
/// functions `b * rows .. (b + 1) * rows` over the set. Identical sets get identical keys;
/// sets with Jaccard `s` share a given band's key with probability `s^rows`.
pub fn band_keys(set: &[u64], bands: usize, rows: usize) -> Vec<u64> {
    (0..bands)
        .map(|b| {
            let mut key = mix(b as u64 ^ 0x5eed);
            for r in 0..rows {
                let seed = mix(((b * rows + r) as u64) << 1 | 1);
                let min = set.iter().map(|c| mix(c ^ seed)).min().unwrap_or(0);
                key = mix(key ^ min);
            }
            key
        })
        .collect()
}

/// The neighbor record of `other` for a user with set `mine`, or `None` if they share nothing.
pub fn neighbor(other: u64, mine: &[u64], theirs: &[u64]) -> Option<Neighbor> {
    let (mut i, mut j, mut shared) = (0, 0, 0u32);
    while i < mine.len() && j < theirs.len() {
        match mine[i].cmp(&theirs[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                shared += 1;
                i += 1;
                j += 1;
            }
        }
    }
    (shared > 0).then(|| Neighbor {
        user_id: other,
        shared,
        union: (mine.len() + theirs.len()) as u32 - shared,
    })
}

/// A message of the similarity loop (see [`similar_users`]).
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

/// What the similarity operator emits: a loop message for a worker, or an output update.
enum Out {
    Loop((u64, Msg)),
    Update((SimilarUsers, Epoch, isize)),
}

/// The worker that owns `user`'s set, buckets and neighbor list.
fn owner(user: u64, peers: usize) -> u64 {
    mix(user) % peers as u64
}

/// Rounds of one epoch in the similarity loop: 0 apply set changes, 1 probe changed users,
/// 2 merge their answers and probe users to recompute, 3 merge those answers.
const LAST_ROUND: u32 = 3;

/// For each user, the `k` most similar users by Jaccard similarity of their interaction sets
/// (the `(user, campaign)` pairs of [`crate::interactions`]), with the number of shared
/// campaigns:
///
/// ```sql
/// WITH sets AS (SELECT user_id, array_agg(campaign_id) AS s FROM interactions GROUP BY user_id)
/// SELECT a.user_id, b.user_id AS other, |a.s ∩ b.s| AS shared, |a.s ∪ b.s| AS union
/// FROM sets a JOIN sets b ON a.user_id <> b.user_id AND |a.s ∩ b.s| > 0
///   AND candidate(a, b)  -- exact mode: true; MinHash mode: proposed by LSH (see below)
/// QUALIFY row_number() OVER (PARTITION BY a.user_id
///                            ORDER BY shared / union DESC, other) <= :k;
/// ```
///
/// Candidates come from buckets: in exact mode one per campaign (every user sharing a campaign
/// is a candidate); in MinHash mode one per LSH band key, of which a user's candidates are the
/// `bucket_size` members nearest it in hash order (split evenly over the workers), so a change
/// costs O(bands × bucket_size) however popular a campaign is. Every score is exact (computed
/// from the two sets), so the bounded mode can miss a neighbor but never misreports one; users
/// with identical sets share every band. Users with no similar user have no row.
///
/// Plan: a user's set, its bucket entries and a buffer of its best `2k` candidates live on
/// one worker (its owner, by a hash of the id); nothing is copied per band or per pane. Each
/// epoch runs a loop of at most four rounds (a timely iterative scope):
/// 0. owners apply the epoch's set changes and move bucket entries;
/// 1. each changed user is probed on every worker: its set is scored against the owned members
///    of its buckets; each such member's buffer is offered the new score (holders of the user
///    that are no longer candidates drop it); the worker answers the owner with its best `2k`
///    and a bound on the rest;
/// 2. owners rebuild changed users' buffers from the answers; users whose buffer can no longer
///    prove its top `k` exact (a neighbor's score fell below the bound on the others) are
///    probed again, without offers;
/// 3. their owners rebuild those buffers.
///
/// A buffer proves its top `k` when its `k`-th item ranks before every candidate outside it,
/// so a change costs one probe (O(candidates of the changed user)) and rarely a recompute,
/// never a rescan of every pair; the state is O(users × (set + bands + 2k)).
pub fn similar_users<'scope>(
    pairs: VecCollection<'scope, Epoch, (u64, u64), isize>,
    params: SimilarityParams,
) -> VecCollection<'scope, Epoch, SimilarUsers, isize> {
    let outer = pairs.inner.scope();
    let peers = outer.peers();
    outer.iterative::<u32, _, _>(|inner| {
        let (handle, cycle) = inner.feedback::<Vec<(u64, Msg)>>(Product::new(0, 1));
        let input = pairs.inner.enter(inner);
        let out = input.binary_frontier::<_, CapacityContainerBuilder<Vec<Out>>, _, _, _, _>(
            cycle,
            Exchange::new(move |((u, _), _, _): &((u64, u64), Epoch, isize)| owner(*u, peers)),
            Exchange::new(|(to, _): &(u64, Msg)| *to),
            "SimilarUsers",
            move |_cap, _info| {
                let mut state = State::new(params.mode, params.k, peers);
                let mut loop_ = Loop::default();
                move |(pairs, pairs_frontier), (msgs, msgs_frontier), output| {
                    pairs.for_each(|cap, data| {
                        // Messages of this loop are sent under one capability each.
                        for time in cap.stamp().iter() {
                            let slot = loop_.slot(time, || cap.delayed(time, 0));
                            slot.pairs
                                .extend(data.iter().map(|((u, c), _, r)| (*u, *c, *r)));
                        }
                    });
                    msgs.for_each(|cap, data| {
                        for time in cap.stamp().iter() {
                            let slot = loop_.slot(time, || cap.delayed(time, 0));
                            slot.msgs.extend(data.iter().map(|(_, m)| m.clone()));
                        }
                    });
                    let frontiers = [pairs_frontier.frontier(), msgs_frontier.frontier()];
                    // Everything that may still arrive comes lexicographically after `t`.
                    let done = |t: (Epoch, u32)| {
                        frontiers
                            .iter()
                            .all(|f| f.iter().all(|p| (p.outer, p.inner) > t))
                    };
                    loop {
                        let work = loop_.work.keys().next().copied();
                        let emit = loop_.emits.keys().next().map(|e| (*e, LAST_ROUND));
                        let next = match (work, emit) {
                            (Some(w), Some(e)) => w.min(e),
                            (Some(w), None) => w,
                            (None, Some(e)) => e,
                            (None, None) => break,
                        };
                        if !done(next) {
                            break;
                        }
                        if work == Some(next) {
                            let (cap, work) = loop_.work.remove(&next).expect("the first key");
                            let emit_cap = loop_
                                .emits
                                .entry(next.0)
                                .or_insert_with(|| cap.delayed(&Product::new(next.0, LAST_ROUND)));
                            let _ = emit_cap;
                            let mut session = output.session(&cap);
                            loop_.round(&mut state, next, work, peers, &mut |m| {
                                session.give(Out::Loop(m))
                            });
                        } else {
                            let (epoch, cap) = loop_.emits.pop_first().expect("the first key");
                            let mut session = output.session(&cap);
                            for (user_id, before, now) in state.take_dirty() {
                                if !before.is_empty() {
                                    let s = SimilarUsers {
                                        user_id,
                                        neighbors: before,
                                    };
                                    session.give(Out::Update((s, epoch, -1)));
                                }
                                if !now.is_empty() {
                                    let s = SimilarUsers {
                                        user_id,
                                        neighbors: now,
                                    };
                                    session.give(Out::Update((s, epoch, 1)));
                                }
                            }
                        }
                    }
                }
            },
        );
        let (msgs, updates) = out.ok_err::<Vec<_>, _, Vec<_>, _, _>(|o| match o {
            Out::Loop(m) => Ok(m),
            Out::Update(u) => Err(u),
        });
        msgs.connect_loop(handle);
        updates.leave(outer).as_collection()
    })
}

/// The buffered work of one `(epoch, round)`.
#[derive(Default)]
struct Work {
    pairs: Vec<(u64, u64, isize)>,
    msgs: Vec<Msg>,
}

/// A capability of the similarity loop: `(epoch, round)`.
type LoopCap = Capability<Product<Epoch, u32>>;

/// The loop's bookkeeping on one worker.
#[derive(Default)]
struct Loop {
    /// Buffered work by `(epoch, round)`, with its capability.
    work: BTreeMap<(Epoch, u32), (LoopCap, Work)>,
    /// Epochs whose changed lists are emitted once their last round is done.
    emits: BTreeMap<Epoch, LoopCap>,
    /// The epoch of `changed`, and the owned users whose set changed in it.
    epoch: Option<Epoch>,
    changed: HashSet<u64>,
}

impl Loop {
    /// The buffered work of `time`, created with the capability `cap` if new.
    fn slot(&mut self, time: &Product<Epoch, u32>, cap: impl FnOnce() -> LoopCap) -> &mut Work {
        &mut self
            .work
            .entry((time.outer, time.inner))
            .or_insert_with(|| (cap(), Work::default()))
            .1
    }

    /// Runs round `t.1` of epoch `t.0`, sending loop messages through `send`.
    fn round(
        &mut self,
        state: &mut State,
        t: (Epoch, u32),
        work: Work,
        peers: usize,
        send: &mut impl FnMut((u64, Msg)),
    ) {
        let (epoch, round) = t;
        if self.epoch != Some(epoch) {
            self.epoch = Some(epoch);
            self.changed.clear();
        }
        let broadcast =
            |send: &mut dyn FnMut((u64, Msg)), user: u64, set: &[u64], changed: bool| {
                for to in 0..peers as u64 {
                    let set = set.to_vec();
                    send((to, Msg::Probe { user, set, changed }));
                }
            };
        // Round 0: apply the epoch's set changes (consolidated per pair), then probe.
        if !work.pairs.is_empty() {
            let mut pairs = work.pairs;
            pairs.sort_unstable_by_key(|(u, c, _)| (*u, *c));
            let mut i = 0;
            while i < pairs.len() {
                let user = pairs[i].0;
                let mut set = state.set(user).to_vec();
                let mut moved = false;
                while i < pairs.len() && pairs[i].0 == user {
                    let c = pairs[i].1;
                    let mut r = 0;
                    while i < pairs.len() && pairs[i].0 == user && pairs[i].1 == c {
                        r += pairs[i].2;
                        i += 1;
                    }
                    match (r.signum(), set.binary_search(&c)) {
                        (1, Err(at)) => {
                            set.insert(at, c);
                            moved = true;
                        }
                        (-1, Ok(at)) => {
                            set.remove(at);
                            moved = true;
                        }
                        _ => {}
                    }
                }
                if moved {
                    self.changed.insert(user);
                    state.set_buffer(user, Buffer::default());
                    state.replace_set(user, set.clone());
                    broadcast(send, user, &set, true);
                }
            }
        }
        let mut stale = Vec::new();
        let mut replies: BTreeMap<u64, Vec<Part>> = BTreeMap::new();
        for msg in work.msgs {
            match msg {
                Msg::Probe { user, set, changed } => {
                    let skip = |x: u64| self.changed.contains(&x);
                    let found = state.probe(user, &set, changed, &skip);
                    stale.extend(found.stale);
                    if !set.is_empty() {
                        send((
                            owner(user, peers),
                            Msg::Reply {
                                user,
                                items: found.items,
                                tau: found.tau,
                            },
                        ));
                    }
                }
                Msg::Reply { user, items, tau } => {
                    replies.entry(user).or_default().push((items, tau));
                }
            }
        }
        let cap = state.cap();
        for (user, parts) in replies {
            state.set_buffer(user, Buffer::merge(parts, cap));
        }
        // Buffers that lost their proof: rebuild from scratch (their owner is this worker).
        stale.sort_unstable();
        stale.dedup();
        debug_assert!(round < LAST_ROUND || stale.is_empty());
        for x in stale {
            state.set_buffer(x, Buffer::default());
            let set = state.set(x).to_vec();
            if !set.is_empty() {
                broadcast(send, x, &set, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interactions::{InteractionParams, interactions};
    use crate::testing::{StreamShape, accept, as_of, oracle_sets, oracle_similar, run, stream};
    use eddy_core::WindowSpec;

    const PANE: i64 = 1_000;
    const SLIDING: i64 = 3_000;

    fn run_similar(seed: u64, workers: usize, params: SimilarityParams, shape: StreamShape) {
        let ip = InteractionParams {
            pane: WindowSpec::new(PANE),
            sliding_ms: SLIDING,
            views_are_interest: false,
            emit: eddy_operators::Emit::OnClose,
        };
        let (accepted, marks) = accept(&stream(seed, 60, shape), ip.pane, 400);
        let updates = run(workers, &accepted, &marks, move |events, marks| {
            similar_users(interactions(events, marks, ip), params)
        });
        let mut all = Vec::new();
        let mut compared = 0;
        for (epoch, batch) in accepted.iter().enumerate() {
            all.extend(batch.iter().copied());
            let sets = oracle_sets(&all, marks[epoch], ip.pane, SLIDING, false, true);
            let exact = oracle_similar(&sets, params.k);
            let got = as_of(&updates, epoch as Epoch);
            match params.mode {
                SimilarityMode::Exact => assert_eq!(got, exact, "seed {seed} epoch {epoch}"),
                SimilarityMode::MinHash { .. } => check_bounded(&got, &sets, params.k),
            }
            compared += exact.len();
        }
        assert!(
            compared > 200,
            "the stream exercises similarity ({compared})"
        );
    }

    /// The bounded mode's guarantees: every reported neighbor is scored exactly, lists are
    /// ranked and at most k long, and users with an identical set are always found.
    fn check_bounded(
        got: &[SimilarUsers],
        sets: &std::collections::BTreeMap<u64, Vec<u64>>,
        k: usize,
    ) {
        for s in got {
            let mine = &sets[&s.user_id];
            assert!(s.neighbors.len() <= k);
            assert!(s.neighbors.windows(2).all(|w| w[0] < w[1]), "ranked");
            for n in &s.neighbors {
                assert_eq!(
                    Some(*n),
                    neighbor(n.user_id, mine, &sets[&n.user_id]),
                    "exact score"
                );
            }
        }
        for (u, su) in sets {
            let twins: Vec<u64> = sets
                .iter()
                .filter(|(v, sv)| *v != u && *sv == su)
                .map(|(v, _)| *v)
                .collect();
            if twins.is_empty() {
                continue;
            }
            let mine = got
                .iter()
                .find(|s| s.user_id == *u)
                .unwrap_or_else(|| panic!("user {u} has identical-set peers {twins:?} but no row"));
            let found = mine
                .neighbors
                .iter()
                .filter(|n| n.shared == n.union)
                .count();
            assert_eq!(
                found,
                twins.len().min(k),
                "user {u}: twins {twins:?}, got {:?}",
                mine.neighbors
            );
        }
    }

    fn shape() -> StreamShape {
        StreamShape {
            users: 40,
            campaigns: 10,
            max_per_epoch: 40,
            click: 0.3,
            conversion: 0.1,
            other_amounts: 0.0,
        }
    }

    #[test]
    fn exact_mode_matches_oracle() {
        let p = SimilarityParams {
            k: 4,
            mode: SimilarityMode::Exact,
        };
        run_similar(1, 1, p, shape());
        run_similar(2, 3, p, shape());
        run_similar(5, 2, p, shape());
        run_similar(6, 4, p, shape());
    }

    /// k = 1 keeps a buffer of two: neighbors' scores fall below the bound all the time, so
    /// the recompute rounds (2 and 3) run in most epochs, and the answer must stay exact.
    #[test]
    fn exact_mode_stays_exact_when_buffers_run_dry() {
        let p = SimilarityParams {
            k: 1,
            mode: SimilarityMode::Exact,
        };
        let dense = StreamShape {
            users: 25,
            campaigns: 6,
            ..shape()
        };
        for (seed, workers) in [(11, 1), (12, 2), (13, 3), (14, 4)] {
            run_similar(seed, workers, p, dense);
        }
        let p2 = SimilarityParams { k: 2, ..p };
        run_similar(15, 2, p2, shape());
    }

    #[test]
    fn minhash_mode_keeps_its_guarantees() {
        let p = SimilarityParams {
            k: 4,
            mode: SimilarityMode::MinHash {
                bands: 6,
                rows: 2,
                bucket_size: 64,
            },
        };
        run_similar(3, 1, p, shape());
        run_similar(4, 2, p, shape());
    }

    #[test]
    fn minhash_finds_everything_with_one_value_per_band_on_tiny_sets() {
        // Single-campaign users: one minhash value per band puts users of the same campaign in
        // the same bucket, so the bounded mode is exact here.
        let users = [(1u64, vec![5u64]), (2, vec![5]), (3, vec![5]), (4, vec![6])];
        let sets: std::collections::BTreeMap<u64, Vec<u64>> = users.into_iter().collect();
        for (u, s) in &sets {
            let keys = band_keys(s, 3, 1);
            for (v, t) in &sets {
                assert_eq!(keys == band_keys(t, 3, 1), s == t, "{u} vs {v}");
            }
        }
    }
}
