//! Reusable timely/differential operators of eddy, each an extension trait in its own file.
//!
//! Time in eddy's dataflows is *processing* time: an [`Epoch`] counter advanced by the sources.
//! Event time lives in the data (window starts are part of keys), and the event-time watermark
//! is computed inside the dataflow by [`watermark::TrackWatermark`] from per-partition progress
//! reports, identically on every worker.

pub mod accumulate;
pub mod closed;
pub mod distinct;
pub mod panes;
pub mod stash;
pub mod watermark;

pub use accumulate::{Accumulator, MinMax, Sum, WindowedAccumulate};
pub use closed::ClosedWindows;
pub use distinct::{SlidingDistinct, StateGauge};
pub use panes::{Emit, PaneAccumulate, PaneSpec, Panes};
pub use stash::EpochStash;
pub use watermark::{
    EpochCheckpoint, PartitionProgress, TrackWatermark, WatermarkHandle, WatermarkPolicy,
};

/// Processing-time epoch: the timely timestamp of every eddy dataflow.
pub type Epoch = u64;
