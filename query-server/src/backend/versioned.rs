//! [`VersionedBackend`]: the production backend of `eddy serve`, answering each request from
//! the output version `{prefix}:serving` names (`eddy_core::version`), switched by
//! `eddy promote` without restarting any server.

use super::{
    Backend, BackendAnswer, BackendError, BoxFuture, EngagementQuery, LambdaBackend, Sourced,
    StoreHealth, WindowQuery,
};
use eddy_core::config::{ClickHouseConfig, RedisConfig};
use eddy_core::version::{self, Version};
use eddy_core::{CampaignEngagement, Neighbor, Recommendation};
use std::sync::{Arc, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often `eddy serve` re-reads which version to serve.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// A [`LambdaBackend`] per served version: every call is answered by the version served when
/// it began (one request, one version), and [`VersionedBackend::refresh`] moves to the
/// version `{prefix}:serving` names, building a fresh backend for it (no I/O; its caches start
/// empty).
pub struct VersionedBackend {
    redis: RedisConfig,
    clickhouse: ClickHouseConfig,
    served: RwLock<(Version, Arc<LambdaBackend>)>,
}

impl std::fmt::Debug for VersionedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionedBackend")
            .field("serving", &self.serving())
            .finish_non_exhaustive()
    }
}

impl VersionedBackend {
    /// Serves the base version of the stores of `redis` / `clickhouse` (their prefix and
    /// database are the base outputs') until a refresh reads another. No I/O happens here.
    pub fn new(redis: &RedisConfig, clickhouse: &ClickHouseConfig) -> Result<Self, BackendError> {
        let base = LambdaBackend::new(redis, clickhouse)?;
        Ok(Self {
            redis: redis.clone(),
            clickhouse: clickhouse.clone(),
            served: RwLock::new((Version::Base, Arc::new(base))),
        })
    }

    /// The version served now.
    pub fn serving(&self) -> Version {
        self.read().0.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (Version, Arc<LambdaBackend>)> {
        self.served.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The backend of the version served now.
    fn current(&self) -> Arc<LambdaBackend> {
        self.read().1.clone()
    }

    /// Serves `version` from now on (calls already started finish on the old one). Returns
    /// whether it changed.
    pub fn switch_to(&self, version: &Version) -> Result<bool, BackendError> {
        if self.read().0 == *version {
            return Ok(false);
        }
        let mut redis = self.redis.clone();
        redis.prefix = version::redis_prefix(&self.redis.prefix, version);
        let mut clickhouse = self.clickhouse.clone();
        clickhouse.database = version::database(&self.clickhouse.database, version);
        let backend = LambdaBackend::new(&redis, &clickhouse)?;
        let mut served = self.served.write().unwrap_or_else(|e| e.into_inner());
        let before = std::mem::replace(&mut *served, (version.clone(), Arc::new(backend))).0;
        tracing::info!(version = %version, before = %before, "serving output version");
        Ok(true)
    }

    /// Reads `{prefix}:serving` on `con` and switches to the version it names; an absent key
    /// keeps the version served (nothing promoted yet, or Redis lost the key).
    pub fn refresh(&self, con: &mut impl redis::ConnectionLike) -> Result<bool, BackendError> {
        let unavailable = |e: eddy_storage::StorageError| BackendError::Unavailable(e.to_string());
        match eddy_storage::versions::serving_stored(con, &self.redis.prefix)
            .map_err(unavailable)?
        {
            Some(version) => self.switch_to(&version),
            None => Ok(false),
        }
    }

    /// Refreshes now (waiting up to `every` for Redis), then every `every` on a thread of its
    /// own until `this` is dropped. A failed read keeps the version served (logged once per
    /// run of failures).
    pub fn spawn_refresher(this: &Arc<Self>, every: Duration) -> std::io::Result<JoinHandle<()>> {
        let client = eddy_storage::redis_client(&this.redis)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let first = eddy_storage::redis_connection(&client)
            .map_err(|e| BackendError::Unavailable(e.to_string()))
            .and_then(|mut c| this.refresh(&mut c).map(|_| c));
        let mut con = match first {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the served version yet: serving base until it can be read");
                None
            }
        };
        let weak: Weak<Self> = Arc::downgrade(this);
        std::thread::Builder::new()
            .name("eddy-serving".into())
            .spawn(move || {
                let mut failing = con.is_none();
                loop {
                    std::thread::sleep(every);
                    let Some(this) = weak.upgrade() else { return };
                    let result = match con.as_mut() {
                        Some(c) => Ok(c),
                        None => eddy_storage::redis_connection(&client)
                            .map(|c| con.insert(c))
                            .map_err(|e| BackendError::Unavailable(e.to_string())),
                    }
                    .and_then(|c| this.refresh(c));
                    match result {
                        Ok(_) => failing = false,
                        Err(e) => {
                            con = None;
                            if !failing {
                                tracing::warn!(error = %e, "cannot read the served version; keeping the current one");
                            }
                            failing = true;
                        }
                    }
                }
            })
    }
}

impl Backend for VersionedBackend {
    fn counts(&self, query: WindowQuery) -> BoxFuture<'_, Result<BackendAnswer, BackendError>> {
        let b = self.current();
        Box::pin(async move { b.counts(query).await })
    }

    fn hourly_counts(
        &self,
        query: WindowQuery,
    ) -> BoxFuture<'_, Result<BackendAnswer, BackendError>> {
        let b = self.current();
        Box::pin(async move { b.hourly_counts(query).await })
    }

    fn health(&self) -> BoxFuture<'_, Vec<StoreHealth>> {
        let b = self.current();
        Box::pin(async move { b.health().await })
    }

    fn campaign(
        &self,
        query: EngagementQuery,
        campaign_id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<CampaignEngagement>>, BackendError>> {
        let b = self.current();
        Box::pin(async move { b.campaign(query, campaign_id).await })
    }

    fn top_campaigns(
        &self,
        query: EngagementQuery,
        k: usize,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<CampaignEngagement>>>, BackendError>> {
        let b = self.current();
        Box::pin(async move { b.top_campaigns(query, k).await })
    }

    fn similar_users(
        &self,
        user_id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Neighbor>>>, BackendError>> {
        let b = self.current();
        Box::pin(async move { b.similar_users(user_id).await })
    }

    fn recommendations(
        &self,
        query: EngagementQuery,
        user_id: u64,
        n: usize,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Recommendation>>>, BackendError>> {
        let b = self.current();
        Box::pin(async move { b.recommendations(query, user_id, n).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_build_the_versions_backend_once() {
        let b =
            VersionedBackend::new(&RedisConfig::default(), &ClickHouseConfig::default()).unwrap();
        assert_eq!(b.serving(), Version::Base);
        let v2 = Version::parse("v2").unwrap();
        let before = b.current();
        assert!(b.switch_to(&v2).unwrap());
        assert!(!b.switch_to(&v2).unwrap(), "already served");
        assert_eq!(b.serving(), v2);
        assert!(!Arc::ptr_eq(&before, &b.current()));
        assert!(format!("{:?}", b.current()).contains("eddy~v2"));
        assert!(b.switch_to(&Version::Base).unwrap());
    }
}
