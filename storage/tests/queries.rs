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
        format!("INSERT INTO {d}.user_campaigns SELECT number, {other}, [1], 1 {n}"),
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
    let _: Vec<UserCampaignsRow> = keyed
        .query(&unfinal(LATEST_CAMPAIGNS_QUERY))
        .bind(vec![20_000_000u64, 20_000_001])
        .fetch_all()
        .await
        .expect("LATEST_CAMPAIGNS_QUERY");
    let _: Vec<EngagementSumRow> = ranged
        .query(&unfinal(CAMPAIGNS_ENGAGEMENT_QUERY))
        .bind(vec![20_000_000u64, 20_000_001])
        .bind(to)
        .bind(from)
        .fetch_all()
        .await
        .expect("CAMPAIGNS_ENGAGEMENT_QUERY");
}

/// The batched reads return the right rows: the latest snapshot of each user asked for (one
/// row per user, none for others), and the engagement of the campaigns asked for.
#[tokio::test]
async fn batched_reads_return_the_latest_snapshot_per_user_and_the_campaigns_asked() {
    let db = fresh_clickhouse("storage_batched");
    let d = &db.database;
    for sql in [
        format!(
            "INSERT INTO {d}.user_campaigns VALUES (1, {H}, [3], 1), (1, {H} + 1000, [3, 4], 2), \
             (2, {H}, [5], 3), (3, {H}, [6], 4)"
        ),
        format!(
            "INSERT INTO {d}.campaign_engagement VALUES ({H}, 3, 10, 1, 0, 0, 1), \
             ({H} + 60000, 3, 5, 0, 1, 0, 1), ({H}, 4, 7, 0, 0, 0, 1), ({H}, 5, 1, 0, 0, 0, 1)"
        ),
    ] {
        ch_exec(&db, &sql);
    }
    let client = clickhouse_client(&db).unwrap();
    let mut sets: Vec<UserCampaignsRow> = client
        .query(LATEST_CAMPAIGNS_QUERY)
        .bind(vec![1u64, 2, 9])
        .fetch_all()
        .await
        .unwrap();
    sets.sort_by_key(|r| r.user_id);
    let got: Vec<(u64, Vec<u64>)> = sets.into_iter().map(|r| (r.user_id, r.campaigns)).collect();
    assert_eq!(got, vec![(1, vec![3, 4]), (2, vec![5])]);
    let mut sums: Vec<EngagementSumRow> = client
        .query(CAMPAIGNS_ENGAGEMENT_QUERY)
        .bind(vec![3u64, 4])
        .bind(H + 60_000)
        .bind(H - 3_600_000)
        .fetch_all()
        .await
        .unwrap();
    sums.sort_by_key(|r| r.campaign_id);
    let got: Vec<(u64, u64)> = sums.iter().map(|r| (r.campaign_id, r.views)).collect();
    assert_eq!(got, vec![(3, 15), (4, 7)]);
}
