//! Operator status: each `eddy run` (and `eddy replay`) process publishes its
//! [`ProcessStatus`] into Redis every second ([`spawn_publisher`]); `eddy status` reads every
//! process's record from the query server's `GET /v1/status` and shows one screen
//! ([`StatusArgs::run`]), `--watch` to refresh it, `--json` for scripts.

use clap::Args;
use eddy_core::api::{ProcessEntry, ProcessIdentity, ProcessStatus, StatusResponse};
use eddy_core::config::RedisConfig;
use eddy_core::{Config, Metrics};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a process publishes its status record.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the thread that publishes `identity`'s status, digested from `metrics`, into the
/// Redis of `redis` every [`PUBLISH_INTERVAL`] until `stop` is set (then once more, so the
/// last record holds the final figures). A failed write is logged (once per run of failures)
/// and tried again at the next interval: status never stops the pipeline.
pub fn spawn_publisher(
    redis: &RedisConfig,
    identity: ProcessIdentity,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, eddy_storage::StorageError> {
    let client = eddy_storage::redis_client(redis)?;
    let prefix = redis.prefix.clone();
    Ok(std::thread::Builder::new()
        .name("eddy-status".into())
        .spawn(move || {
            let mut con: Option<redis::Connection> = None;
            let mut previous: Option<ProcessStatus> = None;
            let mut failing = false;
            loop {
                let last = stop.load(Ordering::SeqCst);
                let status = ProcessStatus::digest(
                    identity.clone(),
                    &metrics,
                    previous.as_ref(),
                    eddy_core::api::rss_bytes(),
                    eddy_core::now_ms(),
                );
                let written = match con.as_mut() {
                    Some(c) => Ok(c),
                    None => eddy_storage::redis_connection(&client).map(|c| con.insert(c)),
                }
                .map_err(eddy_storage::StorageError::from)
                .and_then(|c| eddy_storage::status::publish_status(c, &prefix, &status));
                match written {
                    Ok(()) => {
                        if failing {
                            tracing::info!("status record published again");
                        }
                        failing = false;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot publish the status record");
                        }
                        failing = true;
                        con = None;
                    }
                }
                previous = Some(status);
                if last {
                    return;
                }
                let next = Instant::now() + PUBLISH_INTERVAL;
                while Instant::now() < next && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
        .expect("spawning the status thread"))
}

/// `eddy status`: every pipeline process's lag, watermark, checkpoints, sinks and dead
/// letters, from the query server's `GET /v1/status`.
#[derive(Args, Clone, Debug)]
pub struct StatusArgs {
    /// Query server to ask (default: `http://` + `server.listen`).
    #[arg(long)]
    pub url: Option<String>,
    /// Refresh every second until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Print the JSON answer (one line per refresh with `--watch`).
    #[arg(long)]
    pub json: bool,
}

/// `eddy status` could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The request failed or the answer did not decode.
    #[error("GET {url}: {source}")]
    Http {
        /// The status URL.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("GET {url}: HTTP {status}: {body}")]
    Status {
        /// The status URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The answer's body.
        body: String,
    },
    /// No async runtime could be built.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

impl StatusArgs {
    /// The `GET /v1/status` URL.
    pub fn status_url(&self, cfg: &Config) -> String {
        let base = match &self.url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", cfg.server.listen),
        };
        format!("{base}/v1/status")
    }

    /// Prints the screen (or JSON) once, or every second with `--watch` until `stop`.
    pub fn run(&self, cfg: &Config, stop: &AtomicBool) -> Result<(), StatusError> {
        let url = self.status_url(cfg);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| StatusError::Http {
                url: url.clone(),
                source,
            })?;
        loop {
            let answer = rt.block_on(fetch(&client, &url));
            match (answer, self.watch) {
                (Ok(status), _) => {
                    if self.json {
                        println!(
                            "{}",
                            serde_json::to_string(&status).expect("a status serializes")
                        );
                    } else {
                        if self.watch {
                            print!("\x1b[2J\x1b[H");
                        }
                        print!("{}", render(&url, &status));
                    }
                }
                (Err(e), false) => return Err(e),
                (Err(e), true) => {
                    if !self.json {
                        print!("\x1b[2J\x1b[H");
                    }
                    eprintln!("{e}");
                }
            }
            if !self.watch {
                return Ok(());
            }
            let next = Instant::now() + PUBLISH_INTERVAL;
            while Instant::now() < next {
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<StatusResponse, StatusError> {
    let http = |source| StatusError::Http {
        url: url.to_owned(),
        source,
    };
    let resp = client.get(url).send().await.map_err(http)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(StatusError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
            body: resp.text().await.unwrap_or_default(),
        });
    }
    resp.json().await.map_err(http)
}

/// `ms` as `1.2 s`, `3 m 04 s`, `2 h 05 m`.
fn duration(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 10_000 => format!("{:.1} s", ms as f64 / 1000.0),
        0..3600 => format!("{} m {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} m", s / 3600, (s % 3600) / 60),
    }
}

fn per_key(counts: &std::collections::BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One process's lines of the screen.
fn render_process(out: &mut String, p: &ProcessEntry, now_ms: i64) {
    let s = &p.status;
    let id = &s.identity;
    let _ = writeln!(
        out,
        "process {} ({}{}) on {} pid {}, up {}, record {} old{}",
        id.process,
        id.mode,
        id.version
            .as_deref()
            .map(|v| format!(", version {v}"))
            .unwrap_or_default(),
        if id.host.is_empty() { "?" } else { &id.host },
        id.pid,
        duration(now_ms.saturating_sub(id.started_at_ms)),
        duration(p.age_ms),
        if p.stale {
            "  STALE: not publishing"
        } else {
            ""
        }
    );
    let watermark = match (s.watermark_ms, s.watermark_delay_ms) {
        (Some(w), Some(d)) => format!("{w} ({} behind the wall clock)", duration(d)),
        _ => "none yet".into(),
    };
    let rate = s
        .events_in_per_second
        .map_or(String::new(), |r| format!(" ({r:.0}/s)"));
    let _ = writeln!(
        out,
        "  events in {}{rate}, late {}; watermark {watermark}",
        s.events_in, s.late_events
    );
    let total: i64 = s.partitions.iter().map(|p| p.lag_records).sum();
    let lag = s
        .partitions
        .iter()
        .map(|p| match p.lag_ms {
            Some(ms) if p.lag_records > 0 => {
                format!("p{} {} ({})", p.partition, p.lag_records, duration(ms))
            }
            _ => format!("p{} {}", p.partition, p.lag_records),
        })
        .collect::<Vec<_>>()
        .join("  ");
    let _ = writeln!(
        out,
        "  lag: {total} records{}{lag}",
        if lag.is_empty() { "" } else { ": " }
    );
    let c = &s.checkpoint;
    let last = match (c.age_ms, c.epoch, c.duration_ms) {
        (Some(a), Some(e), Some(d)) => format!("{} ago (epoch {e}, saved in {d} ms)", duration(a)),
        (Some(a), ..) => format!("{} ago", duration(a)),
        _ => "never".into(),
    };
    let resume = c
        .resume_offsets
        .iter()
        .map(|r| format!("p{} {}", r.partition, r.offset))
        .collect::<Vec<_>>()
        .join("  ");
    let _ = writeln!(
        out,
        "  checkpoints: {} committed, {} failed, last {last}{}{resume}",
        c.committed,
        c.failures,
        if resume.is_empty() {
            ""
        } else {
            "; resume at "
        }
    );
    for sink in &s.sinks {
        let _ = writeln!(
            out,
            "  sink {}: {:?}, {} writes ({} mean, last {}), {} errors",
            sink.sink,
            sink.state,
            sink.writes,
            sink.mean_write_ms
                .map_or("-".into(), |m| format!("{m:.1} ms")),
            sink.freshness_ms
                .map_or("never".into(), |f| format!("{} ago", duration(f))),
            sink.errors
        );
        if let (Some(e), Some(at)) = (&sink.last_error, sink.last_error_ms) {
            let _ = writeln!(
                out,
                "    last error {} ago: {e}",
                duration(now_ms.saturating_sub(at))
            );
        }
    }
    let _ = writeln!(
        out,
        "  dead letters: {}; dropped: {}",
        per_key(&s.dead_letters),
        per_key(&s.dead_letters_dropped)
    );
    if let Some(rss) = s.rss_bytes {
        let _ = writeln!(out, "  memory: {:.0} MiB", rss as f64 / (1024.0 * 1024.0));
    }
    if let Some(r) = &s.replay {
        let _ = writeln!(
            out,
            "  replay: {:.1} %, {:.0} records/s, {}",
            r.progress_ratio * 100.0,
            r.records_per_second,
            r.eta_seconds.map_or("end unknown".into(), |e| format!(
                "{} to go",
                duration(e * 1000)
            ))
        );
    }
}

/// The screen of `eddy status`.
pub fn render(url: &str, status: &StatusResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "eddy status: {url} (source {}, {} process{}, serving version {})",
        status.source,
        status.processes.len(),
        if status.processes.len() == 1 {
            ""
        } else {
            "es"
        },
        status
            .serving_version
            .as_deref()
            .unwrap_or(eddy_core::version::BASE)
    );
    if status.processes.is_empty() {
        let _ = writeln!(
            out,
            "no process has published a status record (is `eddy run` running with this Redis \
             prefix?)"
        );
    }
    for p in &status.processes {
        render_process(&mut out, p, status.now_ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_core::api::Store;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(1_234), "1.2 s");
        assert_eq!(duration(184_000), "3 m 04 s");
        assert_eq!(duration(7_500_000), "2 h 05 m");
    }

    #[test]
    fn the_screen_names_every_figure() {
        let metrics = Metrics::new();
        metrics.watermark_ms.set(9_000);
        metrics.dead_letter("bad_json");
        metrics.sink_failed(
            &eddy_core::metrics::SinkLabel {
                sink: "redis".into(),
            },
            "connection refused",
        );
        metrics
            .consumer_lag
            .get_or_create(&eddy_core::metrics::PartitionLabel { partition: 2 })
            .set(7);
        metrics
            .consumer_lag_ms
            .get_or_create(&eddy_core::metrics::PartitionLabel { partition: 2 })
            .set(3_000);
        let identity = ProcessIdentity {
            process: 0,
            mode: "run".into(),
            host: "h1".into(),
            pid: 42,
            started_at_ms: 0,
            version: None,
        };
        let record = ProcessStatus::digest(identity, &metrics, None, None, 10_000);
        let screen = render(
            "http://x/v1/status",
            &StatusResponse::at(20_000, Store::Redis, vec![record]),
        );
        for needle in [
            "process 0 (run) on h1 pid 42",
            "STALE",
            "watermark 9000 (1.0 s behind",
            "lag: 7 records: p2 7 (3.0 s)",
            "checkpoints: 0 committed, 0 failed, last never\n",
            "dead letters: bad_json 1; dropped: none",
            "sink redis: Failing, 0 writes (- mean, last never), 1 errors",
            "ago: connection refused",
        ] {
            assert!(screen.contains(needle), "{needle:?} not in\n{screen}");
        }
        let empty = render("u", &StatusResponse::at(0, Store::Redis, Vec::new()));
        assert!(empty.contains("no process has published"));
    }
}
