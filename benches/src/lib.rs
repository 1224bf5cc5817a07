//! Shared pieces of eddy's benchmarks (the benchmarks themselves live in `benches/` and
//! `src/bin/`).

pub mod cli;

use cli::EventFeed;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use differential_dataflow::VecCollection;
use eddy_core::{Config, Event, parse_event};
use eddy_dataflows::Inputs;
use eddy_load_gen::{GenConfig, Generator};
use std::sync::Arc;
use timely::dataflow::{ProbeHandle, StreamVec};

/// Events per iteration of the criterion benchmarks (`benches/`).
pub const BENCH_EVENTS: usize = 200_000;
/// Events per epoch of the criterion benchmarks' dataflow runs.
pub const BENCH_EPOCH: usize = 10_000;

/// [`BENCH_EVENTS`] generated JSON events, `events_per_sec` of event time (the generator's
/// defaults otherwise).
pub fn bench_messages(events_per_sec: f64) -> Vec<Vec<u8>> {
    let cfg = GenConfig {
        events_per_sec,
        ..GenConfig::default()
    };
    Generator::new(cfg)
        .take(BENCH_EVENTS)
        .map(|g| g.bytes().to_vec())
        .collect()
}

/// Runs the dataflow `build(events, watermarks)` (which returns its probe) on `workers` timely
/// threads over `messages` in epochs of [`BENCH_EPOCH`]: worker `i` parses and feeds every
/// `workers`-th message of each epoch, sends the epoch's entry of `watermarks` if it has one
/// (every worker the same), and steps until every output has caught up with the epoch.
pub fn run_epochs<B>(
    messages: Arc<Vec<Vec<u8>>>,
    watermarks: Arc<Vec<i64>>,
    workers: usize,
    build: B,
) where
    B: for<'s> Fn(
            VecCollection<'s, u64, Event, isize>,
            StreamVec<'s, u64, i64>,
        ) -> ProbeHandle<u64>
        + Send
        + Sync
        + 'static,
{
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut feed = EventFeed::new(worker, &build);
        for (epoch, chunk) in messages.chunks(BENCH_EPOCH).enumerate() {
            for m in chunk.iter().skip(index).step_by(peers) {
                feed.events
                    .insert(parse_event(m).expect("generated events are valid"));
            }
            if let Some(w) = watermarks.get(epoch) {
                feed.marks.send(*w);
            }
            feed.advance_to(worker, epoch as u64 + 1);
        }
    })
    .expect("timely runs");
}

/// A criterion group `name` of 10 samples, each iteration counting [`BENCH_EVENTS`] elements,
/// with `run(workers)` benchmarked on 1 and 2 workers as `"{label}, {workers} worker(s)"`;
/// the caller may add baselines, then finishes the group.
pub fn by_workers<'c>(
    c: &'c mut Criterion,
    name: &str,
    label: &str,
    run: impl Fn(usize),
) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(BENCH_EVENTS as u64));
    group.sample_size(10);
    for workers in [1, 2] {
        group.bench_function(format!("{label}, {workers} worker(s)"), |b| {
            b.iter(|| run(workers))
        });
    }
    group
}

/// eddy's full dataflow as `eddy run` builds it ([`eddy_dataflows::build`]: windowed counts,
/// sliding engagement and top list, and with `similarity.enabled` the interaction sets,
/// similarity and recommendations), without source and sinks; every output is probed by the
/// returned handle.
pub fn full_dataflow<'scope>(
    cfg: &Config,
    events: VecCollection<'scope, u64, Event, isize>,
    watermarks: StreamVec<'scope, u64, i64>,
) -> ProbeHandle<u64> {
    let outputs = eddy_dataflows::build(
        cfg,
        Inputs {
            events,
            history: None,
            watermarks,
            restored: None,
        },
    );
    let probe = ProbeHandle::new();
    outputs.probe_with(&probe);
    probe
}

/// Live heap bytes when the global allocator is [`ALLOC`] (feature `count-alloc`), so a benchmark
/// can report live bytes next to RSS and tell state from allocator overhead; 0 otherwise.
/// Counting costs two atomic operations per allocation: `state_rss` counts only when built
/// with `--features count-alloc`, so its throughput figures are measured without it.
pub fn live_bytes() -> u64 {
    // `stats_alloc` adds a realloc's growth to allocated and its shrinkage to deallocated.
    let s = ALLOC.stats();
    (s.bytes_allocated as u64).saturating_sub(s.bytes_deallocated as u64)
}

/// The counting allocator of [`live_bytes`] (the system allocator underneath).
pub static ALLOC: stats_alloc::StatsAlloc<std::alloc::System> = stats_alloc::StatsAlloc::system();

// The global allocator of every benchmark binary: the product's (jemalloc, as in `eddy`) by
// default; the counting one with `count-alloc`; mimalloc with `mimalloc` (an experiment); the
// system allocator with `--no-default-features`.
#[cfg(feature = "count-alloc")]
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &ALLOC;

#[cfg(all(feature = "mimalloc", not(feature = "count-alloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(
    feature = "jemalloc",
    not(feature = "count-alloc"),
    not(feature = "mimalloc")
))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// CPU time this process has used (user + system, all threads), seconds (Linux
/// `/proc/self/stat`, in clock ticks of 1/100 s; 0 elsewhere). Events per CPU second do not
/// depend on what else the machine runs, where wall-clock throughput does.
pub fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) end with ')'.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Resident set size of this process, bytes (Linux `/proc/self/statm`; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
