//! The event format and its validation.
//!
//! One JSON object per Kafka message:
//! `{"event_id": string, "ts": epoch-ms, "user_id": u64, "campaign_id": u64,
//!   "event_type": "view"|"click"|"conversion", "product_id": string (optional),
//!   "amount": number (optional, >= 0)}`. Unknown fields are ignored.
//!
//! Amounts are kept as integer micro-units (1 unit = 1_000_000 micros), so sums are exact and
//! independent of the order in which workers add them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Earliest plausible event time: 2000-01-01T00:00:00Z.
pub const MIN_TS_MS: i64 = 946_684_800_000;
/// Latest plausible event time: 2100-01-01T00:00:00Z.
pub const MAX_TS_MS: i64 = 4_102_444_800_000;
/// Micro-units per unit of `amount`.
pub const MICROS: f64 = 1_000_000.0;

/// Kind of user interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// An impression of a campaign.
    View,
    /// A click on a campaign.
    Click,
    /// A conversion (purchase) attributed to a campaign.
    Conversion,
}

impl EventType {
    /// All event types, in order.
    pub const ALL: [EventType; 3] = [EventType::View, EventType::Click, EventType::Conversion];
    /// The wire name (`view`, `click`, `conversion`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Click => "click",
            EventType::Conversion => "conversion",
        }
    }
    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "view" => Some(EventType::View),
            "click" => Some(EventType::Click),
            "conversion" => Some(EventType::Conversion),
            _ => None,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated event, as the dataflows see it (fixed size, `Copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Event time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The user who interacted.
    pub user_id: u64,
    /// The campaign interacted with.
    pub campaign_id: u64,
    /// Kind of interaction.
    pub event_type: EventType,
    /// Revenue in micro-units, when the event carries an amount.
    pub amount_micros: Option<i64>,
}

/// Why a message was rejected. The `reason()` string is what the dead-letter topic records.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Bytes are not UTF-8.
    #[error("message is not valid UTF-8")]
    Utf8,
    /// JSON syntax error, or a field of the wrong type or missing.
    #[error("invalid event JSON: {0}")]
    Json(String),
    /// `event_type` is not one of the known kinds.
    #[error("unknown event_type {0:?}")]
    UnknownEventType(String),
    /// `amount` is negative or not finite.
    #[error("invalid amount {0}: must be a finite number >= 0")]
    BadAmount(f64),
    /// `ts` outside 2000-01-01 .. 2100-01-01.
    #[error("ts {0} is not a plausible epoch-milliseconds timestamp")]
    BadTimestamp(i64),
}

impl ParseError {
    /// Short machine-readable reason, used as a metric label and in dead-letter records.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Utf8 => "bad_utf8",
            ParseError::Json(_) => "bad_json",
            ParseError::UnknownEventType(_) => "unknown_event_type",
            ParseError::BadAmount(_) => "bad_amount",
            ParseError::BadTimestamp(_) => "bad_ts",
        }
    }
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    event_id: &'a str,
    ts: i64,
    user_id: u64,
    campaign_id: u64,
    #[serde(borrow)]
    event_type: &'a str,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    product_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    amount: Option<f64>,
}

/// Parses and validates one message.
///
/// ```
/// use eddy_core::{parse_event, EventType};
/// let e = parse_event(br#"{"event_id":"a","ts":1700000000000,"user_id":1,"campaign_id":2,
///     "event_type":"conversion","amount":12.5}"#).unwrap();
/// assert_eq!(e.event_type, EventType::Conversion);
/// assert_eq!(e.amount_micros, Some(12_500_000));
/// assert_eq!(parse_event(b"{").unwrap_err().reason(), "bad_json");
/// ```
pub fn parse_event(bytes: &[u8]) -> Result<Event, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::Utf8)?;
    let raw: RawEvent<'_> =
        serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))?;
    let event_type = EventType::parse(raw.event_type)
        .ok_or_else(|| ParseError::UnknownEventType(raw.event_type.to_owned()))?;
    if !(MIN_TS_MS..MAX_TS_MS).contains(&raw.ts) {
        return Err(ParseError::BadTimestamp(raw.ts));
    }
    let amount_micros = match raw.amount {
        None => None,
        Some(a) if a.is_finite() && a >= 0.0 && a * MICROS < i64::MAX as f64 / 4.0 => {
            Some((a * MICROS).round() as i64)
        }
        Some(a) => return Err(ParseError::BadAmount(a)),
    };
    Ok(Event {
        ts_ms: raw.ts,
        user_id: raw.user_id,
        campaign_id: raw.campaign_id,
        event_type,
        amount_micros,
    })
}

/// Converts micro-units back to a decimal amount (for display only; sums stay integral).
pub fn micros_to_amount(micros: i64) -> f64 {
    micros as f64 / MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &[u8]) -> &'static str {
        parse_event(s).unwrap_err().reason()
    }

    #[test]
    fn rejects_each_kind_of_bad_input() {
        assert_eq!(reason(&[0xff, 0xfe]), "bad_utf8");
        assert_eq!(reason(b"not json"), "bad_json");
        assert_eq!(
            reason(br#"{"event_id":"a","ts":1700000000000,"user_id":1,"event_type":"view"}"#),
            "bad_json"
        );
        assert_eq!(
            reason(br#"{"event_id":"a","ts":1700000000000,"user_id":"x","campaign_id":1,"event_type":"view"}"#),
            "bad_json"
        );
        assert_eq!(
            reason(br#"{"event_id":"a","ts":1700000000000,"user_id":1,"campaign_id":1,"event_type":"like"}"#),
            "unknown_event_type"
        );
        assert_eq!(
            reason(br#"{"event_id":"a","ts":1700000000000,"user_id":1,"campaign_id":1,"event_type":"conversion","amount":-1}"#),
            "bad_amount"
        );
        assert_eq!(
            reason(br#"{"event_id":"a","ts":1700000000,"user_id":1,"campaign_id":1,"event_type":"view"}"#),
            "bad_ts"
        );
    }

    #[test]
    fn ignores_unknown_fields_and_keeps_optional_ones() {
        let e = parse_event(
            br#"{"event_id":"a","ts":1700000000123,"user_id":7,"campaign_id":9,"event_type":"click","product_id":"p\u00e9","extra":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            Event {
                ts_ms: 1_700_000_000_123,
                user_id: 7,
                campaign_id: 9,
                event_type: EventType::Click,
                amount_micros: None
            }
        );
    }
}
