//! Side-by-side harness input and eddy's entry: `peers gen FILE N` writes N generated events
//! (one JSON per line, the criterion bench's generator settings); `peers eddy FILE WORKERS`
//! streams the file (every worker reads it and parses its share), parses and runs `windowed_counts` (60 s windows) on WORKERS timely workers,
//! and prints one JSON line with the events/s and the number of output rows.

use eddy_benches::cli::{EventFeed, PeerRecord, print_json, round};
use eddy_core::{WindowSpec, parse_event};
use eddy_dataflows::windowed_counts;
use eddy_load_gen::{GenConfig, Generator};
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const EPOCH: usize = 10_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") => {
            let n: usize = args[3].parse().expect("N");
            let mut out = std::io::BufWriter::new(std::fs::File::create(&args[2]).expect("FILE"));
            let cfg = GenConfig {
                events_per_sec: 50_000.0,
                ..GenConfig::default()
            };
            for g in Generator::new(cfg).take(n) {
                out.write_all(g.bytes()).expect("write");
                out.write_all(b"\n").expect("write");
            }
        }
        Some("eddy") => {
            let workers: usize = args[3].parse().expect("WORKERS");
            let path = args[2].clone();
            let total = Arc::new(AtomicUsize::new(0));
            let rows = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let (rows2, total2) = (rows.clone(), total.clone());
            timely::execute(timely::Config::process(workers), move |worker| {
                let (index, peers) = (worker.index(), worker.peers());
                let rows = rows2.clone();
                let mut feed = EventFeed::new(worker, |events, watermarks| {
                    let out = windowed_counts(events, watermarks, WindowSpec::new(60_000));
                    let r2 = rows.clone();
                    let (probe, _) = out
                        .types
                        .inspect(move |(_, _, d)| {
                            r2.fetch_add(*d as usize, Ordering::Relaxed);
                        })
                        .probe();
                    out.campaigns
                        .inspect(move |(_, _, d)| {
                            rows.fetch_add(*d as usize, Ordering::Relaxed);
                        })
                        .probe_with(&probe);
                    probe
                });
                // Every worker streams the file and parses its own share of each epoch.
                let file = std::fs::File::open(&path).expect("FILE");
                let mut lines = std::io::BufReader::new(file).split(b'\n');
                for epoch in 0.. {
                    let mut read = 0;
                    for (i, line) in lines.by_ref().take(EPOCH).enumerate() {
                        read += 1;
                        if i % peers == index {
                            let line = line.expect("read");
                            let event = parse_event(&line).expect("generated events are valid");
                            feed.events.insert(event);
                        }
                    }
                    feed.advance_to(worker, epoch as u64 + 1);
                    if index == 0 {
                        total2.fetch_add(read, Ordering::Relaxed);
                    }
                    if read < EPOCH {
                        break;
                    }
                }
            })
            .expect("timely runs");
            let secs = started.elapsed().as_secs_f64();
            let events = total.load(Ordering::Relaxed) as u64;
            print_json(&PeerRecord {
                engine: "eddy".into(),
                workers: workers as u64,
                events,
                seconds: round(secs, 3),
                events_per_sec: (events as f64 / secs).round(),
                rows: rows.load(Ordering::Relaxed) as u64,
                peak_rss_kb: None,
            });
        }
        _ => {
            eprintln!("usage: peers gen FILE N | peers eddy FILE WORKERS");
            std::process::exit(2);
        }
    }
}
