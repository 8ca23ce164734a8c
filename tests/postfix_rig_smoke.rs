//! Smoke test of the Postfix test rig itself (tests/support/postfix.rs): mail goes
//! through a real Postfix to the sink unchanged, and a dead milter is a visible 451.
//! Needs root and Postfix (see the module docs).

#[path = "support/postfix.rs"]
mod postfix;

use std::time::{Duration, Instant};

use postfix::{PostfixRig, RigOptions, free_port};

const BODY: &[u8] = b"Hello,\r\n\r\nthe printer on floor 2 is on fire.\r\n.leading dot survives\r\n";

fn message(from: &str, subject: &str) -> Vec<u8> {
    let mut m = format!(
        "From: {from}\r\nTo: helpdesk@example.net\r\nSubject: {subject}\r\n\
         X-Folded: first\r\n  second\r\nMessage-ID: <{subject}@example.org>\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(BODY);
    m
}

#[test]
fn relays_to_sink_unchanged() {
    let t0 = Instant::now();
    let rig = PostfixRig::start(RigOptions::default());
    eprintln!("rig up in {:?} at {}", t0.elapsed(), rig.dir().display());

    let bounce = message("MAILER-DAEMON@example.org", "bounce");
    rig.send(None, &["helpdesk@example.net"], &bounce).expect("send null-sender message");
    let normal = message("alice@example.org", "normal");
    rig.send(Some("alice@example.org"), &["helpdesk@example.net", "bob@example.com"], &normal)
        .expect("send normal message");

    let msgs = rig.wait_for_messages(2, Duration::from_secs(30));
    assert_eq!(msgs.len(), 2, "{msgs:#?}");
    let find = |subject: &str| {
        msgs.iter()
            .find(|m| m.header("subject") == [subject])
            .unwrap_or_else(|| panic!("no message with Subject {subject}: {msgs:#?}"))
    };

    let b = find("bounce");
    assert_eq!(b.mail_from(), "<>");
    assert_eq!(b.rcpts(), ["<helpdesk@example.net>"]);
    let n = find("normal");
    assert_eq!(n.mail_from(), "<alice@example.org>");
    // Postfix's queue manager sorts the recipients.
    let mut rcpts = n.rcpts();
    rcpts.sort();
    assert_eq!(rcpts, ["<bob@example.com>", "<helpdesk@example.net>"]);

    for m in [b, n] {
        // smtp-sink stores LF line ends.
        assert_eq!(m.body(), lf(BODY).as_slice(), "{m:#?}");
        assert_eq!(m.header("x-folded"), ["first  second"]);
        assert_eq!(m.header("To"), ["helpdesk@example.net"]);
        // Postfix added its Received; smtp-sink's own lines are not part of message().
        let received = m.header("Received");
        assert_eq!(received.len(), 1, "{received:?}");
        assert!(received[0].contains("by rig.localdomain (Postfix)"), "{received:?}");
        assert!(!m.headers().iter().any(|(k, _)| k.starts_with("X-Client")));
    }
    rig.stop();
}

#[test]
fn dead_milter_tempfails() {
    let opts = RigOptions::with_milter(format!("inet:127.0.0.1:{}", free_port()));
    assert_eq!(opts.default_action, "tempfail");
    let rig = PostfixRig::start(opts);
    let err = rig
        .send(
            Some("alice@example.org"),
            &["helpdesk@example.net"],
            &message("alice@example.org", "milter-down"),
        )
        .expect_err("a dead milter with tempfail must refuse mail");
    assert!(err.contains("451"), "{err}");

    // The reinject smtpd has no milter, so it still accepts.
    rig.send_to(
        rig.reinject_port(),
        None,
        &["helpdesk@example.net"],
        &message("MAILER-DAEMON@example.org", "reinjected"),
    )
    .expect("reinject port ignores the milter");
    let msgs = rig.wait_for_messages(1, Duration::from_secs(30));
    assert_eq!(msgs[0].header("Subject"), ["reinjected"]);
    assert!(rig.maillog().contains("milter"), "{}", rig.maillog());

    // Without a milter the main port accepts again.
    let t0 = Instant::now();
    rig.set_main_cf("smtpd_milters", "");
    eprintln!("reload took {:?}", t0.elapsed());
    rig.send(
        Some("alice@example.org"),
        &["helpdesk@example.net"],
        &message("alice@example.org", "after-reload"),
    )
    .expect("no milter after reload");
    rig.wait_for_messages(2, Duration::from_secs(30));
}

fn lf(b: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(b).replace("\r\n", "\n").into_bytes()
}
