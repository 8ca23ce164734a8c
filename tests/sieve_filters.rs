//! The Help Desk's example Sieve script, `etc/sieve/helpdesk.sieve`, run by the real interpreter
//! (Pigeonhole's `sieve-test`, Debian packages dovecot-core and dovecot-sieve) on messages as the
//! milter leaves them (tests/support/triage.rs): `sieve-test` says where the result is filed and
//! with which flags. It does not store anything, so it cannot tell whether the mail server
//! accepts the folder's name: tests/dovecot_delivery.rs delivers through a real Dovecot.
//!
//! `sieve-test` missing is a failure, not a skip: install dovecot-core and dovecot-sieve.

#[path = "support/triage.rs"]
mod triage;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use triage::Triage;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/sieve/helpdesk.sieve");

/// A temporary directory with a copy of the script, which keeps sieve-test's compiled `.svbin`
/// out of the source tree, and an empty mail store for the script's `mailboxexists` tests.
struct Rig {
    dir: tempfile::TempDir,
    script: PathBuf,
    /// sieve-test's `-l`: the mail store, Maildir++ (separator ".") or LAYOUT=fs ("/").
    location: String,
    triage: Triage,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        // Run as root, sieve-test drops to user nobody, which must read the script, messages
        // and mail store.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.path().join("helpdesk.sieve");
        std::fs::copy(SCRIPT, &script).unwrap();
        let location = format!("maildir:{}/Maildir", dir.path().display());
        Rig { dir, script, location, triage: Triage::new() }
    }

    /// A rig whose mail store has the folder Topics inside Support, which turns topic folders
    /// on: `separator` "." makes it Maildir++ (directory `.Support.Topics`), "/" LAYOUT=fs
    /// (directory `Support/Topics`).
    fn with_topics_folder(separator: char) -> Rig {
        let mut rig = Rig::new();
        let maildir = rig.dir.path().join("Maildir");
        let folder = match separator {
            '.' => maildir.join(".Support.Topics"),
            '/' => {
                rig.location.push_str(":LAYOUT=fs");
                maildir.join("Support/Topics")
            }
            _ => unreachable!(),
        };
        for d in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(d)).unwrap();
            std::fs::create_dir_all(folder.join(d)).unwrap();
        }
        if running_as_root() {
            // A folder that sieve-test's user cannot write counts as read-only: as missing.
            let status = Command::new("chown").args(["-R", "nobody:nogroup"]).arg(&maildir).status().unwrap();
            assert!(status.success());
        }
        rig
    }

    fn through_milter(&self, name: &str, rcpts: &[&str], class: Option<&str>) -> Vec<String> {
        self.sieve(&self.triage.through_milter(name, rcpts, class))
    }

    /// Where `sieve-test` files `message`: one line per store action, such as
    /// `Team +\flagged` or `INBOX (implicit keep)`.
    fn sieve(&self, message: &str) -> Vec<String> {
        let path = self.dir.path().join("message.eml");
        std::fs::write(&path, message).unwrap();
        for p in [&path, &self.script] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let mut cmd = Command::new("sieve-test");
        if running_as_root() {
            // Dovecot refuses to read mail as root; the harmless "save: failed to create
            // temporary file" error then says that nobody cannot write the compiled script.
            cmd.args(["-o", "mail_uid=nobody", "-o", "mail_gid=nogroup"]);
        }
        cmd.args(["-l", &self.location]);
        let out = match cmd.arg(&self.script).arg(&path).output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "sieve-test not found: these tests run the Sieve script with the real interpreter; \
                 install it with `apt-get install dovecot-core dovecot-sieve`"
            ),
            Err(e) => panic!("cannot run sieve-test: {e}"),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "sieve-test failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stores(&stdout)
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The store actions of sieve-test's report:
///
/// ```text
/// Performed actions:
///
///  * store message in folder: Team
///         + create mailbox if it does not exist
///         + add IMAP flags: \flagged
///
/// Implicit keep:
///
///  * store message in folder: INBOX
/// ```
fn stores(report: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut implicit = false;
    for line in report.lines() {
        let line = line.trim();
        if line == "Implicit keep:" {
            implicit = true;
        } else if let Some(folder) = line.strip_prefix("* store message in folder: ") {
            out.push(if implicit { format!("{folder} (implicit keep)") } else { folder.to_string() });
        } else if let Some(flags) = line.strip_prefix("+ add IMAP flags: ") {
            let last = out.last_mut().unwrap_or_else(|| panic!("flags without a store in:\n{report}"));
            // Flags belong to the folder, before the "(implicit keep)" note.
            match last.strip_suffix(" (implicit keep)") {
                Some(folder) => *last = format!("{folder} +{flags} (implicit keep)"),
                None => last.push_str(&format!(" +{flags}")),
            }
        } else if line.starts_with('*') {
            panic!("unexpected action {line:?} in:\n{report}");
        }
    }
    out
}

#[test]
fn whisperback_reports_go_to_whisperback() {
    let rig = Rig::new();
    assert_eq!(rig.through_milter("whisperback.eml", &[], Some("whisperback")), ["WhisperBack"]);
}

#[test]
fn support_requests_without_a_topic_go_to_support() {
    let rig = Rig::new();
    assert_eq!(rig.through_milter("support.eml", &[], Some("support")), ["Support"]);
}

#[test]
fn support_requests_with_a_topic_go_to_support_while_topic_folders_are_off() {
    // No folder Support/Topics: the script cannot know how the server writes subfolders.
    let rig = Rig::new();
    assert_eq!(rig.through_milter("support-topic.eml", &[], Some("support")), ["Support"]);
}

#[test]
fn support_requests_with_a_topic_go_to_its_subfolder_written_like_topics() {
    let slash = Rig::with_topics_folder('/');
    assert_eq!(slash.through_milter("support-topic.eml", &[], Some("support")), ["Support/wifi-realtek"]);
    let dot = Rig::with_topics_folder('.');
    assert_eq!(dot.through_milter("support-topic.eml", &[], Some("support")), ["Support.wifi-realtek"]);
    // Requests without a topic still go into Support itself.
    assert_eq!(dot.through_milter("support.eml", &[], Some("support")), ["Support"]);
}

#[test]
fn with_several_topics_the_first_one_names_the_subfolder() {
    // X-HelpDesk-Topic: nvidia-black-screen, mac
    let rig = Rig::with_topics_folder('/');
    assert_eq!(
        rig.through_milter("support-two-topics.eml", &[], Some("support")),
        ["Support/nvidia-black-screen"]
    );
}

#[test]
fn followups_go_to_follow_ups_even_with_a_topic() {
    // The follow-up mentions Realtek: it has an X-HelpDesk-Topic, but no subfolder.
    let rig = Rig::new();
    assert_eq!(rig.through_milter("followup.eml", &[], Some("followup")), ["Follow-ups"]);
}

#[test]
fn team_mail_goes_to_team_with_a_star() {
    // Class team has X-HelpDesk-Priority: high.
    let rig = Rig::new();
    assert_eq!(rig.through_milter("team.eml", &[], Some("team")), ["Team +\\flagged"]);
}

#[test]
fn automated_mail_goes_to_automated() {
    let rig = Rig::new();
    assert_eq!(rig.through_milter("automated.eml", &[], Some("automated")), ["Automated"]);
}

#[test]
fn spam_goes_to_spam() {
    let rig = Rig::new();
    assert_eq!(rig.through_milter("spam.eml", &[], Some("spam")), ["Spam"]);
}

#[test]
fn mail_without_triage_headers_stays_in_the_inbox() {
    // Not for a Help Desk address: the milter changes nothing, and neither does the script.
    let rig = Rig::new();
    let filed = rig.through_milter("not-for-helpdesk.eml", &["webmaster@tails.net"], None);
    assert_eq!(filed, ["INBOX (implicit keep)"]);
}

#[test]
fn forged_headers_are_replaced_by_the_milter() {
    // forged.eml claims X-HelpDesk-Class: team and, twice in other spellings, priority high.
    let rig = Rig::new();
    assert_eq!(rig.through_milter("forged.eml", &[], Some("support")), ["Support"]);
}

#[test]
fn a_message_that_bypassed_the_milter_is_filed_by_what_it_claims() {
    // The reason the script may only serve a mailbox that receives all its mail through the
    // milter: on any other path, the sender's own X-HelpDesk-* headers decide.
    let rig = Rig::new();
    assert_eq!(rig.sieve(&triage::raw("forged.eml")), ["Team +\\flagged"]);
}

#[test]
fn odd_headers_that_the_milter_never_writes() {
    let rig = Rig::with_topics_folder('/');
    let msg = |headers: &str| format!("From: a@example.org\nSubject: x\n{headers}\n\nbody\n");
    // A topic that is not an id cannot make or reach another folder.
    for topic in ["../../INBOX", "a/b", "x.y", "two words", ""] {
        let m = msg(&format!("X-HelpDesk-Class: support\nX-HelpDesk-Topic: {topic}"));
        assert_eq!(rig.sieve(&m), ["Support"], "topic {topic:?}");
    }
    // An unknown class is left in the inbox.
    assert_eq!(rig.sieve(&msg("X-HelpDesk-Class: bogus")), ["INBOX (implicit keep)"]);
    // Header names and values are compared without regard to case, like the milter's.
    assert_eq!(rig.sieve(&msg("x-helpdesk-class: SPAM")), ["Spam"]);
}
