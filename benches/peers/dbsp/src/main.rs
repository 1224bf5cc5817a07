//! eddy's windowed-count query in Feldera's DBSP, over a JSONL file written by `peers gen`:
//! per (60 s window, event type) count, sum, min and max of amount (micro-units), and per
//! (window, campaign, event type) count. Events are parsed with the same parser as eddy
//! (`eddy_core::parse_event`) on the feeding thread and pushed in transactions of 10 000.
//! Prints one JSON line like `peers eddy`.
//!
//! Run: cargo run --release -- FILE WORKERS

use dbsp::operator::{Max, Min};
use dbsp::typed_batch::IndexedZSetReader;
use dbsp::utils::{Tup2, Tup3, Tup4};
use dbsp::{Runtime, ZWeight};
use std::io::BufRead;
use std::time::Instant;

const EPOCH: usize = 10_000;
const WINDOW: i64 = 60_000;
/// `amount` of an event without one.
const NONE: i64 = i64::MIN;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: eddy-peer-dbsp FILE WORKERS").clone();
    let workers: usize = args.get(2).map_or(1, |w| w.parse().expect("WORKERS"));
    let started = Instant::now();
    let (mut dbsp, (input, counts, sums, mins, maxs, campaigns)) =
        Runtime::init_circuit(workers, |circuit| {
            let (events, input) = circuit.add_input_zset::<Tup4<i64, u64, u8, i64>>();
            let by_type = events.map_index(|Tup4(ws, _c, t, a)| (Tup2(*ws, *t), *a));
            let counts = by_type.aggregate_linear(|_a: &i64| 1 as ZWeight);
            let sums = by_type.aggregate_linear(|a: &i64| if *a == NONE { 0 } else { *a });
            let amounts = events
                .flat_map_index(|Tup4(ws, _c, t, a)| (*a != NONE).then_some((Tup2(*ws, *t), *a)));
            let mins = amounts.aggregate(Min);
            let maxs = amounts.aggregate(Max);
            let campaigns = events
                .map_index(|Tup4(ws, c, t, _a)| (Tup3(*ws, *c, *t), ()))
                .aggregate_linear(|_v: &()| 1 as ZWeight);
            Ok((
                input,
                counts.accumulate_output(),
                sums.accumulate_output(),
                mins.accumulate_output(),
                maxs.accumulate_output(),
                campaigns.accumulate_output(),
            ))
        })
        .expect("circuit builds");
    let file = std::fs::File::open(&path).expect("FILE");
    let mut lines = std::io::BufReader::new(file).split(b'\n');
    let (mut events, mut rows) = (0usize, 0i64);
    loop {
        let mut read = 0;
        for line in lines.by_ref().take(EPOCH) {
            let e = eddy_core::parse_event(&line.expect("read")).expect("generated events are valid");
            let ws = e.ts_ms.div_euclid(WINDOW) * WINDOW;
            let amount = e.amount_micros.unwrap_or(NONE);
            input.push(Tup4(ws, e.campaign_id, e.event_type as u8, amount), 1);
            read += 1;
        }
        events += read;
        dbsp.transaction().expect("transaction");
        // Outputs accumulate over the whole transaction (it may take several steps with
        // several workers); every worker's part is read.
        for batch in counts.take_from_all() {
            rows += batch.iter().map(|(_, _, w)| w).sum::<i64>();
        }
        for batch in campaigns.take_from_all() {
            rows += batch.iter().map(|(_, _, w)| w).sum::<i64>();
        }
        let _ = (sums.take_from_all(), mins.take_from_all(), maxs.take_from_all());
        if read < EPOCH {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    dbsp.kill().expect("runtime stops");
    println!(
        "{{\"engine\":\"dbsp\",\"workers\":{workers},\"events\":{events},\"seconds\":{secs:.3},\"events_per_sec\":{:.0},\"rows\":{rows}}}",
        events as f64 / secs
    );
}
