//! The JSON values stored in Redis strings (`docs/storage.md`, "Engagement, similarity and
//! recommendations"). The writer serializes these types and the reader deserializes the same
//! ones; the lists are [`Cow`]s so the writer serializes borrowed slices without copying.

use eddy_core::Neighbor;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Value of [`user_similar`](crate::keys::user_similar):
/// `{"as_of": watermark, "neighbors": [{"user_id", "shared", "union"}, …]}`, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarValue<'a> {
    /// Watermark of the batch that wrote the value.
    pub as_of: i64,
    /// The similar users, best first (Jaccard = shared / union).
    pub neighbors: Cow<'a, [Neighbor]>,
}

/// Value of [`user_campaigns`](crate::keys::user_campaigns):
/// `{"as_of": watermark, "campaigns": [campaign_id, …]}`, ascending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignsValue<'a> {
    /// Watermark of the batch that wrote the value.
    pub as_of: i64,
    /// The campaigns the user engaged with in the sliding window, ascending.
    pub campaigns: Cow<'a, [u64]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_round_trips_in_the_documented_shape() {
        let n = [Neighbor {
            user_id: 8,
            shared: 2,
            union: 3,
        }];
        let v = SimilarValue {
            as_of: 5,
            neighbors: Cow::Borrowed(&n),
        };
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(
            json,
            r#"{"as_of":5,"neighbors":[{"user_id":8,"shared":2,"union":3}]}"#
        );
        let back: SimilarValue<'static> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
        let c = CampaignsValue {
            as_of: 6,
            campaigns: Cow::Borrowed(&[3, 9]),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"as_of":6,"campaigns":[3,9]}"#);
        let back: CampaignsValue<'static> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }
}
