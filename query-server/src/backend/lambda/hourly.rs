//! `granularity=hour` over the batch layer: whole hours of finalized windows are read from the
//! hourly rollups (`type_windows_hourly`, `campaign_windows_hourly`, via
//! [`TYPE_HOURLY_QUERY`] / [`CAMPAIGN_HOURLY_QUERY`]) instead of summing their minute windows;
//! the parts of the batch range that are not whole hours (its edges, an hour cut by the
//! batch/speed boundary) are read as minute windows. Summing the rows per hour (as the route
//! does) therefore gives exactly the totals of the minute windows: the rollups equal the sums
//! of `… FINAL` per hour (`docs/storage.md`).

use super::{LambdaBackend, batch_row, type_amounts};
use crate::backend::batch_cache::{BatchCache, HourRow};
use crate::backend::{WindowQuery, WindowRow};
use eddy_core::EventType;
use eddy_storage::{CAMPAIGN_HOURLY_QUERY, CampaignHourlyRow, TYPE_HOURLY_QUERY, TypeHourlyRow};

/// One hour, ms.
pub(super) const HOUR_MS: i64 = 3_600_000;

/// The whole hours `[from, to)` inside `[from_ms, to_ms)` (every window starting in them lies
/// in the range), if any.
pub(super) fn whole_hours(from_ms: i64, to_ms: i64) -> Option<(i64, i64)> {
    let from = from_ms
        .div_euclid(HOUR_MS)
        .saturating_add(i64::from(from_ms.rem_euclid(HOUR_MS) != 0))
        * HOUR_MS;
    let to = to_ms.div_euclid(HOUR_MS) * HOUR_MS;
    (from < to).then_some((from, to))
}

/// Finalized rows with `from_ms <= start < to_ms` and how many native windows they hold.
pub(super) struct Finalized {
    pub(super) rows: Vec<WindowRow>,
    pub(super) windows: usize,
}

impl LambdaBackend {
    /// Finalized rows of `q` with `q.from_ms <= start < to_ms`: native windows, or with
    /// `hourly` whole hours from the rollups where the range holds them (native windows at the
    /// edges). `cached`: through the batch caches, only for ranges ending at or before the
    /// boundary (their rows never change).
    pub(super) async fn finalized(
        &self,
        q: WindowQuery,
        to_ms: i64,
        hourly: bool,
        cached: bool,
    ) -> clickhouse::error::Result<Finalized> {
        let minutes = |from_ms: i64, to_ms: i64| async move {
            let q = WindowQuery { from_ms, ..q };
            match (from_ms < to_ms, cached) {
                (false, _) => Ok(Vec::new()),
                (true, true) => self.batch_windows(q, to_ms).await,
                (true, false) => self.ch_windows(q, to_ms).await,
            }
        };
        let Some((hours_from, hours_to)) = whole_hours(q.from_ms, to_ms).filter(|_| hourly) else {
            let rows = minutes(q.from_ms, to_ms).await?;
            let windows = rows.len();
            return Ok(Finalized { rows, windows });
        };
        let hours = async {
            if cached {
                self.batch_hours(q, hours_from, hours_to).await
            } else {
                self.ch_hours(q, hours_from, hours_to).await
            }
        };
        // The leading edge is read directly: the minute cache keeps one span per series, best
        // spent on the trailing edge, which moves with the boundary.
        let lead = async {
            if q.from_ms < hours_from {
                self.ch_windows(q, hours_from).await
            } else {
                Ok(Vec::new())
            }
        };
        let (lead, hours, trail) = tokio::try_join!(lead, hours, minutes(hours_to, to_ms))?;
        let windows =
            lead.len() + trail.len() + hours.iter().map(|h| h.windows as usize).sum::<usize>();
        let mut rows = lead;
        rows.extend(hours.into_iter().map(|h| h.row));
        rows.extend(trail);
        Ok(Finalized { rows, windows })
    }

    /// Whole hours `[from, to)` of `q`'s series from the rollups, through the hour cache.
    async fn batch_hours(
        &self,
        q: WindowQuery,
        from: i64,
        to: i64,
    ) -> clickhouse::error::Result<Vec<HourRow>> {
        let key = (q.campaign_id, q.event_type);
        let gaps = self.hours_cache().gaps(key, from, to);
        for (gap_from, gap_to) in gaps {
            let rows = self.ch_hours(q, gap_from, gap_to).await?;
            self.hours_cache().insert(key, gap_from, gap_to, rows);
        }
        let cached = self.hours_cache().rows(key, from, to);
        match cached {
            Some(rows) => Ok(rows),
            None => self.ch_hours(q, from, to).await,
        }
    }

    fn hours_cache(&self) -> std::sync::MutexGuard<'_, BatchCache<HourRow>> {
        self.hours_cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hours with `from <= hour_start < to` of `q`'s series from the rollups.
    async fn ch_hours(
        &self,
        q: WindowQuery,
        from: i64,
        to: i64,
    ) -> clickhouse::error::Result<Vec<HourRow>> {
        let hour = |start, event_type: &str, count, amounts, windows| {
            let event_type = EventType::parse(event_type)
                .filter(|t| q.event_type.is_none_or(|wanted| wanted == *t))?;
            let row = batch_row(start, event_type, q.campaign_id, count, amounts);
            Some(HourRow { row, windows })
        };
        let c = q.campaign_id;
        Ok(match c {
            None => {
                let rows: Vec<TypeHourlyRow> = self
                    .ch_series(TYPE_HOURLY_QUERY, c, (from, to), None)
                    .await?;
                rows.into_iter()
                    .filter_map(|r| {
                        let amounts = type_amounts(r.sum_micros, r.min_micros, r.max_micros);
                        hour(
                            r.hour_start_ms,
                            &r.event_type,
                            r.count,
                            Some(amounts),
                            r.windows,
                        )
                    })
                    .collect()
            }
            Some(_) => {
                let rows: Vec<CampaignHourlyRow> = self
                    .ch_series(CAMPAIGN_HOURLY_QUERY, c, (from, to), None)
                    .await?;
                rows.into_iter()
                    .filter_map(|r| hour(r.hour_start_ms, &r.event_type, r.count, None, r.windows))
                    .collect()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_hours_are_the_aligned_hours_inside_the_range() {
        const H: i64 = HOUR_MS;
        assert_eq!(whole_hours(0, 2 * H), Some((0, 2 * H)));
        assert_eq!(whole_hours(1, 2 * H), Some((H, 2 * H)));
        assert_eq!(whole_hours(1, 2 * H - 1), None);
        assert_eq!(whole_hours(H - 1, 3 * H + 5), Some((H, 3 * H)));
        assert_eq!(whole_hours(-H - 1, 0), Some((-H, 0)));
        assert_eq!(whole_hours(5, 5), None);
    }
}
