//! The replay plan: `--from` / `--to` resolved once to per-partition offsets, checked against
//! what the broker retains, and saved in Redis before anything is read.

use super::ReplayError;
use crate::kafka::{KafkaIoError, client, topic_partitions};
use eddy_core::config::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How long one broker call of the planning may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a replay starts (`--from`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartSpec {
    /// The first offset the broker still retains, per partition.
    Earliest,
    /// The first record whose Kafka timestamp is at or after this time (epoch ms).
    Time(i64),
    /// Explicit offsets, one per partition (every partition named).
    Offsets(BTreeMap<i32, i64>),
}

/// Where a replay ends (`--to`), exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndSpec {
    /// The end of each partition when the plan is made.
    Now,
    /// The first record whose Kafka timestamp is at or after this time (epoch ms): records
    /// before it are replayed.
    Time(i64),
    /// Explicit end offsets (exclusive), one per partition.
    Offsets(BTreeMap<i32, i64>),
}

/// Parses `--from`: `earliest`, an RFC 3339 time, epoch ms, or `partition:offset,…`.
///
/// ```
/// use eddy::replay::{StartSpec, parse_start};
/// assert_eq!(parse_start("earliest").unwrap(), StartSpec::Earliest);
/// assert_eq!(parse_start("1767225600000").unwrap(), StartSpec::Time(1_767_225_600_000));
/// assert_eq!(parse_start("2026-01-01T00:00:00Z").unwrap(), StartSpec::Time(1_767_225_600_000));
/// let StartSpec::Offsets(o) = parse_start("0:10,1:20").unwrap() else { panic!() };
/// assert_eq!(o.into_iter().collect::<Vec<_>>(), vec![(0, 10), (1, 20)]);
/// assert!(parse_start("yesterday").is_err());
/// ```
pub fn parse_start(s: &str) -> Result<StartSpec, ReplayError> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("earliest") {
        return Ok(StartSpec::Earliest);
    }
    if s.contains(':') && !s.contains('T') && !s.contains('t') {
        return parse_offsets(s).map(StartSpec::Offsets);
    }
    parse_time(s).map(StartSpec::Time)
}

/// Parses `--to`: `now`, an RFC 3339 time, epoch ms, or `partition:offset,…` (exclusive).
///
/// ```
/// use eddy::replay::{EndSpec, parse_end};
/// assert_eq!(parse_end("now").unwrap(), EndSpec::Now);
/// assert_eq!(parse_end("2026-01-01T01:00:00+01:00").unwrap(), EndSpec::Time(1_767_225_600_000));
/// assert!(matches!(parse_end("0:5").unwrap(), EndSpec::Offsets(_)));
/// ```
pub fn parse_end(s: &str) -> Result<EndSpec, ReplayError> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(EndSpec::Now);
    }
    if s.contains(':') && !s.contains('T') && !s.contains('t') {
        return parse_offsets(s).map(EndSpec::Offsets);
    }
    parse_time(s).map(EndSpec::Time)
}

fn parse_offsets(s: &str) -> Result<BTreeMap<i32, i64>, ReplayError> {
    let bad = || ReplayError::BadSpec(format!("{s:?}: expected partition:offset,…"));
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (p, o) = item.split_once(':').ok_or_else(bad)?;
        let p: i32 = p.trim().parse().map_err(|_| bad())?;
        let o: i64 = o.trim().parse().map_err(|_| bad())?;
        if p < 0 || o < 0 || out.insert(p, o).is_some() {
            return Err(bad());
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// Epoch ms, or an RFC 3339 time (`2026-01-01T00:00:00Z`, fractional seconds and a numeric
/// offset allowed).
fn parse_time(s: &str) -> Result<i64, ReplayError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    rfc3339_ms(s).ok_or_else(|| {
        ReplayError::BadSpec(format!(
            "{s:?}: expected earliest/now, an RFC 3339 time, epoch ms or partition:offset,…"
        ))
    })
}

fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 3)];
        frac_ms = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let sign = if *c == b'+' { 1 } else { -1 };
            sign * (num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset_s) * 1000 + frac_ms)
}

/// What was asked of a replay (the plan is resumed only for the same request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRequest {
    /// `--from`.
    pub from: StartSpec,
    /// `--to`.
    pub to: EndSpec,
    /// `--then live`: go on as the live job once caught up (else stop).
    pub then_live: bool,
}

/// One partition of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlan {
    /// The partition.
    pub partition: i32,
    /// First offset to read.
    pub start: i64,
    /// Offset to stop before (exclusive).
    pub end: i64,
    /// The broker's log start (low watermark) when the plan was made.
    pub low: i64,
    /// The broker's log end (high watermark) when the plan was made.
    pub high: i64,
    /// How a time was resolved when the broker's answer was corrected (tansu's offset 0 for
    /// a time after the last record), if it was.
    pub note: Option<String>,
}

impl PartitionPlan {
    /// Records to read.
    pub fn records(&self) -> i64 {
        (self.end - self.start).max(0)
    }
    /// Whether the broker still held the start when the plan was made.
    pub fn retained(&self) -> bool {
        self.start >= self.low || self.start == self.end
    }
}

/// A replay plan: per-partition offsets resolved once, saved before reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayPlan {
    /// Unique id (wall-clock ms of the planning); names the replay's checkpoints.
    pub id: i64,
    /// The source topic.
    pub topic: String,
    /// What was asked.
    pub request: ReplayRequest,
    /// One entry per partition, sorted.
    pub partitions: Vec<PartitionPlan>,
    /// Set once the replay read its whole plan and every result is durable.
    pub done: bool,
}

impl ReplayPlan {
    /// Records the plan reads in all.
    pub fn records(&self) -> i64 {
        self.partitions.iter().map(PartitionPlan::records).sum()
    }

    /// The name the replay's checkpoints are saved under (the live job's are under the topic).
    pub fn checkpoint_name(&self) -> String {
        format!(
            "{}{}{}",
            self.topic,
            eddy_storage::REPLAY_CHECKPOINT_MARK,
            self.id
        )
    }

    /// End offset of `partition` (exclusive).
    pub fn end(&self, partition: i32) -> Option<i64> {
        self.partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.end)
    }

    /// Refuses a plan the broker cannot serve: a start no longer retained (below the log
    /// start), or a start after the end.
    pub fn check(&self) -> Result<(), ReplayError> {
        for p in &self.partitions {
            if !p.retained() {
                return Err(ReplayError::NotRetained {
                    topic: self.topic.clone(),
                    partition: p.partition,
                    start: p.start,
                    low: p.low,
                });
            }
            if p.start > p.end {
                return Err(ReplayError::BadSpec(format!(
                    "partition {}: --from resolves to offset {}, after --to's {}",
                    p.partition, p.start, p.end
                )));
            }
        }
        Ok(())
    }

    /// The `--dry-run` table: per partition the resolved offsets, records to read, the
    /// broker's log range and whether it still retains the start.
    pub fn table(&self) -> String {
        let mut out = format!(
            "replay plan of topic {} ({} records)\n{:>9} {:>12} {:>12} {:>12} {:>12} {:>12}  retained\n",
            self.topic,
            self.records(),
            "partition",
            "start",
            "end",
            "records",
            "log start",
            "log end"
        );
        for p in &self.partitions {
            let _ = writeln!(
                out,
                "{:>9} {:>12} {:>12} {:>12} {:>12} {:>12}  {}{}",
                p.partition,
                p.start,
                p.end,
                p.records(),
                p.low,
                p.high,
                if p.retained() { "yes" } else { "NO (expired)" },
                p.note
                    .as_deref()
                    .map(|n| format!("  ({n})"))
                    .unwrap_or_default()
            );
        }
        out
    }
}

/// Resolves `request` against the broker: one offsets-for-times call per time, every answer
/// checked against the partition's watermarks (see [`resolve_time`]). Does not check
/// retention ([`ReplayPlan::check`] does), so `--dry-run` can show an expired start.
pub fn resolve(cfg: &KafkaConfig, request: &ReplayRequest) -> Result<ReplayPlan, ReplayError> {
    let parts = topic_partitions(cfg, &cfg.topic)?;
    let consumer: BaseConsumer = client(cfg)
        .create()
        .map_err(|source| KafkaIoError::Client {
            op: "replay plan client",
            source,
        })?;
    let named = |m: &BTreeMap<i32, i64>, flag: &str| -> Result<(), ReplayError> {
        let keys: Vec<i32> = m.keys().copied().collect();
        if keys != parts {
            return Err(ReplayError::BadSpec(format!(
                "{flag} names partitions {keys:?}; topic {} has {parts:?} (name each once)",
                cfg.topic
            )));
        }
        Ok(())
    };
    if let StartSpec::Offsets(m) = &request.from {
        named(m, "--from")?;
    }
    if let EndSpec::Offsets(m) = &request.to {
        named(m, "--to")?;
    }
    let mut partitions = Vec::new();
    for &p in &parts {
        let (low, high) = consumer
            .fetch_watermarks(&cfg.topic, p, BROKER_TIMEOUT)
            .map_err(|source| KafkaIoError::Client {
                op: "fetch watermarks",
                source,
            })?;
        let mut notes = Vec::new();
        let start = match &request.from {
            StartSpec::Earliest => low,
            StartSpec::Time(t) => {
                let (o, note) = resolve_time(cfg, &consumer, p, *t, low, high)?;
                notes.extend(note);
                o
            }
            StartSpec::Offsets(m) => m[&p],
        };
        let end = match &request.to {
            EndSpec::Now => high,
            EndSpec::Time(t) => {
                let (o, note) = resolve_time(cfg, &consumer, p, *t, low, high)?;
                notes.extend(note);
                o
            }
            EndSpec::Offsets(m) => m[&p],
        };
        if start > high || end > high {
            return Err(ReplayError::BadSpec(format!(
                "partition {p}: offset {} is past the log end {high}",
                start.max(end)
            )));
        }
        partitions.push(PartitionPlan {
            partition: p,
            start,
            end,
            low,
            high,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        });
    }
    Ok(ReplayPlan {
        id: eddy_core::now_ms(),
        topic: cfg.topic.clone(),
        request: request.clone(),
        partitions,
        done: false,
    })
}

/// The offset of the first record of `partition` with a Kafka timestamp at or after `t`, or
/// the log end `high` when there is none.
///
/// The broker's answer is checked, not trusted: tansu 0.6 answers offset 0 (not −1, "none")
/// for a time after the last record, which would silently rewind a replay to the start of
/// the partition. So the record at the answered offset must carry a timestamp `>= t`; if it
/// does not and the partition's last record is older than `t`, the answer means "none" and
/// the end is used (with a note in the plan). An answer outside `[low, high]` is clamped to
/// `high` above and left below `low` for [`ReplayPlan::check`] to refuse.
pub fn resolve_time(
    cfg: &KafkaConfig,
    consumer: &BaseConsumer,
    partition: i32,
    t: i64,
    low: i64,
    high: i64,
) -> Result<(i64, Option<String>), ReplayError> {
    if high <= low {
        return Ok((high, None));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&cfg.topic, partition, Offset::Offset(t))
        .map_err(|source| KafkaIoError::Client {
            op: "offsets-for-times list",
            source,
        })?;
    let got = consumer
        .offsets_for_times(tpl, BROKER_TIMEOUT)
        .map_err(|source| KafkaIoError::Client {
            op: "offsets for times",
            source,
        })?;
    let answer = got
        .find_partition(&cfg.topic, partition)
        .map(|e| e.offset());
    let o = match answer {
        Some(Offset::Offset(o)) if o >= 0 => o,
        // None: no record at or after `t`.
        _ => return Ok((high, None)),
    };
    if o >= high {
        return Ok((high, None));
    }
    if o < low {
        return Ok((o, None));
    }
    if record_timestamp(cfg, partition, o)? >= t {
        return Ok((o, None));
    }
    let last = record_timestamp(cfg, partition, high - 1)?;
    if last < t {
        let note = format!(
            "the broker answered offset {o} for time {t}, after the last record (at {last}): read as the log end"
        );
        tracing::warn!(partition, offset = o, time_ms = t, "{note}");
        return Ok((high, Some(note)));
    }
    Err(ReplayError::BadSpec(format!(
        "partition {partition}: the broker answered offset {o} for time {t}, but that record is \
         older and later ones are not: record timestamps are not ordered; use partition:offset"
    )))
}

/// The Kafka timestamp (ms) of the record at `offset` of `partition`.
fn record_timestamp(cfg: &KafkaConfig, partition: i32, offset: i64) -> Result<i64, ReplayError> {
    let consumer: BaseConsumer = client(cfg)
        .set("group.id", format!("{}-replay-plan", cfg.group_id))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|source| KafkaIoError::Client {
            op: "replay timestamp client",
            source,
        })?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&cfg.topic, partition, Offset::Offset(offset))
        .and_then(|()| consumer.assign(&tpl))
        .map_err(|source| KafkaIoError::Client {
            op: "replay timestamp assign",
            source,
        })?;
    let deadline = Instant::now() + BROKER_TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.partition() == partition && m.offset() >= offset => {
                return m.timestamp().to_millis().ok_or_else(|| {
                    ReplayError::BadSpec(format!(
                        "partition {partition}: record {offset} has no timestamp; use partition:offset"
                    ))
                });
            }
            Some(Err(source)) => {
                return Err(KafkaIoError::Client {
                    op: "replay timestamp fetch",
                    source,
                }
                .into());
            }
            _ => {}
        }
    }
    Err(KafkaIoError::Timeout {
        op: "replay timestamp fetch",
    }
    .into())
}

/// The saved plan of one replay target, in Redis ([`eddy_storage::keys::replay_plan`]).
pub struct PlanStore {
    conn: redis::Connection,
    key: String,
}

impl PlanStore {
    /// Connects to `redis_url`; the plan of `topic` under output prefix `prefix`.
    pub fn connect(redis_url: &str, prefix: &str, topic: &str) -> Result<Self, ReplayError> {
        let client = redis::Client::open(redis_url)?;
        Ok(Self {
            conn: client.get_connection_with_timeout(Duration::from_secs(5))?,
            key: eddy_storage::keys::replay_plan(prefix, topic),
        })
    }

    /// The saved plan, if any.
    pub fn load(&mut self) -> Result<Option<ReplayPlan>, ReplayError> {
        let raw: Option<String> = redis::cmd("GET").arg(&self.key).query(&mut self.conn)?;
        raw.map(|r| serde_json::from_str(&r).map_err(|e| ReplayError::Plan(e.to_string())))
            .transpose()
    }

    /// Saves `plan` (replacing any).
    pub fn save(&mut self, plan: &ReplayPlan) -> Result<(), ReplayError> {
        let json = serde_json::to_string(plan).map_err(|e| ReplayError::Plan(e.to_string()))?;
        redis::cmd("SET")
            .arg(&self.key)
            .arg(json)
            .query::<()>(&mut self.conn)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2026-01-01T00:00:00.5Z"),
            Some(1_767_225_600_500)
        );
        assert_eq!(
            rfc3339_ms("2026-01-01T00:00:00.123456Z"),
            Some(1_767_225_600_123)
        );
        assert_eq!(
            rfc3339_ms("2025-12-31T19:00:00-05:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(rfc3339_ms("2024-02-29T12:00:00Z"), Some(1_709_208_000_000));
        assert_eq!(rfc3339_ms("2026-13-01T00:00:00Z"), None);
        assert_eq!(rfc3339_ms("2026-01-01T00:00:00"), None);
        assert_eq!(rfc3339_ms("2026-01-01T00:00:00+0100"), None);
        assert!(parse_start("0:1,0:2").is_err(), "a partition named twice");
        assert!(parse_end("0:-1").is_err());
    }

    #[test]
    fn a_plan_refuses_an_expired_start() {
        let plan = |start, low| ReplayPlan {
            id: 1,
            topic: "t".into(),
            request: ReplayRequest {
                from: StartSpec::Earliest,
                to: EndSpec::Now,
                then_live: false,
            },
            partitions: vec![PartitionPlan {
                partition: 0,
                start,
                end: 10,
                low,
                high: 10,
                note: None,
            }],
            done: false,
        };
        assert!(plan(3, 3).check().is_ok());
        let err = plan(2, 3).check().unwrap_err();
        assert!(err.to_string().contains("no longer retained"), "{err}");
        assert!(plan(2, 3).table().contains("NO (expired)"));
    }
}
