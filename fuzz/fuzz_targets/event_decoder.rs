//! `eddy_core::parse_event` on arbitrary bytes: never panics, every accepted event satisfies
//! the documented invariants and survives re-serialization (see `src/event_check.rs`).
#![no_main]

#[path = "../src/event_check.rs"]
mod event_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    event_check::check_event(data);
});
