//! Event-time tumbling windows.

use serde::{Deserialize, Serialize};

/// A tumbling event-time window of fixed size, aligned to the Unix epoch.
///
/// ```
/// use eddy_core::WindowSpec;
/// let w = WindowSpec::new(60_000);
/// assert_eq!(w.start(125_000), 120_000);
/// assert_eq!(w.end(125_000), 180_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Window length in milliseconds (> 0).
    pub size_ms: i64,
}

impl WindowSpec {
    /// A window of `size_ms` milliseconds. Panics if `size_ms <= 0`.
    pub fn new(size_ms: i64) -> Self {
        assert!(size_ms > 0, "window size must be positive");
        Self { size_ms }
    }
    /// Start of the window holding event time `ts_ms`. The first window of the `i64` range,
    /// whose start lies below `i64::MIN`, saturates to `i64::MIN` (never overflows).
    #[inline]
    pub fn start(&self, ts_ms: i64) -> i64 {
        // The product can only fall below i64::MIN (it is <= ts_ms).
        ts_ms
            .div_euclid(self.size_ms)
            .checked_mul(self.size_ms)
            .unwrap_or(i64::MIN)
    }
    /// End (exclusive) of the window holding event time `ts_ms`. The last window of the `i64`
    /// range, whose end lies above `i64::MAX`, saturates to `i64::MAX` (never overflows).
    #[inline]
    pub fn end(&self, ts_ms: i64) -> i64 {
        let q = ts_ms.div_euclid(self.size_ms);
        match q.checked_mul(self.size_ms) {
            Some(start) => start.saturating_add(self.size_ms),
            // The start is below i64::MIN (so q < 0): the end, > ts_ms and <= 0, fits.
            None => (q + 1) * self.size_ms,
        }
    }
    /// True when the window holding `ts_ms` is closed under `watermark_ms`
    /// (a window is open until the watermark reaches its end).
    #[inline]
    pub fn is_closed(&self, ts_ms: i64, watermark_ms: i64) -> bool {
        self.end(ts_ms) <= watermark_ms
    }
}
