//! Redis keys (`docs/storage.md`, "Redis"): one builder per key, each taking the key prefix
//! (`redis.prefix`), and the field names of the hashes.
//!
//! The writer (`eddy_sinks::RedisSink`), the reader (the query server's lambda backend) and
//! the tests build every key here, so the layout is written once.

use eddy_core::EventType;

/// `{p}:tw:{event_type}:{window_start}`: hash of one type window (fields in [`mod@type_window`]).
pub fn type_window(p: &str, event_type: EventType, window_start_ms: i64) -> String {
    format!("{p}:tw:{event_type}:{window_start_ms}")
}

/// `{p}:tw:{event_type}`: sorted set of the window starts of the type's windows.
pub fn type_windows(p: &str, event_type: EventType) -> String {
    format!("{p}:tw:{event_type}")
}

/// `{p}:cw:{campaign_id}:{event_type}:{window_start}`: hash of one campaign window (fields in
/// [`mod@campaign_window`]).
pub fn campaign_window(
    p: &str,
    campaign_id: u64,
    event_type: EventType,
    window_start_ms: i64,
) -> String {
    format!("{p}:cw:{campaign_id}:{event_type}:{window_start_ms}")
}

/// `{p}:cw:{campaign_id}:{event_type}`: sorted set of the window starts of the campaign's
/// windows of that type.
pub fn campaign_windows(p: &str, campaign_id: u64, event_type: EventType) -> String {
    format!("{p}:cw:{campaign_id}:{event_type}")
}

/// The window hash of a window whose index (sorted set) key is `index`
/// ([`type_windows`] or [`campaign_windows`]): `{index}:{window_start}`.
pub fn window_in(index: &str, window_start_ms: i64) -> String {
    format!("{index}:{window_start_ms}")
}

/// `{p}:campaign:{campaign_id}`: hash of a campaign's sliding-window engagement (fields in
/// [`mod@campaign`]).
pub fn campaign(p: &str, campaign_id: u64) -> String {
    format!("{p}:campaign:{campaign_id}")
}

/// `{p}:campaigns:top`: sorted set of the live top list (member campaign id, score the
/// engagement score).
pub fn top_campaigns(p: &str) -> String {
    format!("{p}:campaigns:top")
}

/// `{p}:campaigns:top:as_of`: watermark of the batch that wrote the top list.
pub fn top_campaigns_as_of(p: &str) -> String {
    format!("{p}:campaigns:top:as_of")
}

/// `{p}:user:{user_id}:similar`: JSON [`SimilarValue`](crate::SimilarValue).
pub fn user_similar(p: &str, user_id: u64) -> String {
    format!("{p}:user:{user_id}:similar")
}

/// `{p}:user:{user_id}:campaigns`: JSON [`CampaignsValue`](crate::CampaignsValue), the
/// user's interaction set (recommendations are ranked from these at read time).
pub fn user_campaigns(p: &str, user_id: u64) -> String {
    format!("{p}:user:{user_id}:campaigns")
}

/// `{p}:watermark`: watermark of the last fast-path sink batch (advisory).
pub fn watermark(p: &str) -> String {
    format!("{p}:watermark")
}

/// `{p}:boundary`: the batch/speed boundary (watermark of the last checkpoint).
pub fn boundary(p: &str) -> String {
    format!("{p}:boundary")
}

/// `{p}:as_of`: wall-clock ms when the boundary was written.
pub fn as_of(p: &str) -> String {
    format!("{p}:as_of")
}

/// `{p}:replay:{topic}:plan`: JSON plan of the `eddy replay` of `topic` into the outputs under
/// prefix `p` (per-partition start and end offsets, resolved once), kept until a next replay
/// replaces it; an interrupted replay resumes from it.
pub fn replay_plan(p: &str, topic: &str) -> String {
    format!("{p}:replay:{topic}:plan")
}

/// `{p}:serving`: the name of the output version the query server serves (absent: the base
/// outputs, `eddy_core::version`). Always under the **base** prefix; set by `eddy promote`.
pub fn serving(p: &str) -> String {
    format!("{p}:serving")
}

/// `{p}:versions`: set of the names of the versions built beside the base outputs (`eddy
/// replay --target version:NAME` adds its name; `eddy versions drop` removes it). Always under
/// the base prefix.
pub fn versions(p: &str) -> String {
    format!("{p}:versions")
}

/// The speed-layer metadata keys in the order readers `MGET` them: [`boundary`],
/// [`watermark`], [`as_of`].
pub fn meta(p: &str) -> [String; 3] {
    [boundary(p), watermark(p), as_of(p)]
}

/// Field names of the type window hash ([`type_window`](fn@super::type_window)). Integers are
/// decimal strings; amounts in micro-units.
pub mod type_window {
    /// Number of events.
    pub const COUNT: &str = "count";
    /// Sum of amounts (0 when no event carried one).
    pub const SUM: &str = "sum";
    /// Smallest amount; absent when no event carried one.
    pub const MIN: &str = "min";
    /// Largest amount; absent when no event carried one.
    pub const MAX: &str = "max";
    /// `1` when the window is final, else `0`.
    pub const FINAL: &str = "final";
    /// Dataflow epoch of the batch that wrote the hash.
    pub const EPOCH: &str = "epoch";
}

/// Field names of the campaign window hash ([`campaign_window`](fn@super::campaign_window)).
pub mod campaign_window {
    pub use super::type_window::{COUNT, EPOCH, FINAL};
}

/// Field names of the campaign engagement hash ([`campaign`](fn@super::campaign)).
pub mod campaign {
    /// Views in the sliding window.
    pub const VIEWS: &str = "views";
    /// Clicks in the sliding window.
    pub const CLICKS: &str = "clicks";
    /// Conversions in the sliding window.
    pub const CONVERSIONS: &str = "conversions";
    /// Revenue in micro-units.
    pub const REVENUE: &str = "revenue";
    /// Engagement score (shortest round-trip `f64`).
    pub const SCORE: &str = "score";
    /// Watermark of the batch that wrote the hash.
    pub const AS_OF: &str = "as_of";
    /// Dataflow epoch of the batch that wrote the hash.
    pub const EPOCH: &str = "epoch";
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_core::EventType::{Click, View};

    #[test]
    fn keys_follow_docs_storage_md() {
        assert_eq!(type_window("p", View, 60_000), "p:tw:view:60000");
        assert_eq!(type_windows("p", Click), "p:tw:click");
        assert_eq!(campaign_window("p", 42, Click, 5), "p:cw:42:click:5");
        assert_eq!(campaign_windows("p", 42, Click), "p:cw:42:click");
        assert_eq!(
            window_in(&campaign_windows("p", 42, Click), 5),
            campaign_window("p", 42, Click, 5)
        );
        assert_eq!(
            window_in(&type_windows("p", View), 7),
            type_window("p", View, 7)
        );
        assert_eq!(campaign("p", 9), "p:campaign:9");
        assert_eq!(top_campaigns("p"), "p:campaigns:top");
        assert_eq!(top_campaigns_as_of("p"), "p:campaigns:top:as_of");
        assert_eq!(user_similar("p", 7), "p:user:7:similar");
        assert_eq!(user_campaigns("p", 7), "p:user:7:campaigns");
        assert_eq!(meta("p"), ["p:boundary", "p:watermark", "p:as_of"]);
        assert_eq!(replay_plan("p", "events"), "p:replay:events:plan");
    }
}
