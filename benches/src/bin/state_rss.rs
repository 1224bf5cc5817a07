//! Memory of the full dataflow over a long run at constant key cardinality: state must stop
//! growing once the sliding window is full (events leave it as retractions and arrangements
//! compact), so RSS plateaus.
//!
//! `cargo run --release -p eddy-benches --bin state_rss -- [event-minutes] [events/s of event time] [sliding-minutes] [workers] [users] [epoch-seconds] [parse]`
//! (default 60 minutes of event time at 5 000 events/s, a 10-minute sliding window, 1-minute
//! windows, 2 workers, 100 000 users, epochs of 2 s; `parse` 1: each worker parses the JSON
//! message of every event it feeds with `eddy_core::parse_event`, as `eddy run` does, 0
//! (default): it feeds the generated `Event`). Generated events (users, 1 000 campaigns,
//! Zipf) are fed in epochs of that many seconds of event time with the watermark (max event time - 10 s) every epoch; RSS is
//! printed every 5 minutes of event time. `EDDY_*` environment variables override the
//! configuration as for `eddy` (e.g. `EDDY_SIMILARITY__MODE=exact`). Built with
//! `--features count-alloc`, it also reports live heap bytes (allocator overhead = RSS − live;
//! the system allocator then, see `eddy_benches`); without it that column reads 0 and the
//! allocator is the product's (jemalloc).

use eddy_benches::cli::{EventFeed, StateRecord, arg, round};
use eddy_benches::{cpu_seconds, full_dataflow, live_bytes, rss_bytes};
use eddy_core::Config;
use eddy_load_gen::{GenConfig, Generated, Generator};
use std::time::Instant;

fn main() {
    let minutes = arg(1, 60);
    let rate = arg(2, 5_000);
    let sliding_min = arg(3, 10);
    let workers: usize = arg(4, 2);
    let users: u64 = arg(5, 100_000);
    // Seconds of event time per epoch (a divisor of 300: rows are printed every 5 minutes).
    let epoch_secs: u64 = arg(6, 2);
    let parse = arg(7, 0u8) == 1;
    assert!(
        epoch_secs > 0 && 300 % epoch_secs == 0,
        "epoch seconds must divide 300"
    );
    // Defaults, then EDDY_* environment overrides (e.g. EDDY_SIMILARITY__BUCKET_SIZE=16).
    let mut cfg = Config::load(None, std::env::vars()).expect("valid EDDY_* overrides");
    cfg.engagement.sliding_ms = sliding_min as i64 * 60_000;
    println!(
        "state_rss: {minutes} min of event time at {rate} events/s, {users} users, sliding {sliding_min} min, windows {} s, {workers} workers, similarity {} {}x{} bucket {}, JSON parsed: {parse}",
        cfg.pipeline.window_ms / 1000,
        cfg.similarity.mode,
        cfg.similarity.bands,
        cfg.similarity.rows_per_band,
        cfg.similarity.bucket_size
    );
    println!("| event minute | events | wall s | CPU s | RSS MB | live heap MB |");
    println!("|---|---|---|---|---|---|");
    let started = Instant::now();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut feed = EventFeed::new(worker, |events, watermarks| {
            full_dataflow(&cfg, events, watermarks)
        });
        // Every worker runs the same generator and keeps its share, so all agree on the
        // watermark without exchanging anything.
        let mut generator = Generator::new(GenConfig {
            events_per_sec: rate as f64,
            users,
            ..GenConfig::default()
        });
        let per_epoch = rate * epoch_secs;
        let epochs = minutes * 60 / epoch_secs;
        let mut max_ts = i64::MIN;
        let mut n = 0u64;
        for epoch in 0..epochs {
            for _ in 0..per_epoch {
                // JSON is formatted only when it is parsed (formatting it anyway was 5–7% of
                // the CPU at 24 h / 1 M users: every worker generates every event).
                if parse {
                    if let Generated::Valid(e, json) = generator.next_message() {
                        max_ts = max_ts.max(e.ts_ms);
                        if n % peers as u64 == index as u64 {
                            feed.events
                                .insert(eddy_core::parse_event(&json).expect("valid JSON"));
                        }
                    }
                } else if let Some(e) = generator.next_event() {
                    max_ts = max_ts.max(e.ts_ms);
                    if n % peers as u64 == index as u64 {
                        feed.events.insert(e);
                    }
                }
                n += 1;
            }
            feed.marks.send(max_ts - cfg.pipeline.lateness_ms);
            feed.advance_to(worker, epoch + 1);
            let minute = (epoch + 1) * epoch_secs / 60;
            if index == 0 && ((epoch + 1) * epoch_secs).is_multiple_of(300) {
                println!(
                    "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} |",
                    minute,
                    n,
                    started.elapsed().as_secs_f64(),
                    cpu_seconds(),
                    rss_bytes() as f64 / 1e6,
                    live_bytes() as f64 / 1e6
                );
                let record = StateRecord {
                    bench: "state_rss".into(),
                    minute,
                    events: n,
                    wall_secs: round(started.elapsed().as_secs_f64(), 1),
                    rss_mb: round(rss_bytes() as f64 / 1e6, 1),
                    sliding_min,
                    rate,
                    workers: peers,
                };
                eprintln!(
                    "{}",
                    serde_json::to_string(&record).expect("records serialize")
                );
            }
        }
    })
    .expect("timely runs");
}
