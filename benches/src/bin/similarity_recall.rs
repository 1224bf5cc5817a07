//! Recall of the bounded (MinHash + LSH) similarity mode against exact top-10 similarity, on
//! generated interactions of ≥ 100k users with Zipf-skewed campaign popularity.
//!
//! `cargo run --release -p eddy-benches --bin similarity_recall -- [events] [workers] [bands:rows:bucket_size ...] [seed=N]`
//! (default: 6 000 000 events, 2 workers, the default configuration 16:2:32, the generator's
//! default seed 42).
//!
//! The interactions (click/conversion pairs) of `events` generated events are fed in one epoch
//! through `similar_users` in MinHash mode; the exact top-10 of every user is computed from
//! scratch in plain Rust by the shared oracle, `eddy_load_gen::expected::similar_users`. Recall@10 is
//! tie-aware, as in ann-benchmarks: a returned neighbor counts if its Jaccard similarity is at
//! least that of the exact 10th neighbor (many users have equal similarities; any of them is a
//! correct answer). The strict id-overlap recall is printed too.

use differential_dataflow::input::Input;
use eddy_benches::cli::{RecallRecord, arg, print_json, round};
use eddy_core::{EventType, Neighbor, SimilarUsers};
use eddy_dataflows::{SimilarityMode, SimilarityParams, similar_users};
use eddy_load_gen::expected;
use eddy_load_gen::{GenConfig, Generated, Generator};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const K: usize = 10;

fn main() {
    let events: usize = arg(1, 6_000_000);
    let workers: usize = arg(2, 2);
    let seed: u64 = std::env::args()
        .skip(3)
        .find_map(|s| s.strip_prefix("seed=").map(|n| n.parse().expect("seed=N")))
        .unwrap_or(GenConfig::default().seed);
    let mut specs: Vec<(usize, usize, usize)> = std::env::args()
        .skip(3)
        .filter(|s| !s.starts_with("seed="))
        .map(|s| {
            let v: Vec<usize> = s
                .split(':')
                .map(|x| x.parse().expect("bands:rows:bucket"))
                .collect();
            (v[0], v[1], v[2])
        })
        .collect();
    if specs.is_empty() {
        specs.push((16, 2, 32));
    }
    let cfg = GenConfig {
        users: 200_000,
        seed,
        ..GenConfig::default()
    };
    let t = Instant::now();
    let mut pairs: BTreeSet<(u64, u64)> = BTreeSet::new();
    for g in Generator::new(cfg.clone()).take(events) {
        if let Generated::Valid(e, _) = g
            && e.event_type != EventType::View
        {
            pairs.insert((e.user_id, e.campaign_id));
        }
    }
    let users: BTreeSet<u64> = pairs.iter().map(|(u, _)| *u).collect();
    println!(
        "data: {events} events (seed {seed}, users {}, campaigns {}, campaign zipf {}, user zipf {}): {} interactions of {} users, generated in {:.1}s",
        cfg.users,
        cfg.campaigns,
        cfg.campaign_zipf,
        cfg.user_zipf,
        pairs.len(),
        users.len(),
        t.elapsed().as_secs_f64()
    );
    let pairs: Arc<Vec<(u64, u64)>> = Arc::new(pairs.into_iter().collect());

    // Exact top-10 from scratch.
    let t = Instant::now();
    let exact = expected::similar_users(&pairs, K);
    println!("exact oracle: {:.1}s", t.elapsed().as_secs_f64());

    for (bands, rows, bucket) in specs {
        bounded(&pairs, &exact, bands, rows, bucket, workers);
    }
}

/// Runs the bounded mode and prints its recall against `exact`.
fn bounded(
    pairs: &Arc<Vec<(u64, u64)>>,
    exact: &BTreeMap<u64, Vec<Neighbor>>,
    bands: usize,
    rows: usize,
    bucket: usize,
    workers: usize,
) {
    let t = Instant::now();
    let got: Arc<Mutex<HashMap<u64, Vec<Neighbor>>>> = Arc::default();
    let (got2, pairs2) = (got.clone(), Arc::clone(pairs));
    let params = SimilarityParams {
        k: K,
        mode: SimilarityMode::MinHash {
            bands,
            rows,
            bucket_size: bucket,
        },
        slice: std::time::Duration::from_micros(
            eddy_core::config::SimilarityConfig::default().slice_us,
        ),
    };
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let got3 = got2.clone();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, pairs) = scope.new_collection::<(u64, u64), isize>();
            let (probe, _) = similar_users(pairs, params)
                .inspect(move |(s, _, r): &(SimilarUsers, u64, isize)| {
                    if *r > 0 {
                        got3.lock().unwrap().insert(s.user_id, s.neighbors.clone());
                    }
                })
                .probe();
            (input, probe)
        });
        for p in pairs2.iter().skip(index).step_by(peers) {
            input.insert(*p);
        }
        input.advance_to(1);
        input.flush();
        worker.step_while(|| probe.less_than(input.time()));
    })
    .expect("timely runs");
    let took = t.elapsed().as_secs_f64();
    let got = got.lock().unwrap();

    let (mut hits, mut strict, mut wanted) = (0usize, 0usize, 0usize);
    for (u, want) in exact {
        let Some(tenth) = want.last() else { continue };
        wanted += want.len();
        let mine = got.get(u).map(Vec::as_slice).unwrap_or(&[]);
        let good = mine
            .iter()
            .filter(|n| {
                n.shared as u64 * tenth.union as u64 >= tenth.shared as u64 * n.union as u64
            })
            .count();
        hits += good.min(want.len());
        strict += mine
            .iter()
            .filter(|n| want.iter().any(|w| w.user_id == n.user_id))
            .count();
    }
    println!(
        "minhash bands={bands} rows={rows} bucket_size={bucket}, {workers} worker(s): {:.1}s, {} users with neighbors; recall@10 (tie-aware) {:.4}, strict id recall {:.4}",
        took,
        got.len(),
        hits as f64 / wanted as f64,
        strict as f64 / wanted as f64
    );
    print_json(&RecallRecord {
        bench: "similarity_recall".into(),
        users: exact.len(),
        bands,
        rows,
        bucket_size: bucket,
        workers,
        seconds: round(took, 1),
        users_with_neighbors: got.len(),
        recall: round(hits as f64 / wanted as f64, 4),
        strict_recall: round(strict as f64 / wanted as f64, 4),
    });
}
