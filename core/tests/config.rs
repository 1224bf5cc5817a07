//! Loading the configuration: layers, unknown keys, type errors, validation.

use eddy_core::config::{PipelineConfig, RedisConfig, SimilarityAlgorithm};
use eddy_core::{Config, ConfigError};
use std::path::Path;

#[test]
fn env_overrides_file_overrides_defaults() {
    let file = temp_file(
        "c.toml",
        "[pipeline]\nwindow_ms = 5000\nlateness_ms = 1000\n",
    );
    let env = vec![
        ("EDDY_PIPELINE__LATENESS_MS".to_string(), "250".to_string()),
        ("EDDY_KAFKA__TOPIC".to_string(), "t2".to_string()),
        ("PATH".to_string(), "/bin".to_string()),
    ];
    let c = Config::load(Some(&file), env).unwrap();
    assert_eq!(c.pipeline.window_ms, 5000);
    assert_eq!(c.pipeline.lateness_ms, 250);
    assert_eq!(c.kafka.topic, "t2");
    assert_eq!(c.redis, RedisConfig::default());
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_err(file: Option<&Path>, vars: &[(&str, &str)]) -> String {
    Config::load(file, env(vars))
        .expect_err("invalid configuration")
        .to_string()
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("eddy-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn rejects_unknown_fields_and_bad_values() {
    let e = load_err(None, &[("EDDY_PIPELINE__NOPE", "1")]);
    assert!(
        e.contains("nope") && e.contains("EDDY_PIPELINE__NOPE"),
        "{e}"
    );
    let e = load_err(None, &[("EDDY_NOPE__WINDOW_MS", "1")]);
    assert!(e.contains("unknown field") && e.contains("nope"), "{e}");
    let e = load_err(None, &[("EDDY_PIPELINE__WINDOW_MS", "abc")]);
    assert!(e.contains("EDDY_PIPELINE__WINDOW_MS"), "{e}");
    let e = load_err(None, &[("EDDY_PIPELINE__WORKERS", "-2")]);
    assert!(e.contains("EDDY_PIPELINE__WORKERS"), "{e}");
    let e = load_err(None, &[("EDDY_SIMILARITY__ENABLED", "maybe")]);
    assert!(e.contains("EDDY_SIMILARITY__ENABLED"), "{e}");
    let e = load_err(None, &[("EDDY_PIPELINE__WINDOW_MS", "0")]);
    assert!(e.contains("pipeline.window_ms must be > 0"), "{e}");
    let e = load_err(None, &[("EDDY_PIPELINE__MAX_LAGGING_EPOCHS", "7")]);
    assert!(e.contains("max_lagging_epochs must be >= "), "{e}");
    let e = load_err(None, &[("EDDY_ENGAGEMENT__WEIGHT_VIEW", "nan")]);
    assert!(e.contains("EDDY_ENGAGEMENT__WEIGHT_VIEW"), "{e}");
    let file = temp_file("nan.toml", "[engagement]\nweight_view = nan\n");
    let e = load_err(Some(&file), &[]);
    assert!(e.contains("engagement weights must be finite"), "{e}");
}

#[test]
fn rejects_unknown_fields_and_bad_types_in_the_file() {
    let file = temp_file("unknown.toml", "[pipeline]\nwindow_msec = 5000\n");
    let e = load_err(Some(&file), &[]);
    assert!(
        e.contains("window_msec") && e.contains("unknown.toml"),
        "{e}"
    );
    let file = temp_file("section.toml", "[pipline]\nwindow_ms = 5000\n");
    assert!(load_err(Some(&file), &[]).contains("pipline"));
    let file = temp_file("type.toml", "[kafka]\npartitions = \"many\"\n");
    let e = load_err(Some(&file), &[]);
    assert!(e.contains("partitions") && e.contains("type.toml"), "{e}");
    let file = temp_file("syntax.toml", "[kafka\n");
    assert!(load_err(Some(&file), &[]).contains("syntax.toml"));
    let missing = Path::new("/nonexistent/eddy.toml");
    let e = Config::load(Some(missing), Vec::new()).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
}

#[test]
fn env_values_keep_their_text_and_other_variables_are_ignored() {
    let c = Config::load(
        None,
        env(&[
            ("EDDY_KAFKA__TOPIC", "123"),
            ("EDDY_CLICKHOUSE__PASSWORD", " \"true\" "),
            ("EDDY_ENGAGEMENT__WEIGHT_VIEW", "2"),
            ("EDDY_SIMILARITY__ENABLED", "false"),
            ("EDDY_SIMILARITY__MODE", "exact"),
            ("EDDY_CONFIG", "/elsewhere.toml"),
            ("EDDY_LOG", "debug"),
            ("EDDY_A__B__C", "1"),
            ("eddy_pipeline__workers", "7"),
        ]),
    )
    .unwrap();
    assert_eq!(c.kafka.topic, "123");
    assert_eq!(c.clickhouse.password, " \"true\" ");
    assert_eq!(c.engagement.weight_view, 2.0);
    assert!(!c.similarity.enabled);
    assert_eq!(c.similarity.mode, SimilarityAlgorithm::Exact);
    assert_eq!(c.pipeline.workers, PipelineConfig::default().workers);
}

#[test]
fn similarity_mode_is_minhash_or_exact() {
    let file = temp_file("mode.toml", "[similarity]\nmode = \"exact\"\n");
    let c = Config::load(Some(&file), Vec::new()).unwrap();
    assert_eq!(c.similarity.mode, SimilarityAlgorithm::Exact);
    assert_eq!(c.similarity.mode.to_string(), "exact");
    let e = load_err(None, &[("EDDY_SIMILARITY__MODE", "MinHash")]);
    assert!(
        e.contains("EDDY_SIMILARITY__MODE") && e.contains("minhash"),
        "{e}"
    );
}

#[test]
fn documented_default_file_matches_defaults() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/eddy.toml");
    let c = Config::load(Some(&file), Vec::new()).unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn retention_must_cover_the_sliding_window() {
    // Two days of sliding window, one day of retention: the restored panes would be dropped.
    let e = load_err(
        None,
        &[
            ("EDDY_ENGAGEMENT__SLIDING_MS", "172800000"),
            ("EDDY_CLICKHOUSE__RETENTION_DAYS", "1"),
        ],
    );
    assert!(e.contains("clickhouse.retention_days must cover"), "{e}");
    let ok = |days: &str| {
        Config::load(
            None,
            env(&[
                ("EDDY_ENGAGEMENT__SLIDING_MS", "172800000"),
                ("EDDY_CLICKHOUSE__RETENTION_DAYS", days),
            ]),
        )
        .map(|_| ())
    };
    assert!(ok("3").is_ok());
    assert!(ok("0").is_ok(), "0 keeps everything");
}
