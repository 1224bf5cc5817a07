//! Freshness probes and lag sampling. Every `probe_interval` the producer sends a probe (a view
//! of campaign [`PROBE_CAMPAIGN`] at the current time); a poller asks the query server for that
//! campaign's view count every 5 ms, and when the count reaches `k` the `k`-th probe is
//! visible: its freshness is the time since it was sent. A sampler reads the pipeline's
//! `/metrics` every second for its consumer lag and watermark.

use crate::timeline::Timeline;
use eddy_core::api::{CountsQuery, CountsResponse};
use eddy_core::{Event, EventType};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Campaign id reserved for freshness probes.
pub const PROBE_CAMPAIGN: u64 = 4_000_000_000;

/// A freshness probe: when it was sent, and when the broker acknowledged it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    pub(super) sent: Instant,
    pub(super) acked: Option<Instant>,
}

/// The probes sent, in order.
pub(super) type Probes = Arc<Mutex<Vec<Probe>>>;

/// User id of the freshness probes: outside the generated users, so that no generated user's
/// interactions change.
pub const PROBE_USER: u64 = PANE_PROBE_USER - 1;

/// The `n`-th probe of run `run_id` at event time `ts` (the generator's current time, so a
/// producer behind its schedule does not stamp probes ahead of the events around them and
/// push its partition's watermark past them): its key, its JSON, and the event it encodes.
pub(super) fn message(run_id: u64, n: u64, ts: i64) -> (String, String, Event) {
    let json = format!(
        r#"{{"event_id":"probe-{run_id}-{n}","ts":{ts},"user_id":{PROBE_USER},"campaign_id":{PROBE_CAMPAIGN},"event_type":"view"}}"#
    );
    let event = eddy_core::parse_event(json.as_bytes()).expect("probes are valid");
    (format!("probe-{n}"), json, event)
}

/// The probe campaign's total view count over HTTP.
async fn probe_count(client: &reqwest::Client, url: &str, from: i64) -> Option<u64> {
    let to = eddy_core::now_ms() + 3_600_000;
    let query = CountsQuery {
        campaign_id: Some(PROBE_CAMPAIGN),
        event_type: Some(EventType::View),
        ..CountsQuery::new(from, to)
    };
    let counts: CountsResponse = super::get(client, &format!("{url}/v1/counts"), &query)
        .await
        .ok()?;
    Some(counts.series.iter().map(|p| p.count).sum())
}

/// Polls the probe count until every probe is seen (or 30 s after `producing` ends); returns
/// the freshness histogram (ms) and when each probe seen became visible, in order.
pub(super) async fn poll(
    url: String,
    sent: Probes,
    producing: Arc<AtomicBool>,
    from: i64,
    timeline: Arc<Mutex<Timeline>>,
) -> (Histogram<u64>, Vec<Instant>) {
    let client = reqwest::Client::new();
    let mut h = Histogram::<u64>::new(3).expect("valid sigfig");
    let mut visible = Vec::new();
    let mut ended: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tick.tick().await;
        if !producing.load(Ordering::SeqCst) {
            let since = *ended.get_or_insert_with(Instant::now);
            let all = sent.lock().expect("not poisoned").len();
            if visible.len() >= all || since.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
        let Some(count) = probe_count(&client, &url, from).await else {
            continue;
        };
        let now = Instant::now();
        let sent = sent.lock().expect("not poisoned");
        while visible.len() < (count as usize).min(sent.len()) {
            let at = sent[visible.len()].sent;
            let ms = (now - at).as_millis().max(1) as u64;
            h.record(ms).ok();
            timeline.lock().expect("not poisoned").fresh(at, ms);
            visible.push(now);
        }
    }
    (h, visible)
}

/// From the broker's acknowledgement of each probe seen to its being visible, ms (1 when it
/// was visible before its acknowledgement reached the producer): the part of the freshness
/// after the produce path (the broker's fetch, eddy, its sinks, the query server and this
/// poll), once every acknowledgement is in.
pub(super) fn ack_to_visible(probes: &[Probe], visible: &[Instant]) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).expect("valid sigfig");
    for (p, v) in probes.iter().zip(visible) {
        if let Some(acked) = p.acked {
            h.record(v.saturating_duration_since(acked).as_millis().max(1) as u64)
                .ok();
        }
    }
    h
}

/// Samples the pipeline's consumer lag and watermark every second while `sampling`.
pub(super) async fn sample_lag(
    url: String,
    sampling: Arc<AtomicBool>,
    timeline: Arc<Mutex<Timeline>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("a plain client builds");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while sampling.load(Ordering::SeqCst) {
        tick.tick().await;
        let Ok(resp) = client.get(&url).send().await else {
            continue;
        };
        let Ok(text) = resp.text().await else {
            continue;
        };
        let (lag, watermark) = crate::timeline::parse_metrics(&text);
        let wm_lag = watermark
            .filter(|w| *w > 0)
            .map(|w| eddy_core::now_ms() - w);
        timeline
            .lock()
            .expect("not poisoned")
            .lag(Instant::now(), lag, wm_lag);
    }
}

/// First user id of the similarity probes (two users per probe).
pub const PANE_PROBE_USER: u64 = 4_000_000_000;
/// First campaign id of the similarity probes (three campaigns per probe), above
/// [`PROBE_CAMPAIGN`].
pub const PANE_PROBE_CAMPAIGN: u64 = PROBE_CAMPAIGN + 1;

/// A similarity probe: once the pane of its events closes, `user`'s recommendations list
/// `campaign` (which only its probe partner engaged with). Its freshness is measured from
/// `closes_at_ms` on the wall clock, which the producer's event time follows while it keeps
/// its schedule.
#[derive(Debug, Clone, Copy)]
pub(super) struct PaneProbe {
    /// The user whose recommendations are polled.
    pub user: u64,
    /// The campaign they must list.
    pub campaign: u64,
    /// Wall-clock ms from which the pane can close: its end plus the lateness (event times
    /// follow the wall clock, so the watermark can pass the pane's end from then on).
    pub closes_at_ms: i64,
}

/// The similarity probes sent, in order.
pub(super) type PaneProbes = Arc<Mutex<Vec<PaneProbe>>>;

/// The messages of similarity probe `n` at event time `ts`: users `a = PANE_PROBE_USER + 2n`
/// and `b = a + 1` both click campaigns `c = PANE_PROBE_CAMPAIGN + 3n` and `c + 1`; `b` also
/// clicks `c + 2`. Clicks are interest under every setting, so once the pane holding `ts`
/// closes, `a` and `b` are similar (Jaccard 2/3, found by the MinHash mode with probability
/// above 0.9999) and `a`'s recommendations list `c + 2`. Returns the messages (key, JSON,
/// event) and the probe to poll.
pub(super) fn pane_messages(
    run_id: u64,
    n: u64,
    ts: i64,
    closes_at_ms: i64,
) -> (Vec<(String, String, Event)>, PaneProbe) {
    let (a, c) = (PANE_PROBE_USER + 2 * n, PANE_PROBE_CAMPAIGN + 3 * n);
    let clicks = [
        (a, c),
        (a, c + 1),
        (a + 1, c),
        (a + 1, c + 1),
        (a + 1, c + 2),
    ];
    let messages = clicks
        .iter()
        .enumerate()
        .map(|(i, (user, campaign))| {
            let json = format!(
                r#"{{"event_id":"pane-probe-{run_id}-{n}-{i}","ts":{ts},"user_id":{user},"campaign_id":{campaign},"event_type":"click"}}"#
            );
            let event = eddy_core::parse_event(json.as_bytes()).expect("probes are valid");
            (format!("pane-probe-{n}-{i}"), json, event)
        })
        .collect();
    let probe = PaneProbe {
        user: a,
        campaign: c + 2,
        closes_at_ms,
    };
    (messages, probe)
}

/// Whether `user`'s recommendations over HTTP list `campaign` (a user without any: no).
async fn recommends(client: &reqwest::Client, url: &str, user: u64, campaign: u64) -> bool {
    let got: Result<eddy_core::api::RecommendationsResponse, _> = super::get(
        client,
        &format!("{url}/v1/users/{user}/recommendations"),
        &Vec::<(String, String)>::new(),
    )
    .await;
    got.is_ok_and(|r| r.recommendations.iter().any(|x| x.campaign_id == campaign))
}

/// Polls the recommendations of every similarity probe whose pane can have closed, every
/// 20 ms, until each is visible (or 30 s after `producing` ends plus one pane): the freshness
/// of similarity and recommendations, ms from the moment the pane could close to visible
/// over HTTP. Returns the histogram and the probes seen.
pub(super) async fn poll_panes(
    url: String,
    sent: PaneProbes,
    producing: Arc<AtomicBool>,
    window_ms: i64,
) -> (Histogram<u64>, u64) {
    let client = reqwest::Client::new();
    let mut h = Histogram::<u64>::new(3).expect("valid sigfig");
    let mut seen: Vec<bool> = Vec::new();
    let mut ended: Option<Instant> = None;
    let patience = Duration::from_secs(30) + Duration::from_millis(window_ms.max(0) as u64);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let probes = sent.lock().expect("not poisoned").clone();
        seen.resize(probes.len(), false);
        if !producing.load(Ordering::SeqCst) {
            let since = *ended.get_or_insert_with(Instant::now);
            if seen.iter().all(|s| *s) || since.elapsed() > patience {
                break;
            }
        }
        // Every probe whose pane can have closed and that is not seen yet (one that is never
        // seen does not hold the others back).
        for (i, p) in probes.iter().enumerate() {
            if seen[i] || eddy_core::now_ms() < p.closes_at_ms {
                continue;
            }
            if recommends(&client, &url, p.user, p.campaign).await {
                let ms = (eddy_core::now_ms() - p.closes_at_ms).max(1) as u64;
                h.record(ms).ok();
                seen[i] = true;
            }
        }
    }
    (h, seen.iter().filter(|s| **s).count() as u64)
}
