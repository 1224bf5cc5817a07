//! Expected results, computed from scratch in plain Rust: the independent oracle that the
//! tests, `eddy load-gen --verify` and the benchmarks compare eddy's incremental output with.
//! One oracle per output: [`WindowTotals`] (windowed counts), [`engagement`] (sliding-window
//! engagement), [`settled_interests`] and [`similar_users`] (exact similar users).

use eddy_core::{CampaignWindowCount, Event, EventType, Neighbor, TypeWindowStats, WindowSpec};
use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// The settled interests under watermark `as_of`, as similarity sees them: the `(user_id,
/// campaign_id)` pairs of clicks and conversions (and views, with `views_are_interest`) whose
/// window has closed (`end <= as_of`) and is still inside the sliding window (`start +
/// sliding_ms > as_of`), each pair once.
pub fn settled_interests(
    events: &[Event],
    window: WindowSpec,
    sliding_ms: i64,
    as_of: i64,
    views_are_interest: bool,
) -> Vec<(u64, u64)> {
    let pairs: BTreeSet<(u64, u64)> = events
        .iter()
        .filter(|e| views_are_interest || e.event_type != EventType::View)
        .filter(|e| window.end(e.ts_ms) <= as_of && window.start(e.ts_ms) + sliding_ms > as_of)
        .map(|e| (e.user_id, e.campaign_id))
        .collect();
    pairs.into_iter().collect()
}

/// Every user's exact top-`k` similar users over the `(user_id, campaign_id)` interest
/// `pairs` (Jaccard of the campaign sets, best first, ties by lower id: [`Neighbor`]'s order),
/// for every user of `pairs` (an empty list for a user sharing no campaign with anyone). Co-occurrences are counted over campaign
/// audiences with a dense counter per thread (two threads), so millions of pairs take seconds.
///
/// ```
/// use eddy_load_gen::expected::similar_users;
/// // Users 1 and 2 share campaign 10; user 3 shares nothing.
/// let top = similar_users(&[(1, 10), (1, 11), (2, 10), (3, 12)], 5);
/// assert_eq!((top[&1][0].user_id, top[&1][0].shared, top[&1][0].union), (2, 1, 2));
/// assert!(top[&3].is_empty());
/// ```
pub fn similar_users(pairs: &[(u64, u64)], k: usize) -> BTreeMap<u64, Vec<Neighbor>> {
    let mut sets: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut audience: HashMap<u64, Vec<u64>> = HashMap::new();
    for &(u, c) in pairs.iter().collect::<BTreeSet<_>>() {
        sets.entry(u).or_default().push(c);
        audience.entry(c).or_default().push(u);
    }
    let max_user = sets.keys().max().copied().unwrap_or(0) as usize + 1;
    let users: Vec<(&u64, &Vec<u64>)> = sets.iter().collect();
    let mut out = BTreeMap::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = users
            .chunks(users.len().div_ceil(2).max(1))
            .map(|chunk| {
                let (sets, audience) = (&sets, &audience);
                s.spawn(move || {
                    let mut count = vec![0u32; max_user];
                    let mut touched = Vec::new();
                    let mut part = Vec::new();
                    for &(u, su) in chunk {
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
                        if found.len() > k {
                            found.select_nth_unstable(k);
                            found.truncate(k);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GenConfig, Generated, Generator};

    #[test]
    fn similar_users_equal_all_pairs_jaccard() {
        let cfg = GenConfig {
            users: 300,
            campaigns: 40,
            ..GenConfig::default()
        };
        let pairs: Vec<(u64, u64)> = Generator::new(cfg)
            .take(20_000)
            .filter_map(|g| match g {
                Generated::Valid(e, _) if e.event_type != EventType::View => {
                    Some((e.user_id, e.campaign_id))
                }
                _ => None,
            })
            .collect();
        let mut sets: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for (u, c) in &pairs {
            sets.entry(*u).or_default().insert(*c);
        }
        let got = similar_users(&pairs, 3);
        assert_eq!(got.len(), sets.len());
        for (u, su) in &sets {
            let mut want: Vec<Neighbor> = sets
                .iter()
                .filter(|(v, _)| *v != u)
                .map(|(v, sv)| {
                    let shared = su.intersection(sv).count() as u32;
                    let union = (su.len() + sv.len()) as u32 - shared;
                    Neighbor {
                        user_id: *v,
                        shared,
                        union,
                    }
                })
                .filter(|n| n.shared > 0)
                .collect();
            want.sort_by(Neighbor::rank_cmp);
            want.truncate(3);
            assert_eq!(got[u], want, "user {u}");
        }
    }

    #[test]
    fn settled_interests_are_closed_windows_inside_the_sliding_window() {
        let e = |ts, user, t| Event {
            ts_ms: ts,
            user_id: user,
            campaign_id: 7,
            event_type: t,
            amount_micros: None,
        };
        let events = [
            e(500, 1, EventType::Click),   // slid out at 2 500 (0 + 2 000 <= 2 500)
            e(1_500, 2, EventType::Click), // settled
            e(1_600, 2, EventType::Conversion), // same pair
            e(1_700, 3, EventType::View),  // a view: interest only with views
            e(2_200, 4, EventType::Click), // window [2 000, 3 000) still open
        ];
        let w = WindowSpec::new(1_000);
        assert_eq!(settled_interests(&events, w, 2_000, 2_500, false), [(2, 7)]);
        assert_eq!(
            settled_interests(&events, w, 2_000, 2_500, true),
            [(2, 7), (3, 7)]
        );
    }
}
