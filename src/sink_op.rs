//! Sink operators: turn the dataflow's outputs into one [`SinkBatch`] per epoch per worker and
//! hand it to the sink threads; hold the epoch's capability until every sink has written it,
//! so a probe downstream passes epoch `e` only when `e` is durable everywhere.

use crate::source::DeadLetter;
use differential_dataflow::VecCollection;
use eddy_core::{CampaignWindowCount, EventType, SinkBatch, TypeWindowStats, WindowSpec};
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
    Watermark(i64),
}

/// Writes the windowed counts to `sinks` (see the module docs). The returned stream carries no
/// data; probe it to learn which epochs are durable.
pub fn sink_windowed_counts<'scope>(
    types: VecCollection<'scope, Epoch, TypeWindowStats, isize>,
    campaigns: VecCollection<'scope, Epoch, CampaignWindowCount, isize>,
    watermarks: StreamVec<'scope, Epoch, i64>,
    window: WindowSpec,
    sinks: Vec<SinkWorker>,
) -> StreamVec<'scope, Epoch, ()> {
    let scope = watermarks.scope();
    let updates = types
        .inner
        .map(|(row, _, r)| Update::Type(row, r))
        .concat(campaigns.inner.map(|(row, _, r)| Update::Campaign(row, r)))
        .concat(watermarks.map(Update::Watermark));
    updates.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        "SinkWindowedCounts",
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
                            _ => {}
                        }
                    }
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
                    if batch.is_empty() && watermark == before {
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
