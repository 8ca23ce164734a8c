//! The daemon process: systemd readiness and reload notifications, start-up errors.

#[path = "support/daemon.rs"]
mod daemon;

use daemon::{BIN, Daemon};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification from the daemon");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notifies_systemd_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut d = Daemon::start_with_env("", &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let ready = recv(&sock);
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(ready.contains("STATUS=listening on inet:127.0.0.1:"), "{ready}");

    d.signal("HUP");
    let reloading = recv(&sock);
    assert!(reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert!(recv(&sock).contains("READY=1"));

    assert_eq!(d.stop(), Some(0));
    assert!(recv(&sock).contains("STOPPING=1"));
}

#[test]
fn a_missing_reply_file_is_an_error_of_check_and_of_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("helpdesk-milter.toml");
    std::fs::write(&config, "[state]\ndirectory = \"state\"\n").unwrap();
    for cmd in ["check", "run"] {
        let out = Command::new(BIN).args([cmd, "--config"]).arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("reply.toml:1:1: "), "{cmd}: {text}");
    }
}

#[test]
fn check_reply_reports_every_problem_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reply.toml");
    std::fs::write(
        &file,
        "default_language = \"en\"\nhot_topics = [\"nope\"]\n[topics.a]\ntitle = \"A\"\nlink = \"http://x.org\"\n[languages.en]\nsubject = \"S\"\nbody = \"\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "--reply"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let at = |n: usize| format!("{}:{n}:", file.display());
    assert!(lines[0].starts_with(&at(2)), "{text}");
    assert!(lines[1].starts_with(&at(5)), "{text}");
    assert!(lines[2].starts_with(&at(8)), "{text}");
    let ok = Command::new(BIN)
        .args(["check", "--reply", concat!(env!("CARGO_MANIFEST_DIR"), "/etc/reply.toml")])
        .output();
    assert!(ok.unwrap().status.success());
}

#[test]
fn classify_needs_no_state_directory_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("helpdesk-milter.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reply.toml"),
        dir.path().join("reply.toml"),
    )
    .unwrap();
    std::fs::write(&config, "[state]\ndirectory = \"does/not/exist\"\n").unwrap();
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, "From: a@example.org\nTo: support@tails.net\nSubject: realtek wifi\n\nhello\n")
        .unwrap();
    for _ in 0..2 {
        let out = Command::new(BIN).args(["classify", "--config"]).arg(&config).arg(&msg).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        // Decided as if nobody had been answered, both times: classify records nothing.
        assert!(text.contains("X-HelpDesk-Autoreply: queued"), "{text}");
        assert!(text.contains("X-HelpDesk-Topic: wifi-realtek"), "{text}");
    }
    assert!(!dir.path().join("does").exists());
}
