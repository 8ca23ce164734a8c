//! The example Sieve script, `etc/sieve/helpdesk.sieve`, on a real Dovecot: messages triaged by
//! the daemon's own code (`helpdesk-milter classify`, applied as the milter does) are delivered
//! by `dovecot-lda` with Pigeonhole's sieve plugin into a private mail store, in each layout a
//! Help Desk host may have, and Dovecot then says which folder each one is in.
//!
//! `sieve-test` (tests/sieve_filters.rs) only says which folder the script names; here Dovecot
//! must accept it. A name that the store refuses (`Support/wifi-realtek` on Maildir++, whose
//! separator is `.`) fails the whole script, and Dovecot then keeps the message in the INBOX.
//!
//! Needs Dovecot (dovecot-core, dovecot-sieve); without it the tests fail and say what to
//! install.

#[path = "support/dovecot.rs"]
mod dovecot;
#[path = "support/triage.rs"]
mod triage;

use dovecot::{Layout, Mailbox};
use std::collections::BTreeMap;
use triage::Triage;

const SCRIPT: &str = include_str!("../etc/sieve/helpdesk.sieve");

/// The test messages: file, recipients (default: the Help Desk address), the class the milter
/// gives it, and its folder while topic folders are off.
const MESSAGES: &[(&str, &[&str], Option<&str>, &str)] = &[
    ("whisperback.eml", &[], Some("whisperback"), "WhisperBack"),
    ("support.eml", &[], Some("support"), "Support"),
    // X-HelpDesk-Topic: wifi-realtek
    ("support-topic.eml", &[], Some("support"), "Support"),
    // X-HelpDesk-Topic: nvidia-black-screen, mac
    ("support-two-topics.eml", &[], Some("support"), "Support"),
    // Mentions Realtek, so it has a topic; follow-ups have no topic folders.
    ("followup.eml", &[], Some("followup"), "Follow-ups"),
    ("team.eml", &[], Some("team"), "Team +\\Flagged"),
    ("automated.eml", &[], Some("automated"), "Automated"),
    ("spam.eml", &[], Some("spam"), "Spam"),
    // Claims class team with priority high; the milter replaces that.
    ("forged.eml", &[], Some("support"), "Support"),
    // Not for a Help Desk address: no X-HelpDesk-* headers.
    ("not-for-helpdesk.eml", &["webmaster@tails.net"], None, "INBOX"),
];

/// A hand-written request whose topic the milter never writes (it has the separators of both
/// hierarchies): it must not name a folder.
const ODD_TOPIC: &str = "From: a@example.org\nTo: support@tails.net\nSubject: x\nX-HelpDesk-Class: support\nX-HelpDesk-Topic: a/b.c\n\nbody\n";

/// Delivers every test message, triaged, under its file name as case.
fn deliver_all(mailbox: &Mailbox, triage: &Triage) {
    for (name, rcpts, class, _) in MESSAGES {
        mailbox.deliver(name, &triage.through_milter(name, rcpts, *class));
    }
}

fn expected_without_topic_folders() -> BTreeMap<String, String> {
    MESSAGES.iter().map(|(name, _, _, folder)| (name.to_string(), folder.to_string())).collect()
}

/// Delivers the topic requests again, with `round` in their case names, and returns the cases
/// these deliveries add, with where they must be: `topic_folder(topic)` for a request with a
/// topic, Support for the others.
fn deliver_topic_requests(
    mailbox: &Mailbox,
    triage: &Triage,
    round: &str,
    topic_folder: impl Fn(&str) -> String,
) -> BTreeMap<String, String> {
    let mut expected = BTreeMap::new();
    for (name, topic) in [
        ("support-topic.eml", Some("wifi-realtek")),
        ("support-two-topics.eml", Some("nvidia-black-screen")),
        ("support.eml", None),
    ] {
        let case = format!("{name}, {round}");
        mailbox.deliver(&case, &triage.through_milter(name, &[], Some("support")));
        expected.insert(case, topic.map_or("Support".to_string(), &topic_folder));
    }
    let case = format!("odd topic, {round}");
    mailbox.deliver(&case, ODD_TOPIC);
    expected.insert(case, "Support".to_string());
    expected
}

/// The whole story on one layout: without the folder Support/Topics (written the layout's
/// way) every request goes into Support, whatever its topic; once the user created it, topic
/// requests go into Support/<topic>, with the layout's separator.
fn topic_folders_on(layout: Layout) {
    let triage = Triage::new();
    let mailbox = Mailbox::new(layout, SCRIPT);
    let sep = layout.separator();

    deliver_all(&mailbox, &triage);
    let mut expected = expected_without_topic_folders();
    assert_eq!(mailbox.filed(), expected, "{layout:?}, topic folders off");

    // The user turns topic folders on with their mail program, which writes Topics with the
    // server's separator; the other spelling is refused by Maildir++ (either separator).
    mailbox.create(&format!("Support{sep}Topics")).unwrap();
    let other = if sep == '/' { '.' } else { '/' };
    if matches!(layout, Layout::Maildir | Layout::MaildirSlashSeparator) {
        let refused = mailbox.create(&format!("Support{other}Topics"));
        assert!(refused.is_err(), "{layout:?} accepted Support{other}Topics");
    }

    expected.extend(deliver_topic_requests(&mailbox, &triage, "on", |topic| format!("Support{sep}{topic}")));
    assert_eq!(mailbox.filed(), expected, "{layout:?}, topic folders on");
    assert_eq!(mailbox.sieve_log(), "", "{layout:?}: the script failed somewhere");
}

#[test]
fn maildir_with_dovecots_default_separator_dot() {
    topic_folders_on(Layout::Maildir);
}

#[test]
fn maildir_with_layout_fs() {
    topic_folders_on(Layout::MaildirFs);
}

#[test]
fn maildir_with_separator_slash() {
    topic_folders_on(Layout::MaildirSlashSeparator);
}

#[test]
fn sdbox() {
    topic_folders_on(Layout::Sdbox);
}

#[test]
fn mdbox() {
    topic_folders_on(Layout::Mdbox);
}

#[test]
fn mbox_cannot_have_topic_folders_and_files_topic_requests_into_support() {
    // An mbox folder holds mail or subfolders, not both: once Support has mail, Dovecot refuses
    // Support/Topics, and topic requests keep going into Support.
    let triage = Triage::new();
    let mailbox = Mailbox::new(Layout::Mbox, SCRIPT);
    deliver_all(&mailbox, &triage);
    let mut expected = expected_without_topic_folders();
    assert_eq!(mailbox.filed(), expected);
    let refused =
        mailbox.create("Support/Topics").expect_err("mbox accepted a subfolder of a folder with mail");
    assert!(refused.contains("inferior"), "{refused}");
    expected.extend(deliver_topic_requests(&mailbox, &triage, "refused", |_| "Support".to_string()));
    assert_eq!(mailbox.filed(), expected);
    assert_eq!(mailbox.sieve_log(), "", "the script failed somewhere");
}

#[test]
fn on_a_slash_server_a_dot_topics_folder_makes_siblings_and_the_subfolder_wins() {
    // With separator "/" (LAYOUT=fs), a folder named "Support.Topics" is a sibling of Support,
    // not a subfolder: the script then makes Support.<topic> siblings, which Dovecot accepts,
    // rather than lose the request. Once Support/Topics exists, it is followed.
    let triage = Triage::new();
    let mailbox = Mailbox::new(Layout::MaildirFs, SCRIPT);
    mailbox.create("Support.Topics").unwrap();
    let mut expected = deliver_topic_requests(&mailbox, &triage, "dot", |topic| format!("Support.{topic}"));
    assert_eq!(mailbox.filed(), expected);
    mailbox.create("Support/Topics").unwrap();
    expected.extend(deliver_topic_requests(&mailbox, &triage, "slash", |topic| format!("Support/{topic}")));
    assert_eq!(mailbox.filed(), expected);
    assert_eq!(mailbox.sieve_log(), "", "the script failed somewhere");
}
