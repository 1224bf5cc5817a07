//! The status records on the real Redis (`scripts/services`): what a process publishes is
//! what the query server reads, one field per process, with an expiry.

use eddy_core::Metrics;
use eddy_core::api::{ProcessIdentity, ProcessStatus};
use eddy_storage::status::{STATUS_TTL_SECS, publish_status, read_statuses, status_key};
use eddy_testkit::stores::{fresh_redis, redis_conn};

fn record(process: usize, metrics: &Metrics, now_ms: i64) -> ProcessStatus {
    let identity = ProcessIdentity {
        process,
        ..ProcessIdentity::this_process(0, "run")
    };
    ProcessStatus::digest(identity, metrics, None, None, now_ms)
}

#[tokio::test]
async fn published_records_are_read_back_per_process() {
    eddy_testkit::services(&["redis"]);
    let redis = fresh_redis("status");
    let mut con = redis_conn(&redis);
    let client = eddy_storage::redis_client(&redis).unwrap();
    let mut acon = client.get_multiplexed_async_connection().await.unwrap();
    assert!(
        read_statuses(&mut acon, &redis.prefix)
            .await
            .unwrap()
            .is_empty()
    );

    let metrics = Metrics::new();
    metrics.watermark_ms.set(5_000);
    publish_status(&mut con, &redis.prefix, &record(0, &metrics, 6_000)).unwrap();
    publish_status(&mut con, &redis.prefix, &record(1, &metrics, 6_000)).unwrap();
    // A newer record replaces the process's older one.
    metrics.watermark_ms.set(7_000);
    let newer = record(1, &metrics, 8_000);
    publish_status(&mut con, &redis.prefix, &newer).unwrap();
    // A replay's process 1 keeps a record of its own.
    let replay = ProcessStatus {
        identity: ProcessIdentity {
            mode: "replay".into(),
            ..newer.identity.clone()
        },
        ..newer.clone()
    };
    publish_status(&mut con, &redis.prefix, &replay).unwrap();
    // A field another version wrote is skipped.
    let _: () = redis::cmd("HSET")
        .arg(status_key(&redis.prefix))
        .arg(9)
        .arg("{\"not\": \"a status\"}")
        .query(&mut con)
        .unwrap();

    let mut read = read_statuses(&mut acon, &redis.prefix).await.unwrap();
    read.sort_by_key(|r| (r.identity.process, r.identity.mode.clone()));
    assert_eq!(read.len(), 3);
    assert_eq!(read[0].watermark_ms, Some(5_000));
    assert_eq!(read[1], replay);
    assert_eq!(read[2], newer);
    let ttl: i64 = redis::cmd("TTL")
        .arg(status_key(&redis.prefix))
        .query(&mut con)
        .unwrap();
    assert!(ttl > 0 && ttl <= STATUS_TTL_SECS, "ttl {ttl}");
}
