//! In-process sink and checkpoint store for `eddy demo` and tests.

use crate::{CheckpointStore, EpochSink, SinkError};
use eddy_core::{Checkpoint, MemoryStore, SinkBatch};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Applies sink batches to a shared [`MemoryStore`] (both layers in one process, plus the
/// current campaign engagement, top list, similar users and recommendations; see
/// [`MemoryStore::apply`]).
pub struct MemorySink {
    store: Arc<RwLock<MemoryStore>>,
}

impl MemorySink {
    /// A sink writing into `store`.
    pub fn new(store: Arc<RwLock<MemoryStore>>) -> Self {
        Self { store }
    }
}

impl EpochSink for MemorySink {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn write(&mut self, batch: &SinkBatch) -> Result<(), SinkError> {
        // A reader that panicked while holding the lock cannot have left the store half
        // written (readers do not write), so a poisoned lock is still usable.
        self.store
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(batch);
        Ok(())
    }
}

/// Checkpoints kept in memory (lost on exit). When built with a store, every saved checkpoint
/// is also applied to it ([`MemoryStore::apply_checkpoint`], which moves the batch/speed
/// boundary).
#[derive(Default)]
pub struct MemoryCheckpoints {
    latest: HashMap<String, Checkpoint>,
    store: Option<Arc<RwLock<MemoryStore>>>,
}

impl MemoryCheckpoints {
    /// An empty checkpoint store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty checkpoint store that also applies saved checkpoints to `store`.
    pub fn with_store(store: Arc<RwLock<MemoryStore>>) -> Self {
        Self {
            latest: HashMap::new(),
            store: Some(store),
        }
    }
}

impl CheckpointStore for MemoryCheckpoints {
    fn load(&mut self, topic: &str) -> Result<Option<Checkpoint>, SinkError> {
        Ok(self.latest.get(topic).cloned())
    }

    fn save(&mut self, cp: &Checkpoint) -> Result<(), SinkError> {
        self.latest.insert(cp.topic.clone(), cp.clone());
        if let Some(store) = &self.store {
            store
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .apply_checkpoint(cp);
        }
        Ok(())
    }
}
