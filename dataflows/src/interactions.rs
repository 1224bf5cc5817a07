//! User interaction sets: the campaigns each user showed interest in within the sliding window.

use differential_dataflow::VecCollection;
use eddy_core::{Event, EventType, WindowSpec};
use eddy_operators::{Emit, Epoch, PaneAccumulate, PaneSpec, Sum};
use timely::dataflow::StreamVec;

/// Parameters of [`interactions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InteractionParams {
    /// Panes: the tumbling window the sliding window advances by.
    pub pane: WindowSpec,
    /// Sliding window length, ms (a multiple of the pane size).
    pub sliding_ms: i64,
    /// Whether views count as interest (clicks and conversions always do).
    pub views_are_interest: bool,
    /// [`Emit::Live`]: every pane inside the window counts, open ones included.
    /// [`Emit::OnClose`]: only closed panes count (*settled* sets, which change at most once
    /// per pane: what the similarity and recommendation dataflows use, see `similarity`).
    pub emit: Emit,
}

impl InteractionParams {
    /// Whether an event of this type shows interest.
    pub fn is_interest(&self, t: EventType) -> bool {
        t != EventType::View || self.views_are_interest
    }
}

/// The set of `(user_id, campaign_id)` pairs with at least one interest event in the sliding
/// window, each with multiplicity one, maintained incrementally:
///
/// ```sql
/// SELECT DISTINCT user_id, campaign_id FROM events
/// WHERE tumble_start(ts, :S) + :L > watermark()
///   AND (NOT :settled OR tumble_start(ts, :S) + :S <= watermark())  -- Emit::OnClose
///   AND (event_type IN ('click', 'conversion') OR (:views_are_interest AND event_type = 'view'));
/// ```
///
/// Each worker counts its events per `(pane, user, campaign)` (one update per message per
/// pair); the panes' counts are retracted when they retire, and a pair leaves the set when its
/// last interest event slides out.
pub fn interactions<'scope>(
    events: VecCollection<'scope, Epoch, Event, isize>,
    watermarks: StreamVec<'scope, Epoch, i64>,
    params: InteractionParams,
) -> VecCollection<'scope, Epoch, (u64, u64), isize> {
    events
        .inner
        .pane_accumulate::<_, Sum<isize>, _>(
            watermarks,
            PaneSpec::sliding(params.pane, params.sliding_ms, params.emit),
            "Interactions",
            move |(e, _, d): &(Event, Epoch, isize)| {
                params.is_interest(e.event_type).then_some((
                    e.ts_ms,
                    (e.user_id, e.campaign_id),
                    *d,
                ))
            },
        )
        .map(|((_, pair), ())| pair)
        .distinct()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{StreamShape, accept, as_of, oracle_sets, run, stream};

    fn check(seed: u64, workers: usize, views_are_interest: bool, emit: Emit) {
        let params = InteractionParams {
            pane: WindowSpec::new(1_000),
            sliding_ms: 3_000,
            views_are_interest,
            emit,
        };
        let shape = StreamShape {
            users: 30,
            campaigns: 8,
            max_per_epoch: 40,
            click: 0.3,
            conversion: 0.1,
            other_amounts: 0.0,
        };
        let (accepted, marks) = accept(&stream(seed, 70, shape), params.pane, 400);
        let updates = run(workers, &accepted, &marks, move |events, marks| {
            interactions(events, marks, params)
        });
        let mut all = Vec::new();
        let mut left = 0;
        for (epoch, batch) in accepted.iter().enumerate() {
            all.extend(batch.iter().copied());
            let sets = oracle_sets(
                &all,
                marks[epoch],
                params.pane,
                params.sliding_ms,
                views_are_interest,
                emit == Emit::OnClose,
            );
            let want: Vec<(u64, u64)> = sets
                .iter()
                .flat_map(|(u, s)| s.iter().map(move |c| (*u, *c)))
                .collect();
            let got = as_of(&updates, epoch as Epoch);
            if epoch > 0 {
                left += as_of(&updates, epoch as Epoch - 1)
                    .iter()
                    .filter(|p| !got.contains(p))
                    .count();
            }
            assert_eq!(got, want, "seed {seed} epoch {epoch}");
        }
        assert!(left > 20, "pairs slide out of the window ({left})");
    }

    #[test]
    fn matches_oracle() {
        for seed in 0..3 {
            check(seed, 1, false, Emit::Live);
            check(seed + 100, 3, false, Emit::Live);
            check(seed + 200, 2, false, Emit::OnClose);
        }
        check(7, 2, true, Emit::Live);
        check(8, 3, true, Emit::OnClose);
    }
}
