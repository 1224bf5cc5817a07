//! User–user similarity: the top-K users by Jaccard similarity of their interaction sets.

use differential_dataflow::VecCollection;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use eddy_core::{Neighbor, SimilarUsers};
use eddy_operators::{Epoch, TopKTotal};

/// `(user_id, campaign_id)` interactions arranged by user, shared by every consumer.
pub type ByUser<'scope> = Arranged<'scope, TraceAgent<ValSpine<u64, u64, Epoch, isize>>>;
/// Each user's interaction set (sorted campaign ids), arranged by user.
pub type Sets<'scope> = Arranged<'scope, TraceAgent<ValSpine<u64, Vec<u64>, Epoch, isize>>>;

/// How candidate pairs are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimilarityMode {
    /// Every pair of users sharing a campaign: exact, but O(audience²) per campaign.
    Exact,
    /// MinHash signatures with LSH banding: users whose signatures agree on every value of
    /// some band are candidates. Buckets larger than `bucket_size` are split by a hash of the
    /// user into a power-of-two number of sub-buckets of at most about `bucket_size` users, so
    /// a change costs O(bands × bucket_size), however popular a campaign is.
    MinHash {
        /// Bands.
        bands: usize,
        /// Signature values per band.
        rows: usize,
        /// Target bucket size (>= 2).
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

/// Sub-buckets for a bucket of `n` users: the power of two at or above `n / bucket_size`.
pub fn sub_buckets(n: i64, bucket_size: usize) -> u64 {
    let n = n.max(1) as u64;
    n.div_ceil(bucket_size as u64).next_power_of_two()
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

/// Interaction sets per user, from the shared by-user arrangement.
pub fn sets<'scope>(by_user: ByUser<'scope>) -> Sets<'scope> {
    by_user.reduce_abelian::<_, ValBuilder<u64, Vec<u64>, Epoch, isize>, ValSpine<u64, Vec<u64>, Epoch, isize>, _, _>(
        "InteractionSets",
        |_user, campaigns, out| out.push((campaigns.iter().map(|(c, _)| **c).collect(), 1)),
        |vec, key, upds| {
            vec.clear();
            vec.extend(upds.drain(..).map(|(v, t, r)| ((*key, v), t, r)));
        },
    )
}

/// For each user, the `k` most similar users by Jaccard similarity of their interaction sets
/// (from [`crate::interactions`]), with the number of shared campaigns:
///
/// ```sql
/// WITH sets AS (SELECT user_id, array_agg(campaign_id) AS s FROM interactions GROUP BY user_id)
/// SELECT a.user_id, b.user_id AS other, |a.s ∩ b.s| AS shared, |a.s ∪ b.s| AS union
/// FROM sets a JOIN sets b ON a.user_id <> b.user_id AND |a.s ∩ b.s| > 0
/// -- exact mode: every such pair; MinHash mode: only pairs proposed by LSH (see below)
/// QUALIFY row_number() OVER (PARTITION BY a.user_id
///                            ORDER BY shared / union DESC, other) <= :k;
/// ```
///
/// Candidate pairs come from [`SimilarityMode`]; every candidate is scored exactly from the two
/// sets, so the bounded mode can miss a neighbor but never misreports a similarity. Users with
/// identical sets always share every band, and so are always candidates unless their bucket is
/// split (then each still gets about `bucket_size` identical-set candidates per band). Users
/// with no similar user have no row.
///
/// Plan: the members of each candidate group (an LSH bucket, or a campaign's audience in exact
/// mode) are arranged once *with their sets*, so the self-join on the group scores each pair
/// where it is found. A pair found in several groups is one `(user, neighbor)` value with a
/// larger multiplicity, which the top-K reads as one value: no `distinct`, and no join back to
/// the sets. The top-K ([`TopKTotal`]) costs O(log n) per changed candidate instead of a
/// re-read of the user's every candidate.
pub fn similar_users<'scope>(
    sets: Sets<'scope>,
    params: SimilarityParams,
) -> VecCollection<'scope, Epoch, SimilarUsers, isize> {
    let groups = match params.mode {
        SimilarityMode::Exact => sets
            .flat_map_ref(|u, set| {
                let (u, set) = (*u, set.clone());
                (0..set.len()).map(move |i| ((set[i], 0), (u, set.clone())))
            })
            .arrange_by_key_named("AudienceByCampaign"),
        SimilarityMode::MinHash {
            bands,
            rows,
            bucket_size,
        } => {
            let members = sets.flat_map_ref(move |u, set| {
                let (u, set) = (*u, set.clone());
                band_keys(&set, bands, rows)
                    .into_iter()
                    .map(move |k| (k, (u, set.clone())))
            });
            let splits = members
                .clone()
                .map(|(k, _)| k)
                .count_total()
                .map(move |(k, n)| (k, sub_buckets(n as i64, bucket_size)));
            members
                .join_map(splits, |k, (u, set), subs| {
                    ((*k, mix(*u) & (subs - 1)), (*u, set.clone()))
                })
                .arrange_by_key_named("LshBuckets")
        }
    };
    let k = params.k;
    groups
        .clone()
        .join_core(groups, |_g, (u, su), (v, sv)| {
            if u == v {
                None
            } else {
                neighbor(*v, su, sv).map(|n| (*u, n))
            }
        })
        // Neighbors order best first; one found in several groups counts once.
        .top_k_total("TopSimilar", k)
        .map(|(user_id, neighbors)| SimilarUsers { user_id, neighbors })
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
            let pairs = interactions(events, marks, ip);
            let by_user = pairs.arrange_by_key();
            similar_users(sets(by_user), params)
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
        assert_eq!(sub_buckets(1, 32), 1);
        assert_eq!(sub_buckets(32, 32), 1);
        assert_eq!(sub_buckets(33, 32), 2);
        assert_eq!(sub_buckets(1000, 32), 32);
    }
}
