//! Where the query server reads windows from: the [`Backend`] trait and its implementations.

pub mod batch_cache;
mod lambda;
mod memory;
mod negative_cache;
mod versioned;

pub use lambda::LambdaBackend;
pub use memory::MemoryBackend;
pub use versioned::{REFRESH_INTERVAL, VersionedBackend};

pub use eddy_core::api::{RowSource, Store};
use eddy_core::{CampaignEngagement, EventType, Neighbor, Recommendation, Weights};
use std::future::Future;
use std::pin::Pin;

/// A boxed, `Send` future (the trait stays object-safe without `async_trait`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend is asked for: native windows with `from_ms <= window_start < to_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowQuery {
    /// Only this event type, or all types.
    pub event_type: Option<EventType>,
    /// Campaign windows of this campaign, or type windows when `None`.
    pub campaign_id: Option<u64>,
    /// Inclusive lower bound of window starts, epoch ms.
    pub from_ms: i64,
    /// Exclusive upper bound of window starts, epoch ms.
    pub to_ms: i64,
    /// Window length, ms (a window ends at `start + window_ms`).
    pub window_ms: i64,
}

impl WindowQuery {
    /// The event types asked for.
    pub fn types(&self) -> Vec<EventType> {
        match self.event_type {
            Some(t) => vec![t],
            None => EventType::ALL.to_vec(),
        }
    }
}

/// Amount aggregates of a type window, in micro-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amounts {
    /// Sum of amounts (0 when no event carried one).
    pub sum_micros: i64,
    /// Smallest amount, if any event carried one.
    pub min_micros: Option<i64>,
    /// Largest amount, if any event carried one.
    pub max_micros: Option<i64>,
}

/// One native window as a backend returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRow {
    /// Window start, epoch ms.
    pub window_start_ms: i64,
    /// The event type.
    pub event_type: EventType,
    /// The campaign, for campaign windows.
    pub campaign_id: Option<u64>,
    /// Number of events.
    pub count: u64,
    /// Amount aggregates (type windows only; `None` for campaign windows).
    pub amounts: Option<Amounts>,
    /// True when the window is final.
    pub is_final: bool,
    /// Where the row came from (never [`RowSource::Mixed`]).
    pub source: RowSource,
}

/// How one layer took part in an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStatus {
    /// The store behind the layer.
    pub source: Store,
    /// `Some(true)` answered, `Some(false)` failed, `None` not consulted.
    pub available: Option<bool>,
    /// Native windows this layer contributed to the answer.
    pub windows: usize,
    /// Why the layer failed, when it did.
    pub error: Option<String>,
}

impl LayerStatus {
    /// A layer that answered with `windows` rows.
    pub fn ok(source: Store, windows: usize) -> Self {
        Self {
            source,
            available: Some(true),
            windows,
            error: None,
        }
    }
    /// A layer that was not needed for this query.
    pub fn skipped(source: Store) -> Self {
        Self {
            source,
            available: None,
            windows: 0,
            error: None,
        }
    }
    /// A layer that failed.
    pub fn failed(source: Store, error: String) -> Self {
        Self {
            source,
            available: Some(false),
            windows: 0,
            error: Some(error),
        }
    }
}

/// A backend's answer to a [`WindowQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAnswer {
    /// Event-time watermark of the last sink batch, if known.
    pub watermark_ms: Option<i64>,
    /// Batch/speed boundary (watermark of the last checkpoint), if known.
    pub boundary_ms: Option<i64>,
    /// Wall-clock ms of the last speed-layer update, if known.
    pub updated_at_ms: Option<i64>,
    /// The batch layer's part.
    pub batch: LayerStatus,
    /// The speed layer's part.
    pub speed: LayerStatus,
    /// The windows, in any order.
    pub rows: Vec<WindowRow>,
}

/// Health of one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// The store.
    pub store: Store,
    /// `Ok` when it answered, else the reason.
    pub status: Result<(), String>,
}

/// What engagement reads need to know about the pipeline (from its configuration): the
/// sliding window, made of panes of `window_ms`, and the score weights. Used when the
/// engagement is recomputed from the batch layer's panes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngagementQuery {
    /// Pane (tumbling window) length, ms (`pipeline.window_ms`).
    pub window_ms: i64,
    /// Sliding window length, ms (`engagement.sliding_ms`).
    pub sliding_ms: i64,
    /// Score weights (`engagement.weight_*`).
    pub weights: Weights,
}

/// A value read from a store, with the watermark it reflects and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// The event-time watermark (epoch ms) the value reflects.
    pub as_of_ms: i64,
    /// Wall-clock ms of the last update of the store, as for
    /// [`BackendAnswer::updated_at_ms`] (`freshness_ms = now - updated_at_ms`), if known.
    pub updated_at_ms: Option<i64>,
    /// The store that answered.
    pub source: Store,
}

/// Backend failures that prevent any answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// No store could answer.
    #[error("no store available: {0}")]
    Unavailable(String),
}

/// A source of window rows. Implementations must bound the time each call takes (a down store
/// yields a degraded answer or an error, not a hang).
pub trait Backend: Send + Sync + 'static {
    /// Windows matching `query`, merged across layers.
    fn counts(&self, query: WindowQuery) -> BoxFuture<'_, Result<BackendAnswer, BackendError>>;
    /// As [`Backend::counts`], for hourly series: rows may also be whole hours
    /// (`window_start_ms` an hour start, the hour's totals) where the backend keeps hourly
    /// rollups, native windows elsewhere; summing the rows per hour of their start gives the
    /// same totals as summing the native windows. By default, native windows only.
    fn hourly_counts(
        &self,
        query: WindowQuery,
    ) -> BoxFuture<'_, Result<BackendAnswer, BackendError>> {
        self.counts(query)
    }
    /// One entry per store behind this backend.
    fn health(&self) -> BoxFuture<'_, Vec<StoreHealth>>;
    /// The sliding-window engagement of `campaign_id`; `None` when no store knows it (the
    /// campaign has no event in the sliding window).
    fn campaign(
        &self,
        query: EngagementQuery,
        campaign_id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<CampaignEngagement>>, BackendError>>;
    /// The first `k` campaigns by engagement score, best first; `None` when no store holds a
    /// top list.
    fn top_campaigns(
        &self,
        query: EngagementQuery,
        k: usize,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<CampaignEngagement>>>, BackendError>>;
    /// The similar users of `user_id`, best first; `None` when the user has none.
    fn similar_users(
        &self,
        user_id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Neighbor>>>, BackendError>>;
    /// The top `n` recommendations of `user_id`, best first, ranked at read time
    /// ([`eddy_core::recommend`]) with the campaigns' current engagement scores (as
    /// [`Backend::campaign`] reads them with `query`); `None` when the user has none.
    fn recommendations(
        &self,
        query: EngagementQuery,
        user_id: u64,
        n: usize,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Recommendation>>>, BackendError>>;
}
