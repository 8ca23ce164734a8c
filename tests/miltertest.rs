//! The daemon's milter protocol server driven by Debian's `miltertest`, the MTA side of
//! libmilter's own test tool, over TCP and a UNIX socket: the script
//! tests/miltertest/triage.lua checks the negotiation, forged-header removal, the triage
//! headers, accept-at-DATA of mail that is not for the Help Desk, an abort and a follow-up.

#[path = "support/daemon.rs"]
mod daemon;

use daemon::Daemon;
use std::path::Path;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/miltertest/triage.lua");

/// Runs the script against `socket` (libmilter's notation) and fails with its output.
fn miltertest(socket: &str, d: &Daemon) {
    let out = Command::new("miltertest")
        .args(["-D", &format!("socket={socket}"), "-s", SCRIPT])
        .output()
        .unwrap_or_else(|e| panic!("miltertest: {e} (Debian package miltertest; tests/run installs it)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "miltertest against {socket}: {}\n{stdout}{}\ndaemon log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

#[test]
fn miltertest_over_tcp() {
    let d = Daemon::start("");
    miltertest(&format!("inet:{}@127.0.0.1", d.port), &d);
}

#[test]
fn miltertest_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("milter.sock");
    let d = Daemon::start_unix(Path::new(&socket), "");
    miltertest(&format!("unix:{}", socket.display()), &d);
}
