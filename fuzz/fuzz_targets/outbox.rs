//! Arbitrary bytes as an outbox entry file, and entries written by `Outbox::enqueue`.
#![no_main]

#[path = "../../tests/support/invariants.rs"]
mod invariants;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A fresh scratch directory (in /dev/shm: the outbox fsyncs every write), removed after
    // each input; a static one would outlive the process, since statics are never dropped.
    let dir = invariants::scratch_dir();
    invariants::check_outbox_bytes(dir.path(), data);
    // The same bytes as a reply: the first line is the recipient, the rest the message.
    let (rcpt, message) = match data.iter().position(|&b| b == b'\n') {
        Some(p) => (&data[..p], &data[p + 1..]),
        None => (data, &[][..]),
    };
    let now = data.iter().take(8).fold(0u64, |n, &b| n << 8 | u64::from(b)) >> 30;
    invariants::check_outbox_round_trip(dir.path(), &String::from_utf8_lossy(rcpt), message, now);
});
