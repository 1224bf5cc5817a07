//! In-process throughput of the windowed-counts dataflow against the floor cost of the same
//! query: generated JSON events are parsed and fed through `windowed_counts` (per-type
//! count/sum/min/max and per-campaign counts, 60 s windows) on 1 and 2 timely workers, in
//! epochs of 10 000 events; the baselines parse the same bytes and aggregate them in
//! single-threaded `HashMap`s (and, for reference, only parse them).
//! Run: `cargo bench -p eddy-benches --bench windowed_counts`.

use criterion::{Criterion, criterion_group, criterion_main};
use eddy_benches::{bench_messages, by_workers, run_epochs};
use eddy_core::{EventType, WindowSpec, parse_event};
use eddy_dataflows::windowed_counts;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

const WINDOW: i64 = 60_000;

/// Runs the dataflow on `workers` threads; worker `i` parses and feeds every `workers`-th
/// message of each epoch.
fn eddy(messages: &Arc<Vec<Vec<u8>>>, workers: usize) {
    run_epochs(
        messages.clone(),
        Arc::default(),
        workers,
        |events, watermarks| {
            let out = windowed_counts(events, watermarks, WindowSpec::new(WINDOW));
            let (probe, _) = out.types.probe();
            out.campaigns.probe_with(&probe);
            probe
        },
    );
}

/// count, sum, min, max of one `(window, event type)`.
type TypeTotals = (u64, i64, Option<i64>, Option<i64>);

/// The same query in single-threaded `HashMap`s: the floor cost.
fn naive(messages: &[Vec<u8>]) -> usize {
    let w = WindowSpec::new(WINDOW);
    let mut types: HashMap<(i64, EventType), TypeTotals> = HashMap::new();
    let mut camps: HashMap<(i64, u64, EventType), u64> = HashMap::new();
    for m in messages {
        let e = parse_event(m).expect("generated events are valid");
        let ws = w.start(e.ts_ms);
        let t = types
            .entry((ws, e.event_type))
            .or_insert((0, 0, None, None));
        t.0 += 1;
        if let Some(a) = e.amount_micros {
            t.1 += a;
            t.2 = Some(t.2.map_or(a, |m| m.min(a)));
            t.3 = Some(t.3.map_or(a, |m| m.max(a)));
        }
        *camps.entry((ws, e.campaign_id, e.event_type)).or_default() += 1;
    }
    types.len() + camps.len()
}

fn bench(c: &mut Criterion) {
    let messages = Arc::new(bench_messages(50_000.0));
    let mut group = by_workers(c, "windowed_counts", "eddy parse+count", |workers| {
        eddy(&messages, workers)
    });
    group.bench_function("naive HashMap parse+count, 1 thread", |b| {
        b.iter(|| black_box(naive(&messages)))
    });
    group.bench_function("parse only, 1 thread", |b| {
        b.iter(|| {
            for m in messages.iter() {
                black_box(parse_event(m).expect("valid"));
            }
        })
    });
    group.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, bench);
}

criterion_main!(group::benches);
