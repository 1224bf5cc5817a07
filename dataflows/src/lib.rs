//! eddy's dataflows. Each is one function from collections to collections, in its own file,
//! with the query it computes in its doc comment and an oracle test beside it.

pub mod build;
pub mod engagement;
pub mod interactions;
pub mod recommendations;
pub mod similarity;
pub mod windowed_counts;

#[cfg(test)]
mod restore_tests;
#[cfg(test)]
pub(crate) mod testing;

pub use build::{Inputs, Outputs, Restored, SimilarityOutputs, build};
pub use engagement::{
    Engagement, EngagementParams, EngagementSums, engagement, engagement_restored,
};
pub use interactions::{InteractionParams, interactions, interactions_restorable, interest_pairs};
pub use similarity::{SimilarityMode, SimilarityParams, similar_users, similar_users_and_sets};
pub use windowed_counts::{CountSum, WindowedCounts, windowed_counts};
