//! What a load run measured ([`Report`]): totals, latency percentiles, the verification
//! verdict and the per-second time series, as a table or an SVG chart. Built by the runner
//! (feature `runner`), read back from its JSON by the benchmark report.

use crate::plot::{Panel, Scale, Series};
use serde::{Deserialize, Serialize};

/// Latency percentiles of one histogram.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

/// What a run measured (written as JSON by `eddy load-gen --report`, read back by
/// `bench_report`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Messages produced, probes included.
    pub produced: u64,
    /// Of which malformed.
    pub malformed: u64,
    /// Target rate (0 = as fast as possible).
    pub target_rate: f64,
    /// Produced messages per second, from the start to the last acknowledgement.
    pub achieved_rate: f64,
    /// Seconds from the start to the last acknowledgement.
    pub elapsed_secs: f64,
    /// Scheduled-to-acknowledged latency, microseconds.
    pub produce_latency_us: Percentiles,
    /// Probe sent to visible over HTTP, milliseconds (with a query server).
    pub freshness_ms: Option<Percentiles>,
    /// Probe acknowledged by the broker to visible over HTTP, milliseconds (1 when visible
    /// before its acknowledgement came back): `freshness_ms` without the produce path, i.e.
    /// the broker's fetch path, eddy, its sinks and the query server.
    #[serde(default)]
    pub ack_to_visible_ms: Option<Percentiles>,
    /// Probes sent.
    pub probes_sent: u64,
    /// Probes seen over HTTP.
    pub probes_seen: u64,
    /// Similarity probes (one per pane): from the moment their pane could close (its end plus
    /// the lateness) to their recommendation visible over HTTP, milliseconds.
    #[serde(default)]
    pub similarity_freshness_ms: Option<Percentiles>,
    /// Similarity probes sent.
    #[serde(default)]
    pub similarity_probes_sent: u64,
    /// Similarity probes seen over HTTP.
    #[serde(default)]
    pub similarity_probes_seen: u64,
    /// Events the pipeline ruled late (found on the dead-letter topic), with `verify`.
    pub late_events: Option<u64>,
    /// `Some(true)` when `verify` ran and passed.
    pub verified: Option<bool>,
    /// Largest consumer lag sampled from the pipeline's metrics, messages.
    pub max_consumer_lag: Option<i64>,
    /// One point per second of the run, including the drain after the last message.
    pub timeline: Vec<Point>,
}

impl Report {
    /// The target rate as shown: `"10000/s"`, or `max` when producing as fast as possible.
    fn target(&self, max: &str) -> String {
        if self.target_rate > 0.0 {
            format!("{:.0}/s", self.target_rate)
        } else {
            max.into()
        }
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let row = |name: &str, unit: &str, p: &Percentiles| {
            format!(
                "{name:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {unit}\n",
                p.count, p.p50, p.p90, p.p99, p.p999, p.max
            )
        };
        let mut out = format!(
            "produced {} messages ({} malformed) in {:.2} s: {:.0} msg/s (target {})\n",
            self.produced,
            self.malformed,
            self.elapsed_secs,
            self.achieved_rate,
            self.target("max")
        );
        out.push_str(&format!(
            "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "", "count", "p50", "p90", "p99", "p99.9", "max"
        ));
        out.push_str(&row("produce→ack", "µs", &self.produce_latency_us));
        if let Some(f) = &self.freshness_ms {
            out.push_str(&row("event→visible (HTTP)", "ms", f));
            if let Some(a) = &self.ack_to_visible_ms {
                out.push_str(&row("ack→visible (HTTP)", "ms", a));
            }
            out.push_str(&format!(
                "probes seen {}/{}\n",
                self.probes_seen, self.probes_sent
            ));
        }
        if let Some(f) = &self.similarity_freshness_ms {
            out.push_str(&row("pane close→similar", "ms", f));
            out.push_str(&format!(
                "similarity probes seen {}/{}\n",
                self.similarity_probes_seen, self.similarity_probes_sent
            ));
        }
        if let Some(v) = self.verified {
            out.push_str(&format!(
                "verify: {} ({} events ruled late by the pipeline)\n",
                if v { "OK" } else { "FAILED" },
                self.late_events.unwrap_or(0)
            ));
        }
        out
    }

    /// The time series as an SVG chart: throughput, latency percentiles per second, lag.
    pub fn plot_svg(&self) -> String {
        let title = format!(
            "eddy load-gen: {} msgs at {} ({:.0} msg/s achieved)",
            self.produced,
            self.target("max rate"),
            self.achieved_rate
        );
        crate::plot::svg(&title, &panels(&self.timeline, self.target_rate))
    }
}

/// One second of a run, as reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// Seconds since the start.
    pub second: u32,
    /// Messages handed to the producer in this second.
    pub sent: u64,
    /// Messages acknowledged by the broker in this second.
    pub acked: u64,
    /// Produce→ack latency of the messages scheduled in this second, µs: p50, p99, max.
    pub produce_us: Option<[u64; 3]>,
    /// Freshness of the probes sent in this second, ms: p50, p99, max.
    pub freshness_ms: Option<[u64; 3]>,
    /// The pipeline's consumer lag (messages, summed over partitions), sampled in this second.
    pub consumer_lag: Option<i64>,
    /// Wall clock minus the pipeline's event-time watermark, ms, sampled in this second.
    pub watermark_lag_ms: Option<i64>,
}

/// The report's chart panels: throughput, latency percentiles (log scale) and lag.
pub fn panels(points: &[Point], target_rate: f64) -> Vec<Panel> {
    let series = |name: &str, f: &dyn Fn(&Point) -> Option<f64>| Series {
        name: name.into(),
        points: points
            .iter()
            .filter_map(|p| f(p).map(|y| (p.second as f64 + 0.5, y)))
            .collect(),
    };
    let mut throughput = vec![
        series("acked/s", &|p| Some(p.acked as f64)),
        series("sent/s", &|p| Some(p.sent as f64)),
    ];
    if target_rate > 0.0 {
        throughput.push(series("target", &|_| Some(target_rate)));
    }
    let ms = |v: u64| v as f64 / 1000.0;
    vec![
        Panel {
            title: "throughput".into(),
            unit: "msg/s".into(),
            scale: Scale::Linear,
            series: throughput,
        },
        Panel {
            title: "latency by second".into(),
            unit: "ms, log".into(),
            scale: Scale::Log,
            series: vec![
                series("event→visible p50", &|p| {
                    p.freshness_ms.map(|f| f[0] as f64)
                }),
                series("event→visible p99", &|p| {
                    p.freshness_ms.map(|f| f[1] as f64)
                }),
                series("event→visible max", &|p| {
                    p.freshness_ms.map(|f| f[2] as f64)
                }),
                series("produce→ack p50", &|p| p.produce_us.map(|f| ms(f[0]))),
                series("produce→ack p99", &|p| p.produce_us.map(|f| ms(f[1]))),
            ],
        },
        Panel {
            title: "pipeline lag".into(),
            unit: "messages / ms".into(),
            scale: Scale::Linear,
            series: vec![
                series("consumer lag (msgs)", &|p| p.consumer_lag.map(|l| l as f64)),
                series("wall − watermark (ms)", &|p| {
                    p.watermark_lag_ms.map(|l| l as f64)
                }),
            ],
        },
    ]
}
