//! A pipeline config of a test's own, for tests that run `eddy run` (or its parts) against the
//! real broker and stores: fresh topics, consumer group and Redis prefix, and a ClickHouse
//! database just reset with eddy's schema.
//!
//! ```no_run
//! let cfg = eddy_testkit::pipeline::fresh_config("doc_run");
//! assert!(cfg.kafka.topic.starts_with("doc_run_"));
//! assert_eq!(cfg.kafka.dlq_topic, format!("{}.dlq", cfg.kafka.topic));
//! assert_eq!(cfg.clickhouse.database, "eddy_doc_run");
//! // the topics are the test's to create: `eddy::kafka::create_topics(&cfg.kafka)`
//! ```

use crate::stores::reset_database;
use eddy_core::Config;

/// The default config with, after starting every service:
/// - source topic, consumer group and Redis prefix `{name}_{pid}_{now_ms}` (new on every run,
///   so no offset, checkpoint or key of an earlier run is met), dead letters to `{topic}.dlq`;
/// - one partition, one worker, similarity off;
/// - ClickHouse database `eddy_{name}`, dropped and created again with the schema
///   ([`reset_database`]).
///
/// The topics are not created: that is `eddy::kafka::create_topics`, which the test calls (the
/// test kit does not depend on the `eddy` crate it tests).
pub fn fresh_config(name: &str) -> Config {
    crate::services(&[]);
    let unique = format!("{name}_{}_{}", std::process::id(), eddy_core::now_ms());
    let mut cfg = Config::default();
    cfg.kafka.topic = unique.clone();
    cfg.kafka.dlq_topic = format!("{unique}.dlq");
    cfg.kafka.group_id = unique.clone();
    cfg.kafka.partitions = 1;
    cfg.pipeline.workers = 1;
    cfg.similarity.enabled = false;
    cfg.redis.prefix = unique;
    cfg.clickhouse.database = format!("eddy_{name}");
    reset_database(&cfg.clickhouse);
    cfg
}

/// The `EDDY_*` environment that makes an `eddy run` child use `cfg`'s own topics, consumer
/// group, Redis prefix, ClickHouse database, partitions, workers and similarity switch (the
/// fields [`fresh_config`] makes the test's own); add or override others with `.env`.
pub fn run_env(cfg: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("EDDY_KAFKA__TOPIC", cfg.kafka.topic.clone()),
        ("EDDY_KAFKA__DLQ_TOPIC", cfg.kafka.dlq_topic.clone()),
        ("EDDY_KAFKA__GROUP_ID", cfg.kafka.group_id.clone()),
        ("EDDY_KAFKA__PARTITIONS", cfg.kafka.partitions.to_string()),
        ("EDDY_CLICKHOUSE__DATABASE", cfg.clickhouse.database.clone()),
        ("EDDY_REDIS__PREFIX", cfg.redis.prefix.clone()),
        ("EDDY_PIPELINE__WORKERS", cfg.pipeline.workers.to_string()),
        (
            "EDDY_SIMILARITY__ENABLED",
            cfg.similarity.enabled.to_string(),
        ),
    ]
}
