//! Per-test stores on the real services: a fresh Redis key prefix and a fresh ClickHouse
//! database with eddy's schema applied, each removed when the test passes (kept for a look
//! when it fails: [`Fresh`]); ClickHouse statements and typed reads; a private
//! `redis-server` a test may stop and restart.
//!
//! The stores are those `scripts/services up redis clickhouse` starts on loopback, or the
//! ones named by `EDDY_TEST_REDIS_URL` / `EDDY_TEST_CLICKHOUSE_URL`. Names carry the process
//! id, so concurrent runs of one test binary do not meet. Every function here blocks; it may
//! be called from async tests too (the store I/O runs on a thread of its own).
//!
//! ```no_run
//! use eddy_testkit::stores::{ch_fetch, fresh_clickhouse, fresh_redis, redis_conn};
//! let db = fresh_clickhouse("doc"); // eddy_test_doc_<pid>, schema applied
//! let n: Vec<u64> = ch_fetch(&db, "SELECT count() FROM type_windows", |q| q);
//! assert_eq!(n, [0]);
//! let redis = fresh_redis("doc"); // prefix eddy_test_doc_<pid>, no key under it
//! let _con = redis_conn(&redis);
//! ```

use crate::block_on;
use crate::wait::wait_until;
use eddy_core::config::{ClickHouseConfig, RedisConfig};
use std::ops::Deref;
use std::time::Duration;

/// Variable naming the Redis to test against (default: the loopback service).
pub const REDIS_URL_VAR: &str = "EDDY_TEST_REDIS_URL";
/// Variable naming the ClickHouse to test against (default: the loopback service).
pub const CLICKHOUSE_URL_VAR: &str = "EDDY_TEST_CLICKHOUSE_URL";

/// The URL in `var` if set, else `default` after starting Redis and ClickHouse.
fn url(var: &str, default: String) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        crate::services(&["redis", "clickhouse"]);
        default
    })
}

/// The test Redis's URL.
pub fn redis_url() -> String {
    url(REDIS_URL_VAR, RedisConfig::default().url)
}

/// The test ClickHouse's URL.
pub fn clickhouse_url() -> String {
    url(CLICKHOUSE_URL_VAR, ClickHouseConfig::default().url)
}

/// `eddy_test_{name}_{pid}`: a store name of this test binary's own.
pub fn unique(name: &str) -> String {
    format!("eddy_test_{name}_{}", std::process::id())
}

// ---- per-test store guards ----

/// A store config whose prefix or database no other test uses, removed ([`Cleanup::remove`])
/// when the guard drops, unless the test is failing (kept for a look). Derefs to the config.
#[derive(Debug)]
pub struct Fresh<C: Cleanup>(C);

/// A store config a [`Fresh`] guard can clean up after.
pub trait Cleanup {
    /// Removes what the test wrote: every key under the prefix, or the database.
    fn remove(&self);
}

impl Cleanup for RedisConfig {
    fn remove(&self) {
        clear_redis(self);
    }
}

impl Cleanup for ClickHouseConfig {
    fn remove(&self) {
        drop_database(self);
    }
}

impl<C: Cleanup> Fresh<C> {
    /// The config, to build a variant of (`RedisConfig { url: …, ..redis.config().clone() }`).
    pub fn config(&self) -> &C {
        &self.0
    }
}

impl<C: Cleanup> Deref for Fresh<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.0
    }
}

impl<C: Cleanup> Drop for Fresh<C> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.0.remove();
        }
    }
}

// ---- Redis ----

/// A Redis config whose prefix no other test uses, with no key under it at first.
pub type TestRedis = Fresh<RedisConfig>;

/// A fresh prefix [`unique`]`(name)` on the test Redis (see [`TestRedis`]).
pub fn fresh_redis(name: &str) -> TestRedis {
    let cfg = RedisConfig {
        url: redis_url(),
        prefix: unique(name),
        ..RedisConfig::default()
    };
    clear_redis(&cfg);
    Fresh(cfg)
}

/// A blocking connection to `cfg`'s Redis, as the sinks make it.
pub fn redis_conn(cfg: &RedisConfig) -> redis::Connection {
    let client = eddy_storage::redis_client(cfg).expect("a valid redis url");
    eddy_storage::redis_connection(&client)
        .unwrap_or_else(|e| panic!("cannot connect to redis at {}: {e}", cfg.url))
}

/// Deletes every key under `cfg.prefix`.
pub fn clear_redis(cfg: &RedisConfig) {
    let mut con = redis_conn(cfg);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", cfg.prefix))
        .query(&mut con)
        .expect("redis KEYS");
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .exec(&mut con)
            .expect("redis DEL");
    }
}

// ---- ClickHouse ----

/// A ClickHouse config for a database no other test uses, just created with eddy's schema.
pub type TestDatabase = Fresh<ClickHouseConfig>;

/// A fresh database [`unique`]`(name)` on the test ClickHouse (see [`TestDatabase`]).
pub fn fresh_clickhouse(name: &str) -> TestDatabase {
    let cfg = ClickHouseConfig {
        url: clickhouse_url(),
        database: unique(name),
        ..ClickHouseConfig::default()
    };
    reset_database(&cfg);
    Fresh(cfg)
}

/// Drops `cfg.database` and creates it again with the schema of `clickhouse/schema/` (as
/// compiled into eddy: [`eddy_storage::EMBEDDED_SCHEMA`]), checking every file was applied.
pub fn reset_database(cfg: &ClickHouseConfig) {
    drop_database(cfg);
    let applied = block_on(eddy_storage::apply_schema(
        cfg,
        &eddy_storage::embedded_schema(),
    ))
    .unwrap_or_else(|e| panic!("schema of {}: {e}", cfg.database));
    let files: Vec<&str> = eddy_storage::EMBEDDED_SCHEMA.iter().map(|f| f.0).collect();
    assert_eq!(applied, files, "schema files applied to {}", cfg.database);
}

/// Drops `cfg.database` if it exists.
pub fn drop_database(cfg: &ClickHouseConfig) {
    eddy_storage::valid_database(&cfg.database).expect("a plain database name");
    ch_exec(cfg, &format!("DROP DATABASE IF EXISTS {}", cfg.database));
}

/// Runs a statement on `cfg`'s server (no database set: name tables `db.table`).
pub fn ch_exec(cfg: &ClickHouseConfig, sql: &str) {
    block_on(eddy_storage::clickhouse_server(cfg).query(sql).execute())
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The rows of a query in `cfg.database` (`SELECT ?fields FROM …` for a row type of
/// [`eddy_storage`]), with its `?` values bound by `bind`.
pub fn ch_fetch<T>(
    cfg: &ClickHouseConfig,
    sql: &str,
    bind: impl FnOnce(clickhouse::query::Query) -> clickhouse::query::Query,
) -> Vec<T>
where
    T: clickhouse::RowOwned + clickhouse::RowRead + Send,
{
    let client = eddy_storage::clickhouse_client(cfg).expect("a valid database name");
    let query = bind(client.query(sql));
    block_on(query.fetch_all::<T>()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The latest checkpoint saved under `name` (a topic, or a replay's checkpoint name): one row
/// per partition, empty when there is none ([`eddy_storage::LATEST_CHECKPOINT_QUERY`]).
pub fn latest_checkpoint(cfg: &ClickHouseConfig, name: &str) -> Vec<eddy_storage::CheckpointRow> {
    ch_fetch(cfg, eddy_storage::LATEST_CHECKPOINT_QUERY, |q| {
        q.bind(name).bind(name)
    })
}

// ---- a private Redis ----

/// A `redis-server` of the test's own on a free loopback port (no persistence), so stopping
/// it disturbs no other test. Killed on drop.
#[derive(Debug)]
pub struct PrivateRedis {
    child: Option<std::process::Child>,
    port: u16,
}

impl PrivateRedis {
    /// Starts the server (`scripts/services up redis` installs `redis-server` if needed) and
    /// waits until it answers `PING`.
    pub fn start() -> Self {
        crate::services(&["redis"]);
        let port = crate::free_port();
        let mut redis = Self { child: None, port };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:{port}/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (empty: nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, starts it again on the same port and waits until it
    /// answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("a valid redis url");
        wait_until(
            &format!("the private redis on port {} to answer", self.port),
            Duration::from_secs(20),
            || {
                client
                    .get_connection()
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            },
        );
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
