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
    /// Start of the window holding event time `ts_ms`.
    #[inline]
    pub fn start(&self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.size_ms) * self.size_ms
    }
    /// End (exclusive) of the window holding event time `ts_ms`.
    #[inline]
    pub fn end(&self, ts_ms: i64) -> i64 {
        self.start(ts_ms) + self.size_ms
    }
    /// True when the window holding `ts_ms` is closed under `watermark_ms`
    /// (a window is open until the watermark reaches its end).
    #[inline]
    pub fn is_closed(&self, ts_ms: i64, watermark_ms: i64) -> bool {
        self.end(ts_ms) <= watermark_ms
    }
}
