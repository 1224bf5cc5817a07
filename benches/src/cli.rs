//! What the benchmark binaries (`src/bin/`) share: positional arguments, an event dataflow
//! fed epoch by epoch with a watermark, and the JSON records they print (one object a line),
//! which `bench_report` reads back with the same types.

use differential_dataflow::VecCollection;
use differential_dataflow::input::{Input, InputSession};
use eddy_core::Event;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use timely::dataflow::operators::Input as _;
use timely::dataflow::{InputHandleVec, ProbeHandle, StreamVec};
use timely::worker::Worker;

/// Positional argument `i` (1-based, as in `std::env::args`), or `default` when absent.
///
/// # Panics
/// When the argument does not parse (a benchmark's usage error).
pub fn arg<T: FromStr>(i: usize, default: T) -> T {
    std::env::args().nth(i).map_or(default, |a| {
        a.parse()
            .unwrap_or_else(|_| panic!("argument {i} ({a}) is not a number"))
    })
}

/// A worker's inputs into a dataflow over events and the watermark stream.
pub struct EventFeed {
    /// Events (insert this worker's share).
    pub events: InputSession<u64, Event, isize>,
    /// Watermarks (every worker sends the same).
    pub marks: InputHandleVec<u64, i64>,
    /// Probes every output of the dataflow.
    pub probe: ProbeHandle<u64>,
}

impl EventFeed {
    /// Builds the dataflow `build(events, watermarks)` (which returns its probe) on `worker`.
    pub fn new(
        worker: &mut Worker,
        build: impl for<'s> FnOnce(
            VecCollection<'s, u64, Event, isize>,
            StreamVec<'s, u64, i64>,
        ) -> ProbeHandle<u64>,
    ) -> Self {
        let mut marks = InputHandleVec::new();
        let (events, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection();
            let watermarks = scope.input_from(&mut marks);
            (input, build(events, watermarks))
        });
        Self {
            events,
            marks,
            probe,
        }
    }

    /// Closes epoch `epoch - 1`: both inputs advance to `epoch`, and the worker steps until
    /// every output has caught up.
    pub fn advance_to(&mut self, worker: &mut Worker, epoch: u64) {
        self.events.advance_to(epoch);
        self.marks.advance_to(epoch);
        self.events.flush();
        let (probe, time) = (&self.probe, self.events.time());
        worker.step_while(|| probe.less_than(time));
    }
}

/// One line of `peers eddy` (and of the peer engines' harnesses): a run over the same file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// `eddy`, or the peer engine's name.
    pub engine: String,
    /// Worker threads.
    pub workers: u64,
    /// Events read.
    pub events: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Events per second.
    pub events_per_sec: f64,
    /// Output rows.
    pub rows: u64,
    /// Peak resident set size, KiB (measured by the harness around the process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_kb: Option<f64>,
}

/// One line of `similarity_recall`: a MinHash configuration's recall against the exact top-k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallRecord {
    /// Always `similarity_recall`.
    pub bench: String,
    /// Users with interests (the exact oracle's users).
    pub users: usize,
    /// LSH bands.
    pub bands: usize,
    /// MinHash values per band.
    pub rows: usize,
    /// Target LSH bucket size.
    pub bucket_size: usize,
    /// Timely workers.
    pub workers: usize,
    /// Seconds the MinHash dataflow took.
    pub seconds: f64,
    /// Users MinHash found neighbors for.
    pub users_with_neighbors: usize,
    /// Tie-aware recall@k.
    pub recall: f64,
    /// Strict id-overlap recall@k.
    pub strict_recall: f64,
}

/// One line of `state_rss`: memory after some minutes of event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    /// Always `state_rss`.
    pub bench: String,
    /// Minutes of event time fed so far.
    pub minute: u64,
    /// Events fed so far.
    pub events: u64,
    /// Wall-clock seconds so far.
    pub wall_secs: f64,
    /// Resident set size, MB.
    pub rss_mb: f64,
    /// Sliding window, minutes.
    pub sliding_min: u64,
    /// Events per second of event time.
    pub rate: u64,
    /// Timely workers.
    pub workers: usize,
}

/// Prints `record` as one JSON line on stdout.
pub fn print_json<T: Serialize>(record: &T) {
    println!(
        "{}",
        serde_json::to_string(record).expect("records serialize")
    );
}

/// Rounds to `decimals` places (so printed records stay short: `12.3`, not `12.345678`).
pub fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}
