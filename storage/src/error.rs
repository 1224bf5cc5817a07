//! The error type of the storage contract's helpers.

/// Why a client could not be built, or a schema operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A Redis URL is malformed or a Redis command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A ClickHouse request failed.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// Tables are missing or a schema file is malformed.
    #[error("schema: {0}")]
    Schema(String),
    /// Invalid configuration (URL, database name, ...).
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// Reading a schema file or directory failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}
