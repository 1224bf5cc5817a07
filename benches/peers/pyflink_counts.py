"""The windowed-count query of `eddy_dataflows::windowed_counts`, in PyFlink SQL (streaming
mode), over a JSONL file written by `peers gen`: event-time tumbling 60 s windows (10 s
watermark delay), per (window, event_type) count / sum / min / max of amount (micro-units),
and per (window, campaign_id, event_type) count. Prints one JSON line like `peers eddy`.

The time counts from job submission to the last result row collected, so it includes the
job's start on the local mini-cluster (a few seconds), not the JVM's own start.

Run: python benches/peers/pyflink_counts.py FILE WORKERS
"""

import json
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment


def main():
    path, workers = sys.argv[1], int(sys.argv[2])
    events = sum(1 for _ in open(path, "rb"))
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", str(workers))
    conf.set("pipeline.name", "eddy-peer-windowed-counts")
    env.execute_sql(
        f"""
        CREATE TABLE events (
            ts BIGINT,
            campaign_id BIGINT,
            event_type STRING,
            amount DOUBLE,
            rt AS TO_TIMESTAMP_LTZ(ts, 3),
            WATERMARK FOR rt AS rt - INTERVAL '10' SECOND
        ) WITH (
            'connector' = 'filesystem',
            'path' = 'file://{path}',
            'format' = 'json',
            'json.ignore-parse-errors' = 'true'
        )
        """
    )
    env.execute_sql(
        """
        CREATE TEMPORARY VIEW valid AS
        SELECT rt, campaign_id, event_type,
               CAST(ROUND(amount * 1000000) AS BIGINT) AS micros
        FROM events
        WHERE event_type IN ('view', 'click', 'conversion') AND ts IS NOT NULL
        """
    )
    query = """
        SELECT 'type' AS kind, window_start, event_type, CAST(NULL AS BIGINT) AS campaign_id,
               COUNT(*) AS n, SUM(micros) AS s, MIN(micros) AS lo, MAX(micros) AS hi
        FROM TABLE(TUMBLE(TABLE valid, DESCRIPTOR(rt), INTERVAL '60' SECONDS))
        GROUP BY window_start, window_end, event_type
        UNION ALL
        SELECT 'campaign', window_start, event_type, campaign_id,
               COUNT(*), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT)
        FROM TABLE(TUMBLE(TABLE valid, DESCRIPTOR(rt), INTERVAL '60' SECONDS))
        GROUP BY window_start, window_end, event_type, campaign_id
    """
    started = time.perf_counter()
    rows = 0
    with env.sql_query(query).execute().collect() as results:
        for _ in results:
            rows += 1
    secs = time.perf_counter() - started
    print(json.dumps({
        "engine": "pyflink", "workers": workers, "events": events,
        "seconds": round(secs, 3), "events_per_sec": round(events / secs), "rows": rows,
    }))


if __name__ == "__main__":
    main()
