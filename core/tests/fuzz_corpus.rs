//! Every input of the `event_decoder` fuzz corpus (`fuzz/corpus/event_decoder/`, minimized
//! with `cargo fuzz cmin`) through the fuzz target's own checks, on stable and without
//! libFuzzer: `parse_event` never panics, accepted events satisfy the documented bounds and
//! survive re-serialization. See docs/fuzzing.md.

#[path = "../../fuzz/src/event_check.rs"]
mod event_check;

#[path = "../../fuzz/src/corpus.rs"]
mod corpus;

fn corpus() -> Vec<(std::path::PathBuf, Vec<u8>)> {
    corpus::corpus(env!("CARGO_MANIFEST_DIR"), "event_decoder")
}

#[test]
fn every_corpus_input_passes_the_decoder_checks() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "the corpus is missing");
    let mut accepted = 0;
    for (path, bytes) in &corpus {
        if std::panic::catch_unwind(|| event_check::check_event(bytes)).is_err() {
            panic!("corpus input {} fails the decoder checks", path.display());
        }
        accepted += usize::from(eddy_core::parse_event(bytes).is_ok());
    }
    // The corpus exercises both sides.
    assert!(
        accepted > 0 && accepted < corpus.len(),
        "{accepted} of {}",
        corpus.len()
    );
}

#[test]
fn reserialized_events_round_trip() {
    use eddy_core::{Event, EventType};
    for amount_micros in [
        None,
        Some(0),
        Some(1),
        Some(12_500_000),
        Some(10_000_000_000_000),
    ] {
        let e = Event {
            ts_ms: eddy_core::event::MAX_TS_MS - 1,
            user_id: u64::MAX,
            campaign_id: 0,
            event_type: EventType::Conversion,
            amount_micros,
        };
        let json = event_check::reserialize(&e);
        assert_eq!(eddy_core::parse_event(json.as_bytes()), Ok(e), "{json}");
    }
}
