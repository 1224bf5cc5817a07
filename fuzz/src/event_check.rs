//! The checks of the `event_decoder` fuzz target, shared with the stable regression test
//! `core/tests/fuzz_corpus.rs` (included there with `#[path]`): one definition of "the
//! decoder behaves" for libFuzzer and for the normal suite.

use eddy_core::event::{MAX_AMOUNT, MAX_TS_MS, MICROS, MIN_TS_MS};
use eddy_core::{Event, EventType, ParseError, parse_event};

/// Largest `amount_micros` an accepted event may carry.
const MAX_MICROS: i64 = (MAX_AMOUNT * MICROS) as i64;

/// Decodes `data` and checks (panicking on a violation):
/// - `parse_event` does not panic, and a rejection has one of the documented reasons;
/// - an accepted event has `MIN_TS_MS <= ts < MAX_TS_MS`, `0 <= amount_micros <=
///   MAX_AMOUNT * MICROS`, a known event type, and its input is valid JSON;
/// - the event written back as JSON (`event_id`, `ts`, `user_id`, `campaign_id`,
///   `event_type`, `amount` in units) parses to the same event.
pub fn check_event(data: &[u8]) {
    let event = match parse_event(data) {
        Ok(event) => event,
        Err(e) => {
            check_rejection(&e);
            return;
        }
    };
    assert!(
        (MIN_TS_MS..MAX_TS_MS).contains(&event.ts_ms),
        "accepted ts out of bounds: {event:?}"
    );
    if let Some(m) = event.amount_micros {
        assert!(
            (0..=MAX_MICROS).contains(&m),
            "accepted amount out of bounds: {event:?}"
        );
    }
    assert!(EventType::ALL.contains(&event.event_type));
    assert_eq!(
        EventType::parse(event.event_type.as_str()),
        Some(event.event_type)
    );
    // Syntax only: `serde_json::Value` also refuses numbers out of f64 range (`1e400`) that
    // are valid JSON, and the decoder rightly skips in an unknown field.
    assert!(
        serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok(),
        "accepted input that is not valid JSON: {event:?}"
    );
    let again = parse_event(reserialize(&event).as_bytes())
        .unwrap_or_else(|e| panic!("re-serialized {event:?} is rejected: {e}"));
    assert_eq!(again, event, "re-serialization changed the event");
}

/// The wire form of an accepted event.
pub fn reserialize(event: &Event) -> String {
    let mut v = serde_json::json!({
        "event_id": "fuzz",
        "ts": event.ts_ms,
        "user_id": event.user_id,
        "campaign_id": event.campaign_id,
        "event_type": event.event_type.as_str(),
    });
    if let Some(m) = event.amount_micros {
        v["amount"] = serde_json::json!(m as f64 / MICROS);
    }
    v.to_string()
}

fn check_rejection(e: &ParseError) {
    let reason = e.reason();
    assert!(
        [
            "bad_utf8",
            "bad_json",
            "unknown_event_type",
            "bad_amount",
            "bad_ts"
        ]
        .contains(&reason),
        "undocumented reason {reason}"
    );
    // The message is rendered into dead letters: it must not panic.
    let _ = e.to_string();
    match *e {
        ParseError::BadTimestamp(ts) => assert!(!(MIN_TS_MS..MAX_TS_MS).contains(&ts)),
        ParseError::BadAmount(a) => assert!(!(a.is_finite() && (0.0..=MAX_AMOUNT).contains(&a))),
        _ => {}
    }
}
