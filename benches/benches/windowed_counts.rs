//! In-process throughput of the windowed-counts dataflow: generated JSON events are parsed and
//! fed through `windowed_counts` on one timely worker, in epochs of 10 000 events.
//! Run: `cargo bench -p eddy-benches --bench windowed_counts`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use differential_dataflow::input::Input;
use eddy_core::{WindowSpec, parse_event};
use eddy_dataflows::windowed_counts;
use eddy_load_gen::{GenConfig, Generator};
use timely::dataflow::InputHandle;
use timely::dataflow::operators::Input as _;

const EVENTS: usize = 200_000;
const EPOCH: usize = 10_000;

fn bench(c: &mut Criterion) {
    let messages: Vec<Vec<u8>> = Generator::new(GenConfig {
        events_per_sec: 50_000.0,
        ..GenConfig::default()
    })
    .take(EVENTS)
    .map(|g| g.bytes().to_vec())
    .collect();
    let mut group = c.benchmark_group("windowed_counts");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.bench_function("parse+count, 1 worker", |b| {
        b.iter(|| {
            let messages = messages.clone();
            timely::execute_directly(move |worker| {
                let mut marks = InputHandle::new();
                let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                    let (input, events) = scope.new_collection();
                    let watermarks = scope.input_from(&mut marks);
                    let out = windowed_counts(events, watermarks, WindowSpec::new(60_000));
                    let (probe, _) = out.types.probe();
                    out.campaigns.probe_with(&probe);
                    (input, probe)
                });
                for (epoch, chunk) in messages.chunks(EPOCH).enumerate() {
                    for m in chunk {
                        input.insert(parse_event(m).expect("generated events are valid"));
                    }
                    input.advance_to(epoch as u64 + 1);
                    marks.advance_to(epoch as u64 + 1);
                    input.flush();
                    worker.step_while(|| probe.less_than(input.time()));
                }
            });
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
