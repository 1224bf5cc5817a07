//! The embedded demo's source: generator "partitions" paced in real time, with event times
//! following the wall clock. No broker needed.

use crate::reader::{PartitionReader, Record};
use eddy_load_gen::{GenConfig, Generator};
use std::time::Instant;

/// Generated partitions owned by one worker, each producing `rate` messages per second.
pub struct GeneratorReader {
    parts: Vec<(i32, Generator)>,
    rate: f64,
    started: Instant,
    next: usize,
}

impl GeneratorReader {
    /// Partitions `partitions`, each seeded from `base.seed` and its number, at `rate`
    /// messages per second each, with event times starting at `base.start_ts_ms`.
    pub fn new(base: &GenConfig, partitions: Vec<i32>, rate: f64) -> Self {
        let parts = partitions
            .into_iter()
            .map(|p| {
                let cfg = GenConfig {
                    seed: base.seed.wrapping_mul(1_000_003).wrapping_add(p as u64),
                    events_per_sec: rate,
                    ..base.clone()
                };
                (p, Generator::new(cfg))
            })
            .collect();
        Self {
            parts,
            rate,
            started: Instant::now(),
            next: 0,
        }
    }

    fn due(&self) -> u64 {
        (self.started.elapsed().as_secs_f64() * self.rate) as u64
    }
}

impl PartitionReader for GeneratorReader {
    type Error = std::convert::Infallible;
    fn partitions(&self) -> Vec<i32> {
        self.parts.iter().map(|(p, _)| *p).collect()
    }
    fn start_offset(&self, _partition: i32) -> i64 {
        0
    }
    fn poll(&mut self, max: usize, f: &mut dyn FnMut(Record<'_>)) -> Result<usize, Self::Error> {
        let due = self.due();
        let mut n = 0;
        let k = self.parts.len();
        for i in 0..k {
            let (p, g) = &mut self.parts[(self.next + i) % k];
            while n < max && g.generated() < due {
                let offset = g.generated() as i64;
                let msg = g.next_message();
                f(Record {
                    partition: *p,
                    offset,
                    payload: msg.bytes(),
                    timestamp_ms: None,
                });
                n += 1;
            }
        }
        self.next = (self.next + 1) % k.max(1);
        Ok(n)
    }
    fn at_end(&self, partition: i32) -> bool {
        let due = self.due();
        self.parts
            .iter()
            .any(|(p, g)| *p == partition && g.generated() >= due)
    }
}
