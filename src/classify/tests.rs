//! The classifier's tests: signals read from real header shapes, and the class they give.

use super::*;
use crate::config::Config;
use crate::message::MessageData;
use std::path::Path;

fn cfg() -> HelpdeskConfig {
    Config::defaults(Path::new("/x.toml")).helpdesk
}

fn signals_with(cfg: &HelpdeskConfig, sender: &str, raw: &str) -> Signals {
    let data = MessageData::from_rfc5322(raw.as_bytes(), &cfg.header_prefix, 256 * 1024, 64 * 1024);
    let kept = data.to_rfc5322();
    let msg = parse(&kept);
    Signals::extract(cfg, &Envelope::new(sender, ["support@tails.net"]), msg.as_ref(), &data)
}

fn class_of(sender: &str, raw: &str) -> Class {
    let c = cfg();
    classify(&c, &signals_with(&c, sender, raw))
}

const PLAIN: &str = "From: Alice <alice@example.org>\nTo: support@tails.net\nSubject: Tails does not start\nMessage-ID: <1@example.org>\n\nHello, my laptop...\n";

#[test]
fn whisperback_sample_is_whisperback_with_its_id() {
    let raw = include_str!("../../tests/data/whisperback-sample.eml");
    let c = cfg();
    let s = signals_with(&c, "devnull@tails.boum.org", raw);
    assert_eq!(classify(&c, &s), Class::Whisperback);
    assert_eq!(s.report_id.as_deref(), Some("4ffd523ac6b83288ba219a6a55f4971b"));
    assert!(s.encrypted);
}

#[test]
fn whisperback_needs_both_sender_and_subject() {
    let subj = "From: devnull@tails.boum.org\nSubject: Bug report: 72e11dad9c9faf4d5a990800a3349dd\n\nx";
    assert_eq!(class_of("alice@example.org", subj), Class::Support);
    assert_eq!(
        class_of("devnull@tails.boum.org", "From: devnull@tails.boum.org\nSubject: hello\n\nx"),
        Class::Support
    );
    assert_eq!(class_of("DevNull@Tails.Boum.Org", subj), Class::Whisperback);
}

#[test]
fn report_id_tolerates_prefixes_and_rejects_junk() {
    assert_eq!(whisperback_report_id("[SPAM] Bug report: 4ffd5"), Some("4ffd5".into()));
    assert_eq!(whisperback_report_id("Bug report: ABCDEF "), Some("abcdef".into()));
    assert_eq!(whisperback_report_id("Bug report: 0"), Some("0".into()));
    assert_eq!(whisperback_report_id("Bug report: "), None);
    assert_eq!(whisperback_report_id("Bug report: xyz"), None);
    assert_eq!(whisperback_report_id("Bug report: 4ffd5 please"), None);
    assert_eq!(whisperback_report_id(&format!("Bug report: {}", "a".repeat(33))), None);
    assert_eq!(whisperback_report_id(&format!("Bug report: {}", "a".repeat(32))), Some("a".repeat(32)));
}

#[test]
fn spam_verdict_comes_before_everything_but_whisperback() {
    let raw = "From: alice@example.org\nX-Spam-Flag: yes\nPrecedence: bulk\n\nbuy";
    assert_eq!(class_of("alice@example.org", raw), Class::Spam);
    assert_eq!(class_of("alice@example.org", "X-Spam-Flag: NO\n\nx"), Class::Support);
    // A verdict folded onto a continuation line still counts.
    assert_eq!(class_of("alice@example.org", "X-Spam-Flag:\n YES\n\nx"), Class::Spam);
}

#[test]
fn automated_signs() {
    let cases = [
        ("", PLAIN, AutomatedSign::NullSender),
        (
            "a@example.org",
            "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n",
            AutomatedSign::Report,
        ),
        ("a@example.org", "Auto-Submitted: auto-replied\n\nx", AutomatedSign::AutoSubmitted),
        (
            "a@example.org",
            "Auto-Submitted: no\nAuto-Submitted: auto-generated\n\nx",
            AutomatedSign::AutoSubmitted,
        ),
        ("a@example.org", "Auto-Submitted: no (but really yes)x\n\nx", AutomatedSign::AutoSubmitted),
        ("a@example.org", "Auto-Submitted: notify\n\nx", AutomatedSign::AutoSubmitted),
        ("a@example.org", "Auto-Submitted:\n auto-notified\n\nx", AutomatedSign::AutoSubmitted),
        ("a@example.org", "Auto-Submitted: \n\nx", AutomatedSign::AutoSubmitted),
        ("a@example.org", "Precedence: BULK\n\nx", AutomatedSign::Precedence),
        ("a@example.org", "Precedence: first-class\nPrecedence: list\n\nx", AutomatedSign::Precedence),
        ("a@example.org", "List-Id: <tails-dev.boum.org>\n\nx", AutomatedSign::ListHeaders),
        ("a@example.org", "list-unsubscribe: <mailto:x@y>\n\nx", AutomatedSign::ListHeaders),
        ("a@example.org", "X-Autoreply: yes\n\nx", AutomatedSign::AutoresponderHeaders),
        ("a@example.org", "X-FC-MachineGenerated: true\n\nx", AutomatedSign::AutoresponderHeaders),
        ("MAILER-DAEMON@mx.example", "Subject: x\n\nx", AutomatedSign::RoleSender),
        ("a@example.org", "From: No-Reply@github.example\n\nx", AutomatedSign::RoleSender),
    ];
    let c = cfg();
    for (sender, raw, sign) in cases {
        let s = signals_with(&c, sender, raw);
        assert_eq!(s.automated_sign(), Some(sign), "{raw:?}");
        assert_eq!(classify(&c, &s), Class::Automated, "{raw:?}");
    }
    for raw in ["Auto-Submitted: no\n\nx", "Auto-Submitted: No ; comment\n\nx", "Precedence: normal\n\nx"] {
        assert_eq!(signals_with(&c, "a@example.org", raw).automated_sign(), None, "{raw:?}");
    }
}

#[test]
fn auto_submitted_keyword_parsing() {
    assert_eq!(auto_submitted_keyword("no"), "no");
    assert_eq!(auto_submitted_keyword(" (c) No (c)"), "no");
    assert_eq!(auto_submitted_keyword("auto-replied; owner-email=x"), "auto-replied");
    assert_eq!(auto_submitted_keyword("no-thanks"), "no-thanks");
    assert_eq!(auto_submitted_keyword(""), "");
    assert_eq!(auto_submitted_keyword("no (c)x"), "");
    assert_eq!(auto_submitted_keyword("no x"), "");
}

fn signals_sasl(cfg: &HelpdeskConfig, sender: &str, login: Option<&str>, raw: &str) -> Signals {
    let data = MessageData::from_rfc5322(raw.as_bytes(), &cfg.header_prefix, 256 * 1024, 64 * 1024);
    let kept = data.to_rfc5322();
    let msg = parse(&kept);
    let env = Envelope::new(sender, ["support@tails.net"]).with_sasl_login(login);
    Signals::extract(cfg, &env, msg.as_ref(), &data)
}

#[test]
fn a_team_address_alone_is_not_team() {
    // Issue 12, point 5: anyone can write From: someone@tails.net.
    assert_eq!(class_of("bob@tails.net", "From: bob@tails.net\nSubject: [FT] hi\n\nx"), Class::Support);
    assert_eq!(class_of("bob@gmail.example", "From: Bob <Bob@Tails.NET>\n\nx"), Class::Support);
    let c = cfg();
    let forged =
        "Authentication-Results: evil.example; dkim=pass header.d=tails.net\nFrom: bob@tails.net\n\nx";
    assert!(!signals_with(&c, "bob@tails.net", forged).trusted_team(&c));
}

#[test]
fn a_login_on_this_host_makes_team_mail() {
    let c = cfg();
    let raw = "From: bob@tails.net\nSubject: [FT] hi\n\nx";
    let s = signals_sasl(&c, "bob@tails.net", Some("bob"), raw);
    assert!(s.sasl_authenticated && s.trusted_team(&c));
    assert_eq!(classify(&c, &s), Class::Team);
    // The envelope sender alone may be the team address.
    let s = signals_sasl(&c, "bob@tails.net", Some("bob"), "From: Bob <bob@example.org>\n\nx");
    assert_eq!(classify(&c, &s), Class::Team);
    // A login does not make anybody a team member.
    let s = signals_sasl(&c, "eve@example.org", Some("eve"), "From: eve@example.org\n\nx");
    assert_eq!(classify(&c, &s), Class::Support);
    assert!(!signals_sasl(&c, "bob@tails.net", Some("  "), raw).sasl_authenticated);
    // Without "sasl" in team_trust, a login proves nothing.
    let mut dkim_only = cfg();
    dkim_only.team_trust = crate::config::TeamTrust { sasl: false, dkim: true };
    dkim_only.trusted_authserv_ids = vec!["mx.tails.net".into()];
    assert_eq!(
        classify(&dkim_only, &signals_sasl(&dkim_only, "bob@tails.net", Some("bob"), raw)),
        Class::Support
    );
}

#[test]
fn a_trusted_dkim_pass_makes_team_mail() {
    let mut c = cfg();
    c.team_trust = crate::config::TeamTrust { sasl: false, dkim: true };
    c.trusted_authserv_ids = vec!["mx.tails.net".into()];
    let verified =
        "Authentication-Results: mx.tails.net; dkim=pass header.d=tails.net\nFrom: bob@tails.net\n\nx";
    let foreign =
        "Authentication-Results: evil.example; dkim=pass header.d=tails.net\nFrom: bob@tails.net\n\nx";
    let other_domain =
        "Authentication-Results: mx.tails.net; dkim=pass header.d=evil.example\nFrom: bob@tails.net\n\nx";
    assert_eq!(classify(&c, &signals_with(&c, "bob@tails.net", verified)), Class::Team);
    assert_eq!(classify(&c, &signals_with(&c, "bob@tails.net", foreign)), Class::Support);
    assert_eq!(classify(&c, &signals_with(&c, "bob@tails.net", other_domain)), Class::Support);
    assert_eq!(
        class_of("bob@tails.net.evil.example", "From: bob@tails.net.evil.example\n\nx"),
        Class::Support
    );
}

#[test]
fn followup_and_support() {
    assert_eq!(class_of("alice@example.org", PLAIN), Class::Support);
    let reply = "From: alice@example.org\nSubject: Re: x\nIn-Reply-To: <1@tails.net>\n\nthanks";
    assert_eq!(class_of("alice@example.org", reply), Class::Followup);
    let refs = "From: alice@example.org\nreferences:\n <1@tails.net>\n\nthanks";
    assert_eq!(class_of("alice@example.org", refs), Class::Followup);
    assert_eq!(class_of("alice@example.org", "In-Reply-To: \n\nthanks"), Class::Support);
}

#[test]
fn encryption_detection() {
    let c = cfg();
    let pgp_mime =
        "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\n\n--b\n";
    assert!(signals_with(&c, "a@x.org", pgp_mime).encrypted);
    let inline =
        "Content-Type: text/plain\n\n-----BEGIN PGP MESSAGE-----\nhQIMA\n-----END PGP MESSAGE-----\n";
    assert!(signals_with(&c, "a@x.org", inline).encrypted);
    let qp = "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n=2D----BEGIN PGP MESSAGE-----\n";
    assert!(signals_with(&c, "a@x.org", qp).encrypted);
    // An inline PGP message in any text part, not only the first.
    let later = "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhi\n--b\nContent-Type: text/plain\n\n-----BEGIN PGP MESSAGE-----\n--b--\n";
    assert!(signals_with(&c, "a@x.org", later).encrypted);
    assert!(!signals_with(&c, "a@x.org", PLAIN).encrypted);
}

/// A PGP/MIME message as a list or a disclaimer gateway forwards it: wrapped in
/// multipart/mixed, with a plain-text footer.
pub(crate) const WRAPPED_PGP: &str = "From: alice@example.org\nSubject: Tor Browser does not start\nContent-Type: multipart/mixed; boundary=outer\n\n--outer\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=inner\n\n--inner\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--inner\nContent-Type: application/octet-stream\n\n-----BEGIN PGP MESSAGE-----\nhQIMA tor browser persistent storage\n-----END PGP MESSAGE-----\n--inner--\n--outer\nContent-Type: text/plain\n\nThis message was scanned. Tor Browser, persistent storage, upgrade.\n--outer--\n";

#[test]
fn encryption_at_any_depth() {
    // Issue 12, point 1.
    let c = cfg();
    assert!(signals_with(&c, "alice@example.org", WRAPPED_PGP).encrypted);
    let smime = |t: &str| {
        format!(
            "Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: application/{t}\nContent-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\n--o\nContent-Type: text/plain\n\nfooter\n--o--\n"
        )
    };
    for t in [
        "pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
        "x-pkcs7-mime; smime-type=\"Enveloped-Data\"",
        "pkcs7-mime; smime-type=authEnveloped-data",
    ] {
        assert!(signals_with(&c, "a@x.org", &smime(t)).encrypted, "{t}");
    }
    let top =
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\n\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\n";
    assert!(signals_with(&c, "a@x.org", top).encrypted);
    // Signed is not encrypted.
    assert!(!signals_with(&c, "a@x.org", &smime("pkcs7-mime; smime-type=signed-data")).encrypted);
    assert!(!signals_with(&c, "a@x.org", &smime("pkcs7-signature")).encrypted);
    // Only what the milter keeps counts: a part past the body limit is not seen.
    let data = MessageData::from_rfc5322(WRAPPED_PGP.as_bytes(), &c.header_prefix, 256 * 1024, 20);
    let kept = data.to_rfc5322();
    let s =
        Signals::extract(&c, &Envelope::new("a@x.org", ["support@tails.net"]), parse(&kept).as_ref(), &data);
    assert!(!s.encrypted && s.truncated);
}

#[test]
fn delivery_failures_without_a_report() {
    // Issue 12, point 3: old gateways and antivirus appliances.
    let c = cfg();
    let status = "From: gateway@example.org\nSubject: Your message\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nnot delivered\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.1\n--b--\n";
    let headers = "From: gateway@example.org\nSubject: x\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nsorry\n--b\nContent-Type: text/rfc822-headers\n\nFrom: a@b\n--b--\n";
    for raw in [status, headers] {
        let s = signals_with(&c, "gateway@example.org", raw);
        assert!(s.delivery_failure, "{raw}");
        assert_eq!(s.automated_sign(), Some(AutomatedSign::DeliveryFailure));
    }
    for subject in [
        "Returned Mail - Error During Delivery",
        "Delivery  failure notification",
        "DELIVERY FAILURE: User x (x@example.org) not listed in Domino Directory",
        "Undeliverable: Tails does not boot",
        "Mail delivery failed: returning message to sender",
        "=?utf-8?B?RGVsaXZlcnkgZmFpbHVyZSBub3RpZmljYXRpb24=?=",
        "RE: Your message to GPC-talk awaits moderator approval : non remis",
    ] {
        let s = signals_with(&c, "gw@example.org", &format!("From: gw@example.org\nSubject: {subject}\n\nx"));
        assert!(s.delivery_failure, "{subject}");
        assert_eq!(classify(&c, &s), Class::Automated, "{subject}");
    }
    // A person who forwards a bounce, or writes about delivery, is not a bounce.
    for subject in [
        "Fwd: Undelivered Mail Returned to Sender",
        "Mail delivery fails with Thunderbird",
        "failure notice?",
    ] {
        let s = signals_with(
            &c,
            "alice@example.org",
            &format!("From: alice@example.org\nSubject: {subject}\n\nx"),
        );
        assert!(!s.delivery_failure, "{subject}");
    }
}

#[test]
fn abuse_reports_out_of_office_and_challenges() {
    let c = cfg();
    let arf = "From: abuse@isp.example\nSubject: complaint\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nabuse\n--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n--b--\n";
    let cases = [
        ("abuse-desk@isp.example", arf, AutomatedSign::AbuseReport),
        (
            "abuse-desk@isp.example",
            "X-ARF: YES\nSubject: abuse report about 192.0.2.1\n\nx",
            AutomatedSign::AbuseReport,
        ),
        (
            "reports@spamcop.example",
            "Subject: [SpamCop (https://example/) id:123]x\n\nx",
            AutomatedSign::AbuseReport,
        ),
        (
            "jane@corp.example",
            "X-Apple-Action: VACATION\nSubject: Re: hi\n\naway",
            AutomatedSign::OutOfOffice,
        ),
        (
            "jane@corp.example",
            "Subject: AUTO: Jane Doe is out of the office (returning 02/01/2026)\n\naway",
            AutomatedSign::OutOfOffice,
        ),
        (
            "jane@corp.example",
            "Subject: Jane Doe/Dublin/IE/Corp is out of the office.\n\nI will be out of the office starting 02/08/2002",
            AutomatedSign::OutOfOffice,
        ),
        (
            "jane@corp.example",
            "Subject: Automatic reply: Tails does not boot\n\naway",
            AutomatedSign::OutOfOffice,
        ),
        ("jane@corp.example", "Subject: Réponse automatique : question\n\naway", AutomatedSign::OutOfOffice),
        ("jane@corp.example", "Subject: Please confirm your message\n\nclick", AutomatedSign::Challenge),
        (
            "support@bluebottle.example",
            "From: jane@bluebottle.example\nSubject: RE: question\nX-Bluebottle-Request: <1234>\n\nclick",
            AutomatedSign::Challenge,
        ),
        (
            "staff@hotmail.com",
            "From: staff@hotmail.com\nSubject: complaint about message from 192.0.2.1\n\nx",
            AutomatedSign::AbuseReport,
        ),
        (
            "reports@isp.example",
            "From: <STAFF@hotmail.com>\nSubject:  Complaint about message from 192.0.2.1\n\nx",
            AutomatedSign::AbuseReport,
        ),
    ];
    for (sender, raw, sign) in cases {
        let s = signals_with(&c, sender, raw);
        assert_eq!(s.automated_sign(), Some(sign), "{raw}");
    }
    // People who mention these in their words stay people.
    for raw in [
        "Subject: Tails at the office\n\nI will be out of office next week, please answer soon.",
        "Subject: Auto: my car has no Wi-Fi\n\nx",
        "Subject: How do I report abuse?\n\nx",
        "Subject: Re: Automatic reply: x\n\nx",
        "Subject: Re: [ILUG] Jane Doe/Dublin/IE/Corp is out of the office.\n\nx",
        "Subject: Fwd: Jane Doe is out of the office.\n\nx",
        "Subject: Jane is out of the office today\n\nx",
        "Subject:  is out of the office.\n\nx",
        // Hotmail's report Subject from anyone else, or another Subject from its sender.
        "From: alice@example.org\nSubject: complaint about message from my bank\n\nx",
        "From: staff@hotmail.com\nSubject: Re: complaint about message from 192.0.2.1\n\nx",
    ] {
        let s = signals_with(&c, "alice@example.org", raw);
        assert_eq!(s.automated_sign(), None, "{raw}");
    }
}

#[test]
fn role_senders_behind_batv_and_srs() {
    let c = cfg();
    for sender in [
        "prvs=1234abcd=noreply@example.org",
        "SRS0=HHH=TT=example.org=MAILER-DAEMON@forwarder.example",
        "SRS1=XXX=fwd1.example==HHH=TT=example.org=postmaster@fwd2.example",
    ] {
        let s = signals_with(&c, sender, "From: Somebody <somebody@example.org>\n\nx");
        assert!(s.role_sender, "{sender}");
    }
    let s = signals_with(&c, "alice@example.org", "From: prvs=1234abcd=no-reply@example.org\n\nx");
    assert!(s.role_sender);
    assert!(!signals_with(&c, "prvs=1234abcd=alice@example.org", PLAIN).role_sender);
}

#[test]
fn undeliverable_envelope_senders() {
    // Issue 12, point 2.
    let c = cfg();
    for sender in ["root", "root@localhost", "alice@", "alice@[192.0.2.1]", "a b@example.org"] {
        assert!(signals_with(&c, sender, PLAIN).undeliverable_sender, "{sender}");
    }
    assert!(!signals_with(&c, "alice@example.org", PLAIN).undeliverable_sender);
    assert!(!signals_with(&c, "", PLAIN).undeliverable_sender, "the null sender has its own rule");
}

#[test]
fn encoded_subject_is_decoded_for_tags_and_ids() {
    let c = cfg();
    let s = signals_with(&c, "a@x.org", "Subject: =?utf-8?q?Re=3A_=5Bft=5D_caf=C3=A9?=\n\nx");
    assert_eq!(s.subject.as_deref(), Some("Re: [ft] café"));
    assert_eq!(s.tags, vec!["FT"]);
    let s = signals_with(&c, "a@x.org", "Subject: Re:\n [FT]\n\tthing\n\nx");
    assert_eq!(s.tags, vec!["FT"]);
    assert!(signals_with(&c, "a@x.org", "Subject: FT stuff\n\nx").tags.is_empty());
}

#[test]
fn missing_headers_and_empty_input_are_support() {
    assert_eq!(class_of("alice@example.org", ""), Class::Support);
    assert_eq!(class_of("alice@example.org", "\n\nonly body"), Class::Support);
    assert_eq!(class_of("alice@example.org", "garbage without colon\n"), Class::Support);
}
