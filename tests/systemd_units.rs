//! The files in systemd/: the units' hardening (systemd-analyze security) and syntax
//! (systemd-analyze verify), and the reply-file sync script, run for real against local git
//! repositories. Needs systemd-analyze and git; no running systemd.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_helpdesk-milter");
const SYSTEMD_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/helpdesk-milter-reply-sync");
const VALID: &str = include_str!("data/reply.toml");
/// An unclosed table header: `helpdesk-milter check --reply` refuses it with a line and column.
const BROKEN_TAIL: &str = "\n[languages.fr\n";

/// The highest exposure accepted for the units, on systemd-analyze's 0-10 scale.
const MAX_EXPOSURE: f64 = 1.5;

fn version(n: u32) -> String {
    VALID.replace("Test reply v1", &format!("Test reply v{n}"))
}

fn broken() -> String {
    format!("{VALID}{BROKEN_TAIL}")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn systemd_analyze(args: &[&str]) -> Output {
    match Command::new("systemd-analyze").args(args).env("SYSTEMD_PAGER", "cat").output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("systemd-analyze not found: install systemd (apt-get install systemd)")
        }
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

/// The "Overall exposure level" of a unit file: its number and its rating (SAFE, OK, ...).
fn exposure(unit: &str) -> (f64, String) {
    let path = format!("{SYSTEMD_DIR}/{unit}");
    let out = systemd_analyze(&["security", "--offline=true", "--no-pager", &path]);
    let all = text(&out);
    let marker = format!("Overall exposure level for {unit}:");
    let line = all
        .lines()
        .find(|l| l.contains(&marker))
        .unwrap_or_else(|| panic!("no {marker:?} in the output of systemd-analyze security:\n{all}"));
    let mut words = line.split_once(&marker).unwrap().1.split_whitespace();
    let number = words.next().and_then(|w| w.parse().ok());
    let rating = words.next().unwrap_or_default().to_string();
    (number.unwrap_or_else(|| panic!("no number in {line:?}")), rating)
}

fn assert_hardened(unit: &str) {
    let (level, rating) = exposure(unit);
    // systemd rates 0-0.9 SAFE (PERFECT at 0), 1.0-4.9 OK, then MEDIUM and worse.
    assert!(
        level <= MAX_EXPOSURE && ["PERFECT", "SAFE", "OK"].contains(&rating.as_str()),
        "{unit}: exposure {level} {rating}, want {MAX_EXPOSURE} or lower; see the ✗ lines of \
         systemd-analyze security --offline=true systemd/{unit}"
    );
}

#[test]
fn daemon_unit_exposure_is_ok_and_at_most_1_5() {
    assert_hardened("helpdesk-milter.service");
}

#[test]
fn sync_unit_exposure_is_ok_and_at_most_1_5() {
    assert_hardened("helpdesk-milter-reply-sync.service");
}

#[test]
fn units_pass_systemd_analyze_verify() {
    // verify checks that the programs exist: point the units at the built binary and the script
    // in the source tree. /bin/kill (procps) may be missing from a slim container.
    let dir = tempfile::tempdir().unwrap();
    let units =
        ["helpdesk-milter.service", "helpdesk-milter-reply-sync.service", "helpdesk-milter-reply-sync.timer"];
    let kill = if Path::new("/bin/kill").exists() { "/bin/kill" } else { "/bin/sh" };
    let mut paths = Vec::new();
    for unit in units {
        let original = std::fs::read_to_string(format!("{SYSTEMD_DIR}/{unit}")).unwrap();
        let local = original
            .replace("/usr/libexec/helpdesk-milter/helpdesk-milter-reply-sync", SCRIPT)
            .replace("/usr/sbin/helpdesk-milter", BIN)
            .replace("/bin/kill", kill);
        let path = dir.path().join(unit);
        std::fs::write(&path, local).unwrap();
        paths.push(path.to_str().unwrap().to_string());
    }
    let mut args = vec!["verify"];
    args.extend(paths.iter().map(String::as_str));
    let out = systemd_analyze(&args);
    let all = text(&out);
    // Unknown keys, bad values and missing programs are reported with the unit's name, and
    // only as warnings: look at the messages, not just the exit status.
    let ours: Vec<&str> = all.lines().filter(|l| l.contains("helpdesk-milter")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{all}");
}

#[test]
fn sysusers_file_creates_both_users_without_a_login() {
    // Into an empty root: nothing of the host is read or changed.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(format!("{SYSTEMD_DIR}/sysusers.d/helpdesk-milter.conf"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-sysusers ({e}): install systemd (apt-get install systemd)")
        });
    assert!(out.status.success(), "{}", text(&out));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    for user in ["helpdesk-milter", "helpdesk-milter-reply"] {
        let entry =
            passwd.lines().find(|l| l.starts_with(&format!("{user}:"))).unwrap_or_else(|| panic!("{passwd}"));
        assert!(entry.ends_with(":/usr/sbin/nologin"), "{entry}");
        // The units name these groups: Group=helpdesk-milter, Group=helpdesk-milter-reply.
        assert!(group.lines().any(|l| l.starts_with(&format!("{user}:"))), "{group}");
    }
}

#[test]
fn sync_script_is_an_executable_posix_shell_script() {
    let mode = std::fs::metadata(SCRIPT).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "{SCRIPT} must be executable");
    assert!(std::fs::read_to_string(SCRIPT).unwrap().starts_with("#!/bin/sh\n"));
}

/// Runs git with no user or system configuration, as a deterministic committer.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Help Desk")
        .env("GIT_AUTHOR_EMAIL", "helpdesk@example.org")
        .env("GIT_COMMITTER_NAME", "Help Desk")
        .env("GIT_COMMITTER_EMAIL", "helpdesk@example.org")
        .output()
        .unwrap_or_else(|e| panic!("cannot run git ({e}): install git (apt-get install git)"));
    assert!(out.status.success(), "git {args:?} in {}:\n{}", dir.display(), text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An "upstream" bare repository with a working clone to commit from (the Help Desk's side),
/// and the checkout the sync script maintains (the mail host's side).
struct Repos {
    dir: tempfile::TempDir,
}

impl Repos {
    /// Upstream with one commit holding `content` as reply.toml; no checkout yet.
    fn new(content: &str) -> Repos {
        let repos = Repos { dir: tempfile::tempdir().unwrap() };
        git(repos.dir.path(), &["init", "--quiet", "--bare", "--initial-branch=main", "upstream.git"]);
        git(repos.dir.path(), &["clone", "--quiet", "upstream.git", "work"]);
        repos.push(content, "first version");
        repos
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn checkout(&self) -> PathBuf {
        self.dir.path().join("checkout")
    }

    /// Commits `content` as reply.toml upstream; returns the commit.
    fn push(&self, content: &str, message: &str) -> String {
        std::fs::write(self.work().join("reply.toml"), content).unwrap();
        git(&self.work(), &["add", "reply.toml"]);
        git(&self.work(), &["commit", "--quiet", "-m", message]);
        git(&self.work(), &["push", "--quiet", "origin", "HEAD:main"]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    /// Rewrites upstream's last commit and force-pushes it; returns the new commit.
    fn force_push(&self, content: &str) -> String {
        std::fs::write(self.work().join("reply.toml"), content).unwrap();
        git(&self.work(), &["commit", "--quiet", "--amend", "-a", "-m", "rewritten"]);
        git(&self.work(), &["push", "--quiet", "--force", "origin", "HEAD:main"]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    /// Runs the script as the service would, with the settings of its environment file.
    fn sync_with(&self, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(SCRIPT);
        for var in ["REPLY_REPO_BRANCH", "REPLY_FILE", "REPLY_CHECK", "JOURNAL_STREAM", "GIT_DIR"] {
            cmd.env_remove(var);
        }
        cmd.env("REPLY_REPO_URL", format!("file://{}/upstream.git", self.dir.path().display()))
            .env("REPLY_CHECKOUT", self.checkout())
            .env("HELPDESK_MILTER", BIN)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .envs(env.iter().copied());
        cmd.output().unwrap()
    }

    fn sync(&self) -> Output {
        self.sync_with(&[])
    }

    fn head(&self) -> String {
        git(&self.checkout(), &["rev-parse", "HEAD"])
    }

    /// What the daemon would read.
    fn live(&self) -> String {
        std::fs::read_to_string(self.checkout().join("reply.toml")).unwrap()
    }
}

fn assert_synced(out: &Output) {
    assert!(out.status.success(), "sync failed:\n{}", text(out));
}

fn assert_refused(out: &Output, why: &str) {
    assert_eq!(out.status.code(), Some(1), "want a refusal ({why}):\n{}", text(out));
    assert!(text(out).contains(why), "want {why:?} in:\n{}", text(out));
}

/// The revision the daemon puts in X-Hot-Topics-Revision for a reply file.
fn hot_topics_revision(file: &Path) -> String {
    let out = Command::new(BIN).args(["preview", "--reply"]).arg(file).output().unwrap();
    let preview = String::from_utf8(out.stdout).unwrap();
    let line = preview.lines().find(|l| l.starts_with("X-Hot-Topics-Revision: ")).unwrap();
    line.split_once(": ").unwrap().1.trim().to_string()
}

#[test]
fn first_run_clones_and_later_runs_fast_forward() {
    let repos = Repos::new(VALID);
    let out = repos.sync();
    assert_synced(&out);
    assert_eq!(repos.live(), VALID);
    assert_eq!(repos.head(), git(&repos.work(), &["rev-parse", "HEAD"]));
    // Up to date: nothing to do, nothing said (the timer runs every 2 minutes).
    let out = repos.sync();
    assert_synced(&out);
    assert_eq!(text(&out), "");

    let v2 = repos.push(&version(2), "version 2");
    let out = repos.sync();
    assert_synced(&out);
    assert_eq!((repos.head(), repos.live()), (v2.clone(), version(2)));
    // The log line names the revision that replies will carry, as the sysadmin sees it there.
    let revision = hot_topics_revision(&repos.checkout().join("reply.toml"));
    assert!(text(&out).contains(&format!("{} (X-Hot-Topics-Revision)", revision)), "{}", text(&out));
    assert!(text(&out).contains(&v2[..12]), "{}", text(&out));
}

#[test]
fn an_invalid_reply_file_upstream_is_not_deployed() {
    let repos = Repos::new(VALID);
    assert_synced(&repos.sync());
    let good = repos.head();
    repos.push(&broken(), "a mistake");
    let out = repos.sync();
    assert_refused(&out, "has an invalid reply.toml");
    // The validator's own message, with the file's name in the repository, as CI shows it.
    let all = text(&out);
    assert!(all.lines().any(|l| l.starts_with("reply.toml:") && l.contains(": unclosed table")), "{all}");
    assert_eq!((repos.head(), repos.live()), (good, VALID.to_string()));

    // The fix goes live, past the broken commit.
    let fixed = repos.push(&version(3), "fix the mistake");
    assert_synced(&repos.sync());
    assert_eq!((repos.head(), repos.live()), (fixed, version(3)));

    // REPLY_CHECK=no leaves only the daemon's own check: the checkout moves to a broken file.
    let bad = repos.push(&broken(), "another mistake");
    assert_synced(&repos.sync_with(&[("REPLY_CHECK", "no")]));
    assert_eq!((repos.head(), repos.live()), (bad, broken()));
}

#[test]
fn an_invalid_first_version_checks_out_nothing_until_fixed() {
    let repos = Repos::new(&broken());
    assert_refused(&repos.sync(), "has an invalid reply.toml");
    assert!(!repos.checkout().join("reply.toml").exists());
    let fixed = repos.push(VALID, "fix");
    assert_synced(&repos.sync());
    assert_eq!((repos.head(), repos.live()), (fixed, VALID.to_string()));
}

#[test]
fn local_changes_are_kept_and_refused() {
    let repos = Repos::new(VALID);
    assert_synced(&repos.sync());
    let before = repos.head();
    repos.push(&version(2), "version 2");
    let edited = format!("{VALID}# edited on the server\n");
    std::fs::write(repos.checkout().join("reply.toml"), &edited).unwrap();
    let out = repos.sync();
    assert_refused(&out, "has local changes");
    assert!(text(&out).contains(" M reply.toml"), "{}", text(&out));
    assert_eq!((repos.head(), repos.live()), (before.clone(), edited));

    // An untracked file is somebody's work too.
    git(&repos.checkout(), &["checkout", "--quiet", "reply.toml"]);
    std::fs::write(repos.checkout().join("notes.txt"), "draft").unwrap();
    assert_refused(&repos.sync(), "?? notes.txt");
    assert_eq!(repos.head(), before);
    assert_eq!(std::fs::read_to_string(repos.checkout().join("notes.txt")).unwrap(), "draft");
}

#[test]
fn local_commits_and_detached_heads_are_refused() {
    let repos = Repos::new(VALID);
    assert_synced(&repos.sync());
    repos.push(&version(2), "version 2");

    std::fs::write(repos.checkout().join("reply.toml"), version(9)).unwrap();
    git(&repos.checkout(), &["-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qam", "local"]);
    let local = repos.head();
    assert_refused(&repos.sync(), "diverged");
    assert_eq!((repos.head(), repos.live()), (local.clone(), version(9)));

    git(&repos.checkout(), &["checkout", "--quiet", "--detach", "HEAD~1"]);
    assert_refused(&repos.sync(), "not on a branch");
    assert_eq!(repos.live(), VALID);
}

#[test]
fn a_rewritten_upstream_is_refused() {
    let repos = Repos::new(VALID);
    repos.push(&version(2), "version 2");
    assert_synced(&repos.sync());
    let deployed = repos.head();
    let rewritten = repos.force_push(&version(3));
    let out = repos.sync();
    assert_refused(&out, "diverged");
    assert!(text(&out).contains(&rewritten[..12]), "{}", text(&out));
    assert_eq!((repos.head(), repos.live()), (deployed, version(2)));
}

#[test]
fn the_documented_emergency_rollback_is_not_undone_by_the_sync() {
    // docs/deploy.md: stop the timer, move the branch back to the good commit, revert upstream,
    // start the timer. The sync then fast-forwards to the revert without ever deploying the bad
    // version again.
    let repos = Repos::new(VALID);
    assert_synced(&repos.sync());
    let good = repos.head();
    repos.push(&version(2), "a valid but wrong text");
    assert_synced(&repos.sync());
    assert_eq!(repos.live(), version(2));

    git(&repos.checkout(), &["checkout", "--quiet", "-B", "main", &good]);
    assert_eq!(repos.live(), VALID);
    git(&repos.work(), &["revert", "--no-edit", "HEAD"]);
    git(&repos.work(), &["push", "--quiet", "origin", "HEAD:main"]);
    let revert = git(&repos.work(), &["rev-parse", "HEAD"]);

    let out = repos.sync();
    assert_synced(&out);
    assert!(text(&out).contains(&format!("from {} to {}", &good[..12], &revert[..12])), "{}", text(&out));
    assert_eq!((repos.head(), repos.live()), (revert, VALID.to_string()));
}

#[test]
fn bad_settings_and_foreign_directories_are_refused() {
    let repos = Repos::new(VALID);
    let out = repos.sync_with(&[("REPLY_REPO_URL", "")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("REPLY_REPO_URL is not set"), "{}", text(&out));
    let out = repos.sync_with(&[("REPLY_CHECK", "maybe")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // A directory with other files in it is never turned into a checkout.
    std::fs::create_dir(repos.checkout()).unwrap();
    std::fs::write(repos.checkout().join("reply.toml"), "someone's file").unwrap();
    assert_refused(&repos.sync(), "is not a git checkout and not empty");
    assert!(!repos.checkout().join(".git").exists());
    assert_eq!(repos.live(), "someone's file");
}
