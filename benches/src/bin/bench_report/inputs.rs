//! Reading what the suite wrote: JSON lines and files as typed records, criterion's estimates,
//! wrk's text output, and a description of the machine.

use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;

/// The records of a JSON-lines file (lines that are not a record are skipped; a missing file
/// has none).
pub fn json_lines<T: DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A JSON file as `T`, if it exists and fits.
pub fn json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// A value as JSON text (`null` for `None`, `12.0` for a whole float), as the report shows
/// the numbers the runs wrote.
pub fn js<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A command's trimmed standard output (empty when it cannot run).
pub fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Cores, CPU model, memory, kernel and compiler.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0 / 1024.0);
    format!(
        "{} cores ({model}), {mem_gib:.1} GiB, {}, {}",
        sh("nproc", &[]),
        sh("uname", &["-sr"]),
        sh("rustc", &["-V"])
    )
}

/// A criterion result: (mean ns, lower, upper, elements).
pub struct Crit {
    pub ns: f64,
    pub lo: f64,
    pub hi: f64,
    pub elements: f64,
}

impl Crit {
    /// Elements per second.
    pub fn rate(&self) -> f64 {
        self.elements / (self.ns / 1e9)
    }
}

/// criterion's `benchmark.json` (the fields used).
#[derive(serde::Deserialize)]
struct CritMeta {
    group_id: String,
    function_id: String,
    throughput: Option<CritThroughput>,
}

#[derive(serde::Deserialize)]
struct CritThroughput {
    #[serde(rename = "Elements")]
    elements: Option<f64>,
}

/// criterion's `estimates.json` (the fields used).
#[derive(serde::Deserialize)]
struct CritEstimates {
    mean: CritEstimate,
    slope: Option<CritEstimate>,
}

#[derive(serde::Deserialize)]
struct CritEstimate {
    point_estimate: f64,
    confidence_interval: CritInterval,
}

#[derive(serde::Deserialize)]
struct CritInterval {
    lower_bound: f64,
    upper_bound: f64,
}

/// Every benchmark under criterion's output directory, by (group, function).
pub fn criterion(dir: &Path) -> BTreeMap<(String, String), Crit> {
    let mut out = BTreeMap::new();
    let Ok(groups) = std::fs::read_dir(dir) else {
        return out;
    };
    for g in groups.flatten() {
        let Ok(benches) = std::fs::read_dir(g.path()) else {
            continue;
        };
        for b in benches.flatten() {
            let new = b.path().join("new");
            let (Some(meta), Some(est)) = (
                json::<CritMeta>(&new.join("benchmark.json")),
                json::<CritEstimates>(&new.join("estimates.json")),
            ) else {
                continue;
            };
            let e = est.slope.as_ref().unwrap_or(&est.mean);
            let elements = meta.throughput.and_then(|t| t.elements).unwrap_or(0.0);
            out.insert(
                (meta.group_id, meta.function_id),
                Crit {
                    ns: e.point_estimate,
                    lo: e.confidence_interval.lower_bound,
                    hi: e.confidence_interval.upper_bound,
                    elements,
                },
            );
        }
    }
    out
}

/// wrk's `--latency` output: (requests/s, p50, p90, p99 in ms, non-2xx responses).
pub fn wrk(path: &Path) -> Option<(f64, f64, f64, f64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let ms = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let pct = |p: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(p))
            .and_then(|l| ms(l.split_whitespace().nth(1)?))
    };
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let bad = text
        .lines()
        .find(|l| l.trim().starts_with("Non-2xx"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0);
    Some((rps, pct("50%")?, pct("90%")?, pct("99%")?, bad))
}
