//! Which output version is served ([`keys::serving`](crate::keys::serving)) and which versions
//! exist ([`keys::versions`](crate::keys::versions)), read and written by `eddy run`,
//! `eddy replay`, `eddy promote` and the query server alike. Both keys live under the base
//! prefix; a version's own outputs live under its prefix ([`eddy_core::version`]).

use crate::{StorageError, keys};
use eddy_core::version::Version;

/// The version `{base_prefix}:serving` names (absent: base).
pub fn serving(
    con: &mut impl redis::ConnectionLike,
    base_prefix: &str,
) -> Result<Version, StorageError> {
    let stored: Option<String> = redis::cmd("GET")
        .arg(keys::serving(base_prefix))
        .query(con)?;
    Version::from_serving(stored.as_deref()).map_err(|e| StorageError::Config(e.to_string()))
}

/// [`serving`] on an async connection (the query server's).
pub async fn serving_async(
    con: &mut impl redis::aio::ConnectionLike,
    base_prefix: &str,
) -> Result<Version, StorageError> {
    let stored: Option<String> = redis::cmd("GET")
        .arg(keys::serving(base_prefix))
        .query_async(con)
        .await?;
    Version::from_serving(stored.as_deref()).map_err(|e| StorageError::Config(e.to_string()))
}

/// Makes `version` the served one, in one command (`SET`, or `DEL` for base): every reader
/// switches at its next read of the key. Returns the version served before.
pub fn set_serving(
    con: &mut impl redis::ConnectionLike,
    base_prefix: &str,
    version: &Version,
) -> Result<Version, StorageError> {
    let key = keys::serving(base_prefix);
    let before: Option<String> = match version.serving_value() {
        Some(name) => redis::cmd("SET")
            .arg(&key)
            .arg(name)
            .arg("GET")
            .query(con)?,
        None => redis::cmd("GETDEL").arg(&key).query(con)?,
    };
    Version::from_serving(before.as_deref()).map_err(|e| StorageError::Config(e.to_string()))
}

/// Records that `version` exists (a no-op for base).
pub fn register(
    con: &mut impl redis::ConnectionLike,
    base_prefix: &str,
    version: &Version,
) -> Result<(), StorageError> {
    if let Version::Named(name) = version {
        redis::cmd("SADD")
            .arg(keys::versions(base_prefix))
            .arg(name)
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
