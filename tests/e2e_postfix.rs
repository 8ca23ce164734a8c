//! End to end: a real Postfix on loopback with the real daemon as its milter, relaying to an
//! smtp-sink. Needs root and Postfix (`.ci/run` installs it).

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/postfix.rs"]
mod postfix;

use daemon::Daemon;
use postfix::{PostfixRig, RigOptions, SinkMessage};
use std::collections::HashMap;
use std::time::Duration;

const HELPDESK: &str = "support@tails.net";
const PREFIX: &str = "x-helpdesk-";

struct Case {
    name: &'static str,
    sender: &'static str,
    rcpts: &'static [&'static str],
    message: Vec<u8>,
    /// Expected triage headers on arrival, in order.
    expected: &'static [&'static str],
}

fn crlf(s: &str) -> Vec<u8> {
    s.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

fn with_case(name: &str, message: &[u8]) -> Vec<u8> {
    let mut m = format!("X-Test-Case: {name}\r\n").into_bytes();
    m.extend_from_slice(message);
    m
}

fn cases() -> Vec<Case> {
    let wb = include_bytes!("data/whisperback-sample.eml");
    vec![
        Case {
            name: "whisperback",
            sender: "devnull@tails.boum.org",
            rcpts: &[HELPDESK],
            message: with_case("whisperback", &crlf(std::str::from_utf8(wb).unwrap())),
            expected: &[
                "X-HelpDesk-Class: whisperback",
                "X-HelpDesk-Priority: normal",
                "X-HelpDesk-Report-Id: wb:4ffd523ac6b83288ba219a6a55f4971b",
                "X-HelpDesk-Encrypted: yes",
                "X-HelpDesk-Autoreply: suppressed (class)",
            ],
        },
        Case {
            name: "support",
            sender: "alice@example.org",
            rcpts: &[HELPDESK],
            message: with_case(
                "support",
                &crlf(
                    "From: Alice <alice@example.org>\nTo: support@tails.net\nSubject: =?utf-8?q?Tails_d=C3=A9marre_pas?=\nMessage-ID: <s1@example.org>\nDate: Fri, 20 Nov 2026 10:00:00 +0000\n\nMy laptop does not start Tails 7.2.\n",
                ),
            ),
            expected: &[
                "X-HelpDesk-Class: support",
                "X-HelpDesk-Priority: normal",
                "X-HelpDesk-Encrypted: no",
                "X-HelpDesk-Autoreply: queued",
            ],
        },
        Case {
            name: "pgp-mime",
            sender: "carol@example.org",
            rcpts: &[HELPDESK],
            message: with_case(
                "pgp-mime",
                &crlf(
                    "From: carol@example.org\nTo: support@tails.net\nSubject: ...\nMessage-ID: <p1@example.org>\nMIME-Version: 1.0\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b1\"\n\n--b1\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n--b1\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\n\n-----BEGIN PGP MESSAGE-----\n\nhQIMA51tZHKvwa13AQ//R9R1HHFv0jhosC6xM62EAviObIEF25\n-----END PGP MESSAGE-----\n\n--b1--\n",
                ),
            ),
            expected: &[
                "X-HelpDesk-Class: support",
                "X-HelpDesk-Priority: normal",
                "X-HelpDesk-Encrypted: yes",
                "X-HelpDesk-Autoreply: queued",
            ],
        },
        Case {
            name: "followup",
            sender: "alice@example.org",
            rcpts: &[HELPDESK],
            message: with_case(
                "followup",
                &crlf(
                    "From: alice@example.org\nTo: support@tails.net\nSubject: Re: Tails\nIn-Reply-To: <r1@tails.net>\nReferences: <r1@tails.net>\nMessage-ID: <f1@example.org>\n\nThanks, it works now.\n",
                ),
            ),
            expected: &[
                "X-HelpDesk-Class: followup",
                "X-HelpDesk-Priority: normal",
                "X-HelpDesk-Encrypted: no",
                "X-HelpDesk-Autoreply: suppressed (class)",
            ],
        },
        Case {
            name: "team",
            sender: "bob@tails.net",
            rcpts: &[HELPDESK],
            message: with_case(
                "team",
                &crlf(
                    "Authentication-Results: mx.tails.net; dkim=pass header.d=tails.net\nFrom: Bob <bob@tails.net>\nTo: support@tails.net\nSubject: Re: [FT] wb:4ffd5 crash on boot\nMessage-ID: <t1@tails.net>\nIn-Reply-To: <x@tails.net>\n\nWe looked at it.\n",
                ),
            ),
            expected: &[
                "X-HelpDesk-Class: team",
                "X-HelpDesk-Priority: high",
                "X-HelpDesk-Encrypted: no",
                "X-HelpDesk-Tags: FT",
                "X-HelpDesk-Autoreply: suppressed (class)",
            ],
        },
        Case {
            name: "automated",
            sender: "",
            rcpts: &[HELPDESK],
            message: with_case(
                "automated",
                &crlf(
                    "From: MAILER-DAEMON@mx.example.org\nTo: support@tails.net\nSubject: Undelivered Mail Returned to Sender\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\n\n--r\nContent-Type: text/plain\n\nDelivery failed.\n--r--\n",
                ),
            ),
            expected: &[
                "X-HelpDesk-Class: automated",
                "X-HelpDesk-Priority: low",
                "X-HelpDesk-Encrypted: no",
                "X-HelpDesk-Autoreply: suppressed (null-sender)",
            ],
        },
        Case {
            name: "spam",
            sender: "winner@lottery.example",
            rcpts: &[HELPDESK],
            message: with_case(
                "spam",
                &crlf(
                    "From: winner@lottery.example\nTo: support@tails.net\nSubject: You won\nX-Spam-Flag: YES\nMessage-ID: <w@lottery.example>\n\nClaim now.\n",
                ),
            ),
            expected: &[
                "X-HelpDesk-Class: spam",
                "X-HelpDesk-Priority: low",
                "X-HelpDesk-Encrypted: no",
                "X-HelpDesk-Autoreply: suppressed (spam)",
            ],
        },
        Case {
            name: "forged",
            sender: "mallory@example.org",
            rcpts: &[HELPDESK],
            message: with_case(
                "forged",
                &crlf(
                    "From: mallory@example.org\nTo: support@tails.net\nSubject: please\nX-HelpDesk-Class: team\nX-HelpDesk-Priority: high\nx-helpdesk-class:\n team\nX-HELPDESK-TAGS: FT\nMessage-ID: <m1@example.org>\n\nFirst!\n",
                ),
            ),
            expected: &[
                "X-HelpDesk-Class: support",
                "X-HelpDesk-Priority: normal",
                "X-HelpDesk-Encrypted: no",
                "X-HelpDesk-Autoreply: queued",
            ],
        },
        Case {
            name: "not-for-helpdesk",
            sender: "alice@example.org",
            rcpts: &["bob@example.net"],
            message: with_case(
                "not-for-helpdesk",
                &crlf(
                    "From: alice@example.org\nTo: bob@example.net\nSubject: lunch\nX-HelpDesk-Class: team\nMessage-ID: <n1@example.org>\n\nNoon?\n",
                ),
            ),
            // Untouched: the header it came with stays, nothing is added.
            expected: &["X-HelpDesk-Class: team"],
        },
    ]
}

fn triage_headers(m: &SinkMessage) -> Vec<String> {
    m.headers()
        .into_iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with(PREFIX))
        .map(|(n, v)| format!("{n}: {v}"))
        .collect()
}

/// The daemon trusts team mail that a verifier before it (mx.tails.net) found DKIM-signed.
const TEAM_BY_DKIM: &str =
    "[helpdesk]\nteam_trust = [\"sasl\", \"dkim\"]\ntrusted_authserv_ids = [\"mx.tails.net\"]";

fn case_name(m: &SinkMessage) -> String {
    m.header("X-Test-Case").into_iter().next().unwrap_or_default()
}

#[test]
fn every_class_arrives_with_the_documented_headers_and_classify_agrees() {
    // Team mail is trusted on a verifier's DKIM pass here: the rig has no SASL.
    let mut daemon = Daemon::start(TEAM_BY_DKIM);
    let rig = PostfixRig::start(RigOptions {
        milter: Some(daemon.milter_address()),
        default_action: "tempfail".into(),
        ..Default::default()
    });
    let cases = cases();
    for c in &cases {
        let sender = (!c.sender.is_empty()).then_some(c.sender);
        rig.send(sender, c.rcpts, &c.message).unwrap_or_else(|e| panic!("{}: {e}\n{}", c.name, daemon.log()));
    }
    let arrived: HashMap<String, SinkMessage> = rig
        .wait_for_messages(cases.len(), Duration::from_secs(60))
        .into_iter()
        .map(|m| (case_name(&m), m))
        .collect();

    for c in &cases {
        let m = arrived.get(c.name).unwrap_or_else(|| panic!("{} did not arrive", c.name));
        assert_eq!(triage_headers(m), c.expected, "{}", c.name);
        assert_eq!(m.mail_from(), format!("<{}>", c.sender), "{}", c.name);

        // The body arrives unchanged (smtp-sink stores lines with LF ends).
        let sent_body = &c.message[c.message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        let norm = |b: &[u8]| String::from_utf8_lossy(b).replace("\r\n", "\n").trim_end().to_string();
        assert_eq!(norm(m.body()), norm(sent_body), "{}: body changed", c.name);

        // classify, on the message as it was sent, prints the changes the live path made.
        let printed = daemon.classify(&c.message, c.sender, c.rcpts);
        // The triage headers, and the forged ones removed (a report's Message-ID is below).
        let ours = |l: &&String| l.trim_start_matches('-').to_ascii_lowercase().starts_with(PREFIX);
        let added: Vec<&String> = printed.iter().filter(ours).filter(|l| !l.starts_with('-')).collect();
        let removed = printed.iter().filter(ours).filter(|l| l.starts_with('-')).count();
        if c.name == "whisperback" {
            // Its own Message-ID, in place of the one the rig's Postfix gave it (a local client).
            let own = format!("Message-ID: <whisperback.{}@tails.net>", "4ffd523ac6b83288ba219a6a55f4971b");
            assert!(printed.contains(&own), "{printed:?}");
            assert_eq!(m.header("Message-ID"), vec![own.trim_start_matches("Message-ID: ").to_string()]);
        }
        let sent_prefixed = String::from_utf8_lossy(&c.message)
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with(PREFIX))
            .count();
        if c.rcpts.contains(&HELPDESK) {
            assert_eq!(added, triage_headers(m).iter().collect::<Vec<_>>(), "{}: classify disagrees", c.name);
            assert_eq!(removed, sent_prefixed, "{}: classify removes a different number", c.name);
        } else {
            assert!(printed.is_empty(), "{}: {printed:?}", c.name);
        }
    }

    // One info line per triaged message, and never an address or a Subject in it.
    let log = daemon.log();
    assert_eq!(log.matches("triaged").count(), cases.len() - 1, "{log}");
    for needle in ["alice@", "mallory@", "winner@", "devnull@", "Tails démarre", "You won", "lunch"] {
        assert!(!log.contains(needle), "log leaks {needle:?}:\n{log}");
    }
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log());
}

#[test]
fn unix_socket_with_postfix_group_and_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    // Postfix's smtpd (user postfix) must traverse the directory and connect to the socket.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sock = dir.path().join("milter.sock");
    let mut daemon = Daemon::start_unix(&sock, "");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o660);
    let rig = PostfixRig::start(RigOptions {
        milter: Some(daemon.milter_address()),
        default_action: "tempfail".into(),
        ..Default::default()
    });
    rig.send(
        Some("alice@example.org"),
        &[HELPDESK],
        &crlf("From: alice@example.org\nSubject: hi\n\nhello\n"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let m = rig.wait_for_messages(1, Duration::from_secs(30));
    assert_eq!(m[0].header("X-HelpDesk-Class"), vec!["support"]);
    assert_eq!(daemon.stop(), Some(0));
    assert!(!sock.exists(), "the socket is removed at exit");
}

#[test]
fn sighup_reloads_and_an_invalid_file_keeps_the_running_configuration() {
    let mut daemon = Daemon::start("[helpdesk]\nsubject_tags = [\"FT\"]");
    let rig = PostfixRig::start(RigOptions {
        milter: Some(daemon.milter_address()),
        default_action: "tempfail".into(),
        ..Default::default()
    });
    let send = |n: usize| {
        let msg =
            crlf(&format!("From: alice@example.org\nSubject: [UX] [FT] case {n}\nX-Test-Case: {n}\n\nx\n"));
        rig.send(Some("alice@example.org"), &[HELPDESK], &msg).unwrap();
        let all = rig.wait_for_messages(n, Duration::from_secs(30));
        let m = all.into_iter().find(|m| case_name(m) == n.to_string()).unwrap();
        m.header("X-HelpDesk-Tags")
    };
    assert_eq!(send(1), vec!["FT"]);

    // A valid change is in effect after SIGHUP.
    let text = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        text.replace("subject_tags = [\"FT\"]", "subject_tags = [\"UX\", \"FT\"]"),
    )
    .unwrap();
    daemon.signal("HUP");
    let t0 = std::time::Instant::now();
    while !daemon.log().contains("configuration reloaded") {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(send(2), vec!["UX, FT"]);

    // An invalid one is refused with its position, and the running configuration stays.
    std::fs::write(&daemon.config, "[milter]\nlisten = 42\n").unwrap();
    daemon.signal("HUP");
    let t0 = std::time::Instant::now();
    while !daemon.log().contains("configuration not reloaded") {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(daemon.log().contains("helpdesk-milter.toml:2:10:"), "{}", daemon.log());
    assert_eq!(send(3), vec!["UX, FT"]);
    assert_eq!(daemon.stop(), Some(0));
}
