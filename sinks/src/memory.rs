//! In-process sink and checkpoint store for `eddy demo` and tests.

use crate::{CheckpointStore, EpochSink, SinkError};
use eddy_core::{
    Checkpoint, CountsBatch, DeadLetter, DeadLetterBatch, MemoryStore, SimilarityBatch,
};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

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

impl MemorySink {
    /// The store, locked for writing. A reader that panicked while holding the lock cannot
    /// have left the store half written (readers do not write), so a poisoned lock is usable.
    fn store(&self) -> std::sync::RwLockWriteGuard<'_, MemoryStore> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl EpochSink<CountsBatch> for MemorySink {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn write(&mut self, batch: &CountsBatch) -> Result<(), SinkError> {
        self.store().apply(batch);
        Ok(())
    }
}

impl EpochSink<SimilarityBatch> for MemorySink {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn write(&mut self, batch: &SimilarityBatch) -> Result<(), SinkError> {
        self.store().apply_similarity(batch);
        Ok(())
    }
}

/// Dead letters kept in memory (`eddy demo` and tests): the most recent
/// [`MemoryDeadLetters::CAPACITY`], oldest first. Clones share the same letters.
#[derive(Clone, Default)]
pub struct MemoryDeadLetters(Arc<Mutex<VecDeque<DeadLetter>>>);

impl MemoryDeadLetters {
    /// How many letters are kept; older ones are dropped.
    pub const CAPACITY: usize = 10_000;

    /// A copy of the letters held, oldest first.
    pub fn letters(&self) -> Vec<DeadLetter> {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.iter().cloned().collect()
    }
}

impl EpochSink<DeadLetterBatch> for MemoryDeadLetters {
    fn name(&self) -> &'static str {
        "memory-dlq"
    }

    fn write(&mut self, batch: &DeadLetterBatch) -> Result<(), SinkError> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.extend(batch.letters.iter().cloned());
        let excess = held.len().saturating_sub(Self::CAPACITY);
        held.drain(..excess);
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
