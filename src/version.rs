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

/// The version served now (`{prefix}:serving` of `base`).
pub fn serving(base: &Config) -> Result<Version, VersionError> {
    Ok(eddy_storage::versions::serving(
        &mut connect(base)?,
        &base.redis.prefix,
    )?)
}

/// The version `target` names and the configuration writing it. `live`: the served version.
/// An explicit named version must exist ([`VersionError::Unknown`]) unless `create` (a
/// replay builds it: its name is recorded and its ClickHouse schema applied).
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
            return Err(VersionError::Unknown(name.clone()));
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
/// was served and another one is promoted, logs it and sets `stop` (the job ends as after
/// Ctrl-C, its sinks flushed). Redis errors are logged and retried; they never stop the job.
pub fn watch_serving(
    base: &Config,
    version: Version,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, VersionError> {
    let client = eddy_storage::redis_client(&base.redis)?;
    let prefix = base.redis.prefix.clone();
    let handle = std::thread::Builder::new()
        .name("eddy-serving".into())
        .spawn(move || {
            let mut con: Option<redis::Connection> = None;
            let mut was_served = false;
            let mut failing = false;
            while !stop.load(Ordering::SeqCst) {
                let read = match con.as_mut() {
                    Some(c) => Ok(c),
                    None => eddy_storage::redis_connection(&client).map(|c| con.insert(c)),
                }
                .map_err(eddy_storage::StorageError::from)
                .and_then(|c| eddy_storage::versions::serving(c, &prefix));
                match read {
                    Ok(now) if now == version => was_served = true,
                    Ok(now) if was_served => {
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
    /// Whether the query server serves it.
    pub serving: bool,
    /// The holder of its job lease (a job writes it), if any.
    pub job: Option<String>,
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
            if self.serving { "SERVING" } else { "-" },
            if self.job.is_some() { "live" } else { "none" },
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
    let serving = eddy_storage::versions::serving(&mut con, &base.redis.prefix)? == *version;
    let cfg = base.for_version(version);
    let job: Option<String> = redis::cmd("GET")
        .arg(JobFence::key(&cfg.redis.prefix, &cfg.kafka.topic))
        .query(&mut con)?;
    let replay_done =
        crate::replay::PlanStore::connect(&cfg.redis.url, &cfg.redis.prefix, &cfg.kafka.topic)?
            .load()?
            .map(|p| p.done);
    let checkpoint_watermark_ms = match eddy_sinks::check_schema(&cfg.clickhouse) {
        Ok(()) => ClickHouseCheckpoints::connect(&cfg.clickhouse)?
            .load(&cfg.kafka.topic)?
            .map(|c| c.watermark_ms),
        Err(_) => None,
    };
    Ok(VersionState {
        version: version.clone(),
        serving,
        job,
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

/// `eddy promote`: checks `version` is ready to serve (it exists, its replay is done, a job
/// keeps it current, it has a checkpoint; `force` skips the replay and job checks), then makes
/// it the served version in one Redis command. Returns the version served before.
pub fn promote(base: &Config, version: &Version, force: bool) -> Result<Version, VersionError> {
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
    if s.serving {
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
        if s.job.is_none() {
            return Err(not_ready(format!(
                "no job keeps it current (start `eddy run --target version:{version}`, or \
                 replay with `--then live`); --force promotes it anyway"
            )));
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
    let s = state(base, version)?;
    let in_use = |why: &str| VersionError::InUse {
        version: name.clone(),
        why: why.to_owned(),
    };
    if s.serving {
        return Err(in_use("it is served; promote another version first"));
    }
    if s.job.is_some() {
        return Err(in_use("a job writes it; stop that job first"));
    }
    let cfg = base.for_version(version);
    eddy_storage::valid_database(&cfg.clickhouse.database)?;
    eddy_sinks::drop_database(&base.clickhouse, &cfg.clickhouse.database)?;
    let mut con = connect(base)?;
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
        if !keys.is_empty() {
            deleted += keys.len();
            redis::cmd("UNLINK").arg(&keys).exec(&mut con)?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    eddy_storage::versions::unregister(&mut con, &base.redis.prefix, version)?;
    tracing::info!(version = %version, database = %cfg.clickhouse.database, redis_keys = deleted, "version dropped");
    Ok(())
}
