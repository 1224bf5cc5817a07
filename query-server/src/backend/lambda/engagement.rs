//! Engagement, similar users and recommendations of [`LambdaBackend`], cache-aside: Redis
//! first (`docs/storage.md`: `{p}:campaign:*`, `{p}:campaigns:top`, `{p}:user:*`); on a miss
//! or a Redis failure, ClickHouse (`campaign_engagement` panes summed over the sliding window
//! ending at the batch/speed boundary, or the latest `user_similar` / `user_campaigns`
//! snapshot). Recommendations are ranked at read time from the similar users, their sets and
//! the campaigns' scores ([`eddy_core::recommend`]). Keys, values, rows and queries are the
//! storage contract's ([`eddy_storage`]).

use super::{LambdaBackend, Meta, parse_i64};
use crate::backend::negative_cache::Missing;
use crate::backend::{BackendError, EngagementQuery, Sourced, Store};
use eddy_core::{CampaignEngagement, Neighbor, Recommendation, Score, recommend};
use eddy_storage::keys::{self, campaign as cf};
use eddy_storage::{
    CAMPAIGN_ENGAGEMENT_QUERY, CAMPAIGNS_ENGAGEMENT_QUERY, CampaignsValue, ENGAGEMENT_QUERY,
    EngagementSumRow, LATEST_CAMPAIGNS_QUERY, LATEST_SIMILAR_QUERY, SimilarValue, UserCampaignsRow,
    UserSimilarRow,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

/// A value found in Redis: the value and the watermark it reflects.
type Hit<T> = Option<(T, i64)>;

/// Orders campaigns best first: higher score, then lower campaign id.
fn rank(list: &mut [CampaignEngagement]) {
    list.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then(a.campaign_id.cmp(&b.campaign_id))
    });
}

/// A campaign hash (`views`, `clicks`, `conversions`, `revenue`, `score`, `as_of`); `None`
/// when it is empty (absent) or malformed.
fn parse_campaign(campaign_id: u64, h: &HashMap<String, String>) -> Hit<CampaignEngagement> {
    if h.is_empty() {
        return None;
    }
    let u = |k: &str| h.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let parsed = (|| {
        Some((
            CampaignEngagement {
                campaign_id,
                views: u(cf::VIEWS)?,
                clicks: u(cf::CLICKS)?,
                conversions: u(cf::CONVERSIONS)?,
                revenue_micros: parse_i64(h.get(cf::REVENUE))?,
                score: Score(h.get(cf::SCORE)?.trim().parse::<f64>().ok()?),
            },
            parse_i64(h.get(cf::AS_OF))?,
        ))
    })();
    if parsed.is_none() {
        tracing::warn!(campaign_id, "ignoring a malformed campaign hash in redis");
    }
    parsed
}

/// A JSON string value; `None` when absent or malformed (logged).
fn parse_json<J: serde::de::DeserializeOwned>(key: &str, raw: Option<String>) -> Option<J> {
    let raw = raw?;
    match serde_json::from_str(&raw) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key, error = %e, "ignoring malformed json in redis");
            None
        }
    }
}

/// Why the cache could not answer, for error messages.
fn redis_reason(redis_err: &Option<String>) -> &str {
    redis_err.as_deref().unwrap_or("redis: no cached value")
}

impl LambdaBackend {
    /// `cmd`'s reply and the speed-layer metadata (`{p}:boundary`, `{p}:watermark`,
    /// `{p}:as_of`), in one round trip.
    async fn redis_with_meta<T: redis::FromRedisValue>(
        &self,
        cmd: redis::Cmd,
    ) -> redis::RedisResult<(T, Meta)> {
        let mut conn = self.redis_conn().await?;
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        pipe.cmd("MGET").arg(&keys::meta(&self.prefix)[..]);
        let (value, meta): (T, Vec<Option<String>>) = pipe.query_async(&mut conn).await?;
        Ok((value, Meta::parse(&meta)))
    }

    async fn redis_campaign(&self, id: u64) -> redis::RedisResult<(Hit<CampaignEngagement>, Meta)> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(keys::campaign(&self.prefix, id));
        let (h, meta): (HashMap<String, String>, Meta) = self.redis_with_meta(cmd).await?;
        Ok((parse_campaign(id, &h), meta))
    }

    /// The top list: members of `{p}:campaigns:top` ranked by score (ties: lower id first),
    /// each read from its campaign hash (members whose hash is gone, having left the window
    /// since the list was written, are skipped), the first `k`. A miss when
    /// `{p}:campaigns:top:as_of` is absent.
    async fn redis_top(
        &self,
        k: usize,
    ) -> redis::RedisResult<(Hit<Vec<CampaignEngagement>>, Meta)> {
        let p = &self.prefix;
        let mut cmd = redis::cmd("MGET");
        cmd.arg(keys::top_campaigns_as_of(p));
        let (as_of, meta): (Vec<Option<String>>, Meta) = self.redis_with_meta(cmd).await?;
        let Some(as_of) = parse_i64(as_of.first().and_then(Option::as_ref)) else {
            return Ok((None, meta));
        };
        let mut conn = self.redis_conn().await?;
        let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(keys::top_campaigns(p))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let mut ranked: Vec<(u64, f64)> = members
            .into_iter()
            .filter_map(|(m, s)| m.parse::<u64>().ok().map(|id| (id, s)))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if ranked.is_empty() {
            return Ok((Some((Vec::new(), as_of)), meta));
        }
        // Read the first k hashes; only if some are gone, read the rest of the list.
        let mut list = Vec::with_capacity(k);
        for chunk in [
            &ranked[..k.min(ranked.len())],
            &ranked[k.min(ranked.len())..],
        ] {
            if list.len() >= k || chunk.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for (id, _) in chunk {
                pipe.cmd("HGETALL").arg(keys::campaign(p, *id));
            }
            let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
            list.extend(
                chunk
                    .iter()
                    .zip(&hashes)
                    .filter_map(|((id, _), h)| parse_campaign(*id, h).map(|(e, _)| e))
                    .take(k - list.len()),
            );
        }
        Ok((Some((list, as_of)), meta))
    }

    async fn redis_user<J: serde::de::DeserializeOwned>(
        &self,
        key: String,
    ) -> redis::RedisResult<(Option<J>, Meta)> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(&key);
        let (raw, meta): (Option<String>, Meta) = self.redis_with_meta(cmd).await?;
        Ok((parse_json(&key, raw), meta))
    }

    /// The batch/speed boundary for a ClickHouse answer: Redis's `{p}:boundary` when Redis
    /// answered and holds one, else the latest checkpoint's watermark in ClickHouse.
    async fn fallback_boundary(
        &self,
        meta: Option<&Meta>,
        redis_err: &Option<String>,
    ) -> Result<Option<i64>, BackendError> {
        if let Some(b) = meta.and_then(|m| m.boundary) {
            return Ok(Some(b));
        }
        self.timed("clickhouse", self.ch_boundary())
            .await
            .map_err(|e| BackendError::Unavailable(format!("{}; {e}", redis_reason(redis_err))))
    }

    /// Sliding-window engagement as of boundary `b` from ClickHouse (one campaign, some, or
    /// all), scored with `q.weights`, best first.
    async fn ch_engagement(
        &self,
        q: EngagementQuery,
        b: i64,
        campaigns: Campaigns<'_>,
    ) -> clickhouse::error::Result<Vec<CampaignEngagement>> {
        let last_start = b.saturating_sub(q.window_ms);
        let after_start = b.saturating_sub(q.sliding_ms);
        let query = match campaigns {
            Campaigns::One(c) => self.ch_query(CAMPAIGN_ENGAGEMENT_QUERY).bind(c),
            Campaigns::Some(ids) => self.ch_query(CAMPAIGNS_ENGAGEMENT_QUERY).bind(ids),
            Campaigns::All => self.ch_query(ENGAGEMENT_QUERY),
        };
        let rows: Vec<EngagementSumRow> =
            query.bind(last_start).bind(after_start).fetch_all().await?;
        let mut list: Vec<CampaignEngagement> = rows
            .into_iter()
            .map(|r| CampaignEngagement {
                campaign_id: r.campaign_id,
                views: r.views,
                clicks: r.clicks,
                conversions: r.conversions,
                revenue_micros: r.revenue_micros,
                score: q.weights.score(r.views, r.clicks, r.conversions),
            })
            .collect();
        rank(&mut list);
        Ok(list)
    }

    async fn ch_similar(&self, user_id: u64) -> Result<Hit<Vec<Neighbor>>, String> {
        let row: Option<UserSimilarRow> = self
            .ch_query(LATEST_SIMILAR_QUERY)
            .bind(user_id)
            .fetch_optional()
            .await
            .map_err(|e| e.to_string())?;
        let Some(r) = row else { return Ok(None) };
        if r.shared.len() != r.neighbors.len() || r.union_size.len() != r.neighbors.len() {
            return Err(format!(
                "user_similar snapshot of user {user_id} has arrays of different lengths"
            ));
        }
        let neighbors: Vec<Neighbor> = r
            .neighbors
            .iter()
            .zip(&r.shared)
            .zip(&r.union_size)
            .map(|((&user_id, &shared), &union)| Neighbor {
                user_id,
                shared,
                union,
            })
            .collect();
        Ok((!neighbors.is_empty()).then_some((neighbors, r.as_of_ms)))
    }

    /// The latest interaction set of each of `users` in ClickHouse (users without a snapshot
    /// are absent), with its `as_of_ms`.
    async fn ch_sets(&self, users: &[u64]) -> Result<BTreeMap<u64, (Vec<u64>, i64)>, String> {
        if users.is_empty() {
            return Ok(BTreeMap::new());
        }
        let rows: Vec<UserCampaignsRow> = self
            .ch_query(LATEST_CAMPAIGNS_QUERY)
            .bind(users)
            .fetch_all()
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(|r| (r.user_id, (r.campaigns, r.as_of_ms)))
            .collect())
    }

    /// Cache-aside for a value Redis may hold: `redis` gives the cached value (and metadata);
    /// on a miss or failure `clickhouse(meta, redis_err)` gives the batch layer's.
    async fn cache_aside<T, R, C, CF>(
        &self,
        what: &str,
        redis: R,
        clickhouse: C,
    ) -> Result<Option<Sourced<T>>, BackendError>
    where
        R: std::future::Future<Output = redis::RedisResult<(Hit<T>, Meta)>>,
        C: FnOnce(Option<Meta>, Option<String>) -> CF,
        CF: std::future::Future<Output = Result<Hit<T>, BackendError>>,
    {
        let (meta, redis_err) = match self.timed("redis", redis).await {
            Ok((Some((value, as_of_ms)), meta)) => {
                // A value unchanged since it was written still holds at the boundary: every
                // worker wrote every change up to the checkpoint.
                return Ok(Some(Sourced {
                    value,
                    as_of_ms: meta.boundary.map_or(as_of_ms, |b| b.max(as_of_ms)),
                    updated_at_ms: meta.as_of,
                    source: Store::Redis,
                }));
            }
            Ok((None, meta)) => {
                tracing::debug!(what, "redis miss: reading clickhouse");
                (Some(meta), None)
            }
            Err(e) => {
                tracing::warn!(what, error = %e, "redis failed: reading clickhouse");
                (None, Some(e))
            }
        };
        let updated_at_ms = meta.as_ref().and_then(|m| m.as_of);
        let found = clickhouse(meta, redis_err).await?;
        Ok(found.map(|(value, as_of_ms)| Sourced {
            value,
            as_of_ms,
            updated_at_ms,
            source: Store::Clickhouse,
        }))
    }

    pub(super) async fn campaign_answer(
        &self,
        q: EngagementQuery,
        id: u64,
    ) -> Result<Option<Sourced<CampaignEngagement>>, BackendError> {
        self.cache_aside(
            "campaign",
            self.redis_campaign(id),
            |meta, redis_err| async move {
                let Some(b) = self.fallback_boundary(meta.as_ref(), &redis_err).await? else {
                    return Ok(None);
                };
                let key = Missing::Campaign(id);
                if self.negative().is_missing(key, Some(b), Instant::now()) {
                    return Ok(None);
                }
                let list = self
                    .timed("clickhouse", self.ch_engagement(q, b, Campaigns::One(id)))
                    .await
                    .map_err(|e| {
                        BackendError::Unavailable(format!("{}; {e}", redis_reason(&redis_err)))
                    })?;
                let found = list.into_iter().next();
                if found.is_none() {
                    self.negative().insert(key, Some(b), Instant::now());
                }
                Ok(found.map(|e| (e, b)))
            },
        )
        .await
    }

    pub(super) async fn top_answer(
        &self,
        q: EngagementQuery,
        k: usize,
    ) -> Result<Option<Sourced<Vec<CampaignEngagement>>>, BackendError> {
        self.cache_aside(
            "top campaigns",
            self.redis_top(k),
            |meta, redis_err| async move {
                let Some(b) = self.fallback_boundary(meta.as_ref(), &redis_err).await? else {
                    return Ok(None);
                };
                let mut list = self
                    .timed("clickhouse", self.ch_engagement(q, b, Campaigns::All))
                    .await
                    .map_err(|e| {
                        BackendError::Unavailable(format!("{}; {e}", redis_reason(&redis_err)))
                    })?;
                list.truncate(k);
                Ok(Some((list, b)))
            },
        )
        .await
    }

    pub(super) async fn similar_answer(
        &self,
        user_id: u64,
    ) -> Result<Option<Sourced<Vec<Neighbor>>>, BackendError> {
        let key = keys::user_similar(&self.prefix, user_id);
        self.user_answer(
            "similar users",
            Missing::Similar(user_id),
            key,
            |j: SimilarValue| (j.neighbors.into_owned(), j.as_of),
            self.ch_similar(user_id),
        )
        .await
    }

    /// The top `n` recommendations of `user_id`, ranked now ([`recommend`]) from its similar
    /// users ([`Self::similar_answer`]), the interaction sets of the user and of each similar
    /// user (`{p}:user:{id}:campaigns` in one `MGET`; those Redis does not hold, from their
    /// latest `user_campaigns` snapshot) and the candidate campaigns' engagement scores as
    /// [`Self::campaign_answer`] reads them (their Redis hashes in one pipeline; those Redis
    /// does not hold, summed from ClickHouse panes at the boundary in one query, unless the
    /// negative cache knows them missing). `as_of_ms` is the latest among the values used; the
    /// source is ClickHouse when any of them came from it.
    pub(super) async fn recommendations_answer(
        &self,
        q: EngagementQuery,
        user_id: u64,
        n: usize,
    ) -> Result<Option<Sourced<Vec<Recommendation>>>, BackendError> {
        let Some(similar) = self.similar_answer(user_id).await? else {
            return Ok(None);
        };
        let mut source = similar.source;
        let mut as_of_ms = similar.as_of_ms;
        let mut users: Vec<u64> = vec![user_id];
        users.extend(similar.value.iter().map(|nb| nb.user_id));
        // Interaction sets: Redis first, the rest from ClickHouse.
        let mut sets: BTreeMap<u64, (Vec<u64>, i64)> = BTreeMap::new();
        let redis_up = match self.timed("redis", self.redis_sets(&users)).await {
            Ok(found) => {
                sets = found;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis failed: reading sets from clickhouse");
                false
            }
        };
        let missing: Vec<u64> = users
            .iter()
            .copied()
            .filter(|u| !sets.contains_key(u))
            .collect();
        if !missing.is_empty() {
            let found = self
                .timed("clickhouse", self.ch_sets(&missing))
                .await
                .map_err(|e| BackendError::Unavailable(format!("interaction sets: {e}")))?;
            source = Store::Clickhouse;
            sets.extend(found);
        }
        let set_of = |u: u64| -> &[u64] { sets.get(&u).map_or(&[], |(s, _)| s.as_slice()) };
        let mine = set_of(user_id);
        let theirs: Vec<&[u64]> = similar.value.iter().map(|nb| set_of(nb.user_id)).collect();
        let candidates: BTreeSet<u64> = theirs
            .iter()
            .flat_map(|s| s.iter().copied())
            .filter(|c| mine.binary_search(c).is_err())
            .collect();
        let candidates: Vec<u64> = candidates.into_iter().collect();
        // Scores of the candidates, as `/v1/campaigns/{id}` reads them: the Redis hash, else
        // the panes in ClickHouse at the boundary (unless known missing there).
        let mut scores: BTreeMap<u64, (Score, i64)> = BTreeMap::new();
        let mut scored_by_clickhouse: BTreeSet<u64> = BTreeSet::new();
        let mut meta = None;
        if redis_up && !candidates.is_empty() {
            let (found, m) = self
                .timed("redis", self.redis_scores(&candidates))
                .await
                .map_err(|e| BackendError::Unavailable(format!("campaign scores: {e}")))?;
            scores = found;
            meta = Some(m);
        }
        let missing: Vec<u64> = candidates
            .iter()
            .copied()
            .filter(|c| !scores.contains_key(c))
            .collect();
        if !missing.is_empty()
            && let Some(b) = self.fallback_boundary(meta.as_ref(), &None).await?
        {
            let now = Instant::now();
            let missing: Vec<u64> = missing
                .into_iter()
                .filter(|c| {
                    !self
                        .negative()
                        .is_missing(Missing::Campaign(*c), Some(b), now)
                })
                .collect();
            if !missing.is_empty() {
                let found = self
                    .timed(
                        "clickhouse",
                        self.ch_engagement(q, b, Campaigns::Some(&missing)),
                    )
                    .await
                    .map_err(|e| BackendError::Unavailable(format!("campaign scores: {e}")))?;
                for e in found {
                    scored_by_clickhouse.insert(e.campaign_id);
                    scores.insert(e.campaign_id, (e.score, b));
                }
                for c in missing {
                    if !scores.contains_key(&c) {
                        self.negative().insert(Missing::Campaign(c), Some(b), now);
                    }
                }
            }
        }
        let value = recommend(
            &similar.value,
            &theirs,
            mine,
            |c| scores.get(&c).map(|(s, _)| *s),
            n,
        );
        if value.is_empty() {
            return Ok(None);
        }
        for u in &users {
            if let Some((_, a)) = sets.get(u) {
                as_of_ms = as_of_ms.max(*a);
            }
        }
        for r in &value {
            if let Some((_, a)) = scores.get(&r.campaign_id) {
                as_of_ms = as_of_ms.max(*a);
            }
        }
        if value
            .iter()
            .any(|r| scored_by_clickhouse.contains(&r.campaign_id))
        {
            source = Store::Clickhouse;
        }
        Ok(Some(Sourced {
            value,
            as_of_ms,
            updated_at_ms: similar.updated_at_ms,
            source,
        }))
    }

    /// The interaction sets Redis holds for `users` (one `MGET`), with their `as_of`.
    async fn redis_sets(
        &self,
        users: &[u64],
    ) -> redis::RedisResult<BTreeMap<u64, (Vec<u64>, i64)>> {
        let keys: Vec<String> = users
            .iter()
            .map(|u| keys::user_campaigns(&self.prefix, *u))
            .collect();
        let mut conn = self.redis_conn().await?;
        let raw: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        Ok(users
            .iter()
            .zip(keys.iter().zip(raw))
            .filter_map(|(u, (key, raw))| {
                parse_json::<CampaignsValue>(key, raw)
                    .map(|v| (*u, (v.campaigns.into_owned(), v.as_of)))
            })
            .collect())
    }

    /// The engagement scores of `campaigns` found in their Redis hashes (one pipeline), with
    /// each hash's `as_of`, and the speed-layer metadata.
    async fn redis_scores(
        &self,
        campaigns: &[u64],
    ) -> redis::RedisResult<(BTreeMap<u64, (Score, i64)>, Meta)> {
        let mut conn = self.redis_conn().await?;
        let mut pipe = redis::pipe();
        // Two fields per campaign, not the whole hash: a heavy user has hundreds of candidates.
        for c in campaigns {
            pipe.cmd("HMGET")
                .arg(keys::campaign(&self.prefix, *c))
                .arg(cf::SCORE)
                .arg(cf::AS_OF);
        }
        pipe.cmd("MGET").arg(&keys::meta(&self.prefix)[..]);
        let mut replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let meta: Vec<Option<String>> =
            redis::from_redis_value(replies.pop().unwrap_or(redis::Value::Nil))?;
        let mut scores = BTreeMap::new();
        for (c, reply) in campaigns.iter().zip(replies) {
            let fields: Vec<Option<String>> = redis::from_redis_value(reply)?;
            let score = fields
                .first()
                .and_then(Option::as_ref)
                .and_then(|v| v.trim().parse::<f64>().ok());
            let as_of = parse_i64(fields.get(1).and_then(Option::as_ref));
            if let (Some(score), Some(as_of)) = (score, as_of) {
                scores.insert(*c, (Score(score), as_of));
            }
        }
        Ok((scores, Meta::parse(&meta)))
    }

    /// Cache-aside for a per-user list: the JSON at `key` in Redis (an empty list is a miss),
    /// else the latest ClickHouse snapshot from `clickhouse`, unless the negative cache knows
    /// `missing` is missing at the boundary Redis gave (none with Redis down: then the TTL
    /// alone bounds the entry).
    async fn user_answer<T, J>(
        &self,
        what: &str,
        missing: Missing,
        key: String,
        from_json: impl FnOnce(J) -> (Vec<T>, i64),
        clickhouse: impl std::future::Future<Output = Result<Hit<Vec<T>>, String>>,
    ) -> Result<Option<Sourced<Vec<T>>>, BackendError>
    where
        J: serde::de::DeserializeOwned,
    {
        let redis = async {
            let (json, meta) = self.redis_user::<J>(key).await?;
            let hit = json.map(from_json).filter(|(list, _)| !list.is_empty());
            Ok((hit, meta))
        };
        self.cache_aside(what, redis, |meta, redis_err| async move {
            let boundary = meta.as_ref().and_then(|m| m.boundary);
            if self
                .negative()
                .is_missing(missing, boundary, Instant::now())
            {
                return Ok(None);
            }
            let found = self.timed("clickhouse", clickhouse).await.map_err(|e| {
                BackendError::Unavailable(format!("{}; {e}", redis_reason(&redis_err)))
            })?;
            if found.is_none() {
                self.negative().insert(missing, boundary, Instant::now());
                return Ok(None);
            }
            // The latest snapshot still holds at the boundary (a later change would have
            // written a newer one before the checkpoint).
            let b = self
                .fallback_boundary(meta.as_ref(), &redis_err)
                .await
                .ok()
                .flatten();
            Ok(found.map(|(v, a)| (v, b.map_or(a, |b| b.max(a)))))
        })
        .await
    }
}

/// Which campaigns [`LambdaBackend::ch_engagement`] reads.
#[derive(Clone, Copy)]
enum Campaigns<'a> {
    One(u64),
    Some(&'a [u64]),
    All,
}
