//! The Help Desk's example Sieve script, `etc/sieve/helpdesk.sieve`, run by the real interpreter
//! (Pigeonhole's `sieve-test`, Debian packages dovecot-core and dovecot-sieve) on messages as the
//! milter leaves them.
//!
//! Each message of `tests/data/sieve/` goes through `helpdesk-milter classify`, the daemon's own
//! end-of-message code, and the header changes it prints are applied exactly as the milter has
//! Postfix apply them: `-Name` deletes an instance of Name (any case; the last one first), and
//! `Name: value` is appended at the end of the header. Then `sieve-test` says where the result is
//! filed and with which flags.
//!
//! `sieve-test` missing is a failure, not a skip: install dovecot-core and dovecot-sieve.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_helpdesk-milter");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/sieve/helpdesk.sieve");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sieve");
const REPLY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reply.toml");

/// A temporary directory with a daemon configuration, its reply file and a copy of the script.
/// The copy keeps sieve-test's compiled `.svbin` out of the source tree.
struct Rig {
    dir: tempfile::TempDir,
    config: PathBuf,
    script: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_script(|s| s.to_string())
    }

    /// A rig whose script is the example script changed by `edit` (to try its settings).
    fn with_script(edit: impl Fn(&str) -> String) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        // Run as root, sieve-test drops to user nobody, which must read the script and messages.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(REPLY_FILE, dir.path().join("reply.toml")).unwrap();
        let config = dir.path().join("helpdesk-milter.toml");
        std::fs::write(&config, "[state]\ndirectory = \"state\"\n").unwrap();
        let original = std::fs::read_to_string(SCRIPT).unwrap();
        let edited = edit(&original);
        let script = dir.path().join("helpdesk.sieve");
        std::fs::write(&script, edited).unwrap();
        Rig { dir, config, script }
    }

    /// The header changes `classify` prints for a test message, one per line.
    fn classify(&self, name: &str, rcpts: &[&str]) -> Vec<String> {
        let mut cmd = Command::new(BIN);
        cmd.args(["classify", "--config"]).arg(&self.config);
        for r in rcpts {
            cmd.args(["--rcpt", r]);
        }
        if name.starts_with("team") {
            // Team mail is submitted with a login on the mail host.
            cmd.args(["--sasl-user", "dev"]);
        }
        let out = cmd.arg(Path::new(DATA).join(name)).output().unwrap();
        assert!(
            out.status.success(),
            "classify {name} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
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

/// Applies `classify`'s output to `raw` as the milter does.
fn apply(raw: &str, changes: &[String]) -> String {
    let eol = if raw.contains("\r\n") { "\r\n" } else { "\n" };
    let blank = format!("{eol}{eol}");
    let (header, body) = raw.split_once(&blank).expect("a message with a header and a body");
    // One entry per field, with its continuation lines.
    let mut fields: Vec<String> = Vec::new();
    for line in header.split(eol) {
        match fields.last_mut() {
            Some(f) if line.starts_with([' ', '\t']) => {
                f.push_str(eol);
                f.push_str(line);
            }
            _ => fields.push(line.to_string()),
        }
    }
    for change in changes {
        if let Some(name) = change.strip_prefix('-') {
            let i = fields
                .iter()
                .rposition(|f| f.split_once(':').is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name)))
                .unwrap_or_else(|| panic!("classify deletes a {name} that the message does not have"));
            fields.remove(i);
        } else {
            assert!(change.contains(": "), "not a header change: {change:?}");
            fields.push(change.clone());
        }
    }
    format!("{}{blank}{body}", fields.join(eol))
}

/// Classifies the test message `name` (for `rcpts`, default the Help Desk address), checks the
/// class it gets, applies the changes and returns where the Sieve script files the result.
fn through_milter(rig: &Rig, name: &str, rcpts: &[&str], class: Option<&str>) -> Vec<String> {
    let changes = rig.classify(name, rcpts);
    let got = changes.iter().find_map(|c| c.strip_prefix("X-HelpDesk-Class: "));
    assert_eq!(got, class, "classify {name}:\n{}", changes.join("\n"));
    let raw = std::fs::read_to_string(Path::new(DATA).join(name)).unwrap();
    let triaged = apply(&raw, &changes);
    let prefixed = triaged.lines().filter(|l| l.to_ascii_lowercase().starts_with("x-helpdesk-"));
    assert!(
        prefixed.clone().all(|l| changes.iter().any(|c| c == l)),
        "a header the milter did not write survived in:\n{triaged}"
    );
    rig.sieve(&triaged)
}

#[test]
fn whisperback_reports_go_to_whisperback() {
    let rig = Rig::new();
    assert_eq!(through_milter(&rig, "whisperback.eml", &[], Some("whisperback")), ["WhisperBack"]);
}

#[test]
fn support_requests_without_a_topic_go_to_support() {
    let rig = Rig::new();
    assert_eq!(through_milter(&rig, "support.eml", &[], Some("support")), ["Support"]);
}

#[test]
fn support_requests_with_a_topic_go_to_its_subfolder() {
    let rig = Rig::new();
    assert_eq!(through_milter(&rig, "support-topic.eml", &[], Some("support")), ["Support/wifi-realtek"]);
}

#[test]
fn with_several_topics_the_first_one_names_the_subfolder() {
    // X-HelpDesk-Topic: nvidia-black-screen, mac
    let rig = Rig::new();
    assert_eq!(
        through_milter(&rig, "support-two-topics.eml", &[], Some("support")),
        ["Support/nvidia-black-screen"]
    );
}

#[test]
fn topic_folders_and_separator_settings() {
    let no = Rig::with_script(|s| {
        assert!(s.contains("set \"topic_folders\" \"yes\";"));
        s.replace("set \"topic_folders\" \"yes\";", "set \"topic_folders\" \"no\";")
    });
    assert_eq!(through_milter(&no, "support-topic.eml", &[], Some("support")), ["Support"]);
    let dot = Rig::with_script(|s| {
        assert!(s.contains("set \"separator\" \"/\";"));
        s.replace("set \"separator\" \"/\";", "set \"separator\" \".\";")
    });
    assert_eq!(through_milter(&dot, "support-topic.eml", &[], Some("support")), ["Support.wifi-realtek"]);
}

#[test]
fn followups_go_to_follow_ups_even_with_a_topic() {
    // The follow-up mentions Realtek: it has an X-HelpDesk-Topic, but no subfolder.
    let rig = Rig::new();
    assert_eq!(through_milter(&rig, "followup.eml", &[], Some("followup")), ["Follow-ups"]);
}

#[test]
fn team_mail_goes_to_team_with_a_star() {
    // Class team has X-HelpDesk-Priority: high.
    let rig = Rig::new();
    assert_eq!(through_milter(&rig, "team.eml", &[], Some("team")), ["Team +\\flagged"]);
}

#[test]
fn automated_mail_goes_to_automated() {
    let rig = Rig::new();
    assert_eq!(through_milter(&rig, "automated.eml", &[], Some("automated")), ["Automated"]);
}

#[test]
fn spam_goes_to_spam() {
    let rig = Rig::new();
    assert_eq!(through_milter(&rig, "spam.eml", &[], Some("spam")), ["Spam"]);
}

#[test]
fn mail_without_triage_headers_stays_in_the_inbox() {
    // Not for a Help Desk address: the milter changes nothing, and neither does the script.
    let rig = Rig::new();
    let filed = through_milter(&rig, "not-for-helpdesk.eml", &["webmaster@tails.net"], None);
    assert_eq!(filed, ["INBOX (implicit keep)"]);
}

#[test]
fn forged_headers_are_replaced_by_the_milter() {
    // forged.eml claims X-HelpDesk-Class: team and, twice in other spellings, priority high.
    let rig = Rig::new();
    assert_eq!(through_milter(&rig, "forged.eml", &[], Some("support")), ["Support"]);
}

#[test]
fn a_message_that_bypassed_the_milter_is_filed_by_what_it_claims() {
    // The reason the script may only serve a mailbox that receives all its mail through the
    // milter: on any other path, the sender's own X-HelpDesk-* headers decide.
    let rig = Rig::new();
    let raw = std::fs::read_to_string(Path::new(DATA).join("forged.eml")).unwrap();
    assert_eq!(rig.sieve(&raw), ["Team +\\flagged"]);
}

#[test]
fn odd_headers_that_the_milter_never_writes() {
    let rig = Rig::new();
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
