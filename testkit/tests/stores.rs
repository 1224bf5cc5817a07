//! The per-test stores against the real services: fresh, typed reads, removed on drop.

use eddy_testkit::stores::{
    PrivateRedis, ch_fetch, clear_redis, fresh_clickhouse, fresh_redis, redis_conn, unique,
};
use redis::Commands;

#[test]
fn a_fresh_prefix_starts_empty_and_is_cleared_on_drop() {
    let redis = fresh_redis("testkit_prefix");
    assert_eq!(redis.prefix, unique("testkit_prefix"));
    let key = format!("{}:k", redis.prefix);
    let mut con = redis_conn(&redis);
    let _: () = con.set(&key, 1).unwrap();
    // A second guard of the same name starts empty.
    let config = redis.config().clone();
    drop(redis);
    let exists: bool = con.exists(&key).unwrap();
    assert!(!exists, "{key} left behind");
    let _: () = con.set(&key, 2).unwrap();
    let again = fresh_redis("testkit_prefix");
    let exists: bool = con.exists(&key).unwrap();
    assert!(!exists, "{key} not cleared by a fresh prefix");
    drop(again);
    clear_redis(&config);
}

#[test]
fn a_fresh_database_has_the_schema_and_is_dropped_on_drop() {
    let db = fresh_clickhouse("testkit_db");
    let name = db.database.clone();
    let tables: Vec<String> = ch_fetch(
        &db,
        "SELECT name FROM system.tables WHERE database = ? ORDER BY name",
        |q| q.bind(name.as_str()),
    );
    for table in eddy_storage::REQUIRED_TABLES {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing: {tables:?}"
        );
    }
    let config = db.config().clone();
    drop(db);
    let left: Vec<String> = ch_fetch(
        &eddy_core::config::ClickHouseConfig {
            database: "system".into(),
            ..config
        },
        "SELECT name FROM system.databases WHERE name = ?",
        |q| q.bind(name.as_str()),
    );
    assert!(left.is_empty(), "{name} not dropped");
}

#[test]
fn a_private_redis_stops_and_restarts_on_its_port() {
    let mut server = PrivateRedis::start();
    let client = redis::Client::open(server.url()).unwrap();
    let ping = |c: &redis::Client| {
        c.get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    };
    assert!(ping(&client));
    server.stop();
    assert!(!ping(&client));
    server.restart();
    assert!(ping(&client));
}
