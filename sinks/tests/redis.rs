//! RedisSink against a real Redis (`scripts/services up redis clickhouse`).

mod common;

use common::*;
use eddy_core::EventType::{Click, Conversion, View};
use eddy_sinks::{EpochSink, RedisSink};
use redis::Commands;
use std::collections::HashMap;

fn hash(con: &mut redis::Connection, key: &str) -> HashMap<String, String> {
    con.hgetall(key).unwrap()
}

fn h(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn zset(con: &mut redis::Connection, key: &str) -> Vec<(String, i64)> {
    con.zrange_withscores(key, 0, -1).unwrap()
}

#[test]
fn writes_exact_hashes_sets_and_watermark() {
    let cfg = redis_cfg("layout");
    let p = cfg.prefix.clone();
    let mut sink = RedisSink::connect(&cfg).unwrap();
    assert_eq!(sink.name(), "redis");
    let mut b = batch(7, HOUR + 2 * MIN);
    b.open_types = vec![tw(HOUR + 2 * MIN, View, 3, 0, None, None)];
    b.final_types = vec![tw(
        HOUR + MIN,
        Conversion,
        2,
        15_500_000,
        Some(500_000),
        Some(15_000_000),
    )];
    b.open_campaigns = vec![cw(HOUR + 2 * MIN, 42, Click, 5)];
    b.final_campaigns = vec![cw(HOUR + MIN, 42, Click, 9)];
    sink.write(&b).unwrap();

    let mut con = redis_conn(&cfg);
    assert_eq!(
        hash(&mut con, &format!("{p}:tw:view:{}", HOUR + 2 * MIN)),
        h(&[("count", "3"), ("sum", "0"), ("final", "0"), ("epoch", "7")])
    );
    assert_eq!(
        hash(&mut con, &format!("{p}:tw:conversion:{}", HOUR + MIN)),
        h(&[
            ("count", "2"),
            ("sum", "15500000"),
            ("min", "500000"),
            ("max", "15000000"),
            ("final", "1"),
            ("epoch", "7")
        ])
    );
    assert_eq!(
        hash(&mut con, &format!("{p}:cw:42:click:{}", HOUR + 2 * MIN)),
        h(&[("count", "5"), ("final", "0"), ("epoch", "7")])
    );
    assert_eq!(
        hash(&mut con, &format!("{p}:cw:42:click:{}", HOUR + MIN)),
        h(&[("count", "9"), ("final", "1"), ("epoch", "7")])
    );
    let w = |s: i64| (s.to_string(), s);
    assert_eq!(
        zset(&mut con, &format!("{p}:tw:view")),
        vec![w(HOUR + 2 * MIN)]
    );
    assert_eq!(
        zset(&mut con, &format!("{p}:tw:conversion")),
        vec![w(HOUR + MIN)]
    );
    assert_eq!(
        zset(&mut con, &format!("{p}:cw:42:click")),
        vec![w(HOUR + MIN), w(HOUR + 2 * MIN)]
    );
    let wm: i64 = con.get(format!("{p}:watermark")).unwrap();
    assert_eq!(wm, HOUR + 2 * MIN);

    // TTLs: window hashes and campaign sets expire, type sets do not.
    let ttl = |con: &mut redis::Connection, k: String| -> i64 { con.ttl(k).unwrap() };
    let window_ttl = cfg.window_ttl_secs as i64;
    for key in [
        format!("{p}:tw:view:{}", HOUR + 2 * MIN),
        format!("{p}:cw:42:click:{}", HOUR + MIN),
        format!("{p}:cw:42:click"),
    ] {
        let t = ttl(&mut con, key.clone());
        assert!(t > window_ttl - 60 && t <= window_ttl, "{key}: ttl {t}");
    }
    assert_eq!(ttl(&mut con, format!("{p}:tw:view")), -1);
    assert_eq!(ttl(&mut con, format!("{p}:watermark")), -1);
}

#[test]
fn rewrites_are_idempotent_and_latest_wins() {
    let cfg = redis_cfg("idempotent");
    let p = cfg.prefix.clone();
    let mut sink = RedisSink::connect(&cfg).unwrap();
    let mut b1 = batch(1, HOUR);
    b1.open_types = vec![tw(
        HOUR,
        Conversion,
        1,
        2_000_000,
        Some(2_000_000),
        Some(2_000_000),
    )];
    b1.open_campaigns = vec![cw(HOUR, 1, Conversion, 1)];
    sink.write(&b1).unwrap();
    sink.write(&b1).unwrap();
    let mut b2 = batch(2, HOUR + MIN);
    // Absolute values: fields absent from the new row disappear.
    b2.final_types = vec![tw(HOUR, Conversion, 4, 0, None, None)];
    b2.final_campaigns = vec![cw(HOUR, 1, Conversion, 4)];
    sink.write(&b2).unwrap();
    sink.write(&b2).unwrap();

    let mut con = redis_conn(&cfg);
    assert_eq!(
        hash(&mut con, &format!("{p}:tw:conversion:{HOUR}")),
        h(&[("count", "4"), ("sum", "0"), ("final", "1"), ("epoch", "2")])
    );
    assert_eq!(
        hash(&mut con, &format!("{p}:cw:1:conversion:{HOUR}")),
        h(&[("count", "4"), ("final", "1"), ("epoch", "2")])
    );
    assert_eq!(
        zset(&mut con, &format!("{p}:tw:conversion")),
        vec![(HOUR.to_string(), HOUR)]
    );
    assert_eq!(
        zset(&mut con, &format!("{p}:cw:1:conversion")),
        vec![(HOUR.to_string(), HOUR)]
    );
    let mut keys: Vec<String> = con.keys(format!("{p}:*")).unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            format!("{p}:cw:1:conversion"),
            format!("{p}:cw:1:conversion:{HOUR}"),
            format!("{p}:tw:conversion"),
            format!("{p}:tw:conversion:{HOUR}"),
            format!("{p}:watermark"),
        ]
    );
}

#[test]
fn trims_sets_beyond_the_ttl_horizon_and_writes_the_boundary() {
    let cfg = eddy_core::config::RedisConfig {
        window_ttl_secs: 600,
        ..redis_cfg("trim")
    };
    let p = cfg.prefix.clone();
    let mut sink = RedisSink::connect(&cfg).unwrap();
    let mut b1 = batch(1, HOUR);
    b1.final_types = vec![
        tw(HOUR - 20 * MIN, View, 1, 0, None, None),
        tw(HOUR - 5 * MIN, View, 2, 0, None, None),
    ];
    b1.final_campaigns = vec![
        cw(HOUR - 20 * MIN, 3, View, 1),
        cw(HOUR - 5 * MIN, 3, View, 2),
    ];
    sink.write(&b1).unwrap();
    let mut con = redis_conn(&cfg);
    // Horizon = watermark - TTL = HOUR - 10 min: the -20 min window is trimmed at once.
    let w = |s: i64| (s.to_string(), s);
    assert_eq!(
        zset(&mut con, &format!("{p}:tw:view")),
        vec![w(HOUR - 5 * MIN)]
    );
    assert_eq!(
        zset(&mut con, &format!("{p}:cw:3:view")),
        vec![w(HOUR - 5 * MIN)]
    );
    let mut b2 = batch(2, HOUR + 6 * MIN);
    b2.open_types = vec![tw(HOUR + 6 * MIN, View, 1, 0, None, None)];
    sink.write(&b2).unwrap();
    assert_eq!(
        zset(&mut con, &format!("{p}:tw:view")),
        vec![w(HOUR + 6 * MIN)]
    );

    let before = eddy_core::now_ms();
    sink.write_boundary(HOUR + 5 * MIN).unwrap();
    let boundary: i64 = con.get(format!("{p}:boundary")).unwrap();
    let as_of: i64 = con.get(format!("{p}:as_of")).unwrap();
    assert_eq!(boundary, HOUR + 5 * MIN);
    assert!(
        as_of >= before && as_of <= eddy_core::now_ms(),
        "as_of {as_of}"
    );
}

#[test]
fn connect_fails_clearly_when_redis_is_down() {
    let cfg = eddy_core::config::RedisConfig {
        url: "redis://127.0.0.1:1/".into(),
        ..Default::default()
    };
    let err = RedisSink::connect(&cfg)
        .err()
        .expect("nothing listens on port 1");
    assert!(err.is_retryable(), "{err}");
    assert!(RedisSink::lazy(&cfg).is_ok());
    let bad = eddy_core::config::RedisConfig {
        url: "nope://x".into(),
        ..Default::default()
    };
    assert!(!RedisSink::lazy(&bad).err().unwrap().is_retryable());
}
