//! Expected results, computed from scratch in plain Rust: the independent oracle that tests,
//! and `--verify` runs, compare eddy's incremental output with.

use eddy_core::{CampaignWindowCount, Event, EventType, TypeWindowStats, WindowSpec};
use std::collections::BTreeMap;

/// Tumbling-window totals of a set of events, keyed like eddy's outputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowTotals {
    /// Per `(window_start, event_type)`.
    pub types: BTreeMap<(i64, EventType), TypeWindowStats>,
    /// Per `(window_start, campaign_id, event_type)`.
    pub campaigns: BTreeMap<(i64, u64, EventType), CampaignWindowCount>,
}

impl WindowTotals {
    /// Totals of `events` in windows of `window`.
    ///
    /// ```
    /// use eddy_core::{Event, EventType, WindowSpec};
    /// use eddy_load_gen::expected::WindowTotals;
    /// let e = |ts, amount| Event { ts_ms: ts, user_id: 1, campaign_id: 7,
    ///     event_type: EventType::Conversion, amount_micros: amount };
    /// let t = WindowTotals::of([e(1_000, Some(5)), e(1_500, Some(2)), e(2_100, None)], WindowSpec::new(1_000));
    /// let first = &t.types[&(1_000, EventType::Conversion)];
    /// assert_eq!((first.count, first.sum_micros, first.min_micros, first.max_micros), (2, 7, Some(2), Some(5)));
    /// assert_eq!(t.campaigns[&(2_000, 7, EventType::Conversion)].count, 1);
    /// ```
    pub fn of(events: impl IntoIterator<Item = Event>, window: WindowSpec) -> Self {
        let mut t = Self::default();
        for e in events {
            t.add(&e, window);
        }
        t
    }

    /// Adds one event.
    pub fn add(&mut self, e: &Event, window: WindowSpec) {
        let ws = window.start(e.ts_ms);
        let row = self
            .types
            .entry((ws, e.event_type))
            .or_insert(TypeWindowStats {
                window_start_ms: ws,
                event_type: e.event_type,
                count: 0,
                sum_micros: 0,
                min_micros: None,
                max_micros: None,
            });
        row.count += 1;
        if let Some(a) = e.amount_micros {
            row.sum_micros += a;
            row.min_micros = Some(row.min_micros.map_or(a, |m| m.min(a)));
            row.max_micros = Some(row.max_micros.map_or(a, |m| m.max(a)));
        }
        self.campaigns
            .entry((ws, e.campaign_id, e.event_type))
            .or_insert(CampaignWindowCount {
                window_start_ms: ws,
                campaign_id: e.campaign_id,
                event_type: e.event_type,
                count: 0,
            })
            .count += 1;
    }

    /// Only the windows for which `keep(window_start)` holds.
    pub fn retain_windows(&mut self, keep: impl Fn(i64) -> bool) {
        self.types.retain(|(ws, _), _| keep(*ws));
        self.campaigns.retain(|(ws, _, _), _| keep(*ws));
    }
}

/// Sliding-window engagement per campaign, from scratch: `[views, clicks, conversions,
/// revenue_micros]` over the events whose window (pane) starts after `as_of - sliding_ms`,
/// i.e. those still inside the sliding window under watermark `as_of`.
///
/// ```
/// use eddy_core::{Event, EventType, WindowSpec};
/// use eddy_load_gen::expected::engagement;
/// let e = |ts, t| Event { ts_ms: ts, user_id: 1, campaign_id: 7, event_type: t, amount_micros: Some(3) };
/// let events = [e(500, EventType::View), e(1_500, EventType::Conversion), e(2_500, EventType::Click)];
/// // Window 1 s, sliding 2 s, watermark 2.5 s: the pane [0, 1 s) has slid out (0 + 2 s <= 2.5 s).
/// let got = engagement(&events, WindowSpec::new(1_000), 2_000, 2_500);
/// assert_eq!(got[&7], [0, 1, 1, 3]);
/// ```
pub fn engagement(
    events: &[Event],
    window: WindowSpec,
    sliding_ms: i64,
    as_of: i64,
) -> BTreeMap<u64, [i64; 4]> {
    let mut out: BTreeMap<u64, [i64; 4]> = BTreeMap::new();
    for e in events {
        if window.start(e.ts_ms).saturating_add(sliding_ms) <= as_of {
            continue;
        }
        let s = out.entry(e.campaign_id).or_default();
        match e.event_type {
            EventType::View => s[0] += 1,
            EventType::Click => s[1] += 1,
            EventType::Conversion => {
                s[2] += 1;
                s[3] += e.amount_micros.unwrap_or(0);
            }
        }
    }
    out
}
