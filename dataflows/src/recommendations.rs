//! Campaign recommendations: what similar users engaged with, ranked by similarity × score.
//!
//! For each user `u`, the top `n` campaigns that `u`'s similar users engaged with (in their
//! interaction sets) and `u` has not, ranked by `Σ jaccard(u, v) × score(c)` over those
//! similar users `v`, best first (ties by lower campaign id), each with its explanation:
//!
//! ```sql
//! SELECT s.user_id, i.campaign_id,
//!        sum(s.jaccard) * c.score AS score, c.score AS campaign_score,
//!        array_agg(s.other ORDER BY s.jaccard DESC, s.other) AS because
//! FROM similar s                                   -- similar_users, flattened
//! JOIN interactions i ON i.user_id = s.other
//! JOIN campaigns c ON c.campaign_id = i.campaign_id  -- engagement's live scores
//! WHERE (s.user_id, i.campaign_id) NOT IN (SELECT user_id, campaign_id FROM interactions)
//! GROUP BY s.user_id, i.campaign_id, c.score
//! QUALIFY row_number() OVER (PARTITION BY s.user_id ORDER BY score DESC, campaign_id) <= :n;
//! ```
//!
//! Plan: this join is **not maintained by the dataflow**. The dataflow keeps its three inputs
//! — the similar users and the users' interaction sets
//! ([`crate::similarity::similar_users_and_sets`]) and the campaigns' live engagement
//! ([`crate::engagement`]) — and the query server ranks at read time with
//! [`eddy_core::recommend`] (one user's similar users, their sets and the scores of the
//! candidate campaigns: a few keys). Every campaign's score moves at every pane close, so a
//! maintained ranking re-ranks every user each time: at 1 M users and a 24 h window that was
//! 70% of the CPU (BENCHMARKS.md, issue 9). At read time the cost is per request, and the
//! dataflow's work stays proportional to changes of sets and lists.
//!
//! The score is the campaign's live engagement score, the one `/v1/campaigns/{id}` reports,
//! so a campaign leaves the recommendations when it leaves the sliding window. The test below
//! checks the composition (dataflow outputs, then [`eddy_core::recommend`]) against a
//! from-scratch oracle at every epoch.

#[cfg(test)]
mod tests {
    use crate::engagement::{EngagementParams, engagement};
    use crate::interactions::{InteractionParams, interactions};
    use crate::similarity::{SimilarityMode, SimilarityParams, similar_users_and_sets};
    use crate::testing::{StreamShape, accept, as_of, oracle_sets, oracle_similar, run, stream};
    use differential_dataflow::VecCollection;
    use eddy_core::{
        CampaignEngagement, Event, EventType, Recommendation, Score, SimilarUsers, UserCampaigns,
        UserRecommendations, Weights, WindowSpec, recommend,
    };
    use eddy_operators::Epoch;
    use serde::{Deserialize, Serialize};
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

    /// What the dataflow keeps for recommendations.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
    enum Kept {
        Similar(SimilarUsers),
        Set(UserCampaigns),
        Campaign(CampaignEngagement),
    }

    /// Ranks at read time from what the dataflow keeps at one epoch, as the query server does.
    fn served(kept: &[Kept]) -> Vec<UserRecommendations> {
        let mut sets: BTreeMap<u64, &[u64]> = BTreeMap::new();
        let mut scores: BTreeMap<u64, Score> = BTreeMap::new();
        for k in kept {
            match k {
                Kept::Set(s) => assert!(sets.insert(s.user_id, &s.campaigns).is_none()),
                Kept::Campaign(c) => assert!(scores.insert(c.campaign_id, c.score).is_none()),
                Kept::Similar(_) => {}
            }
        }
        let mut out = Vec::new();
        for k in kept {
            if let Kept::Similar(s) = k {
                let theirs: Vec<&[u64]> = s
                    .neighbors
                    .iter()
                    .map(|nb| sets.get(&nb.user_id).copied().unwrap_or(&[]))
                    .collect();
                let mine = sets.get(&s.user_id).copied().unwrap_or(&[]);
                let items = recommend(&s.neighbors, &theirs, mine, |c| scores.get(&c).copied(), N);
                if !items.is_empty() {
                    out.push(UserRecommendations {
                        user_id: s.user_id,
                        items,
                    });
                }
            }
        }
        out
    }

    /// From scratch: live scores, exact similarity, then the ranking.
    fn oracle(events: &[Event], w: i64) -> Vec<UserRecommendations> {
        let pane = WindowSpec::new(PANE);
        let sets = oracle_sets(events, w, pane, SLIDING, false, true);
        let similar = oracle_similar(&sets, K);
        let mut counts: BTreeMap<u64, [u64; 3]> = BTreeMap::new();
        for e in events {
            if pane.start(e.ts_ms) + SLIDING > w {
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
                slice: std::time::Duration::ZERO,
            };
            let (similar, sets) = similar_users_and_sets(pairs, params);
            let kept: VecCollection<'_, Epoch, Kept, isize> = similar
                .map(Kept::Similar)
                .concat(sets.map(Kept::Set))
                .concat(scores.campaigns.map(Kept::Campaign));
            kept
        });
        let mut all = Vec::new();
        let mut items = 0;
        for (epoch, batch) in accepted.iter().enumerate() {
            all.extend(batch.iter().copied());
            let want = oracle(&all, marks[epoch]);
            items += want.iter().map(|r| r.items.len()).sum::<usize>();
            assert_eq!(
                served(&as_of(&updates, epoch as Epoch)),
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
    /// for another that the user does not share): its new set must be emitted, so that the
    /// recommendations ranked from it follow.
    #[test]
    fn emit_a_neighbors_set_even_when_the_similarity_stays() {
        use differential_dataflow::input::Input;
        use std::sync::{Arc, Mutex};
        for workers in [1, 2] {
            let got: Arc<Mutex<Vec<(Kept, Epoch, isize)>>> = Arc::default();
            let got2 = got.clone();
            timely::execute(timely::Config::process(workers), move |worker| {
                let got3 = got2.clone();
                let (mut pairs, probe) = worker.dataflow::<Epoch, _, _>(|scope| {
                    let (pairs_in, pairs) = scope.new_collection::<(u64, u64), isize>();
                    let params = SimilarityParams {
                        k: 2,
                        mode: SimilarityMode::Exact,
                        slice: std::time::Duration::ZERO,
                    };
                    let (similar, sets) = similar_users_and_sets(pairs, params);
                    let (probe, _) = similar
                        .map(Kept::Similar)
                        .concat(sets.map(Kept::Set))
                        .inspect(move |x| got3.lock().unwrap().push(x.clone()))
                        .probe();
                    (pairs_in, probe)
                });
                if worker.index() == 0 {
                    // u1 {1, 2}, u2 {1, 3}: u1 is recommended 3 because of u2 (1 of 3 shared).
                    for p in [(1, 1), (1, 2), (2, 1), (2, 3)] {
                        pairs.insert(p);
                    }
                }
                pairs.advance_to(1);
                pairs.flush();
                worker.step_while(|| probe.less_than(&1));
                if worker.index() == 0 {
                    // u2 swaps 3 for 4: still 1 of 3 shared with u1.
                    pairs.remove((2, 3));
                    pairs.insert((2, 4));
                }
                pairs.advance_to(2);
                pairs.flush();
                worker.step_while(|| probe.less_than(&2));
            })
            .expect("timely runs");
            let got = got.lock().unwrap().clone();
            let campaigns = |at: Epoch| -> Vec<(u64, Vec<u64>)> {
                let mut kept = as_of(&got, at);
                for c in 1..=4 {
                    kept.push(Kept::Campaign(CampaignEngagement {
                        campaign_id: c,
                        views: c,
                        clicks: 0,
                        conversions: 0,
                        revenue_micros: 0,
                        score: Score(c as f64),
                    }));
                }
                served(&kept)
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
