//! In-process throughput of eddy's full dataflow: windowed counts + sliding campaign
//! engagement and top list + interaction sets + user similarity (MinHash/LSH, the default
//! configuration) + recommendations, over generated JSON events parsed by the workers, on 1 and
//! 2 timely workers, in epochs of 10 000 events with the watermark advancing every epoch.
//! Run: `cargo bench -p eddy-benches --bench full_pipeline`.

use criterion::{Criterion, criterion_group, criterion_main};
use eddy_benches::{BENCH_EPOCH, bench_messages, full_dataflow, run_epochs};
use eddy_core::{Config, parse_event};
use std::sync::Arc;

/// Messages, and the watermark after each epoch (max event time so far - lateness, computed
/// here, outside the measurement, as the sources' progress reports would).
type BenchInput = (Arc<Vec<Vec<u8>>>, Arc<Vec<i64>>);

fn messages() -> BenchInput {
    // 2 000 events per second of event time: 100 s of traffic, two minute windows close.
    let msgs = bench_messages(2_000.0);
    let lateness = Config::default().pipeline.lateness_ms;
    let mut max_ts = i64::MIN;
    let marks = msgs
        .chunks(BENCH_EPOCH)
        .map(|chunk| {
            for m in chunk {
                max_ts = max_ts.max(parse_event(m).expect("valid").ts_ms);
            }
            max_ts - lateness
        })
        .collect();
    (Arc::new(msgs), Arc::new(marks))
}

/// The full dataflow with the default configuration on `workers` threads; worker `i` parses
/// and feeds every `workers`-th message of each epoch.
pub fn full((messages, watermarks): &BenchInput, workers: usize) {
    let cfg = Config::default();
    run_epochs(
        messages.clone(),
        watermarks.clone(),
        workers,
        move |events, watermarks| full_dataflow(&cfg, events, watermarks),
    );
}

fn bench(c: &mut Criterion) {
    let input = messages();
    eddy_benches::by_workers(c, "full_pipeline", "eddy full pipeline", |workers| {
        full(&input, workers)
    })
    .finish();
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, bench);
}

criterion_main!(group::benches);
