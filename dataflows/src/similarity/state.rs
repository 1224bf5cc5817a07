//! The per-worker state of [`super::similar_users`]: the interaction sets of the users a worker
//! owns, their LSH bucket memberships, and each owned user's buffer of best candidates.
//!
//! Nothing here is replicated: a user's set, its bucket entries and its buffer live on its owner
//! worker only (`owner(user) = mix(user) % peers`), so memory is O(users × (set + bands +
//! buffer)) across the whole job, whatever the number of workers. Work for a user whose set
//! changed is a *probe*: every worker scores the probed set against the owned members of its
//! buckets and answers with its best few; the owner merges the answers.

use super::{SimilarityMode, band_keys, mix, neighbor};
use eddy_core::Neighbor;
use smallvec::SmallVec;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for `u64` keys (user ids, campaign ids, band keys): [`mix`], not SipHash (keys
/// are not attacker-chosen here: band keys are already hashes, ids come from trusted input).
#[derive(Default)]
pub(crate) struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = mix(self.0 ^ u64::from(*b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = mix(self.0 ^ x);
    }
}

/// A hash map keyed by `u64`s.
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<U64Hasher>>;

/// Members of one bucket on one worker, ordered by `(mix(user), user)` so that the members
/// nearest a user in hash order (its sub-bucket) are a range.
#[derive(Debug)]
// Boxed so that the enum is two words: most buckets have one member (`One`), and a bucket
// entry is paid per user and band.
#[allow(clippy::box_collection)]
enum Members {
    One(u64),
    Few(Box<Vec<(u64, u64)>>),
    Many(Box<BTreeSet<(u64, u64)>>),
}

/// Buckets above this many members on a worker move from a sorted vector to a B-tree.
const FEW: usize = 64;

impl Members {
    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Members::One(_) => 1,
            Members::Few(v) => v.len(),
            Members::Many(s) => s.len(),
        }
    }

    fn insert(&mut self, user: u64) {
        let e = (mix(user), user);
        match self {
            Members::One(u) => {
                if *u != user {
                    let mut v = vec![(mix(*u), *u), e];
                    v.sort_unstable();
                    *self = Members::Few(Box::new(v));
                }
            }
            Members::Few(v) => {
                if let Err(at) = v.binary_search(&e) {
                    v.insert(at, e);
                    if v.len() > FEW {
                        *self = Members::Many(Box::new(v.iter().copied().collect()));
                    }
                }
            }
            Members::Many(s) => {
                s.insert(e);
            }
        }
    }

    /// Removes `user`; true when the bucket is now empty.
    fn remove(&mut self, user: u64) -> bool {
        let e = (mix(user), user);
        match self {
            Members::One(u) => *u == user,
            Members::Few(v) => {
                if let Ok(at) = v.binary_search(&e) {
                    v.remove(at);
                }
                if v.len() == 1 {
                    *self = Members::One(v[0].1);
                }
                false
            }
            Members::Many(s) => {
                s.remove(&e);
                if s.len() <= FEW / 2 {
                    *self = Members::Few(Box::new(s.iter().copied().collect()));
                }
                false
            }
        }
    }

    /// Pushes onto `out` the members other than `user` nearest to it in hash order: all of
    /// them if there are at most `quota`, else `quota` of them taken alternately after and
    /// before `user`'s position (wrapping around).
    fn nearest(&self, user: u64, quota: usize, out: &mut Vec<u64>) {
        let h = (mix(user), user);
        match self {
            Members::One(u) => {
                if *u != user {
                    out.push(*u);
                }
            }
            Members::Few(v) => {
                let others = v.len() - usize::from(v.binary_search(&h).is_ok());
                if others <= quota {
                    out.extend(v.iter().map(|e| e.1).filter(|u| *u != user));
                } else {
                    let at = v.partition_point(|e| *e < h);
                    let n = v.len();
                    let after = (0..n).map(|i| v[(at + i) % n]);
                    let before = (1..=n).map(|i| v[(at + n - i) % n]);
                    take_alternately(after, before, user, quota, out);
                }
            }
            Members::Many(s) => {
                let others = s.len() - usize::from(s.contains(&h));
                if others <= quota {
                    out.extend(s.iter().map(|e| e.1).filter(|u| *u != user));
                } else {
                    let after = s.range(h..).chain(s.range(..h)).copied();
                    let before = s.range(..h).rev().chain(s.range(h..).rev()).copied();
                    take_alternately(after, before, user, quota, out);
                }
            }
        }
    }
}

/// Takes up to `quota` distinct members other than `user`, alternating between two walks of
/// the ring (after and before `user`'s position).
fn take_alternately(
    mut after: impl Iterator<Item = (u64, u64)>,
    mut before: impl Iterator<Item = (u64, u64)>,
    user: u64,
    quota: usize,
    out: &mut Vec<u64>,
) {
    let start = out.len();
    let mut turn = true;
    let mut exhausted = 0;
    while out.len() - start < quota && exhausted < 2 {
        let next = if turn { after.next() } else { before.next() };
        turn = !turn;
        let Some((_, u)) = next else {
            exhausted += 1;
            continue;
        };
        if u != user && !out[start..].contains(&u) {
            out.push(u);
        }
    }
}

/// A change of a buffer's membership.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delta {
    /// The user that came in.
    pub(crate) came: Option<u64>,
    /// The user that left.
    pub(crate) left: Option<u64>,
}

/// One worker's answer to a probe: its best candidates and the best of its others.
pub(crate) type Part = (Vec<Neighbor>, Option<Neighbor>);

/// An owned user's best candidates, with a bound on everything else.
///
/// Invariant: `items` holds exact scores (best first, at most `cap`), and every candidate not in
/// `items` ranks at or after `tau` (`None`: there is none). The top `k` of `items` is then the
/// exact top `k` of all candidates as long as [`Buffer::exact`] holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Buffer {
    pub(crate) items: Vec<Neighbor>,
    pub(crate) tau: Option<Neighbor>,
}

impl Buffer {
    /// Builds a buffer from the answers of every worker: their best candidates and the bound
    /// on the rest of theirs.
    pub(crate) fn merge(
        parts: impl IntoIterator<Item = (Vec<Neighbor>, Option<Neighbor>)>,
        cap: usize,
    ) -> Self {
        let mut items = Vec::new();
        let mut tau: Option<Neighbor> = None;
        for (part, t) in parts {
            items.extend(part);
            tau = min_opt(tau, t);
        }
        items.sort_unstable();
        let mut b = Buffer { items, tau };
        b.trim(cap);
        b
    }

    /// Drops what exceeds `cap`, folding the best of it into the bound.
    fn trim(&mut self, cap: usize) {
        if self.items.len() > cap {
            let evicted = self.items[cap];
            self.items.truncate(cap);
            self.tau = min_opt(self.tau, Some(evicted));
        }
    }

    /// Whether the first `k` items are the exact top `k` of all candidates.
    pub(crate) fn exact(&self, k: usize) -> bool {
        match self.tau {
            None => true,
            Some(t) => self.items.len() >= k && self.items[k - 1] < t,
        }
    }

    /// Whether offering `n` for `user` would change the buffer (see [`Buffer::offer`]).
    pub(crate) fn would_change(&self, user: u64, n: Option<Neighbor>) -> bool {
        match (self.items.iter().position(|m| m.user_id == user), n) {
            (Some(at), Some(n)) => self.items[at] != n,
            (Some(_), None) => true,
            (None, Some(n)) => self.tau.is_none_or(|t| n < t),
            (None, None) => false,
        }
    }

    /// The candidate `user` now scores `n` (`None`: it is no longer a candidate). Returns the
    /// change of membership: the user that came in, and the users that left (`user` itself,
    /// or the worst item evicted to make room).
    pub(crate) fn offer(&mut self, user: u64, n: Option<Neighbor>, cap: usize) -> Delta {
        let mut delta = Delta::default();
        match (self.items.iter().position(|m| m.user_id == user), n) {
            (Some(at), Some(n)) if self.items[at] == n => {}
            (Some(at), n) => {
                self.items.remove(at);
                match n {
                    Some(n) => {
                        let to = self.items.partition_point(|m| *m < n);
                        self.items.insert(to, n);
                    }
                    None => delta.left = Some(user),
                }
            }
            (None, Some(n)) if self.tau.is_none_or(|t| n < t) => {
                let to = self.items.partition_point(|m| *m < n);
                self.items.insert(to, n);
                delta.came = Some(user);
                if self.items.len() > cap {
                    let evicted = self.items.pop().expect("over capacity");
                    self.tau = min_opt(self.tau, Some(evicted));
                    if evicted.user_id == user {
                        delta.came = None;
                    } else {
                        delta.left = Some(evicted.user_id);
                    }
                }
            }
            (None, _) => {}
        }
        delta
    }

    /// The first `k` items.
    pub(crate) fn top(&self, k: usize) -> &[Neighbor] {
        &self.items[..self.items.len().min(k)]
    }
}

fn min_opt(a: Option<Neighbor>, b: Option<Neighbor>) -> Option<Neighbor> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// What a probe finds on one worker.
#[derive(Debug, Default)]
pub(crate) struct ProbeResult {
    /// The probed user's best candidates among this worker's users (its perspective).
    pub(crate) items: Vec<Neighbor>,
    /// The best of the rest.
    pub(crate) tau: Option<Neighbor>,
    /// Owned users whose buffer is no longer exact (to recompute).
    pub(crate) stale: Vec<u64>,
}

/// One worker's share of the similarity state.
#[derive(Debug)]
pub(crate) struct State {
    mode: SimilarityMode,
    /// Candidates taken per band on this worker.
    quota: usize,
    /// Buffer capacity (`2k`).
    cap: usize,
    k: usize,
    /// Owned users' sets (sorted campaign ids; never empty), up to four inline: a probe reads
    /// one per candidate, and inline sets save a cache miss each.
    sets: FastMap<u64, SmallVec<[u64; 4]>>,
    /// Band key → owned members.
    buckets: FastMap<u64, Members>,
    /// Owned users' buffers.
    buffers: FastMap<u64, Buffer>,
    /// Neighbor → owned users whose buffer holds it.
    holders: FastMap<u64, Vec<u64>>,
    /// Owned users whose buffer changed since [`State::take_dirty`], with their top `k` before.
    dirty: FastMap<u64, Vec<Neighbor>>,
}

impl State {
    pub(crate) fn new(mode: SimilarityMode, k: usize, peers: usize) -> Self {
        let quota = match mode {
            SimilarityMode::Exact => usize::MAX,
            SimilarityMode::MinHash { bucket_size, .. } => bucket_size.div_ceil(peers).max(1),
        };
        Self {
            mode,
            quota,
            cap: 2 * k.max(1),
            k: k.max(1),
            sets: FastMap::default(),
            buckets: FastMap::default(),
            buffers: FastMap::default(),
            holders: FastMap::default(),
            dirty: FastMap::default(),
        }
    }

    /// The bucket keys of a set.
    pub(crate) fn keys(&self, set: &[u64]) -> Vec<u64> {
        if set.is_empty() {
            return Vec::new();
        }
        match self.mode {
            SimilarityMode::Exact => set.iter().map(|c| mix(*c)).collect(),
            SimilarityMode::MinHash { bands, rows, .. } => {
                let mut keys = band_keys(set, bands, rows);
                keys.sort_unstable();
                keys.dedup();
                keys
            }
        }
    }

    /// The set of an owned user (empty if none).
    pub(crate) fn set(&self, user: u64) -> &[u64] {
        self.sets.get(&user).map_or(&[], |s| s)
    }

    /// Replaces an owned user's set (empty: the user leaves), moving its bucket entries.
    pub(crate) fn replace_set(&mut self, user: u64, set: Vec<u64>) {
        let old = self.sets.remove(&user).unwrap_or_default();
        let (old_keys, new_keys) = (self.keys(&old), self.keys(&set));
        for key in old_keys.iter().filter(|k| !new_keys.contains(k)) {
            if let Some(m) = self.buckets.get_mut(key)
                && m.remove(user)
            {
                self.buckets.remove(key);
            }
        }
        for key in new_keys.iter().filter(|k| !old_keys.contains(k)) {
            match self.buckets.get_mut(key) {
                Some(m) => m.insert(user),
                None => {
                    self.buckets.insert(*key, Members::One(user));
                }
            }
        }
        if !set.is_empty() {
            self.sets.insert(user, SmallVec::from_slice(&set));
        }
    }

    /// Scores `user` (with `set`, owned anywhere) against the owned members of its buckets.
    /// With `offer`, each member's buffer is offered `user`'s new score, and holders of `user`
    /// that are no longer candidates drop it; members whose buffer is no longer exact are
    /// returned as stale (never `skip` users: their buffers are rebuilt anyway).
    pub(crate) fn probe(
        &mut self,
        user: u64,
        set: &[u64],
        offer: bool,
        skip: &impl Fn(u64) -> bool,
    ) -> ProbeResult {
        let mut found = Vec::new();
        for key in self.keys(set) {
            if let Some(m) = self.buckets.get(&key) {
                m.nearest(user, self.quota, &mut found);
            }
        }
        found.sort_unstable();
        found.dedup();
        let mut mine = Vec::with_capacity(found.len());
        let mut result = ProbeResult::default();
        for &x in &found {
            let sx = self.set(x);
            let Some(n) = neighbor(x, set, sx) else {
                if offer && !skip(x) {
                    self.offer(x, user, None, &mut result.stale);
                }
                continue;
            };
            mine.push(n);
            if offer && !skip(x) {
                let theirs = Neighbor { user_id: user, ..n };
                self.offer(x, user, Some(theirs), &mut result.stale);
            }
        }
        if offer {
            // Holders that did not find `user` among their candidates any more.
            let holders: Vec<u64> = self
                .holders
                .get(&user)
                .map(|h| {
                    h.iter()
                        .copied()
                        .filter(|x| found.binary_search(x).is_err())
                        .collect()
                })
                .unwrap_or_default();
            for x in holders {
                if !skip(x) {
                    self.offer(x, user, None, &mut result.stale);
                }
            }
        }
        mine.sort_unstable();
        if mine.len() > self.cap {
            result.tau = Some(mine[self.cap]);
            mine.truncate(self.cap);
        }
        result.items = mine;
        result.stale.sort_unstable();
        result.stale.dedup();
        result
    }

    fn offer(&mut self, x: u64, user: u64, n: Option<Neighbor>, stale: &mut Vec<u64>) {
        let changes = match self.buffers.get(&x) {
            Some(b) => b.would_change(user, n),
            None => n.is_some(),
        };
        if !changes {
            return;
        }
        self.touch(x);
        let (cap, k) = (self.cap, self.k);
        let buffer = self.buffers.entry(x).or_default();
        let delta = buffer.offer(user, n, cap);
        let exact = buffer.exact(k);
        if buffer.items.is_empty() && buffer.tau.is_none() {
            self.buffers.remove(&x);
        }
        if let Some(v) = delta.left {
            self.unhold(x, v);
        }
        if let Some(v) = delta.came {
            self.holders.entry(v).or_default().push(x);
        }
        if !exact {
            stale.push(x);
        }
    }

    /// `x`'s buffer no longer holds `v`.
    fn unhold(&mut self, x: u64, v: u64) {
        if let Some(h) = self.holders.get_mut(&v) {
            if let Some(at) = h.iter().position(|y| *y == x) {
                h.swap_remove(at);
            }
            if h.is_empty() {
                self.holders.remove(&v);
            }
        }
    }

    /// Moves `x`'s entries in `holders` from the `before` members of its buffer to `after`.
    fn rehold(&mut self, x: u64, before: &[u64], after: &[u64]) {
        for v in before.iter().filter(|v| !after.contains(v)) {
            self.unhold(x, *v);
        }
        for v in after.iter().filter(|v| !before.contains(v)) {
            self.holders.entry(*v).or_default().push(x);
        }
    }

    /// Remembers `x`'s top `k` before its first change since the last [`State::take_dirty`].
    fn touch(&mut self, x: u64) {
        if !self.dirty.contains_key(&x) {
            let top = self.top(x);
            self.dirty.insert(x, top);
        }
    }

    /// The owned users whose buffer changed since the last call, with their top `k` before
    /// and now (only those whose top `k` differs).
    pub(crate) fn take_dirty(&mut self) -> Vec<(u64, Vec<Neighbor>, Vec<Neighbor>)> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out: Vec<_> = dirty
            .into_iter()
            .filter_map(|(x, before)| {
                let now = self.top(x);
                (now != before).then_some((x, before, now))
            })
            .collect();
        out.sort_unstable_by_key(|(x, _, _)| *x);
        out
    }

    /// Replaces an owned user's buffer.
    pub(crate) fn set_buffer(&mut self, x: u64, buffer: Buffer) {
        self.touch(x);
        let before: Vec<u64> = self
            .buffers
            .get(&x)
            .map(|b| b.items.iter().map(|m| m.user_id).collect())
            .unwrap_or_default();
        let after: Vec<u64> = buffer.items.iter().map(|m| m.user_id).collect();
        if buffer.items.is_empty() && buffer.tau.is_none() {
            self.buffers.remove(&x);
        } else {
            self.buffers.insert(x, buffer);
        }
        self.rehold(x, &before, &after);
    }

    /// An owned user's current top `k`.
    pub(crate) fn top(&self, x: u64) -> Vec<Neighbor> {
        self.buffers
            .get(&x)
            .map(|b| b.top(self.k).to_vec())
            .unwrap_or_default()
    }

    /// Buffer capacity.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Records held: set elements, bucket entries, buffer items and holder entries (for
    /// tests and metrics: the state is proportional to users, never to events or panes).
    #[cfg(test)]
    pub(crate) fn records(&self) -> usize {
        self.sets.values().map(|s| s.len()).sum::<usize>()
            + self.buckets.values().map(Members::len).sum::<usize>()
            + self.buffers.values().map(|b| b.items.len()).sum::<usize>()
            + self.holders.values().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(user_id: u64, shared: u32, union: u32) -> Neighbor {
        Neighbor {
            user_id,
            shared,
            union,
        }
    }

    #[test]
    fn buffer_keeps_the_bound_and_knows_when_it_is_exact() {
        // Five candidates, capacity 2, k 1.
        let b = Buffer::merge(
            [
                (vec![n(1, 3, 4), n(2, 1, 4)], Some(n(3, 1, 5))),
                (vec![n(4, 2, 4)], None),
            ],
            2,
        );
        assert_eq!(b.items, vec![n(1, 3, 4), n(4, 2, 4)]);
        assert_eq!(b.tau, Some(n(2, 1, 4)));
        assert!(b.exact(1) && b.exact(2));
        let mut b2 = b.clone();
        // The best drops below the bound: no longer exact for k = 1.
        assert!(b2.would_change(1, Some(n(1, 1, 9))));
        assert_eq!(b2.offer(1, Some(n(1, 1, 9)), 2), Delta::default());
        assert!(b2.exact(1) && !b2.exact(2));
        let left = Delta {
            came: None,
            left: Some(4),
        };
        assert_eq!(b2.offer(4, None, 2), left);
        assert!(
            !b2.exact(1),
            "only a candidate ranked after the bound is left"
        );
        // An outsider that beats the bound comes in and evicts the worst.
        let mut b3 = b;
        let swap = Delta {
            came: Some(9),
            left: Some(4),
        };
        assert_eq!(b3.offer(9, Some(n(9, 4, 4)), 2), swap);
        assert_eq!(b3.items, vec![n(9, 4, 4), n(1, 3, 4)]);
        assert_eq!(b3.tau, Some(n(4, 2, 4)));
        // An outsider at or after the bound stays out.
        assert!(!b3.would_change(8, Some(n(8, 1, 8))));
        assert_eq!(b3.offer(8, Some(n(8, 1, 8)), 2), Delta::default());
    }

    /// Churns the sets of 300 users through 3 000 changes, probing as the loop does, and checks
    /// that the state holds exactly what the current sets and buffers need: bucket entries =
    /// Σ bucket keys of the live sets, holder entries = buffer items, nothing of users that
    /// left. A leak (an entry never removed) grows with the number of changes and fails this.
    #[test]
    fn state_holds_exactly_what_the_live_sets_need() {
        use rand::{Rng, SeedableRng};
        for mode in [
            SimilarityMode::Exact,
            SimilarityMode::MinHash {
                bands: 8,
                rows: 2,
                bucket_size: 4,
            },
        ] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            let mut st = State::new(mode, 3, 1);
            for step in 0..3_000 {
                let user = rng.random_range(0..300u64);
                let mut set: Vec<u64> = (0..rng.random_range(0..5))
                    .map(|_| rng.random_range(0..20u64))
                    .collect();
                set.sort_unstable();
                set.dedup();
                st.set_buffer(user, Buffer::default());
                st.replace_set(user, set.clone());
                let changed = |x: u64| x == user;
                let stale = st.probe(user, &set, true, &changed).stale;
                if !set.is_empty() {
                    let r = st.probe(user, &set, false, &|_| false);
                    st.set_buffer(user, Buffer::merge([(r.items, r.tau)], st.cap()));
                }
                for x in stale {
                    let sx = st.set(x).to_vec();
                    let r = st.probe(x, &sx, false, &|_| false);
                    st.set_buffer(x, Buffer::merge([(r.items, r.tau)], st.cap()));
                }
                if step % 500 == 499 {
                    let keys: usize = st.sets.values().map(|s| st.keys(s).len()).sum();
                    let entries: usize = st.buckets.values().map(Members::len).sum();
                    assert_eq!(entries, keys, "bucket entries of live sets only");
                    let items: usize = st.buffers.values().map(|b| b.items.len()).sum();
                    let held: usize = st.holders.values().map(Vec::len).sum();
                    assert_eq!(held, items, "one holder entry per buffer item");
                    assert!(st.buffers.keys().all(|x| st.sets.contains_key(x)));
                    assert!(st.buffers.values().all(|b| b.items.len() <= st.cap()));
                    let elements: usize = st.sets.values().map(|s| s.len()).sum();
                    assert_eq!(st.records(), elements + entries + 2 * items);
                    // Every buffered score is exact against the current sets.
                    for (x, b) in &st.buffers {
                        for m in &b.items {
                            assert_eq!(
                                Some(m.user_id),
                                neighbor(m.user_id, st.set(*x), st.set(m.user_id))
                                    .map(|n| n.user_id)
                            );
                            assert_eq!(
                                Some(*m),
                                neighbor(m.user_id, st.set(*x), st.set(m.user_id))
                            );
                        }
                    }
                }
            }
            assert!(st.sets.len() > 200, "users stay active");
        }
    }

    #[test]
    fn nearest_takes_a_bounded_ring_neighborhood() {
        let mut m = Members::One(1);
        for u in 2..500u64 {
            m.insert(u);
        }
        assert!(matches!(m, Members::Many(_)));
        let mut out = Vec::new();
        m.nearest(7, 10, &mut out);
        assert_eq!(out.len(), 10);
        assert!(!out.contains(&7));
        for u in 2..500u64 {
            assert!(!m.remove(u));
        }
        assert!(matches!(m, Members::One(1)));
        assert!(m.remove(1), "the last member leaves");
        let mut m = Members::One(1);
        m.insert(2);
        out.clear();
        m.nearest(7, 10, &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![1, 2]);
    }
}
