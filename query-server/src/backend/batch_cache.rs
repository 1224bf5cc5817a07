//! Cache of finalized (batch-layer) windows.
//!
//! A window that ends at or before the batch/speed boundary is final: eddy writes it to
//! ClickHouse once, and any rewrite on replay carries the same values. So the rows ClickHouse
//! returned for a span of window starts stay valid. Per series (campaign, event type) the cache
//! keeps one contiguous span `[from, to)` with its rows. A query asks only for the gaps at the
//! span's edges, so a dashboard polling "the last N minutes" reads ClickHouse only for the
//! windows that became final since its last poll. The same holds for whole hours read from the
//! hourly rollups ([`HourRow`]), cached apart.
//!
//! Bounded per series, least recently used first: past `max_series` series or `max_rows` rows
//! in all, the series read or written longest ago is dropped (only that one), so a dashboard's
//! hot series stay cached however many other series (campaigns) are asked for once.

use super::WindowRow;
use eddy_core::EventType;
use std::collections::{BTreeMap, HashMap};

/// Series key: campaign (or per-type windows) and event-type filter.
pub type SeriesKey = (Option<u64>, Option<EventType>);

/// Default most series kept; past this the least recently used series is dropped.
pub const DEFAULT_MAX_SERIES: usize = 16_384;
/// Default most rows kept in all; past this least recently used series are dropped.
pub const DEFAULT_MAX_ROWS: usize = 500_000;
/// Most rows kept per series; past this the series starts over.
const MAX_SERIES_ROWS: usize = 100_000;

/// A row the cache can hold: keyed by its start and event type.
pub trait CachedRow: Copy {
    /// Start (epoch ms) and event type: unique within a series.
    fn key(&self) -> (i64, EventType);
}

impl CachedRow for WindowRow {
    fn key(&self) -> (i64, EventType) {
        (self.window_start_ms, self.event_type)
    }
}

/// A whole hour read from the hourly rollups: `row` holds the hour's totals (its
/// `window_start_ms` is the hour start), `windows` the native windows summed into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourRow {
    /// The hour's totals.
    pub row: WindowRow,
    /// Native windows in the hour.
    pub windows: u64,
}

impl CachedRow for HourRow {
    fn key(&self) -> (i64, EventType) {
        self.row.key()
    }
}

#[derive(Debug)]
struct Span<R> {
    from: i64,
    to: i64,
    rows: BTreeMap<(i64, EventType), R>,
    /// When the series was last read or written (a tick of the cache).
    used: u64,
}

impl<R> Default for Span<R> {
    fn default() -> Self {
        Self {
            from: 0,
            to: 0,
            rows: BTreeMap::new(),
            used: 0,
        }
    }
}

/// Finalized rows (native windows, or [`HourRow`]s) by series (see the module docs).
#[derive(Debug)]
pub struct BatchCache<R = WindowRow> {
    series: HashMap<SeriesKey, Span<R>>,
    /// Series by last use, oldest first.
    lru: BTreeMap<u64, SeriesKey>,
    tick: u64,
    /// Rows held in all series.
    rows: usize,
    max_series: usize,
    max_rows: usize,
}

impl<R> Default for BatchCache<R> {
    fn default() -> Self {
        Self::with_limits(DEFAULT_MAX_SERIES, DEFAULT_MAX_ROWS)
    }
}

impl<R> BatchCache<R> {
    /// A cache of at most `max_series` series and `max_rows` rows in all (each at least 1).
    pub fn with_limits(max_series: usize, max_rows: usize) -> Self {
        Self {
            series: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            rows: 0,
            max_series: max_series.max(1),
            max_rows: max_rows.max(1),
        }
    }

    /// Series held.
    #[cfg(test)]
    pub fn series(&self) -> usize {
        self.series.len()
    }

    /// Marks `key` (present) as just used.
    fn touch(&mut self, key: SeriesKey) {
        if let Some(span) = self.series.get_mut(&key) {
            self.lru.remove(&span.used);
            self.tick += 1;
            span.used = self.tick;
            self.lru.insert(self.tick, key);
        }
    }

    /// Drops least recently used series other than `keep` until within the limits.
    fn evict(&mut self, keep: SeriesKey) {
        while self.series.len() > self.max_series || self.rows > self.max_rows {
            let Some(victim) = self.lru.values().copied().find(|k| *k != keep) else {
                break;
            };
            if let Some(span) = self.series.remove(&victim) {
                self.lru.remove(&span.used);
                self.rows -= span.rows.len();
            }
        }
    }
}

impl<R: CachedRow> BatchCache<R> {
    /// The sub-ranges of `[from, to)` the cache does not hold for `key`.
    pub fn gaps(&self, key: SeriesKey, from: i64, to: i64) -> Vec<(i64, i64)> {
        if from >= to {
            return Vec::new();
        }
        let Some(span) = self.series.get(&key) else {
            return vec![(from, to)];
        };
        if to <= span.from || from >= span.to {
            return vec![(from, to)];
        }
        let mut gaps = Vec::new();
        if from < span.from {
            gaps.push((from, span.from));
        }
        if to > span.to {
            gaps.push((span.to, to));
        }
        gaps
    }

    /// Records that `rows` are all the finalized windows of `key` in `[from, to)`.
    pub fn insert(&mut self, key: SeriesKey, from: i64, to: i64, rows: Vec<R>) {
        let span = self.series.entry(key).or_default();
        let before = span.rows.len();
        let touches = !span.rows.is_empty() || span.from < span.to;
        if !touches || to < span.from || from > span.to || span.rows.len() >= MAX_SERIES_ROWS {
            span.from = from;
            span.to = to;
            span.rows.clear();
        } else {
            span.from = span.from.min(from);
            span.to = span.to.max(to);
        }
        for r in rows {
            span.rows.insert(r.key(), r);
        }
        self.rows = self.rows - before + span.rows.len();
        self.touch(key);
        self.evict(key);
    }

    /// The cached rows of `key` in `[from, to)`, if the cache holds that whole range.
    pub fn rows(&mut self, key: SeriesKey, from: i64, to: i64) -> Option<Vec<R>> {
        let span = self.series.get(&key)?;
        if from < span.from || to > span.to {
            return None;
        }
        let lo = (from, EventType::View);
        let rows = span
            .rows
            .range(lo..)
            .take_while(|((start, _), _)| *start < to)
            .map(|(_, r)| *r)
            .collect();
        self.touch(key);
        Some(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: i64) -> WindowRow {
        WindowRow {
            window_start_ms: start,
            event_type: EventType::Click,
            campaign_id: None,
            count: start as u64,
            amounts: None,
            is_final: true,
            source: crate::backend::RowSource::Clickhouse,
        }
    }

    const K: SeriesKey = (None, Some(EventType::Click));

    #[test]
    fn asks_only_for_the_edges_it_lacks() {
        let mut c: BatchCache = BatchCache::default();
        assert_eq!(c.gaps(K, 0, 100), vec![(0, 100)]);
        c.insert(K, 0, 100, vec![row(0), row(60)]);
        assert_eq!(c.gaps(K, 10, 90), Vec::<(i64, i64)>::new());
        assert_eq!(c.gaps(K, 60, 160), vec![(100, 160)]);
        assert_eq!(c.gaps(K, -60, 160), vec![(-60, 0), (100, 160)]);
        assert_eq!(c.gaps(K, 200, 300), vec![(200, 300)]);
        assert_eq!(c.rows(K, 0, 100).unwrap(), vec![row(0), row(60)]);
        assert_eq!(c.rows(K, 30, 100).unwrap(), vec![row(60)]);
        assert!(c.rows(K, 30, 130).is_none());
        // Extending at the edge keeps one span.
        c.insert(K, 100, 160, vec![row(120)]);
        assert_eq!(c.rows(K, 60, 160).unwrap(), vec![row(60), row(120)]);
        // A disjoint range replaces the span.
        c.insert(K, 500, 600, vec![row(540)]);
        assert!(c.rows(K, 0, 100).is_none());
        assert_eq!(c.rows(K, 500, 600).unwrap(), vec![row(540)]);
        // Other series are independent.
        assert_eq!(c.gaps((Some(1), None), 500, 600), vec![(500, 600)]);
    }

    #[test]
    fn many_series_evict_the_least_recently_used_one_only() {
        let mut c: BatchCache = BatchCache::with_limits(3, 1_000);
        let key = |campaign| (Some(campaign), None);
        c.insert(K, 0, 100, vec![row(0)]);
        for campaign in 0..50 {
            c.insert(key(campaign), 0, 100, vec![row(0), row(60)]);
            // The hot series is read between the others: it stays.
            assert_eq!(c.rows(K, 0, 100).unwrap(), vec![row(0)], "after {campaign}");
            assert!(c.series() <= 3);
        }
        // The two most recent others are still there, older ones were dropped one by one.
        assert!(c.rows(key(49), 0, 100).is_some());
        assert!(c.rows(key(48), 0, 100).is_some());
        assert!(c.rows(key(47), 0, 100).is_none());
        // The row budget evicts too.
        let mut c: BatchCache = BatchCache::with_limits(100, 4);
        c.insert(K, 0, 100, vec![row(0), row(60)]);
        c.insert(key(1), 0, 100, vec![row(0), row(60)]);
        assert!(c.rows(K, 0, 100).is_some());
        c.insert(key(2), 0, 100, vec![row(0)]);
        assert!(
            c.rows(key(1), 0, 100).is_none(),
            "least recently used dropped"
        );
        assert_eq!(c.rows, 3);
    }
}
