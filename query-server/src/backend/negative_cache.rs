//! Negative cache of [`LambdaBackend`](super::LambdaBackend): campaigns and users that neither
//! Redis nor ClickHouse knows.
//!
//! A lookup that misses in Redis falls back to a ClickHouse `FINAL` query; a client asking for
//! ids that do not exist (a typo, a scan, an attack) would cost one such query per request.
//! Here a ClickHouse miss is remembered, so repeating it costs nothing until one of:
//! * the batch/speed boundary moves (a checkpoint: ClickHouse may hold new rows for any id;
//!   every entry is dropped at once),
//! * the entry is older than the TTL (bounds staleness when the boundary is unknown, e.g. with
//!   Redis down),
//! * the cache is full: the oldest entry makes room (FIFO), so its size is bounded.
//!
//! A Redis hit is always checked first, so an id that appears in the speed layer is answered
//! from there at once, whatever this cache holds.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Default most entries.
pub const DEFAULT_ENTRIES: usize = 100_000;
/// Default time an entry stays valid.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// What was looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Missing {
    /// A campaign's engagement.
    Campaign(u64),
    /// A user's similar users (recommendations are ranked from them: a user without any
    /// has none either).
    Similar(u64),
}

/// Ids ClickHouse did not know at a boundary (see the module docs).
#[derive(Debug)]
pub struct NegativeCache {
    max_entries: usize,
    ttl: Duration,
    /// The boundary the entries were recorded at.
    boundary: Option<i64>,
    /// When each entry was recorded, and its insertion number.
    entries: HashMap<Missing, (Instant, u64)>,
    /// Insertion order, for eviction (may hold records of entries since gone or re-inserted).
    order: VecDeque<(Missing, u64)>,
    inserted: u64,
}

impl Default for NegativeCache {
    fn default() -> Self {
        Self::new(DEFAULT_ENTRIES, DEFAULT_TTL)
    }
}

impl NegativeCache {
    /// A cache of at most `max_entries` entries, each valid for `ttl`.
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        Self {
            max_entries,
            ttl,
            boundary: None,
            entries: HashMap::new(),
            order: VecDeque::new(),
            inserted: 0,
        }
    }

    /// Drops everything when `boundary` differs from the entries'.
    fn at(&mut self, boundary: Option<i64>) {
        if self.boundary != boundary {
            self.entries.clear();
            self.order.clear();
            self.boundary = boundary;
        }
    }

    /// True when `key` is known to be missing at `boundary`.
    pub fn is_missing(&mut self, key: Missing, boundary: Option<i64>, now: Instant) -> bool {
        self.at(boundary);
        match self.entries.get(&key) {
            Some(&(at, _)) if now.saturating_duration_since(at) < self.ttl => true,
            Some(_) => {
                self.entries.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Records that ClickHouse did not know `key` at `boundary`.
    pub fn insert(&mut self, key: Missing, boundary: Option<i64>, now: Instant) {
        if self.max_entries == 0 {
            return;
        }
        self.at(boundary);
        while self.entries.len() >= self.max_entries {
            let Some((old, n)) = self.order.pop_front() else {
                break;
            };
            // Only the entry this record was made for (not a later re-insert).
            if self.entries.get(&old).is_some_and(|e| e.1 == n) {
                self.entries.remove(&old);
            }
        }
        self.inserted += 1;
        self.entries.insert(key, (now, self.inserted));
        self.order.push_back((key, self.inserted));
        // Stale order records (entries re-inserted or expired) are bounded too.
        if self.order.len() > 2 * self.max_entries {
            let entries = &self.entries;
            self.order
                .retain(|(k, n)| entries.get(k).is_some_and(|e| e.1 == *n));
        }
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_expiring_and_cleared_when_the_boundary_moves() {
        let t0 = Instant::now();
        let mut c = NegativeCache::new(2, Duration::from_secs(10));
        let (a, b, d) = (
            Missing::Campaign(1),
            Missing::Similar(1),
            Missing::Campaign(2),
        );
        c.insert(a, Some(5), t0);
        assert!(c.is_missing(a, Some(5), t0));
        assert!(!c.is_missing(b, Some(5), t0));
        // TTL.
        assert!(!c.is_missing(a, Some(5), t0 + Duration::from_secs(10)));
        c.insert(a, Some(5), t0);
        c.insert(b, Some(5), t0);
        c.insert(d, Some(5), t0);
        // Bounded: the oldest made room.
        assert_eq!(c.len(), 2);
        assert!(!c.is_missing(a, Some(5), t0));
        assert!(c.is_missing(b, Some(5), t0) && c.is_missing(d, Some(5), t0));
        // The boundary moved: nothing is known missing any more.
        assert!(!c.is_missing(b, Some(6), t0));
        assert!(c.is_empty());
        // Many re-inserts keep the order queue bounded.
        for _ in 0..100 {
            c.insert(a, Some(6), t0);
        }
        assert!(c.order.len() <= 4);
    }
}
