//! Which output version is served ([`keys::serving`](crate::keys::serving)) and which versions
//! exist ([`keys::versions`](crate::keys::versions)), read and written by `eddy run`,
//! `eddy replay`, `eddy promote` and the query server alike. Both keys live under the base
//! prefix; a version's own outputs live under its prefix ([`eddy_core::version`]).

use crate::{StorageError, keys};
use eddy_core::version::Version;

/// The version `{base_prefix}:serving` holds, `None` when the key is absent: nothing was
/// ever promoted (base is served), or Redis lost the key (then the version served before is
/// still the right one: readers and jobs keep theirs rather than act on an absence).
pub fn serving_stored(
    con: &mut impl redis::ConnectionLike,
    base_prefix: &str,
) -> Result<Option<Version>, StorageError> {
    let stored: Option<String> = redis::cmd("GET")
        .arg(keys::serving(base_prefix))
        .query(con)?;
    stored
        .map(|s| Version::parse(&s).map_err(|e| StorageError::Config(e.to_string())))
        .transpose()
}

/// The version served (an absent key: base, see [`serving_stored`]).
pub fn serving(
    con: &mut impl redis::ConnectionLike,
    base_prefix: &str,
) -> Result<Version, StorageError> {
    Ok(serving_stored(con, base_prefix)?.unwrap_or(Version::Base))
}

/// Makes `version` the served one, in one `SET` (base is written as `base`, not deleted, so
/// that an absent key always means "unknown"): every reader switches at its next read of the
/// key. Returns the version served before.
pub fn set_serving(
    con: &mut impl redis::ConnectionLike,
    base_prefix: &str,
    version: &Version,
) -> Result<Version, StorageError> {
    let before: Option<String> = redis::cmd("SET")
        .arg(keys::serving(base_prefix))
        .arg(version.name())
        .arg("GET")
        .query(con)?;
    Version::from_serving(before.as_deref()).map_err(|e| StorageError::Config(e.to_string()))
}

/// Records that `version` exists (a no-op for base). The first named version also writes
/// `base` as the served one if nothing is stored yet, so that once versions exist an absent
/// [`keys::serving`] means the key was lost, not "base".
pub fn register(
    con: &mut impl redis::ConnectionLike,
    base_prefix: &str,
    version: &Version,
) -> Result<(), StorageError> {
    if let Version::Named(name) = version {
        redis::pipe()
            .atomic()
            .cmd("SADD")
            .arg(keys::versions(base_prefix))
            .arg(name)
            .ignore()
            .cmd("SET")
            .arg(keys::serving(base_prefix))
            .arg(Version::Base.name())
            .arg("NX")
            .ignore()
            .exec(con)?;
    }
    Ok(())
}

/// Forgets `version` (after its outputs are dropped).
pub fn unregister(
    con: &mut impl redis::ConnectionLike,
    base_prefix: &str,
    version: &Version,
) -> Result<(), StorageError> {
    if let Version::Named(name) = version {
        redis::cmd("SREM")
            .arg(keys::versions(base_prefix))
            .arg(name)
            .exec(con)?;
    }
    Ok(())
}

/// The named versions recorded, sorted (base is not listed: it always exists).
pub fn list(
    con: &mut impl redis::ConnectionLike,
    base_prefix: &str,
) -> Result<Vec<Version>, StorageError> {
    let mut names: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::versions(base_prefix))
        .query(con)?;
    names.sort();
    Ok(names
        .iter()
        .filter_map(|n| Version::parse(n).ok())
        .collect())
}
