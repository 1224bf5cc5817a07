//! Waiting on a predicate with a deadline, instead of sleeping: poll until the condition
//! holds, panic with what was awaited when the limit passes. Polls back off from 5 ms to
//! 50 ms, so a quick condition is seen at once and a slow one (a query per poll) does not
//! load the stores.
//!
//! ```
//! use eddy_testkit::wait::{wait_for, wait_until};
//! use std::time::{Duration, Instant};
//! let start = Instant::now();
//! let elapsed = wait_for("20 ms to pass", Duration::from_secs(5), || {
//!     Some(start.elapsed()).filter(|e| *e >= Duration::from_millis(20))
//! });
//! assert!(elapsed >= Duration::from_millis(20));
//! wait_until("true", Duration::from_secs(1), || true);
//! ```

use std::future::Future;
use std::time::{Duration, Instant};

/// First pause between polls.
const FIRST_POLL: Duration = Duration::from_millis(5);
/// Longest pause between polls.
const MAX_POLL: Duration = Duration::from_millis(50);

/// The pauses between polls: [`FIRST_POLL`] doubling up to [`MAX_POLL`].
fn pauses() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(FIRST_POLL), |p| Some((*p * 2).min(MAX_POLL)))
}

/// The panic of a wait that ran out of time.
fn timed_out(what: &str, limit: Duration) -> ! {
    panic!("timed out after {limit:?} waiting for {what}")
}

/// Polls `f` until it returns `Some`, and returns that value; panics naming `what` once
/// `limit` has passed. Blocks the calling thread (use [`wait_for_async`] in async tests).
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    for pause in pauses() {
        if let Some(v) = f() {
            return v;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::park_timeout(pause.min(deadline - now));
    }
    timed_out(what, limit)
}

/// Polls `pred` until it holds; panics naming `what` once `limit` has passed.
pub fn wait_until(what: &str, limit: Duration, mut pred: impl FnMut() -> bool) {
    wait_for(what, limit, || pred().then_some(()))
}

/// As [`wait_for`] for async tests: awaits `f()` until it yields `Some`, pausing on the tokio
/// timer (other tasks run meanwhile).
pub async fn wait_for_async<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    for pause in pauses() {
        if let Some(v) = f().await {
            return v;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
    }
    timed_out(what, limit)
}

/// As [`wait_until`] for async tests: awaits `pred()` until it yields `true`.
pub async fn wait_until_async<F, Fut>(what: &str, limit: Duration, mut pred: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_async(what, limit, || {
        let p = pred();
        async move { p.await.then_some(()) }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let got = wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "timed out after 30ms waiting for never")]
    fn panics_at_the_deadline() {
        wait_until("never", Duration::from_millis(30), || false);
    }

    #[tokio::test]
    async fn async_variants_poll_futures() {
        let mut n = 0;
        let got = wait_for_async("n to reach 2", Duration::from_secs(5), || {
            n += 1;
            let v = n;
            async move { (v >= 2).then_some(v) }
        })
        .await;
        assert_eq!(got, 2);
        wait_until_async("true", Duration::from_secs(1), || async { true }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for never")]
    async fn async_wait_panics_at_the_deadline() {
        wait_until_async("never", Duration::from_millis(30), || async { false }).await;
    }
}
