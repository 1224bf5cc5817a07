//! Campaign recommendations: what similar users engaged with, ranked by similarity × score.

use crate::similarity::ByUser;
use differential_dataflow::VecCollection;
use eddy_core::{
    Neighbor, Recommendation, Score, SimilarUsers, UserRecommendations, recommendation_score,
};
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
pub fn recommendations<'scope>(
    similar: VecCollection<'scope, Epoch, SimilarUsers, isize>,
    by_user: ByUser<'scope>,
    interactions: VecCollection<'scope, Epoch, (u64, u64), isize>,
    settled: VecCollection<'scope, Epoch, (u64, Score), isize>,
    n: usize,
) -> VecCollection<'scope, Epoch, UserRecommendations, isize> {
    similar
        .flat_map(|s| {
            let u = s.user_id;
            s.neighbors.into_iter().map(move |nb| (nb.user_id, (u, nb)))
        })
        .join_core(by_user, |_v, (u, nb), c| Some(((*u, *c), *nb)))
        .antijoin(interactions)
        .map(|((u, c), nb)| (c, (u, nb)))
        .join_map(settled, |c, (u, nb), score| (*u, (*c, *score, *nb)))
        .reduce_named("TopRecommendations", move |_u, input, out| {
            // Values arrive sorted by (campaign, score, neighbor): group per campaign, with the
            // neighbors best first.
            let mut items: Vec<Recommendation> = Vec::new();
            let mut i = 0;
            while i < input.len() {
                let (campaign_id, campaign_score, _) = *input[i].0;
                let mut because: Vec<Neighbor> = Vec::new();
                while i < input.len() && input[i].0.0 == campaign_id {
                    because.push(input[i].0.2);
                    i += 1;
                }
                items.push(Recommendation {
                    campaign_id,
                    score: recommendation_score(&because, campaign_score),
                    campaign_score,
                    because,
                });
            }
            items.sort_by(|a, b| {
                b.score
                    .cmp(&a.score)
                    .then(a.campaign_id.cmp(&b.campaign_id))
            });
            items.truncate(n);
            out.push((items, 1isize));
        })
        .map(|(user_id, items)| UserRecommendations { user_id, items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engagement::{EngagementParams, engagement};
    use crate::interactions::{InteractionParams, interactions};
    use crate::similarity::{SimilarityMode, SimilarityParams, similar_users};
    use crate::testing::{StreamShape, accept, as_of, oracle_sets, oracle_similar, run, stream};
    use eddy_core::{Event, EventType, Weights, WindowSpec};
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
            let by_user = pairs.clone().arrange_by_key();
            let similar = similar_users(
                pairs.clone(),
                SimilarityParams {
                    k: K,
                    mode: SimilarityMode::Exact,
                },
            );
            recommendations(similar, by_user, pairs, scores.settled, N)
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
}
