//! eddy's dataflows. Each is one function from collections to collections, in its own file,
//! with the query it computes in its doc comment and an oracle test beside it.

pub mod windowed_counts;

pub use windowed_counts::{CountSum, WindowedCounts, windowed_counts};
