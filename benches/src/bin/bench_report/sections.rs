//! The in-process parts of the report: criterion, peers, similarity recall, state memory and
//! wrk, each a markdown section that may add rows to the targets table.

use crate::Target;
use crate::inputs::{criterion, js, json_lines, wrk};
use eddy_benches::cli::{PeerRecord, RecallRecord, StateRecord};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// `1.23 M/s`, `45.6 k/s`, `789/s`.
pub fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k/s", v / 1e3)
    } else {
        format!("{v:.0}/s")
    }
}

/// Criterion's benchmarks, with the windowed-counts and full-pipeline targets.
pub fn criterion_section(
    raw: &Path,
    part: &mut String,
    targets: &mut Vec<Target>,
) -> std::fmt::Result {
    let crit = criterion(&raw.join("criterion"));
    let get = |g: &str, f: &str| crit.get(&(g.to_string(), f.to_string()));
    let naive = get("windowed_counts", "naive HashMap parse+count, 1 thread");
    writeln!(
        part,
        "### In-process (criterion, `cargo bench -p eddy-benches`)\n\n200 000 generated JSON events per iteration, parsed by the workers, fed in epochs of 10 000.\n\n| benchmark | time per iteration (95% CI) | throughput | vs naive baseline |\n|---|---|---|---|"
    )?;
    for ((g, f), c) in &crit {
        let vs = match naive {
            Some(n) if g == "windowed_counts" => format!("{:.2}×", c.rate() / n.rate()),
            _ => "—".into(),
        };
        writeln!(
            part,
            "| {g}: {f} | {:.1} ms ({:.1} – {:.1}) | **{}** | {vs} |",
            c.ns / 1e6,
            c.lo / 1e6,
            c.hi / 1e6,
            rate(c.rate())
        )?;
    }
    if crit.is_empty() {
        writeln!(part, "| not run | | | |")?;
    }
    let counts2 = get("windowed_counts", "eddy parse+count, 2 worker(s)");
    targets.push(Target::new(
        "windowed counts, 2 workers",
        "≥ 3 M events/s",
        counts2.map_or("—".into(), |c| rate(c.rate())),
        counts2.map(|c| c.rate() >= 3e6),
    ));
    targets.push(Target::new(
        "windowed counts vs naive HashMap",
        "within 3× (ratio ≥ 0.33)",
        counts2.zip(naive).map_or("—".into(), |(c, n)| {
            format!("{:.2}×", c.rate() / n.rate())
        }),
        counts2
            .zip(naive)
            .map(|(c, n)| c.rate() / n.rate() >= 1.0 / 3.0),
    ));
    let full2 = get("full_pipeline", "eddy full pipeline, 2 worker(s)");
    targets.push(Target::new(
        "full pipeline, 2 workers",
        "≥ 300 k events/s",
        full2.map_or("—".into(), |c| rate(c.rate())),
        full2.map(|c| c.rate() >= 3e5),
    ));
    Ok(())
}

/// The peers on the same file, with the "ahead of every peer" target.
pub fn peers_section(raw: &Path, part: &mut String, targets: &mut Vec<Target>) -> std::fmt::Result {
    let peers: Vec<PeerRecord> = json_lines(&raw.join("peers.jsonl"));
    writeln!(
        part,
        "\n### Peers on the same file and query (`benches/peers/run.sh`)\n\nOne JSONL file of generated events; every engine runs event-time tumbling 60 s windows: per (window, type) count, sum, min, max of amount; per (window, campaign, type) count.\n\n| engine | workers | events | seconds | throughput | peak RSS | output rows | eddy / engine |\n|---|---|---|---|---|---|---|---|"
    )?;
    let eddy_rate = |w: u64| {
        peers
            .iter()
            .find(|p| p.engine == "eddy" && p.workers == w)
            .map(|p| p.events_per_sec)
    };
    let mut peer_ok: Option<bool> = None;
    let mut peer_ratios = Vec::new();
    for p in &peers {
        let (w, r) = (p.workers, p.events_per_sec);
        let ratio = eddy_rate(w).map(|e| e / r);
        if p.engine != "eddy"
            && let Some(x) = ratio
        {
            peer_ok = Some(peer_ok.unwrap_or(true) && x > 1.0);
            peer_ratios.push(format!("{} {w}w {x:.2}×", p.engine));
        }
        writeln!(
            part,
            "| {} | {w} | {} | {} | **{}** | {:.0} MB | {} | {} |",
            p.engine,
            p.events,
            js(&p.seconds),
            rate(r),
            p.peak_rss_kb.unwrap_or(0.0) / 1024.0,
            p.rows,
            if p.engine == "eddy" {
                "—".into()
            } else {
                ratio.map_or("—".into(), |x| format!("**{x:.2}×**"))
            }
        )?;
    }
    if peers.is_empty() {
        writeln!(part, "| not run | | | | | | | |")?;
    }
    targets.push(Target::new(
        "ahead of every peer (same workers)",
        "ratio > 1",
        if peer_ratios.is_empty() {
            "—".into()
        } else {
            peer_ratios.join(", ")
        },
        peer_ok,
    ));
    Ok(())
}

/// MinHash recall against the exact oracle.
pub fn recall_section(raw: &Path, part: &mut String) -> std::fmt::Result {
    let recall: Vec<RecallRecord> = json_lines(&raw.join("recall.jsonl"));
    writeln!(
        part,
        "\n### Similarity recall (`similarity_recall`)\n\nMinHash/LSH top-10 vs the exact top-10 from a plain-Rust oracle; tie-aware recall (a neighbor counts if its Jaccard is at least the exact 10th's).\n\n| users | bands × rows, bucket | workers | time | recall@10 (tie-aware) | strict id recall |\n|---|---|---|---|---|---|"
    )?;
    for r in &recall {
        writeln!(
            part,
            "| {} | {} × {}, {} | {} | {} s | **{}** | {} |",
            r.users,
            r.bands,
            r.rows,
            r.bucket_size,
            r.workers,
            js(&r.seconds),
            js(&r.recall),
            js(&r.strict_recall)
        )?;
    }
    if recall.is_empty() {
        writeln!(part, "| not run | | | | | |")?;
    }
    Ok(())
}

/// The full dataflow's memory over a long run.
pub fn state_section(raw: &Path, part: &mut String) -> std::fmt::Result {
    let state: Vec<StateRecord> = json_lines(&raw.join("state_rss.jsonl"));
    writeln!(
        part,
        "\n### Full dataflow memory and steady state (`state_rss`)\n\nGenerated events at a constant key cardinality (100 000 users, 1 000 campaigns) through the full dataflow, in 2 s epochs of event time; RSS from `/proc/self/statm`.\n"
    )?;
    let Some(first) = state.first() else {
        return writeln!(part, "not run\n");
    };
    writeln!(
        part,
        "{} events/s of event time, {}-minute sliding window, {} workers.\n\n| event minute | events | wall s | events/s since previous row | RSS MB |\n|---|---|---|---|---|",
        first.rate, first.sliding_min, first.workers
    )?;
    let mut prev = (0.0, 0.0);
    for r in &state {
        let (ev, wall) = (r.events as f64, r.wall_secs);
        writeln!(
            part,
            "| {} | {ev} | {wall:.0} | {} | {} |",
            r.minute,
            rate((ev - prev.0) / (wall - prev.1).max(1e-9)),
            js(&r.rss_mb)
        )?;
        prev = (ev, wall);
    }
    Ok(())
}

/// The query server under ingest, with the speed-layer target.
pub fn wrk_section(raw: &Path, part: &mut String, targets: &mut Vec<Target>) -> std::fmt::Result {
    writeln!(
        part,
        "\n### Query server under ingest (`wrk -t2 -c32 -d5s --latency`)\n\nWhile `scripts/bench-e2e 2000 …` ingests; same 2 cores for wrk, server, stores and pipeline.\n\n| query | requests/s | p50 | p90 | p99 | non-2xx |\n|---|---|---|---|---|---|"
    )?;
    let mut speed: Option<(f64, f64)> = None;
    let mut wrk_files: Vec<PathBuf> = std::fs::read_dir(raw.join("wrk"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    wrk_files.sort();
    for f in &wrk_files {
        let label = std::fs::read_to_string(f.with_extension("url"))
            .unwrap_or_else(|_| f.display().to_string());
        if f.extension().is_some_and(|e| e == "url") {
            continue;
        }
        match wrk(f) {
            Some((rps, p50, p90, p99, bad)) => {
                if label.contains("speed layer") {
                    speed = Some((rps, p99));
                }
                writeln!(
                    part,
                    "| {} | **{rps:.0}** | {p50:.2} ms | {p90:.2} ms | {p99:.2} ms | {bad} |",
                    label.trim()
                )?;
            }
            None => writeln!(part, "| {} | failed | | | | |", label.trim())?,
        }
    }
    if wrk_files.is_empty() {
        writeln!(part, "| not run | | | | | |")?;
    }
    targets.push(Target::new(
        "query server, speed-layer reads",
        "≥ 20 k req/s, p99 ≤ 5 ms",
        speed.map_or("—".into(), |(r, p)| {
            format!("{r:.0} req/s, p99 {p:.2} ms")
        }),
        speed.map(|(r, p)| r >= 20_000.0 && p <= 5.0),
    ));
    Ok(())
}
