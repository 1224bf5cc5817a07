//! Deterministic, seeded event generator: Zipf-skewed users and campaigns, a view → click →
//! conversion funnel with amounts on conversions, and configurable fractions of out-of-order,
//! late and malformed messages. The same generator feeds `eddy demo`, the tests, the
//! benchmarks and (later) the Kafka load generator.

pub mod expected;
pub mod plot;
pub mod report;
#[cfg(feature = "runner")]
pub mod runner;
#[cfg(feature = "runner")]
pub mod timeline;

use eddy_core::{Event, EventType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Write as _;

/// Generator parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Random seed.
    pub seed: u64,
    /// Distinct users.
    pub users: u64,
    /// Distinct campaigns.
    pub campaigns: u64,
    /// Zipf exponent of campaign popularity (0 = uniform).
    pub campaign_zipf: f64,
    /// Zipf exponent of user activity (0 = uniform).
    pub user_zipf: f64,
    /// Event time of the first event, epoch ms.
    pub start_ts_ms: i64,
    /// Events per second of event time (sets how fast event time advances).
    pub events_per_sec: f64,
    /// Probability that an event is a click / a conversion (the rest are views).
    pub click_rate: f64,
    /// Probability that an event is a conversion.
    pub conversion_rate: f64,
    /// Out-of-order events are shifted back by up to this many ms (keep below the lateness).
    pub max_disorder_ms: i64,
    /// Fraction of events shifted back by `late_by_ms` (late once the watermark has passed).
    pub late_fraction: f64,
    /// How far late events are shifted back, ms.
    pub late_by_ms: i64,
    /// Fraction of messages that are malformed.
    pub malformed_fraction: f64,
    /// Distinguishes the event ids of one run from another's (`"{run_id}-{seed}-{n}"`).
    pub run_id: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            users: 100_000,
            campaigns: 1_000,
            campaign_zipf: 1.1,
            user_zipf: 0.8,
            start_ts_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            events_per_sec: 10_000.0,
            click_rate: 0.08,
            conversion_rate: 0.01,
            max_disorder_ms: 2_000,
            late_fraction: 0.0,
            late_by_ms: 120_000,
            malformed_fraction: 0.0,
            run_id: 0,
        }
    }
}

/// One generated message.
#[derive(Debug, Clone, PartialEq)]
pub enum Generated {
    /// A valid event and its JSON encoding.
    Valid(Event, Vec<u8>),
    /// A malformed message (bad JSON, unknown type, negative amount, ...).
    Malformed(Vec<u8>),
}

impl Generated {
    /// The message bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Generated::Valid(_, b) | Generated::Malformed(b) => b,
        }
    }
}

/// Zipf sampler over `0..n` by inverse CDF: the first `k` whose cumulative probability reaches
/// a uniform draw `u`, searched within the range a guide table gives for `u` (Chen and Asau's
/// indexed search). The answer is the binary search's over the whole CDF, draw for draw; a
/// whole-CDF search misses the cache at every level for a million users (it was 5% of the
/// `state_rss` CPU at 1 M users), the guided one reads a few neighbouring entries.
#[derive(Debug, Clone)]
struct Zipf {
    cdf: Vec<f64>,
    /// `guide[j]`: the first `k` with `cdf[k] >= j / G`, for `j` in `0..=G` (`G = n`).
    guide: Vec<u32>,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf = Vec::with_capacity(n as usize);
        for k in 1..=n {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        let g = cdf.len();
        let mut guide = Vec::with_capacity(g + 1);
        let mut k = 0;
        for j in 0..=g {
            let at = j as f64 / g as f64;
            while k < g && cdf[k] < at {
                k += 1;
            }
            guide.push(u32::try_from(k).expect("under 2^32 keys"));
        }
        Self { cdf, guide }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> u64 {
        let u: f64 = rng.random();
        self.index_of(u)
    }

    /// The first `k` with `cdf[k] >= u` (the last key if none), for `u` in `[0, 1)`.
    fn index_of(&self, u: f64) -> u64 {
        let g = self.cdf.len();
        // `u`'s guide cell, widened by one cell each way so that rounding in `u * g` cannot
        // put the answer outside: every key before `lo` has a CDF below `(j - 1) / g`, under
        // `u`, and the key at `hi` (if any) has one at or above `(j + 2) / g`, above `u`.
        let j = ((u * g as f64) as usize).min(g);
        let lo = self.guide[j.saturating_sub(1)] as usize;
        let hi = self.guide[(j + 2).min(g)] as usize;
        let k = lo + self.cdf[lo..hi].partition_point(|&c| c < u);
        k.min(g - 1) as u64
    }
}

/// The generator: an infinite, deterministic iterator of messages.
#[derive(Debug, Clone)]
pub struct Generator {
    cfg: GenConfig,
    rng: ChaCha8Rng,
    users: Zipf,
    campaigns: Zipf,
    n: u64,
    buf: String,
}

impl Generator {
    /// A generator for `cfg`.
    pub fn new(cfg: GenConfig) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            users: Zipf::new(cfg.users.max(1), cfg.user_zipf),
            campaigns: Zipf::new(cfg.campaigns.max(1), cfg.campaign_zipf),
            cfg,
            n: 0,
            buf: String::with_capacity(192),
        }
    }

    /// Messages generated so far.
    pub fn generated(&self) -> u64 {
        self.n
    }

    /// The nominal event time of the next message (before disorder).
    pub fn next_nominal_ts(&self) -> i64 {
        self.cfg.start_ts_ms + (self.n as f64 * 1000.0 / self.cfg.events_per_sec) as i64
    }

    /// The `event_id` the generator gave the `n`-th message (1-based) of a run.
    pub fn event_id(&self, n: u64) -> String {
        format!("{}-{}-{}", self.cfg.run_id, self.cfg.seed, n)
    }

    /// Generates the next message.
    pub fn next_message(&mut self) -> Generated {
        let event = match self.draw() {
            Ok(event) => event,
            Err(bad) => return Generated::Malformed(bad.to_vec()),
        };
        let Event {
            ts_ms: ts,
            user_id,
            campaign_id,
            event_type,
            amount_micros,
        } = event;
        self.buf.clear();
        let _ = write!(
            self.buf,
            "{{\"event_id\":\"{}-{}-{}\",\"ts\":{},\"user_id\":{},\"campaign_id\":{},\"event_type\":\"{}\",\"product_id\":\"p{}\"",
            self.cfg.run_id,
            self.cfg.seed,
            self.n,
            ts,
            user_id,
            campaign_id,
            event_type.as_str(),
            campaign_id % 97
        );
        if let Some(a) = amount_micros {
            let _ = write!(
                self.buf,
                ",\"amount\":{}.{:02}",
                a / 1_000_000,
                (a % 1_000_000) / 10_000
            );
        }
        self.buf.push('}');
        Generated::Valid(event, self.buf.as_bytes().to_vec())
    }

    /// The next message's random draws: its event, or the bytes of a malformed message.
    fn draw(&mut self) -> Result<Event, &'static [u8]> {
        let nominal = self.next_nominal_ts();
        self.n += 1;
        let rng = &mut self.rng;
        if self.cfg.malformed_fraction > 0.0 && rng.random_bool(self.cfg.malformed_fraction) {
            let bad: &[u8] = match rng.random_range(0..4) {
                0 => b"{\"event_id\": \"broken",
                1 => b"{\"event_id\":\"x\",\"ts\":1767225600000,\"user_id\":1,\"campaign_id\":1,\"event_type\":\"like\"}",
                2 => b"{\"event_id\":\"x\",\"ts\":1767225600000,\"user_id\":1,\"campaign_id\":1,\"event_type\":\"conversion\",\"amount\":-5}",
                _ => b"\xff\xfe not utf8",
            };
            return Err(bad);
        }
        let mut ts = nominal;
        if self.cfg.max_disorder_ms > 0 {
            ts -= rng.random_range(0..=self.cfg.max_disorder_ms);
        }
        if self.cfg.late_fraction > 0.0 && rng.random_bool(self.cfg.late_fraction) {
            ts -= self.cfg.late_by_ms;
        }
        let u: f64 = rng.random();
        let event_type = if u < self.cfg.conversion_rate {
            EventType::Conversion
        } else if u < self.cfg.conversion_rate + self.cfg.click_rate {
            EventType::Click
        } else {
            EventType::View
        };
        let user_id = self.users.sample(rng);
        let campaign_id = self.campaigns.sample(rng);
        let amount_micros = (event_type == EventType::Conversion)
            .then(|| rng.random_range(1_000_000..200_000_000i64) / 10_000 * 10_000);
        Ok(Event {
            ts_ms: ts,
            user_id,
            campaign_id,
            event_type,
            amount_micros,
        })
    }

    /// The next event without its JSON encoding: the same draws as
    /// [`Generator::next_message`], so the same stream (`None` for a malformed message), for
    /// callers that feed events, not bytes (the `state_rss` benchmark).
    pub fn next_event(&mut self) -> Option<Event> {
        self.draw().ok()
    }
}

impl Iterator for Generator {
    type Item = Generated;
    fn next(&mut self) -> Option<Generated> {
        Some(self.next_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guided_zipf_samples_what_a_whole_cdf_search_samples() {
        let whole = |z: &Zipf, u: f64| z.cdf.partition_point(|&c| c < u).min(z.cdf.len() - 1);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (n, s) in [
            (1, 0.8),
            (2, 0.0),
            (7, 1.2),
            (1_000, 1.0),
            (100_000, 0.8),
            (3_000, 0.0),
        ] {
            let z = Zipf::new(n, s);
            // Random draws, every guide cell's edges and their neighbours, every key's CDF
            // value and its neighbours, and the ends of [0, 1).
            let mut us: Vec<f64> = (0..20_000).map(|_| rng.random()).collect();
            for j in 0..=n.min(5_000) {
                let at = j as f64 / n as f64;
                us.extend([at, at.next_down(), at.next_up()]);
            }
            for &c in z.cdf.iter().take(5_000) {
                us.extend([c, c.next_down(), c.next_up()]);
            }
            us.extend([0.0, 1.0f64.next_down()]);
            for u in us.into_iter().filter(|u| (0.0..1.0).contains(u)) {
                assert_eq!(z.index_of(u), whole(&z, u) as u64, "n {n} s {s} u {u}");
            }
        }
    }

    /// A configuration with malformed and late messages.
    fn noisy() -> GenConfig {
        GenConfig {
            malformed_fraction: 0.05,
            late_fraction: 0.01,
            ..GenConfig::default()
        }
    }

    #[test]
    fn next_event_is_the_stream_of_next_message_without_its_bytes() {
        let cfg = noisy();
        let messages = Generator::new(cfg.clone()).take(5_000).map(|g| match g {
            Generated::Valid(e, _) => Some(e),
            Generated::Malformed(_) => None,
        });
        let mut g = Generator::new(cfg);
        let events: Vec<Option<Event>> = (0..5_000).map(|_| g.next_event()).collect();
        assert!(
            events.iter().any(Option::is_none),
            "malformed ones are drawn too"
        );
        assert_eq!(messages.collect::<Vec<_>>(), events);
    }

    #[test]
    fn deterministic_and_parseable() {
        let cfg = noisy();
        let a: Vec<_> = Generator::new(cfg.clone()).take(5_000).collect();
        let b: Vec<_> = Generator::new(cfg).take(5_000).collect();
        assert_eq!(a, b);
        let mut malformed = 0;
        for g in &a {
            match g {
                Generated::Valid(e, bytes) => {
                    assert_eq!(eddy_core::parse_event(bytes).as_ref(), Ok(e));
                }
                Generated::Malformed(bytes) => {
                    malformed += 1;
                    assert!(eddy_core::parse_event(bytes).is_err());
                }
            }
        }
        assert!((150..350).contains(&malformed), "{malformed}");
    }

    #[test]
    fn campaign_popularity_is_skewed_and_funnel_holds() {
        let mut counts = vec![0u32; 1_000];
        let (mut views, mut clicks, mut convs) = (0, 0, 0);
        for g in Generator::new(GenConfig::default()).take(50_000) {
            if let Generated::Valid(e, _) = g {
                counts[e.campaign_id as usize] += 1;
                match e.event_type {
                    EventType::View => views += 1,
                    EventType::Click => clicks += 1,
                    EventType::Conversion => convs += 1,
                }
            }
        }
        assert!(
            counts[0] > 20 * counts[500],
            "{} vs {}",
            counts[0],
            counts[500]
        );
        assert!(views > 5 * clicks && clicks > 3 * convs && convs > 0);
    }
}
