//! In-process throughput of eddy's full dataflow: windowed counts + sliding campaign
//! engagement and top list + interaction sets + user similarity (MinHash/LSH, the default
//! configuration) + recommendations, over generated JSON events parsed by the workers, on 1 and
//! 2 timely workers, in epochs of 10 000 events with the watermark advancing every epoch.
//! Run: `cargo bench -p eddy-benches --bench full_pipeline`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use differential_dataflow::input::Input;
use eddy_core::{Config, parse_event};
use eddy_load_gen::{GenConfig, Generator};
use std::sync::Arc;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::Input as _;

const EVENTS: usize = 200_000;
const EPOCH: usize = 10_000;

/// Messages, and the watermark after each epoch (max event time so far - lateness, computed
/// here, outside the measurement, as the sources' progress reports would).
type BenchInput = Arc<(Vec<Vec<u8>>, Vec<i64>)>;

fn messages() -> BenchInput {
    // 2 000 events per second of event time: 100 s of traffic, two minute windows close.
    let cfg = GenConfig {
        events_per_sec: 2_000.0,
        ..GenConfig::default()
    };
    let lateness = Config::default().pipeline.lateness_ms;
    let msgs: Vec<Vec<u8>> = Generator::new(cfg)
        .take(EVENTS)
        .map(|g| g.bytes().to_vec())
        .collect();
    let mut max_ts = i64::MIN;
    let marks = msgs
        .chunks(EPOCH)
        .map(|chunk| {
            for m in chunk {
                max_ts = max_ts.max(parse_event(m).expect("valid").ts_ms);
            }
            max_ts - lateness
        })
        .collect();
    Arc::new((msgs, marks))
}

/// The full dataflow with the default configuration on `workers` threads; worker `i` parses
/// and feeds every `workers`-th message of each epoch.
pub fn full(input_data: BenchInput, workers: usize) {
    let cfg = Config::default();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut marks = InputHandle::new();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection();
            let watermarks = scope.input_from(&mut marks);
            let probe = eddy_benches::full_dataflow(&cfg, events, watermarks);
            (input, probe)
        });
        let (messages, watermarks) = &*input_data;
        for (epoch, chunk) in messages.chunks(EPOCH).enumerate() {
            for m in chunk.iter().skip(index).step_by(peers) {
                input.insert(parse_event(m).expect("generated events are valid"));
            }
            marks.send(watermarks[epoch]);
            input.advance_to(epoch as u64 + 1);
            marks.advance_to(epoch as u64 + 1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));
        }
    })
    .expect("timely runs");
}

fn bench(c: &mut Criterion) {
    let messages = messages();
    let mut group = c.benchmark_group("full_pipeline");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    for workers in [1, 2] {
        group.bench_function(format!("eddy full pipeline, {workers} worker(s)"), |b| {
            b.iter(|| full(messages.clone(), workers))
        });
    }
    group.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, bench);
}

criterion_main!(group::benches);
