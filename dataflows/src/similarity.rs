//! User–user similarity: the top-K users by Jaccard similarity of their interaction sets.

mod rounds;
mod state;
mod table;

use differential_dataflow::VecCollection;
use eddy_core::{Neighbor, SimilarUsers, UserCampaigns};
use eddy_operators::Epoch;

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
    /// How long the loop works before it yields its worker (`similarity.slice_us`).
    pub slice: std::time::Duration,
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
            slice: std::time::Duration::from_micros(cfg.slice_us),
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
    neighbor_of(other, mine.len(), theirs.len(), merge_count(mine, theirs))
}

fn neighbor_of(other: u64, mine: usize, theirs: usize, shared: u32) -> Option<Neighbor> {
    (shared > 0).then(|| Neighbor {
        user_id: other,
        shared,
        union: (mine + theirs) as u32 - shared,
    })
}

/// `|a ∩ b|` of two sorted sets, by a branch-free merge.
fn merge_count(a: &[u64], b: &[u64]) -> u32 {
    let (mut i, mut j, mut shared) = (0, 0, 0u32);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        shared += u32::from(x == y);
        i += usize::from(x <= y);
        j += usize::from(y <= x);
    }
    shared
}

/// Campaigns of a probed set held in a fixed array, at most this many.
const SMALL_SET: usize = 8;

/// A larger set's hash table has at least this many slots per campaign (at most a quarter
/// of the slots are used: a lookup of a campaign not in the set mostly meets an empty slot).
const TABLE_SPREAD: usize = 4;

/// A probed set prepared to be scored against many candidates: [`SetMatcher::neighbor`] is
/// [`neighbor`] with `mine` the prepared set. This is the inner loop of every probe. A merge
/// waits at each step for the previous comparison (which side advances), for every campaign
/// of both sets. Here each campaign of the candidate is looked up on its own: a set of up to
/// eight campaigns is held in a fixed array and compared with all eight at once; a larger one
/// is an open-addressing hash table with an occupancy bitmap, a quarter full at most.
///
/// ```
/// use eddy_dataflows::similarity::{SetMatcher, neighbor};
/// let mine = [3, 5, 8];
/// let m = SetMatcher::new(&mine);
/// assert_eq!(m.neighbor(7, &[1, 5, 8, 9]), neighbor(7, &mine, &[1, 5, 8, 9]));
/// assert_eq!(m.neighbor(7, &[1, 5, 8, 9]).map(|n| (n.shared, n.union)), Some((2, 5)));
/// assert_eq!(m.neighbor(7, &[4]), None);
/// ```
#[derive(Debug, Clone)]
pub struct SetMatcher<'a> {
    set: &'a [u64],
    form: Form,
}

#[derive(Debug, Clone)]
enum Form {
    Empty,
    /// The set padded with copies of its first campaign (1..=[`SMALL_SET`] campaigns).
    Small([u64; SMALL_SET]),
    /// The campaigns by multiplicative hash (the top `bits` bits of `c × φ`), linear probing.
    Table {
        bits: u32,
        keys: Box<[u64]>,
        /// Bit `i` set: slot `i` holds a campaign.
        used: Box<[u64]>,
    },
}

/// In a [`Form::Table`] of `2^bits` slots: `Ok(slot)` of campaign `c`, or `Err(slot)`, the
/// empty slot where it would go (linear probing from its home, the top `bits` bits of `c × φ`).
#[inline]
fn locate(bits: u32, keys: &[u64], used: &[u64], c: u64) -> Result<usize, usize> {
    let mask = (1 << bits) - 1;
    let mut i = (c.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize;
    while used[i / 64] & (1 << (i % 64)) != 0 {
        if keys[i] == c {
            return Ok(i);
        }
        i = (i + 1) & mask;
    }
    Err(i)
}

impl<'a> SetMatcher<'a> {
    /// Prepares `set` (sorted, without duplicates).
    pub fn new(set: &'a [u64]) -> Self {
        let form = match set.len() {
            0 => Form::Empty,
            1..=SMALL_SET => {
                let mut a = [set[0]; SMALL_SET];
                a[..set.len()].copy_from_slice(set);
                Form::Small(a)
            }
            n => {
                let bits = (n * TABLE_SPREAD)
                    .next_power_of_two()
                    .max(64)
                    .trailing_zeros();
                let (mut keys, mut used) = (vec![0; 1 << bits], vec![0u64; (1 << bits) / 64]);
                for &c in set {
                    // The set has no duplicates: every campaign finds an empty slot.
                    if let Err(i) = locate(bits, &keys, &used, c) {
                        keys[i] = c;
                        used[i / 64] |= 1 << (i % 64);
                    }
                }
                Form::Table {
                    bits,
                    keys: keys.into(),
                    used: used.into(),
                }
            }
        };
        Self { set, form }
    }

    /// The neighbor record of `other`, whose set is `theirs` (sorted, without duplicates),
    /// or `None` if they share nothing.
    #[inline]
    pub fn neighbor(&self, other: u64, theirs: &[u64]) -> Option<Neighbor> {
        // `theirs` has no duplicates, so each shared campaign counts once.
        let shared = match &self.form {
            Form::Empty => 0,
            // The padding repeats a campaign of the set, which changes no membership.
            Form::Small(a) => theirs
                .iter()
                .map(|&y| u32::from(a.iter().fold(false, |hit, &x| hit | (x == y))))
                .sum(),
            Form::Table { bits, keys, used } => theirs
                .iter()
                .filter(|&&y| locate(*bits, keys, used, y).is_ok())
                .count() as u32,
        };
        neighbor_of(other, self.set.len(), theirs.len(), shared)
    }
}

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
/// epoch runs a loop of rounds (a timely iterative scope, `similarity/rounds.rs`):
/// 0. owners apply the epoch's set changes and move bucket entries;
/// 1. each changed user is probed on every worker: its set is scored against the owned members
///    of its buckets; each such member's buffer is offered the new score (holders of the user
///    that are no longer candidates drop it); the worker answers the owner with its best `2k`
///    and a bound on the rest;
/// 2. owners rebuild changed users' buffers from the answers; users whose buffer can no longer
///    prove its top `k` exact (a neighbor's score fell below the bound on the others) are
///    probed again, without offers;
/// 3. their owners rebuild those buffers; the lists are final and emitted.
///
/// A buffer proves its top `k` when its `k`-th item ranks before every candidate outside it,
/// so a change costs one probe (O(candidates of the changed user)) and rarely a recompute,
/// never a rescan of every pair; the state is O(users × (set + bands + 2k)).
pub fn similar_users<'scope>(
    pairs: VecCollection<'scope, Epoch, (u64, u64), isize>,
    params: SimilarityParams,
) -> VecCollection<'scope, Epoch, SimilarUsers, isize> {
    rounds::similarity_loop(pairs, params, false).similar
}

/// Similar users ([`similar_users`]) and each user's interaction set (the `pairs` grouped by
/// user, ascending: `SELECT user_id, array_agg(campaign_id ORDER BY campaign_id) FROM
/// interactions GROUP BY user_id`) from one similarity loop: what `build` runs, and what
/// recommendations are ranked from at read time ([`eddy_core::recommend`], see
/// [`crate::recommendations`]). A set is emitted by the worker that owns its user, when it
/// changes, at the epoch the similar users reflect it.
pub fn similar_users_and_sets<'scope>(
    pairs: VecCollection<'scope, Epoch, (u64, u64), isize>,
    params: SimilarityParams,
) -> (
    VecCollection<'scope, Epoch, SimilarUsers, isize>,
    VecCollection<'scope, Epoch, UserCampaigns, isize>,
) {
    let out = rounds::similarity_loop(pairs, params, true);
    (out.similar, out.sets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interactions::{InteractionParams, interactions};
    use crate::testing::{StreamShape, accept, as_of, oracle_sets, oracle_similar, run, stream};
    use eddy_core::WindowSpec;

    const PANE: i64 = 1_000;
    const SLIDING: i64 = 3_000;
    /// A slice no round of these tests outlasts: the loop never yields.
    const UNSLICED: std::time::Duration = std::time::Duration::from_secs(3600);
    /// The loop yields after every unit of work.
    const ALWAYS_YIELD: std::time::Duration = std::time::Duration::ZERO;

    /// A sorted set without duplicates of up to `max` campaigns of `0..universe`, from `seed`.
    fn random_set(seed: u64, max: u64, universe: u64) -> Vec<u64> {
        let len = mix(seed) % (max + 1);
        let mut set: Vec<u64> = (0..len)
            .map(|i| mix(seed ^ (i + 1) << 8) % universe)
            .collect();
        set.sort_unstable();
        set.dedup();
        set
    }

    #[test]
    fn the_set_matcher_scores_as_the_merge_does() {
        // Sizes on both sides of the fixed array (0..=40 against 8), from small universes so
        // that sets share campaigns (and tables collide), and from a large one so that they
        // rarely do.
        for universe in [16, 64, 1 << 40] {
            for a in 0..400u64 {
                let mine = random_set(a, 40, universe);
                let matcher = SetMatcher::new(&mine);
                for b in 0..50u64 {
                    let theirs = random_set(a * 1_000 + b + 7, 12, universe);
                    let by_merge = neighbor(b, &mine, &theirs);
                    assert_eq!(
                        matcher.neighbor(b, &theirs),
                        by_merge,
                        "{mine:?} {theirs:?}"
                    );
                    let shared = mine.iter().filter(|c| theirs.contains(c)).count() as u32;
                    assert_eq!(by_merge.map_or(0, |n| n.shared), shared);
                }
            }
        }
    }

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

    /// Few users and campaigns: sets overlap a lot, buffers lose their proof often.
    fn dense() -> StreamShape {
        StreamShape {
            users: 25,
            campaigns: 6,
            ..shape()
        }
    }

    fn exact(k: usize, slice: std::time::Duration) -> SimilarityParams {
        SimilarityParams {
            k,
            mode: SimilarityMode::Exact,
            slice,
        }
    }

    #[test]
    fn exact_mode_matches_oracle() {
        let p = exact(4, UNSLICED);
        run_similar(1, 1, p, shape());
        run_similar(2, 3, p, shape());
        run_similar(5, 2, p, shape());
        run_similar(6, 4, p, shape());
    }

    /// k = 1 keeps a buffer of two: neighbors' scores fall below the bound all the time, so
    /// the recompute rounds (2 and 3) run in most epochs, and the answer must stay exact.
    #[test]
    fn exact_mode_stays_exact_when_buffers_run_dry() {
        let p = exact(1, UNSLICED);
        for (seed, workers) in [(11, 1), (12, 2), (13, 3), (14, 4)] {
            run_similar(seed, workers, p, dense());
        }
        let p2 = SimilarityParams { k: 2, ..p };
        run_similar(15, 2, p2, shape());
    }

    /// A round resumed after every unit of work (every batch of users, of probes, of merges)
    /// computes what an unsliced one does: the exact lists, through the stale-buffer rounds too.
    #[test]
    fn exact_mode_stays_exact_when_every_round_yields() {
        let p = exact(4, ALWAYS_YIELD);
        run_similar(1, 1, p, shape());
        run_similar(6, 4, p, shape());
        let p1 = exact(1, ALWAYS_YIELD);
        run_similar(12, 2, p1, dense());
        run_similar(13, 3, p1, dense());
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
            slice: UNSLICED,
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
