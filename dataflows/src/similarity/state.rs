//! The per-worker state of [`super::similar_users`]: the interaction sets of the users a worker
//! owns, their LSH bucket memberships, and each owned user's buffer of best candidates.
//!
//! Nothing here is replicated: a user's set, its bucket entries and its buffer live on its owner
//! worker only (`owner(user) = mix(user) % peers`), so memory is O(users × (set + bands +
//! buffer)) across the whole job, whatever the number of workers. Work for a user whose set
//! changed is a *probe*: every worker scores the probed set against the owned members of its
//! buckets and answers with its best few; the owner merges the answers.

use super::table::Table;
use super::{SetMatcher, SimilarityMode, band_keys, mix};
use eddy_core::Neighbor;
use smallvec::SmallVec;
use std::collections::HashMap;
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

/// A bucket entry: `(mix(user), slot)`. `mix` is a bijection, so the hash alone orders the
/// members as `(mix(user), user)` did, and the slot points straight at the member's [`Slot`].
type Entry = (u64, u32);

/// Members of one bucket on one worker, ordered by `mix(user)` so that the members nearest a
/// user in hash order (its sub-bucket) are a range.
#[derive(Debug)]
// Boxed so that the enum is two words: most buckets have one member (`One`), and a bucket
// entry is paid per user and band.
#[allow(clippy::box_collection)]
enum Members {
    One(u32),
    Few(Box<Vec<Entry>>),
    Many(Box<Bins>),
}

/// What a vacant slot of the [`Table`] of buckets holds (never a live bucket's value).
impl Default for Members {
    fn default() -> Self {
        Members::One(u32::MAX)
    }
}

/// Scattered records (slots, buffers, holder lists) prefetched together ahead of the work on
/// them, at most this many at a time (their cache misses overlap; more would evict the first).
pub(crate) const PRELOAD_BATCH: usize = 16;

/// Asks the CPU to bring the cache line of `p` into cache, and goes on at once.
///
/// Memory latency, not arithmetic, bounds the similarity state's work: its records are
/// scattered over gigabytes, and each step of a probe reads dozens of them. Their misses must
/// overlap. Reading them ahead (a loop of loads) overlaps them poorly: each load must complete
/// before it retires, so a few dozen fill the core's window of instructions in flight, and a
/// branch on a value still missing that the core guesses wrong throws away every load issued
/// after it. A prefetch waits for nothing and nothing branches on it. So each phase of the
/// work first prefetches what it will read, one level of pointers at a time (a slot, then
/// the set it points to), then works. Measured in BENCHMARKS.md (24 h, 1 M users, alternating
/// runs: median 133 k events/s with loads, 165 k with prefetches). A hint only: elsewhere than
/// on x86-64 it does nothing.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults, whatever the
    // address (it may be dangling or null): it only moves a cache line.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches the first `lines` cache lines from `p` (see [`prefetch`]).
#[inline(always)]
fn prefetch_lines<T>(p: *const T, lines: usize) {
    let p = p.cast::<u8>();
    for i in 0..lines {
        prefetch(p.wrapping_add(64 * i));
    }
}

/// Prefetches a slot's set when it is on the heap (over four campaigns; up to four lines).
#[inline(always)]
fn prefetch_set(set: &SmallVec<[u64; 4]>) {
    if set.spilled() {
        prefetch_lines(set.as_ptr(), set.len().div_ceil(8).min(4));
    }
}

/// Buckets above this many members on a worker move from a sorted vector to [`Bins`].
/// (Small under test, so that the oracle and churn tests move buckets through every form.)
const FEW: usize = if cfg!(test) { 6 } else { 64 };

/// Average members per bin of [`Bins`] above which the bins double, and below which they
/// halve (small under test, so that tests split and merge bins).
const BIN_MAX: usize = if cfg!(test) { 3 } else { 16 };
const BIN_MIN: usize = if cfg!(test) { 1 } else { 4 };

/// The members of a large bucket by hash range: `bins[i]` holds, sorted, the members whose
/// hash has `i` in its top `bits` bits. Hashes are uniform (`mix` of the user), so bins hold
/// `BIN_MIN..=BIN_MAX` members on average: a position in hash order is one indexed load and a
/// search of a few entries (a B-tree descends a node per level, twice for the two directions
/// of a walk), and a member moves within one bin. (User ids chosen to collide in `mix`'s top
/// bits would fill one bin: answers stay right, moves get linear, as in the hash maps here.)
#[derive(Debug)]
struct Bins {
    bins: Vec<Vec<Entry>>,
    bits: u32,
    len: usize,
}

impl Bins {
    /// The bins of `members` (sorted).
    fn new(members: &[Entry]) -> Self {
        let mut b = Bins {
            bins: vec![members.to_vec()],
            bits: 0,
            len: members.len(),
        };
        b.rebalance();
        b
    }

    /// The bin of hash `h`.
    fn bin(&self, h: u64) -> usize {
        if self.bits == 0 {
            0
        } else {
            (h >> (64 - self.bits)) as usize
        }
    }

    fn insert(&mut self, e: Entry) {
        let b = self.bin(e.0);
        let v = &mut self.bins[b];
        if let Err(at) = v.binary_search(&e) {
            push_at(v, at, e, usize::MAX);
            self.len += 1;
            self.rebalance();
        }
    }

    fn remove(&mut self, e: Entry) {
        let b = self.bin(e.0);
        let v = &mut self.bins[b];
        if let Ok(at) = v.binary_search(&e) {
            v.remove(at);
            shrink_if_sparse(v);
            self.len -= 1;
            self.rebalance();
        }
    }

    /// Doubles or halves the bins until their average size is within bounds.
    fn rebalance(&mut self) {
        while self.len > BIN_MAX << self.bits {
            // Each bin splits on the next bit of the hash: its first part has it clear.
            let bit = 1u64 << (63 - self.bits);
            let mut bins = Vec::with_capacity(2 * self.bins.len());
            for mut low in self.bins.drain(..) {
                let high = low.split_off(low.partition_point(|e| e.0 & bit == 0));
                low.shrink_to_fit();
                bins.push(low);
                bins.push(high);
            }
            self.bins = bins;
            self.bits += 1;
        }
        while self.bits > 0 && self.len < BIN_MIN << self.bits {
            let mut bins = Vec::with_capacity(self.bins.len() / 2);
            let mut it = self.bins.drain(..);
            while let (Some(mut low), Some(high)) = (it.next(), it.next()) {
                low.extend_from_slice(&high);
                bins.push(low);
            }
            drop(it);
            self.bins = bins;
            self.bits -= 1;
        }
    }

    /// Every member, in hash order.
    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.bins.iter().flatten()
    }
}

impl Members {
    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Members::One(_) => 1,
            Members::Few(v) => v.len(),
            Members::Many(b) => b.len,
        }
    }

    /// Inserts the member `e`; `hash_of` gives the hash of a slot (for `One`).
    fn insert(&mut self, e: Entry, hash_of: impl Fn(u32) -> u64) {
        match self {
            Members::One(s) => {
                if *s != e.1 {
                    let mut v = vec![(hash_of(*s), *s), e];
                    v.sort_unstable();
                    *self = Members::Few(Box::new(v));
                }
            }
            Members::Few(v) => {
                if let Err(at) = v.binary_search(&e) {
                    push_at(v, at, e, FEW + 1);
                    if v.len() > FEW {
                        *self = Members::Many(Box::new(Bins::new(v)));
                    }
                }
            }
            Members::Many(b) => b.insert(e),
        }
    }

    /// Removes the member `e`; true when the bucket is now empty.
    fn remove(&mut self, e: Entry) -> bool {
        match self {
            Members::One(s) => *s == e.1,
            Members::Few(v) => {
                if let Ok(at) = v.binary_search(&e) {
                    v.remove(at);
                    shrink_if_sparse(v);
                }
                if v.len() == 1 {
                    *self = Members::One(v[0].1);
                }
                false
            }
            Members::Many(b) => {
                b.remove(e);
                if b.len <= FEW / 2 {
                    *self = Members::Few(Box::new(b.iter().copied().collect()));
                }
                false
            }
        }
    }

    /// Prefetches (see [`prefetch`]) level `stage` of what a walk from hash `h` (or a move of
    /// `h`) reads: 0, the box; 1, the vector of a few, or the bins' headers around `h`'s bin
    /// among many; 2, those bins (walks that leave the bin of `h` go on in its neighbours).
    /// Nothing for one (inline). Run over a batch of buckets stage by stage, each stage reads
    /// lines that the previous one set on their way.
    fn prefetch(&self, stage: u8, h: u64) {
        match (self, stage) {
            (Members::Few(v), 0) => prefetch(&**v),
            (Members::Few(v), 1) => prefetch(v.as_ptr()),
            (Members::Many(b), 0) => prefetch(&**b),
            (Members::Many(b), 1) => {
                let (at, wrap) = (b.bin(h), b.bins.len() - 1);
                prefetch(&b.bins[at.wrapping_sub(1) & wrap]);
                prefetch(&b.bins[(at + 1) & wrap]);
            }
            (Members::Many(b), 2) => {
                let (at, wrap) = (b.bin(h), b.bins.len() - 1);
                for i in [at.wrapping_sub(1) & wrap, at, (at + 1) & wrap] {
                    prefetch(b.bins[i].as_ptr());
                }
            }
            _ => {}
        }
    }

    /// Pushes onto `out` the slots of the members other than the user hashing to `h` (slot
    /// `me` if it is a member) nearest to it in hash order: all of them if there are at most
    /// `quota`, else `quota` of them taken alternately after and before its position
    /// (wrapping around).
    fn nearest(&self, h: u64, me: Option<u32>, quota: usize, out: &mut Vec<u32>) {
        match self {
            Members::One(s) => {
                if Some(*s) != me {
                    out.push(*s);
                }
            }
            Members::Few(v) => {
                let at = v.partition_point(|e| e.0 < h);
                let present = v.get(at).is_some_and(|e| e.0 == h);
                let others = v.len() - usize::from(present);
                if others <= quota {
                    out.extend(v.iter().filter(|e| e.0 != h).map(|e| e.1));
                } else {
                    let n = v.len();
                    let after = (0..n).map(|i| v[(at + i) % n]);
                    let before = (1..=n).map(|i| v[(at + n - i) % n]);
                    take_alternately(after, before, h, quota, out);
                }
            }
            Members::Many(bins) => {
                let (b, n) = (bins.bin(h), bins.bins.len());
                let v = &bins.bins[b];
                let at = v.partition_point(|e| e.0 < h);
                let present = v.get(at).is_some_and(|e| e.0 == h);
                let others = bins.len - usize::from(present);
                if others <= quota {
                    out.extend(bins.iter().filter(|e| e.0 != h).map(|e| e.1));
                } else {
                    // Both walks go round the whole ring, lazily, bin by bin (`n` is a power
                    // of two).
                    let (all, wrap) = (&bins.bins, n - 1);
                    let after = v[at..]
                        .iter()
                        .chain((1..n).flat_map(|i| all[(b + i) & wrap].iter()))
                        .chain(v[..at].iter())
                        .copied();
                    let before = v[..at]
                        .iter()
                        .rev()
                        .chain((1..n).flat_map(|i| all[(b + n - i) & wrap].iter().rev()))
                        .chain(v[at..].iter().rev())
                        .copied();
                    take_alternately(after, before, h, quota, out);
                }
            }
        }
    }
}

/// Takes `quota` members other than the one hashing to `h`, alternating between two walks of
/// the ring (after and before `h`'s position), which must hold more than `quota` others: the
/// walks then meet no member twice.
fn take_alternately(
    mut after: impl Iterator<Item = Entry>,
    mut before: impl Iterator<Item = Entry>,
    h: u64,
    quota: usize,
    out: &mut Vec<u32>,
) {
    let start = out.len();
    let mut turn = true;
    while out.len() - start < quota {
        let next = if turn { after.next() } else { before.next() };
        turn = !turn;
        let Some((hash, s)) = next else {
            debug_assert!(false, "the ring holds more than quota others");
            break;
        };
        if hash != h {
            debug_assert!(!out[start..].contains(&s), "the walks met");
            out.push(s);
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
#[derive(Debug, Clone, PartialEq, Eq)]
// The bound first: in a [`Slot`] it shares the first cache line with the user's set.
#[repr(C)]
pub(crate) struct Buffer {
    /// `tau`, [`NO_BOUND`] for `None`: 16 bytes where an `Option` takes 24.
    bound: Neighbor,
    pub(crate) items: Vec<Neighbor>,
}

/// The `bound` of a buffer without one (no real neighbor has a union of 0).
const NO_BOUND: Neighbor = Neighbor {
    user_id: 0,
    shared: 0,
    union: 0,
};

impl Default for Buffer {
    fn default() -> Self {
        Self {
            bound: NO_BOUND,
            items: Vec::new(),
        }
    }
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
        let rest = best_first(&mut items, cap);
        // A buffer lives as long as its user: it holds no more than it keeps.
        items.shrink_to_fit();
        let mut b = Buffer {
            bound: NO_BOUND,
            items,
        };
        b.set_tau(min_opt(tau, rest));
        b
    }

    /// The bound on the candidates outside `items` (`None`: there is none).
    pub(crate) fn tau(&self) -> Option<Neighbor> {
        (self.bound.union != 0).then_some(self.bound)
    }

    fn set_tau(&mut self, tau: Option<Neighbor>) {
        debug_assert!(tau.is_none_or(|t| t.union != 0));
        self.bound = tau.unwrap_or(NO_BOUND);
    }

    /// Whether the first `k` items are the exact top `k` of all candidates.
    pub(crate) fn exact(&self, k: usize) -> bool {
        match self.tau() {
            None => true,
            Some(t) => self.items.len() >= k && self.items[k - 1] < t,
        }
    }

    /// Whether offering `n` for `user` would change the buffer (see [`Buffer::offer`]).
    pub(crate) fn would_change(&self, user: u64, n: Option<Neighbor>) -> bool {
        match (self.items.iter().position(|m| m.user_id == user), n) {
            (Some(at), Some(n)) => self.items[at] != n,
            (Some(_), None) => true,
            (None, Some(n)) => self.tau().is_none_or(|t| n < t),
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
            (None, Some(n)) if self.tau().is_none_or(|t| n < t) => {
                if self.items.len() >= cap {
                    // Full: the worst of `items` and `n` goes to the bound. Popping before
                    // inserting keeps the vector at its capacity (no growth to evict one).
                    let worst = *self.items.last().expect("cap >= 1");
                    if worst < n {
                        self.set_tau(min_opt(self.tau(), Some(n)));
                        return delta;
                    }
                    self.items.pop();
                    self.set_tau(min_opt(self.tau(), Some(worst)));
                    delta.left = Some(worst.user_id);
                }
                let to = self.items.partition_point(|m| *m < n);
                push_at(&mut self.items, to, n, cap);
                delta.came = Some(user);
            }
            (None, _) => {}
        }
        delta
    }

    /// Prefetches the items (see [`prefetch`]; the buffer itself must be in cache or on its
    /// way: this reads where they are).
    fn prefetch_items(&self) {
        // Four 16-byte items per 64-byte line.
        prefetch_lines(self.items.as_ptr(), self.items.len().div_ceil(4));
    }

    /// The first `k` items.
    pub(crate) fn top(&self, k: usize) -> &[Neighbor] {
        &self.items[..self.items.len().min(k)]
    }
}

/// Keeps the best `cap` of `items`, sorted best first, and returns the best of the others
/// (`None`: there were at most `cap`). Selects before sorting: only the kept ones are sorted.
fn best_first(items: &mut Vec<Neighbor>, cap: usize) -> Option<Neighbor> {
    let rest = (items.len() > cap).then(|| {
        // Everything after position `cap` ranks at or after it: it is the best of the rest.
        let rest = *items.select_nth_unstable(cap).1;
        items.truncate(cap);
        rest
    });
    items.sort_unstable();
    rest
}

/// Inserts `x` at `at`, growing a full vector to at most `max` (by half its length, not
/// double: these vectors are many and long-lived).
fn push_at<T>(v: &mut Vec<T>, at: usize, x: T, max: usize) {
    if v.len() == v.capacity() {
        let more = (v.len() / 2).max(2).min(max.saturating_sub(v.len()).max(1));
        v.reserve_exact(more);
    }
    v.insert(at, x);
}

/// Gives back a vector's memory once it uses under half of it (to 1.5 times its length, so
/// that shrinking and growing do not alternate).
fn shrink_if_sparse<T>(v: &mut Vec<T>) {
    if v.capacity() >= 2 * v.len() + 4 {
        v.shrink_to(v.len() + v.len() / 2);
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

/// An owned user: its set and its buffer side by side, so that scoring a candidate and
/// offering it the probed user read one place.
#[derive(Debug, Default)]
// Two cache lines: the user, its set and its buffer's bound in the first (what a candidate
// outside the buffer reads), the buffer's items in the second.
#[repr(C, align(64))]
struct Slot {
    user: u64,
    /// Sorted campaign ids, never empty while the slot is live; up to four inline.
    set: SmallVec<[u64; 4]>,
    buffer: Buffer,
    /// Whether [`State::dirty`] holds this user's top `k` before the epoch's first change.
    dirty: bool,
}

/// Reused vectors of [`State::probe`] and [`State::replace_set`] (no allocation per call).
#[derive(Debug, Default)]
struct Scratch {
    keys: Vec<u64>,
    old_keys: Vec<u64>,
    /// Bucket members met by the walks (with repeats: buckets of one set overlap).
    met: Vec<u32>,
    found: Vec<u32>,
    /// The probed user's scores against the candidates.
    mine: Vec<Neighbor>,
    held: Vec<u32>,
    /// The offers of a probe: a slot and the probed user's score for its buffer.
    offers: Vec<(u32, Option<Neighbor>)>,
    /// Per slot, the number of the last probe that found it (`[0]`) and of the last one whose
    /// user its buffer holds (`[1]`), so that a probe dedups and looks up without sorting.
    stamps: Vec<[u32; 2]>,
    probe: u32,
}

impl Scratch {
    /// Starts a probe: a stamp no slot carries yet.
    fn next_probe(&mut self, slots: usize) -> u32 {
        self.probe = self.probe.wrapping_add(1);
        if self.probe == 0 {
            // Wrapped: forget every stamp (once per 2^32 probes).
            self.stamps.iter_mut().for_each(|s| *s = [0, 0]);
            self.probe = 1;
        }
        if self.stamps.len() < slots {
            self.stamps.resize(slots, [0, 0]);
        }
        self.probe
    }
}

/// An owned user whose buffer changed this epoch: its slot then, and where its top `k` before
/// the change is in [`State::dirty_tops`].
#[derive(Debug, Clone, Copy)]
struct Dirty {
    user: u64,
    slot: u32,
    at: u32,
    len: u32,
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
    /// Owned user → its slot in `slots`.
    index: Table<u32>,
    /// Owned users (set + buffer), addressed by dense indices; free ones are in `free`.
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Band key → owned members.
    buckets: Table<Members>,
    /// Neighbor → slots of the owned users whose buffer holds it.
    holders: Table<Vec<u32>>,
    /// Owned users whose buffer changed since [`State::drain_dirty`], with where their top `k`
    /// before is in `dirty_tops` (one arena, both kept allocated from epoch to epoch: an
    /// epoch touches tens of thousands of buffers).
    dirty: Vec<Dirty>,
    dirty_tops: Vec<Neighbor>,
    scratch: Scratch,
    /// Slots whose user's set changed this epoch (a bitset by slot, and the slots set in it):
    /// their buffers are rebuilt anyway, so probes offer them nothing.
    changed: Vec<u64>,
    changed_slots: Vec<u32>,
}

/// The bucket keys of a set, into `out` (cleared first).
fn keys_into(mode: SimilarityMode, set: &[u64], out: &mut Vec<u64>) {
    out.clear();
    if set.is_empty() {
        return;
    }
    match mode {
        SimilarityMode::Exact => out.extend(set.iter().map(|c| mix(*c))),
        SimilarityMode::MinHash { bands, rows, .. } => {
            out.extend(band_keys(set, bands, rows));
            out.sort_unstable();
            out.dedup();
        }
    }
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
            index: Table::default(),
            slots: Vec::new(),
            free: Vec::new(),
            buckets: Table::default(),
            holders: Table::default(),
            dirty: Vec::new(),
            dirty_tops: Vec::new(),
            scratch: Scratch::default(),
            changed: Vec::new(),
            changed_slots: Vec::new(),
        }
    }

    /// The bucket keys of a set.
    #[cfg(test)]
    pub(crate) fn keys(&self, set: &[u64]) -> Vec<u64> {
        let mut out = Vec::new();
        keys_into(self.mode, set, &mut out);
        out
    }

    /// The set of an owned user (empty if none).
    pub(crate) fn set(&self, user: u64) -> &[u64] {
        self.index
            .get(user)
            .map_or(&[], |s| &self.slots[*s as usize].set)
    }

    /// Prefetches the slots (set and buffer) of the owned users among `users` (see
    /// [`prefetch`]), so that a batch of work on them finds them in cache: their misses
    /// overlap here instead of happening one after another.
    pub(crate) fn preload(&self, users: impl IntoIterator<Item = u64>) {
        let users: SmallVec<[u64; PRELOAD_BATCH]> = users.into_iter().collect();
        for &u in &users {
            self.index.prefetch(u);
        }
        let slots: SmallVec<[u32; PRELOAD_BATCH]> = users
            .iter()
            .filter_map(|u| self.index.get(*u).copied())
            .collect();
        self.prefetch_slots(&slots);
    }

    /// Prefetches the slots `slots` (both lines), then their sets when on the heap and their
    /// buffers' items (see [`prefetch`]).
    fn prefetch_slots(&self, slots: &[u32]) {
        for &s in slots {
            let slot = &self.slots[s as usize];
            prefetch(slot);
            prefetch(&slot.buffer.items);
        }
        for &s in slots {
            let slot = &self.slots[s as usize];
            prefetch_set(&slot.set);
            slot.buffer.prefetch_items();
        }
    }

    /// Prefetches the buffers of the slots `slots`, then their items.
    fn prefetch_buffers(&self, slots: impl Iterator<Item = u32> + Clone) {
        for s in slots.clone() {
            prefetch(&self.slots[s as usize].buffer.items);
        }
        for s in slots {
            self.slots[s as usize].buffer.prefetch_items();
        }
    }

    /// The buckets of `keys` that have members, prefetched level by level (see
    /// [`Members::prefetch`]) for a walk from, or a move of, hash `h`. (Inline room for 32: a
    /// set change moves a user out of up to 16 buckets and into up to 16.)
    fn prefetched_buckets<'k>(
        &self,
        keys: impl Iterator<Item = &'k u64> + Clone,
        h: u64,
    ) -> SmallVec<[&Members; 32]> {
        for key in keys.clone() {
            self.buckets.prefetch(*key);
        }
        let buckets: SmallVec<[&Members; 32]> =
            keys.filter_map(|key| self.buckets.get(*key)).collect();
        for stage in 0..3 {
            for m in &buckets {
                m.prefetch(stage, h);
            }
        }
        buckets
    }

    /// Prefetches the holder lists of `users` (see [`prefetch`]): the table's slots first,
    /// then the lists.
    fn prefetch_holders(&self, users: impl Iterator<Item = u64> + Clone) {
        for v in users.clone() {
            self.holders.prefetch(v);
        }
        for v in users {
            if let Some(h) = self.holders.get(v) {
                prefetch(h.as_ptr());
            }
        }
    }

    /// Replaces an owned user's set (empty: the user leaves, and its buffer must be empty),
    /// moving its bucket entries.
    pub(crate) fn replace_set(&mut self, user: u64, set: Vec<u64>) {
        let s = match self.index.get(user) {
            Some(s) => *s,
            None if set.is_empty() => return,
            None => {
                let s = match self.free.pop() {
                    Some(s) => s,
                    None => {
                        self.slots.push(Slot::default());
                        u32::try_from(self.slots.len() - 1).expect("under 2^32 users per worker")
                    }
                };
                self.slots[s as usize] = Slot {
                    user,
                    ..Slot::default()
                };
                self.index.insert(user, s);
                s
            }
        };
        let h = mix(user);
        let mut scratch = std::mem::take(&mut self.scratch);
        keys_into(
            self.mode,
            &self.slots[s as usize].set,
            &mut scratch.old_keys,
        );
        keys_into(self.mode, &set, &mut scratch.keys);
        let (old_keys, new_keys) = (&scratch.old_keys, &scratch.keys);
        let left = || old_keys.iter().filter(|k| !new_keys.contains(k));
        let joined = || new_keys.iter().filter(|k| !old_keys.contains(k));
        // The buckets are scattered over the state: those that change are prefetched first,
        // together.
        self.prefetched_buckets(left().chain(joined()), h);
        for key in left() {
            if let Some(m) = self.buckets.get_mut(*key)
                && m.remove((h, s))
            {
                self.buckets.remove(*key);
            }
        }
        let slots = &self.slots;
        let hash_of = |s: u32| mix(slots[s as usize].user);
        for key in joined() {
            match self.buckets.get_mut(*key) {
                Some(m) => m.insert((h, s), hash_of),
                None => {
                    self.buckets.insert(*key, Members::One(s));
                }
            }
        }
        self.scratch = scratch;
        if set.is_empty() {
            debug_assert!(self.slots[s as usize].buffer.items.is_empty());
            self.slots[s as usize] = Slot::default();
            self.index.remove(user);
            self.free.push(s);
        } else {
            self.slots[s as usize].set = SmallVec::from_vec(set);
        }
    }

    /// Marks an owned user's set as changed this epoch (until [`State::clear_changed`]):
    /// probes offer it nothing, its buffer being rebuilt anyway.
    pub(crate) fn mark_changed(&mut self, user: u64) {
        if let Some(&s) = self.index.get(user) {
            let (word, bit) = (s as usize / 64, 1u64 << (s % 64));
            if word >= self.changed.len() {
                self.changed.resize(word + 1, 0);
            }
            if self.changed[word] & bit == 0 {
                self.changed[word] |= bit;
                self.changed_slots.push(s);
            }
        }
    }

    /// Forgets the users marked by [`State::mark_changed`].
    pub(crate) fn clear_changed(&mut self) {
        for s in self.changed_slots.drain(..) {
            self.changed[s as usize / 64] &= !(1u64 << (s % 64));
        }
    }

    fn is_changed(&self, s: u32) -> bool {
        self.changed
            .get(s as usize / 64)
            .is_some_and(|w| w & (1u64 << (s % 64)) != 0)
    }

    /// Scores `user` (with `set`, owned anywhere) against the owned members of its buckets.
    /// With `offer`, each member's buffer is offered `user`'s new score, and holders of `user`
    /// that are no longer candidates drop it; members whose buffer is no longer exact are
    /// returned as stale (never users marked changed: their buffers are rebuilt anyway).
    pub(crate) fn probe(&mut self, user: u64, set: &[u64], offer: bool) -> ProbeResult {
        let mut scratch = std::mem::take(&mut self.scratch);
        let (h, me) = (mix(user), self.index.get(user).copied());
        keys_into(self.mode, set, &mut scratch.keys);
        let p = scratch.next_probe(self.slots.len());
        let met = &mut scratch.met;
        met.clear();
        // Memory latency, not arithmetic, bounds a probe (its buckets and candidates are
        // scattered over the state): each phase below first prefetches the lines of
        // all its items, so that their cache misses overlap, then works on them.
        for m in self.prefetched_buckets(scratch.keys.iter(), h) {
            m.nearest(h, me, self.quota, met);
        }
        let (found, stamps) = (&mut scratch.found, &mut scratch.stamps);
        // Each member is kept the first time it is met. The stamps are scattered: all are
        // prefetched first, then each is kept or skipped without a branch (one on a stamp
        // still missing, guessed wrong, would wait for it).
        for &s in met.iter() {
            prefetch(&stamps[s as usize]);
        }
        found.clear();
        found.resize(met.len(), 0);
        let mut kept = 0;
        for &s in met.iter() {
            let seen = &mut stamps[s as usize][0];
            let new = *seen != p;
            *seen = p;
            found[kept] = s;
            kept += usize::from(new);
        }
        found.truncate(kept);
        // The owned users whose buffer holds `user` now: a candidate outside them whose
        // score does not beat its buffer's bound leaves the buffer as it is.
        let held = &mut scratch.held;
        held.clear();
        if offer && let Some(h) = self.holders.get(user) {
            held.extend_from_slice(h);
            for &s in held.iter() {
                stamps[s as usize][1] = p;
            }
        }
        let mut mine = std::mem::take(&mut scratch.mine);
        mine.clear();
        let mut result = ProbeResult::default();
        // The slots, then (once their lines are on their way) their sets when on the heap
        // (over four campaigns) and the buffers of the holders (an offer to a holder scans
        // its items).
        for &s in found.iter() {
            prefetch(&self.slots[s as usize]);
        }
        for &s in held.iter() {
            prefetch(&self.slots[s as usize].buffer.items);
        }
        for &s in found.iter() {
            prefetch_set(&self.slots[s as usize].set);
        }
        for &s in held.iter() {
            self.slots[s as usize].buffer.prefetch_items();
        }
        // Offers are made after every candidate is scored (an offer changes only its own
        // buffer and the holder lists, which scoring does not read), so that the buffers they
        // change are prefetched together first.
        let offers = &mut scratch.offers;
        offers.clear();
        let matcher = SetMatcher::new(set);
        for &s in found.iter() {
            let slot = &self.slots[s as usize];
            let x = slot.user;
            let n = matcher.neighbor(x, &slot.set);
            if let Some(n) = n {
                mine.push(n);
            }
            if offer && !self.is_changed(s) {
                let theirs = n.map(|n| Neighbor { user_id: user, ..n });
                let holds = stamps[s as usize][1] == p;
                let changes = if holds {
                    slot.buffer.would_change(user, theirs)
                } else {
                    theirs.is_some_and(|t| slot.buffer.tau().is_none_or(|tau| t < tau))
                };
                if changes {
                    offers.push((s, theirs));
                }
            }
        }
        self.prefetch_buffers(offers.iter().map(|&(s, _)| s));
        // Then the holder lists of the items that full buffers may evict.
        let cap = self.cap;
        let slots = &self.slots;
        self.prefetch_holders(offers.iter().filter_map(|&(s, _)| {
            let items = &slots[s as usize].buffer.items;
            items
                .last()
                .filter(|_| items.len() >= cap)
                .map(|worst| worst.user_id)
        }));
        for &(s, theirs) in offers.iter() {
            self.offer(s, user, theirs, &mut result.stale);
        }
        if offer {
            // Holders that did not find `user` among their candidates any more.
            for &s in held.iter() {
                if stamps[s as usize][0] != p && !self.is_changed(s) {
                    self.offer(s, user, None, &mut result.stale);
                }
            }
        }
        self.scratch = scratch;
        result.tau = best_first(&mut mine, self.cap);
        // The answer is sent to the owner with those of every other probe of the epoch (tens
        // of thousands in flight at a pane close): an exact copy, not the scratch's capacity.
        result.items = mine.to_vec();
        self.scratch.mine = mine;
        result.stale.sort_unstable();
        result.stale.dedup();
        result
    }

    /// Offers `user`'s score `n` to the buffer of slot `s` (a change: see
    /// [`Buffer::would_change`]).
    fn offer(&mut self, s: u32, user: u64, n: Option<Neighbor>, stale: &mut Vec<u64>) {
        self.touch(s);
        let (cap, k) = (self.cap, self.k);
        let slot = &mut self.slots[s as usize];
        let delta = slot.buffer.offer(user, n, cap);
        let (x, exact) = (slot.user, slot.buffer.exact(k));
        if let Some(v) = delta.left {
            self.unhold(s, v);
        }
        if let Some(v) = delta.came {
            self.hold(s, v);
        }
        if !exact {
            stale.push(x);
        }
    }

    /// Slot `s`'s buffer now holds `v`.
    fn hold(&mut self, s: u32, v: u64) {
        let h = self.holders.get_or_default(v);
        push_at(h, h.len(), s, usize::MAX);
    }

    /// Slot `s`'s buffer no longer holds `v`.
    fn unhold(&mut self, s: u32, v: u64) {
        if let Some(h) = self.holders.get_mut(v) {
            if let Some(at) = h.iter().position(|y| *y == s) {
                h.swap_remove(at);
                shrink_if_sparse(h);
            }
            if h.is_empty() {
                self.holders.remove(v);
            }
        }
    }

    /// Remembers slot `s`'s top `k` before its first change since the last
    /// [`State::drain_dirty`].
    fn touch(&mut self, s: u32) {
        let slot = &mut self.slots[s as usize];
        if !slot.dirty {
            slot.dirty = true;
            let top = slot.buffer.top(self.k);
            let at = u32::try_from(self.dirty_tops.len()).expect("under 2^32 items per epoch");
            self.dirty.push(Dirty {
                user: slot.user,
                slot: s,
                at,
                len: top.len() as u32,
            });
            self.dirty_tops.extend_from_slice(top);
        }
    }

    /// Calls `f(user, before, now)` for each owned user whose buffer changed since the last
    /// call and whose top `k` differs (before: its top `k` before the first change; now: its
    /// top `k` now, empty if the user left). Users come in ascending order.
    pub(crate) fn drain_dirty(&mut self, mut f: impl FnMut(u64, &[Neighbor], &[Neighbor])) {
        let mut dirty = std::mem::take(&mut self.dirty);
        // A user whose slot was freed and taken again is listed twice: its first list is
        // the one before (the earlier entry's arena position is smaller, or equal when the
        // later list is empty, as is the earlier one then). An unstable sort allocates no
        // merge buffer.
        dirty.sort_unstable_by_key(|d| (d.user, d.at));
        dirty.dedup_by_key(|d| d.user);
        // The slots are scattered: a batch's slots and items are prefetched together first.
        for batch in dirty.chunks(PRELOAD_BATCH) {
            self.prefetch_buffers(batch.iter().map(|d| d.slot));
            for d in batch {
                self.emit_dirty(d, &mut f);
            }
        }
        dirty.clear();
        self.dirty = dirty;
        self.dirty_tops.clear();
    }

    /// The call of [`State::drain_dirty`] for one user.
    fn emit_dirty(&mut self, d: &Dirty, f: &mut impl FnMut(u64, &[Neighbor], &[Neighbor])) {
        let before = &self.dirty_tops[d.at as usize..(d.at + d.len) as usize];
        // The slot noted at the first change, unless the user left it since (a freed
        // slot has no set); then the index says where the user is now, if anywhere.
        let noted = &self.slots[d.slot as usize];
        let slot = if noted.user == d.user && !noted.set.is_empty() {
            Some(d.slot)
        } else {
            self.index.get(d.user).copied()
        };
        let now: &[Neighbor] = match slot {
            Some(s) => {
                let slot = &mut self.slots[s as usize];
                slot.dirty = false;
                slot.buffer.top(self.k)
            }
            None => &[],
        };
        if now != before {
            f(d.user, before, now);
        }
    }

    /// Replaces an owned user's buffer (a user without a set has none: an empty buffer for
    /// it is a no-op).
    pub(crate) fn set_buffer(&mut self, x: u64, buffer: Buffer) {
        let Some(&s) = self.index.get(x) else {
            debug_assert!(buffer.items.is_empty(), "a buffer for a user without a set");
            return;
        };
        self.touch(s);
        let before = std::mem::replace(&mut self.slots[s as usize].buffer, buffer);
        let after = &self.slots[s as usize].buffer.items;
        let came: SmallVec<[u64; 32]> = after
            .iter()
            .map(|m| m.user_id)
            .filter(|v| !before.items.iter().any(|b| b.user_id == *v))
            .collect();
        let left: SmallVec<[u64; 32]> = before
            .items
            .iter()
            .map(|m| m.user_id)
            .filter(|v| !after.iter().any(|a| a.user_id == *v))
            .collect();
        // Their holder lists are scattered: prefetched together first.
        self.prefetch_holders(left.iter().chain(&came).copied());
        for v in left {
            self.unhold(s, v);
        }
        for v in came {
            self.hold(s, v);
        }
    }

    /// Buffer capacity.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// The live slots.
    #[cfg(test)]
    fn live(&self) -> impl Iterator<Item = &Slot> {
        self.index.values().map(|s| &self.slots[*s as usize])
    }

    /// Records held: set elements, bucket entries, buffer items and holder entries (for
    /// tests and metrics: the state is proportional to users, never to events or panes).
    #[cfg(test)]
    pub(crate) fn records(&self) -> usize {
        self.live()
            .map(|s| s.set.len() + s.buffer.items.len())
            .sum::<usize>()
            + self.buckets.values().map(Members::len).sum::<usize>()
            + self.holders.values().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::similarity::neighbor;

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
        assert_eq!(b.tau(), Some(n(2, 1, 4)));
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
        assert_eq!(b3.tau(), Some(n(4, 2, 4)));
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
                // As the loop does: a user that leaves loses its buffer; otherwise the buffer
                // is kept (stale, offered nothing while marked) until the probe's answer
                // replaces it.
                if set.is_empty() {
                    st.set_buffer(user, Buffer::default());
                }
                st.replace_set(user, set.clone());
                st.mark_changed(user);
                let stale = st.probe(user, &set, true).stale;
                assert!(!stale.contains(&user), "a changed user is never stale");
                if !set.is_empty() {
                    let r = st.probe(user, &set, false);
                    st.set_buffer(user, Buffer::merge([(r.items, r.tau)], st.cap()));
                }
                for x in stale {
                    let sx = st.set(x).to_vec();
                    let r = st.probe(x, &sx, false);
                    st.set_buffer(x, Buffer::merge([(r.items, r.tau)], st.cap()));
                }
                st.clear_changed();
                if step % 500 == 499 {
                    let keys: usize = st.live().map(|s| st.keys(&s.set).len()).sum();
                    let entries: usize = st.buckets.values().map(Members::len).sum();
                    assert_eq!(entries, keys, "bucket entries of live sets only");
                    let items: usize = st.live().map(|s| s.buffer.items.len()).sum();
                    let held: usize = st.holders.values().map(Vec::len).sum();
                    assert_eq!(held, items, "one holder entry per buffer item");
                    assert!(
                        st.live().all(|s| !s.set.is_empty()),
                        "live slots have a set"
                    );
                    assert_eq!(st.index.len() + st.free.len(), st.slots.len());
                    assert!(
                        st.free.iter().all(|f| {
                            let s = &st.slots[*f as usize];
                            s.set.is_empty() && s.buffer == Buffer::default()
                        }),
                        "free slots hold nothing"
                    );
                    assert!(
                        st.live().all(|s| s.buffer.items.capacity() <= st.cap()),
                        "a buffer never allocates beyond its capacity (it lives as long as its user)"
                    );
                    let elements: usize = st.live().map(|s| s.set.len()).sum();
                    assert_eq!(st.records(), elements + entries + 2 * items);
                    // Every buffered score is exact against the current sets.
                    for x in st.live() {
                        for m in &x.buffer.items {
                            assert_eq!(Some(*m), neighbor(m.user_id, &x.set, st.set(m.user_id)));
                        }
                    }
                }
            }
            assert!(st.index.len() > 200, "users stay active");
        }
    }

    /// Probe stamps wrap around after 2^32 probes: every stamp is forgotten then, and probes
    /// find what they found before.
    #[test]
    fn probe_stamps_survive_their_wraparound() {
        let mut st = State::new(SimilarityMode::Exact, 2, 1);
        for u in 0..40u64 {
            st.replace_set(u, vec![u % 3, 3 + u % 5]);
        }
        let answer = |st: &mut State| {
            let r = st.probe(7, &[1, 5], false);
            (r.items, r.tau)
        };
        let before = answer(&mut st);
        assert!(before.1.is_some(), "more candidates than the buffer holds");
        st.scratch.probe = u32::MAX - 1;
        for _ in 0..3 {
            assert_eq!(answer(&mut st), before);
        }
        assert_eq!(st.scratch.probe, 2, "wrapped past zero");
    }

    #[test]
    fn a_slot_is_two_cache_lines() {
        assert_eq!(std::mem::size_of::<Slot>(), 128);
        let bound = std::mem::offset_of!(Slot, buffer) + std::mem::offset_of!(Buffer, bound);
        assert_eq!(
            bound + std::mem::size_of::<Neighbor>(),
            64,
            "user, set and bound"
        );
    }

    /// The members nearest `h` in the ring `ring` (sorted): what [`Members::nearest`] takes.
    fn ring_nearest(ring: &[Entry], h: u64, quota: usize) -> Vec<u32> {
        let n = ring.len();
        let at = ring.partition_point(|e| e.0 < h);
        let others: Vec<u32> = ring.iter().filter(|e| e.0 != h).map(|e| e.1).collect();
        if others.len() <= quota {
            return others;
        }
        let mut out = Vec::new();
        let walks = (0..n).flat_map(|i| [ring[(at + i) % n], ring[(at + n - i - 1) % n]]);
        for e in walks.filter(|e| e.0 != h) {
            if out.len() == quota {
                break;
            }
            out.push(e.1);
        }
        out
    }

    #[test]
    fn large_buckets_walk_the_same_ring_through_bin_splits_and_merges() {
        // Slot `u` holds user `u`.
        let e = |u: u64| (mix(u), u as u32);
        let hash_of = |s: u32| mix(u64::from(s));
        let mut m = Members::One(1);
        let mut ring = vec![e(1)];
        // Members join in one order and leave in another; the bins double and halve.
        let joins: Vec<u64> = (2..300u64).collect();
        let mut leaves: Vec<u64> = joins.clone();
        leaves.sort_unstable_by_key(|u| mix(u ^ 77));
        let steps = joins
            .iter()
            .map(|u| (*u, true))
            .chain(leaves.iter().map(|u| (*u, false)));
        let (mut splits, mut merges, mut bits) = (0, 0, 0);
        for (i, (u, join)) in steps.enumerate() {
            if join {
                m.insert(e(u), hash_of);
                ring.push(e(u));
                ring.sort_unstable();
            } else {
                assert!(!m.remove(e(u)));
                ring.retain(|x| *x != e(u));
            }
            assert_eq!(m.len(), ring.len());
            if let Members::Many(b) = &m {
                assert_eq!(b.bins.len(), 1 << b.bits);
                assert!(b.len <= BIN_MAX << b.bits && (b.bits == 0 || b.len >= BIN_MIN << b.bits));
                for (at, bin) in b.bins.iter().enumerate() {
                    assert!(bin.windows(2).all(|w| w[0] < w[1]), "sorted");
                    assert!(bin.iter().all(|x| b.bin(x.0) == at), "in its bin");
                }
                assert_eq!(b.iter().copied().collect::<Vec<_>>(), ring);
                match b.bits.cmp(&bits) {
                    std::cmp::Ordering::Greater => splits += 1,
                    std::cmp::Ordering::Less => merges += 1,
                    std::cmp::Ordering::Equal => {}
                }
                bits = b.bits;
            }
            if i % 5 != 0 {
                continue;
            }
            // From members (first, last and inside in hash order) and from outsiders.
            let from = [0, ring.len() / 2, ring.len() - 1].map(|at| ring[at].0);
            for h in from
                .into_iter()
                .chain([mix(1_000), mix(1_001), 0, u64::MAX])
            {
                let me = ring.iter().find(|x| x.0 == h).map(|x| x.1);
                let mut out = Vec::new();
                m.nearest(h, me, 10, &mut out);
                let others = ring.len() - usize::from(me.is_some());
                assert_eq!(out.len(), others.min(10));
                // The same members in the same order (alternately after and before).
                assert_eq!(out, ring_nearest(&ring, h, 10), "step {i}, from {h:x}");
            }
        }
        assert!(
            splits >= 5 && merges >= 5,
            "splits {splits}, merges {merges}"
        );
        assert!(matches!(m, Members::One(1)));
    }

    #[test]
    fn nearest_takes_a_bounded_ring_neighborhood() {
        // Slot `u` holds user `u`.
        let e = |u: u64| (mix(u), u as u32);
        let hash_of = |s: u32| mix(u64::from(s));
        let mut m = Members::One(1);
        for u in 2..500u64 {
            m.insert(e(u), hash_of);
        }
        assert!(matches!(m, Members::Many(_)));
        let mut out = Vec::new();
        // The ring neighborhood: the 5 members after a member and the 5 before, in hash
        // order, wrapping around (the first and last members in hash order included).
        let mut ring: Vec<(u64, u32)> = (1..500u64).map(e).collect();
        ring.sort_unstable();
        for at in [0, 1, 7, 250, 497, 498] {
            let me = ring[at].1;
            out.clear();
            m.nearest(mix(u64::from(me)), Some(me), 10, &mut out);
            assert_eq!(out.len(), 10);
            assert!(!out.contains(&me));
            let mut want: Vec<u32> = (1..=5)
                .flat_map(|i| [ring[(at + i) % 499].1, ring[(at + 499 - i) % 499].1])
                .collect();
            want.sort_unstable();
            out.sort_unstable();
            assert_eq!(out, want, "member at {at}");
        }
        // The same from a user that is not a member.
        out.clear();
        m.nearest(mix(1000), None, 10, &mut out);
        assert_eq!(out.len(), 10);
        for u in 2..500u64 {
            assert!(!m.remove(e(u)));
        }
        assert!(matches!(m, Members::One(1)));
        assert!(m.remove(e(1)), "the last member leaves");
        let mut m = Members::One(1);
        m.insert(e(2), hash_of);
        out.clear();
        m.nearest(mix(7), None, 10, &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![1, 2]);
    }
}
