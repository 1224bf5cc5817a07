//! Campaign recommendations: what similar users engaged with, ranked by similarity × score.

use crate::similarity::{SimilarityParams, similar_users_and_recommendations};
use differential_dataflow::VecCollection;
use eddy_core::{Score, UserRecommendations};
use eddy_operators::Epoch;

/// For each user `u`, the top `n` campaigns that `u`'s similar users engaged with (in their
/// interaction sets) and `u` has not, ranked by `Σ jaccard(u, v) × score(c)` over those
/// similar users `v`, best first (ties by lower campaign id), each with its explanation:
///
/// ```sql
/// SELECT s.user_id, i.campaign_id,
///        sum(s.jaccard) * c.score AS score, c.score AS campaign_score,
///        array_agg(s.other ORDER BY s.jaccard DESC, s.other) AS because
/// FROM similar s                                   -- similar_users, flattened
/// JOIN interactions i ON i.user_id = s.other
/// JOIN settled c ON c.campaign_id = i.campaign_id  -- engagement's settled scores
/// WHERE (s.user_id, i.campaign_id) NOT IN (SELECT user_id, campaign_id FROM interactions)
/// GROUP BY s.user_id, i.campaign_id, c.score
/// QUALIFY row_number() OVER (PARTITION BY s.user_id ORDER BY score DESC, campaign_id) <= :n;
/// ```
///
/// The campaign score is the *settled* one (over the closed panes of the sliding window):
/// it changes at most once per pane, so a popular campaign re-ranks the users who could be
/// recommended it once per window instead of once per epoch. A campaign with no closed pane
/// in the window yet is not recommended. Users with nothing to recommend have no row.
///
/// Plan: computed inside the similarity loop (`similarity/rounds.rs`), on the worker that owns
/// `u`, once `u`'s top-K list is final for the epoch: the owner fetches the sets of `u`'s
/// similar users from their owners (two rounds) and caches them; settled scores (one per
/// campaign) are held by every worker. A user is re-ranked when its list, its set, a similar
/// user's set, or a campaign's settled score changes; the previous answer is recomputed from
/// the previous inputs rather than stored, so the state per user is its neighbors' sets.
/// Build it with [`crate::similarity::similar_users_and_recommendations`] to share the loop
/// with the similar users (this function runs a loop of its own).
pub fn recommendations<'scope>(
    interactions: VecCollection<'scope, Epoch, (u64, u64), isize>,
    settled: VecCollection<'scope, Epoch, (u64, Score), isize>,
    params: SimilarityParams,
    n: usize,
) -> VecCollection<'scope, Epoch, UserRecommendations, isize> {
    similar_users_and_recommendations(interactions, settled, params, n).1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engagement::{EngagementParams, engagement};
    use crate::interactions::{InteractionParams, interactions};
    use crate::similarity::SimilarityMode;
    use crate::testing::{StreamShape, accept, as_of, oracle_sets, oracle_similar, run, stream};
    use eddy_core::{Event, EventType, Recommendation, Weights, WindowSpec};
    use std::collections::BTreeMap;

    const PANE: i64 = 1_000;
    const SLIDING: i64 = 4_000;
    const K: usize = 3;
    const N: usize = 4;

    fn weights() -> Weights {
        Weights {
            view: 1.0,
            click: 5.0,
            conversion: 25.0,
        }
    }

    /// From scratch: settled scores, exact similarity, then the ranking.
    fn oracle(events: &[Event], w: i64) -> Vec<UserRecommendations> {
        let pane = WindowSpec::new(PANE);
        let sets = oracle_sets(events, w, pane, SLIDING, false, true);
        let similar = oracle_similar(&sets, K);
        let mut counts: BTreeMap<u64, [u64; 3]> = BTreeMap::new();
        for e in events {
            let start = pane.start(e.ts_ms);
            if start + PANE <= w && start + SLIDING > w {
                let slot = counts.entry(e.campaign_id).or_default();
                slot[match e.event_type {
                    EventType::View => 0,
                    EventType::Click => 1,
                    EventType::Conversion => 2,
                }] += 1;
            }
        }
        let score = |c: &u64| counts.get(c).map(|s| weights().score(s[0], s[1], s[2]));
        let mut out = Vec::new();
        for s in similar {
            let mine = &sets[&s.user_id];
            let mut per_campaign: BTreeMap<u64, Vec<eddy_core::Neighbor>> = BTreeMap::new();
            for nb in &s.neighbors {
                for c in &sets[&nb.user_id] {
                    if !mine.contains(c) && score(c).is_some() {
                        per_campaign.entry(*c).or_default().push(*nb);
                    }
                }
            }
            let mut items: Vec<Recommendation> = per_campaign
                .into_iter()
                .map(|(c, because)| {
                    let campaign_score = score(&c).unwrap();
                    let mut total = 0.0;
                    for nb in &because {
                        total += nb.shared as f64 / nb.union as f64;
                    }
                    Recommendation {
                        campaign_id: c,
                        score: Score(total * campaign_score.0),
                        campaign_score,
                        because,
                    }
                })
                .collect();
            items.sort_by(|a, b| {
                b.score
                    .0
                    .partial_cmp(&a.score.0)
                    .unwrap()
                    .then(a.campaign_id.cmp(&b.campaign_id))
            });
            items.truncate(N);
            if !items.is_empty() {
                out.push(UserRecommendations {
                    user_id: s.user_id,
                    items,
                });
            }
        }
        out
    }

    fn check(seed: u64, workers: usize) {
        let shape = StreamShape {
            users: 30,
            campaigns: 12,
            max_per_epoch: 40,
            click: 0.35,
            conversion: 0.1,
            other_amounts: 0.0,
        };
        let (accepted, marks) = accept(&stream(seed, 70, shape), WindowSpec::new(PANE), 400);
        let updates = run(workers, &accepted, &marks, |events, marks| {
            let pane = WindowSpec::new(PANE);
            let pairs = interactions(
                events.clone(),
                marks.clone(),
                InteractionParams {
                    pane,
                    sliding_ms: SLIDING,
                    views_are_interest: false,
                    emit: eddy_operators::Emit::OnClose,
                },
            );
            let scores = engagement(
                events,
                marks,
                EngagementParams {
                    pane,
                    sliding_ms: SLIDING,
                    weights: weights(),
                    top_k: 5,
                },
            );
            let params = SimilarityParams {
                k: K,
                mode: SimilarityMode::Exact,
            };
            recommendations(pairs, scores.settled, params, N)
        });
        let mut all = Vec::new();
        let mut items = 0;
        for (epoch, batch) in accepted.iter().enumerate() {
            all.extend(batch.iter().copied());
            let want = oracle(&all, marks[epoch]);
            items += want.iter().map(|r| r.items.len()).sum::<usize>();
            assert_eq!(
                as_of(&updates, epoch as Epoch),
                want,
                "seed {seed} epoch {epoch}"
            );
        }
        assert!(
            items > 300,
            "the stream exercises recommendations ({items})"
        );
    }

    #[test]
    fn matches_oracle_one_worker() {
        check(1, 1);
        check(2, 1);
    }

    #[test]
    fn matches_oracle_several_workers() {
        check(3, 3);
    }

    /// A similar user's set can change without changing the similarity (a campaign swapped
    /// for another that the user does not share): the recommendations must follow the new set.
    #[test]
    fn follow_a_neighbors_set_even_when_the_similarity_stays() {
        use differential_dataflow::input::Input;
        use std::sync::{Arc, Mutex};
        for workers in [1, 2] {
            let got: Arc<Mutex<Vec<(UserRecommendations, Epoch, isize)>>> = Arc::default();
            let got2 = got.clone();
            timely::execute(timely::Config::process(workers), move |worker| {
                let got3 = got2.clone();
                let (mut pairs, mut scores, probe) = worker.dataflow::<Epoch, _, _>(|scope| {
                    let (pairs_in, pairs) = scope.new_collection::<(u64, u64), isize>();
                    let (scores_in, scores) = scope.new_collection::<(u64, Score), isize>();
                    let params = SimilarityParams {
                        k: 2,
                        mode: SimilarityMode::Exact,
                    };
                    let (probe, _) = recommendations(pairs, scores, params, 3)
                        .inspect(move |x| got3.lock().unwrap().push(x.clone()))
                        .probe();
                    (pairs_in, scores_in, probe)
                });
                if worker.index() == 0 {
                    for c in 1..=4 {
                        scores.insert((c, Score(c as f64)));
                    }
                    // u1 {1, 2}, u2 {1, 3}: u1 is recommended 3 because of u2 (1 of 3 shared).
                    for p in [(1, 1), (1, 2), (2, 1), (2, 3)] {
                        pairs.insert(p);
                    }
                }
                pairs.advance_to(1);
                scores.advance_to(1);
                pairs.flush();
                scores.flush();
                worker.step_while(|| probe.less_than(&1));
                if worker.index() == 0 {
                    // u2 swaps 3 for 4: still 1 of 3 shared with u1.
                    pairs.remove((2, 3));
                    pairs.insert((2, 4));
                }
                pairs.advance_to(2);
                scores.advance_to(2);
                pairs.flush();
                scores.flush();
                worker.step_while(|| probe.less_than(&2));
            })
            .expect("timely runs");
            let got = got.lock().unwrap().clone();
            let campaigns = |at: Epoch| -> Vec<(u64, Vec<u64>)> {
                as_of(&got, at)
                    .into_iter()
                    .map(|r| (r.user_id, r.items.iter().map(|i| i.campaign_id).collect()))
                    .collect()
            };
            assert_eq!(
                campaigns(0),
                vec![(1, vec![3]), (2, vec![2])],
                "{workers} workers"
            );
            assert_eq!(
                campaigns(1),
                vec![(1, vec![4]), (2, vec![2])],
                "{workers} workers"
            );
        }
    }
}
