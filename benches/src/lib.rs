//! Shared pieces of eddy's benchmarks (the benchmarks themselves live in `benches/` and
//! `src/bin/`).

use differential_dataflow::VecCollection;
use eddy_core::{Config, Event, WindowSpec};
use eddy_dataflows::similarity::sets;
use eddy_dataflows::{
    EngagementParams, InteractionParams, SimilarityParams, engagement, interactions,
    recommendations, similar_users, windowed_counts,
};
use timely::dataflow::{ProbeHandle, StreamVec};

/// eddy's full dataflow as `eddy run` builds it (windowed counts, sliding engagement and top
/// list, interaction sets, similarity, recommendations), without source and sinks; every output
/// is probed by the returned handle.
pub fn full_dataflow<'scope>(
    cfg: &Config,
    events: VecCollection<'scope, u64, Event, isize>,
    watermarks: StreamVec<'scope, u64, i64>,
) -> ProbeHandle<u64> {
    let window = WindowSpec::new(cfg.pipeline.window_ms);
    let sliding_ms = cfg.engagement.sliding_ms;
    let counts = windowed_counts(events.clone(), watermarks.clone(), window);
    let scores = engagement(
        events.clone(),
        watermarks.clone(),
        EngagementParams {
            pane: window,
            sliding_ms,
            weights: cfg.engagement.weights(),
            top_k: cfg.engagement.top_k,
        },
    );
    let pairs = interactions(
        events,
        watermarks,
        InteractionParams {
            pane: window,
            sliding_ms,
            views_are_interest: cfg.similarity.views_are_interest,
            // Settled sets: similarity and recommendations change at most once per pane.
            emit: eddy_operators::Emit::OnClose,
        },
    );
    let by_user = pairs.clone().arrange_by_key();
    let s = &cfg.similarity;
    let similar = similar_users(sets(by_user.clone()), SimilarityParams::from_config(s));
    let recs = recommendations(
        similar.clone(),
        by_user,
        pairs,
        scores.settled,
        s.recommendations,
    );
    let (probe, _) = counts.types.probe();
    counts.campaigns.probe_with(&probe);
    scores.campaigns.probe_with(&probe);
    scores.top.probe_with(&probe);
    scores.panes.probe_with(&probe);
    similar.probe_with(&probe);
    recs.probe_with(&probe);
    probe
}

/// Resident set size of this process, bytes (Linux `/proc/self/statm`; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
