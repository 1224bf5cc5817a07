//! End-to-end tests on the real services, started by `scripts/services up`: events produced to
//! the broker (tansu) → `eddy` pipeline → ClickHouse + Redis → query server over HTTP, plus the
//! dead-letter topic, and a crash/restart in the middle of the stream.

use eddy::pipeline::{Mode, RunOptions, run};
use eddy_core::api::{
    CampaignResponse, CountsQuery, CountsResponse, ErrorCode, RecommendationJson,
    RecommendationsResponse, RowSource, SimilarUsersResponse, Store, TopCampaignsResponse,
};
use eddy_core::{Config, EventType, Metrics, Neighbor, TypeWindowStats, WindowSpec};
use eddy_load_gen::expected::{self, WindowTotals};
use eddy_storage::{CampaignWindowRow, TypeWindowRow, keys};
use eddy_testkit::fixtures::nb;
use eddy_testkit::http;
use eddy_testkit::kafka;
use eddy_testkit::stores::{PrivateRedis, ch_fetch, redis_conn, reset_database};
use eddy_testkit::wait::wait_until;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

const T0: i64 = 1_767_225_600_000;
const WINDOW: i64 = 10_000;
const LATENESS: i64 = 2_000;
const PARTITIONS: i32 = 3;

fn services() {
    eddy_testkit::services(&[]);
}

fn config(name: &str) -> Config {
    services();
    let unique = format!("{name}_{}_{}", std::process::id(), eddy_core::now_ms());
    let mut cfg = Config::default();
    cfg.kafka.topic = format!("e2e_{unique}");
    cfg.kafka.dlq_topic = format!("e2e_{unique}.dlq");
    cfg.kafka.group_id = format!("e2e_{unique}");
    cfg.kafka.partitions = PARTITIONS;
    cfg.kafka.idle_timeout_ms = 300;
    cfg.pipeline.window_ms = WINDOW;
    cfg.pipeline.lateness_ms = LATENESS;
    cfg.pipeline.checkpoint_ms = 100;
    cfg.pipeline.max_records_per_epoch = 100;
    cfg.pipeline.workers = 2;
    cfg.redis.prefix = format!("e2e_{unique}");
    // Settled interactions reach similarity at the close itself, so a drained checkpoint
    // implies final similarity answers.
    cfg.similarity.close_spread_epochs = 1;
    cfg.clickhouse.database = format!("eddy_e2e_{name}");
    reset_database(&cfg.clickhouse);
    eddy_testkit::block_on(eddy::kafka::create_topics(&cfg.kafka)).unwrap();
    cfg
}

/// Latest checkpoint: watermark and `partition -> (resume, high)`.
type Offsets = BTreeMap<i32, (i64, i64)>;

fn checkpoint(cfg: &Config) -> Option<(i64, Offsets)> {
    let rows = eddy_testkit::stores::latest_checkpoint(&cfg.clickhouse, &cfg.kafka.topic);
    let wm = rows.first()?.watermark_ms;
    Some((
        wm,
        rows.iter()
            .map(|r| (r.partition, (r.resume_offset, r.high_offset)))
            .collect(),
    ))
}

/// A message to produce and what it is.
#[derive(Clone)]
struct Msg {
    partition: i32,
    bytes: Vec<u8>,
    /// `Some` for a valid event.
    event: Option<eddy_core::Event>,
}

fn event(partition: i32, i: i64, ts: i64) -> Msg {
    let event_type = match i {
        i if i % 13 == 0 => EventType::Conversion,
        i if i % 5 == 0 => EventType::Click,
        _ => EventType::View,
    };
    let campaign = (i * 31 + partition as i64) % 5;
    let amount = (event_type == EventType::Conversion).then(|| (i % 50 + 1) * 1_000_000 + 250_000);
    let mut json = format!(
        r#"{{"event_id":"{partition}-{i}","ts":{ts},"user_id":{},"campaign_id":{campaign},"event_type":"{}""#,
        i % 17,
        event_type.as_str()
    );
    if let Some(a) = amount {
        json.push_str(&format!(
            r#","amount":{}.{:02}"#,
            a / 1_000_000,
            a % 1_000_000 / 10_000
        ));
    }
    json.push('}');
    let parsed = eddy_core::parse_event(json.as_bytes()).unwrap();
    Msg {
        partition,
        bytes: json.into_bytes(),
        event: Some(parsed),
    }
}

fn malformed(partition: i32, k: usize) -> Msg {
    let bytes = match k % 3 {
        0 => b"{not json".to_vec(),
        1 => br#"{"event_id":"m","ts":1767225600000,"user_id":1,"campaign_id":1,"event_type":"like"}"#.to_vec(),
        _ => br#"{"event_id":"m","ts":1767225600000,"user_id":1,"campaign_id":1,"event_type":"view","amount":-2}"#.to_vec(),
    };
    Msg {
        partition,
        bytes,
        event: None,
    }
}

/// Events of one partition: event time advancing 100 ms per event, shuffled back by up to
/// 1.5 s (< lateness, so none is late), with a malformed message every 97.
fn phase(partition: i32, from: i64, n: i64) -> Vec<Msg> {
    let mut out = Vec::new();
    for i in from..from + n {
        let disorder = (i * 7919 + partition as i64 * 31) % 1_500;
        out.push(event(
            partition,
            i,
            T0 + i * 100 + partition as i64 * 13 - disorder,
        ));
        if i % 97 == 0 {
            out.push(malformed(partition, i as usize));
        }
    }
    out
}

fn produce(cfg: &Config, msgs: &[Msg]) {
    kafka::produce(&cfg.kafka, msgs.iter().map(|m| (m.partition, &m.bytes[..])));
}

struct Worker {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

fn start(cfg: &Config) -> Worker {
    let opts = RunOptions::in_process(cfg);
    let stop = opts.stop.clone();
    let handle = std::thread::spawn(move || run(opts, Mode::Kafka).expect("pipeline runs"));
    Worker { stop, handle }
}

impl Worker {
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("worker thread");
    }
}

fn counts_per_partition(msgs: &[Msg]) -> BTreeMap<i32, i64> {
    let mut m = BTreeMap::new();
    for msg in msgs {
        *m.entry(msg.partition).or_insert(0) += 1;
    }
    m
}

/// Waits until the checkpoint covers every produced message, its watermark reaches `wm`, and
/// Redis's batch/speed boundary has caught up with it (written after the checkpoint).
fn wait_drained(cfg: &Config, msgs: &[Msg], wm: i64) {
    let want = counts_per_partition(msgs);
    let mut con = redis_conn(&cfg.redis);
    wait_until(
        "the checkpoint to cover every message",
        Duration::from_secs(120),
        || {
            checkpoint(cfg).is_some_and(|(w, parts)| {
                w >= wm
                    && want
                        .iter()
                        .all(|(p, n)| parts.get(p).is_some_and(|(_, high)| high == n))
                    && redis::cmd("GET")
                        .arg(keys::boundary(&cfg.redis.prefix))
                        .query::<Option<i64>>(&mut con)
                        .unwrap()
                        .is_some_and(|b| b >= w)
            })
        },
    );
}

type Oracle = WindowTotals;

fn oracle(events: impl Iterator<Item = eddy_core::Event>) -> Oracle {
    WindowTotals::of(events, WindowSpec::new(WINDOW))
}

/// Query-server state over the test's Redis and ClickHouse.
fn lambda_state(cfg: &Config) -> eddy_query_server::AppState {
    let backend = eddy_query_server::LambdaBackend::new(&cfg.redis, &cfg.clickhouse).unwrap();
    eddy_query_server::AppState::new(
        Arc::new(backend),
        Metrics::new(),
        eddy_query_server::ServerQueryLimits::from_config(cfg),
    )
}

/// Serves `state` on a free loopback port; the server lives as long as the runtime.
fn serve(state: eddy_query_server::AppState) -> (tokio::runtime::Runtime, std::net::SocketAddr) {
    http::serve(eddy_query_server::app(state))
}

/// `/v1/counts` of `event_type` (and `campaign_id`) over the test's whole time range.
fn counts(
    addr: std::net::SocketAddr,
    event_type: EventType,
    campaign_id: Option<u64>,
) -> CountsResponse {
    let q = CountsQuery {
        event_type: Some(event_type),
        campaign_id,
        ..CountsQuery::new(T0 - 600_000, T0 + 3_600_000)
    };
    http::get_query_blocking(addr, "/v1/counts", &q).ok()
}

/// Asserts ClickHouse holds exactly the final windows, Redis exactly the open ones, and the
/// query server merges both into the oracle's series.
fn assert_outputs(cfg: &Config, o: &Oracle, wm: i64) {
    let rows: Vec<TypeWindowRow> =
        ch_fetch(&cfg.clickhouse, eddy_storage::TYPE_WINDOWS_QUERY, |q| {
            q.bind(i64::MIN).bind(i64::MAX)
        });
    let got: BTreeMap<(i64, EventType), TypeWindowStats> = rows
        .into_iter()
        .map(|r| {
            let t = EventType::parse(&r.event_type).unwrap();
            let ws = r.window_start_ms;
            (
                (ws, t),
                TypeWindowStats {
                    window_start_ms: ws,
                    event_type: t,
                    count: r.count,
                    sum_micros: r.sum_micros,
                    min_micros: r.min_micros,
                    max_micros: r.max_micros,
                },
            )
        })
        .collect();
    let want_final: BTreeMap<_, _> = o
        .types
        .iter()
        .filter(|((ws, _), _)| ws + WINDOW <= wm)
        .map(|(k, v)| (*k, *v))
        .collect();
    assert!(!want_final.is_empty(), "some windows are final");
    assert_eq!(got, want_final, "ClickHouse type_windows");
    let rows: Vec<CampaignWindowRow> = ch_fetch(
        &cfg.clickhouse,
        "SELECT ?fields FROM campaign_windows FINAL",
        |q| q,
    );
    let got: BTreeMap<(i64, u64, EventType), u64> = rows
        .into_iter()
        .map(|r| {
            let t = EventType::parse(&r.event_type).unwrap();
            ((r.window_start_ms, r.campaign_id, t), r.count)
        })
        .collect();
    let want: BTreeMap<_, _> = o
        .campaigns
        .iter()
        .filter(|((ws, _, _), _)| ws + WINDOW <= wm)
        .map(|(k, v)| (*k, v.count))
        .collect();
    assert_eq!(got, want, "ClickHouse campaign_windows");

    // Redis: every open window, exact values, not final.
    let mut con = redis_conn(&cfg.redis);
    let open: Vec<_> = o
        .types
        .values()
        .filter(|r| r.window_start_ms + WINDOW > wm)
        .collect();
    assert!(!open.is_empty(), "some windows are open");
    for r in open {
        use keys::type_window::{COUNT, FINAL, MAX, MIN, SUM};
        let key = keys::type_window(&cfg.redis.prefix, r.event_type, r.window_start_ms);
        let h: BTreeMap<String, i64> = redis::cmd("HGETALL").arg(&key).query(&mut con).unwrap();
        assert_eq!(h.get(COUNT).copied(), Some(r.count as i64), "{key}");
        assert_eq!(h.get(SUM).copied(), Some(r.sum_micros), "{key}");
        assert_eq!(h.get(MIN).copied(), r.min_micros, "{key}");
        assert_eq!(h.get(MAX).copied(), r.max_micros, "{key}");
        assert_eq!(h.get(FINAL).copied(), Some(0), "{key}");
    }

    // HTTP: the query server merges both layers into the oracle's series.
    let (_runtime, addr) = serve(lambda_state(cfg));
    for t in EventType::ALL {
        let body = counts(addr, t, None);
        assert_eq!(body.boundary_ms, Some(wm), "{body:?}");
        let series: Vec<(i64, u64, bool, RowSource)> = body
            .series
            .iter()
            .map(|p| (p.window_start_ms, p.count, p.is_final, p.source))
            .collect();
        let want: Vec<(i64, u64, bool, RowSource)> = o
            .types
            .values()
            .filter(|r| r.event_type == t)
            .map(|r| {
                let fin = r.window_start_ms + WINDOW <= wm;
                let source = if fin {
                    RowSource::Clickhouse
                } else {
                    RowSource::Redis
                };
                (r.window_start_ms, r.count, fin, source)
            })
            .collect();
        assert_eq!(series, want, "HTTP series for {t}");
    }
    let series: Vec<(i64, u64)> = counts(addr, EventType::View, Some(1))
        .series
        .iter()
        .map(|p| (p.window_start_ms, p.count))
        .collect();
    let want: Vec<(i64, u64)> = o
        .campaigns
        .values()
        .filter(|c| c.campaign_id == 1 && c.event_type == EventType::View)
        .map(|c| (c.window_start_ms, c.count))
        .collect();
    assert_eq!(series, want, "HTTP campaign series");
    http::get_query_blocking(addr, "/v1/counts", &CountsQuery::new(5, 1))
        .error(400, ErrorCode::BadRequest);
}

/// A dead letter: reason, source partition, source offset, payload.
type Letter = (String, i32, i64, Vec<u8>);

/// Every dead letter on the DLQ topic, sorted: reads until at least `expect` arrived, then
/// until nothing more comes for a second.
fn dead_letters(cfg: &Config, expect: usize) -> Vec<Letter> {
    let mut out: Vec<Letter> = kafka::dead_letters(&cfg.kafka, expect)
        .into_iter()
        .map(|l| {
            (
                l.header("eddy-reason").to_owned(),
                l.header("eddy-source-partition").parse().unwrap(),
                l.header("eddy-source-offset").parse().unwrap(),
                l.payload,
            )
        })
        .collect();
    out.sort();
    out
}

/// The letters `all` (in produce order, into a fresh topic) must give: malformed messages and
/// the `late` ones, with their source offsets.
fn expected_dead_letters(all: &[Msg], late: &BTreeSet<Vec<u8>>) -> Vec<Letter> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut want = Vec::new();
    for m in all {
        let offset = next.entry(m.partition).or_insert(0);
        let reason = match eddy_core::parse_event(&m.bytes) {
            Err(e) => Some(e.reason().to_owned()),
            Ok(_) if late.contains(&m.bytes) => Some("late".to_owned()),
            Ok(_) => None,
        };
        if let Some(reason) = reason {
            want.push((reason, m.partition, *offset, m.bytes.clone()));
        }
        *offset += 1;
    }
    want.sort();
    want
}

fn max_ts(msgs: &[Msg]) -> i64 {
    msgs.iter()
        .filter_map(|m| m.event.map(|e| e.ts_ms))
        .max()
        .unwrap()
}

#[test]
fn kafka_to_clickhouse_redis_and_http_exact() {
    let cfg = config("exact");
    let phase1: Vec<Msg> = (0..PARTITIONS).flat_map(|p| phase(p, 0, 300)).collect();
    produce(&cfg, &phase1);
    let worker = start(&cfg);
    // All partitions drain and go idle: the watermark reaches max event time - lateness.
    let wm1 = max_ts(&phase1) - LATENESS;
    wait_drained(&cfg, &phase1, wm1);
    // Late events (their window closed long ago), more on-time events, another bad message.
    // The on-time events start a new window that no partition alone can close (event times
    // 40 s .. 45.4 s): a partition that was idle cannot have them ruled late when another
    // partition resumes first.
    let late: Vec<Msg> = (0..3).map(|i| event(0, 10_000 + i, T0 + 500 + i)).collect();
    let phase2: Vec<Msg> = (0..PARTITIONS)
        .flat_map(|p| phase(p, 415, 40))
        .chain(late.iter().cloned())
        .chain([malformed(1, 2)])
        .collect();
    produce(&cfg, &phase2);
    let all: Vec<Msg> = phase1.iter().chain(&phase2).cloned().collect();
    let wm = max_ts(&all) - LATENESS;
    wait_drained(&cfg, &all, wm);
    let late_set: BTreeSet<Vec<u8>> = late.iter().map(|m| m.bytes.clone()).collect();
    let on_time = all
        .iter()
        .filter(|m| !late_set.contains(&m.bytes))
        .filter_map(|m| m.event);
    assert_outputs(&cfg, &oracle(on_time), wm);
    let want = expected_dead_letters(&all, &late_set);
    assert_eq!(
        dead_letters(&cfg, want.len()),
        want,
        "dead-letter topic: each exactly once"
    );
    // Offsets committed to the broker equal the checkpoint's resume offsets.
    let (_, parts) = checkpoint(&cfg).unwrap();
    let committer = eddy::kafka::KafkaCommitter::new(&cfg.kafka).unwrap();
    wait_until(
        "broker offsets to match the checkpoint",
        Duration::from_secs(30),
        || {
            let committed = committer
                .committed(&(0..PARTITIONS).collect::<Vec<_>>())
                .unwrap();
            parts
                .iter()
                .all(|(p, (resume, _))| committed.get(p) == Some(resume))
        },
    );
    worker.stop();
}

#[test]
fn restart_mid_stream_loses_nothing_and_counts_nothing_twice() {
    let mut cfg = config("restart");
    cfg.pipeline.max_records_per_epoch = 20;
    // A 30 s sliding window: panes slide out during the run, and the restart must restore the
    // sliding state of windows already final from the stores (they are not re-read).
    cfg.engagement.sliding_ms = 3 * WINDOW;
    cfg.similarity.mode = eddy_core::config::SimilarityAlgorithm::Exact;
    let phase1: Vec<Msg> = (0..PARTITIONS).flat_map(|p| phase(p, 0, 600)).collect();
    produce(&cfg, &phase1);
    let total: i64 = phase1.len() as i64;
    let worker = start(&cfg);
    // Stop abruptly once a checkpoint is durable with windows both final and still open, so
    // the restart must rebuild open windows from their first offsets and skip final ones.
    // Stopping past T0 + 50 s leaves the final window [T0 + 40 s, T0 + 50 s) inside the
    // sliding window at the end (T0 + 63 s): only the restored state holds it.
    wait_until(
        "a checkpoint with final and open windows",
        Duration::from_secs(120),
        || {
            checkpoint(&cfg).is_some_and(|(w, parts)| {
                w > T0 + 5 * WINDOW && parts.values().any(|(resume, high)| resume < high)
            })
        },
    );
    worker.stop();
    let (wm_at_stop, parts_at_stop) = checkpoint(&cfg).unwrap();
    let read: i64 = parts_at_stop.values().map(|(_, h)| h).sum();
    assert!(wm_at_stop > T0 + 5 * WINDOW && read <= total);
    eprintln!("stopped at watermark {wm_at_stop} after {read} of {total} messages");
    assert_resumes_at_open_windows(&cfg, &phase1, wm_at_stop, &parts_at_stop);
    // More events arrive while the worker is down.
    let phase2: Vec<Msg> = (0..PARTITIONS).flat_map(|p| phase(p, 600, 50)).collect();
    produce(&cfg, &phase2);
    // The restored state is routed to its keys' workers, whatever their number.
    cfg.pipeline.workers = 3;
    let watch = CountsWatch::start(&cfg);
    let worker = start(&cfg);
    let all: Vec<Msg> = phase1.iter().chain(&phase2).cloned().collect();
    let wm = max_ts(&all) - LATENESS;
    wait_drained(&cfg, &all, wm);
    let (watched, backwards) = watch.stop();
    assert!(watched > 0, "open windows were watched");
    assert!(
        backwards.is_empty(),
        "window counts went backwards during the restart: {backwards:?}"
    );
    assert_outputs(&cfg, &oracle(all.iter().filter_map(|m| m.event)), wm);
    assert_sliding_state(&cfg, &all, wm);
    let want = expected_dead_letters(&all, &BTreeSet::new());
    // Dead letters are at-least-once across a crash: a letter written after the last durable
    // checkpoint is written again when its record is re-read. Each expected letter is there,
    // and a repeat only for a source offset the checkpoint in force at the stop did not cover.
    let letters = dead_letters(&cfg, want.len());
    let mut distinct = letters.clone();
    distinct.dedup();
    assert_eq!(distinct, want, "every bad message dead-lettered");
    for pair in letters.windows(2) {
        if pair[0] == pair[1] {
            let (_, partition, offset, _) = &pair[0];
            let (_, high) = parts_at_stop[partition];
            assert!(
                *offset >= high,
                "letter at {partition}:{offset} repeated though checkpointed"
            );
        }
    }
    worker.stop();
    // Settings that change what the stored state means refuse the restore, pointing to a
    // replay; weights do not (the stored panes hold counts).
    let mut longer = cfg.clone();
    longer.engagement.sliding_ms = 6 * WINDOW;
    let err = run(RunOptions::in_process(&longer), Mode::Kafka).unwrap_err();
    assert!(
        matches!(&err, eddy::pipeline::PipelineError::StateLayout { from, .. }
            if *from == checkpoint(&cfg).unwrap().0 - 6 * WINDOW),
        "{err}"
    );
    assert!(err.to_string().contains("eddy replay --from"), "{err}");
}

/// Watches, from a snapshot on, the count of every type window Redis holds, as a reader polling
/// it would: counts only grow as events arrive, so a count below the snapshot's is a reader
/// seeing a value go backwards (e.g. a restart writing partly rebuilt windows).
struct CountsWatch {
    stop: Arc<AtomicBool>,
    watched: usize,
    handle: JoinHandle<Vec<(String, i64, i64)>>,
}

impl CountsWatch {
    fn start(cfg: &Config) -> Self {
        let mut con = redis_conn(&cfg.redis);
        let pattern = format!("{}:tw:*:*", cfg.redis.prefix);
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut con).unwrap();
        let snapshot: Vec<(String, i64)> = keys
            .into_iter()
            .filter_map(|k| {
                let count: Option<i64> = redis::cmd("HGET")
                    .arg(&k)
                    .arg(keys::type_window::COUNT)
                    .query(&mut con)
                    .unwrap();
                Some((k, count?))
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (watched, done) = (snapshot.len(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut lowest: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            while !done.load(Ordering::SeqCst) {
                for (k, before) in &snapshot {
                    let now: Option<i64> = redis::cmd("HGET")
                        .arg(k)
                        .arg(keys::type_window::COUNT)
                        .query(&mut con)
                        .unwrap();
                    if let Some(now) = now.filter(|n| n < before) {
                        let seen = lowest.entry(k.clone()).or_insert((*before, now));
                        seen.1 = seen.1.min(now);
                    }
                }
            }
            lowest.into_iter().map(|(k, (b, n))| (k, b, n)).collect()
        });
        Self {
            stop,
            watched,
            handle,
        }
    }

    /// The windows watched, and each `(key, snapshot count, lowest count seen)` below it.
    fn stop(self) -> (usize, Vec<(String, i64, i64)>) {
        self.stop.store(true, Ordering::SeqCst);
        (self.watched, self.handle.join().unwrap())
    }
}

/// The checkpoint records the stored state's layout, and each partition resumes at its oldest
/// window still open under the watermark: every record before the resume offset is in a final
/// window, and some of them in a pane still inside the sliding window (only the restored state
/// holds those).
fn assert_resumes_at_open_windows(cfg: &Config, msgs: &[Msg], wm: i64, parts: &Offsets) {
    use eddy_sinks::CheckpointStore as _;
    let cp = eddy_sinks::ClickHouseCheckpoints::connect(&cfg.clickhouse)
        .unwrap()
        .load(&cfg.kafka.topic)
        .unwrap()
        .unwrap();
    assert_eq!(cp.state, Some(cfg.state_layout()));
    let window = WindowSpec::new(WINDOW);
    let mut skipped_inside_window = 0;
    for (p, (resume, _)) in parts {
        let events = msgs
            .iter()
            .filter(|m| m.partition == *p)
            .take(*resume as usize);
        for ev in events.filter_map(|m| m.event) {
            assert!(
                window.is_closed(ev.ts_ms, wm),
                "partition {p}: event at {} before resume offset {resume} is in an open window",
                ev.ts_ms
            );
            if window.start(ev.ts_ms) + cfg.engagement.sliding_ms > wm {
                skipped_inside_window += 1;
            }
        }
    }
    assert!(
        skipped_inside_window > 0,
        "no record before the resume offsets is inside the sliding window"
    );
}

/// Asserts the live engagement of every campaign, and the similar users of every user (exact
/// mode, settled sets: closed windows), over HTTP equal load-gen's from-scratch oracle
/// ([`expected`]) over the events still in the sliding window.
fn assert_sliding_state(cfg: &Config, all: &[Msg], wm: i64) {
    let window = WindowSpec::new(WINDOW);
    let sliding = cfg.engagement.sliding_ms;
    let weights = cfg.engagement.weights();
    let events: Vec<eddy_core::Event> = all.iter().filter_map(|m| m.event).collect();
    let per_campaign = expected::engagement(&events, window, sliding, wm);
    let inside: i64 = per_campaign.values().map(|s| s[0] + s[1] + s[2]).sum();
    assert!(
        inside < all.len() as i64 / 2,
        "events slid out of the window"
    );
    // Similarity runs on settled sets: closed windows only.
    let interests = expected::settled_interests(
        &events,
        window,
        sliding,
        wm,
        cfg.similarity.views_are_interest,
    );
    let similar = expected::similar_users(&interests, cfg.similarity.k);
    let (_rt, addr) = serve(lambda_state(cfg));
    for campaign in 0..6u64 {
        let reply = http::get_blocking(addr, &format!("/v1/campaigns/{campaign}"));
        let Some(s) = per_campaign.get(&campaign) else {
            reply.error(404, ErrorCode::NotFound);
            continue;
        };
        let c = reply.ok::<CampaignResponse>().campaign;
        let got = [
            c.views as i64,
            c.clicks as i64,
            c.conversions as i64,
            c.revenue_micros,
        ];
        assert_eq!(&got, s, "campaign {campaign}");
        let score = weights.score(s[0] as u64, s[1] as u64, s[2] as u64).0;
        assert_eq!(c.score, score, "campaign {campaign}");
    }
    for (u, want) in &similar {
        let reply = http::get_blocking(addr, &format!("/v1/users/{u}/similar"));
        if want.is_empty() {
            reply.error(404, ErrorCode::NotFound);
            continue;
        }
        let got: Vec<Neighbor> = reply
            .ok::<SimilarUsersResponse>()
            .similar
            .iter()
            .map(|n| nb(n.user_id, n.shared, n.union))
            .collect();
        assert_eq!(&got, want, "user {u}");
    }
}

/// Two `eddy run` processes form one timely cluster over loopback (`-n 2 -p i -H hosts`), each
/// with one worker: partitions are spread over both, worker 0 (process 0) checkpoints, and
/// the outputs are exactly those of one process.
#[test]
fn two_process_cluster_matches_the_oracle() {
    let cfg = config("cluster");
    let msgs: Vec<Msg> = (0..PARTITIONS).flat_map(|p| phase(p, 0, 250)).collect();
    produce(&cfg, &msgs);
    let dir = std::env::temp_dir().join(format!("eddy-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_file = dir.join("eddy.toml");
    std::fs::write(&config_file, toml::to_string(&cfg).unwrap()).unwrap();
    // Two free loopback ports for the timely processes.
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let hosts = dir.join("hosts.txt");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .unwrap();
    let mut children: Vec<std::process::Child> = (0..2)
        .map(|i| {
            let log = std::fs::File::create(dir.join(format!("process{i}.log"))).unwrap();
            std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
                .arg("--config")
                .arg(&config_file)
                .args(["run", "-w", "1", "-n", "2", "-p", &i.to_string(), "-H"])
                .arg(&hosts)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("eddy binary runs")
        })
        .collect();
    let wm = max_ts(&msgs) - LATENESS;
    let drained = std::panic::catch_unwind(|| wait_drained(&cfg, &msgs, wm));
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    if drained.is_err() {
        for i in 0..2 {
            let log =
                std::fs::read_to_string(dir.join(format!("process{i}.log"))).unwrap_or_default();
            eprintln!("--- process {i} ---\n{log}");
        }
        panic!("the cluster did not drain");
    }
    assert_outputs(&cfg, &oracle(msgs.iter().filter_map(|m| m.event)), wm);
    let want = expected_dead_letters(&msgs, &BTreeSet::new());
    assert_eq!(
        dead_letters(&cfg, want.len()),
        want,
        "dead letters from both processes"
    );
}

/// `eddy load-gen` end to end: open-loop production with late and malformed messages,
/// freshness probes seen over HTTP, and `--verify` reconciling the answers with the expected
/// totals; a wrong expectation is reported as a diff.
#[test]
fn load_gen_measures_freshness_and_verifies_answers() {
    use eddy_load_gen::runner::{RunConfig, RunError, run as load, verify, verify_engagement};
    let cfg = config("loadgen");
    let worker = start(&cfg);
    let (runtime, addr) = serve(lambda_state(&cfg));
    let url = format!("http://{addr}");
    let run = RunConfig {
        event_span: None,
        brokers: cfg.kafka.brokers.clone(),
        topic: cfg.kafka.topic.clone(),
        dlq_topic: cfg.kafka.dlq_topic.clone(),
        // 16 s: the pane the run starts in closes (10 s windows, 2 s lateness) at least 2 s
        // before events stop, for the similarity probes.
        rate: 500.0,
        events: Some(8_000),
        duration: None,
        generator: eddy_load_gen::GenConfig {
            seed: 7,
            run_id: eddy_core::now_ms() as u64,
            users: 1_000,
            campaigns: 50,
            max_disorder_ms: 1_000,
            late_fraction: 0.01,
            late_by_ms: WINDOW + 2 * LATENESS,
            malformed_fraction: 0.01,
            ..eddy_load_gen::GenConfig::default()
        },
        query_url: Some(url.clone()),
        metrics_url: None,
        probe_interval: Duration::from_millis(100),
        linger_ms: 5,
        window_ms: WINDOW,
        lateness_ms: LATENESS,
        pane_probes: true,
        sliding_ms: cfg.engagement.sliding_ms,
        verify: true,
        verify_timeout: Duration::from_secs(60),
    };
    let report = runtime.block_on(load(run)).expect("load-gen run verifies");
    eprintln!("{}", report.table());
    assert_eq!(report.verified, Some(true));
    assert!(report.probes_sent >= 15, "{report:?}");
    assert_eq!(
        report.probes_seen, report.probes_sent,
        "every probe became visible"
    );
    assert_eq!(
        report.freshness_ms.as_ref().map(|f| f.count),
        Some(report.probes_sent)
    );
    // From the broker's acknowledgement: every probe was acknowledged, and each one's share
    // after the produce path is at most its whole freshness.
    let (fresh, acked) = (
        report.freshness_ms.as_ref().expect("freshness"),
        report.ack_to_visible_ms.as_ref().expect("ack → visible"),
    );
    assert_eq!(acked.count, fresh.count, "{report:?}");
    assert!(
        acked.p50 <= fresh.p50 && acked.p99 <= fresh.p99 && acked.max <= fresh.max,
        "{report:?}"
    );
    // One similarity probe per pane, each seen in the recommendations once its pane closed.
    assert!(report.similarity_probes_sent >= 1, "{report:?}");
    assert_eq!(
        report.similarity_probes_seen, report.similarity_probes_sent,
        "every similarity probe became visible"
    );
    assert_eq!(
        report.similarity_freshness_ms.as_ref().map(|f| f.count),
        Some(report.similarity_probes_sent)
    );
    // The per-second series accounts for every message and every probe exactly once.
    let sum = |f: fn(&eddy_load_gen::report::Point) -> u64| -> u64 {
        report.timeline.iter().map(f).sum()
    };
    assert_eq!(sum(|p| p.sent), report.produced);
    assert_eq!(sum(|p| p.acked), report.produced);
    assert!(report.timeline.iter().any(|p| p.freshness_ms.is_some()));
    assert!(report.plot_svg().contains("<polyline"));
    assert!(
        report.late_events.is_some_and(|n| n > 0),
        "some events were ruled late"
    );
    assert_eq!(report.produce_latency_us.count, report.produced);
    // A wrong expectation: one event more than the pipeline saw in a window it holds.
    let extra = eddy_core::Event {
        ts_ms: eddy_core::now_ms() - 5_000,
        user_id: 1,
        campaign_id: 1,
        event_type: EventType::Click,
        amount_micros: None,
    };
    let wrong = WindowTotals::of([extra], WindowSpec::new(WINDOW));
    match runtime.block_on(verify(&url, &wrong, WINDOW, Duration::from_millis(500))) {
        Err(RunError::Mismatch(diff)) => assert!(diff.contains("expected"), "{diff}"),
        other => panic!("verify accepted a wrong expectation: {other:?}"),
    }
    let wrong_engagement = vec![extra; 3];
    let verdict = runtime.block_on(verify_engagement(
        &url,
        &wrong_engagement,
        WindowSpec::new(WINDOW),
        cfg.engagement.sliding_ms,
        Duration::from_millis(500),
    ));
    match verdict {
        Err(RunError::Mismatch(diff)) => assert!(diff.contains("engagement"), "{diff}"),
        other => panic!("verify accepted a wrong engagement expectation: {other:?}"),
    }
    worker.stop();
}

fn interaction(i: usize, user: u64, campaign: u64, t: EventType, ts: i64, amount: &str) -> Msg {
    let json = format!(
        r#"{{"event_id":"k-{i}","ts":{ts},"user_id":{user},"campaign_id":{campaign},"event_type":"{}"{amount}}}"#,
        t.as_str()
    );
    Msg {
        partition: 0,
        event: Some(eddy_core::parse_event(json.as_bytes()).unwrap()),
        bytes: json.into_bytes(),
    }
}

/// Asserts the engagement, similarity and recommendation answers of the known event set of
/// `engagement_similarity_and_recommendations_over_http`, served from `source`.
fn assert_known_answers(addr: std::net::SocketAddr, source: Store, wm: i64) {
    let close = |a: f64, b: f64| {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    };
    let get = |path: &str| http::get_blocking(addr, path);
    let c: CampaignResponse = get("/v1/campaigns/300").ok();
    assert_eq!(c.meta.source, source);
    assert_eq!(c.meta.as_of_ms, wm);
    let c = c.campaign;
    assert_eq!(
        (c.views, c.clicks, c.conversions, c.revenue_micros),
        (2, 2, 1, 12_500_000)
    );
    close(c.score, 37.0);
    close(c.ctr.unwrap(), 1.0);
    close(c.conversion_rate.unwrap(), 0.5);
    let c = get("/v1/campaigns/100").ok::<CampaignResponse>().campaign;
    assert_eq!((c.views, c.clicks), (10, 3));
    close(c.score, 25.0);
    assert_eq!(c.conversion_rate, Some(0.0));

    let top: TopCampaignsResponse = get("/v1/campaigns/top?k=3").ok();
    assert_eq!(top.meta.source, source);
    let ids: Vec<u64> = top.campaigns.iter().map(|c| c.campaign_id).collect();
    assert_eq!(ids, vec![300, 100, 200]);

    // Sets: u1 {100,200}, u2 {100,200,300}, u3 {100,400}, u4 {300}.
    let similar = |user: u64| {
        let s: SimilarUsersResponse = get(&format!("/v1/users/{user}/similar")).ok();
        assert_eq!(s.meta.source, source);
        assert_eq!(s.meta.as_of_ms, wm);
        s.similar
            .iter()
            .map(|n| (n.user_id, n.shared, n.union))
            .collect::<Vec<_>>()
    };
    assert_eq!(similar(1), vec![(2, 2, 3), (3, 1, 3)]);
    assert_eq!(similar(2), vec![(1, 2, 3), (4, 1, 3), (3, 1, 4)]);
    assert_eq!(similar(3), vec![(1, 1, 3), (2, 1, 4)]);
    assert_eq!(similar(4), vec![(2, 1, 3)]);

    // Live scores (every pane of the window is closed): 100: 25, 200: 14, 300: 37, 400: 6.
    let recs = |user: u64| {
        let r: RecommendationsResponse = get(&format!("/v1/users/{user}/recommendations")).ok();
        assert_eq!(r.meta.source, source);
        r.recommendations
    };
    let check = |items: Vec<RecommendationJson>, want: &[(u64, f64, f64, &[u64])]| {
        assert_eq!(items.len(), want.len(), "{items:?}");
        for (item, (campaign, score, campaign_score, because)) in items.iter().zip(want) {
            assert_eq!(item.campaign_id, *campaign, "{item:?}");
            close(item.score, *score);
            close(item.campaign_score, *campaign_score);
            let by: Vec<u64> = item.because.iter().map(|b| b.user_id).collect();
            assert_eq!(by, *because);
        }
    };
    check(
        recs(1),
        &[
            (300, 2.0 / 3.0 * 37.0, 37.0, &[2]),
            (400, 1.0 / 3.0 * 6.0, 6.0, &[3]),
        ],
    );
    check(recs(2), &[(400, 0.25 * 6.0, 6.0, &[3])]);
    check(
        recs(3),
        &[
            (300, 0.25 * 37.0, 37.0, &[2]),
            (200, (1.0 / 3.0 + 0.25) * 14.0, 14.0, &[1, 2]),
        ],
    );
    check(
        recs(4),
        &[
            (100, 1.0 / 3.0 * 25.0, 25.0, &[2]),
            (200, 1.0 / 3.0 * 14.0, 14.0, &[2]),
        ],
    );

    // Unknown ids are 404, bad parameters 400, both with JSON bodies.
    get("/v1/campaigns/12345").error(404, ErrorCode::NotFound);
    get("/v1/users/77/similar").error(404, ErrorCode::NotFound);
    get("/v1/users/1/recommendations?k=0").error(400, ErrorCode::BadRequest);
    get("/v1/campaigns/top?k=abc").error(400, ErrorCode::BadRequest);
}

#[test]
fn engagement_similarity_and_recommendations_over_http() {
    let mut cfg = config("engagement");
    let mut redis = PrivateRedis::start();
    cfg.redis.url = redis.url();
    cfg.engagement.sliding_ms = 4 * WINDOW;
    cfg.similarity.mode = eddy_core::config::SimilarityAlgorithm::Exact;
    // One closed window [T0, T0 + 10 s) of known interactions (views are not interest).
    let mut msgs = Vec::new();
    let mut add = |user, campaign, t, amount: &str| {
        let ts = T0 + 100 * msgs.len() as i64;
        msgs.push(interaction(msgs.len(), user, campaign, t, ts, amount));
    };
    for (user, campaigns) in [
        (1, &[100, 200][..]),
        (2, &[100, 200, 300]),
        (3, &[100, 400]),
        (4, &[300]),
    ] {
        for c in campaigns {
            add(user, *c, EventType::Click, "");
        }
    }
    add(2, 300, EventType::Conversion, r#","amount":12.5"#);
    for (campaign, views) in [(100, 10), (200, 4), (300, 2), (400, 1)] {
        for _ in 0..views {
            add(9, campaign, EventType::View, "");
        }
    }
    // A view in the next window moves the watermark to T0 + 15 s, closing the first window.
    let clock = T0 + 17_000;
    msgs.push(interaction(99, 9, 999, EventType::View, clock, ""));
    let wm = clock - LATENESS;
    let worker = start(&cfg);
    produce(&cfg, &msgs);
    wait_drained(&cfg, &msgs, wm);

    // From Redis (the speed layer).
    let (_rt, addr) = serve(lambda_state(&cfg));
    assert_known_answers(addr, Store::Redis, wm);
    let c: CampaignResponse = http::get_blocking(addr, "/v1/campaigns/999").ok();
    assert_eq!(c.campaign.views, 1, "the open window counts live: {c:?}");

    // Redis stopped: the same answers from ClickHouse (the batch layer, as of the boundary),
    // where the open window's campaign 999 is not final yet.
    worker.stop();
    redis.stop();
    assert_known_answers(addr, Store::Clickhouse, wm);
    http::get_blocking(addr, "/v1/campaigns/999").error(404, ErrorCode::NotFound);
}
