//! The error type of every sink and checkpoint store.

use std::time::Duration;

/// Why a sink, checkpoint or schema operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A Redis command or connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A ClickHouse request failed.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// An operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being done.
        what: &'static str,
        /// The time limit.
        after: Duration,
    },
    /// Tables are missing or a schema file is malformed.
    #[error("schema: {0}")]
    Schema(String),
    /// Invalid configuration (URL, database name, ...).
    #[error("invalid sink configuration: {0}")]
    Config(String),
    /// Reading a schema file or directory failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Stored data does not have the expected shape.
    #[error("unexpected stored data: {0}")]
    Data(String),
    /// A Kafka producer could not deliver (the dead-letter topic).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl From<eddy_storage::StorageError> for SinkError {
    fn from(e: eddy_storage::StorageError) -> Self {
        use eddy_storage::StorageError as S;
        match e {
            S::Redis(e) => SinkError::Redis(e),
            S::ClickHouse(e) => SinkError::ClickHouse(e),
            S::Schema(m) => SinkError::Schema(m),
            S::Config(m) => SinkError::Config(m),
            S::Io { path, source } => SinkError::Io { path, source },
        }
    }
}

impl SinkError {
    /// True when the store's time limit ran out (the operation may have been too large).
    pub fn is_timeout(&self) -> bool {
        match self {
            SinkError::Timeout { .. } => true,
            SinkError::Redis(e) => e.is_timeout(),
            SinkError::ClickHouse(e) => matches!(e, clickhouse::error::Error::TimedOut),
            _ => false,
        }
    }

    /// True when retrying the same operation later may succeed (network trouble, timeouts,
    /// servers loading or overloaded). False for configuration, schema and data errors, which
    /// need an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || !matches!(e.retry_method(), redis::RetryMethod::NoRetry)
            }
            SinkError::ClickHouse(e) => {
                use clickhouse::error::Error as E;
                match e {
                    E::Network(_) | E::TimedOut => true,
                    // Server-side errors: retry unless the server says the schema is wrong
                    // (unknown table/database/column, type mismatch, syntax).
                    E::BadResponse(msg) => !is_permanent_clickhouse_error(msg),
                    _ => false,
                }
            }
            SinkError::Timeout { .. } => true,
            SinkError::Kafka(e) => {
                use rdkafka::types::RDKafkaErrorCode as C;
                !matches!(
                    e.rdkafka_error_code(),
                    Some(
                        C::MessageSizeTooLarge
                            | C::InvalidMessage
                            | C::InvalidMessageSize
                            | C::TopicAuthorizationFailed
                            | C::ClusterAuthorizationFailed
                    )
                )
            }
            SinkError::Schema(_)
            | SinkError::Config(_)
            | SinkError::Io { .. }
            | SinkError::Data(_) => false,
        }
    }
}

/// ClickHouse error codes that retrying cannot fix. Error texts look like
/// `Code: 60, e.displayText() = ...` (18.x) or `Code: 60. DB::Exception: ...` (current).
fn is_permanent_clickhouse_error(msg: &str) -> bool {
    const PERMANENT: [u32; 11] = [
        16,  // NO_SUCH_COLUMN_IN_TABLE
        27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED (row type does not match the table)
        47,  // UNKNOWN_IDENTIFIER
        53,  // TYPE_MISMATCH
        60,  // UNKNOWN_TABLE
        62,  // SYNTAX_ERROR
        81,  // UNKNOWN_DATABASE
        192, // UNKNOWN_USER
        193, // WRONG_PASSWORD
        497, // ACCESS_DENIED
        516, // AUTHENTICATION_FAILED
    ];
    clickhouse_error_code(msg).is_some_and(|c| PERMANENT.contains(&c))
}

/// The numeric code in a ClickHouse error text.
pub(crate) fn clickhouse_error_code(msg: &str) -> Option<u32> {
    let rest = &msg[msg.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_clickhouse_error_codes() {
        assert_eq!(
            clickhouse_error_code("Code: 60, e.displayText() = DB::Exception"),
            Some(60)
        );
        assert_eq!(
            clickhouse_error_code("bad response: Code: 81. DB::Exception: x"),
            Some(81)
        );
        assert_eq!(clickhouse_error_code("nothing"), None);
        assert!(is_permanent_clickhouse_error(
            "Code: 60. DB::Exception: no table"
        ));
        assert!(!is_permanent_clickhouse_error(
            "Code: 241. DB::Exception: memory limit"
        ));
    }
}
