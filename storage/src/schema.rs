//! The ClickHouse schema: the DDL of `clickhouse/schema/*.sql`, embedded in the binary (so
//! `eddy schema apply` works outside the repository), applied in file-name order, and the
//! check that every table exists.
//!
//! Applying: `--` comments are stripped, the placeholder `{database}` is replaced by
//! `clickhouse.database` (a plain identifier, see [`valid_database`]), statements are split on
//! `;`. Every statement is `IF NOT EXISTS`, so applying twice is harmless.

use crate::StorageError;
use crate::clients::{clickhouse_server, valid_database};
use crate::rows::{
    CAMPAIGN_ENGAGEMENT, CAMPAIGN_WINDOWS, CAMPAIGN_WINDOWS_HOURLY, CHECKPOINT_STATES,
    INTERACTION_PANES, SOURCE_CHECKPOINTS, TYPE_WINDOWS, TYPE_WINDOWS_HOURLY, USER_CAMPAIGNS,
    USER_SIMILAR,
};
use eddy_core::config::ClickHouseConfig;
use std::path::Path;

/// One schema file: its name (`001_database.sql`, ...) and its SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFile {
    /// File name; files apply in name order.
    pub name: String,
    /// The SQL text, with the `{database}` placeholder.
    pub sql: String,
}

/// `clickhouse/schema/*.sql` as compiled in, in name order.
pub const EMBEDDED_SCHEMA: [(&str, &str); 6] = [
    (
        "001_database.sql",
        include_str!("../../clickhouse/schema/001_database.sql"),
    ),
    (
        "002_windows.sql",
        include_str!("../../clickhouse/schema/002_windows.sql"),
    ),
    (
        "003_rollups.sql",
        include_str!("../../clickhouse/schema/003_rollups.sql"),
    ),
    (
        "004_checkpoints.sql",
        include_str!("../../clickhouse/schema/004_checkpoints.sql"),
    ),
    (
        "005_engagement.sql",
        include_str!("../../clickhouse/schema/005_engagement.sql"),
    ),
    (
        "006_state.sql",
        include_str!("../../clickhouse/schema/006_state.sql"),
    ),
];

/// Tables (and views) [`check_schema`] requires in the configured database.
pub const REQUIRED_TABLES: [&str; 12] = [
    TYPE_WINDOWS,
    CAMPAIGN_WINDOWS,
    TYPE_WINDOWS_HOURLY,
    "type_windows_hourly_mv",
    CAMPAIGN_WINDOWS_HOURLY,
    "campaign_windows_hourly_mv",
    SOURCE_CHECKPOINTS,
    CAMPAIGN_ENGAGEMENT,
    USER_SIMILAR,
    USER_CAMPAIGNS,
    INTERACTION_PANES,
    CHECKPOINT_STATES,
];

/// The embedded schema files ([`EMBEDDED_SCHEMA`]).
pub fn embedded_schema() -> Vec<SchemaFile> {
    EMBEDDED_SCHEMA
        .iter()
        .map(|(name, sql)| SchemaFile {
            name: (*name).to_owned(),
            sql: (*sql).to_owned(),
        })
        .collect()
}

/// Every `*.sql` file of `dir`, in name order (for a schema other than the embedded one).
pub fn schema_dir(dir: &Path) -> Result<Vec<SchemaFile>, StorageError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| StorageError::Io { path, source }
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(dir))?
        .into_iter()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(StorageError::Schema(format!(
            "no *.sql files in {}",
            dir.display()
        )));
    }
    paths
        .iter()
        .map(|path| {
            Ok(SchemaFile {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                sql: std::fs::read_to_string(path).map_err(io(path))?,
            })
        })
        .collect()
}

/// Splits a schema file into statements: strips `--` comments, substitutes `{database}`,
/// splits on `;` and drops empty statements.
pub fn statements(sql: &str, database: &str) -> Vec<String> {
    let stripped: String = sql
        .lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    stripped
        .replace("{database}", database)
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Applies `files` in order to the database `cfg.database` (created by the files), returning
/// the names of the files applied.
pub async fn apply_schema(
    cfg: &ClickHouseConfig,
    files: &[SchemaFile],
) -> Result<Vec<String>, StorageError> {
    valid_database(&cfg.database)?;
    let client = clickhouse_server(cfg);
    let mut applied = Vec::with_capacity(files.len());
    for file in files {
        for stmt in statements(&file.sql, &cfg.database) {
            client.query(&stmt).execute().await.map_err(|e| {
                StorageError::Schema(format!("{}: {e}\nstatement: {stmt}", file.name))
            })?;
        }
        applied.push(file.name.clone());
    }
    Ok(applied)
}

/// Checks that every table of [`REQUIRED_TABLES`] exists in `cfg.database`; the error names
/// the missing ones and says how to create them.
pub async fn check_schema(cfg: &ClickHouseConfig) -> Result<(), StorageError> {
    valid_database(&cfg.database)?;
    let present: Vec<String> = clickhouse_server(cfg)
        .query("SELECT name FROM system.tables WHERE database = ?")
        .bind(cfg.database.as_str())
        .fetch_all::<String>()
        .await?;
    let missing: Vec<&str> = REQUIRED_TABLES
        .iter()
        .copied()
        .filter(|t| !present.iter().any(|p| p == t))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StorageError::Schema(format!(
            "database {:?} at {} lacks {}: run `eddy schema apply` (clickhouse/schema/*.sql)",
            cfg.database,
            cfg.url,
            missing.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_substitutes_database() {
        let sql = "-- a; comment\nCREATE DATABASE IF NOT EXISTS {database};\n\n\
                   CREATE TABLE {database}.t (x Int64) -- trailing; comment\nENGINE = Log;\n";
        assert_eq!(
            statements(sql, "db1"),
            vec![
                "CREATE DATABASE IF NOT EXISTS db1".to_owned(),
                "CREATE TABLE db1.t (x Int64) \nENGINE = Log".to_owned()
            ]
        );
    }

    #[test]
    fn embeds_every_file_of_the_schema_directory() {
        let dir = eddy_testkit::repo().join("clickhouse/schema");
        assert_eq!(schema_dir(&dir).unwrap(), embedded_schema());
        assert!(schema_dir(&dir.join("no_such_dir")).is_err());
    }

    #[test]
    fn every_required_table_is_created() {
        let ddl: String = embedded_schema().into_iter().map(|f| f.sql).collect();
        for t in REQUIRED_TABLES {
            assert!(
                ddl.contains(&format!("{{database}}.{t}\n")),
                "{t} is not created by clickhouse/schema"
            );
        }
    }
}
