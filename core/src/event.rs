//! The event format and its validation.
//!
//! One JSON object per Kafka message:
//! `{"event_id": string, "ts": epoch-ms, "user_id": u64, "campaign_id": u64,
//!   "event_type": "view"|"click"|"conversion", "product_id": string (optional),
//!   "amount": number (optional, >= 0)}`. Unknown fields are ignored.
//!
//! Amounts are kept as integer micro-units (1 unit = 1_000_000 micros), so sums are exact and
//! independent of the order in which workers add them. An amount is at most [`MAX_AMOUNT`]
//! (see there for what that means for sums).

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// Earliest plausible event time: 2000-01-01T00:00:00Z.
pub const MIN_TS_MS: i64 = 946_684_800_000;
/// Latest plausible event time: 2100-01-01T00:00:00Z.
pub const MAX_TS_MS: i64 = 4_102_444_800_000;
/// Micro-units per unit of `amount`.
pub const MICROS: f64 = 1_000_000.0;
/// Largest accepted `amount`: 10 000 000 units (10^13 micro-units). A larger amount is a dead
/// letter `bad_amount`.
///
/// Sums of amounts (window sums, campaign revenue over the sliding window) are reported as
/// `i64` micro-units, so one sum holds at most `i64::MAX` micros = 9 223 372 036 854.775807
/// units: at least 922 337 events of the largest amount per window and key (per event type,
/// per campaign over `engagement.sliding_ms`) before a sum could reach it. The dataflows add
/// in `i128`, exactly; a sum that still does not fit in `i64` is reported as `i64::MAX` with an
/// error logged, never as a wrapped (negative) number.
pub const MAX_AMOUNT: f64 = 10_000_000.0;

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
    /// `amount` is negative, not finite, or above [`MAX_AMOUNT`].
    #[error("invalid amount {0}: must be a finite number >= 0 and <= 10000000")]
    BadAmount(f64),
    /// `ts` outside 2000-01-01 .. 2100-01-01.
    #[error("ts {0} is not a plausible epoch-milliseconds timestamp")]
    BadTimestamp(i64),
    /// `ts` later than the wall clock plus `pipeline.max_future_ms` ([`check_not_future`]).
    #[error(
        "ts {ts_ms} is in the future: later than {max_ms} (wall clock + pipeline.max_future_ms)"
    )]
    FutureTimestamp {
        /// The event's time.
        ts_ms: i64,
        /// The latest accepted event time when it was read.
        max_ms: i64,
    },
}

impl ParseError {
    /// Short machine-readable reason, used as a metric label and in dead-letter records.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Utf8 => "bad_utf8",
            ParseError::Json(_) => "bad_json",
            ParseError::UnknownEventType(_) => "unknown_event_type",
            ParseError::BadAmount(_) => "bad_amount",
            ParseError::BadTimestamp(_) | ParseError::FutureTimestamp { .. } => "bad_ts",
        }
    }
}

/// A JSON string field: borrowed from the message when it has no escape sequence (the fast
/// path, no allocation), owned when unescaping had to build a new string (`\/`, `\u00e9`,
/// `\"`, ...). Any valid JSON string is accepted.
#[derive(Debug)]
struct JsonStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = JsonStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    event_id: JsonStr<'a>,
    ts: i64,
    user_id: u64,
    campaign_id: u64,
    #[serde(borrow)]
    event_type: JsonStr<'a>,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    product_id: Option<JsonStr<'a>>,
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
    let event_type = EventType::parse(&raw.event_type.0)
        .ok_or_else(|| ParseError::UnknownEventType(raw.event_type.0.into_owned()))?;
    if !(MIN_TS_MS..MAX_TS_MS).contains(&raw.ts) {
        return Err(ParseError::BadTimestamp(raw.ts));
    }
    let amount_micros = match raw.amount {
        None => None,
        Some(a) if a.is_finite() && (0.0..=MAX_AMOUNT).contains(&a) => {
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

/// Rejects an event dated after `now_ms + max_future_ms` (wall clock, epoch ms): one event
/// from the far future would otherwise carry the watermark there and make every later event
/// late.
///
/// ```
/// use eddy_core::event::check_not_future;
/// assert!(check_not_future(1_000, 900, 100).is_ok());
/// assert_eq!(check_not_future(1_001, 900, 100).unwrap_err().reason(), "bad_ts");
/// ```
pub fn check_not_future(ts_ms: i64, now_ms: i64, max_future_ms: i64) -> Result<(), ParseError> {
    let max_ms = now_ms.saturating_add(max_future_ms.max(0));
    if ts_ms > max_ms {
        return Err(ParseError::FutureTimestamp { ts_ms, max_ms });
    }
    Ok(())
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

    #[test]
    fn escaped_strings_are_valid_events() {
        let ok =
            |json: &str| parse_event(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
        let e = ok(
            r#"{"event_id":"a\/b","ts":1700000000000,"user_id":1,"campaign_id":2,"event_type":"view"}"#,
        );
        assert_eq!(
            (e.user_id, e.campaign_id, e.event_type),
            (1, 2, EventType::View)
        );
        ok(
            r#"{"event_id":"\u00e9t\u00e9","ts":1700000000000,"user_id":1,"campaign_id":2,"event_type":"view"}"#,
        );
        ok(
            r#"{"event_id":"e","ts":1700000000000,"user_id":1,"campaign_id":2,"event_type":"click","product_id":"x\"y"}"#,
        );
        // Escapes in the event type itself still name the kind: "vi\u0065w" is "view".
        let e = ok(
            r#"{"event_id":"e","ts":1700000000000,"user_id":1,"campaign_id":2,"event_type":"vi\u0065w"}"#,
        );
        assert_eq!(e.event_type, EventType::View);
        // A string field of the wrong type is still bad_json.
        assert_eq!(
            reason(br#"{"event_id":5,"ts":1700000000000,"user_id":1,"campaign_id":2,"event_type":"view"}"#),
            "bad_json"
        );
    }

    #[test]
    fn amounts_are_bounded() {
        let with = |amount: &str| {
            parse_event(format!(r#"{{"event_id":"a","ts":1700000000000,"user_id":1,"campaign_id":2,"event_type":"conversion","amount":{amount}}}"#).as_bytes())
        };
        assert_eq!(
            with("10000000").unwrap().amount_micros,
            Some(10_000_000_000_000)
        );
        assert_eq!(with("10000000.000001").unwrap_err().reason(), "bad_amount");
        // Five of these in one window wrapped to negative revenue: each is a dead letter now.
        assert_eq!(with("2000000000000").unwrap_err().reason(), "bad_amount");
        assert_eq!(with("1e300").unwrap_err().reason(), "bad_amount");
    }
}
