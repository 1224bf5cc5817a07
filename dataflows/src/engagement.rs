//! Campaign engagement over a sliding event-time window, and the live top list by score.

use crate::windowed_counts::report_sum;
use differential_dataflow::VecCollection;
use differential_dataflow::difference::{Abelian, IsZero, Monoid, Semigroup};
use differential_dataflow::operators::CountTotal;
use eddy_core::{CampaignEngagement, Event, EventType, PaneEngagement, Weights, WindowSpec};
use eddy_operators::{Emit, Epoch, PaneAccumulate, PaneSpec, Sum};
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::vec::Map;

/// Engagement sums, used as a differential difference (adding updates adds every field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EngagementSums {
    /// Views.
    pub views: i64,
    /// Clicks.
    pub clicks: i64,
    /// Conversions.
    pub conversions: i64,
    /// Sum of conversion amounts, micro-units, exact (reported through
    /// [`crate::windowed_counts::report_sum`]).
    pub revenue: i128,
}

impl EngagementSums {
    /// What one event (with multiplicity `d`) contributes.
    pub fn of(e: &Event, d: i64) -> Self {
        let mut s = Self::default();
        match e.event_type {
            EventType::View => s.views = d,
            EventType::Click => s.clicks = d,
            EventType::Conversion => {
                s.conversions = d;
                s.revenue = i128::from(e.amount_micros.unwrap_or(0)) * i128::from(d);
            }
        }
        s
    }
}

impl IsZero for EngagementSums {
    fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}
impl Semigroup for EngagementSums {
    fn plus_equals(&mut self, rhs: &Self) {
        self.views += rhs.views;
        self.clicks += rhs.clicks;
        self.conversions += rhs.conversions;
        self.revenue += rhs.revenue;
    }
}
impl Monoid for EngagementSums {
    fn zero() -> Self {
        Self::default()
    }
}
impl Abelian for EngagementSums {
    fn negate(&mut self) {
        self.views = -self.views;
        self.clicks = -self.clicks;
        self.conversions = -self.conversions;
        self.revenue = -self.revenue;
    }
}

/// Parameters of [`engagement`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngagementParams {
    /// Panes: the tumbling window the sliding window advances by.
    pub pane: WindowSpec,
    /// Sliding window length, ms (a multiple of the pane size).
    pub sliding_ms: i64,
    /// Score weights.
    pub weights: Weights,
    /// Length of the top list.
    pub top_k: usize,
}

/// Output of [`engagement`].
pub struct Engagement<'scope> {
    /// Live engagement of every campaign with an event in the sliding window.
    pub campaigns: VecCollection<'scope, Epoch, CampaignEngagement, isize>,
    /// The live top list: one row, the `top_k` campaigns by score (best first, ties by id).
    pub top: VecCollection<'scope, Epoch, Vec<CampaignEngagement>, isize>,
    /// Finalized panes inside the sliding window: present from the epoch that closes the pane
    /// until the one that retires it.
    pub panes: VecCollection<'scope, Epoch, PaneEngagement, isize>,
}

fn sums_row(campaign_id: u64, s: EngagementSums, w: &Weights) -> CampaignEngagement {
    let (views, clicks, conversions) = (s.views as u64, s.clicks as u64, s.conversions as u64);
    CampaignEngagement {
        campaign_id,
        views,
        clicks,
        conversions,
        revenue_micros: report_sum(s.revenue),
        score: w.score(views, clicks, conversions),
    }
}

/// Best first: higher score, then lower campaign id.
fn by_score(a: &CampaignEngagement, b: &CampaignEngagement) -> std::cmp::Ordering {
    b.score
        .cmp(&a.score)
        .then(a.campaign_id.cmp(&b.campaign_id))
}

/// Campaign engagement over a sliding window, maintained incrementally.
///
/// `events` holds on-time events (insert-only) plus, after a restart, replayed events of
/// closed panes still inside the sliding window; `watermarks` carries `W(e)` at `e`.
/// A pane `p` (tumbling window of `params.pane`) is inside the sliding window under watermark
/// `W` while `p + sliding_ms > W`, so with `:L = sliding_ms`, `:S` the pane size:
///
/// ```sql
/// -- campaigns: live engagement (open panes included)
/// SELECT campaign_id, count_if(type = 'view') AS views, count_if(type = 'click') AS clicks,
///        count_if(type = 'conversion') AS conversions,
///        coalesce(sum(amount) FILTER (WHERE type = 'conversion'), 0) AS revenue,
///        views * :w_view + clicks * :w_click + conversions * :w_conversion AS score
/// FROM events WHERE tumble_start(ts, :S) + :L > watermark() GROUP BY campaign_id;
/// -- top: SELECT * FROM campaigns ORDER BY score DESC, campaign_id LIMIT :top_k
/// -- panes: the same per (tumble_start(ts, :S), campaign_id) over closed panes only
/// --   (tumble_start(ts, :S) + :S <= watermark()), still inside the window.
/// ```
///
/// Events leave the window as retractions when the watermark retires their pane (see
/// `eddy_operators::PaneAccumulate`); nothing is recomputed, and state is bounded by the
/// panes inside the window. CTR and conversion rate are derived from the counts
/// ([`CampaignEngagement::ctr`], [`CampaignEngagement::conversion_rate`]).
pub fn engagement<'scope>(
    events: VecCollection<'scope, Epoch, Event, isize>,
    watermarks: StreamVec<'scope, Epoch, i64>,
    params: EngagementParams,
) -> Engagement<'scope> {
    engagement_restored(events, None, watermarks, params)
}

/// [`engagement`], with the final panes of a restored state (`restored`: rows of panes closed
/// under the restored watermark and still inside the sliding window, as `panes` reported them
/// before the restart) counted as if their events were replayed: the outputs equal those of
/// an uninterrupted run, while no record of those panes is read again.
pub fn engagement_restored<'scope>(
    events: VecCollection<'scope, Epoch, Event, isize>,
    restored: Option<VecCollection<'scope, Epoch, PaneEngagement, isize>>,
    watermarks: StreamVec<'scope, Epoch, i64>,
    params: EngagementParams,
) -> Engagement<'scope> {
    let weights = params.weights;
    type Contribution = ((i64, u64, EngagementSums), Epoch, isize);
    let mut contributions = events.inner.map(|(e, t, d)| {
        (
            (e.ts_ms, e.campaign_id, EngagementSums::of(&e, d as i64)),
            t,
            1,
        )
    });
    if let Some(restored) = restored {
        contributions = contributions.concat(restored.inner.map(|(p, t, d)| {
            let mut sums = EngagementSums {
                views: p.views as i64,
                clicks: p.clicks as i64,
                conversions: p.conversions as i64,
                revenue: i128::from(p.revenue_micros),
            };
            if d < 0 {
                sums.negate();
            }
            ((p.window_start_ms, p.campaign_id, sums), t, 1)
        }));
    }
    let contribution = |((ts, campaign, sums), _, _): &Contribution| Some((*ts, *campaign, *sums));
    let live = contributions
        .clone()
        .pane_accumulate::<_, Sum<EngagementSums>, _>(
            watermarks.clone(),
            PaneSpec::sliding(params.pane, params.sliding_ms, Emit::Live),
            "EngagementLive",
            contribution,
        )
        .map(|((_, campaign), ())| campaign)
        .count_total()
        .map(move |(c, s)| sums_row(c, s, &weights));
    let closed = contributions.pane_accumulate::<_, Sum<EngagementSums>, _>(
        watermarks,
        PaneSpec::sliding(params.pane, params.sliding_ms, Emit::OnClose),
        "EngagementClosed",
        contribution,
    );
    let panes = closed
        .map(|(pane_campaign, ())| pane_campaign)
        .count_total()
        .map(|((window_start_ms, campaign_id), s)| PaneEngagement {
            window_start_ms,
            campaign_id,
            views: s.views as u64,
            clicks: s.clicks as u64,
            conversions: s.conversions as u64,
            revenue_micros: report_sum(s.revenue),
        });
    let k = params.top_k;
    // Two-level top-K: per shard of campaigns, then over the shards' winners, so one change
    // re-sorts one shard and the short list, not every campaign.
    let top = live
        .clone()
        .map(|row| (row.campaign_id % 64, row))
        .reduce_named("TopCampaignsShard", move |_, rows, out| {
            let mut rows: Vec<CampaignEngagement> = rows.iter().map(|(r, _)| **r).collect();
            rows.sort_by(by_score);
            for r in rows.into_iter().take(k) {
                out.push((r, 1isize));
            }
        })
        .map(|(_, row)| ((), row))
        .reduce_named("TopCampaigns", move |_, rows, out| {
            let mut rows: Vec<CampaignEngagement> = rows.iter().map(|(r, _)| **r).collect();
            rows.sort_by(by_score);
            rows.truncate(k);
            out.push((rows, 1isize));
        })
        .map(|((), rows)| rows);
    Engagement {
        campaigns: live,
        top,
        panes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{StreamShape, accept, as_of, run, stream};
    use std::collections::BTreeMap;

    const PANE: i64 = 1_000;
    const SLIDING: i64 = 4_000;
    const LATENESS: i64 = 400;

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
    enum Out {
        Campaign(CampaignEngagement),
        Top(Vec<CampaignEngagement>),
        Pane(PaneEngagement),
    }

    fn params() -> EngagementParams {
        EngagementParams {
            pane: WindowSpec::new(PANE),
            sliding_ms: SLIDING,
            weights: Weights {
                view: 1.0,
                click: 5.5,
                conversion: 25.0,
            },
            top_k: 3,
        }
    }

    /// From scratch: group the events still in the window.
    fn oracle(events: &[Event], w: i64, p: &EngagementParams) -> Vec<Out> {
        let mut live: BTreeMap<u64, [i64; 4]> = BTreeMap::new();
        let mut panes: BTreeMap<(i64, u64), [i64; 4]> = BTreeMap::new();
        for e in events {
            let start = p.pane.start(e.ts_ms);
            if start + p.sliding_ms <= w {
                continue; // slid out
            }
            let add = |s: &mut [i64; 4]| match e.event_type {
                EventType::View => s[0] += 1,
                EventType::Click => s[1] += 1,
                EventType::Conversion => {
                    s[2] += 1;
                    s[3] += e.amount_micros.unwrap_or(0);
                }
            };
            add(live.entry(e.campaign_id).or_default());
            if start + p.pane.size_ms <= w {
                add(panes.entry((start, e.campaign_id)).or_default());
            }
        }
        let row = |c: u64, s: &[i64; 4]| CampaignEngagement {
            campaign_id: c,
            views: s[0] as u64,
            clicks: s[1] as u64,
            conversions: s[2] as u64,
            revenue_micros: s[3],
            score: p.weights.score(s[0] as u64, s[1] as u64, s[2] as u64),
        };
        let mut out = Vec::new();
        let mut rows: Vec<CampaignEngagement> = live.iter().map(|(c, s)| row(*c, s)).collect();
        out.extend(rows.iter().copied().map(Out::Campaign));
        rows.sort_by(|a, b| {
            b.score
                .0
                .partial_cmp(&a.score.0)
                .unwrap()
                .then(a.campaign_id.cmp(&b.campaign_id))
        });
        rows.truncate(p.top_k);
        if !rows.is_empty() {
            out.push(Out::Top(rows));
        }
        for ((start, c), s) in &panes {
            out.push(Out::Pane(PaneEngagement {
                window_start_ms: *start,
                campaign_id: *c,
                views: s[0] as u64,
                clicks: s[1] as u64,
                conversions: s[2] as u64,
                revenue_micros: s[3],
            }));
        }
        out.sort();
        out
    }

    fn check(seed: u64, workers: usize) {
        let shape = StreamShape {
            users: 40,
            campaigns: 9,
            max_per_epoch: 50,
            click: 0.3,
            conversion: 0.1,
            other_amounts: 0.0,
        };
        let (accepted, marks) = accept(&stream(seed, 80, shape), WindowSpec::new(PANE), LATENESS);
        let updates = run(workers, &accepted, &marks, |events, marks| {
            let e = engagement(events, marks, params());
            e.campaigns
                .map(Out::Campaign)
                .concat(e.top.map(Out::Top))
                .concat(e.panes.map(Out::Pane))
        });
        let mut all = Vec::new();
        let (mut retired, mut panes_seen) = (0, 0);
        for (epoch, batch) in accepted.iter().enumerate() {
            all.extend(batch.iter().copied());
            let want = oracle(&all, marks[epoch], &params());
            assert_eq!(
                as_of(&updates, epoch as Epoch),
                want,
                "seed {seed} epoch {epoch}"
            );
            panes_seen += want.iter().filter(|o| matches!(o, Out::Pane(_))).count();
            retired += all
                .iter()
                .filter(|e| params().pane.start(e.ts_ms) + SLIDING <= marks[epoch])
                .count();
        }
        assert!(
            panes_seen > 100 && retired > 100,
            "the stream closes and retires panes"
        );
    }

    #[test]
    fn matches_oracle_one_worker() {
        for seed in 0..3 {
            check(seed, 1);
        }
    }

    #[test]
    fn matches_oracle_several_workers() {
        for seed in 10..13 {
            check(seed, 3);
        }
    }

    #[test]
    fn revenue_adds_exactly_and_never_wraps() {
        let conversion = |micros| Event {
            ts_ms: 1_700_000_000_000,
            user_id: 1,
            campaign_id: 7,
            event_type: EventType::Conversion,
            amount_micros: Some(micros),
        };
        // Five conversions of 2 000 000 000 000 units (the parser rejects these now; built
        // here directly): 10^19 micros, which wrapped to negative revenue in i64.
        let big = 2_000_000_000_000 * 1_000_000;
        let mut sums = EngagementSums::default();
        for _ in 0..5 {
            sums.plus_equals(&EngagementSums::of(&conversion(big), 1));
        }
        assert_eq!(sums.revenue, 5 * i128::from(big));
        let row = sums_row(7, sums, &params().weights);
        assert_eq!((row.conversions, row.revenue_micros), (5, i64::MAX));
        // Retracting them all is exact: back to zero.
        let mut gone = sums;
        gone.plus_equals(&{
            let mut n = sums;
            n.negate();
            n
        });
        assert!(gone.is_zero());
    }
}
