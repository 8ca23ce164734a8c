//! Arbitrary message bytes with an arbitrary envelope, fed as the milter does (see
//! tests/support/invariants.rs, `ClassifyCase::from_fuzz_input`, for the input format).
#![no_main]

#[path = "../../tests/support/invariants.rs"]
mod invariants;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let case = invariants::ClassifyCase::from_fuzz_input(data);
    let _ = invariants::check_classify(&case);
    // The `classify` command's path (the message read as a stream, default envelope): total, and
    // an error only for too many forged names.
    let cfg = case.config();
    let file = case.with_reply_file.then_some(&invariants::FIXTURES.reply_file);
    let Ok(message) = helpdesk_milter::commands::read_message(cfg, &case.message[..]) else { return };
    let _ = helpdesk_milter::commands::classify(cfg, file, &message, case.sender.as_deref(), &case.recipients, None);
});
