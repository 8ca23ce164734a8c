//! Arbitrary bytes from the MTA, through the daemon's milter protocol server (see
//! tests/support/invariants.rs, `milter_input`, for the input format).
#![no_main]

#[path = "../../tests/support/invariants.rs"]
mod invariants;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    invariants::check_milter_stream(&invariants::milter_input(data));
});
