//! Start-up against a broker that is not answering yet (restarting, overloaded, or started
//! after eddy): every broker call of `eddy run`'s start-up is retried with bounded exponential
//! backoff until one shared deadline (`kafka.startup_timeout_ms`), so a slow broker at restart
//! costs a delay, not an exit.

use super::KafkaIoError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// First pause between two attempts; it doubles after each failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The broker calls of one start-up: retried until a deadline shared by all of them, or until
/// `stop` is set.
///
/// ```
/// use eddy::kafka::{BrokerStartup, KafkaIoError};
/// use std::sync::atomic::AtomicBool;
/// use std::time::Duration;
///
/// let stop = AtomicBool::new(false);
/// let startup = BrokerStartup::new(Duration::from_secs(5), &stop);
/// let mut calls = 0;
/// let got = startup.retry("metadata", || {
///     calls += 1;
///     if calls < 3 { Err(KafkaIoError::Timeout { op: "metadata" }) } else { Ok(calls) }
/// });
/// assert_eq!(got.unwrap(), 3);
/// // A fatal error is not retried.
/// let fatal = startup.retry("topic", || -> Result<(), _> {
///     Err(KafkaIoError::NoTopic("t".into()))
/// });
/// assert!(matches!(fatal, Err(KafkaIoError::NoTopic(_))));
/// ```
pub struct BrokerStartup<'a> {
    deadline: Instant,
    timeout: Duration,
    stop: &'a AtomicBool,
}

impl<'a> BrokerStartup<'a> {
    /// Start-up calls that give up `timeout` from now, or as soon as `stop` is set.
    pub fn new(timeout: Duration, stop: &'a AtomicBool) -> Self {
        Self {
            deadline: Instant::now() + timeout,
            timeout,
            stop,
        }
    }

    /// Runs `attempt` until it succeeds. An error that waiting can cure (the broker did not
    /// answer, or answered with an error: [`KafkaIoError::Client`], [`KafkaIoError::Timeout`])
    /// is logged and retried after a backoff that doubles from [`FIRST_BACKOFF`] to
    /// [`MAX_BACKOFF`]; any other error (no such topic, a checkpoint that does not match the
    /// topic) is returned at once. Past the deadline, or once `stop` is set, the last error is
    /// returned, wrapped as [`KafkaIoError::StartupTimeout`] when the deadline passed.
    pub fn retry<T>(
        &self,
        op: &'static str,
        mut attempt: impl FnMut() -> Result<T, KafkaIoError>,
    ) -> Result<T, KafkaIoError> {
        let mut backoff = FIRST_BACKOFF;
        for n in 1u32.. {
            let err = match attempt() {
                Ok(v) => {
                    if n > 1 {
                        tracing::info!(op, attempts = n, "broker answered");
                    }
                    return Ok(v);
                }
                Err(e @ (KafkaIoError::Client { .. } | KafkaIoError::Timeout { .. })) => e,
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            if now >= self.deadline {
                tracing::error!(op, attempts = n, error = %err, "broker not answering: giving up");
                return Err(KafkaIoError::StartupTimeout {
                    op,
                    timeout_ms: self.timeout.as_millis() as u64,
                    last: Box::new(err),
                });
            }
            if self.stop.load(Ordering::SeqCst) {
                return Err(err);
            }
            let pause = backoff.min(self.deadline - now);
            tracing::warn!(
                op,
                attempt = n,
                retry_in_ms = pause.as_millis() as u64,
                error = %err,
                "broker not answering at start-up; retrying"
            );
            // Sleep in slices so a stop is seen promptly.
            let until = now + pause;
            while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        unreachable!("the attempt loop only ends by returning")
    }
}
