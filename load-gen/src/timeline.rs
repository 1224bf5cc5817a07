//! Per-second measurements of a load run: messages sent and acknowledged, produce latency and
//! freshness percentiles, and the pipeline's consumer lag, for the report's time series and
//! plot.
//!
//! Latencies are filed under the second their message was *scheduled* (or their probe sent),
//! so a stall shows at the moment it hit the traffic, not when it cleared. Acknowledgements are
//! filed under the second they arrived: that is the throughput the broker sustained.

pub use crate::report::Point;
#[cfg(test)]
use crate::report::panels;
use hdrhistogram::Histogram;
use std::time::Instant;

#[derive(Debug)]
struct Second {
    sent: u64,
    acked: u64,
    produce_us: Histogram<u64>,
    fresh_ms: Histogram<u64>,
    consumer_lag: Option<i64>,
    watermark_lag_ms: Option<i64>,
}

impl Second {
    fn new() -> Self {
        Self {
            sent: 0,
            acked: 0,
            produce_us: Histogram::new(3).expect("valid sigfig"),
            fresh_ms: Histogram::new(3).expect("valid sigfig"),
            consumer_lag: None,
            watermark_lag_ms: None,
        }
    }
}

/// Per-second measurements since `start`.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    secs: Vec<Second>,
}

fn summary(h: &Histogram<u64>) -> Option<[u64; 3]> {
    (!h.is_empty()).then(|| [h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()])
}

impl Timeline {
    /// An empty timeline starting at `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            secs: Vec::new(),
        }
    }

    fn at(&mut self, t: Instant) -> &mut Second {
        let i = t.saturating_duration_since(self.start).as_secs() as usize;
        while self.secs.len() <= i {
            self.secs.push(Second::new());
        }
        &mut self.secs[i]
    }

    /// A message scheduled at `scheduled` was handed to the producer.
    pub fn sent(&mut self, scheduled: Instant) {
        self.at(scheduled).sent += 1;
    }

    /// A message scheduled at `scheduled` was acknowledged at `now`.
    pub fn acked(&mut self, scheduled: Instant, now: Instant) {
        let us = now.saturating_duration_since(scheduled).as_micros() as u64;
        self.at(scheduled).produce_us.record(us.max(1)).ok();
        self.at(now).acked += 1;
    }

    /// A probe sent at `sent` became visible after `ms`.
    pub fn fresh(&mut self, sent: Instant, ms: u64) {
        self.at(sent).fresh_ms.record(ms.max(1)).ok();
    }

    /// A sample of the pipeline's lag at `now`.
    pub fn lag(&mut self, now: Instant, consumer_lag: Option<i64>, watermark_lag_ms: Option<i64>) {
        let s = self.at(now);
        s.consumer_lag = consumer_lag.or(s.consumer_lag);
        s.watermark_lag_ms = watermark_lag_ms.or(s.watermark_lag_ms);
    }

    /// The series, one point per second.
    pub fn points(&self) -> Vec<Point> {
        self.secs
            .iter()
            .enumerate()
            .map(|(i, s)| Point {
                second: i as u32,
                sent: s.sent,
                acked: s.acked,
                produce_us: summary(&s.produce_us),
                freshness_ms: summary(&s.fresh_ms),
                consumer_lag: s.consumer_lag,
                watermark_lag_ms: s.watermark_lag_ms,
            })
            .collect()
    }
}

/// The pipeline's lag from its Prometheus text: the sum of `eddy_consumer_lag` over partitions
/// and `eddy_watermark_ms` (either `None` when absent).
pub fn parse_metrics(text: &str) -> (Option<i64>, Option<i64>) {
    let value = |line: &str| {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as i64)
    };
    let mut lag: Option<i64> = None;
    let mut watermark = None;
    for line in text.lines() {
        if line.starts_with("eddy_consumer_lag{") || line.starts_with("eddy_consumer_lag ") {
            if let Some(v) = value(line) {
                lag = Some(lag.unwrap_or(0) + v);
            }
        } else if line.starts_with("eddy_watermark_ms ") {
            watermark = value(line);
        }
    }
    (lag, watermark)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn files_latency_under_the_scheduled_second_and_acks_under_their_own() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0);
        let s = |ms| t0 + Duration::from_millis(ms);
        t.sent(s(100));
        t.sent(s(900));
        t.acked(s(100), s(300)); // 200 ms, acked in second 0
        t.acked(s(900), s(2_100)); // 1.2 s, acked in second 2
        t.fresh(s(1_500), 40);
        t.lag(s(1_600), Some(7), Some(1_200));
        let p = t.points();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].sent, p[0].acked, p[2].acked), (2, 1, 1));
        let [p50, _, max] = p[0].produce_us.unwrap();
        assert!((199_000..=201_000).contains(&p50), "{p50}");
        assert!((1_199_000..=1_201_000).contains(&max), "{max}");
        assert_eq!(p[1].freshness_ms, Some([40, 40, 40]));
        assert_eq!(
            (p[1].consumer_lag, p[1].watermark_lag_ms),
            (Some(7), Some(1_200))
        );
        assert_eq!(p[2].produce_us, None);
        assert_eq!(panels(&p, 2.0).len(), 3);
    }

    #[test]
    fn reads_lag_from_prometheus_text() {
        let text = "# HELP eddy_consumer_lag x\n# TYPE eddy_consumer_lag gauge\n\
                    eddy_consumer_lag{partition=\"0\"} 5\neddy_consumer_lag{partition=\"1\"} 7\n\
                    eddy_watermark_ms 1767225600000\neddy_events_in_total 3\n";
        assert_eq!(parse_metrics(text), (Some(12), Some(1_767_225_600_000)));
        assert_eq!(parse_metrics("eddy_events_in_total 3\n"), (None, None));
    }
}
