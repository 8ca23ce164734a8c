//! End to end through a real Postfix: a WhisperBack report gets a Message-ID derived from its
//! ID; a trusted Help Desk member's reply to it, even with its Subject encrypted, files it under
//! a topic; a repeated tag and an untrusted one change nothing; `stats` then counts the report as
//! one person under the topic and cites its ID in the Markdown paragraph (issue 13, points 4, 5).
//!
//! The rig's Postfix has no SASL, so trust here is the other signal of `team_trust`: a team
//! sender with a DKIM pass recorded by a trusted verifier (the tests/milter_protocol.rs tests
//! send the SASL login macro instead). Needs root and Postfix.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/mail_host.rs"]
mod mail_host;
#[path = "support/postfix.rs"]
mod postfix;

use daemon::Daemon;
use helpdesk_milter::store::sqlite;
use mail_host::rig_and_daemon;
use postfix::SinkMessage;
use std::time::{Duration, Instant};

const HELPDESK: &str = "support@tails.net";
const ID: &str = "4ffd523ac6b83288ba219a6a55f4971b";
const REPORT: &[u8] = include_bytes!("data/whisperback-sample.eml");

/// A member's reply to the report, its Subject encrypted as Thunderbird's protected headers
/// send it: the outer Subject is "...", the body PGP/MIME; only the References name the report.
fn encrypted_reply(from: &str, verified: bool) -> Vec<u8> {
    let ar = if verified {
        "Authentication-Results: mx.tails.net; dkim=pass header.d=tails.net header.s=2026\r\n"
    } else {
        ""
    };
    format!(
        "{ar}From: Member <{from}>\r\nTo: support+wifi-realtek@tails.net\r\nSubject: ...\r\n\
         Message-ID: <tag.{}.{}@tails.net>\r\nIn-Reply-To: <whisperback.{ID}@tails.net>\r\n\
         References: <whisperback.{ID}@tails.net>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n\
         --b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\n\
         Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nhQIM\r\n\
         -----END PGP MESSAGE-----\r\n--b--\r\n",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
    .into_bytes()
}

fn wait_until(what: &str, daemon: &Daemon, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < Duration::from_secs(30), "{what}\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tags(daemon: &Daemon) -> Vec<Vec<String>> {
    sqlite::dump(&daemon.state_dir(), "report_topics").unwrap_or_default()
}

#[test]
fn a_trusted_members_encrypted_reply_files_the_report_under_its_topic_once() {
    let (rig, daemon) =
        rig_and_daemon("[helpdesk]\nteam_trust = [\"dkim\"]\ntrusted_authserv_ids = [\"mx.tails.net\"]\n");
    // The report: delivered with the Message-ID that replies will name.
    rig.send(Some("devnull@tails.boum.org"), &[HELPDESK], REPORT).unwrap();
    let report = rig.wait_for_messages(1, Duration::from_secs(30));
    assert_eq!(report[0].header("Message-ID"), vec![format!("<whisperback.{ID}@tails.net>")]);
    assert_eq!(report[0].header("X-HelpDesk-Report-Id"), vec![format!("wb:{ID}")]);
    wait_until("the report recorded", &daemon, || {
        sqlite::dump(&daemon.state_dir(), "reports").unwrap_or_default().iter().any(|r| r[0] == ID)
    });

    // Untrusted (no DKIM pass): nothing changes, and the log says so without the address.
    rig.send(
        Some("eve@tails.net"),
        &["support+wifi-realtek@tails.net"],
        &encrypted_reply("eve@tails.net", false),
    )
    .unwrap();
    daemon.wait_log("tag ignored: the sender is not a trusted member", 1);
    assert!(!daemon.log().contains("eve@"), "{}", daemon.log());

    // A trusted member, Subject encrypted: tagged by the References and the subaddress.
    for n in 1..=2 {
        rig.send(
            Some("member@tails.net"),
            &["support+wifi-realtek@tails.net"],
            &encrypted_reply("member@tails.net", true),
        )
        .unwrap();
        daemon.wait_log("reports tagged", n);
    }
    wait_until("the tag recorded", &daemon, || !tags(&daemon).is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    let t = tags(&daemon);
    assert_eq!(t.len(), 1, "a repeated tag counts once: {t:?}");
    assert_eq!((t[0][0].as_str(), t[0][1].as_str()), (ID, "wifi-realtek"));

    // The tag messages are delivered, marked, and never answered.
    let all: Vec<SinkMessage> = rig.wait_for_messages(4, Duration::from_secs(30));
    let tagged: Vec<&SinkMessage> =
        all.iter().filter(|m| !m.header("X-HelpDesk-Tagged").is_empty()).collect();
    assert_eq!(tagged.len(), 2);
    assert_eq!(tagged[0].header("X-HelpDesk-Tagged"), vec![format!("wb:{ID} wifi-realtek")]);
    assert_eq!(tagged[0].header("X-HelpDesk-Autoreply"), vec!["suppressed (tag)"]);
    assert!(all.iter().all(|m| m.header("Auto-Submitted").is_empty()), "no auto-reply");

    // The report is one person under the topic, and the paragraph for the topic's GitLab issue
    // cites its ID; neither the untrusted tag nor the repeated one added anything.
    let mut people = daemon::stats_people(&daemon.stats(&[]));
    wait_until("the report counted under its topic", &daemon, || {
        people = daemon::stats_people(&daemon.stats(&[]));
        people.topics.contains_key("wifi-realtek")
    });
    assert_eq!(people.topics.get("wifi-realtek"), Some(&1), "{people:?}");
    assert_eq!(people.tagged_reports.get("wifi-realtek"), Some(&1), "{people:?}");
    let paragraph = daemon.stats_text(&["--topic", "wifi-realtek", "--format", "markdown"]);
    daemon::assert_paragraph(&paragraph, 1, &[ID]);
}
