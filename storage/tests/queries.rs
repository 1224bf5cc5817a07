//! No request-path query scans a whole table: against the real ClickHouse, on a fresh database
//! with eddy's schema holding 50 000 rows per table on another day, each query runs with
//! `max_rows_to_read` well below that (it must narrow its reads with the table's `ORDER BY` key
//! or the day partitions), `force_primary_key` and, where it reads a time range,
//! `force_index_by_date` (read without `FINAL`, see [`unfinal`]).

use eddy_storage::*;
use eddy_testkit::stores::{ch_exec, fresh_clickhouse};

const H: i64 = 1_699_999_200_000;

/// `sql` without `FINAL`: ClickHouse 18.16 does not enforce `max_rows_to_read` on `FINAL`
/// reads, which select the parts and granules to read with the same index as plain reads.
fn unfinal(sql: &str) -> String {
    sql.replace(" FINAL ", " ")
}

#[tokio::test]
async fn request_path_queries_use_the_sorting_key_and_the_day_partitions() {
    let db = fresh_clickhouse("storage_queries");
    // Rows on another day (ten days before `H`), for other campaigns and users.
    let other = H - 10 * DAY_MS;
    let n = "FROM system.numbers LIMIT 50000";
    let d = &db.database;
    for sql in [
        format!(
            "INSERT INTO {d}.type_windows SELECT {other} + number * 60000, 'click', 1, 0, NULL, NULL, 1 {n}"
        ),
        format!("INSERT INTO {d}.campaign_windows SELECT {other}, number, 'click', 1, 1 {n}"),
        format!("INSERT INTO {d}.campaign_engagement SELECT {other}, number, 1, 0, 0, 0, 1 {n}"),
        format!("INSERT INTO {d}.user_similar SELECT number, {other}, [1], [1], [2], 1 {n}"),
        format!("INSERT INTO {d}.user_recommendations SELECT number, {other}, [1], '[]', 1 {n}"),
    ] {
        ch_exec(&db, &sql);
    }
    let client = clickhouse_client(&db)
        .unwrap()
        .with_setting("max_rows_to_read", "20000");
    let keyed = client.clone().with_setting("force_primary_key", "1");
    let ranged = keyed.clone().with_setting("force_index_by_date", "1");
    let (from, to) = (H, H + 3_600_000);

    let _: Vec<TypeWindowRow> = ranged
        .query(&unfinal(TYPE_WINDOWS_QUERY))
        .bind(from)
        .bind(to)
        .fetch_all()
        .await
        .expect("TYPE_WINDOWS_QUERY");
    let _: Vec<TypeWindowRow> = ranged
        .query(&unfinal(TYPE_WINDOWS_OF_TYPE_QUERY))
        .bind(from)
        .bind(to)
        .bind("click")
        .fetch_all()
        .await
        .expect("TYPE_WINDOWS_OF_TYPE_QUERY");
    let _: Vec<CampaignWindowRow> = ranged
        .query(&unfinal(CAMPAIGN_WINDOWS_QUERY))
        .bind(20_000_000u64)
        .bind(from)
        .bind(to)
        .fetch_all()
        .await
        .expect("CAMPAIGN_WINDOWS_QUERY");
    let _: Vec<CampaignWindowRow> = ranged
        .query(&unfinal(CAMPAIGN_WINDOWS_OF_TYPE_QUERY))
        .bind(20_000_000u64)
        .bind(from)
        .bind(to)
        .bind("click")
        .fetch_all()
        .await
        .expect("CAMPAIGN_WINDOWS_OF_TYPE_QUERY");
    let _: Vec<TypeHourlyRow> = ranged
        .query(&unfinal(TYPE_HOURLY_QUERY))
        .bind(from)
        .bind(to)
        .fetch_all()
        .await
        .expect("TYPE_HOURLY_QUERY");
    let _: Vec<CampaignHourlyRow> = ranged
        .query(&unfinal(CAMPAIGN_HOURLY_QUERY))
        .bind(20_000_000u64)
        .bind(from)
        .bind(to)
        .fetch_all()
        .await
        .expect("CAMPAIGN_HOURLY_QUERY");
    // The top list reads every campaign of the sliding window: the day partitions bound it.
    let _: Vec<EngagementSumRow> = client
        .clone()
        .with_setting("force_index_by_date", "1")
        .query(&unfinal(ENGAGEMENT_QUERY))
        .bind(to)
        .bind(from)
        .fetch_all()
        .await
        .expect("ENGAGEMENT_QUERY");
    let _: Vec<EngagementSumRow> = ranged
        .query(&unfinal(CAMPAIGN_ENGAGEMENT_QUERY))
        .bind(20_000_000u64)
        .bind(to)
        .bind(from)
        .fetch_all()
        .await
        .expect("CAMPAIGN_ENGAGEMENT_QUERY");
    let _: Vec<UserSimilarRow> = keyed
        .query(&unfinal(LATEST_SIMILAR_QUERY))
        .bind(20_000_000u64)
        .fetch_all()
        .await
        .expect("LATEST_SIMILAR_QUERY");
    let _: Vec<UserRecommendationsRow> = keyed
        .query(&unfinal(LATEST_RECOMMENDATIONS_QUERY))
        .bind(20_000_000u64)
        .fetch_all()
        .await
        .expect("LATEST_RECOMMENDATIONS_QUERY");
}
