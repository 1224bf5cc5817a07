//! One constructor per store, used by the sinks, the query server and the tests.

use crate::StorageError;
use eddy_core::config::{ClickHouseConfig, RedisConfig};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// The ClickHouse client for `cfg`, bound to `cfg.database` (checked to be a plain identifier).
///
/// Options, and why:
/// * RowBinary without schema validation (`with_validation(false)`): ClickHouse 18.16 lacks
///   `RowBinaryWithNamesAndTypes`, which validation needs; the row types of
///   [`rows`](crate::rows) follow the tables' column order instead.
/// * No compression (`Compression::None`): eddy's requests are small (one INSERT per table per
///   sink batch, reads of at most a query's range of windows or hours) and ClickHouse runs next
///   to eddy, so LZ4 would cost CPU on both sides for little transfer saved; plain HTTP bodies
///   also work the same on 18.16 and current servers, for inserts and selects alike.
/// * User and password from `cfg` (no password sent when it is empty).
pub fn clickhouse_client(cfg: &ClickHouseConfig) -> Result<clickhouse::Client, StorageError> {
    valid_database(&cfg.database)?;
    Ok(clickhouse_server(cfg).with_database(&cfg.database))
}

/// As [`clickhouse_client`] without a database set: for DDL that may create the database,
/// and queries that name it themselves.
pub fn clickhouse_server(cfg: &ClickHouseConfig) -> clickhouse::Client {
    let client = clickhouse::Client::default()
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        .with_validation(false)
        .with_compression(clickhouse::Compression::None);
    if cfg.password.is_empty() {
        client
    } else {
        client.with_password(&cfg.password)
    }
}

/// Checks `name` is a plain identifier, `[A-Za-z_][A-Za-z0-9_]*` (it is substituted into DDL).
pub fn valid_database(name: &str) -> Result<(), StorageError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StorageError::Config(format!(
            "clickhouse.database {name:?} must match [A-Za-z_][A-Za-z0-9_]*"
        )))
    }
}

/// The Redis client for `cfg.url` (validates the URL; no I/O).
pub fn redis_client(cfg: &RedisConfig) -> Result<redis::Client, StorageError> {
    redis::Client::open(cfg.url.as_str())
        .map_err(|e| StorageError::Config(format!("redis url {:?}: {e}", cfg.url)))
}

/// Time limit to establish a blocking Redis connection ([`redis_connection`]).
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time limit of one blocking request/response (for the sink: a whole `MULTI … EXEC`).
pub const REDIS_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking connection (the sinks' and tests'), connected within [`REDIS_CONNECT_TIMEOUT`],
/// each read and write bounded by [`REDIS_IO_TIMEOUT`].
pub fn redis_connection(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(REDIS_CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(REDIS_IO_TIMEOUT))?;
    conn.set_write_timeout(Some(REDIS_IO_TIMEOUT))?;
    Ok(conn)
}

/// The query server's async connection: a [`ConnectionManager`] that connects on first use
/// and reconnects by itself after a failure; connecting and each response are bounded by
/// `timeout`, and a failed request is retried once on a fresh connection.
pub fn redis_manager(
    client: &redis::Client,
    timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_database_names() {
        assert!(valid_database("eddy_test_1").is_ok());
        assert!(valid_database("x; DROP").is_err());
        assert!(valid_database("1abc").is_err());
        assert!(valid_database("").is_err());
    }

    #[test]
    fn rejects_bad_redis_urls() {
        let bad = RedisConfig {
            url: "nope://x".into(),
            ..RedisConfig::default()
        };
        assert!(matches!(redis_client(&bad), Err(StorageError::Config(_))));
        assert!(redis_client(&RedisConfig::default()).is_ok());
    }
}
