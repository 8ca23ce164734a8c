//! Arbitrary text through `Config::parse`.
#![no_main]

#[path = "../../tests/support/invariants.rs"]
mod invariants;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Config::load reads the file as UTF-8 text.
    if let Ok(text) = std::str::from_utf8(data) {
        invariants::check_config(text);
    }
});
