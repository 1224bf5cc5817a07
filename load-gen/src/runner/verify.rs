//! `--verify`: the runner keeps every valid event it produced. After the run it reads the
//! dead-letter topic and drops the events eddy ruled late there. It then waits until the query
//! server's per-type series, and the busiest campaigns' series, equal a from-scratch
//! recomputation ([`WindowTotals`]), and the busiest campaigns' sliding-window engagement
//! equals a recomputation over the events still in the window at the answer's `as_of`
//! ([`crate::expected::engagement`]). On timeout it fails with a readable diff. This assumes
//! the run is the only producer for its event-time range.

use super::probe::PROBE_CAMPAIGN;
use super::{RunConfig, RunError, kafka};
use crate::expected::WindowTotals;
use eddy_core::api::{CampaignResponse, CountsQuery, CountsResponse, NoQuery};
use eddy_core::{Event, EventType, WindowSpec};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

/// How a dead letter names an event the run sent: by its generator index (the id is
/// `{run_id}-{seed}-{index}`), or, for a probe, by its own id.
#[derive(Debug, Clone)]
pub(super) enum Sent {
    Generated(u64),
    Probe(String),
}

impl Sent {
    /// A probe, named by the `event_id` of its JSON.
    pub(super) fn probe(json: &str) -> Self {
        let id = serde_json::from_str::<EventId>(json).expect("a probe carries its event id");
        Sent::Probe(id.event_id)
    }
}

/// Checks the pipeline's answers for the `valid` events of a run; returns how many events the
/// pipeline ruled late (probes included: a probe's partition can fall behind the watermark like
/// any other).
pub(super) async fn check(cfg: &RunConfig, valid: Vec<(Sent, Event)>) -> Result<u64, RunError> {
    let url = cfg
        .query_url
        .as_deref()
        .ok_or_else(|| RunError::Config("--verify needs a query server URL".into()))?;
    let window = WindowSpec::new(cfg.window_ms);
    let run_prefix = format!("{}-{}-", cfg.generator.run_id, cfg.generator.seed);
    // The pipeline may still be writing dead letters when the last message is acknowledged
    // (a backlog after a broker outage, a dead-letter write being retried): on a mismatch the
    // late set is read again, until the answers match or `verify_timeout` has passed.
    let deadline = Instant::now() + cfg.verify_timeout;
    loop {
        // A broker just restarted can be slow to answer metadata: asked again until the deadline.
        let late = match late_event_ids(&cfg.brokers, &cfg.dlq_topic) {
            Ok(late) => late,
            Err(e) if Instant::now() < deadline => {
                eprintln!("reading the dead-letter topic: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let (kept, ruled_late) = not_late(&valid, &late, &run_prefix);
        let expected = WindowTotals::of(kept.iter().copied(), window);
        let round = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(5));
        let last = Instant::now() + round >= deadline;
        let checked = match verify(url, &expected, cfg.window_ms, round).await {
            Ok(()) => verify_engagement(url, &kept, window, cfg.sliding_ms, round).await,
            Err(e) => Err(e),
        };
        match checked {
            Ok(()) => return Ok(ruled_late),
            Err(RunError::Mismatch(_)) if !last => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The events of `valid` not in `late` (the ids of the dead letters ruled late; generated
/// events are `{run_prefix}{index}`), and how many were.
fn not_late(
    valid: &[(Sent, Event)],
    late: &HashSet<String>,
    run_prefix: &str,
) -> (Vec<Event>, u64) {
    let mut ruled_late = 0;
    let kept = valid
        .iter()
        .filter_map(|(sent, e)| {
            let is_late = match sent {
                Sent::Generated(i) => late.contains(&format!("{run_prefix}{i}")),
                Sent::Probe(id) => late.contains(id),
            };
            ruled_late += u64::from(is_late);
            (!is_late).then_some(*e)
        })
        .collect();
    (kept, ruled_late)
}

/// The id of a dead letter's original event (its other fields are not needed).
#[derive(serde::Deserialize)]
struct EventId {
    event_id: String,
}

/// Event ids of the dead letters with reason `late`.
fn late_event_ids(brokers: &str, dlq_topic: &str) -> Result<HashSet<String>, RunError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("eddy-load-gen-verify-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(kafka("dlq consumer"))?;
    let md = consumer
        .fetch_metadata(Some(dlq_topic), Duration::from_secs(10))
        .map_err(kafka("dlq metadata"))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut partitions = 0;
    for t in md.topics().iter().filter(|t| t.name() == dlq_topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(dlq_topic, p.id(), rdkafka::Offset::Beginning)
                .map_err(kafka("dlq assignment"))?;
            partitions += 1;
        }
    }
    consumer.assign(&tpl).map_err(kafka("dlq assign"))?;
    let mut ids = HashSet::new();
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let late = m.headers().is_some_and(|h| {
                    h.iter()
                        .any(|h| h.key == "eddy-reason" && h.value == Some(b"late".as_slice()))
                });
                if late
                    && let Some(id) = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<EventId>(p).ok())
                        .map(|e| e.event_id)
                {
                    ids.insert(id);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(source)) => {
                return Err(RunError::Kafka {
                    op: "dlq poll",
                    source,
                });
            }
            None => {}
        }
    }
    Ok(ids)
}

/// One window's values as compared: `(count, sum, min, max)` in micro-units.
type Values = (u64, i64, Option<i64>, Option<i64>);

/// Series keyed by `(event_type, window_start_ms)`.
type Series = BTreeMap<(EventType, i64), Values>;

async fn series(
    client: &reqwest::Client,
    url: &str,
    query: &CountsQuery,
) -> Result<Series, String> {
    let counts: CountsResponse = super::get(client, &format!("{url}/v1/counts"), query).await?;
    let micros = |a: f64| (a * 1_000_000.0).round() as i64;
    Ok(counts
        .series
        .iter()
        .map(|p| {
            let values = (
                p.count,
                p.sum_amount.map_or(0, micros),
                p.min_amount.map(micros),
                p.max_amount.map(micros),
            );
            ((p.event_type, p.window_start_ms), values)
        })
        .collect())
}

fn diff(what: &str, want: &Series, got: &Series) -> String {
    let mut out = String::new();
    let keys: BTreeSet<_> = want.keys().chain(got.keys()).collect();
    for k in keys {
        let (w, g) = (want.get(k), got.get(k));
        if w != g {
            out.push_str(&format!(
                "  {what} {} window {}: expected {w:?}, got {g:?}\n",
                k.0, k.1
            ));
        }
    }
    out
}

/// The five campaigns with the most events (ties: lower id first).
fn busiest(counts: impl IntoIterator<Item = (u64, u64)>) -> Vec<u64> {
    let mut volume: BTreeMap<u64, u64> = BTreeMap::new();
    for (campaign, n) in counts {
        *volume.entry(campaign).or_default() += n;
    }
    let mut busiest: Vec<(u64, u64)> = volume.into_iter().collect();
    busiest.sort_by_key(|(c, n)| (std::cmp::Reverse(*n), *c));
    busiest.into_iter().take(5).map(|(c, _)| c).collect()
}

/// Calls `differences` every 200 ms until it reports none (`Ok`) or `timeout` has passed
/// (`Mismatch` with the last report).
async fn until_no_difference<F: AsyncFnMut() -> String>(
    timeout: Duration,
    mut differences: F,
) -> Result<(), RunError> {
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let report = differences().await;
        if report.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(RunError::Mismatch(report));
        }
    }
}

/// Waits (up to `timeout`) until the query server's per-type series, and those of the five
/// busiest campaigns, equal `expected`; fails with a diff otherwise.
pub async fn verify(
    url: &str,
    expected: &WindowTotals,
    window_ms: i64,
    timeout: Duration,
) -> Result<(), RunError> {
    let (Some(from), Some(to)) = (
        expected.types.keys().map(|k| k.0).min(),
        expected.types.keys().map(|k| k.0).max(),
    ) else {
        return Ok(());
    };
    let to = to + window_ms;
    let want_types: Series = expected
        .types
        .values()
        .map(|r| {
            let key = (r.event_type, r.window_start_ms);
            (key, (r.count, r.sum_micros, r.min_micros, r.max_micros))
        })
        .collect();
    let campaigns = busiest(
        expected
            .campaigns
            .values()
            .map(|c| (c.campaign_id, c.count)),
    );
    let want_campaign = |c: u64| -> Series {
        expected
            .campaigns
            .values()
            .filter(|r| r.campaign_id == c)
            .map(|r| ((r.event_type, r.window_start_ms), (r.count, 0, None, None)))
            .collect()
    };
    let client = reqwest::Client::new();
    let range = CountsQuery::new(from, to);
    until_no_difference(timeout, async || {
        let mut report = String::new();
        match series(&client, url, &range).await {
            Ok(got) => report.push_str(&diff("type", &want_types, &got)),
            Err(e) => report.push_str(&format!("  query failed: {e}\n")),
        }
        for &c in &campaigns {
            let query = CountsQuery {
                campaign_id: Some(c),
                ..range
            };
            match series(&client, url, &query).await {
                Ok(got) => {
                    report.push_str(&diff(&format!("campaign {c}"), &want_campaign(c), &got))
                }
                Err(e) => report.push_str(&format!("  query failed: {e}\n")),
            }
        }
        report
    })
    .await
}

/// Waits (up to `timeout`) until the sliding-window engagement of the five busiest campaigns
/// of `events` (views, clicks, conversions, revenue), as served by `GET /v1/campaigns/{id}`,
/// equals a from-scratch recomputation at the answer's `as_of_ms`; fails with a diff otherwise.
pub async fn verify_engagement(
    url: &str,
    events: &[Event],
    window: WindowSpec,
    sliding_ms: i64,
    timeout: Duration,
) -> Result<(), RunError> {
    let campaigns = busiest(
        events
            .iter()
            .filter(|e| e.campaign_id != PROBE_CAMPAIGN)
            .map(|e| (e.campaign_id, 1)),
    );
    let client = reqwest::Client::new();
    until_no_difference(timeout, async || {
        let mut report = String::new();
        for &c in &campaigns {
            let path = format!("{url}/v1/campaigns/{c}");
            let answer = match super::get::<CampaignResponse>(&client, &path, &NoQuery {}).await {
                Ok(answer) => answer,
                Err(e) => {
                    report.push_str(&format!("  campaign {c}: no answer: {e}\n"));
                    continue;
                }
            };
            let as_of = answer.meta.as_of_ms;
            let want = crate::expected::engagement(events, window, sliding_ms, as_of)
                .get(&c)
                .copied()
                .unwrap_or_default();
            let e = &answer.campaign;
            let got = [e.views as i64, e.clicks as i64, e.conversions as i64, e.revenue_micros];
            if got != want {
                report.push_str(&format!(
                    "  campaign {c} engagement as of {as_of}: expected [views, clicks, conversions, revenue_micros] {want:?}, got {got:?}\n"
                ));
            }
        }
        report
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe ruled late is dropped like a generated event (a probe's partition can fall
    /// behind the watermark too: found in a 5 000/s run against a broker seconds behind).
    #[test]
    fn late_probes_are_dropped_like_generated_events() {
        let json = super::super::probe::message(9, 3, 1_700_000_000_000).1;
        let event = eddy_core::parse_event(json.as_bytes()).expect("a valid probe");
        let other = super::super::probe::message(9, 4, 1_700_000_000_000).1;
        let valid = vec![
            (Sent::Generated(1), event),
            (Sent::Generated(2), event),
            (Sent::probe(&json), event),
            (Sent::probe(&other), event),
        ];
        let late: HashSet<String> = ["9-7-2".to_string(), "probe-9-3".to_string()].into();
        let (kept, ruled_late) = not_late(&valid, &late, "9-7-");
        assert_eq!((kept.len(), ruled_late), (2, 2));
    }
}
