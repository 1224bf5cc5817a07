//! `eddy replay` on the real services (`scripts/services`): plans resolved against the broker
//! (times through offsets-for-times, tansu's answer for a time after the last record, a dry
//! run), results equal to live processing of the same records over HTTP, and an interrupted
//! replay (SIGKILL) resumed from its own checkpoint.

use eddy::pipeline::{Mode, RunOptions, run};
use eddy::replay::{EndSpec, ReplayRequest, StartSpec, resolve};
use eddy_core::{Config, EventType, Metrics, WindowSpec};
use eddy_load_gen::expected::WindowTotals;
use eddy_storage::keys;
use eddy_testkit::http;
use eddy_testkit::pipeline::{fresh_config, run_env};
use eddy_testkit::stores::{latest_checkpoint, redis_conn};
use eddy_testkit::wait::{wait_for, wait_until};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const T0: i64 = 1_767_225_600_000;
const WINDOW: i64 = 10_000;
const LATENESS: i64 = 2_000;
const PARTITIONS: i32 = 3;

/// The pipeline settings of these tests (10 s windows, 3 partitions, 2 workers, quick
/// checkpoints), on `cfg`'s own topics, prefix and database.
fn configure(cfg: &mut Config) {
    cfg.kafka.partitions = PARTITIONS;
    cfg.kafka.idle_timeout_ms = 300;
    cfg.pipeline.window_ms = WINDOW;
    cfg.pipeline.lateness_ms = LATENESS;
    cfg.pipeline.checkpoint_ms = 100;
    cfg.pipeline.max_records_per_epoch = 100;
    cfg.pipeline.workers = 2;
}

/// The `EDDY_*` environment of an `eddy` child using `cfg`.
fn env(cfg: &Config) -> Vec<(&'static str, String)> {
    let mut env = run_env(cfg);
    env.extend([
        (
            "EDDY_KAFKA__IDLE_TIMEOUT_MS",
            cfg.kafka.idle_timeout_ms.to_string(),
        ),
        ("EDDY_PIPELINE__WINDOW_MS", WINDOW.to_string()),
        ("EDDY_PIPELINE__LATENESS_MS", LATENESS.to_string()),
        ("EDDY_PIPELINE__CHECKPOINT_MS", "100".to_string()),
        ("EDDY_PIPELINE__MAX_RECORDS_PER_EPOCH", "100".to_string()),
        ("EDDY_LOG", "info".to_string()),
    ]);
    env
}

/// A live job's config (topics created) and a replay target's: the same topics, its own
/// Redis prefix and ClickHouse database.
fn configs(name: &str) -> (Config, Config) {
    let mut live = fresh_config(&format!("{name}_live"));
    configure(&mut live);
    eddy_testkit::block_on(eddy::kafka::create_topics(&live.kafka)).unwrap();
    let mut replay = fresh_config(&format!("{name}_out"));
    configure(&mut replay);
    replay.kafka = live.kafka.clone();
    (live, replay)
}

/// Event `i` of `partition` at event time `ts` (valid JSON), or a malformed message.
fn event(partition: i32, i: i64, ts: i64) -> Vec<u8> {
    let t = match i {
        i if i % 13 == 0 => "conversion",
        i if i % 5 == 0 => "click",
        _ => "view",
    };
    let amount = if t == "conversion" {
        format!(r#","amount":{}.25"#, i % 50 + 1)
    } else {
        String::new()
    };
    format!(
        r#"{{"event_id":"{partition}-{i}","ts":{ts},"user_id":{},"campaign_id":{},"event_type":"{t}"{amount}}}"#,
        i % 17,
        (i * 31 + partition as i64) % 5
    )
    .into_bytes()
}

/// `n` messages per partition: event time 100 ms apart, disordered by < lateness (none is
/// late), a malformed message every 97.
fn stream(n: i64) -> Vec<(i32, Vec<u8>)> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        for i in 0..n {
            let disorder = (i * 7919 + p as i64 * 31) % 1_500;
            out.push((p, event(p, i, T0 + i * 100 + p as i64 * 13 - disorder)));
            if i % 97 == 0 {
                out.push((p, b"{not json".to_vec()));
            }
        }
    }
    out
}

fn produce(cfg: &Config, msgs: &[(i32, Vec<u8>)]) {
    eddy_testkit::kafka::produce(&cfg.kafka, msgs.iter().map(|(p, b)| (*p, &b[..])));
}

/// The latest checkpoint saved under `name`: watermark and high offset per partition.
fn checkpoint(cfg: &Config, name: &str) -> Option<(i64, BTreeMap<i32, i64>)> {
    let rows = latest_checkpoint(&cfg.clickhouse, name);
    let wm = rows.first()?.watermark_ms;
    Some((
        wm,
        rows.iter().map(|r| (r.partition, r.high_offset)).collect(),
    ))
}

/// The name of the replay checkpoints of `cfg`'s saved plan, once there is one.
fn replay_checkpoint_name(cfg: &Config) -> Option<String> {
    let plan: eddy::replay::ReplayPlan = serde_json::from_value(saved_plan(cfg)?).unwrap();
    Some(plan.checkpoint_name())
}

/// Waits until the checkpoint `name` covers `msgs` and its watermark reaches the stream's
/// final one, and Redis's boundary caught up with it.
fn wait_drained(cfg: &Config, name: &str, msgs: &[(i32, Vec<u8>)]) {
    let mut want: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, _) in msgs {
        *want.entry(*p).or_default() += 1;
    }
    let wm = final_watermark(msgs);
    let mut con = redis_conn(&cfg.redis);
    wait_until(
        "the live checkpoint to cover every message",
        Duration::from_secs(120),
        || {
            checkpoint(cfg, name).is_some_and(|(w, highs)| {
                w >= wm
                    && highs == want
                    && redis::cmd("GET")
                        .arg(keys::boundary(&cfg.redis.prefix))
                        .query::<Option<i64>>(&mut con)
                        .unwrap()
                        .is_some_and(|b| b >= w)
            })
        },
    );
}

fn events(msgs: &[(i32, Vec<u8>)]) -> Vec<eddy_core::Event> {
    msgs.iter()
        .filter_map(|(_, b)| eddy_core::parse_event(b).ok())
        .collect()
}

fn final_watermark(msgs: &[(i32, Vec<u8>)]) -> i64 {
    events(msgs).iter().map(|e| e.ts_ms).max().unwrap() - LATENESS
}

/// Runs the live pipeline in this process until the returned flag is set.
fn start_live(cfg: &Config) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let opts = RunOptions::in_process(cfg);
    let stop = opts.stop.clone();
    let handle = std::thread::spawn(move || run(opts, Mode::Kafka).expect("live pipeline runs"));
    (stop, handle)
}

/// Produces `msgs`, runs the live job until it has read them all, stops it, and returns its
/// answers over HTTP.
fn live_answers(live: &Config, msgs: &[(i32, Vec<u8>)]) -> Value {
    produce(live, msgs);
    let (stop, handle) = start_live(live);
    wait_drained(live, &live.kafka.topic, msgs);
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap();
    answers(live)
}

/// The answers of a query server over `cfg`'s stores that must not depend on how the
/// records were read: every type's and campaign 1's series, the top list and each
/// campaign's engagement (values only, not where they came from or when).
fn answers(cfg: &Config) -> Value {
    let backend = eddy_query_server::LambdaBackend::new(&cfg.redis, &cfg.clickhouse).unwrap();
    let state = eddy_query_server::AppState::new(
        Arc::new(backend),
        Metrics::new(),
        eddy_query_server::ServerQueryLimits::from_config(cfg),
    );
    let (_runtime, addr) = http::serve(eddy_query_server::app(state));
    answers_at(addr)
}

/// [`answers`] of the query server at `addr`.
fn answers_at(addr: std::net::SocketAddr) -> Value {
    let pick = |v: &Value, fields: &[&str]| -> Value {
        fields
            .iter()
            .map(|f| (f.to_string(), v[*f].clone()))
            .collect()
    };
    let (from, to) = (T0 - 600_000, T0 + 3_600_000);
    let mut out = serde_json::Map::new();
    let mut series = |path: String| {
        let body: Value = http::get_blocking(addr, &path).json();
        let points: Vec<Value> = body["series"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: {body}"))
            .iter()
            .map(|p| {
                pick(
                    p,
                    &[
                        "window_start_ms",
                        "event_type",
                        "count",
                        "sum_amount",
                        "min_amount",
                        "max_amount",
                        "final",
                    ],
                )
            })
            .collect();
        out.insert(
            path,
            serde_json::json!({"boundary_ms": body["boundary_ms"], "series": points}),
        );
    };
    for t in EventType::ALL {
        series(format!("/v1/counts?event_type={t}&from={from}&to={to}"));
        series(format!(
            "/v1/counts?event_type={t}&campaign_id=1&from={from}&to={to}"
        ));
    }
    let engagement = [
        "campaign_id",
        "views",
        "clicks",
        "conversions",
        "revenue_micros",
        "score",
    ];
    let top: Value = http::get_blocking(addr, "/v1/campaigns/top?k=5").json();
    let top: Vec<Value> = top["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| pick(c, &engagement))
        .collect();
    out.insert("top".into(), Value::Array(top));
    for c in 0..5 {
        let path = format!("/v1/campaigns/{c}");
        let body: Value = http::get_blocking(addr, &path).json();
        out.insert(path, pick(&body, &engagement));
    }
    Value::Object(out)
}

/// Asserts the type series over HTTP hold exactly the oracle's counts (from-scratch totals
/// of the events).
fn assert_oracle(answers: &Value, msgs: &[(i32, Vec<u8>)]) {
    let o = WindowTotals::of(events(msgs), WindowSpec::new(WINDOW));
    let (from, to) = (T0 - 600_000, T0 + 3_600_000);
    for t in EventType::ALL {
        let path = format!("/v1/counts?event_type={t}&from={from}&to={to}");
        let got: Vec<(i64, u64)> = answers[&path]["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["window_start_ms"].as_i64().unwrap(),
                    p["count"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(i64, u64)> = o
            .types
            .values()
            .filter(|r| r.event_type == t)
            .map(|r| (r.window_start_ms, r.count))
            .collect();
        assert_eq!(got, want, "{path} against the oracle");
    }
}

/// `eddy replay ARGS` with `cfg`'s environment.
fn replay_cmd(cfg: &Config, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.arg("replay")
        .args(args)
        .envs(env(cfg))
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to its end (at most `limit`), killing it past that.
fn finish(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -9 {id}")])
                .status();
            panic!("eddy replay did not finish within {limit:?}");
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The saved plan of `cfg`'s replay: raw JSON.
fn saved_plan(cfg: &Config) -> Option<Value> {
    let mut con = redis_conn(&cfg.redis);
    let raw: Option<String> = redis::cmd("GET")
        .arg(keys::replay_plan(&cfg.redis.prefix, &cfg.kafka.topic))
        .query(&mut con)
        .unwrap();
    raw.map(|r| serde_json::from_str(&r).unwrap())
}

#[test]
fn replay_from_earliest_equals_live_processing() {
    let (live, target) = configs("replay_eq");
    let msgs = stream(400);
    let want = live_answers(&live, &msgs);
    assert_oracle(&want, &msgs);

    let out = finish(
        replay_cmd(&target, &["--from", "earliest"]),
        Duration::from_secs(180),
    );
    let log = stderr(&out);
    assert!(out.status.success(), "eddy replay failed:\n{log}");
    assert!(log.contains("replay plan saved"), "{log}");
    assert!(log.contains("replay finished"), "{log}");
    let got = answers(&target);
    assert_eq!(got, want, "replay answers equal the live job's");
    let plan = saved_plan(&target).expect("the plan is kept");
    assert_eq!(plan["done"], Value::Bool(true));
    // The replay's checkpoints have a name of their own (the live job's is untouched), and
    // are deleted once it is done (they would hold checkpoint retention back).
    assert!(checkpoint(&target, &target.kafka.topic).is_none());
    let name = replay_checkpoint_name(&target).unwrap();
    wait_until(
        "the replay's checkpoints deleted",
        Duration::from_secs(30),
        || checkpoint(&target, &name).is_none(),
    );
}

#[test]
fn a_replay_killed_midway_resumes_from_its_checkpoint_and_is_exact() {
    let (live, target) = configs("replay_kill");
    let msgs = stream(400);
    let want = live_answers(&live, &msgs);

    // A slow replay, killed (SIGKILL: no flush, no final checkpoint) once it has a
    // checkpoint part of the way.
    let total = msgs.len() as i64;
    let ops = format!("127.0.0.1:{}", free_port());
    let args = [
        "--from",
        "earliest",
        "--rate-limit",
        "250/s",
        "--metrics-listen",
        &ops,
    ];
    let mut first: Child = replay_cmd(&target, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let at_kill = wait_for(
        "a replay checkpoint part of the way",
        Duration::from_secs(120),
        || {
            let name = replay_checkpoint_name(&target)?;
            let (_, highs) = checkpoint(&target, &name)?;
            let read: i64 = highs.values().sum();
            (read > 0 && read < total).then_some(read)
        },
    );
    // The progress figures on /metrics: offsets per partition, fraction, rate, ETA.
    let samples = wait_for(
        "replay progress on /metrics",
        Duration::from_secs(30),
        || {
            let s = metrics(&ops)?;
            (s.get("eddy_replay_records_per_second")
                .is_some_and(|r| *r > 0.0))
            .then_some(s)
        },
    );
    for p in 0..PARTITIONS {
        let label = format!("{{partition=\"{p}\"}}");
        assert_eq!(
            samples[&format!("eddy_replay_offsets_total{label}")],
            405.0,
            "{samples:?}"
        );
        assert!(samples[&format!("eddy_replay_offsets_done{label}")] <= 405.0);
    }
    let ratio = samples["eddy_replay_progress_ratio"];
    assert!(ratio > 0.0 && ratio < 1.0, "{samples:?}");
    assert!(samples["eddy_replay_eta_seconds"] > 0.0, "{samples:?}");
    assert!(samples.contains_key("eddy_replay_to_ms"));
    first.kill().unwrap();
    first.wait().unwrap();
    let plan = saved_plan(&target).expect("the plan is saved before reading");
    assert_eq!(plan["done"], Value::Bool(false));

    let out = finish(
        replay_cmd(&target, &["--from", "earliest"]),
        Duration::from_secs(180),
    );
    let log = stderr(&out);
    assert!(out.status.success(), "eddy replay failed:\n{log}");
    assert!(log.contains("resuming the saved replay plan"), "{log}");
    assert!(
        log.contains("restoring checkpoint"),
        "resumed from its checkpoint:\n{log}"
    );
    assert!(!log.contains("replay plan saved"), "no new plan:\n{log}");
    eprintln!("killed after {at_kill} of {total} records");
    let resumed = saved_plan(&target).unwrap();
    assert_eq!(resumed["id"], plan["id"], "the same plan");
    assert_eq!(resumed["done"], Value::Bool(true));
    let got = answers(&target);
    assert_eq!(got, want, "replay answers equal the live job's");
    assert_oracle(&got, &msgs);
}

/// Produces `n` records to each of `partitions` of `cfg.kafka.topic` with Kafka timestamps
/// `ts0 + i * 1000`.
fn produce_timed(cfg: &Config, partitions: i32, n: i64, ts0: i64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("acks", "all")
        .create()
        .unwrap();
    eddy_testkit::block_on(async {
        for p in 0..partitions {
            for i in 0..n {
                let payload = format!("record {i}");
                producer
                    .send(
                        FutureRecord::<(), str>::to(&cfg.kafka.topic)
                            .partition(p)
                            .payload(&payload)
                            .timestamp(ts0 + i * 1000),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
        }
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every sample on `/metrics` of `addr` (`name{labels}` → value), if it answers.
fn metrics(addr: &str) -> Option<BTreeMap<String, f64>> {
    let url = format!("http://{addr}/metrics");
    let body =
        eddy_testkit::block_on(async move { reqwest::get(url).await.ok()?.text().await.ok() })?;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect(),
    )
}

fn request(from: StartSpec, to: EndSpec) -> ReplayRequest {
    ReplayRequest {
        from,
        to,
        then_live: false,
    }
}

#[test]
fn plans_resolve_times_once_and_a_time_after_the_last_record_is_the_end() {
    let mut cfg = fresh_config("replay_plan");
    cfg.kafka.partitions = 2;
    eddy_testkit::block_on(eddy::kafka::create_topics(&cfg.kafka)).unwrap();
    let ts0 = eddy_core::now_ms() - 3_600_000;
    produce_timed(&cfg, 2, 10, ts0);
    let starts = |from: StartSpec, to: EndSpec| -> Vec<(i64, i64)> {
        let plan = resolve(&cfg.kafka, &request(from, to)).unwrap();
        plan.check().unwrap();
        plan.partitions.iter().map(|p| (p.start, p.end)).collect()
    };
    assert_eq!(starts(StartSpec::Earliest, EndSpec::Now), vec![(0, 10); 2]);
    // The first record at or after the time; `--to` is exclusive.
    assert_eq!(
        starts(StartSpec::Time(ts0 + 5_500), EndSpec::Time(ts0 + 8_000)),
        vec![(6, 8); 2]
    );
    assert_eq!(
        starts(StartSpec::Time(ts0 - 60_000), EndSpec::Now),
        vec![(0, 10); 2]
    );
    // A time after the last record: nothing to read (tansu 0.6 answers offset 0, which
    // would rewind the replay to the start of each partition).
    let after = resolve(
        &cfg.kafka,
        &request(StartSpec::Time(ts0 + 3_600_000), EndSpec::Now),
    )
    .unwrap();
    assert_eq!(
        after
            .partitions
            .iter()
            .map(|p| (p.start, p.end))
            .collect::<Vec<_>>(),
        vec![(10, 10); 2],
        "{}",
        after.table()
    );
    assert_eq!(after.records(), 0);
    assert_eq!(
        starts(StartSpec::Earliest, EndSpec::Time(ts0 + 3_600_000)),
        vec![(0, 10); 2]
    );
    // Offsets past the log end, or not naming every partition, are refused.
    let past = StartSpec::Offsets([(0, 11), (1, 0)].into_iter().collect());
    assert!(resolve(&cfg.kafka, &request(past, EndSpec::Now)).is_err());
    let one = StartSpec::Offsets([(0, 1)].into_iter().collect());
    assert!(resolve(&cfg.kafka, &request(one, EndSpec::Now)).is_err());

    // `--dry-run` prints the plan, reads and saves nothing.
    let at = |ms: i64| ms.to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args([
        "replay",
        "--dry-run",
        "--from",
        &at(ts0 + 5_500),
        "--to",
        &at(ts0 + 8_000),
    ])
    .envs(run_env(&cfg))
    .stdin(Stdio::null());
    let out = finish(cmd, Duration::from_secs(60));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(table.contains("(4 records)"), "{table}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["0", "6", "8", "2", "0", "10", "yes"],
            vec!["1", "6", "8", "2", "0", "10", "yes"]
        ],
        "{table}"
    );
    assert!(saved_plan(&cfg).is_none(), "a dry run saves no plan");
}

#[test]
fn then_live_goes_on_as_the_live_job_once_caught_up() {
    let (_, target) = configs("replay_live");
    let first = stream(200);
    produce(&target, &first);
    let mut child = replay_cmd(&target, &["--from", "earliest", "--then", "live"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Caught up: the replay's checkpoint becomes the live job's (saved under the topic).
    wait_drained(&target, &target.kafka.topic, &first);
    assert_eq!(saved_plan(&target).unwrap()["done"], Value::Bool(true));
    let name = replay_checkpoint_name(&target).unwrap();
    wait_until(
        "the replay's checkpoints deleted",
        Duration::from_secs(30),
        || checkpoint(&target, &name).is_none(),
    );
    // Records produced after the plan was made are read as by `eddy run`.
    let later: Vec<(i32, Vec<u8>)> = (0..PARTITIONS)
        .flat_map(|p| (200..260).map(move |i| (p, event(p, i, T0 + i * 100 + p as i64 * 13))))
        .collect();
    produce(&target, &later);
    let all: Vec<(i32, Vec<u8>)> = first.iter().chain(&later).cloned().collect();
    wait_drained(&target, &target.kafka.topic, &all);
    assert!(child.try_wait().unwrap().is_none(), "still running");
    assert_oracle(&answers(&target), &all);
    // Offsets are committed for the live job's consumer group again.
    let committer = eddy::kafka::KafkaCommitter::new(&target.kafka).unwrap();
    wait_until("offsets committed", Duration::from_secs(30), || {
        committer
            .committed(&(0..PARTITIONS).collect::<Vec<_>>())
            .unwrap()
            .len()
            == PARTITIONS as usize
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // A restart after the hand-over (its checkpoints record no stored state: the replay
    // started from empty state) rebuilds the sliding state by re-reading the window, and is
    // exact: engagement over the whole window, not only over the windows still open.
    let more: Vec<(i32, Vec<u8>)> = (0..PARTITIONS)
        .flat_map(|p| (260..300).map(move |i| (p, event(p, i, T0 + i * 100 + p as i64 * 13))))
        .collect();
    produce(&target, &more);
    let all: Vec<(i32, Vec<u8>)> = all.iter().chain(&more).cloned().collect();
    let (stop, handle) = start_live(&target);
    wait_drained(&target, &target.kafka.topic, &all);
    let got = answers(&target);
    assert_oracle(&got, &all);
    let want = eddy_load_gen::expected::engagement(
        &events(&all),
        WindowSpec::new(WINDOW),
        target.engagement.sliding_ms,
        final_watermark(&all),
    );
    let top = got["top"].as_array().unwrap();
    assert!(!top.is_empty());
    for c in top {
        let id = c["campaign_id"].as_u64().unwrap();
        let values = ["views", "clicks", "conversions"].map(|f| c[f].as_i64().unwrap());
        assert_eq!(values[..], want[&id][..3], "campaign {id}'s engagement");
    }
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap();
}

#[test]
fn a_replay_of_an_offset_range_counts_exactly_that_range() {
    let (_, target) = configs("replay_range");
    let msgs = stream(300);
    produce(&target, &msgs);
    let (from, to) = (50usize, 250usize);
    // The messages at offsets [from, to) of each partition (offsets follow produce order).
    let mut at: BTreeMap<i32, usize> = BTreeMap::new();
    let range: Vec<(i32, Vec<u8>)> = msgs
        .iter()
        .filter(|(p, _)| {
            let o = at.entry(*p).or_default();
            *o += 1;
            (from..to).contains(&(*o - 1))
        })
        .cloned()
        .collect();
    let spec = |o: usize| {
        (0..PARTITIONS)
            .map(|p| format!("{p}:{o}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let out = finish(
        replay_cmd(&target, &["--from", &spec(from), "--to", &spec(to)]),
        Duration::from_secs(180),
    );
    let log = stderr(&out);
    assert!(out.status.success(), "eddy replay failed:\n{log}");
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        plan.contains(&format!("({} records)", range.len())),
        "{plan}"
    );
    assert_oracle(&answers(&target), &range);
}

/// `eddy ARGS` with `cfg`'s environment, run to its end.
fn eddy(cfg: &Config, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(args).envs(env(cfg)).stdin(Stdio::null());
    finish(cmd, Duration::from_secs(60))
}

/// Kills the child on drop (a failed assertion must not leave a job running).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The campaigns' scores in `answers`.
fn scores(answers: &Value) -> Vec<f64> {
    (0..5)
        .map(|c| {
            answers[&format!("/v1/campaigns/{c}")]["score"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_replay_into_a_version_is_served_once_promoted() {
    let (live, _) = configs("replay_version");
    let version = eddy_core::version::Version::parse("v2").unwrap();
    let built = live.for_version(&version);
    eddy_testkit::stores::drop_database(&built.clickhouse);
    let first = stream(200);
    produce(&live, &first);
    // The live job (a process: it must stop by itself once another version is promoted).
    let mut run = Command::new(env!("CARGO_BIN_EXE_eddy"));
    run.arg("run")
        .envs(env(&live))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut base_job = Killed(run.spawn().unwrap());
    wait_drained(&live, &live.kafka.topic, &first);

    // `eddy serve`'s backend, switching versions on `{prefix}:serving`.
    let backend =
        Arc::new(eddy_query_server::VersionedBackend::new(&live.redis, &live.clickhouse).unwrap());
    let _refresher =
        eddy_query_server::VersionedBackend::spawn_refresher(&backend, Duration::from_millis(100))
            .unwrap();
    let state = eddy_query_server::AppState::new(
        backend.clone(),
        Metrics::new(),
        eddy_query_server::ServerQueryLimits::from_config(&live),
    );
    let (_runtime, addr) = http::serve(eddy_query_server::app(state));
    let base_answers = answers(&live);
    assert_eq!(answers_at(addr), base_answers, "base is served");
    assert_oracle(&base_answers, &first);

    // Nothing to promote yet.
    let out = eddy(&live, &["promote", "v2"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    // Rebuild into version v2 with other score weights, beside the live job, then keep it
    // current (`--then live`).
    let mut replay = replay_cmd(
        &live,
        &[
            "--from",
            "earliest",
            "--then",
            "live",
            "--target",
            "version:v2",
        ],
    );
    replay
        .env("EDDY_ENGAGEMENT__WEIGHT_CLICK", "9")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut v2_job = Killed(replay.spawn().unwrap());
    wait_until("v2's database", Duration::from_secs(60), || {
        eddy_sinks::check_schema(&built.clickhouse).is_ok()
    });
    wait_drained(&built, &built.kafka.topic, &first);
    let v2_answers = answers(&built);
    assert_oracle(&v2_answers, &first);
    assert_ne!(
        scores(&v2_answers),
        scores(&base_answers),
        "v2 scores clicks 9"
    );
    // Built beside the live one, not served yet: readers still see base.
    assert_eq!(answers_at(addr), base_answers);
    assert_eq!(backend.serving(), eddy_core::version::Version::Base);
    let listed = String::from_utf8(eddy(&live, &["versions"]).stdout).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("base ") && l.contains("SERVING")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("v2 ") && l.contains("job live")),
        "{listed}"
    );

    let out = eddy(&live, &["promote", "v2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "serving version v2 (was base)"
    );
    wait_until(
        "the query server serves v2",
        Duration::from_secs(10),
        || answers_at(addr) == v2_answers,
    );
    // The old live job stops by itself (cleanly: its version is no longer served).
    let status = wait_for("the base job to stop", Duration::from_secs(30), || {
        base_job.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");

    // A served version is not dropped; an unknown one neither.
    let out = eddy(&live, &["versions", "drop", "v2"]);
    assert!(stderr(&out).contains("it is served"), "{}", stderr(&out));
    let out = eddy(&live, &["versions", "drop", "v3"]);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    // Redis loses the served version's key: neither the server nor the job acts on the
    // absence. v2's job is now the live one: later records reach the served answers.
    let _: () = redis::cmd("DEL")
        .arg(keys::serving(&live.redis.prefix))
        .query(&mut redis_conn(&live.redis))
        .unwrap();
    let later: Vec<(i32, Vec<u8>)> = (0..PARTITIONS)
        .flat_map(|p| (200..260).map(move |i| (p, event(p, i, T0 + i * 100 + p as i64 * 13))))
        .collect();
    produce(&live, &later);
    let all: Vec<(i32, Vec<u8>)> = first.iter().chain(&later).cloned().collect();
    wait_drained(&built, &built.kafka.topic, &all);
    assert_oracle(&answers_at(addr), &all);
    assert_eq!(backend.serving(), version);
    assert!(v2_job.0.try_wait().unwrap().is_none(), "v2's job runs");

    // Base without a job is not promoted (unless forced: a frozen base).
    let out = eddy(&live, &["promote", "base"]);
    assert!(
        stderr(&out).contains("no job keeps it current"),
        "{}",
        stderr(&out)
    );
    let out = eddy(&live, &["promote", "base", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(
        "the query server serves base again",
        Duration::from_secs(10),
        || answers_at(addr) == base_answers,
    );
    // v2's job stops once base is promoted back; then v2 can be dropped, keys and database.
    let status = wait_for("v2's job to stop", Duration::from_secs(30), || {
        v2_job.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    let out = eddy(&live, &["versions", "drop", "v2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", built.redis.prefix))
        .query(&mut redis_conn(&live.redis))
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let dbs: Vec<String> = eddy_testkit::stores::ch_fetch(
        &live.clickhouse,
        "SELECT name FROM system.databases WHERE name = ?",
        |q| q.bind(built.clickhouse.database.as_str()),
    );
    assert!(dbs.is_empty(), "{dbs:?}");
    let listed = String::from_utf8(eddy(&live, &["versions"]).stdout).unwrap();
    assert!(!listed.contains("v2"), "{listed}");
}
