//! Output versions: where a job writes and the query server reads.
//!
//! The outputs named by the configuration (`redis.prefix`, `clickhouse.database`) are the
//! **base** version. `eddy replay --target version:NAME` builds another one beside it, under
//! its own names ([`Config::for_version`]): Redis keys under `{prefix}~NAME`, the ClickHouse
//! database `{database}_NAME`, the consumer group `{group_id}~NAME`. Having its own prefix, it
//! also has its own job lease, replay plan and checkpoints, so it is built while the live job
//! runs. The query server serves the version named by the Redis key
//! `{prefix}:serving` (absent: base), which `eddy promote NAME` sets in one command.

use crate::{Config, ConfigError};
use std::fmt;

/// The name of the base version (the outputs the configuration names).
pub const BASE: &str = "base";

/// Longest version name.
pub const MAX_NAME_LEN: usize = 32;

/// A version of the outputs: [`Version::Base`] or a named one (`[a-z0-9_]{1,32}`, not `base`
/// or `live`).
///
/// ```
/// use eddy_core::version::Version;
/// assert_eq!(Version::parse("base").unwrap(), Version::Base);
/// assert_eq!(Version::parse("v2").unwrap().to_string(), "v2");
/// assert!(Version::parse("live").is_err(), "`live` means whichever version is served");
/// assert!(Version::parse("a:b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// The outputs the configuration names.
    Base,
    /// A named version.
    Named(String),
}

impl Version {
    /// Parses a version name: `base`, or `[a-z0-9_]{1,32}` other than `live` (names end up in
    /// a Redis prefix and a ClickHouse database name, so nothing else is accepted).
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        if name == BASE {
            return Ok(Self::Base);
        }
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name != "live"
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(Self::Named(name.to_owned()))
        } else {
            Err(ConfigError::Invalid(format!(
                "version name {name:?}: expected `base` or [a-z0-9_]{{1,{MAX_NAME_LEN}}} other \
                 than `live`"
            )))
        }
    }

    /// The version the `{prefix}:serving` value `stored` names (absent: base).
    pub fn from_serving(stored: Option<&str>) -> Result<Self, ConfigError> {
        stored.map_or(Ok(Self::Base), Self::parse)
    }

    /// The value `{prefix}:serving` holds for this version (`None`: the key is deleted).
    pub fn serving_value(&self) -> Option<&str> {
        match self {
            Self::Base => None,
            Self::Named(n) => Some(n),
        }
    }

    /// The name as written on the command line.
    pub fn name(&self) -> &str {
        match self {
            Self::Base => BASE,
            Self::Named(n) => n,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `{prefix}~{name}`: the Redis prefix of version `name` over the base prefix.
pub fn redis_prefix(base_prefix: &str, version: &Version) -> String {
    match version {
        Version::Base => base_prefix.to_owned(),
        Version::Named(n) => format!("{base_prefix}~{n}"),
    }
}

/// `{database}_{name}`: the ClickHouse database of version `name` over the base database.
pub fn database(base_database: &str, version: &Version) -> String {
    match version {
        Version::Base => base_database.to_owned(),
        Version::Named(n) => format!("{base_database}_{n}"),
    }
}

impl Config {
    /// This configuration writing and reading `version` instead of the base outputs: its Redis
    /// prefix, ClickHouse database and consumer group ([`redis_prefix`], [`database`],
    /// `{group_id}~NAME`). Everything else (topics, windows, stores' addresses) is shared.
    ///
    /// ```
    /// use eddy_core::{Config, version::Version};
    /// let base = Config::default();
    /// let v = base.for_version(&Version::parse("v2").unwrap());
    /// assert_eq!(v.redis.prefix, "eddy~v2");
    /// assert_eq!(v.clickhouse.database, "eddy_v2");
    /// assert_eq!(v.kafka.group_id, "eddy~v2");
    /// assert_eq!(v.kafka.topic, base.kafka.topic);
    /// assert_eq!(base.for_version(&Version::Base).redis.prefix, "eddy");
    /// ```
    pub fn for_version(&self, version: &Version) -> Config {
        let mut cfg = self.clone();
        cfg.redis.prefix = redis_prefix(&self.redis.prefix, version);
        cfg.clickhouse.database = database(&self.clickhouse.database, version);
        if let Version::Named(n) = version {
            cfg.kafka.group_id = format!("{}~{n}", self.kafka.group_id);
        }
        cfg
    }
}
