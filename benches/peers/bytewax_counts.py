"""The windowed-count query of `eddy_dataflows::windowed_counts`, in Bytewax, over a JSONL file
written by `peers gen`: event-time tumbling 60 s windows (10 s allowed lateness), per
(window, event_type) count / sum / min / max of amount (micro-units), and per (window,
campaign_id, event_type) count. Prints one JSON line like `peers eddy`.

Run: python benches/peers/bytewax_counts.py FILE WORKERS
"""

import json
import sys
import time
from datetime import datetime, timedelta, timezone

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, cluster_main

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse(line):
    e = json.loads(line)
    if e.get("event_type") not in ("view", "click", "conversion"):
        return None
    amount = e.get("amount")
    micros = None if amount is None else round(amount * 1_000_000)
    return (e["ts"], e["campaign_id"], e["event_type"], micros)


def event_time(e):
    return EPOCH + timedelta(milliseconds=e[0])


def type_builder():
    return [0, 0, None, None]


def type_folder(acc, e):
    acc[0] += 1
    a = e[3]
    if a is not None:
        acc[1] += a
        acc[2] = a if acc[2] is None else min(acc[2], a)
        acc[3] = a if acc[3] is None else max(acc[3], a)
    return acc


def type_merger(x, y):
    return [
        x[0] + y[0],
        x[1] + y[1],
        y[2] if x[2] is None else (x[2] if y[2] is None else min(x[2], y[2])),
        y[3] if x[3] is None else (x[3] if y[3] is None else max(x[3], y[3])),
    ]


def build(path, out):
    flow = Dataflow("windowed_counts")
    events = op.filter_map("parse", op.input("in", flow, FileSource(path)), parse)
    clock = win.EventClock(event_time, wait_for_system_duration=timedelta(seconds=10))
    windower = win.TumblingWindower(length=timedelta(seconds=60), align_to=EPOCH)
    by_type = op.key_on("key_type", events, lambda e: e[2])
    types = win.fold_window("types", by_type, clock, windower, type_builder, type_folder, type_merger)
    campaigns = win.count_window(
        "campaigns", events, clock, windower, lambda e: f"{e[1]}:{e[2]}"
    )
    op.output("out_types", types.down, TestingSink(out))
    op.output("out_campaigns", campaigns.down, TestingSink(out))
    return flow


def main():
    path, workers = sys.argv[1], int(sys.argv[2])
    events = sum(1 for _ in open(path, "rb"))
    out = []
    started = time.perf_counter()
    cluster_main(build(path, out), addresses=[], proc_id=0, worker_count_per_proc=workers)
    secs = time.perf_counter() - started
    print(json.dumps({
        "engine": "bytewax", "workers": workers, "events": events,
        "seconds": round(secs, 3), "events_per_sec": round(events / secs), "rows": len(out),
    }))


if __name__ == "__main__":
    main()
