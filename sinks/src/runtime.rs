//! A small tokio current-thread runtime for the async ClickHouse client, usable from blocking
//! code whether or not the caller is itself inside a tokio runtime.

use crate::SinkError;
use std::future::Future;
use std::time::Duration;

/// Owns a current-thread runtime and runs futures to completion with a time limit.
pub(crate) struct Blocking {
    rt: tokio::runtime::Runtime,
}

impl Blocking {
    pub(crate) fn new() -> Result<Self, SinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SinkError::Config(format!("cannot start a tokio runtime: {e}")))?;
        Ok(Self { rt })
    }

    /// Runs `fut` to completion, failing with [`SinkError::Timeout`] after `limit`. When called
    /// from inside another tokio runtime (where `block_on` would panic), runs it on a scoped
    /// helper thread instead.
    pub(crate) fn run<F, T>(&self, what: &'static str, limit: Duration, fut: F) -> Result<T, SinkError>
    where
        F: Future<Output = Result<T, SinkError>> + Send,
        T: Send,
    {
        let timed = async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => Err(SinkError::Timeout { what, after: limit }),
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| self.rt.block_on(timed))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        } else {
            self.rt.block_on(timed)
        }
    }
}
