-- eddy's ClickHouse schema (batch layer). Layout and semantics: docs/storage.md.
--
-- Files run in name order via `eddy schema apply` (eddy_storage::apply_schema; the files are compiled in), which replaces
-- the placeholder {database} with `clickhouse.database` from the config, strips `--` comments
-- and splits on ';'. Every statement is idempotent (IF NOT EXISTS). Compatible with
-- ClickHouse 18.16 and current releases: no DateTime64, TTL, codecs or server-side parameters.
CREATE DATABASE IF NOT EXISTS {database};
