//! eddy's whole dataflow, composed once from the configuration: the one wiring used by
//! `eddy run`, `eddy demo` and the benchmarks.
//!
//! ```text
//! events ──┬─► windowed_counts ─► open windows, closed windows
//!          │
//! history ─┴─► (sliding) ─┬─► engagement ─► live scores, top list, final panes
//!                         └─► interactions ─┬─► similarity loop ─► similar users, user sets
//! restored ─► (sliding)                     └─► interaction panes (durable state)
//! ```
//!
//! Recommendations are ranked at read time from the similar users, the user sets and the live
//! scores ([`eddy_core::recommend`]).

use crate::engagement::{Engagement, EngagementParams, engagement_restored};
use crate::interactions::{InteractionParams, interactions_restorable, interest_pairs};
use crate::similarity::{SimilarityParams, similar_users_and_sets};
use crate::windowed_counts::{WindowedCounts, windowed_counts};
use differential_dataflow::VecCollection;
use eddy_core::{
    Config, Event, InteractionPane, PaneEngagement, SimilarUsers, UserCampaigns, WindowSpec,
};
use eddy_operators::{Emit, Epoch, StateGauge};
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::{ProbeHandle, StreamVec};

/// What the dataflow reads.
pub struct Inputs<'scope> {
    /// On-time events (insert-only; no event of a window closed by `W(e)` arrives at `e`).
    pub events: VecCollection<'scope, Epoch, Event, isize>,
    /// Re-read events of windows already final (after a restart), if the source has any: they
    /// feed only the sliding-window dataflows, whose panes may still hold them.
    pub history: Option<VecCollection<'scope, Epoch, Event, isize>>,
    /// The watermark `W(e)` at epoch `e`, on every worker.
    pub watermarks: StreamVec<'scope, Epoch, i64>,
    /// The sliding-window state of a restart, loaded from the stores, if any.
    pub restored: Option<Restored<'scope>>,
}

/// The durable sliding-window state a restart restores instead of re-reading its records: the
/// final panes inside the sliding window of the checkpoint's watermark, as the previous run
/// reported them ([`Outputs`]: `engagement.panes`, `similarity.interaction_panes`). Given at
/// the first epoch; a key's rows may be on any worker (the dataflows route them).
pub struct Restored<'scope> {
    /// Engagement of each (final pane, campaign).
    pub engagement: VecCollection<'scope, Epoch, PaneEngagement, isize>,
    /// Each interest pair with its latest final pane (ignored without similarity).
    pub interactions: VecCollection<'scope, Epoch, InteractionPane, isize>,
}

/// Similar users and the users' interaction sets (the expensive, once-per-pane part), from
/// which recommendations are ranked at read time.
pub struct SimilarityOutputs<'scope> {
    /// Each user's top-K similar users.
    pub similar: VecCollection<'scope, Epoch, SimilarUsers, isize>,
    /// Each user's interaction set.
    pub sets: VecCollection<'scope, Epoch, UserCampaigns, isize>,
    /// The interest pairs of each pane as it becomes final (durable sliding state, see
    /// [`Restored`]), on the pair's owner worker.
    pub interaction_panes: StreamVec<'scope, Epoch, InteractionPane>,
}

/// Everything the dataflow computes.
pub struct Outputs<'scope> {
    /// Tumbling-window counts: open windows and closed windows.
    pub counts: WindowedCounts<'scope>,
    /// Sliding-window campaign engagement.
    pub engagement: Engagement<'scope>,
    /// Similarity and recommendations; `None` when `similarity.enabled` is false.
    pub similarity: Option<SimilarityOutputs<'scope>>,
}

impl Outputs<'_> {
    /// Probes every output with `probe`, so it passes an epoch once every output has.
    pub fn probe_with(&self, probe: &ProbeHandle<Epoch>) {
        let c = &self.counts;
        c.types.clone().probe_with(probe);
        c.campaigns.clone().probe_with(probe);
        c.closed_types.clone().probe_with(probe);
        c.closed_campaigns.clone().probe_with(probe);
        let e = &self.engagement;
        e.campaigns.clone().probe_with(probe);
        e.top.clone().probe_with(probe);
        e.panes.clone().probe_with(probe);
        if let Some(s) = &self.similarity {
            s.similar.clone().probe_with(probe);
            s.sets.clone().probe_with(probe);
            s.interaction_panes.clone().probe_with(probe);
        }
    }
}

/// Builds every dataflow of eddy in the current scope, as `cfg` asks.
///
/// * windowed counts over `events` (tumbling windows of `pipeline.window_ms`);
/// * engagement over `events` and `history` (panes of `pipeline.window_ms`, sliding window of
///   `engagement.sliding_ms`);
/// * with `similarity.enabled`: the settled interaction pairs (changed once per pane close,
///   spread over `similarity.close_spread_epochs`), fed to the similarity loop (which keeps
///   each user's set on its owner worker), which emits similar users and the changed sets.
pub fn build<'scope>(cfg: &Config, inputs: Inputs<'scope>) -> Outputs<'scope> {
    let window = WindowSpec::new(cfg.pipeline.window_ms);
    let sliding_ms = cfg.engagement.sliding_ms;
    let Inputs {
        events,
        history,
        watermarks,
        restored,
    } = inputs;
    let (restored_engagement, restored_interactions) = match restored {
        Some(r) => (Some(r.engagement), Some(r.interactions)),
        None => (None, None),
    };
    // Sliding-window state also takes the replayed history of final windows.
    let sliding_events = match history.clone() {
        Some(history) => events.clone().concat(history),
        None => events.clone(),
    };
    let counts = windowed_counts(events, watermarks.clone(), window);
    let engagement = engagement_restored(
        sliding_events.clone(),
        restored_engagement,
        watermarks.clone(),
        EngagementParams {
            pane: window,
            sliding_ms,
            weights: cfg.engagement.weights(),
            top_k: cfg.engagement.top_k,
        },
    );
    let similarity = cfg.similarity.enabled.then(|| {
        let params = InteractionParams {
            pane: window,
            sliding_ms,
            views_are_interest: cfg.similarity.views_are_interest,
            // Settled sets: similar users and sets change at most once per pane, spread over
            // a few epochs after the close.
            emit: Emit::OnCloseSpread {
                epochs: cfg.similarity.close_spread_epochs,
            },
        };
        let (pairs, interaction_panes) = interactions_restorable(
            sliding_events,
            restored_interactions,
            watermarks,
            params,
            &StateGauge::new(),
        );
        // Re-read records of final panes (a restart that rebuilds the state by re-reading)
        // are stored as their panes' pairs too: the state is then stored in full again.
        let interaction_panes = match history {
            Some(history) => interaction_panes.concat(interest_pairs(history, params)),
            None => interaction_panes,
        };
        let (similar, sets) =
            similar_users_and_sets(pairs, SimilarityParams::from_config(&cfg.similarity));
        SimilarityOutputs {
            similar,
            sets,
            interaction_panes,
        }
    });
    Outputs {
        counts,
        engagement,
        similarity,
    }
}
