//! Arbitrary bytes from the MTA, through the daemon's milter protocol server (see
//! tests/support/milter_stream.rs, `input`, for the input format).
#![no_main]

#[path = "../../tests/support/invariants.rs"]
mod invariants;
#[path = "../../tests/support/milter_stream.rs"]
mod milter_stream;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    milter_stream::check(&milter_stream::input(data));
});
