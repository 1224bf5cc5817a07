//! Sink operators: turn the dataflow's outputs into one batch per epoch per worker and hand it
//! to the sink threads ([`SinkWorker`]); hold the epoch's capability until every sink has
//! written it, so a probe downstream passes epoch `e` only when `e` is durable everywhere.
//!
//! Three paths use the same operator ([`SinkEpochs`]), each with its own sink threads:
//! * the fast path ([`sink_counts`]): windowed counts (open and closed windows), engagement
//!   and the top list;
//! * the slow path ([`sink_similarity`]): similar users and interaction sets, whose pane-close
//!   batches are large, so counts never queue behind them;
//! * dead letters ([`sink_dead_letters`]): the source's rejected records.

use differential_dataflow::{AsCollection, VecCollection};
use eddy_core::{
    CampaignEngagement, CampaignWindowCount, CountsBatch, DeadLetter, DeadLetterBatch, EventType,
    InteractionPane, PaneEngagement, SimilarUsers, SimilarityBatch, TypeWindowStats, UserCampaigns,
    WindowSpec,
};
use eddy_dataflows::{Engagement, SimilarityOutputs, WindowedCounts};
use eddy_operators::{Epoch, EpochStash, WatermarkHandle};
use eddy_sinks::{Batch, SinkWorker, merge_batches};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};

/// Writes a stream to sink threads, one batch per epoch.
///
/// ```
/// use differential_dataflow::AsCollection;
/// use eddy::sink_op::SinkEpochs;
/// use eddy_core::config::SinkConfig;
/// use eddy_core::{DeadLetter, DeadLetterBatch, Metrics};
/// use eddy_sinks::{MemoryDeadLetters, SinkWorker};
/// use timely::dataflow::operators::{Probe, ToStream};
///
/// let letters = MemoryDeadLetters::default();
/// let held = letters.clone();
/// timely::execute_directly(move |worker| {
///     let sink = SinkWorker::spawn(Box::new(held.clone()), &SinkConfig::default(), Metrics::new());
///     let probe = worker.dataflow::<u64, _, _>(|scope| {
///         let letter = |offset| DeadLetter {
///             partition: 0,
///             offset,
///             reason: "bad_json".into(),
///             error: "expected value".into(),
///             payload: b"{".to_vec(),
///         };
///         vec![(letter(7), 0, 1), (letter(9), 0, 1)]
///             .to_stream(scope)
///             .as_collection()
///             .sink_epochs(
///                 "Letters",
///                 |epoch, updates| {
///                     let letters = updates.into_iter().map(|(l, _)| l).collect();
///                     Some(DeadLetterBatch { epoch, letters })
///                 },
///                 vec![sink],
///             )
///             .probe()
///             .0
///     });
///     // The probe passes the epoch once the sink thread has written its batch.
///     while !probe.done() {
///         worker.step();
///     }
/// });
/// let offsets: Vec<i64> = letters.letters().iter().map(|l| l.offset).collect();
/// assert_eq!(offsets, vec![7, 9]);
/// ```
pub trait SinkEpochs<'scope, D> {
    /// Once epoch `e` of `self` is complete, `build(e, updates)` makes its batch from the
    /// `(data, diff)` updates at `e` (`None`: nothing to write) and every one of `sinks` is
    /// given it, in epoch order; a full queue is backpressure (the batch waits in the
    /// operator). The returned stream carries no data; it passes `e` once every sink has
    /// written every batch up to `e`.
    fn sink_epochs<B: Batch>(
        self,
        name: &str,
        build: impl FnMut(Epoch, Vec<(D, isize)>) -> Option<B> + 'static,
        sinks: Vec<SinkWorker<B>>,
    ) -> StreamVec<'scope, Epoch, ()>;
}

impl<'scope, D: Clone + 'static> SinkEpochs<'scope, D> for VecCollection<'scope, Epoch, D, isize> {
    fn sink_epochs<B: Batch>(
        self,
        name: &str,
        mut build: impl FnMut(Epoch, Vec<(D, isize)>) -> Option<B> + 'static,
        sinks: Vec<SinkWorker<B>>,
    ) -> StreamVec<'scope, Epoch, ()> {
        let scope = self.scope();
        self.inner
            .unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                name,
                move |_cap, info| {
                    let activator = scope.activator_for(info.address.clone());
                    let mut pending = EpochStash::<(D, isize)>::default();
                    // Batches built but not yet accepted by every sink, and epochs awaiting acks.
                    let mut unsent: Vec<VecDeque<Arc<B>>> = vec![VecDeque::new(); sinks.len()];
                    let mut awaiting: BTreeMap<Epoch, Capability<Epoch>> = BTreeMap::new();
                    move |(input, frontier), _output| {
                        input.for_each(|cap, data| pending.absorb_updates(cap, data));
                        while let Some((cap, data)) = pending.pop_if(|t| !frontier.less_equal(t)) {
                            let Some(batch) = build(*cap.time(), data) else {
                                continue; // nothing to write: the capability goes
                            };
                            let batch = Arc::new(batch);
                            for q in unsent.iter_mut() {
                                q.push_back(batch.clone());
                            }
                            awaiting.insert(*cap.time(), cap);
                        }
                        // Hand batches over in order; a full queue is backpressure: keep them.
                        for (sink, q) in sinks.iter().zip(unsent.iter_mut()) {
                            while let Some(b) = q.pop_front() {
                                if let Err(b) = sink.try_send(b) {
                                    q.push_front(b);
                                    break;
                                }
                            }
                        }
                        let acked = sinks.iter().map(|s| s.acked_through()).min().flatten();
                        if let Some(acked) = acked {
                            // Dropping the capabilities of durable epochs.
                            awaiting = awaiting.split_off(&(acked + 1));
                        }
                        if !awaiting.is_empty() {
                            activator.activate_after(Duration::from_micros(500));
                        }
                    }
                },
            )
    }
}

/// One update of a sink path's outputs.
#[derive(Clone, Debug)]
enum Update {
    Type(TypeWindowStats),
    Campaign(CampaignWindowCount),
    ClosedType(TypeWindowStats),
    ClosedCampaign(CampaignWindowCount),
    Engagement(CampaignEngagement),
    Top(Vec<CampaignEngagement>),
    Pane(PaneEngagement),
    Similar(SimilarUsers),
    Set(UserCampaigns),
    InteractionPane(InteractionPane),
    Watermark(i64),
}

/// The current value of each key changed in an epoch: a key's positive update is its new
/// value; a key with only a retraction has none any more (`None`).
struct Changed<K, V>(BTreeMap<K, Option<V>>);

impl<K: Ord, V> Changed<K, V> {
    fn new() -> Self {
        Self(BTreeMap::new())
    }

    fn update(&mut self, key: K, value: V, diff: isize) {
        let slot = self.0.entry(key).or_insert(None);
        if diff > 0 {
            *slot = Some(value);
        }
    }

    /// Every changed key's value, `gone(key)` for the keys that have none any more.
    fn values_or(self, gone: impl Fn(K) -> V) -> Vec<V> {
        self.0
            .into_iter()
            .map(|(k, v)| v.unwrap_or_else(|| gone(k)))
            .collect()
    }
}

/// How [`sink_counts`] writes.
pub struct SinkCountsOptions {
    /// Tumbling windows (panes).
    pub window: WindowSpec,
    /// Sliding-window length, ms.
    pub sliding_ms: i64,
    /// After a restart, the restored checkpoint's watermark: engagement panes closed under it
    /// are stored already and not written again (whether restored or rebuilt by re-reading).
    pub durable_through: Option<i64>,
    /// After a restart: the speed-layer values (open windows, live engagement, top list) of
    /// the epochs before the state is caught up ([`WatermarkHandle::caught_up_at`]: the re-read
    /// reached the end of the log as it was at the restart) are held and written, merged, at
    /// the epoch it is; final rows and the watermark are written at once. Readers so never see
    /// a value older than one the previous run wrote (a partly rebuilt open window, a score
    /// missing its open panes).
    pub hold_until_caught_up: Option<WatermarkHandle>,
}

/// Whether pane `start` is closed under watermark `through` (if any): a restored, stored pane.
fn stored_pane(window: WindowSpec, start: i64, through: Option<i64>) -> bool {
    through.is_some_and(|w| window.is_closed(start, w))
}

/// Writes the fast outputs (windowed counts, engagement, top list, final panes) to `sinks`,
/// one [`CountsBatch`] per epoch (when it has rows or the watermark moved). The returned stream
/// (no data) passes epoch `e` once it is durable in every sink.
pub fn sink_counts<'scope>(
    counts: &WindowedCounts<'scope>,
    engagement: &Engagement<'scope>,
    watermarks: StreamVec<'scope, Epoch, i64>,
    options: SinkCountsOptions,
    sinks: Vec<SinkWorker>,
) -> StreamVec<'scope, Epoch, ()> {
    let SinkCountsOptions {
        window,
        sliding_ms,
        durable_through,
        hold_until_caught_up,
    } = options;
    // Until released (then `None`: values are written as they come, at no cost).
    let mut hold = hold_until_caught_up;
    let mut held: Option<CountsBatch> = None;
    let updates = updates(&counts.types, Update::Type)
        .concat(updates(&counts.campaigns, Update::Campaign))
        .concat(updates(&counts.closed_types, Update::ClosedType))
        .concat(updates(&counts.closed_campaigns, Update::ClosedCampaign))
        .concat(updates(&engagement.campaigns, Update::Engagement))
        .concat(updates(&engagement.top, Update::Top))
        .concat(updates(&engagement.panes, Update::Pane))
        .concat(watermark_updates(watermarks));
    let mut watermark = i64::MIN;
    updates.sink_epochs(
        "SinkCounts",
        move |epoch, updates| {
            let before = watermark;
            let mut batch = CountsBatch {
                epoch,
                window_size_ms: window.size_ms,
                sliding_ms,
                ..CountsBatch::default()
            };
            let mut types = Changed::<(i64, EventType), _>::new();
            let mut campaigns = Changed::<(i64, u64, EventType), _>::new();
            let mut engagement = Changed::new();
            let mut top = None;
            for (u, r) in updates {
                match u {
                    Update::Watermark(w) => watermark = watermark.max(w),
                    Update::Type(row) => {
                        types.update((row.window_start_ms, row.event_type), row, r)
                    }
                    Update::Campaign(row) => {
                        let key = (row.window_start_ms, row.campaign_id, row.event_type);
                        campaigns.update(key, row, r)
                    }
                    // Closed windows are only ever inserted; so are panes as they close (a
                    // pane's retraction, as it slides out, is not written).
                    Update::ClosedType(row) => batch.final_types.push(row),
                    Update::ClosedCampaign(row) => batch.final_campaigns.push(row),
                    Update::Pane(row)
                        if r > 0 && !stored_pane(window, row.window_start_ms, durable_through) =>
                    {
                        batch.final_engagement.push(row)
                    }
                    Update::Engagement(row) => engagement.update(row.campaign_id, row, r),
                    Update::Top(rows) => {
                        let slot = top.get_or_insert(None);
                        if r > 0 {
                            *slot = Some(rows);
                        }
                    }
                    Update::Pane(_)
                    | Update::Similar(_)
                    | Update::Set(_)
                    | Update::InteractionPane(_) => {}
                }
            }
            // A window with only a retraction closed (its final row is in `final_*`).
            batch.open_types = types.0.into_values().flatten().collect();
            batch.open_campaigns = campaigns.0.into_values().flatten().collect();
            for (campaign_id, row) in engagement.0 {
                match row {
                    Some(row) => batch.engagement.push(row),
                    None => batch.engagement_removed.push(campaign_id),
                }
            }
            batch.top_campaigns = top.map(Option::unwrap_or_default);
            if let Some(handle) = &hold {
                // The held batch keeps the final rows too: merging drops a held open row of a
                // window that closed since.
                let speed = CountsBatch {
                    open_types: std::mem::take(&mut batch.open_types),
                    open_campaigns: std::mem::take(&mut batch.open_campaigns),
                    engagement: std::mem::take(&mut batch.engagement),
                    engagement_removed: std::mem::take(&mut batch.engagement_removed),
                    top_campaigns: batch.top_campaigns.take(),
                    ..batch.clone()
                };
                let merged = match held.take() {
                    Some(h) => merge_batches(&h, &speed),
                    None => speed,
                };
                if handle.caught_up_at().is_some_and(|c| epoch >= c) {
                    tracing::info!(
                        epoch,
                        "caught up after the restart: writing the held speed-layer values"
                    );
                    batch.open_types = merged.open_types;
                    batch.open_campaigns = merged.open_campaigns;
                    batch.engagement = merged.engagement;
                    batch.engagement_removed = merged.engagement_removed;
                    batch.top_campaigns = merged.top_campaigns;
                    hold = None;
                } else {
                    held = Some(merged);
                }
            }
            if batch.is_empty() && watermark == before {
                return None;
            }
            batch.watermark_ms = watermark;
            batch.open_types.sort();
            batch.open_campaigns.sort();
            batch.final_types.sort();
            batch.final_campaigns.sort();
            batch.final_engagement.sort();
            Some(batch)
        },
        sinks,
    )
}

/// Writes similar users, interaction sets and the interest pairs of final panes (the slow
/// path) to `sinks`, one [`SimilarityBatch`] per epoch with rows, stamped with the epoch's
/// watermark. Panes closed under `durable_through` (a restored state's watermark) are stored
/// already and not written again.
pub fn sink_similarity<'scope>(
    similarity: &SimilarityOutputs<'scope>,
    watermarks: StreamVec<'scope, Epoch, i64>,
    window: WindowSpec,
    sliding_ms: i64,
    durable_through: Option<i64>,
    sinks: Vec<SinkWorker<SimilarityBatch>>,
) -> StreamVec<'scope, Epoch, ()> {
    let updates = updates(&similarity.similar, Update::Similar)
        .concat(updates(&similarity.sets, Update::Set))
        .concat(timed(similarity.interaction_panes.clone()).map(Update::InteractionPane))
        .concat(watermark_updates(watermarks));
    let mut watermark = i64::MIN;
    updates.sink_epochs(
        "SinkSimilarity",
        move |epoch, updates| {
            let mut similar = Changed::new();
            let mut sets = Changed::new();
            let mut interaction_panes = Vec::new();
            for (u, r) in updates {
                match u {
                    Update::Watermark(w) => watermark = watermark.max(w),
                    Update::Similar(row) => similar.update(row.user_id, row, r),
                    Update::Set(row) => sets.update(row.user_id, row, r),
                    Update::InteractionPane(row)
                        if !stored_pane(window, row.window_start_ms, durable_through) =>
                    {
                        interaction_panes.push(row)
                    }
                    _ => {}
                }
            }
            if similar.0.is_empty() && sets.0.is_empty() && interaction_panes.is_empty() {
                return None;
            }
            // Re-read records of one pane and pair (a re-reading restart) give one row.
            interaction_panes.sort();
            interaction_panes.dedup();
            Some(SimilarityBatch {
                epoch,
                as_of_ms: watermark,
                sliding_ms,
                similar: similar.values_or(|user_id| SimilarUsers {
                    user_id,
                    neighbors: Vec::new(),
                }),
                campaigns: sets.values_or(|user_id| UserCampaigns {
                    user_id,
                    campaigns: Vec::new(),
                }),
                interaction_panes,
            })
        },
        sinks,
    )
}

/// Writes each epoch's dead letters, in source order, to `sinks`. The returned stream (no
/// data) passes epoch `e` once its letters are durable.
pub fn sink_dead_letters<'scope>(
    letters: StreamVec<'scope, Epoch, DeadLetter>,
    sinks: Vec<SinkWorker<DeadLetterBatch>>,
) -> StreamVec<'scope, Epoch, ()> {
    timed(letters).sink_epochs(
        "SinkDeadLetters",
        |epoch, letters| {
            let letters: Vec<DeadLetter> = letters.into_iter().map(|(l, _)| l).collect();
            (!letters.is_empty()).then_some(DeadLetterBatch { epoch, letters })
        },
        sinks,
    )
}

/// A collection's updates as sink [`Update`]s.
fn updates<'scope, D: Clone + 'static>(
    collection: &VecCollection<'scope, Epoch, D, isize>,
    wrap: fn(D) -> Update,
) -> VecCollection<'scope, Epoch, Update, isize> {
    collection.clone().map(wrap)
}

/// The watermark stream as [`Update`]s.
fn watermark_updates<'scope>(
    watermarks: StreamVec<'scope, Epoch, i64>,
) -> VecCollection<'scope, Epoch, Update, isize> {
    timed(watermarks).map(Update::Watermark)
}

/// A stream's records as insertions at the time they are sent at.
fn timed<'scope, D: Clone + 'static>(
    stream: StreamVec<'scope, Epoch, D>,
) -> VecCollection<'scope, Epoch, D, isize> {
    stream
        .unary(Pipeline, "Timed", |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let time = *cap.least().expect("a message has a time");
                    output
                        .session(&cap)
                        .give_iterator(data.drain(..).map(|d| (d, time, 1)));
                })
            }
        })
        .as_collection()
}
