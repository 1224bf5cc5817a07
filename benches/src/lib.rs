//! Shared pieces of eddy's benchmarks (the benchmarks themselves live in `benches/` and
//! `src/bin/`).

pub mod cli;

use differential_dataflow::VecCollection;
use eddy_core::{Config, Event};
use eddy_dataflows::Inputs;
use timely::dataflow::{ProbeHandle, StreamVec};

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
        },
    );
    let probe = ProbeHandle::new();
    outputs.probe_with(&probe);
    probe
}

/// Resident set size of this process, bytes (Linux `/proc/self/statm`; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
