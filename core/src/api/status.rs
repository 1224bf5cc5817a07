//! `GET /v1/status` and `eddy status`: what each pipeline process says about itself. A process
//! digests its own [`Metrics`] into a [`ProcessStatus`] every second ([`ProcessStatus::digest`]);
//! `eddy run` publishes it into Redis (`eddy_storage::status`), the query server answers the
//! records of every process ([`StatusResponse`]), and the demo answers its own digest.

use super::Store;
use crate::Metrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A record older than this is `stale` in a [`StatusResponse`] (its process stopped
/// publishing: exited, hung, or cut off from Redis).
pub const STALE_AFTER_MS: i64 = 5_000;

/// Who publishes a [`ProcessStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProcessIdentity {
    /// Index of the process in the timely cluster (0 for a single process).
    pub process: usize,
    /// What the process runs: `run`, `demo` or `replay`.
    pub mode: String,
    /// Host name (from `HOSTNAME`, else `/etc/hostname`; empty if neither).
    pub host: String,
    /// Operating-system process id.
    pub pid: u32,
    /// Wall-clock ms when the process started.
    pub started_at_ms: i64,
    /// The output version the process writes (`eddy_core::version`); absent for the base
    /// outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl ProcessIdentity {
    /// This process: `process` of the cluster, running `mode`, started now.
    pub fn this_process(process: usize, mode: &str) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        Self {
            process,
            mode: mode.to_owned(),
            host,
            pid: std::process::id(),
            started_at_ms: crate::now_ms(),
            version: None,
        }
    }

    /// This identity, writing the output `version` (`None` for base).
    pub fn writing(self, version: &crate::version::Version) -> Self {
        Self {
            version: version.serving_value().map(str::to_owned),
            ..self
        }
    }
}

/// Consumer lag of one source partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartitionStatus {
    /// The partition.
    pub partition: i32,
    /// Records behind the partition's end (high watermark minus position).
    pub lag_records: i64,
    /// Lag in time: while behind, ms from the Kafka timestamp of the last record read to
    /// when the lag was measured; 0 when caught up; `null` when behind before any record was
    /// read.
    #[schema(required = true)]
    pub lag_ms: Option<i64>,
}

/// Checkpoints of one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointStatus {
    /// Checkpoints committed since the process started.
    pub committed: u64,
    /// Checkpoint saves that failed since the process started.
    pub failures: u64,
    /// Wall-clock ms of the last committed checkpoint, `null` before the first.
    #[schema(required = true)]
    pub last_ms: Option<i64>,
    /// Ms from the last checkpoint to this record, `null` before the first.
    #[schema(required = true)]
    pub age_ms: Option<i64>,
    /// How long saving the last checkpoint took, ms (`null` before the first).
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
    /// Epoch of the last checkpoint (`null` before the first).
    #[schema(required = true)]
    pub epoch: Option<u64>,
    /// Where a restart resumes reading, per partition, from the last checkpoint.
    pub resume_offsets: Vec<ResumeOffset>,
}

/// Where a restart resumes reading one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResumeOffset {
    /// The partition.
    pub partition: i32,
    /// First offset a restart reads.
    pub offset: i64,
}

/// Whether a sink is writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SinkState {
    /// No failed write since the previous record (or no write yet).
    Ok,
    /// Writes failed since the previous record (they are retried).
    Failing,
}

/// One sink path of a process (`redis`, `clickhouse`, `memory`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SinkStatus {
    /// The sink.
    pub sink: String,
    /// `ok`, or `failing` when writes failed since the previous record.
    pub state: SinkState,
    /// Writes completed since the process started.
    pub writes: u64,
    /// Failed writes (each retried) since the process started.
    pub errors: u64,
    /// Mean write latency since the process started, ms (`null` before the first write).
    #[schema(required = true)]
    pub mean_write_ms: Option<f64>,
    /// Wall-clock ms of the last completed write (`null` before the first).
    #[schema(required = true)]
    pub last_write_ms: Option<i64>,
    /// `updated_at_ms - last_write_ms` of the record: how stale what this sink serves is
    /// (`null` before the first write).
    #[schema(required = true)]
    pub freshness_ms: Option<i64>,
    /// The last failed write's error, `null` if none failed.
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// Wall-clock ms of the last failed write, `null` if none failed.
    #[schema(required = true)]
    pub last_error_ms: Option<i64>,
}

/// Progress of `eddy replay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplayStatus {
    /// Fraction of the plan's offsets read, 0 to 1.
    pub progress_ratio: f64,
    /// Records read per second over the last progress interval.
    pub records_per_second: f64,
    /// Estimated seconds to the end of the plan, `null` if unknown.
    #[schema(required = true)]
    pub eta_seconds: Option<i64>,
}

/// What one pipeline process says about itself, digested from its [`Metrics`] (see
/// [`ProcessStatus::digest`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcessStatus {
    /// Who publishes it.
    #[serde(flatten)]
    pub identity: ProcessIdentity,
    /// Wall-clock ms of this record.
    pub updated_at_ms: i64,
    /// Valid events read since the process started.
    pub events_in: u64,
    /// Valid events read per second since the `previous` record of [`ProcessStatus::digest`]
    /// (`null` without one).
    #[schema(required = true)]
    pub events_in_per_second: Option<f64>,
    /// Events rejected since the process started because their window had closed.
    pub late_events: u64,
    /// Event-time watermark, ms (`null` before the first).
    #[schema(required = true)]
    pub watermark_ms: Option<i64>,
    /// `updated_at_ms - watermark_ms`: how far event time trails the wall clock.
    #[schema(required = true)]
    pub watermark_delay_ms: Option<i64>,
    /// Consumer lag per source partition read by this process.
    pub partitions: Vec<PartitionStatus>,
    /// Checkpoints.
    pub checkpoint: CheckpointStatus,
    /// Sink paths.
    pub sinks: Vec<SinkStatus>,
    /// Dead letters written since the process started, by reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Dead letters the dead-letter topic refused for good (logged and skipped), by reason.
    pub dead_letters_dropped: BTreeMap<String, u64>,
    /// Resident memory of the process, bytes (`null` where `/proc` is missing).
    #[schema(required = true)]
    pub rss_bytes: Option<u64>,
    /// Progress of a replay, `null` when the process is not replaying.
    #[schema(required = true)]
    pub replay: Option<ReplayStatus>,
}

/// One sample of the Prometheus text: name, labels, value.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    value: f64,
}

/// The samples of a Prometheus text exposition (comments skipped; label values are plain:
/// eddy's labels hold no quote or comma).
fn samples(text: &str) -> Vec<Sample<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match head.split_once('{') {
                None => (head, Vec::new()),
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}')?;
                    let labels = inner
                        .split(',')
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=')?;
                            Some((k, v.trim_matches('"')))
                        })
                        .collect();
                    (name, labels)
                }
            };
            Some(Sample {
                name,
                labels,
                value,
            })
        })
        .collect()
}

impl<'a> Sample<'a> {
    fn label(&self, key: &str) -> Option<&'a str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// Resident memory of this process from `/proc/self/status` (`VmRSS`), bytes.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl ProcessStatus {
    /// The status of the process `identity` from its `metrics` at wall-clock `now_ms`, with
    /// the resident memory `rss_bytes`. A sink is `failing` when its error count grew since
    /// `previous` (the record published before; without one, when it has any error). A
    /// watermark or checkpoint time of 0 means none yet.
    pub fn digest(
        identity: ProcessIdentity,
        metrics: &Metrics,
        previous: Option<&ProcessStatus>,
        rss_bytes: Option<u64>,
        now_ms: i64,
    ) -> Self {
        let text = metrics.render();
        let all = samples(&text);
        let scalar = |name: &str| {
            all.iter()
                .find(|s| s.name == name && s.labels.is_empty())
                .map(|s| s.value)
                .unwrap_or(0.0)
        };
        let by_label = |name: &str, label: &str| -> BTreeMap<String, f64> {
            all.iter()
                .filter(|s| s.name == name)
                .filter_map(|s| Some((s.label(label)?.to_owned(), s.value)))
                .collect()
        };
        let watermark_ms = Some(scalar("eddy_watermark_ms") as i64).filter(|w| *w != 0);
        let last_ms = Some(scalar("eddy_last_checkpoint_ms") as i64).filter(|t| *t != 0);
        let lag_ms = by_label("eddy_consumer_lag_ms", "partition");
        let mut partitions: Vec<PartitionStatus> = by_label("eddy_consumer_lag", "partition")
            .into_iter()
            .filter_map(|(p, lag)| {
                Some(PartitionStatus {
                    partition: p.parse().ok()?,
                    lag_records: lag as i64,
                    lag_ms: lag_ms.get(&p).map(|ms| *ms as i64),
                })
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        let mut resume_offsets: Vec<ResumeOffset> =
            by_label("eddy_checkpoint_resume_offset", "partition")
                .into_iter()
                .filter_map(|(p, offset)| {
                    Some(ResumeOffset {
                        partition: p.parse().ok()?,
                        offset: offset as i64,
                    })
                })
                .collect();
        resume_offsets.sort_by_key(|r| r.partition);
        let writes = by_label("eddy_sink_write_seconds_count", "sink");
        let seconds = by_label("eddy_sink_write_seconds_sum", "sink");
        let errors = by_label("eddy_sink_errors_total", "sink");
        let last_writes = by_label("eddy_sink_last_write_ms", "sink");
        let last_errors = metrics.sink_last_errors();
        let mut names: Vec<&String> = writes
            .keys()
            .chain(errors.keys())
            .chain(last_errors.keys())
            .collect();
        names.sort();
        names.dedup();
        let sinks = names
            .into_iter()
            .map(|sink| {
                let n = writes.get(sink).copied().unwrap_or(0.0);
                let errors = errors.get(sink).copied().unwrap_or(0.0) as u64;
                let before = match previous {
                    Some(p) => p
                        .sinks
                        .iter()
                        .find(|s| &s.sink == sink)
                        .map_or(0, |s| s.errors),
                    None => 0,
                };
                SinkStatus {
                    sink: sink.clone(),
                    state: if errors > before {
                        SinkState::Failing
                    } else {
                        SinkState::Ok
                    },
                    writes: n as u64,
                    errors,
                    mean_write_ms: (n > 0.0)
                        .then(|| seconds.get(sink).copied().unwrap_or(0.0) * 1000.0 / n),
                    last_write_ms: last_writes.get(sink).map(|t| *t as i64),
                    freshness_ms: last_writes
                        .get(sink)
                        .map(|t| now_ms.saturating_sub(*t as i64)),
                    last_error: last_errors.get(sink).map(|(_, e)| e.clone()),
                    last_error_ms: last_errors.get(sink).map(|(t, _)| *t),
                }
            })
            .collect();
        let counts = |name: &str| -> BTreeMap<String, u64> {
            by_label(name, "reason")
                .into_iter()
                .map(|(r, v)| (r, v as u64))
                .collect()
        };
        let replaying = all
            .iter()
            .any(|s| s.name == "eddy_replay_offsets_total" && s.value > 0.0);
        let replay = replaying.then(|| ReplayStatus {
            progress_ratio: scalar("eddy_replay_progress_ratio"),
            records_per_second: scalar("eddy_replay_records_per_second"),
            eta_seconds: Some(scalar("eddy_replay_eta_seconds") as i64).filter(|e| *e >= 0),
        });
        let events_in = scalar("eddy_events_in_total") as u64;
        let events_in_per_second = previous.filter(|p| now_ms > p.updated_at_ms).map(|p| {
            events_in.saturating_sub(p.events_in) as f64 * 1000.0
                / (now_ms - p.updated_at_ms) as f64
        });
        Self {
            identity,
            updated_at_ms: now_ms,
            events_in,
            events_in_per_second,
            late_events: scalar("eddy_late_events_total") as u64,
            watermark_ms,
            watermark_delay_ms: watermark_ms.map(|w| now_ms.saturating_sub(w)),
            partitions,
            checkpoint: CheckpointStatus {
                committed: scalar("eddy_checkpoints_total") as u64,
                failures: scalar("eddy_checkpoint_failures_total") as u64,
                last_ms,
                age_ms: last_ms.map(|t| now_ms.saturating_sub(t)),
                duration_ms: last_ms.map(|_| scalar("eddy_checkpoint_duration_ms") as i64),
                epoch: last_ms.map(|_| scalar("eddy_checkpoint_epoch") as u64),
                resume_offsets,
            },
            sinks,
            dead_letters: counts("eddy_dead_letters_total"),
            dead_letters_dropped: counts("eddy_dead_letters_dropped_total"),
            rss_bytes,
            replay,
        }
    }
}

/// One process in a [`StatusResponse`]: its last record and how old it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcessEntry {
    /// The process's last record.
    #[serde(flatten)]
    pub status: ProcessStatus,
    /// `now_ms - updated_at_ms` of the answer.
    pub age_ms: i64,
    /// True when the record is older than [`STALE_AFTER_MS`] (5 s): the process stopped
    /// publishing.
    pub stale: bool,
}

/// Body of `GET /v1/status`: the last record of every pipeline process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusResponse {
    /// Wall-clock ms of the answer.
    pub now_ms: i64,
    /// Where the records come from: `redis` (published by `eddy run` processes) or `memory`
    /// (the demo's own metrics).
    pub source: Store,
    /// One entry per process, by process index (then mode).
    pub processes: Vec<ProcessEntry>,
    /// The output version the query servers serve (`eddy promote`), when it is not the base
    /// outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_version: Option<String>,
}

impl StatusResponse {
    /// The answer at `now_ms` over `records` (sorted by process index, then mode; ages and
    /// staleness computed).
    pub fn at(now_ms: i64, source: Store, mut records: Vec<ProcessStatus>) -> Self {
        records.sort_by(|a, b| {
            (a.identity.process, &a.identity.mode, &a.identity.version).cmp(&(
                b.identity.process,
                &b.identity.mode,
                &b.identity.version,
            ))
        });
        Self {
            now_ms,
            source,
            processes: records
                .into_iter()
                .map(|status| {
                    let age_ms = now_ms.saturating_sub(status.updated_at_ms);
                    ProcessEntry {
                        status,
                        age_ms,
                        stale: age_ms > STALE_AFTER_MS,
                    }
                })
                .collect(),
            serving_version: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{PartitionLabel, SinkLabel};

    fn identity() -> ProcessIdentity {
        ProcessIdentity {
            process: 1,
            mode: "run".into(),
            host: "h".into(),
            pid: 7,
            started_at_ms: 1_000,
            version: None,
        }
    }

    #[test]
    fn digests_the_metrics() {
        let m = Metrics::new();
        let fresh = ProcessStatus::digest(identity(), &m, None, None, 10_000);
        assert_eq!(fresh.watermark_ms, None);
        assert_eq!(fresh.checkpoint.last_ms, None);
        assert!(fresh.sinks.is_empty() && fresh.partitions.is_empty());
        assert_eq!(fresh.replay, None);

        m.events_in.inc_by(5);
        m.late_events.inc_by(2);
        m.watermark_ms.set(9_000);
        m.last_checkpoint_ms.set(8_000);
        m.checkpoint_duration_ms.set(12);
        m.checkpoint_epoch.set(30);
        m.checkpoint_resume_offset
            .get_or_create(&PartitionLabel { partition: 0 })
            .set(77);
        m.checkpoints.inc_by(3);
        m.checkpoint_failures.inc();
        for (p, lag) in [(3, 40), (0, 10)] {
            m.consumer_lag
                .get_or_create(&PartitionLabel { partition: p })
                .set(lag);
        }
        m.consumer_lag_ms
            .get_or_create(&PartitionLabel { partition: 3 })
            .set(1_500);
        let redis = SinkLabel {
            sink: "redis".into(),
        };
        m.sink_write_seconds.get_or_create(&redis).observe(0.002);
        m.sink_write_seconds.get_or_create(&redis).observe(0.004);
        m.sink_last_write_ms.get_or_create(&redis).set(9_500);
        m.sink_failed(&redis, "connection refused");
        m.dead_letter("bad_json");
        m.dead_letter("bad_json");
        m.dead_letter("late");
        let s = ProcessStatus::digest(identity(), &m, None, Some(4096), 10_000);
        assert_eq!((s.events_in, s.late_events), (5, 2));
        assert_eq!(
            (s.watermark_ms, s.watermark_delay_ms),
            (Some(9_000), Some(1_000))
        );
        assert_eq!(
            s.checkpoint,
            CheckpointStatus {
                committed: 3,
                failures: 1,
                last_ms: Some(8_000),
                age_ms: Some(2_000),
                duration_ms: Some(12),
                epoch: Some(30),
                resume_offsets: vec![ResumeOffset {
                    partition: 0,
                    offset: 77
                }]
            }
        );
        assert_eq!(
            s.partitions,
            vec![
                PartitionStatus {
                    partition: 0,
                    lag_records: 10,
                    lag_ms: None
                },
                PartitionStatus {
                    partition: 3,
                    lag_records: 40,
                    lag_ms: Some(1_500)
                }
            ]
        );
        assert_eq!(s.sinks.len(), 1);
        let sink = &s.sinks[0];
        assert_eq!(
            (sink.sink.as_str(), sink.writes, sink.errors),
            ("redis", 2, 1)
        );
        assert_eq!(sink.state, SinkState::Failing);
        assert!((sink.mean_write_ms.unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(sink.last_error.as_deref(), Some("connection refused"));
        assert_eq!(
            (sink.last_write_ms, sink.freshness_ms),
            (Some(9_500), Some(500))
        );
        assert!(sink.last_error_ms.is_some());
        assert_eq!(s.dead_letters["bad_json"], 2);
        assert_eq!(s.dead_letters["late"], 1);
        assert_eq!(s.rss_bytes, Some(4096));
        assert_eq!(s.events_in_per_second, None);
        // No new error since the previous record: ok again; 10 more events in 2 s.
        m.events_in.inc_by(10);
        let again = ProcessStatus::digest(identity(), &m, Some(&s), None, 12_000);
        assert_eq!(again.sinks[0].state, SinkState::Ok);
        assert_eq!(again.events_in_per_second, Some(5.0));
        // A replay shows its progress.
        m.replay_offsets_total
            .get_or_create(&PartitionLabel { partition: 0 })
            .set(100);
        m.replay_progress_ratio.set(0.5);
        m.replay_eta_seconds.set(-1);
        let r = ProcessStatus::digest(identity(), &m, None, None, 11_000).replay;
        assert_eq!(
            r.map(|r| (r.progress_ratio, r.eta_seconds)),
            Some((0.5, None))
        );
    }

    #[test]
    fn answers_age_and_staleness() {
        let m = Metrics::new();
        let old = ProcessStatus::digest(identity(), &m, None, None, 1_000);
        let new = ProcessStatus::digest(
            ProcessIdentity {
                process: 0,
                ..identity()
            },
            &m,
            None,
            None,
            9_000,
        );
        let r = StatusResponse::at(10_000, Store::Redis, vec![old, new]);
        let seen: Vec<_> = r
            .processes
            .iter()
            .map(|p| (p.status.identity.process, p.age_ms, p.stale))
            .collect();
        assert_eq!(seen, vec![(0, 1_000, false), (1, 9_000, true)]);
        // The wire form round-trips (identity flattened).
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["processes"][0]["pid"], 7);
        assert_eq!(serde_json::from_value::<StatusResponse>(json).unwrap(), r);
    }

    #[test]
    fn reads_this_process_rss() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
