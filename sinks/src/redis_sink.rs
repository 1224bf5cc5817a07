//! The Redis (speed layer) sink. Key layout: `docs/storage.md`.

use crate::{EpochSink, SinkError};
use eddy_core::config::RedisConfig;
use eddy_core::{CountsBatch, SimilarityBatch};
use eddy_storage::keys::{self, campaign as cf, type_window as wf};
use eddy_storage::{CampaignsValue, SimilarValue};
use redis::{Client, Connection, Pipeline};
use serde::Serialize;
use std::borrow::Cow;

fn to_json<T: Serialize>(value: &T) -> Result<String, SinkError> {
    serde_json::to_string(value).map_err(|e| SinkError::Data(format!("cannot encode json: {e}")))
}

/// Fails on the first non-finite `(campaign, score)`: Redis rejects a non-finite `ZADD` score
/// inside `EXEC` while applying the rest of the transaction, and JSON has no such numbers.
fn check_scores(mut scores: impl Iterator<Item = (u64, f64)>) -> Result<(), SinkError> {
    match scores.find(|(_, s)| !s.is_finite()) {
        None => Ok(()),
        Some((campaign, score)) => Err(SinkError::Data(format!(
            "non-finite score {score} for campaign {campaign} (check the engagement weights)"
        ))),
    }
}

/// Writes sink batches to Redis, one `MULTI … EXEC` transaction per batch.
///
/// Every value is absolute: each window hash is deleted and rewritten in full (so fields that
/// no longer apply disappear), then given the TTL `redis.window_ttl_secs`. Campaign
/// engagement hashes are rewritten the same way, the top list is replaced whole, and the
/// similar users and recommendations of a user are one JSON string each; those keys live
/// `sliding_ms / 1000 + redis.window_ttl_secs` seconds. The connection is re-established on the
/// next write after any failure.
pub struct RedisSink {
    client: Client,
    conn: Option<Connection>,
    prefix: String,
    ttl_secs: u64,
}

impl RedisSink {
    /// Connects to `cfg.url` and checks the server answers `PING`.
    pub fn connect(cfg: &RedisConfig) -> Result<Self, SinkError> {
        let mut sink = Self::lazy(cfg)?;
        let conn = sink.conn()?;
        redis::cmd("PING").query::<String>(conn)?;
        tracing::info!(url = %cfg.url, prefix = %cfg.prefix, "connected to redis");
        Ok(sink)
    }

    /// Like [`RedisSink::connect`] but only validates the URL: the connection is made by the
    /// first write (and re-made after failures). Useful when Redis may still be starting.
    pub fn lazy(cfg: &RedisConfig) -> Result<Self, SinkError> {
        let client = eddy_storage::redis_client(cfg)?;
        if cfg.window_ttl_secs == 0 {
            return Err(SinkError::Config(
                "redis.window_ttl_secs must be > 0".into(),
            ));
        }
        Ok(Self {
            client,
            conn: None,
            prefix: cfg.prefix.clone(),
            ttl_secs: cfg.window_ttl_secs,
        })
    }

    /// Writes the batch/speed boundary (`{p}:boundary`, the watermark of the last checkpoint)
    /// and `{p}:as_of` (wall-clock ms now) in one transaction.
    pub fn write_boundary(&mut self, boundary_ms: i64) -> Result<(), SinkError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set(keys::boundary(&self.prefix), boundary_ms)
            .ignore()
            .set(keys::as_of(&self.prefix), eddy_core::now_ms())
            .ignore();
        self.exec(&pipe)
    }

    /// The transaction that writes `batch`.
    fn transaction(&self, batch: &CountsBatch) -> Result<Pipeline, SinkError> {
        check_scores(
            batch
                .engagement
                .iter()
                .chain(batch.top_campaigns.iter().flatten())
                .map(|e| (e.campaign_id, e.score.0)),
        )?;
        let p = &self.prefix;
        let ttl = self.ttl_secs as i64;
        // Zset members whose window starts more than the TTL before the batch's watermark are
        // trimmed: their hashes have expired (or soon will).
        let horizon = batch
            .watermark_ms
            .saturating_sub(self.ttl_secs as i64 * 1000);
        let mut pipe = redis::pipe();
        pipe.atomic();

        let mut type_sets = std::collections::BTreeSet::new();
        let types = batch
            .open_types
            .iter()
            .map(|r| (r, 0))
            .chain(batch.final_types.iter().map(|r| (r, 1)));
        for (r, is_final) in types {
            let key = keys::type_window(p, r.event_type, r.window_start_ms);
            pipe.del(&key).ignore();
            let mut fields: Vec<(&str, i64)> = vec![
                (wf::COUNT, r.count as i64),
                (wf::SUM, r.sum_micros),
                (wf::FINAL, is_final),
                (wf::EPOCH, batch.epoch as i64),
            ];
            if let Some(min) = r.min_micros {
                fields.push((wf::MIN, min));
            }
            if let Some(max) = r.max_micros {
                fields.push((wf::MAX, max));
            }
            pipe.hset_multiple(&key, &fields).ignore();
            pipe.expire(&key, ttl).ignore();
            let set = keys::type_windows(p, r.event_type);
            pipe.zadd(&set, r.window_start_ms, r.window_start_ms)
                .ignore();
            type_sets.insert(set);
        }
        for set in &type_sets {
            pipe.zrembyscore(set, "-inf", format!("({horizon}"))
                .ignore();
        }

        let mut campaign_sets = std::collections::BTreeSet::new();
        let campaigns = batch
            .open_campaigns
            .iter()
            .map(|r| (r, 0))
            .chain(batch.final_campaigns.iter().map(|r| (r, 1)));
        for (r, is_final) in campaigns {
            let key = keys::campaign_window(p, r.campaign_id, r.event_type, r.window_start_ms);
            pipe.del(&key).ignore();
            let fields: [(&str, i64); 3] = [
                (wf::COUNT, r.count as i64),
                (wf::FINAL, is_final),
                (wf::EPOCH, batch.epoch as i64),
            ];
            pipe.hset_multiple(&key, &fields).ignore();
            pipe.expire(&key, ttl).ignore();
            let set = keys::campaign_windows(p, r.campaign_id, r.event_type);
            pipe.zadd(&set, r.window_start_ms, r.window_start_ms)
                .ignore();
            campaign_sets.insert(set);
        }
        for set in &campaign_sets {
            pipe.zrembyscore(set, "-inf", format!("({horizon}"))
                .ignore();
            pipe.expire(set, ttl).ignore();
        }

        self.engagement(&mut pipe, batch);
        pipe.set(keys::watermark(p), batch.watermark_ms).ignore();
        Ok(pipe)
    }

    /// Adds the engagement and top list of `batch` to `pipe`.
    fn engagement(&self, pipe: &mut Pipeline, batch: &CountsBatch) {
        let p = &self.prefix;
        let ttl = (batch.sliding_ms.max(0) / 1000).saturating_add(self.ttl_secs as i64);
        let as_of = batch.watermark_ms;
        for e in &batch.engagement {
            let key = keys::campaign(p, e.campaign_id);
            pipe.del(&key).ignore();
            let fields: [(&str, String); 7] = [
                (cf::VIEWS, e.views.to_string()),
                (cf::CLICKS, e.clicks.to_string()),
                (cf::CONVERSIONS, e.conversions.to_string()),
                (cf::REVENUE, e.revenue_micros.to_string()),
                (cf::SCORE, e.score.0.to_string()),
                (cf::AS_OF, as_of.to_string()),
                (cf::EPOCH, batch.epoch.to_string()),
            ];
            pipe.hset_multiple(&key, &fields).ignore();
            pipe.expire(&key, ttl).ignore();
        }
        for c in &batch.engagement_removed {
            pipe.del(keys::campaign(p, *c)).ignore();
        }
        if let Some(top) = &batch.top_campaigns {
            let key = keys::top_campaigns(p);
            pipe.del(&key).ignore();
            if !top.is_empty() {
                let members: Vec<(f64, u64)> =
                    top.iter().map(|e| (e.score.0, e.campaign_id)).collect();
                pipe.zadd_multiple(&key, &members).ignore();
            }
            pipe.set(keys::top_campaigns_as_of(p), as_of).ignore();
        }
    }

    /// The transaction that writes a batch of the slow path: one JSON value per user (deleted
    /// when the list is empty), stamped with the batch's `as_of_ms`. The slow path lags the
    /// fast path, so it never writes the watermark.
    fn similarity_transaction(&self, batch: &SimilarityBatch) -> Result<Pipeline, SinkError> {
        let p = &self.prefix;
        let ttl = (batch.sliding_ms.max(0) / 1000).saturating_add(self.ttl_secs as i64);
        let as_of = batch.as_of_ms;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for s in &batch.similar {
            let key = keys::user_similar(p, s.user_id);
            if s.neighbors.is_empty() {
                pipe.del(&key).ignore();
            } else {
                let value = to_json(&SimilarValue {
                    as_of,
                    neighbors: Cow::Borrowed(&s.neighbors),
                })?;
                pipe.set_ex(&key, value, ttl as u64).ignore();
            }
        }
        for c in &batch.campaigns {
            let key = keys::user_campaigns(p, c.user_id);
            if c.campaigns.is_empty() {
                pipe.del(&key).ignore();
            } else {
                let value = to_json(&CampaignsValue {
                    as_of,
                    campaigns: Cow::Borrowed(&c.campaigns),
                })?;
                pipe.set_ex(&key, value, ttl as u64).ignore();
            }
        }
        Ok(pipe)
    }

    fn conn(&mut self) -> Result<&mut Connection, SinkError> {
        if self.conn.is_none() {
            self.conn = Some(eddy_storage::redis_connection(&self.client)?);
        }
        Ok(self.conn.as_mut().expect("connection was just set"))
    }

    fn exec(&mut self, pipe: &Pipeline) -> Result<(), SinkError> {
        let result = pipe.exec(self.conn()?);
        if let Err(e) = result {
            // A failed request may leave the connection mid-response: start afresh next time.
            self.conn = None;
            return Err(e.into());
        }
        Ok(())
    }
}

impl EpochSink<CountsBatch> for RedisSink {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn write(&mut self, batch: &CountsBatch) -> Result<(), SinkError> {
        let pipe = self.transaction(batch)?;
        self.exec(&pipe)?;
        tracing::debug!(
            epoch = batch.epoch,
            rows = batch.open_types.len()
                + batch.final_types.len()
                + batch.open_campaigns.len()
                + batch.final_campaigns.len(),
            engagement = batch.engagement.len() + batch.engagement_removed.len(),
            "redis batch written"
        );
        Ok(())
    }
}

impl EpochSink<SimilarityBatch> for RedisSink {
    fn name(&self) -> &'static str {
        "redis"
    }

    /// Writes the similar users and sets (interaction panes live in ClickHouse only).
    fn write(&mut self, batch: &SimilarityBatch) -> Result<(), SinkError> {
        if batch.similar.is_empty() && batch.campaigns.is_empty() {
            return Ok(());
        }
        let pipe = self.similarity_transaction(batch)?;
        self.exec(&pipe)?;
        tracing::debug!(
            epoch = batch.epoch,
            users = batch.similar.len() + batch.campaigns.len(),
            "redis similarity batch written"
        );
        Ok(())
    }
}
