//! A small tokio current-thread runtime for the async ClickHouse client, usable from blocking
//! code whether or not the caller is itself inside a tokio runtime.

use crate::SinkError;
use std::future::Future;
use std::time::Duration;

/// Owns a current-thread runtime and runs futures to completion with a time limit.
pub(crate) struct Blocking {
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
}

impl Blocking {
    pub(crate) fn new() -> Result<Self, SinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SinkError::Config(format!("cannot start a tokio runtime: {e}")))?;
        Ok(Self { rt: Some(rt) })
    }

    /// Runs `fut` to completion, failing with [`SinkError::Timeout`] after `limit`. When called
    /// from inside another tokio runtime (where `block_on` would panic), runs it on a scoped
    /// helper thread instead.
    pub(crate) fn run<F, T>(
        &self,
        what: &'static str,
        limit: Duration,
        fut: F,
    ) -> Result<T, SinkError>
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
        let rt = self.rt.as_ref().expect("runtime present until drop");
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| rt.block_on(timed))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        } else {
            rt.block_on(timed)
        }
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        // A plain drop panics inside an async context; this does not block.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip() {
        let b = Blocking::new().unwrap();
        let v = b.run("sleep", Duration::from_secs(5), async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(7)
        });
        assert_eq!(v.unwrap(), 7);
        let slow = b.run("slow", Duration::from_millis(10), async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        });
        assert!(matches!(slow, Err(SinkError::Timeout { what: "slow", .. })));
        drop(b);
    }

    #[test]
    fn runs_outside_a_runtime() {
        roundtrip();
    }

    #[tokio::test]
    async fn runs_and_drops_inside_a_runtime() {
        roundtrip();
    }
}
