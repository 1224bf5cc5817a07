//! Parsing and validation of `/v1/counts` query parameters.

use crate::ServerQueryLimits;
use crate::error::AppError;
use eddy_core::EventType;
use serde::{Deserialize, Serialize};

/// Time resolution of a counts answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// The pipeline's native window (`window_ms`, one minute by default).
    #[default]
    Minute,
    /// Native windows summed per hour (bucketed by window start).
    Hour,
}

impl Granularity {
    /// The wire name (`minute`, `hour`).
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
        }
    }
}

/// Validated parameters of `GET /v1/counts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountsParams {
    /// Only this event type, or all types.
    pub event_type: Option<EventType>,
    /// Per-campaign counts of this campaign, or per-type stats when `None`.
    pub campaign_id: Option<u64>,
    /// Inclusive lower bound of window starts, epoch ms.
    pub from_ms: i64,
    /// Exclusive upper bound of window starts, epoch ms.
    pub to_ms: i64,
    /// Answer resolution.
    pub granularity: Granularity,
}

const KNOWN: [&str; 5] = ["from", "to", "event_type", "campaign_id", "granularity"];

fn bad(msg: impl Into<String>) -> AppError {
    AppError::BadRequest(msg.into())
}

fn parse_ms(name: &str, raw: &str) -> Result<i64, AppError> {
    raw.parse::<i64>().map_err(|_| {
        bad(format!(
            "`{name}` must be an integer number of epoch milliseconds, got {raw:?}"
        ))
    })
}

impl CountsParams {
    /// Validates raw `(name, value)` pairs against `limits`: every parameter known and given
    /// once, numbers integral, `from < to`, `to - from <= max_range_ms`.
    pub fn parse(pairs: &[(String, String)], limits: &ServerQueryLimits) -> Result<Self, AppError> {
        let mut seen: [Option<&str>; 5] = [None; 5];
        for (name, value) in pairs {
            let Some(i) = KNOWN.iter().position(|k| k == name) else {
                return Err(bad(format!(
                    "unknown query parameter {name:?} (expected one of: {})",
                    KNOWN.join(", ")
                )));
            };
            if seen[i].is_some() {
                return Err(bad(format!(
                    "query parameter {name:?} given more than once"
                )));
            }
            seen[i] = Some(value.as_str());
        }
        let [from, to, event_type, campaign_id, granularity] = seen;
        let from_ms = parse_ms(
            "from",
            from.ok_or_else(|| bad("missing required parameter `from`"))?,
        )?;
        let to_ms = parse_ms(
            "to",
            to.ok_or_else(|| bad("missing required parameter `to`"))?,
        )?;
        if from_ms >= to_ms {
            return Err(bad(format!(
                "`from` ({from_ms}) must be less than `to` ({to_ms})"
            )));
        }
        match to_ms.checked_sub(from_ms) {
            Some(range) if range <= limits.max_range_ms => {}
            _ => {
                return Err(bad(format!(
                    "range `to - from` exceeds the maximum of {} ms",
                    limits.max_range_ms
                )));
            }
        }
        let event_type = event_type
            .map(|s| {
                EventType::parse(s).ok_or_else(|| {
                    bad(format!(
                        "unknown event_type {s:?} (expected view, click or conversion)"
                    ))
                })
            })
            .transpose()?;
        let campaign_id = campaign_id
            .map(|s| {
                s.parse::<u64>().map_err(|_| {
                    bad(format!(
                        "`campaign_id` must be an unsigned integer, got {s:?}"
                    ))
                })
            })
            .transpose()?;
        let granularity = match granularity {
            None | Some("minute") => Granularity::Minute,
            Some("hour") => Granularity::Hour,
            Some(other) => {
                return Err(bad(format!(
                    "unknown granularity {other:?} (expected minute or hour)"
                )));
            }
        };
        Ok(Self {
            event_type,
            campaign_id,
            from_ms,
            to_ms,
            granularity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &[(&str, &str)]) -> Result<CountsParams, AppError> {
        let pairs: Vec<(String, String)> = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CountsParams::parse(
            &pairs,
            &ServerQueryLimits {
                max_range_ms: 1000,
                window_ms: 10,
                ..ServerQueryLimits::default()
            },
        )
    }

    #[test]
    fn accepts_valid_and_defaults() {
        let p = parse(&[("from", "0"), ("to", "1000")]).unwrap();
        assert_eq!(
            p,
            CountsParams {
                event_type: None,
                campaign_id: None,
                from_ms: 0,
                to_ms: 1000,
                granularity: Granularity::Minute
            }
        );
        let p = parse(&[
            ("granularity", "hour"),
            ("campaign_id", "18446744073709551615"),
            ("event_type", "conversion"),
            ("to", "-1"),
            ("from", "-5"),
        ])
        .unwrap();
        assert_eq!(p.campaign_id, Some(u64::MAX));
        assert_eq!(p.event_type, Some(EventType::Conversion));
        assert_eq!(p.granularity, Granularity::Hour);
        assert_eq!((p.from_ms, p.to_ms), (-5, -1));
    }

    #[test]
    fn rejects_every_kind_of_bad_input() {
        for q in [
            &[("to", "10")][..],
            &[("from", "0")],
            &[("from", "0"), ("to", "1001")],
            &[("from", "10"), ("to", "10")],
            &[("from", "1.5"), ("to", "10")],
            &[("from", "0"), ("to", "1e3")],
            &[("from", "0"), ("to", "")],
            &[
                ("from", "-9223372036854775808"),
                ("to", "9223372036854775807"),
            ],
            &[("from", "0"), ("to", "99999999999999999999")],
            &[("from", "0"), ("to", "10"), ("event_type", "like")],
            &[("from", "0"), ("to", "10"), ("event_type", "")],
            &[("from", "0"), ("to", "10"), ("campaign_id", "-1")],
            &[("from", "0"), ("to", "10"), ("campaign_id", "x")],
            &[("from", "0"), ("to", "10"), ("granularity", "day")],
            &[("from", "0"), ("to", "10"), ("limit", "5")],
            &[("from", "0"), ("to", "10"), ("from", "1")],
        ] {
            assert!(
                matches!(parse(q), Err(AppError::BadRequest(_))),
                "accepted {q:?}"
            );
        }
    }
}
