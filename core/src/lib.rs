//! Shared types of eddy: the event format and its validation, event-time windows, the rows the
//! dataflows produce and the sinks store, source checkpoints, the in-memory store used by the
//! embedded demo, and typed configuration.
//!
//! Everything here is plain data with no I/O, so every other crate can depend on it.

pub mod api;
pub mod config;
pub mod engagement;
pub mod event;
pub mod memory;
pub mod metrics;
pub mod rows;
pub mod version;
pub mod window;

pub use config::{Config, ConfigError};
pub use engagement::{
    CampaignEngagement, Neighbor, PaneEngagement, Recommendation, Score, SimilarUsers,
    UserCampaigns, UserRecommendations, Weights, recommend, recommendation_score,
    recommendation_score_of,
};
pub use event::{Event, EventType, ParseError, parse_event};
pub use memory::MemoryStore;
pub use metrics::Metrics;
pub use rows::{
    CampaignWindowCount, Checkpoint, CountsBatch, DeadLetter, DeadLetterBatch, InteractionPane,
    PartitionCheckpoint, SimilarityBatch, TypeWindowStats,
};
pub use window::WindowSpec;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
