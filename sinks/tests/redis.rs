//! RedisSink against a real Redis (`scripts/services up redis clickhouse`).

use eddy_core::CountsBatch;
use eddy_core::EventType::{Click, Conversion, View};
use eddy_sinks::{EpochSink, RedisSink};
use eddy_storage::keys;
use eddy_testkit::fixtures::*;
use eddy_testkit::stores::{fresh_redis, redis_conn};
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

/// A sorted set's members with their scores (as `S`), lowest score first.
fn zset<S: redis::FromRedisValue>(con: &mut redis::Connection, key: &str) -> Vec<(String, S)> {
    con.zrange_withscores(key, 0, -1).unwrap()
}

#[test]
fn writes_exact_hashes_sets_and_watermark() {
    let cfg = fresh_redis("layout");
    let p = cfg.prefix.clone();
    let mut sink = RedisSink::connect(&cfg).unwrap();
    assert_eq!(EpochSink::<CountsBatch>::name(&sink), "redis");
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
        hash(&mut con, &keys::type_window(&p, View, HOUR + 2 * MIN)),
        h(&[("count", "3"), ("sum", "0"), ("final", "0"), ("epoch", "7")])
    );
    assert_eq!(
        hash(&mut con, &keys::type_window(&p, Conversion, HOUR + MIN)),
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
        hash(
            &mut con,
            &keys::campaign_window(&p, 42, Click, HOUR + 2 * MIN)
        ),
        h(&[("count", "5"), ("final", "0"), ("epoch", "7")])
    );
    assert_eq!(
        hash(&mut con, &keys::campaign_window(&p, 42, Click, HOUR + MIN)),
        h(&[("count", "9"), ("final", "1"), ("epoch", "7")])
    );
    let w = |s: i64| (s.to_string(), s);
    assert_eq!(
        zset(&mut con, &keys::type_windows(&p, View)),
        vec![w(HOUR + 2 * MIN)]
    );
    assert_eq!(
        zset(&mut con, &keys::type_windows(&p, Conversion)),
        vec![w(HOUR + MIN)]
    );
    assert_eq!(
        zset(&mut con, &keys::campaign_windows(&p, 42, Click)),
        vec![w(HOUR + MIN), w(HOUR + 2 * MIN)]
    );
    let wm: i64 = con.get(keys::watermark(&p)).unwrap();
    assert_eq!(wm, HOUR + 2 * MIN);

    // TTLs: window hashes and campaign sets expire, type sets do not.
    let ttl = |con: &mut redis::Connection, k: String| -> i64 { con.ttl(k).unwrap() };
    let window_ttl = cfg.window_ttl_secs as i64;
    for key in [
        keys::type_window(&p, View, HOUR + 2 * MIN),
        keys::campaign_window(&p, 42, Click, HOUR + MIN),
        keys::campaign_windows(&p, 42, Click),
    ] {
        let t = ttl(&mut con, key.clone());
        assert!(t > window_ttl - 60 && t <= window_ttl, "{key}: ttl {t}");
    }
    assert_eq!(ttl(&mut con, keys::type_windows(&p, View)), -1);
    assert_eq!(ttl(&mut con, keys::watermark(&p)), -1);
}

#[test]
fn rewrites_are_idempotent_and_latest_wins() {
    let cfg = fresh_redis("idempotent");
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
        hash(&mut con, &keys::type_window(&p, Conversion, HOUR)),
        h(&[("count", "4"), ("sum", "0"), ("final", "1"), ("epoch", "2")])
    );
    assert_eq!(
        hash(&mut con, &keys::campaign_window(&p, 1, Conversion, HOUR)),
        h(&[("count", "4"), ("final", "1"), ("epoch", "2")])
    );
    assert_eq!(
        zset(&mut con, &keys::type_windows(&p, Conversion)),
        vec![(HOUR.to_string(), HOUR)]
    );
    assert_eq!(
        zset(&mut con, &keys::campaign_windows(&p, 1, Conversion)),
        vec![(HOUR.to_string(), HOUR)]
    );
    let mut keys: Vec<String> = con.keys(format!("{p}:*")).unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            keys::campaign_windows(&p, 1, Conversion),
            keys::campaign_window(&p, 1, Conversion, HOUR),
            keys::type_windows(&p, Conversion),
            keys::type_window(&p, Conversion, HOUR),
            keys::watermark(&p),
        ]
    );
}

#[test]
fn trims_sets_beyond_the_ttl_horizon_and_writes_the_boundary() {
    let redis = fresh_redis("trim");
    let cfg = eddy_core::config::RedisConfig {
        window_ttl_secs: 600,
        ..redis.config().clone()
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
        zset(&mut con, &keys::type_windows(&p, View)),
        vec![w(HOUR - 5 * MIN)]
    );
    assert_eq!(
        zset(&mut con, &keys::campaign_windows(&p, 3, View)),
        vec![w(HOUR - 5 * MIN)]
    );
    let mut b2 = batch(2, HOUR + 6 * MIN);
    b2.open_types = vec![tw(HOUR + 6 * MIN, View, 1, 0, None, None)];
    sink.write(&b2).unwrap();
    assert_eq!(
        zset(&mut con, &keys::type_windows(&p, View)),
        vec![w(HOUR + 6 * MIN)]
    );

    let before = eddy_core::now_ms();
    sink.write_boundary(HOUR + 5 * MIN).unwrap();
    let boundary: i64 = con.get(keys::boundary(&p)).unwrap();
    let as_of: i64 = con.get(keys::as_of(&p)).unwrap();
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

fn string(con: &mut redis::Connection, key: &str) -> Option<String> {
    con.get(key).unwrap()
}

#[test]
fn writes_engagement_top_list_and_user_lists() {
    let cfg = fresh_redis("engagement");
    let p = cfg.prefix.clone();
    let mut sink = RedisSink::connect(&cfg).unwrap();
    let w1 = HOUR + 5 * MIN;
    let mut b1 = batch(3, w1);
    b1.sliding_ms = 10 * MIN;
    b1.engagement = vec![eng(42, 10, 2, 1, 5_000_000), eng(43, 3, 0, 0, 0)];
    b1.top_campaigns = Some(vec![eng(42, 10, 2, 1, 5_000_000), eng(43, 3, 0, 0, 0)]);
    let mut s1 = sim_batch(3, w1, 10 * MIN);
    s1.similar = vec![
        similar(7, vec![nb(8, 2, 3), nb(9, 1, 4)]),
        similar(8, vec![nb(7, 2, 3)]),
    ];
    s1.campaigns = vec![user_set(7, vec![43, 44])];
    for _ in 0..2 {
        sink.write(&b1).unwrap();
        sink.write(&s1).unwrap();
    }

    let mut con = redis_conn(&cfg);
    let as_of = w1.to_string();
    assert_eq!(
        hash(&mut con, &keys::campaign(&p, 42)),
        h(&[
            ("views", "10"),
            ("clicks", "2"),
            ("conversions", "1"),
            ("revenue", "5000000"),
            ("score", "45"),
            ("as_of", &as_of),
            ("epoch", "3")
        ])
    );
    assert_eq!(
        hash(&mut con, &keys::campaign(&p, 43)),
        h(&[
            ("views", "3"),
            ("clicks", "0"),
            ("conversions", "0"),
            ("revenue", "0"),
            ("score", "3"),
            ("as_of", &as_of),
            ("epoch", "3")
        ])
    );
    assert_eq!(
        zset::<f64>(&mut con, &keys::top_campaigns(&p)),
        vec![("43".to_owned(), 3.0), ("42".to_owned(), 45.0)]
    );
    assert_eq!(
        string(&mut con, &keys::top_campaigns_as_of(&p)),
        Some(as_of.clone())
    );
    assert_eq!(
        string(&mut con, &keys::user_similar(&p, 7)).unwrap(),
        format!(
            r#"{{"as_of":{w1},"neighbors":[{{"user_id":8,"shared":2,"union":3}},{{"user_id":9,"shared":1,"union":4}}]}}"#
        )
    );
    assert_eq!(
        string(&mut con, &keys::user_similar(&p, 8)).unwrap(),
        format!(r#"{{"as_of":{w1},"neighbors":[{{"user_id":7,"shared":2,"union":3}}]}}"#)
    );
    assert_eq!(
        string(&mut con, &keys::user_campaigns(&p, 7)).unwrap(),
        format!(r#"{{"as_of":{w1},"campaigns":[43,44]}}"#)
    );
    // TTLs: sliding_ms / 1000 + window_ttl_secs on campaign and user keys; none on the top list.
    let long = 600 + cfg.window_ttl_secs as i64;
    for key in [
        keys::campaign(&p, 42),
        keys::user_similar(&p, 7),
        keys::user_campaigns(&p, 7),
    ] {
        let t: i64 = con.ttl(&key).unwrap();
        assert!(t > long - 60 && t <= long, "{key}: ttl {t}");
    }
    for key in [keys::top_campaigns(&p), keys::top_campaigns_as_of(&p)] {
        let t: i64 = con.ttl(&key).unwrap();
        assert_eq!(t, -1, "{key}");
    }

    // Later: 42 leaves the window, 43 changes, user 7 loses both lists, 8 is untouched.
    let w2 = HOUR + 6 * MIN;
    let mut b2 = batch(4, w2);
    b2.sliding_ms = 10 * MIN;
    b2.engagement = vec![eng(43, 5, 1, 0, 1)];
    b2.engagement_removed = vec![42];
    b2.top_campaigns = Some(vec![eng(43, 5, 1, 0, 1)]);
    let mut s2 = sim_batch(4, w2, 10 * MIN);
    s2.similar = vec![similar(7, vec![])];
    s2.campaigns = vec![user_set(7, vec![])];
    for _ in 0..2 {
        sink.write(&b2).unwrap();
        sink.write(&s2).unwrap();
    }
    // A batch without a top list leaves it alone.
    let mut b3 = batch(5, HOUR + 7 * MIN);
    b3.sliding_ms = 10 * MIN;
    sink.write(&b3).unwrap();

    assert!(hash(&mut con, &keys::campaign(&p, 42)).is_empty());
    assert_eq!(
        hash(&mut con, &keys::campaign(&p, 43)),
        h(&[
            ("views", "5"),
            ("clicks", "1"),
            ("conversions", "0"),
            ("revenue", "1"),
            ("score", "10"),
            ("as_of", &w2.to_string()),
            ("epoch", "4")
        ])
    );
    assert_eq!(
        zset::<f64>(&mut con, &keys::top_campaigns(&p)),
        vec![("43".to_owned(), 10.0)]
    );
    assert_eq!(
        string(&mut con, &keys::top_campaigns_as_of(&p)),
        Some(w2.to_string())
    );
    let mut keys: Vec<String> = con.keys(format!("{p}:*")).unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            keys::campaign(&p, 43),
            keys::top_campaigns(&p),
            keys::top_campaigns_as_of(&p),
            keys::user_similar(&p, 8),
            keys::watermark(&p),
        ]
    );

    // An empty top list: the sorted set disappears, its as_of says when.
    let mut b4 = batch(6, HOUR + 8 * MIN);
    b4.engagement_removed = vec![43];
    b4.top_campaigns = Some(vec![]);
    sink.write(&b4).unwrap();
    assert!(zset::<f64>(&mut con, &keys::top_campaigns(&p)).is_empty());
    assert!(hash(&mut con, &keys::campaign(&p, 43)).is_empty());
    assert_eq!(
        string(&mut con, &keys::top_campaigns_as_of(&p)),
        Some((HOUR + 8 * MIN).to_string())
    );
}

#[test]
fn rejects_non_finite_scores_without_writing() {
    let cfg = fresh_redis("nan");
    let p = cfg.prefix.clone();
    let mut sink = RedisSink::connect(&cfg).unwrap();
    let mut b = batch(1, HOUR);
    let mut e = eng(1, 1, 0, 0, 0);
    e.score = eddy_core::Score(f64::NAN);
    b.engagement = vec![eng(2, 1, 0, 0, 0)];
    b.top_campaigns = Some(vec![e]);
    let err = sink.write(&b).unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("non-finite score"), "{err}");
    let mut con = redis_conn(&cfg);
    let keys: Vec<String> = con.keys(format!("{p}:*")).unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}
