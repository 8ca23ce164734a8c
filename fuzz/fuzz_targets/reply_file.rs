//! Arbitrary text through `ReplyFile::parse`, with render, match_topics and a TOML round trip.
#![no_main]

#[path = "../../tests/support/invariants.rs"]
mod invariants;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The daemon refuses a file that is not UTF-8 before parsing (ReplyFile::load).
    if let Ok(text) = std::str::from_utf8(data) {
        invariants::check_reply_file(text);
    }
});
