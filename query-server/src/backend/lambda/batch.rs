//! The batch layer's window reads: ClickHouse series, through the finalized-window cache.

use super::*;

impl LambdaBackend {
    /// The rows of `sql`, a query on one series (docs/storage.md): with the `campaign` bound
    /// first if any, then `from` and `to`, then the `event_type` if any (a query of one type).
    pub(super) async fn ch_series<R>(
        &self,
        sql: &str,
        campaign: Option<u64>,
        (from, to): (i64, i64),
        event_type: Option<EventType>,
    ) -> clickhouse::error::Result<Vec<R>>
    where
        R: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let mut query = self.ch_query(sql);
        if let Some(c) = campaign {
            query = query.bind(c);
        }
        query = query.bind(from).bind(to);
        if let Some(t) = event_type {
            query = query.bind(t.as_str());
        }
        query.fetch_all().await
    }

    /// Finalized windows with `from_ms <= start < to_ms` from ClickHouse.
    pub(super) async fn ch_windows(
        &self,
        q: WindowQuery,
        to_ms: i64,
    ) -> clickhouse::error::Result<Vec<WindowRow>> {
        let (c, t, range) = (q.campaign_id, q.event_type, (q.from_ms, to_ms));
        let row = |start, event_type: &str, count, amounts| {
            let event_type = EventType::parse(event_type)?;
            Some(batch_row(start, event_type, c, count, amounts))
        };
        Ok(match c {
            None => {
                let sql = match t {
                    None => TYPE_WINDOWS_QUERY,
                    Some(_) => TYPE_WINDOWS_OF_TYPE_QUERY,
                };
                let rows: Vec<TypeWindowRow> = self.ch_series(sql, c, range, t).await?;
                rows.into_iter()
                    .filter_map(|r| {
                        let amounts = type_amounts(r.sum_micros, r.min_micros, r.max_micros);
                        row(r.window_start_ms, &r.event_type, r.count, Some(amounts))
                    })
                    .collect()
            }
            Some(_) => {
                let sql = match t {
                    None => CAMPAIGN_WINDOWS_QUERY,
                    Some(_) => CAMPAIGN_WINDOWS_OF_TYPE_QUERY,
                };
                let rows: Vec<CampaignWindowRow> = self.ch_series(sql, c, range, t).await?;
                rows.into_iter()
                    .filter_map(|r| row(r.window_start_ms, &r.event_type, r.count, None))
                    .collect()
            }
        })
    }

    /// Finalized windows with `from_ms <= start < to_ms`: from the cache, reading ClickHouse
    /// only for the part of the range the cache lacks (see `batch_cache`).
    pub(super) async fn batch_windows(
        &self,
        q: WindowQuery,
        to_ms: i64,
    ) -> clickhouse::error::Result<Vec<WindowRow>> {
        let key = (q.campaign_id, q.event_type);
        let gaps = self.cache().gaps(key, q.from_ms, to_ms);
        for (from, to) in gaps {
            let rows = self
                .ch_windows(WindowQuery { from_ms: from, ..q }, to)
                .await?;
            self.cache().insert(key, from, to, rows);
        }
        let cached = self.cache().rows(key, q.from_ms, to_ms);
        match cached {
            Some(rows) => Ok(rows),
            // Another request replaced the span meanwhile: read the range directly.
            None => self.ch_windows(q, to_ms).await,
        }
    }

    pub(super) fn cache(&self) -> std::sync::MutexGuard<'_, BatchCache> {
        self.batch_cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watermark of the latest checkpoint recorded in ClickHouse, if any.
    pub(super) async fn ch_boundary(&self) -> clickhouse::error::Result<Option<i64>> {
        let b: LatestWatermarkRow = self.ch_query(LATEST_WATERMARK_QUERY).fetch_one().await?;
        Ok((b.checkpoints > 0).then_some(b.watermark_ms))
    }
}
