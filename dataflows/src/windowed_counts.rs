//! Event-time tumbling-window counts.

use differential_dataflow::VecCollection;
use differential_dataflow::difference::{Abelian, IsZero, Monoid, Semigroup};
use differential_dataflow::operators::CountTotal;
use eddy_core::{CampaignWindowCount, Event, EventType, TypeWindowStats, WindowSpec};
use eddy_operators::{ClosedWindows, Epoch, MinMax, Sum, WindowedAccumulate};
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;

/// A `(count, sum)` pair used as a differential difference: adding updates adds both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CountSum {
    /// Number of events.
    pub count: i64,
    /// Sum of amounts, micro-units, exact (`i128`: no sum of `i64` amounts can wrap in any
    /// realistic window); reported through [`report_sum`].
    pub sum: i128,
}

/// A sum of micro-units as the rows report it (`i64`): exact when it fits, else `i64::MAX`
/// (or `i64::MIN`) with an error logged, so an overflow is loud and never reads as a wrapped,
/// negative revenue. With amounts bounded by [`eddy_core::event::MAX_AMOUNT`] this takes
/// over 922 000 events of the largest amount in one sum.
pub fn report_sum(sum: i128) -> i64 {
    i64::try_from(sum).unwrap_or_else(|_| {
        tracing::error!(
            sum_micros = %sum,
            "a sum of amounts exceeds the i64 micro-units the rows carry; reported saturated"
        );
        if sum > 0 { i64::MAX } else { i64::MIN }
    })
}

impl IsZero for CountSum {
    fn is_zero(&self) -> bool {
        self.count == 0 && self.sum == 0
    }
}
impl Semigroup for CountSum {
    fn plus_equals(&mut self, rhs: &Self) {
        self.count += rhs.count;
        self.sum += rhs.sum;
    }
}
impl Monoid for CountSum {
    fn zero() -> Self {
        Self::default()
    }
}
impl Abelian for CountSum {
    fn negate(&mut self) {
        self.count = -self.count;
        self.sum = -self.sum;
    }
}

/// Output of [`windowed_counts`]: the current aggregates of every *open* window, and the
/// final aggregates of each window as it closes.
pub struct WindowedCounts<'scope> {
    /// One row per `(window_start, event_type)` with events, open windows only.
    pub types: VecCollection<'scope, Epoch, TypeWindowStats, isize>,
    /// One row per `(window_start, campaign_id, event_type)` with events, open windows only.
    pub campaigns: VecCollection<'scope, Epoch, CampaignWindowCount, isize>,
    /// The final row of each type window, inserted at the epoch whose watermark closes it and
    /// never retracted (see [`ClosedWindows`]).
    pub closed_types: VecCollection<'scope, Epoch, TypeWindowStats, isize>,
    /// The final row of each campaign window, inserted at the epoch that closes it.
    pub closed_campaigns: VecCollection<'scope, Epoch, CampaignWindowCount, isize>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Part {
    Sums(CountSum),
    Value(i64),
}

/// Tumbling-window aggregates over on-time events, maintained incrementally.
///
/// `events` is insert-only (every difference positive) and holds only on-time events: no event
/// of a window closed by the watermark of epoch `e` arrives at an epoch `>= e`. `watermarks`
/// carries the watermark of epoch `e` at time `e` on every worker (see
/// `eddy_operators::TrackWatermark`).
///
/// At every epoch the outputs hold exactly the open windows (those with `end > watermark`):
///
/// ```sql
/// SELECT tumble_start(ts, :window) AS window_start, event_type,
///        count(*), coalesce(sum(amount), 0), min(amount), max(amount)
/// FROM events GROUP BY window_start, event_type
/// HAVING window_start + :window > watermark();
///
/// SELECT tumble_start(ts, :window) AS window_start, campaign_id, event_type, count(*)
/// FROM events GROUP BY window_start, campaign_id, event_type
/// HAVING window_start + :window > watermark();
/// ```
///
/// When the watermark closes a window, its rows are retracted at that epoch, so differential's
/// state stays bounded by the open windows; at the same epoch `closed_types` and
/// `closed_campaigns` insert the window's final rows (its value at the previous epoch):
///
/// ```sql
/// -- closed_types at epoch e: the windows that W(e) closes and W(e-1) did not
/// SELECT ... FROM events GROUP BY window_start, event_type
/// HAVING window_start + :window <= watermark(e) AND window_start + :window > watermark(e - 1);
/// ```
/// Each worker pre-aggregates its own events per message before
/// anything is exchanged.
pub fn windowed_counts<'scope>(
    events: VecCollection<'scope, Epoch, Event, isize>,
    watermarks: StreamVec<'scope, Epoch, i64>,
    window: WindowSpec,
) -> WindowedCounts<'scope> {
    let sums = events
        .inner
        .clone()
        .windowed_accumulate::<_, Sum<CountSum>, _>(
            watermarks.clone(),
            window,
            "TypeSums",
            |(e, _, d): &(Event, Epoch, isize)| {
                let d = *d as i64;
                Some((
                    e.ts_ms,
                    e.event_type,
                    CountSum {
                        count: d,
                        sum: i128::from(e.amount_micros.unwrap_or(0)) * i128::from(d),
                    },
                ))
            },
        )
        .map(|(key, ())| key)
        .count_total()
        .map(|(key, sums)| (key, Part::Sums(sums)));
    let extremes = events
        .inner
        .clone()
        .windowed_accumulate::<_, MinMax, _>(
            watermarks.clone(),
            window,
            "TypeExtremes",
            |(e, _, _): &(Event, Epoch, isize)| e.amount_micros.map(|a| (e.ts_ms, e.event_type, a)),
        )
        .map(|(key, value)| (key, Part::Value(value)));
    let types = sums.concat(extremes).reduce_named(
        "TypeStats",
        |&(window_start_ms, event_type): &(i64, EventType), parts, out| {
            let mut row = TypeWindowStats {
                window_start_ms,
                event_type,
                count: 0,
                sum_micros: 0,
                min_micros: None,
                max_micros: None,
            };
            for (part, _) in parts {
                match part {
                    Part::Sums(s) => {
                        row.count = s.count as u64;
                        row.sum_micros = report_sum(s.sum);
                    }
                    // Values arrive sorted: the first is the minimum, the last the maximum.
                    Part::Value(v) => {
                        row.min_micros = row.min_micros.or(Some(*v));
                        row.max_micros = Some(*v);
                    }
                }
            }
            if row.count > 0 {
                out.push((row, 1isize));
            }
        },
    );
    let campaigns = events
        .inner
        .windowed_accumulate::<_, Sum<isize>, _>(
            watermarks.clone(),
            window,
            "CampaignCounts",
            |(e, _, d): &(Event, Epoch, isize)| Some((e.ts_ms, (e.campaign_id, e.event_type), *d)),
        )
        .map(|((start, key), ())| (start, key))
        .count_total()
        .map(
            |((window_start_ms, (campaign_id, event_type)), count)| CampaignWindowCount {
                window_start_ms,
                campaign_id,
                event_type,
                count: count as u64,
            },
        );
    let types = types.map(|(_, row)| row);
    let closed_types = types.clone().closed_windows(
        watermarks.clone(),
        window,
        |r: &TypeWindowStats| r.window_start_ms,
        "ClosedTypeWindows",
    );
    let closed_campaigns = campaigns.clone().closed_windows(
        watermarks,
        window,
        |r: &CampaignWindowCount| r.window_start_ms,
        "ClosedCampaignWindows",
    );
    WindowedCounts {
        types,
        campaigns,
        closed_types,
        closed_campaigns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{StreamShape, as_of};
    use eddy_load_gen::expected::WindowTotals;

    const WINDOW: i64 = 1_000;
    const LATENESS: i64 = 400;

    /// Seeded stream: ~150 ms of event time per epoch, shuffled within 600 ms (some beyond
    /// the lateness), some far-late events, amounts on conversions and 10% of the others.
    fn stream(seed: u64, epochs: usize) -> Vec<Vec<Event>> {
        let shape = StreamShape {
            users: 50,
            campaigns: 4,
            max_per_epoch: 60,
            click: 1.0 / 3.0,
            conversion: 1.0 / 3.0,
            other_amounts: 0.1,
        };
        crate::testing::stream(seed, epochs, shape)
    }

    /// The driver's watermark and late filter, as a source would apply them.
    fn accept(epochs: &[Vec<Event>]) -> (Vec<Vec<Event>>, Vec<i64>) {
        crate::testing::accept(epochs, WindowSpec::new(WINDOW), LATENESS)
    }

    /// Every output of [`windowed_counts`], in one collection.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    enum Out {
        Open(Rows),
        Closed(Rows),
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    enum Rows {
        Type(TypeWindowStats),
        Campaign(CampaignWindowCount),
    }

    /// The oracle's rows of the windows whose start passes `keep`.
    fn oracle(accepted: &[Event], keep: impl Fn(i64) -> bool) -> Vec<Rows> {
        let w = WindowSpec::new(WINDOW);
        let mut t = WindowTotals::of(accepted.iter().copied(), w);
        t.retain_windows(keep);
        let mut rows: Vec<Rows> = t.types.into_values().map(Rows::Type).collect();
        rows.extend(t.campaigns.into_values().map(Rows::Campaign));
        rows.sort();
        rows
    }

    /// Runs the dataflow on `workers` threads (events spread over workers by content) and
    /// checks after every epoch that the open windows equal the oracle over the events so
    /// far, and that the windows the epoch's watermark closes are inserted, once, with their
    /// values over the whole stream.
    fn check(seed: u64, workers: usize, epochs_n: usize) {
        let (accepted, marks) = accept(&stream(seed, epochs_n));
        let updates = crate::testing::run(workers, &accepted, &marks, |events, watermarks| {
            let out = windowed_counts(events, watermarks, WindowSpec::new(WINDOW));
            out.types
                .map(|r| Out::Open(Rows::Type(r)))
                .concat(out.campaigns.map(|r| Out::Open(Rows::Campaign(r))))
                .concat(out.closed_types.map(|r| Out::Closed(Rows::Type(r))))
                .concat(out.closed_campaigns.map(|r| Out::Closed(Rows::Campaign(r))))
        });
        let (mut open, mut closed) = (Vec::new(), Vec::new());
        for (out, t, r) in updates {
            match out {
                Out::Open(row) => open.push((row, t, r)),
                Out::Closed(row) => {
                    assert_eq!(r, 1, "closed windows are only inserted: {row:?}");
                    closed.push((row, t, r));
                }
            }
        }
        let everything: Vec<Event> = accepted.iter().flatten().copied().collect();
        let mut so_far = Vec::new();
        let (mut open_checked, mut closed_checked) = (0, 0);
        for (epoch, batch) in accepted.iter().enumerate() {
            so_far.extend(batch.iter().copied());
            let now = marks[epoch];
            let want = oracle(&so_far, |ws| ws + WINDOW > now);
            assert_eq!(as_of(&open, epoch as Epoch), want, "open at epoch {epoch}");
            open_checked += want.len();
            // Closed by this epoch's watermark and not by the previous one; nothing arrives
            // for them later, so their rows are over the whole stream.
            let was = epoch.checked_sub(1).map_or(i64::MIN, |p| marks[p]);
            let want = oracle(&everything, |ws| ws + WINDOW <= now && ws + WINDOW > was);
            let mut got: Vec<Rows> = closed
                .iter()
                .filter(|(_, t, _)| *t == epoch as Epoch)
                .map(|(row, _, _)| row.clone())
                .collect();
            got.sort();
            assert_eq!(got, want, "closed at epoch {epoch}");
            closed_checked += want.len();
        }
        assert!(open_checked > 50, "the stream exercises windows");
        assert!(closed_checked > 10, "the stream closes windows");
    }

    #[test]
    fn matches_oracle_one_worker() {
        for seed in 0..4 {
            check(seed, 1, 60);
        }
    }

    #[test]
    fn matches_oracle_several_workers() {
        for seed in 10..14 {
            check(seed, 3, 60);
        }
    }

    #[test]
    fn output_independent_of_worker_count() {
        let (accepted, _) = accept(&stream(99, 40));
        assert!(accepted.iter().map(Vec::len).sum::<usize>() > 500);
        check(99, 1, 40);
        check(99, 2, 40);
        check(99, 4, 40);
    }

    #[test]
    fn count_sum_is_an_abelian_group() {
        let mut a = CountSum { count: 2, sum: 7 };
        a.plus_equals(&CountSum { count: 1, sum: 3 });
        assert_eq!(a, CountSum { count: 3, sum: 10 });
        let mut n = a;
        n.negate();
        n.plus_equals(&a);
        assert!(n.is_zero());
    }

    #[test]
    fn large_sums_are_exact_or_saturated_never_negative() {
        let conversion = |ts_ms, micros| Event {
            ts_ms,
            user_id: 1,
            campaign_id: 1,
            event_type: EventType::Conversion,
            amount_micros: Some(micros),
        };
        let t = 1_700_000_000_000;
        // Five conversions of the largest accepted amount: exact.
        let max = (eddy_core::event::MAX_AMOUNT * 1_000_000.0) as i64;
        // Five of 2 000 000 000 000 units (the parser rejects these; built here directly):
        // 10^19 micros, beyond i64 (this wrapped to -8 446 744 073 709.55 units).
        let big = 2_000_000_000_000 * 1_000_000;
        let mut epoch: Vec<Event> = (0..5).map(|_| conversion(t, max)).collect();
        epoch.extend((0..5).map(|_| conversion(t + WINDOW, big)));
        let updates = crate::testing::run(2, &[epoch], &[i64::MIN], |events, watermarks| {
            windowed_counts(events, watermarks, WindowSpec::new(WINDOW)).types
        });
        let rows = as_of(&updates, 0);
        let sums: Vec<(i64, u64, i64)> = rows
            .iter()
            .map(|r| (r.window_start_ms, r.count, r.sum_micros))
            .collect();
        assert_eq!(
            sums,
            vec![(t, 5, 5 * max), (t + WINDOW, 5, i64::MAX)],
            "exact when it fits, saturated (and logged) when not; never negative"
        );
        assert_eq!(report_sum(-(1i128 << 70)), i64::MIN);
        assert_eq!(report_sum(-5), -5);
    }
}
