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

/// When each probe was sent, in order.
pub(super) type Probes = Arc<Mutex<Vec<Instant>>>;

/// The `n`-th probe of run `run_id`: its key, its JSON, and the event it encodes.
pub(super) fn message(run_id: u64, n: u64) -> (String, String, Event) {
    let json = format!(
        r#"{{"event_id":"probe-{run_id}-{n}","ts":{},"user_id":0,"campaign_id":{PROBE_CAMPAIGN},"event_type":"view"}}"#,
        eddy_core::now_ms()
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
/// the freshness histogram (ms) and the probes seen.
pub(super) async fn poll(
    url: String,
    sent: Probes,
    producing: Arc<AtomicBool>,
    from: i64,
    timeline: Arc<Mutex<Timeline>>,
) -> (Histogram<u64>, u64) {
    let client = reqwest::Client::new();
    let mut h = Histogram::<u64>::new(3).expect("valid sigfig");
    let mut seen = 0usize;
    let mut ended: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tick.tick().await;
        if !producing.load(Ordering::SeqCst) {
            let since = *ended.get_or_insert_with(Instant::now);
            let all = sent.lock().expect("not poisoned").len();
            if seen >= all || since.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
        let Some(count) = probe_count(&client, &url, from).await else {
            continue;
        };
        let now = Instant::now();
        let sent = sent.lock().expect("not poisoned");
        while seen < (count as usize).min(sent.len()) {
            let ms = (now - sent[seen]).as_millis().max(1) as u64;
            h.record(ms).ok();
            timeline.lock().expect("not poisoned").fresh(sent[seen], ms);
            seen += 1;
        }
    }
    (h, seen as u64)
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
