//! Backend over the in-process [`MemoryStore`] (embedded demo, tests).

use super::{
    Amounts, Backend, BackendAnswer, BackendError, BoxFuture, EngagementQuery, LayerStatus,
    RowSource, Sourced, Store, StoreHealth, WindowQuery, WindowRow,
};
use eddy_core::memory::AsOf;
use eddy_core::{CampaignEngagement, MemoryStore, Neighbor, Recommendation};
use std::sync::{Arc, RwLock};

/// Reads an in-memory store shared with the embedded pipeline. Windows ending at or before the
/// store's checkpoint boundary form the batch layer (rows tagged `memory-batch`), the others the
/// speed layer (`memory-speed`); both layers report source `memory`.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    store: Arc<RwLock<MemoryStore>>,
}

impl MemoryBackend {
    /// A backend reading `store` (a poisoned lock is read anyway: the store is plain data).
    pub fn new(store: Arc<RwLock<MemoryStore>>) -> Self {
        Self { store }
    }

    /// A backend over a new, empty store (nothing written yet).
    pub fn empty() -> Self {
        Self::new(Arc::new(RwLock::new(MemoryStore::default())))
    }

    /// Reads the store with `f`, tagging its result with source `memory` and the store's last
    /// update time.
    fn read<T>(&self, f: impl FnOnce(&MemoryStore) -> Option<AsOf<T>>) -> Option<Sourced<T>> {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        f(&store).map(|a| Sourced {
            value: a.value,
            as_of_ms: a.as_of_ms,
            updated_at_ms: store.updated_at_ms,
            source: Store::Memory,
        })
    }

    fn answer(&self, q: WindowQuery) -> BackendAnswer {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        let boundary = store.boundary_ms;
        let is_batch =
            |start: i64| boundary.is_some_and(|b| start.saturating_add(q.window_ms) <= b);
        let source = |start: i64| {
            if is_batch(start) {
                RowSource::MemoryBatch
            } else {
                RowSource::MemorySpeed
            }
        };
        let mut rows = Vec::new();
        // BTreeMap::range panics on an inverted range.
        if q.from_ms < q.to_ms {
            match q.campaign_id {
                None => {
                    rows.extend(
                        store
                            .type_windows(q.event_type, q.from_ms, q.to_ms)
                            .into_iter()
                            .map(|s| WindowRow {
                                window_start_ms: s.row.window_start_ms,
                                event_type: s.row.event_type,
                                campaign_id: None,
                                count: s.row.count,
                                amounts: Some(Amounts {
                                    sum_micros: s.row.sum_micros,
                                    min_micros: s.row.min_micros,
                                    max_micros: s.row.max_micros,
                                }),
                                is_final: s.is_final,
                                source: source(s.row.window_start_ms),
                            }),
                    );
                }
                Some(c) => {
                    rows.extend(
                        store
                            .campaign_windows(c, q.event_type, q.from_ms, q.to_ms)
                            .into_iter()
                            .map(|s| WindowRow {
                                window_start_ms: s.row.window_start_ms,
                                event_type: s.row.event_type,
                                campaign_id: Some(s.row.campaign_id),
                                count: s.row.count,
                                amounts: None,
                                is_final: s.is_final,
                                source: source(s.row.window_start_ms),
                            }),
                    );
                }
            }
        }
        let batch = rows
            .iter()
            .filter(|r| r.source == RowSource::MemoryBatch)
            .count();
        BackendAnswer {
            watermark_ms: store.watermark_ms,
            boundary_ms: boundary,
            updated_at_ms: store.updated_at_ms,
            batch: LayerStatus::ok(Store::Memory, batch),
            speed: LayerStatus::ok(Store::Memory, rows.len() - batch),
            rows,
        }
    }
}

impl Backend for MemoryBackend {
    fn counts(&self, query: WindowQuery) -> BoxFuture<'_, Result<BackendAnswer, BackendError>> {
        let answer = self.answer(query);
        Box::pin(async move { Ok(answer) })
    }

    fn health(&self) -> BoxFuture<'_, Vec<StoreHealth>> {
        Box::pin(async {
            vec![StoreHealth {
                store: Store::Memory,
                status: Ok(()),
            }]
        })
    }

    fn campaign(
        &self,
        _query: EngagementQuery,
        campaign_id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<CampaignEngagement>>, BackendError>> {
        let answer = self.read(|s| s.campaign_engagement(campaign_id));
        Box::pin(async move { Ok(answer) })
    }

    fn top_campaigns(
        &self,
        _query: EngagementQuery,
        k: usize,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<CampaignEngagement>>>, BackendError>> {
        let answer = self.read(|s| s.top_campaigns(k));
        Box::pin(async move { Ok(answer) })
    }

    fn similar_users(
        &self,
        user_id: u64,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Neighbor>>>, BackendError>> {
        let answer = self.read(|s| s.similar_users(user_id).cloned());
        Box::pin(async move { Ok(answer) })
    }

    fn recommendations(
        &self,
        _query: EngagementQuery,
        user_id: u64,
        n: usize,
    ) -> BoxFuture<'_, Result<Option<Sourced<Vec<Recommendation>>>, BackendError>> {
        let answer = self.read(|s| s.recommendations(user_id, n));
        Box::pin(async move { Ok(answer) })
    }
}
