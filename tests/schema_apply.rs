//! The binary carries its ClickHouse schema: `eddy schema apply`, run from a directory outside
//! the repository (no `clickhouse/schema/` next to it), creates every table eddy needs in a
//! fresh database of the real ClickHouse (`scripts/services`).

use eddy_core::config::ClickHouseConfig;
use eddy_testkit::stores::{clickhouse_url, drop_database, unique};
use std::process::Command;

#[test]
fn schema_apply_works_outside_the_repository() {
    eddy_testkit::services(&["clickhouse"]);
    let cfg = ClickHouseConfig {
        url: clickhouse_url(),
        database: unique("schema_apply"),
        ..ClickHouseConfig::default()
    };
    drop_database(&cfg);
    // An empty directory of its own: nothing of the repository is reachable from it.
    let dir = std::env::temp_dir().join(format!("eddy_schema_apply_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(!dir.join("clickhouse").exists());
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["schema", "apply"])
        .current_dir(&dir)
        .env_remove("EDDY_CONFIG")
        .env("EDDY_CLICKHOUSE__URL", &cfg.url)
        .env("EDDY_CLICKHOUSE__DATABASE", &cfg.database)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "eddy schema apply from {}: {}\n{stdout}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let applied: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("applied "))
        .collect();
    let files: Vec<&str> = eddy_storage::EMBEDDED_SCHEMA.iter().map(|f| f.0).collect();
    assert_eq!(applied, files);
    // Every table eddy run requires is there.
    let checked = eddy_testkit::block_on(eddy_storage::check_schema(&cfg));
    drop_database(&cfg);
    checked.unwrap();
}
