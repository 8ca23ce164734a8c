//! Test messages as the milter leaves them, without Postfix: each message of `tests/data/sieve/`
//! goes through `helpdesk-milter classify`, the daemon's own end-of-message code, and the header
//! changes it prints are applied exactly as the milter has Postfix apply them: `-Name` deletes an
//! instance of Name (any case; the last one first), and `Name: value` is appended at the end of
//! the header.
//!
//! Use from a test file with `#[path = "support/triage.rs"] mod triage;`.

// Each test binary uses a different subset of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_helpdesk-milter");
pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sieve");
const REPLY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reply.toml");

/// A daemon configuration with the test reply file, in a temporary directory.
pub struct Triage {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Triage {
    pub fn new() -> Triage {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(REPLY_FILE, dir.path().join("reply.toml")).unwrap();
        let config = dir.path().join("helpdesk-milter.toml");
        std::fs::write(&config, "[state]\ndirectory = \"state\"\n").unwrap();
        Triage { _dir: dir, config }
    }

    /// The header changes `classify` prints for the test message `name`, one per line.
    pub fn classify(&self, name: &str, rcpts: &[&str]) -> Vec<String> {
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

    /// The test message `name` as the milter leaves it for `rcpts` (default: the Help Desk
    /// address), after checking the class it gets and that no X-HelpDesk-* header of the
    /// sender survived.
    pub fn through_milter(&self, name: &str, rcpts: &[&str], class: Option<&str>) -> String {
        let changes = self.classify(name, rcpts);
        let got = changes.iter().find_map(|c| c.strip_prefix("X-HelpDesk-Class: "));
        assert_eq!(got, class, "classify {name}:\n{}", changes.join("\n"));
        let triaged = apply(&raw(name), &changes);
        let prefixed = triaged.lines().filter(|l| l.to_ascii_lowercase().starts_with("x-helpdesk-"));
        assert!(
            prefixed.clone().all(|l| changes.iter().any(|c| c == l)),
            "a header the milter did not write survived in:\n{triaged}"
        );
        triaged
    }
}

/// The test message `name`, untouched.
pub fn raw(name: &str) -> String {
    std::fs::read_to_string(Path::new(DATA).join(name)).unwrap()
}

/// Applies `classify`'s output to `raw` as the milter does.
pub fn apply(raw: &str, changes: &[String]) -> String {
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
