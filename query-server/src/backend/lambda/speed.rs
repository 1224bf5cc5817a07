//! The speed layer's reads: Redis meta keys and window hashes.

use super::*;

/// Speed-layer metadata keys.
#[derive(Debug, Default)]
pub(super) struct Meta {
    pub(super) boundary: Option<i64>,
    pub(super) watermark: Option<i64>,
    pub(super) as_of: Option<i64>,
}

pub(super) fn parse_i64(v: Option<&String>) -> Option<i64> {
    v.and_then(|s| s.trim().parse().ok())
}

/// A finalized row as the batch layer (ClickHouse) answers it.
pub(super) fn batch_row(
    window_start_ms: i64,
    event_type: EventType,
    campaign_id: Option<u64>,
    count: u64,
    amounts: Option<Amounts>,
) -> WindowRow {
    WindowRow {
        window_start_ms,
        event_type,
        campaign_id,
        count,
        amounts,
        is_final: true,
        source: RowSource::Clickhouse,
    }
}

/// The amounts of a type series' row (windows and hours alike).
pub(super) fn type_amounts(
    sum_micros: i64,
    min_micros: Option<i64>,
    max_micros: Option<i64>,
) -> Amounts {
    Amounts {
        sum_micros,
        min_micros,
        max_micros,
    }
}

impl Meta {
    /// The reply of `MGET` on [`keys::meta`].
    pub(super) fn parse(vals: &[Option<String>]) -> Self {
        let at = |i: usize| parse_i64(vals.get(i).and_then(Option::as_ref));
        Self {
            boundary: at(0),
            watermark: at(1),
            as_of: at(2),
        }
    }
}

impl LambdaBackend {
    pub(super) async fn redis_conn(&self) -> redis::RedisResult<ConnectionManager> {
        let conn = self
            .redis
            .get_or_try_init(|| async {
                eddy_storage::redis_manager(&self.redis_client, self.timeout)
            })
            .await?;
        Ok(conn.clone())
    }

    pub(super) async fn redis_meta(&self) -> redis::RedisResult<Meta> {
        let mut conn = self.redis_conn().await?;
        let vals: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys::meta(&self.prefix)[..])
            .query_async(&mut conn)
            .await?;
        Ok(Meta::parse(&vals))
    }

    pub(super) fn index_key(&self, q: &WindowQuery, t: EventType) -> String {
        match q.campaign_id {
            None => keys::type_windows(&self.prefix, t),
            Some(c) => keys::campaign_windows(&self.prefix, c, t),
        }
    }

    /// Every window in the query's range that Redis still holds.
    pub(super) async fn redis_windows(&self, q: WindowQuery) -> redis::RedisResult<Vec<WindowRow>> {
        if q.from_ms >= q.to_ms {
            return Ok(Vec::new());
        }
        let mut conn = self.redis_conn().await?;
        let types = q.types();
        let mut pipe = redis::pipe();
        for &t in &types {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(self.index_key(&q, t))
                .arg(q.from_ms)
                .arg(q.to_ms - 1);
        }
        let members: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        let mut wanted: Vec<(EventType, i64)> = Vec::new();
        for (&t, starts) in types.iter().zip(members) {
            for m in starts {
                match m.parse::<i64>() {
                    Ok(s) if (q.from_ms..q.to_ms).contains(&s) => wanted.push((t, s)),
                    Ok(_) => {}
                    Err(_) => {
                        tracing::warn!(member = %m, "ignoring non-integer window index member")
                    }
                }
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for &(t, s) in &wanted {
            pipe.cmd("HGETALL")
                .arg(keys::window_in(&self.index_key(&q, t), s));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        let mut rows = Vec::with_capacity(wanted.len());
        for ((t, s), h) in wanted.into_iter().zip(hashes) {
            // An empty hash: the window key expired while its index entry remains.
            let Some(count) = h.get(wf::COUNT).and_then(|c| c.trim().parse::<u64>().ok()) else {
                continue;
            };
            let amounts = match q.campaign_id {
                Some(_) => None,
                None => Some(Amounts {
                    sum_micros: parse_i64(h.get(wf::SUM)).unwrap_or(0),
                    min_micros: parse_i64(h.get(wf::MIN)),
                    max_micros: parse_i64(h.get(wf::MAX)),
                }),
            };
            rows.push(WindowRow {
                window_start_ms: s,
                event_type: t,
                campaign_id: q.campaign_id,
                count,
                amounts,
                is_final: h.get(wf::FINAL).is_some_and(|f| f.trim() == "1"),
                source: RowSource::Redis,
            });
        }
        Ok(rows)
    }
}
