//! A private, throw-away **real Dovecot mailbox** for end-to-end tests of the Sieve script.
//!
//! Dovecot's delivery agent `dovecot-lda`, with Pigeonhole's sieve plugin and a given script as
//! the user's active script, delivers into a mail store in a temporary directory; `doveadm`
//! then says which folder (as Dovecot names it to IMAP clients) each message is in. Both read a
//! configuration file of their own (`-c`): nothing of the system's /etc/dovecot is read or
//! changed, and no Dovecot server runs.
//!
//! As root, `dovecot-lda` only delivers to a user that Dovecot's auth service looks up (`-d`),
//! which needs a running server; so the tools run as user nobody instead (as Dovecot itself
//! would with `mail_uid=nobody`), who owns the temporary directory. Another user runs them as
//! itself.
//!
//! Needs the Debian packages dovecot-core (`dovecot-lda`, `doveadm`) and dovecot-sieve (the
//! plugin): a missing one is a failure, not a skip.
//!
//! Use from a test file with `#[path = "support/dovecot.rs"] mod dovecot;`.

// Each test binary uses a different subset of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const LDA: &str = "/usr/lib/dovecot/dovecot-lda";
const SIEVE_PLUGIN: &str = "/usr/lib/dovecot/modules/lib90_sieve_plugin.so";
const INSTALL_HINT: &str =
    "install Dovecot with `apt-get install dovecot-core dovecot-sieve` (or run .ci/run)";

/// How the mail store keeps folders, and the hierarchy separator that follows from it.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// `maildir:` as it comes: Maildir++, where a subfolder is written `Support.topic`.
    Maildir,
    /// `maildir:...:LAYOUT=fs`: one directory per folder, `Support/topic`.
    MaildirFs,
    /// Maildir++ on disk, with `separator = /` in the namespace: `Support/topic` to clients.
    MaildirSlashSeparator,
    /// Dovecot's single-dbox: `Support/topic`.
    Sdbox,
    /// Dovecot's multi-dbox: `Support/topic`.
    Mdbox,
    /// mbox files: `Support/topic`, but a folder holds either mail or subfolders.
    Mbox,
}

impl Layout {
    /// The separator between a folder and its subfolders, as IMAP clients see it.
    pub fn separator(self) -> char {
        match self {
            Layout::Maildir => '.',
            _ => '/',
        }
    }

    fn mail_location(self, mail: &Path) -> String {
        let m = mail.display();
        match self {
            Layout::Maildir | Layout::MaildirSlashSeparator => format!("maildir:{m}/Maildir"),
            Layout::MaildirFs => format!("maildir:{m}/Maildir:LAYOUT=fs"),
            Layout::Sdbox => format!("sdbox:{m}/sdbox"),
            Layout::Mdbox => format!("mdbox:{m}/mdbox"),
            Layout::Mbox => format!("mbox:{m}/mbox:INBOX={m}/inbox"),
        }
    }
}

/// One user's mail store, its Dovecot configuration and its Sieve script.
pub struct Mailbox {
    dir: tempfile::TempDir,
    config: PathBuf,
    home: PathBuf,
    /// uid and gid to run the tools as (as root), or None (as anyone else).
    user: Option<(u32, u32)>,
}

impl Mailbox {
    /// A new, empty mail store in `layout`, with `script` (the text of a Sieve script) as the
    /// user's active script.
    pub fn new(layout: Layout, script: &str) -> Mailbox {
        for (path, package) in [(LDA, "dovecot-core"), (SIEVE_PLUGIN, "dovecot-sieve")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing (package {package}): this test delivers mail through a real Dovecot; \
                 {INSTALL_HINT}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let home = root.join("home");
        for d in [&home, &root.join("run"), &root.join("sieve")] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(root.join("helpdesk.sieve"), script).unwrap();
        let separator = match layout {
            Layout::MaildirSlashSeparator => "separator = /",
            _ => "",
        };
        let config = root.join("dovecot.conf");
        let r = root.display();
        std::fs::write(
            &config,
            format!(
                "protocols =\nssl = no\nbase_dir = {r}/run\nstate_dir = {r}/run\nlog_path = /dev/stderr\n\
                 mail_location = {location}\n\
                 namespace inbox {{\n  inbox = yes\n  {separator}\n}}\n\
                 protocol lda {{\n  mail_plugins = sieve\n}}\n\
                 plugin {{\n  sieve = file:{r}/sieve;active={r}/helpdesk.sieve\n  sieve_user_log = {r}/sieve.log\n}}\n",
                location = layout.mail_location(&home),
            ),
        )
        .unwrap();
        let user = running_as_root().then(|| {
            let nobody = (id("-u"), id("-g"));
            for entry in walk(root) {
                std::os::unix::fs::chown(&entry, Some(nobody.0), Some(nobody.1)).unwrap();
            }
            nobody
        });
        Mailbox { dir, config, home, user }
    }

    /// Delivers `message` as Postfix would hand it to `dovecot-lda`, with a first header
    /// `X-Test-Case: case` by which `filed` finds it. Returns Dovecot's log of the delivery;
    /// panics if the delivery fails.
    pub fn deliver(&self, case: &str, message: &str) -> String {
        let mut child = self
            .command(LDA)
            .args(["-f", "sender@example.org"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {LDA}: {e}; {INSTALL_HINT}"));
        let eol = if message.contains("\r\n") { "\r\n" } else { "\n" };
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("X-Test-Case: {case}{eol}{message}").as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let log = text(&out);
        assert!(out.status.success(), "dovecot-lda failed for {case} ({}):\n{log}", out.status);
        log
    }

    /// Creates a folder, as the user's mail program would (IMAP CREATE, through Dovecot).
    /// `Err` holds Dovecot's reason when it refuses.
    pub fn create(&self, folder: &str) -> Result<(), String> {
        let out = self.doveadm(&["mailbox", "create", folder]);
        if out.status.success() { Ok(()) } else { Err(text(&out)) }
    }

    /// Where each delivered message is: its case, and its folder followed by its flags, such as
    /// `Team +\Flagged` (without \Recent, which every new message has).
    pub fn filed(&self) -> BTreeMap<String, String> {
        let out = self.doveadm(&["-f", "tab", "fetch", "mailbox flags hdr.x-test-case", "all"]);
        let report = text(&out);
        assert!(out.status.success(), "doveadm fetch failed ({}):\n{report}", out.status);
        let mut filed = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
            let mut fields = line.split('\t');
            let (Some(folder), Some(flags), Some(case)) = (fields.next(), fields.next(), fields.next())
            else {
                panic!("unexpected doveadm line {line:?} in:\n{report}");
            };
            let mut place = folder.to_string();
            for flag in flags.split(' ').filter(|f| !f.is_empty() && *f != "\\Recent") {
                place.push_str(&format!(" +{flag}"));
            }
            if let Some(before) = filed.insert(case.to_string(), place) {
                panic!("{case} is in two folders, {before} and {folder}:\n{report}");
            }
        }
        filed
    }

    /// What Pigeonhole wrote to the user's Sieve log (errors of the script), or "".
    pub fn sieve_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sieve.log")).unwrap_or_default()
    }

    fn doveadm(&self, args: &[&str]) -> Output {
        self.command("doveadm")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run doveadm: {e}; {INSTALL_HINT}"))
    }

    /// A Dovecot tool with the private configuration, run as the mail user with only the
    /// environment it needs: without `-d` or `-u`, `dovecot-lda` and `doveadm` take the user
    /// from USER and the home from HOME.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("-c")
            .arg(&self.config)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("USER", "helpdesk")
            .env("HOME", &self.home)
            .current_dir(self.dir.path());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid (`-u`) or gid (`-g`) of user nobody.
fn id(which: &str) -> u32 {
    let out = Command::new("id").args([which, "nobody"]).output().unwrap();
    assert!(out.status.success(), "no user nobody: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// `dir` and everything below it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
