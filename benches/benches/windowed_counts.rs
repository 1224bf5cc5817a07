//! In-process throughput of the windowed-counts dataflow against the floor cost of the same
//! query: generated JSON events are parsed and fed through `windowed_counts` (per-type
//! count/sum/min/max and per-campaign counts, 60 s windows) on 1 and 2 timely workers, in
//! epochs of 10 000 events; the baselines parse the same bytes and aggregate them in
//! single-threaded `HashMap`s (and, for reference, only parse them).
//! Run: `cargo bench -p eddy-benches --bench windowed_counts`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use differential_dataflow::input::Input;
use eddy_core::{EventType, WindowSpec, parse_event};
use eddy_dataflows::windowed_counts;
use eddy_load_gen::{GenConfig, Generator};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::Input as _;

const EVENTS: usize = 200_000;
const EPOCH: usize = 10_000;
const WINDOW: i64 = 60_000;

fn messages() -> Arc<Vec<Vec<u8>>> {
    let cfg = GenConfig {
        events_per_sec: 50_000.0,
        ..GenConfig::default()
    };
    Arc::new(
        Generator::new(cfg)
            .take(EVENTS)
            .map(|g| g.bytes().to_vec())
            .collect(),
    )
}

/// Runs the dataflow on `workers` threads; worker `i` parses and feeds every `workers`-th
/// message of each epoch.
fn eddy(messages: Arc<Vec<Vec<u8>>>, workers: usize) {
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut marks = InputHandle::new();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection();
            let watermarks = scope.input_from(&mut marks);
            let out = windowed_counts(events, watermarks, WindowSpec::new(WINDOW));
            let (probe, _) = out.types.probe();
            out.campaigns.probe_with(&probe);
            (input, probe)
        });
        for (epoch, chunk) in messages.chunks(EPOCH).enumerate() {
            for m in chunk.iter().skip(index).step_by(peers) {
                input.insert(parse_event(m).expect("generated events are valid"));
            }
            input.advance_to(epoch as u64 + 1);
            marks.advance_to(epoch as u64 + 1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));
        }
    })
    .expect("timely runs");
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
    let messages = messages();
    let mut group = c.benchmark_group("windowed_counts");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    for workers in [1, 2] {
        group.bench_function(format!("eddy parse+count, {workers} worker(s)"), |b| {
            b.iter(|| eddy(messages.clone(), workers))
        });
    }
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
