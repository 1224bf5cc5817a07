//! Output versions on the command line: `--target live|version:NAME` of `eddy run` and
//! `eddy replay`, `eddy promote NAME`, `eddy versions` (list, drop).
//!
//! A version is a complete set of outputs under its own names ([`Config::for_version`]): a
//! replay builds one beside the live job (`eddy replay --from … --then live --target
//! version:v2`), the query server keeps serving the version named by `{prefix}:serving`
//! ([`eddy_storage::versions`]), and `eddy promote v2` switches every reader at once with one
//! Redis command. `live` means whichever version is served when the job starts; a job writing
//! the served version stops by itself once another one is promoted ([`watch_serving`]), so the
//! old live job does not keep writing outputs nobody reads.

use crate::fence::JobFence;
use eddy_core::Config;
use eddy_core::version::Version;
use eddy_sinks::{CheckpointStore, ClickHouseCheckpoints};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a job re-reads which version is served ([`watch_serving`]).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Version errors.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// A malformed `--target` or version name.
    #[error("{0}")]
    BadName(String),
    /// Redis failed.
    #[error("versions: {0}")]
    Storage(#[from] eddy_storage::StorageError),
    /// Redis failed.
    #[error("versions: redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// ClickHouse failed.
    #[error(transparent)]
    Sink(#[from] eddy_sinks::SinkError),
    /// The replay plan could not be read.
    #[error(transparent)]
    Replay(#[from] crate::replay::ReplayError),
    /// The version was never built.
    #[error(
        "version {0:?} does not exist; build it with `eddy replay --from … --then live --target \
         version:{0}`"
    )]
    Unknown(String),
    /// `eddy promote` refused: the version is not ready to serve.
    #[error("cannot promote version {version:?}: {why}")]
    NotReady {
        /// The version.
        version: String,
        /// What is missing.
        why: String,
    },
    /// `eddy versions drop` refused.
    #[error("cannot drop version {version:?}: {why}")]
    InUse {
        /// The version.
        version: String,
        /// Why not.
        why: String,
    },
}

/// Where a job writes: `live` (the served version, read at start) or `version:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Whichever version `{prefix}:serving` names when the job starts.
    Live,
    /// This version.
    Version(Version),
}

impl Target {
    /// Parses `live` or `version:NAME` (`version:base` names the base outputs).
    ///
    /// ```
    /// use eddy::version::Target;
    /// use eddy_core::version::Version;
    /// assert_eq!(Target::parse("live").unwrap(), Target::Live);
    /// assert_eq!(
    ///     Target::parse("version:v2").unwrap(),
    ///     Target::Version(Version::parse("v2").unwrap())
    /// );
    /// assert!(Target::parse("v2").is_err());
    /// assert!(Target::parse("version:V2").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        if s == "live" {
            return Ok(Self::Live);
        }
        let bad = || {
            VersionError::BadName(format!(
                "--target {s:?}: expected `live` or `version:NAME` (NAME: [a-z0-9_]{{1,32}})"
            ))
        };
        let name = s.strip_prefix("version:").ok_or_else(bad)?;
        Version::parse(name)
            .map(Self::Version)
            .map_err(|e| VersionError::BadName(format!("--target {s:?}: {e}")))
    }
}

/// A blocking connection to the base configuration's Redis, retried for up to
/// `kafka.startup_timeout_ms` (the stores may still be starting with the job).
fn connect(base: &Config) -> Result<redis::Connection, VersionError> {
    let client = eddy_storage::redis_client(&base.redis)?;
    let deadline = Instant::now() + Duration::from_millis(base.kafka.startup_timeout_ms);
    loop {
        match eddy_storage::redis_connection(&client) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "redis not answering yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// The version `target` names and the configuration writing it. `live`: the served version.
/// An explicit named version must exist (registered, or its database holds eddy's schema: it
/// is registered again) ([`VersionError::Unknown`]) unless `create` (a replay builds it: its
/// name is recorded and its ClickHouse schema applied).
pub fn resolve(
    base: &Config,
    target: &Target,
    create: bool,
) -> Result<(Version, Config), VersionError> {
    let mut con = connect(base)?;
    let version = match target {
        Target::Live => eddy_storage::versions::serving(&mut con, &base.redis.prefix)?,
        Target::Version(v) => v.clone(),
    };
    let cfg = base.for_version(&version);
    if let Version::Named(name) = &version {
        if create {
            eddy_sinks::apply_schema(&cfg.clickhouse, None)?;
            eddy_storage::versions::register(&mut con, &base.redis.prefix, &version)?;
        } else if !eddy_storage::versions::list(&mut con, &base.redis.prefix)?.contains(&version) {
            // Redis may have lost the set: a version whose database exists is known.
            if eddy_sinks::check_schema(&cfg.clickhouse).is_err() {
                return Err(VersionError::Unknown(name.clone()));
            }
            eddy_storage::versions::register(&mut con, &base.redis.prefix, &version)?;
        }
    }
    tracing::info!(
        version = %version,
        redis_prefix = %cfg.redis.prefix,
        database = %cfg.clickhouse.database,
        "writing output version"
    );
    Ok((version, cfg))
}

/// Watches `{prefix}:serving` every [`WATCH_INTERVAL`] while `stop` is unset: once `version`
/// was served (`served_at_start`: it was when the job resolved `--target live`) and another
/// one is promoted, logs it and sets `stop` (the job ends as after Ctrl-C). Only a stored
/// value counts: an absent key (Redis lost it) and Redis errors are logged and never stop the
/// job.
pub fn watch_serving(
    base: &Config,
    version: Version,
    served_at_start: bool,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, VersionError> {
    let client = eddy_storage::redis_client(&base.redis)?;
    let prefix = base.redis.prefix.clone();
    let handle = std::thread::Builder::new()
        .name("eddy-serving".into())
        .spawn(move || {
            let mut con: Option<redis::Connection> = None;
            let mut was_served = served_at_start;
            let mut failing = false;
            while !stop.load(Ordering::SeqCst) {
                let read = match con.as_mut() {
                    Some(c) => Ok(c),
                    None => eddy_storage::redis_connection(&client).map(|c| con.insert(c)),
                }
                .map_err(eddy_storage::StorageError::from)
                .and_then(|c| eddy_storage::versions::serving_stored(c, &prefix));
                match read {
                    Ok(Some(now)) if now == version => was_served = true,
                    Ok(Some(now)) if was_served => {
                        tracing::warn!(
                            version = %version,
                            serving = %now,
                            "version {now} was promoted: this job's version {version} is no \
                             longer served; stopping"
                        );
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        con = None;
                        if !failing {
                            tracing::warn!(error = %e, "cannot read the served version; retrying");
                        }
                        failing = true;
                        std::thread::sleep(WATCH_INTERVAL);
                        continue;
                    }
                }
                failing = false;
                std::thread::sleep(WATCH_INTERVAL);
            }
        })
        .map_err(|e| VersionError::BadName(format!("cannot start the serving watcher: {e}")))?;
    Ok(handle)
}

/// What one version holds, for `eddy versions` and `eddy promote`.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionState {
    /// The version.
    pub version: Version,
    /// Whether the query server serves it (`{prefix}:serving` names it, or is absent while no
    /// named version exists and it is base).
    pub serving: bool,
    /// Whether the served version is known: `false` when `{prefix}:serving` is absent although
    /// named versions exist (Redis lost the key: query servers keep the version they serve).
    pub serving_known: bool,
    /// The holder of its job lease (a job writes it), if any.
    pub job: Option<String>,
    /// Whether a job keeps it current: its lease is held and a fresh status record (at most
    /// [`STALE_AFTER_MS`](eddy_core::api::STALE_AFTER_MS) old) says an `eddy run`, or an
    /// `eddy replay --then live`, writes it (a finished `--then stop` replay still holding its
    /// lease does not count).
    pub kept_current: bool,
    /// Its replay plan: `Some(true)` done, `Some(false)` still replaying, `None` no plan.
    pub replay_done: Option<bool>,
    /// Watermark of its latest checkpoint of the source topic (`None`: no checkpoint).
    pub checkpoint_watermark_ms: Option<i64>,
}

impl VersionState {
    /// One line for `eddy versions`.
    pub fn line(&self) -> String {
        format!(
            "{:<12} {:<8} job {:<8} replay {:<9} checkpoint watermark {}",
            self.version.name(),
            match (self.serving_known, self.serving) {
                (true, true) => "SERVING",
                (true, false) => "-",
                (false, _) => "?",
            },
            match (&self.job, self.kept_current) {
                (Some(_), true) => "live",
                (Some(_), false) => "ending",
                (None, _) => "none",
            },
            match self.replay_done {
                Some(true) => "done",
                Some(false) => "running",
                None => "-",
            },
            self.checkpoint_watermark_ms
                .map_or("none".to_owned(), |w| w.to_string()),
        )
    }
}

/// The state of `version` (base or named) of `base`'s job.
pub fn state(base: &Config, version: &Version) -> Result<VersionState, VersionError> {
    let mut con = connect(base)?;
    let stored = eddy_storage::versions::serving_stored(&mut con, &base.redis.prefix)?;
    let serving_known =
        stored.is_some() || eddy_storage::versions::list(&mut con, &base.redis.prefix)?.is_empty();
    let serving = stored.unwrap_or(Version::Base) == *version;
    let cfg = base.for_version(version);
    let job: Option<String> = redis::cmd("GET")
        .arg(JobFence::key(&cfg.redis.prefix, &cfg.kafka.topic))
        .query(&mut con)?;
    let plan =
        crate::replay::PlanStore::connect(&cfg.redis.url, &cfg.redis.prefix, &cfg.kafka.topic)?
            .load()?;
    let replay_done = plan.as_ref().map(|p| p.done);
    let then_live = plan.as_ref().is_some_and(|p| p.request.then_live);
    let now = eddy_core::now_ms();
    let writer = eddy_storage::status::read_statuses_blocking(&mut con, &base.redis.prefix)?
        .into_iter()
        .any(|s| {
            s.identity.version.as_deref() == version.serving_value()
                && now.saturating_sub(s.updated_at_ms) <= eddy_core::api::STALE_AFTER_MS
                && (s.identity.mode == "run" || (s.identity.mode == "replay" && then_live))
        });
    let kept_current = job.is_some() && writer;
    let checkpoint_watermark_ms = match eddy_sinks::check_schema(&cfg.clickhouse) {
        Ok(()) => ClickHouseCheckpoints::connect(&cfg.clickhouse)?
            .load(&cfg.kafka.topic)?
            .map(|c| c.watermark_ms),
        Err(_) => None,
    };
    Ok(VersionState {
        version: version.clone(),
        serving,
        serving_known,
        job,
        kept_current,
        replay_done,
        checkpoint_watermark_ms,
    })
}

/// Every version of `base`'s job: base first, then the named ones.
pub fn list(base: &Config) -> Result<Vec<VersionState>, VersionError> {
    let named = eddy_storage::versions::list(&mut connect(base)?, &base.redis.prefix)?;
    std::iter::once(Version::Base)
        .chain(named)
        .map(|v| state(base, &v))
        .collect()
}

/// The latest checkpoint of `version`'s job (`None`: no schema or no checkpoint yet).
fn latest_checkpoint(
    base: &Config,
    version: &Version,
) -> Result<Option<eddy_core::Checkpoint>, VersionError> {
    let cfg = base.for_version(version);
    if eddy_sinks::check_schema(&cfg.clickhouse).is_err() {
        return Ok(None);
    }
    Ok(ClickHouseCheckpoints::connect(&cfg.clickhouse)?.load(&cfg.kafka.topic)?)
}

/// How far `candidate`'s latest checkpoint is behind `served`'s (`None`: not behind): every
/// partition's high offset and the watermark must be at least the served one's, so readers
/// switching see no value go backwards beyond what the speed layer held past that checkpoint.
fn behind(
    base: &Config,
    served: &Version,
    candidate: &Version,
) -> Result<Option<String>, VersionError> {
    let Some(s) = latest_checkpoint(base, served)? else {
        return Ok(None);
    };
    let Some(c) = latest_checkpoint(base, candidate)? else {
        return Ok(Some("it has no checkpoint".into()));
    };
    let mut gaps = Vec::new();
    for sp in &s.partitions {
        let ch = c
            .partitions
            .iter()
            .find(|p| p.partition == sp.partition)
            .map_or(0, |p| p.high_offset);
        if ch < sp.high_offset {
            gaps.push(format!(
                "partition {} at offset {ch} < {}",
                sp.partition, sp.high_offset
            ));
        }
    }
    if c.watermark_ms < s.watermark_ms {
        gaps.push(format!("watermark {} < {}", c.watermark_ms, s.watermark_ms));
    }
    Ok((!gaps.is_empty()).then(|| {
        format!(
            "its latest checkpoint is behind the served version {served}'s: {}",
            gaps.join(", ")
        )
    }))
}

/// `eddy promote`: checks that `version` is ready to serve, then makes it the served version
/// in one Redis command. Ready: it exists and has a checkpoint; its replay (if any) is done; a
/// job keeps it current ([`VersionState::kept_current`]); its latest checkpoint has caught up
/// with the served version's (every partition's high offset and the watermark at least the
/// served one's), waited for up to `wait`. `force` skips all but the checkpoint check (e.g. to
/// serve a finished `--then stop` backfill, or go back to a stopped base). Returns the
/// version served before.
pub fn promote(
    base: &Config,
    version: &Version,
    force: bool,
    wait: Duration,
) -> Result<Version, VersionError> {
    let mut con = connect(base)?;
    if let Version::Named(name) = version
        && !eddy_storage::versions::list(&mut con, &base.redis.prefix)?.contains(version)
    {
        return Err(VersionError::Unknown(name.clone()));
    }
    let s = state(base, version)?;
    let not_ready = |why: String| VersionError::NotReady {
        version: version.name().to_owned(),
        why,
    };
    if s.serving && s.serving_known {
        return Ok(version.clone());
    }
    if s.checkpoint_watermark_ms.is_none() {
        return Err(not_ready(
            "it has no checkpoint yet (nothing durable to serve)".into(),
        ));
    }
    if !force {
        if s.replay_done == Some(false) {
            return Err(not_ready(
                "its replay has not caught up yet (`eddy status` shows its progress); \
                 --force promotes it anyway"
                    .into(),
            ));
        }
        if !s.kept_current {
            return Err(not_ready(format!(
                "no job keeps it current (start `eddy run --target version:{version}`, or \
                 replay with `--then live`); --force promotes it anyway"
            )));
        }
        let served = eddy_storage::versions::serving(&mut con, &base.redis.prefix)?;
        let deadline = Instant::now() + wait;
        while let Some(why) = behind(base, &served, version)? {
            if Instant::now() >= deadline {
                return Err(not_ready(format!(
                    "{why} (waited {wait:?}; --wait longer, or --force)"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let before = eddy_storage::versions::set_serving(&mut con, &base.redis.prefix, version)?;
    tracing::info!(version = %version, before = %before, "promoted: the query servers serve it within a second");
    Ok(before)
}

/// `eddy versions drop`: deletes a named version's outputs (its Redis keys, its ClickHouse
/// database, its name), refused while it is served or a job writes it.
pub fn drop_version(base: &Config, version: &Version) -> Result<(), VersionError> {
    let Version::Named(name) = version else {
        return Err(VersionError::InUse {
            version: version.name().to_owned(),
            why: "the base outputs are not dropped by eddy".into(),
        });
    };
    if !eddy_storage::versions::list(&mut connect(base)?, &base.redis.prefix)?.contains(version) {
        return Err(VersionError::Unknown(name.clone()));
    }
    let s = state(base, version)?;
    let in_use = |why: &str| VersionError::InUse {
        version: name.clone(),
        why: why.to_owned(),
    };
    if !s.serving_known {
        return Err(in_use(
            "which version is served is unknown (`{prefix}:serving` is absent: Redis lost it); \
             `eddy promote` the served one again first",
        ));
    }
    if s.serving {
        return Err(in_use("it is served; promote another version first"));
    }
    if s.job.is_some() {
        return Err(in_use("a job writes it; stop that job first"));
    }
    let cfg = base.for_version(version);
    // Held while dropping: no job can start on the version meanwhile.
    let lease_key = JobFence::key(&cfg.redis.prefix, &cfg.kafka.topic);
    let _lease = JobFence::acquire(
        &cfg.redis.url,
        lease_key.clone(),
        crate::fence::LEASE_TTL,
        Arc::new(AtomicBool::new(false)),
    )
    .map_err(|e| in_use(&e.to_string()))?;
    let mut con = connect(base)?;
    eddy_storage::versions::unregister(&mut con, &base.redis.prefix, version)?;
    eddy_storage::valid_database(&cfg.clickhouse.database)?;
    eddy_sinks::drop_database(&base.clickhouse, &cfg.clickhouse.database)?;
    let pattern = format!("{}:*", cfg.redis.prefix);
    let mut cursor: u64 = 0;
    let mut deleted = 0usize;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)?;
        // The lease goes last, released when `_lease` drops.
        let keys: Vec<String> = keys.into_iter().filter(|k| *k != lease_key).collect();
        if !keys.is_empty() {
            deleted += keys.len();
            redis::cmd("UNLINK").arg(&keys).exec(&mut con)?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    tracing::info!(version = %version, database = %cfg.clickhouse.database, redis_keys = deleted, "version dropped");
    Ok(())
}
