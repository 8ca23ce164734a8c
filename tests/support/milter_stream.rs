//! The invariants of the milter protocol server, shared by the fuzz target `milter` and the
//! property tests of tests/properties.rs: any bytes from the MTA, through the daemon's own
//! server over an in-memory stream.

use crate::invariants::FIXTURES;
use helpdesk_milter::state::ReplyState;
use std::time::Duration;

/// The negotiation Postfix opens with: protocol 6, every action and every option offered.
pub const POSTFIX_OPTNEG: [u8; 17] = [0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 0x01, 0xff, 0, 0x1f, 0xff, 0xff];

/// A fuzz input as MTA bytes. First byte: bit 0, open with [`POSTFIX_OPTNEG`]; bit 1, the rest is
/// a list of `code, length, data` (one length byte), framed here, so that inputs reach the later
/// stages; otherwise the rest is sent as it is.
pub fn input(data: &[u8]) -> Vec<u8> {
    let Some((&flags, rest)) = data.split_first() else { return Vec::new() };
    let mut out = if flags & 1 != 0 { POSTFIX_OPTNEG.to_vec() } else { Vec::new() };
    if flags & 2 == 0 {
        out.extend_from_slice(rest);
        return out;
    }
    let mut rest = rest;
    while let [code, len, tail @ ..] = rest {
        let (body, next) = tail.split_at((*len as usize).min(tail.len()));
        out.extend_from_slice(&(body.len() as u32 + 1).to_be_bytes());
        out.push(*code);
        out.extend_from_slice(body);
        rest = next;
    }
    out
}

/// Any bytes from the MTA, through the daemon's own protocol server over an in-memory stream:
/// no panic, the connection ends, and what it answers is well-formed frames of reply codes
/// only, header changes only to the triage headers (and a report's Message-ID), each before the
/// end-of-message answer they belong to.
pub fn check(input: &[u8]) -> Vec<u8> {
    use helpdesk_milter::milter::{self, wire};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cfg = FIXTURES.configs[0].clone();
    let prefix = cfg.helpdesk.header_prefix.clone();
    let live = helpdesk_milter::live::Live::new(
        cfg,
        Some(FIXTURES.reply_file.clone()),
        std::sync::Arc::new(ReplyState::in_memory()),
        None,
        None,
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let output = rt.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let (mut r, mut w) = tokio::io::split(client);
        let mut out = Vec::new();
        let send = async {
            let _ = w.write_all(input).await;
            let _ = w.shutdown().await;
        };
        let serve = milter::connection(server, live, Duration::from_secs(60), stop);
        let served = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::join!(send, r.read_to_end(&mut out), serve)
        });
        assert!(served.await.is_ok(), "the connection did not end when the MTA's input did");
        out
    });
    let mut rest = &output[..];
    let mut pending_changes = false;
    while !rest.is_empty() {
        let wire::Frame { code, data, len: used } = match wire::frame(rest) {
            Ok(Some(f)) => f,
            other => panic!("a malformed answer {other:?} in {output:?}"),
        };
        match code {
            b'O' => assert!(data.len() >= 12, "short negotiation answer"),
            b'h' | b'm' => {
                let name = if code == b'h' { data } else { data.get(4..).unwrap_or_default() };
                let name = name.split(|&b| b == 0).next().unwrap_or_default();
                // Forged fields are deleted under the name they came with, in any case.
                let ours =
                    name.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()));
                assert!(
                    ours || name.eq_ignore_ascii_case(b"Message-ID"),
                    "a change to a header that is not ours: {:?}",
                    String::from_utf8_lossy(name)
                );
                pending_changes = true;
            }
            b'a' | b'c' | b't' | b'r' | b'd' | b's' | b'y' => {
                if pending_changes {
                    assert!(code != b's', "header changes before a skip, not an end of message");
                }
                pending_changes = false;
            }
            other => panic!("an answer the daemon never writes: {:?}", other as char),
        }
        rest = &rest[used..];
    }
    assert!(!pending_changes, "header changes with no end-of-message answer after them");
    output
}
