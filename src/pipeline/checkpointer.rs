//! The checkpointer thread: saves each durable checkpoint off the timely workers.

use super::PipelineError;
use eddy_core::{Checkpoint, Metrics};
use std::sync::{Arc, Condvar, Mutex};

/// Saves a durable checkpoint (and what follows it); run by the [`Checkpointer`] thread.
pub(super) type Commit = Box<dyn FnMut(&Checkpoint) -> Result<(), PipelineError> + Send>;

/// Saves checkpoints on a thread of its own, so a slow checkpoint store, Redis or broker never
/// blocks a timely worker: the coordinating worker hands over each candidate without waiting,
/// and a newer candidate replaces one not yet taken (checkpoints are cumulative: the newest
/// durable one is all a restart needs).
pub(super) struct Checkpointer {
    shared: Arc<(Mutex<CheckpointSlot>, Condvar)>,
}

#[derive(Default)]
struct CheckpointSlot {
    pending: Option<Checkpoint>,
    stopping: bool,
}

impl Checkpointer {
    /// Starts the thread `checkpointer`, which runs `commit` for each candidate and records
    /// the outcome in `metrics`.
    pub(super) fn spawn(mut commit: Commit, metrics: Metrics) -> Self {
        let shared = Arc::new((Mutex::new(CheckpointSlot::default()), Condvar::new()));
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(move || {
                let (slot, wake) = &*theirs;
                loop {
                    let cp = {
                        let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
                        while s.pending.is_none() && !s.stopping {
                            s = wake.wait(s).unwrap_or_else(|e| e.into_inner());
                        }
                        match s.pending.take() {
                            Some(cp) if !s.stopping => cp,
                            _ => return,
                        }
                    };
                    let started = std::time::Instant::now();
                    match commit(&cp) {
                        Ok(()) => {
                            metrics.checkpoints.inc();
                            metrics.last_checkpoint_ms.set(eddy_core::now_ms());
                            metrics
                                .checkpoint_duration_ms
                                .set(started.elapsed().as_millis() as i64);
                            metrics.checkpoint_epoch.set(cp.epoch as i64);
                            for p in &cp.partitions {
                                let label = eddy_core::metrics::PartitionLabel {
                                    partition: p.partition,
                                };
                                metrics
                                    .checkpoint_resume_offset
                                    .get_or_create(&label)
                                    .set(p.resume_offset);
                            }
                        }
                        Err(e) => {
                            metrics.checkpoint_failures.inc();
                            tracing::warn!(error = %e, epoch = cp.epoch, "checkpoint failed; a later one will be tried");
                        }
                    }
                }
            })
            .expect("cannot spawn the checkpointer thread");
        Self { shared }
    }

    /// Hands `cp` over without blocking (replacing a candidate not yet taken).
    pub(super) fn offer(&self, cp: Checkpoint) {
        let (slot, wake) = &*self.shared;
        slot.lock().unwrap_or_else(|e| e.into_inner()).pending = Some(cp);
        wake.notify_one();
    }
}

impl Drop for Checkpointer {
    /// Stops the thread once its current save (if any) ends; does not wait for it, so a stop
    /// is never held up by a slow store.
    fn drop(&mut self) {
        let (slot, wake) = &*self.shared;
        slot.lock().unwrap_or_else(|e| e.into_inner()).stopping = true;
        wake.notify_one();
    }
}
