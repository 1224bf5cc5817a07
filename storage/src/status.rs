//! The status records of the pipeline processes in Redis: one hash [`status_key`]
//! (`{prefix}:status`), field = [`status_field`] (`{mode}:{process}`, or `{mode}@{version}:{process}`, so a replay job, the live job and
//! the jobs of other output versions keep a record each), value = the JSON of its
//! [`ProcessStatus`]. Each `eddy run` process writes its field
//! every second ([`publish_status`]); the query server reads them all ([`read_statuses`]) for
//! `GET /v1/status`. The hash expires [`STATUS_TTL_SECS`] after the last write, so a stopped
//! job's records go away; a process that stopped while others run stays, `stale`.

use crate::StorageError;
use eddy_core::api::{ProcessIdentity, ProcessStatus};
use std::collections::HashMap;

/// Seconds the status hash outlives its last write.
pub const STATUS_TTL_SECS: i64 = 3_600;

/// `{prefix}:status`: the hash of every process's status record.
pub fn status_key(prefix: &str) -> String {
    format!("{prefix}:status")
}

/// `{mode}:{process}`, or `{mode}@{version}:{process}` for a process writing an output
/// version: the field of a process's record (`run:0`, `replay@v2:0`, ...).
pub fn status_field(identity: &ProcessIdentity) -> String {
    match &identity.version {
        None => format!("{}:{}", identity.mode, identity.process),
        Some(v) => format!("{}@{v}:{}", identity.mode, identity.process),
    }
}

/// Writes `status` as the field of its process ([`status_field`]) and renews the hash's
/// expiry.
pub fn publish_status(
    con: &mut impl redis::ConnectionLike,
    prefix: &str,
    status: &ProcessStatus,
) -> Result<(), StorageError> {
    let key = status_key(prefix);
    let json = serde_json::to_string(status).expect("a status serializes");
    redis::pipe()
        .atomic()
        .hset(&key, status_field(&status.identity), json)
        .ignore()
        .expire(&key, STATUS_TTL_SECS)
        .ignore()
        .exec(con)?;
    Ok(())
}

/// [`read_statuses`] on a blocking connection (`eddy promote`, `eddy versions`).
pub fn read_statuses_blocking(
    con: &mut impl redis::ConnectionLike,
    prefix: &str,
) -> Result<Vec<ProcessStatus>, StorageError> {
    let fields: HashMap<String, String> =
        redis::cmd("HGETALL").arg(status_key(prefix)).query(con)?;
    Ok(decode(fields))
}

fn decode(fields: HashMap<String, String>) -> Vec<ProcessStatus> {
    fields
        .values()
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect()
}

/// Every process's last record (any order). A field that does not decode (written by another
/// version of eddy) is skipped.
pub async fn read_statuses(
    con: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
) -> Result<Vec<ProcessStatus>, StorageError> {
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(status_key(prefix))
        .query_async(con)
        .await?;
    Ok(decode(fields))
}
