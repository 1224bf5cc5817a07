//! Recall of the bounded (MinHash + LSH) similarity mode against exact top-10 similarity, on
//! generated interactions of ≥ 100k users with Zipf-skewed campaign popularity.
//!
//! `cargo run --release -p eddy-benches --bin similarity_recall -- [events] [workers] [bands:rows:bucket_size ...]`
//! (default: 6 000 000 events, 2 workers, the default configuration 16:2:32).
//!
//! The interactions (click/conversion pairs) of `events` generated events are fed in one epoch
//! through `similar_users` in MinHash mode; the exact top-10 of every user is computed from
//! scratch in plain Rust (dense co-occurrence counters over campaign audiences). Recall@10 is
//! tie-aware, as in ann-benchmarks: a returned neighbor counts if its Jaccard similarity is at
//! least that of the exact 10th neighbor (many users have equal similarities; any of them is a
//! correct answer). The strict id-overlap recall is printed too.

use differential_dataflow::input::Input;
use eddy_core::{EventType, Neighbor, SimilarUsers};
use eddy_dataflows::similarity::sets;
use eddy_dataflows::{SimilarityMode, SimilarityParams, similar_users};
use eddy_load_gen::{GenConfig, Generated, Generator};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const K: usize = 10;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .map(|a| a.parse().expect("numeric argument"))
        .unwrap_or(default)
}

fn main() {
    let events = arg(1, 6_000_000);
    let workers = arg(2, 2);
    let mut specs: Vec<(usize, usize, usize)> = std::env::args()
        .skip(3)
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
        "data: {events} events (users {}, campaigns {}, campaign zipf {}, user zipf {}): {} interactions of {} users, generated in {:.1}s",
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
    let exact = exact_top(&pairs);
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
    };
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let got3 = got2.clone();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, pairs) = scope.new_collection::<(u64, u64), isize>();
            let by_user = pairs.arrange_by_key();
            let (probe, _) = similar_users(sets(by_user), params)
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
    println!(
        "{{\"bench\":\"similarity_recall\",\"users\":{},\"bands\":{bands},\"rows\":{rows},\"bucket_size\":{bucket},\"workers\":{workers},\"seconds\":{took:.1},\"users_with_neighbors\":{},\"recall\":{:.4},\"strict_recall\":{:.4}}}",
        exact.len(),
        got.len(),
        hits as f64 / wanted as f64,
        strict as f64 / wanted as f64
    );
}

/// Every user's exact top-10 (Jaccard, ties by lower id), by counting co-occurrences over
/// campaign audiences with a dense counter per thread.
fn exact_top(pairs: &[(u64, u64)]) -> BTreeMap<u64, Vec<Neighbor>> {
    let mut sets: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut audience: HashMap<u64, Vec<u64>> = HashMap::new();
    for (u, c) in pairs {
        sets.entry(*u).or_default().push(*c);
        audience.entry(*c).or_default().push(*u);
    }
    let max_user = sets.keys().max().copied().unwrap_or(0) as usize + 1;
    let users: Vec<(u64, Vec<u64>)> = sets.clone().into_iter().collect();
    let chunks: Vec<&[(u64, Vec<u64>)]> = users.chunks(users.len().div_ceil(2).max(1)).collect();
    let mut out = BTreeMap::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (sets, audience) = (&sets, &audience);
                s.spawn(move || {
                    let mut count = vec![0u32; max_user];
                    let mut touched = Vec::new();
                    let mut part = Vec::new();
                    for (u, su) in chunk {
                        for c in su {
                            for v in &audience[c] {
                                if v != u {
                                    if count[*v as usize] == 0 {
                                        touched.push(*v);
                                    }
                                    count[*v as usize] += 1;
                                }
                            }
                        }
                        let mut found: Vec<Neighbor> = touched
                            .drain(..)
                            .map(|v| {
                                let shared = std::mem::take(&mut count[v as usize]);
                                Neighbor {
                                    user_id: v,
                                    shared,
                                    union: (su.len() + sets[&v].len()) as u32 - shared,
                                }
                            })
                            .collect();
                        if found.len() > K {
                            found.select_nth_unstable(K);
                            found.truncate(K);
                        }
                        found.sort();
                        found.shrink_to_fit();
                        part.push((*u, found));
                    }
                    part
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("oracle thread"));
        }
    });
    out
}
