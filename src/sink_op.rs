//! Sink operators: turn the dataflow's outputs into one [`SinkBatch`] per epoch per worker and
//! hand it to the sink threads; hold the epoch's capability until every sink has written it,
//! so a probe downstream passes epoch `e` only when `e` is durable everywhere.

use crate::source::DeadLetter;
use differential_dataflow::VecCollection;
use eddy_core::{
    CampaignEngagement, CampaignWindowCount, EventType, PaneEngagement, SimilarUsers, SinkBatch,
    TypeWindowStats, UserRecommendations, WindowSpec,
};
use eddy_operators::{Epoch, EpochStash};
use eddy_sinks::SinkWorker;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Concat, Operator};

#[derive(Clone, Debug)]
enum Update {
    Type(TypeWindowStats, isize),
    Campaign(CampaignWindowCount, isize),
    Engagement(CampaignEngagement, isize),
    Top(Vec<CampaignEngagement>, isize),
    Pane(PaneEngagement, isize),
    Similar(SimilarUsers, isize),
    Recs(UserRecommendations, isize),
    Watermark(i64),
}

/// Everything the sinks write, as collections of the current values.
pub struct SinkInputs<'scope> {
    /// Open type windows (`windowed_counts`).
    pub types: VecCollection<'scope, Epoch, TypeWindowStats, isize>,
    /// Open campaign windows (`windowed_counts`).
    pub campaigns: VecCollection<'scope, Epoch, CampaignWindowCount, isize>,
    /// Live sliding engagement per campaign.
    pub engagement: VecCollection<'scope, Epoch, CampaignEngagement, isize>,
    /// The top list (one row).
    pub top: VecCollection<'scope, Epoch, Vec<CampaignEngagement>, isize>,
    /// Finalized panes (inserted when a pane closes).
    pub panes: VecCollection<'scope, Epoch, PaneEngagement, isize>,
    /// Similar users per user.
    pub similar: VecCollection<'scope, Epoch, SimilarUsers, isize>,
    /// Recommendations per user.
    pub recommendations: VecCollection<'scope, Epoch, UserRecommendations, isize>,
    /// Sliding window length, ms.
    pub sliding_ms: i64,
    /// The slow path (see [`eddy_core::SinkBatch::as_of_only`]): batches are written only
    /// when they carry rows, and do not advance the stores' watermark.
    pub as_of_only: bool,
}

/// Writes the dataflows' outputs to `sinks` (see the module docs). The returned stream carries
/// no data; probe it to learn which epochs are durable.
pub fn sink_outputs<'scope>(
    inputs: SinkInputs<'scope>,
    watermarks: StreamVec<'scope, Epoch, i64>,
    window: WindowSpec,
    sinks: Vec<SinkWorker>,
) -> StreamVec<'scope, Epoch, ()> {
    let scope = watermarks.scope();
    let sliding_ms = inputs.sliding_ms;
    let as_of_only = inputs.as_of_only;
    let updates = inputs
        .types
        .inner
        .map(|(row, _, r)| Update::Type(row, r))
        .concat(
            inputs
                .campaigns
                .inner
                .map(|(row, _, r)| Update::Campaign(row, r)),
        )
        .concat(
            inputs
                .engagement
                .inner
                .map(|(row, _, r)| Update::Engagement(row, r)),
        )
        .concat(inputs.top.inner.map(|(row, _, r)| Update::Top(row, r)))
        .concat(inputs.panes.inner.map(|(row, _, r)| Update::Pane(row, r)))
        .concat(
            inputs
                .similar
                .inner
                .map(|(row, _, r)| Update::Similar(row, r)),
        )
        .concat(
            inputs
                .recommendations
                .inner
                .map(|(row, _, r)| Update::Recs(row, r)),
        )
        .concat(watermarks.map(Update::Watermark));
    updates.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        "SinkOutputs",
        move |_cap, info| {
            let activator = scope.activator_for(info.address.clone());
            let mut pending = EpochStash::<Update>::default();
            // Open windows held by this worker: window start -> key -> current row.
            let mut types: BTreeMap<i64, HashMap<EventType, TypeWindowStats>> = BTreeMap::new();
            let mut camps: BTreeMap<i64, HashMap<(u64, EventType), CampaignWindowCount>> =
                BTreeMap::new();
            let mut watermark = i64::MIN;
            // Batches built but not yet accepted by every sink, and epochs awaiting acks.
            let mut unsent: Vec<std::collections::VecDeque<Arc<SinkBatch>>> =
                vec![Default::default(); sinks.len()];
            let mut awaiting: BTreeMap<Epoch, Capability<Epoch>> = BTreeMap::new();
            move |(input, frontier), _output| {
                input.for_each(|cap, data| pending.absorb(cap, data));
                while let Some((cap, updates)) = pending.pop_if(|t| !frontier.less_equal(t)) {
                    let time = *cap.time();
                    let mut batch = SinkBatch {
                        epoch: time,
                        window_size_ms: window.size_ms,
                        sliding_ms,
                        as_of_only,
                        ..SinkBatch::default()
                    };
                    let before = watermark;
                    for u in &updates {
                        if let Update::Watermark(w) = u {
                            watermark = watermark.max(*w);
                        }
                    }
                    // Windows closed by this epoch's watermark: their values as of the previous
                    // epoch are final (this epoch only retracts them).
                    while let Some((&start, _)) = types.first_key_value() {
                        if start + window.size_ms > watermark {
                            break;
                        }
                        let (_, rows) = types.pop_first().expect("checked");
                        batch.final_types.extend(rows.into_values());
                    }
                    while let Some((&start, _)) = camps.first_key_value() {
                        if start + window.size_ms > watermark {
                            break;
                        }
                        let (_, rows) = camps.pop_first().expect("checked");
                        batch.final_campaigns.extend(rows.into_values());
                    }
                    // Keyed current values: the positive update of a key is its new value; a key
                    // with only a retraction is gone.
                    let mut engagement: BTreeMap<u64, Option<CampaignEngagement>> = BTreeMap::new();
                    let mut top: Option<Option<Vec<CampaignEngagement>>> = None;
                    let mut similar: BTreeMap<u64, Option<SimilarUsers>> = BTreeMap::new();
                    let mut recs: BTreeMap<u64, Option<UserRecommendations>> = BTreeMap::new();
                    let mut changed_types: HashMap<(i64, EventType), Option<TypeWindowStats>> =
                        HashMap::new();
                    let mut changed_camps: HashMap<
                        (i64, u64, EventType),
                        Option<CampaignWindowCount>,
                    > = HashMap::new();
                    for u in updates {
                        match u {
                            Update::Type(row, r)
                                if row.window_start_ms + window.size_ms > watermark =>
                            {
                                let slot = changed_types
                                    .entry((row.window_start_ms, row.event_type))
                                    .or_default();
                                if r > 0 {
                                    *slot = Some(row);
                                }
                            }
                            Update::Campaign(row, r)
                                if row.window_start_ms + window.size_ms > watermark =>
                            {
                                let slot = changed_camps
                                    .entry((row.window_start_ms, row.campaign_id, row.event_type))
                                    .or_default();
                                if r > 0 {
                                    *slot = Some(row);
                                }
                            }
                            Update::Engagement(row, r) => {
                                let slot = engagement.entry(row.campaign_id).or_default();
                                if r > 0 {
                                    *slot = Some(row);
                                }
                            }
                            Update::Top(rows, r) => {
                                let slot = top.get_or_insert(None);
                                if r > 0 {
                                    *slot = Some(rows);
                                }
                            }
                            // A pane is inserted when it closes (final) and retracted when it
                            // slides out; only the former is written.
                            Update::Pane(row, r) if r > 0 => batch.final_engagement.push(row),
                            Update::Similar(row, r) => {
                                let slot = similar.entry(row.user_id).or_default();
                                if r > 0 {
                                    *slot = Some(row);
                                }
                            }
                            Update::Recs(row, r) => {
                                let slot = recs.entry(row.user_id).or_default();
                                if r > 0 {
                                    *slot = Some(row);
                                }
                            }
                            _ => {}
                        }
                    }
                    for (campaign_id, row) in engagement {
                        match row {
                            Some(row) => batch.engagement.push(row),
                            None => batch.engagement_removed.push(campaign_id),
                        }
                    }
                    batch.top_campaigns = top.map(Option::unwrap_or_default);
                    batch.similar = similar
                        .into_iter()
                        .map(|(user_id, row)| {
                            row.unwrap_or(SimilarUsers {
                                user_id,
                                neighbors: Vec::new(),
                            })
                        })
                        .collect();
                    batch.recommendations = recs
                        .into_iter()
                        .map(|(user_id, row)| {
                            row.unwrap_or(UserRecommendations {
                                user_id,
                                items: Vec::new(),
                            })
                        })
                        .collect();
                    batch.final_engagement.sort();
                    for ((start, t), row) in changed_types {
                        let held = types.entry(start).or_default();
                        match row {
                            Some(row) => {
                                held.insert(t, row);
                                batch.open_types.push(row);
                            }
                            None => {
                                held.remove(&t);
                            }
                        }
                    }
                    for ((start, c, t), row) in changed_camps {
                        let held = camps.entry(start).or_default();
                        match row {
                            Some(row) => {
                                held.insert((c, t), row);
                                batch.open_campaigns.push(row);
                            }
                            None => {
                                held.remove(&(c, t));
                            }
                        }
                    }
                    if batch.is_empty() && (watermark == before || as_of_only) {
                        continue;
                    }
                    batch.watermark_ms = watermark;
                    batch.open_types.sort();
                    batch.open_campaigns.sort();
                    batch.final_types.sort();
                    batch.final_campaigns.sort();
                    let batch = Arc::new(batch);
                    for q in unsent.iter_mut() {
                        q.push_back(batch.clone());
                    }
                    awaiting.insert(time, cap);
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
                    let rest = awaiting.split_off(&(acked + 1));
                    awaiting = rest; // dropping the capabilities of durable epochs
                }
                if !awaiting.is_empty() {
                    activator.activate_after(Duration::from_micros(500));
                }
            }
        },
    )
}

/// Where dead letters go.
pub trait DeadLetterWriter: 'static {
    /// Writes every letter durably (blocking until acknowledged), or fails.
    fn write(&mut self, letters: &[DeadLetter]) -> Result<(), String>;
}

/// Writes dead letters per epoch, synchronously, retrying until they are acknowledged; the
/// returned stream (no data) passes epoch `e` once its letters are durable.
pub fn sink_dead_letters<'scope, W: DeadLetterWriter>(
    letters: StreamVec<'scope, Epoch, DeadLetter>,
    mut writer: W,
) -> StreamVec<'scope, Epoch, ()> {
    letters.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        "SinkDeadLetters",
        move |_cap, _info| {
            let mut pending = EpochStash::<DeadLetter>::default();
            move |(input, frontier), _output| {
                input.for_each(|cap, data| pending.absorb(cap, data));
                while let Some((_cap, letters)) = pending.pop_if(|t| !frontier.less_equal(t)) {
                    let mut backoff = Duration::from_millis(50);
                    while let Err(e) = writer.write(&letters) {
                        tracing::warn!(error = %e, "dead-letter write failed; retrying");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        },
    )
}

/// Dead letters kept in memory (the demo), most recent last.
#[derive(Clone, Default)]
pub struct MemoryDeadLetters(pub Arc<std::sync::Mutex<Vec<DeadLetter>>>);

impl DeadLetterWriter for MemoryDeadLetters {
    fn write(&mut self, letters: &[DeadLetter]) -> Result<(), String> {
        let mut held = self.0.lock().map_err(|e| e.to_string())?;
        held.extend_from_slice(letters);
        let excess = held.len().saturating_sub(10_000);
        held.drain(..excess);
        Ok(())
    }
}
