//! Fault injection, end to end: a real Postfix with the daemon as its milter, and a relay for the
//! replies that the test scripts. For every fault: the incoming mail is delivered and triaged
//! (the rig's Postfix tempfails when the milter fails, so trouble would show), no reply is sent
//! twice or to anyone else, queued replies go out once the fault is gone, and the log names the
//! problem. Needs root (Postfix, mount) and Postfix.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/faults.rs"]
mod faults;
#[path = "support/postfix.rs"]
mod postfix;

use daemon::Daemon;
use faults::{FakeRelay, Mode, Tmpfs, wait_until};
use postfix::{PostfixRig, RigOptions, SinkMessage, free_port};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const HELPDESK: &str = "support@tails.net";
/// Guards against hangs only.
const PATIENCE: Duration = Duration::from_secs(60);
/// Long enough for several retries at retry_interval = 1s: what has not happened by then is not
/// going to.
const SETTLE: Duration = Duration::from_secs(3);

struct Setup {
    rig: PostfixRig,
    daemon: Daemon,
    relay: FakeRelay,
}

/// Postfix (tempfail if the milter fails), the daemon as its milter with `[autoreply]` settings
/// `extra`, and a relay in `mode` for its replies. `prepare` runs before the daemon starts.
fn setup_with(mode: Mode, extra: &str, prepare: impl FnOnce(&mut Daemon)) -> Setup {
    let relay = FakeRelay::start(mode);
    let port = free_port();
    let rig = PostfixRig::start(RigOptions::with_milter(format!("inet:127.0.0.1:{port}")));
    let mut daemon = Daemon::configure_on(
        port,
        &format!("[autoreply]\nrelay = \"{}\"\nretry_interval = \"1s\"\n{extra}", relay.url()),
        &[],
    );
    prepare(&mut daemon);
    daemon.spawn();
    // The port is bound before the state is opened: wait until it is.
    daemon.wait_log("listening on", 1);
    Setup { rig, daemon, relay }
}

fn setup(mode: Mode, extra: &str) -> Setup {
    setup_with(mode, extra, |_| {})
}

fn request(from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {HELPDESK}\r\nSubject: {subject}\r\nMessage-ID: <{subject}.{}@example.org>\r\n\r\nMy Tails does not start.\r\n",
        std::process::id()
    )
    .into_bytes()
}

impl Setup {
    /// Sends a new support request from `from` and returns its auto-reply decision, after
    /// checking that it was accepted, delivered and triaged.
    fn request(&self, from: &str, subject: &str) -> String {
        let m = self.incoming(from, subject);
        assert_eq!(m.header("X-HelpDesk-Class"), vec!["support"], "triaged");
        m.header("X-HelpDesk-Autoreply").concat()
    }

    /// Sends a request and returns it as delivered to the rig's sink.
    fn incoming(&self, from: &str, subject: &str) -> SinkMessage {
        if let Err(e) = self.rig.send(Some(from), &[HELPDESK], &request(from, subject)) {
            panic!("{subject}: refused by Postfix: {e}\n{}", self.daemon.log());
        }
        let mut found = None;
        wait_until(
            PATIENCE,
            || {
                found = self.rig.messages().into_iter().find(|m| m.header("Subject") == vec![subject]);
                found.is_some()
            },
            &|| format!("{subject} not delivered\n{}", self.rig.maillog()),
        );
        found.unwrap()
    }

    fn outbox(&self) -> PathBuf {
        self.daemon.state_dir().join("outbox")
    }

    /// Entry files in the outbox.
    fn queued(&self) -> usize {
        std::fs::read_dir(self.outbox())
            .map(|r| r.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".reply")).count())
            .unwrap_or(0)
    }

    /// Waits for exactly `n` replies to `rcpt`, then checks that no more come.
    fn expect_replies(&self, rcpt: &str, n: usize) {
        if n > 0 {
            wait_until(PATIENCE, || self.relay.count_for(rcpt) >= n, &|| {
                format!("{} replies to {rcpt}, want {n}\n{}", self.relay.count_for(rcpt), self.daemon.log())
            });
        }
        std::thread::sleep(SETTLE);
        assert_eq!(self.relay.count_for(rcpt), n, "replies to {rcpt}\n{}", self.daemon.log());
    }

    /// Each reply the relay accepted went to the sender of a request, and carries its subject.
    fn replies_are_well_addressed(&self, senders: &[&str]) {
        for d in self.relay.delivered() {
            assert_eq!(d.mail, "MAIL FROM:<>", "null sender");
            let to = d.rcpt_addresses();
            assert_eq!(to.len(), 1);
            assert!(senders.contains(&to[0].as_str()), "reply to a stranger: {to:?}");
            let header_to = d.text().lines().find_map(|l| l.strip_prefix("To: ").map(str::to_owned));
            assert_eq!(header_to, Some(format!("<{}>", to[0])), "To: is the envelope recipient");
        }
    }

    fn log(&self) -> String {
        self.daemon.log()
    }
}

/// Lines of `log` that contain every one of `words`.
fn lines_with<'a>(log: &'a str, words: &[&str]) -> Vec<&'a str> {
    log.lines().filter(|l| words.iter().all(|w| l.contains(w))).collect()
}

#[test]
fn relay_refusing_with_5xx_drops_the_reply_logs_it_and_does_not_retry() {
    let s = setup(Mode::RefuseRcpt("550 5.1.1 <alice@example.org>: Recipient address rejected".into()), "");
    assert_eq!(s.request("alice@example.org", "refused-5xx"), "queued");
    s.daemon.wait_log("dropped", 1);
    let log = s.log();
    assert_eq!(lines_with(&log, &["reply", "dropped", "rejected RCPT TO", "(550): 5.1.1"]).len(), 1, "{log}");
    assert!(!log.contains("alice"), "the relay's answer is quoted without the address:\n{log}");
    std::thread::sleep(SETTLE);
    assert_eq!(s.relay.connections(), 1, "a 5xx is not retried");
    assert_eq!(s.queued(), 0, "and not kept");

    // The sender counts as answered (no second try that could become a duplicate); others are
    // answered as usual once the relay accepts.
    s.relay.set_mode(Mode::Accept);
    assert_eq!(s.request("alice@example.org", "refused-5xx-again"), "suppressed (interval)");
    assert_eq!(s.request("bob@example.org", "after-5xx"), "queued");
    s.expect_replies("bob@example.org", 1);
    s.expect_replies("alice@example.org", 0);
    s.replies_are_well_addressed(&["bob@example.org"]);
}

#[test]
fn relay_refusing_with_4xx_keeps_the_reply_and_delivers_it_once_accepted() {
    let s = setup(Mode::RefuseRcpt("451 4.3.0 Try again later".into()), "");
    assert_eq!(s.request("carol@example.org", "refused-4xx"), "queued");
    s.daemon.wait_log("(attempt 2), retrying in 2s", 1);
    let log = s.log();
    let refused = lines_with(&log, &["not delivered (attempt 1), retrying in 1s", "RCPT TO", "(451): 4.3.0"]);
    assert_eq!(refused.len(), 1, "{log}");
    assert_eq!(s.queued(), 1, "kept for a retry");
    assert_eq!(s.relay.count_for("carol@example.org"), 0);

    s.relay.set_mode(Mode::Accept);
    s.expect_replies("carol@example.org", 1);
    s.daemon.wait_log("delivered to relay", 1);
    assert_eq!(s.queued(), 0);
    s.replies_are_well_addressed(&["carol@example.org"]);
}

#[test]
fn silent_relay_times_out_and_the_reply_goes_once_it_answers() {
    let s = setup(Mode::Silent, "smtp_timeout = \"1s\"");
    assert_eq!(s.request("dave@example.org", "silent"), "queued");
    s.daemon.wait_log("connection failed: timed out", 2);
    assert!(!lines_with(&s.log(), &["not delivered (attempt 1)", "connection failed: timed out"]).is_empty());
    assert_eq!(s.queued(), 1);

    s.relay.set_mode(Mode::Accept);
    s.expect_replies("dave@example.org", 1);
    assert_eq!(s.queued(), 0);
}

#[test]
fn relay_stalling_after_the_message_loses_the_reply_rather_than_risk_a_second_copy() {
    let s = setup(Mode::StallAfterData, "smtp_timeout = \"1s\"");
    assert_eq!(s.request("erin@example.org", "stall"), "queued");
    s.daemon.wait_log("outcome unknown", 1);
    let log = s.log();
    assert_eq!(
        lines_with(
            &log,
            &["reply", "dropped", "outcome unknown after the message was transmitted", "not retried"]
        )
        .len(),
        1,
        "{log}"
    );
    assert_eq!(s.relay.stalled(), 1);
    s.relay.set_mode(Mode::Accept);
    std::thread::sleep(SETTLE);
    assert_eq!(s.relay.connections(), 1, "not retried: the relay may have queued it");
    assert_eq!(s.queued(), 0);
    assert_eq!(s.request("erin@example.org", "stall-again"), "suppressed (interval)");
    s.expect_replies("erin@example.org", 0);
}

/// The `retrying in` delays logged for one reply, in order.
fn delays_of(log: &str, id: &str) -> Vec<String> {
    lines_with(log, &[&format!("reply {id} not delivered")])
        .iter()
        .filter_map(|l| l.split("retrying in ").nth(1)?.split(':').next().map(str::to_owned))
        .collect()
}

#[test]
fn relay_down_for_long_queues_every_reply_backs_off_and_delivers_each_once() {
    let s = setup(Mode::Down, "");
    let senders = ["f1@example.org", "f2@example.net", "f3@example.com", "f4@example.org"];
    for (i, who) in senders.iter().enumerate() {
        assert_eq!(s.request(who, &format!("down-{i}")), "queued");
    }
    s.daemon.wait_log("(attempt 3), retrying in 4s", senders.len());
    assert_eq!(s.queued(), senders.len());
    let log = s.log();
    let ids: Vec<String> = lines_with(&log, &["reply queued"])
        .iter()
        .filter_map(|l| l.split("reply_id=").nth(1)?.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), senders.len(), "{log}");
    for id in &ids {
        assert_eq!(delays_of(&log, id)[..3], ["1s", "2s", "4s"], "the back-off doubles:\n{log}");
    }
    assert!(
        lines_with(&log, &["not delivered", "connection failed", "Connection refused"]).len() >= 12,
        "{log}"
    );

    s.relay.set_mode(Mode::Accept);
    for who in senders {
        s.expect_replies(who, 1);
    }
    assert_eq!(s.relay.delivered().len(), senders.len());
    assert_eq!(s.queued(), 0);
    s.replies_are_well_addressed(&senders);
}

#[test]
fn sigkill_with_replies_queued_then_restart_delivers_each_once() {
    let mut s = setup(Mode::Down, "");
    let senders = ["g1@example.org", "g2@example.org", "g3@example.net"];
    for (i, who) in senders.iter().enumerate() {
        assert_eq!(s.request(who, &format!("killed-{i}")), "queued");
    }
    s.daemon.wait_log("reply queued", senders.len());
    assert_eq!(s.queued(), senders.len());
    s.daemon.kill9();
    s.daemon.spawn();
    s.daemon.wait_log("outbox sender started", 2);
    s.relay.set_mode(Mode::Accept);
    for who in senders {
        s.expect_replies(who, 1);
    }
    assert_eq!(s.queued(), 0);
    // The restarted daemon remembers them.
    assert_eq!(s.request("g1@example.org", "killed-again"), "suppressed (interval)");
    s.replies_are_well_addressed(&senders);
}

#[test]
fn sigkill_while_a_reply_is_being_sent_then_restart_sends_one_copy() {
    let mut s = setup(Mode::StallAfterData, "");
    assert_eq!(s.request("heidi@example.org", "kill-in-data"), "queued");
    wait_until(PATIENCE, || s.relay.stalled() == 1, &|| s.log());
    // The whole message is at the relay, which has not said "250" yet.
    s.daemon.kill9();
    s.relay.set_mode(Mode::Accept);
    s.daemon.spawn();
    s.expect_replies("heidi@example.org", 1);
    assert_eq!(s.relay.delivered().len(), 1);
    assert_eq!(s.queued(), 0);
}

/// An ext4 image on a loop device, mounted for the test's lifetime, that can be frozen (writes
/// block until it is thawed) or fail into read-only. Thawed and unmounted on drop.
struct LoopFs {
    path: PathBuf,
    _image: tempfile::NamedTempFile,
}

impl LoopFs {
    fn mount(path: &Path) -> LoopFs {
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(16 << 20).unwrap();
        sh("mkfs.ext4", &["-q", "-F", image.path().to_str().unwrap()]);
        std::fs::create_dir_all(path).unwrap();
        let opts = "loop,errors=remount-ro";
        sh("mount", &["-o", opts, image.path().to_str().unwrap(), path.to_str().unwrap()]);
        LoopFs { path: path.to_owned(), _image: image }
    }

    fn freeze(&self, frozen: bool) {
        sh("fsfreeze", &[if frozen { "-f" } else { "-u" }, self.path.to_str().unwrap()]);
    }

    /// An ext4 error: the kernel makes the file system read-only under the open files (a plain
    /// `remount,ro` is refused while a file is open for writing).
    fn fail_read_only(&self) {
        let out = Command::new("findmnt").args(["-n", "-o", "SOURCE"]).arg(&self.path).output().unwrap();
        let device = String::from_utf8(out.stdout).unwrap();
        let name = device.trim().rsplit('/').next().unwrap().to_owned();
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "1").unwrap();
        wait_until(PATIENCE, || std::fs::write(self.path.join("probe"), "x").is_err(), &|| {
            "still writable".into()
        });
    }

    /// What an administrator does after a disk error (with the daemon stopped: after an ext4
    /// error the file system cannot simply be remounted read-write): check it, mount it again.
    fn repair(&self) {
        sh("umount", &[self.path.to_str().unwrap()]);
        // Exit code 1 means "errors corrected".
        let fsck = Command::new("e2fsck").arg("-fy").arg(self._image.path()).output().unwrap();
        assert!(matches!(fsck.status.code(), Some(0 | 1)), "{}", String::from_utf8_lossy(&fsck.stdout));
        let opts = "loop,errors=remount-ro";
        sh("mount", &["-o", opts, self._image.path().to_str().unwrap(), self.path.to_str().unwrap()]);
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.path).output();
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}

fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether a thread of `pid` waits uninterruptibly (here: on the frozen file system).
fn blocked_on_disk(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten().any(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('D')))
    })
}

#[test]
fn sigkill_after_the_record_but_before_the_outbox_write_loses_the_reply_never_doubles_it() {
    // The outbox on its own file system, frozen: the reply worker records the sender, then
    // blocks writing the reply, exactly between the two steps; SIGKILL it there.
    let mut outbox_fs = None;
    let mut s = setup_with(Mode::Accept, "", |d| {
        outbox_fs = Some(LoopFs::mount(&d.state_dir().join("outbox")));
    });
    let outbox_fs = outbox_fs.unwrap();
    outbox_fs.freeze(true);
    assert_eq!(s.request("ivan@example.org", "kill-in-window"), "queued");
    let pid = s.daemon.pid();
    wait_until(PATIENCE, || blocked_on_disk(pid), &|| format!("the worker never blocked\n{}", s.log()));
    s.daemon.signal("KILL");
    outbox_fs.freeze(false);
    s.daemon.kill9();
    s.daemon.spawn();
    s.daemon.wait_log("outbox sender started", 2);
    // Recorded, not queued: the reply is lost, and a new request does not bring a second one.
    assert_eq!(s.request("ivan@example.org", "after-kill-in-window"), "suppressed (interval)");
    s.expect_replies("ivan@example.org", 0);
    assert_eq!(s.queued(), 0);
    // The daemon is otherwise fine.
    assert_eq!(s.request("judy@example.org", "after-kill-others"), "queued");
    s.expect_replies("judy@example.org", 1);
}

/// The daemon with its state directory on a small tmpfs of its own.
fn setup_on_tmpfs(mode: Mode) -> (Setup, Tmpfs) {
    let mut fs = None;
    let s = setup_with(mode, "", |d| fs = Some(Tmpfs::mount(&d.state_dir(), "8m")));
    (s, fs.unwrap())
}

#[test]
fn full_state_disk_delivers_mail_sends_no_reply_and_answers_once_space_returns() {
    let (s, fs) = setup_on_tmpfs(Mode::Accept);
    fs.fill();
    assert_eq!(s.request("kim@example.org", "disk-full"), "queued");
    s.daemon.wait_log("so it is not sent", 1);
    let log = s.log();
    assert_eq!(lines_with(&log, &["so it is not sent", "disk is full"]).len(), 1, "{log}");
    s.expect_replies("kim@example.org", 0);
    assert_eq!(s.queued(), 0);

    // Not recorded either: with space back, the sender's next message is answered, once.
    fs.unfill();
    assert_eq!(s.request("kim@example.org", "disk-free"), "queued");
    s.expect_replies("kim@example.org", 1);
    assert_eq!(s.request("kim@example.org", "disk-free-again"), "suppressed (interval)");
    s.expect_replies("kim@example.org", 1);
}

/// The daemon with its state directory on an ext4 image of its own.
fn setup_on_ext4(mode: Mode) -> (Setup, LoopFs) {
    let mut fs = None;
    let s = setup_with(mode, "", |d| fs = Some(LoopFs::mount(&d.state_dir())));
    (s, fs.unwrap())
}

#[test]
fn state_disk_turning_read_only_delivers_mail_and_answers_once_repaired() {
    let (mut s, fs) = setup_on_ext4(Mode::Accept);
    // What the kernel does on a disk error with errors=remount-ro.
    fs.fail_read_only();
    assert_eq!(s.request("leo@example.org", "read-only"), "queued");
    s.daemon.wait_log("so it is not sent", 1);
    let log = s.log();
    assert_eq!(lines_with(&log, &["so it is not sent", "Read-only file system"]).len(), 1, "{log}");
    s.expect_replies("leo@example.org", 0);

    restart_after(&mut s, |_| fs.repair());
    assert_eq!(s.request("leo@example.org", "repaired"), "queued", "{}", s.log());
    s.expect_replies("leo@example.org", 1);
}

#[test]
fn read_only_state_disk_at_start_suppresses_replies_and_mail_flows() {
    let (mut s, fs) = setup_on_tmpfs(Mode::Accept);
    assert_eq!(s.request("lena@example.org", "before-ro-start"), "queued");
    s.expect_replies("lena@example.org", 1);
    restart_after(&mut s, |_| fs.read_only(true));
    expect_store_unavailable(&s, "lars@example.org", "ro-start", "Read-only file system");
}

#[test]
fn state_disk_turning_read_only_with_a_reply_queued_sends_it_once_repaired() {
    let (mut s, fs) = setup_on_ext4(Mode::Down);
    assert_eq!(s.request("mia@example.org", "queued-then-ro"), "queued");
    s.daemon.wait_log("not delivered (attempt 1)", 1);
    fs.fail_read_only();
    s.relay.set_mode(Mode::Accept);
    // Sent now, it could not be removed, and a restart would send it again: it waits.
    s.daemon.wait_log("the outbox cannot be written, so it could not be marked as sent", 1);
    let log = s.log();
    assert!(!lines_with(&log, &["not sent for now", "Read-only file system"]).is_empty(), "{log}");
    s.expect_replies("mia@example.org", 0);
    assert_eq!(s.queued(), 1);

    restart_after(&mut s, |_| fs.repair());
    s.expect_replies("mia@example.org", 1);
    wait_until(PATIENCE, || s.queued() == 0, &|| s.log());
}

/// Stops the daemon, runs `damage` on its state directory, starts it again.
fn restart_after(s: &mut Setup, damage: impl FnOnce(&Path)) {
    assert_eq!(s.daemon.stop(), Some(0), "{}", s.log());
    damage(&s.daemon.state_dir());
    let starts = s.log().matches("listening on").count();
    s.daemon.spawn();
    s.daemon.wait_log("listening on", starts + 1);
}

/// With the store unusable: mail flows, no new reply at all, and the log says why.
fn expect_store_unavailable(s: &Setup, who: &str, subject: &str, problem: &str) {
    s.daemon.wait_log("no auto-reply will be sent until it is fixed", 1);
    let log = s.log();
    assert!(!lines_with(&log, &["the reply state cannot be used", problem]).is_empty(), "{log}");
    let before = s.relay.count_for(who);
    assert_eq!(s.request(who, subject), "suppressed (store)");
    s.expect_replies(who, before);
}

#[test]
fn corrupt_state_store_at_start_suppresses_replies_and_mail_flows() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 3] = [
        ("zeroed", |b| b.iter_mut().for_each(|x| *x = 0)),
        ("garbage", |b| b.iter_mut().enumerate().for_each(|(i, x)| *x = (i * 7919 % 251) as u8)),
        ("truncated", |b| b.truncate(b.len() / 3)),
    ];
    for (name, damage) in damages {
        let mut s = setup(Mode::Accept, "");
        assert_eq!(s.request("olga@example.org", &format!("{name}-before")), "queued");
        s.expect_replies("olga@example.org", 1);
        restart_after(&mut s, |dir| {
            let path = dir.join("store.sqlite");
            let mut bytes = std::fs::read(&path).unwrap();
            damage(&mut bytes);
            std::fs::write(&path, bytes).unwrap();
        });
        expect_store_unavailable(&s, "olga@example.org", &format!("{name}-after"), "store.sqlite");
        // Nobody else either: no reply rather than a possible duplicate.
        expect_store_unavailable(&s, "pete@example.org", &format!("{name}-other"), "store.sqlite");
    }
}

#[test]
fn state_store_corrupted_while_running_never_stops_mail_nor_doubles_a_reply() {
    let mut s = setup(Mode::Accept, "");
    assert_eq!(s.request("quinn@example.org", "before-live-damage"), "queued");
    s.expect_replies("quinn@example.org", 1);
    let path = s.daemon.state_dir().join("store.sqlite");
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::write(&path, vec![0x5a; usize::try_from(len).unwrap()]).unwrap();
    // Decisions are taken in memory: the sender answered is still known.
    assert_eq!(s.request("quinn@example.org", "live-damage"), "suppressed (interval)");
    assert_eq!(s.request("rita@example.org", "live-damage-other"), "queued");
    std::thread::sleep(SETTLE);
    let rita = s.relay.count_for("rita@example.org");
    assert!(rita <= 1);
    // At the next start the store is either usable (redb rewrote what it holds) or refused
    // with the reason; either way mail flows and nobody answered gets a second reply.
    restart_after(&mut s, |_| {});
    for (who, subject) in
        [("quinn@example.org", "after-live-damage"), ("rita@example.org", "after-live-damage-2")]
    {
        let decision = s.request(who, subject);
        assert!(
            decision == "suppressed (interval)" || decision == "suppressed (store)",
            "{decision}\n{}",
            s.log()
        );
    }
    s.expect_replies("quinn@example.org", 1);
    s.expect_replies("rita@example.org", rita);
}

#[test]
fn missing_secret_with_existing_state_suppresses_replies_until_restored() {
    let mut s = setup(Mode::Accept, "");
    assert_eq!(s.request("sam@example.org", "before-secret-loss"), "queued");
    s.expect_replies("sam@example.org", 1);
    let secret = s.daemon.state_dir().join("secret");
    let saved = std::fs::read(&secret).unwrap();
    restart_after(&mut s, |dir| std::fs::remove_file(dir.join("secret")).unwrap());
    // A fresh secret would forget who was answered and answer them again: refused.
    expect_store_unavailable(
        &s,
        "sam@example.org",
        "secret-lost",
        "is missing but the state store holds answered senders",
    );
    assert!(!secret.exists(), "no new secret was made");

    restart_after(&mut s, |dir| std::fs::write(dir.join("secret"), &saved).unwrap());
    assert_eq!(s.request("sam@example.org", "secret-restored"), "suppressed (interval)");
    assert_eq!(s.request("tina@example.org", "secret-restored-other"), "queued");
    s.expect_replies("tina@example.org", 1);
    s.expect_replies("sam@example.org", 1);
}

#[test]
fn unreadable_secret_suppresses_replies_and_mail_flows() {
    let mut s = setup(Mode::Accept, "");
    assert_eq!(s.request("uma@example.org", "before-secret-dir"), "queued");
    s.expect_replies("uma@example.org", 1);
    restart_after(&mut s, |dir| {
        std::fs::remove_file(dir.join("secret")).unwrap();
        std::fs::create_dir(dir.join("secret")).unwrap();
    });
    expect_store_unavailable(&s, "victor@example.org", "secret-dir", "secret");
    assert!(!lines_with(&s.log(), &["cannot read", "secret", "Is a directory"]).is_empty(), "{}", s.log());
}

/// The reply file version: its English subject.
fn version(n: u32) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reply.toml"))
        .unwrap()
        .replace("Test reply v1", &format!("Test reply v{n}"))
}

/// Replaces `path` the way editors and git do: a new file, renamed over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Setup {
    /// Sends a request from a new sender; returns the Subject of its one reply.
    fn reply_subject(&self, who: &str) -> String {
        assert_eq!(self.request(who, &format!("q-{who}")), "queued");
        self.expect_replies(who, 1);
        let d = self.relay.delivered().into_iter().find(|d| d.rcpt_addresses() == [who]).unwrap();
        let text = d.text();
        text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap().trim().to_owned()
    }

    /// Waits for the next refusal of the reply file and checks that it names file and problem.
    fn expect_refusal(&self, n: usize, problem: &str) {
        self.daemon.wait_log("reply file refused, revision", n);
        let log = self.log();
        let text = log.split("reply file refused, revision").nth(n).unwrap();
        let first = text.lines().nth(1).unwrap_or_default();
        assert!(first.contains("reply.toml:") && first.contains(problem), "{problem:?} in:\n{log}");
    }
}

#[test]
fn reply_file_deleted_emptied_or_made_a_directory_keeps_the_last_good_version() {
    let s = setup(Mode::Accept, "");
    let file = s.daemon.reply_file();
    replace(&file, &version(2));
    s.daemon.wait_log("reloaded (revision", 1);
    assert_eq!(s.reply_subject("w1@example.org"), "Test reply v2");

    std::fs::remove_file(&file).unwrap();
    s.expect_refusal(1, "cannot read the reply file");
    assert_eq!(s.reply_subject("w2@example.org"), "Test reply v2");

    std::fs::write(&file, "").unwrap();
    s.expect_refusal(2, "empty");
    assert_eq!(s.reply_subject("w3@example.org"), "Test reply v2");

    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    s.expect_refusal(3, "directory");
    assert_eq!(s.reply_subject("w4@example.org"), "Test reply v2");

    std::fs::remove_dir(&file).unwrap();
    replace(&file, &version(3));
    s.daemon.wait_log("reloaded (revision", 2);
    assert_eq!(s.reply_subject("w5@example.org"), "Test reply v3");
    s.replies_are_well_addressed(&[
        "w1@example.org",
        "w2@example.org",
        "w3@example.org",
        "w4@example.org",
        "w5@example.org",
    ]);
}

#[test]
fn reply_file_swapped_by_symlink_uses_each_valid_version_and_refuses_a_bad_one() {
    let s = setup_with(Mode::Accept, "", |d| {
        let dir = d.dir.path().to_owned();
        for (release, text) in [
            ("r2", version(2)),
            ("r3", version(3).replace("{hot_topics}", "{hot_topic}")),
            ("r4", version(4)),
        ] {
            std::fs::create_dir(dir.join(release)).unwrap();
            std::fs::write(dir.join(release).join("reply.toml"), text).unwrap();
        }
        std::fs::remove_file(d.reply_file()).unwrap();
        std::os::unix::fs::symlink("r2/reply.toml", d.reply_file()).unwrap();
    });
    let swap = |release: &str| {
        let link = s.daemon.dir.path().join("reply.toml.new");
        std::os::unix::fs::symlink(format!("{release}/reply.toml"), &link).unwrap();
        std::fs::rename(&link, s.daemon.reply_file()).unwrap();
    };
    assert_eq!(s.reply_subject("x2@example.org"), "Test reply v2");
    swap("r3");
    s.expect_refusal(1, "hot_topic");
    assert_eq!(s.reply_subject("x3@example.org"), "Test reply v2");
    swap("r4");
    s.daemon.wait_log("reloaded (revision", 1);
    assert_eq!(s.reply_subject("x4@example.org"), "Test reply v4");
}

#[test]
fn reply_file_made_unreadable_is_refused_at_once_and_replies_keep_the_last_good_version() {
    // Root reads any file whatever its mode: run the daemon as nobody.
    let nobody = (65534, 65534);
    let mut s = setup_with(Mode::Accept, "", |d| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(d.state_dir()).unwrap();
        std::os::unix::fs::chown(d.state_dir(), Some(nobody.0), Some(nobody.1)).unwrap();
        d.user = Some(nobody);
    });
    let file = s.daemon.reply_file();
    let chmod = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(0o600);
    s.expect_refusal(1, "Permission denied");
    assert_eq!(s.reply_subject("y1@example.org"), "Test reply v1");
    // Readable again: the same version, nothing to reload; a new valid version is used.
    chmod(0o644);
    replace(&file, &version(2));
    s.daemon.wait_log("reloaded (revision", 1);
    assert_eq!(s.reply_subject("y2@example.org"), "Test reply v2");

    // An unreadable secret, for a daemon that is not root.
    restart_after(&mut s, |dir| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    });
    expect_store_unavailable(&s, "y3@example.org", "secret-0000", "Permission denied");
}

#[test]
fn startup_with_the_reply_file_missing_or_invalid_fails_visibly_and_postfix_passes_mail_on() {
    let port = free_port();
    // milter_default_action = accept, as etc/postfix/main.cf.snippet ships it.
    let rig = PostfixRig::start(RigOptions {
        milter: Some(format!("inet:127.0.0.1:{port}")),
        default_action: "accept".into(),
        ..Default::default()
    });
    let d = Daemon::configure_on(port, "", &[]);
    let run = || Command::new(daemon::BIN).arg("run").arg("--config").arg(&d.config).output().unwrap();

    std::fs::remove_file(d.reply_file()).unwrap();
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("reply.toml:1:1: cannot read the reply file"), "{err}");

    std::fs::write(d.reply_file(), version(1).replace("{hot_topics}", "{hot_topic}")).unwrap();
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("reply.toml:") && err.contains("hot_topic"), "{err}");

    // No daemon: Postfix delivers the mail, untriaged.
    rig.send(Some("zoe@example.org"), &[HELPDESK], &request("zoe@example.org", "no-daemon")).unwrap();
    let m = rig.wait_for_messages(1, PATIENCE);
    assert!(m[0].header("X-HelpDesk-Class").is_empty());
}

#[test]
fn on_error_tempfail_never_holds_mail_for_reply_trouble_and_a_forged_flood_is_refused() {
    let mut s = setup_with(Mode::Down, "", |d| {
        let text = std::fs::read_to_string(&d.config).unwrap();
        let text = text.replace("[milter]\n", "[milter]\non_error = \"tempfail\"\nmax_header_bytes = 1024\n");
        std::fs::write(&d.config, text).unwrap();
    });
    // Reply trouble of every kind at once: relay down, store unusable. Mail is accepted.
    assert_eq!(s.request("ann@example.org", "tempfail-relay-down"), "queued");
    restart_after(&mut s, |dir| std::fs::write(dir.join("store.sqlite"), b"garbage").unwrap());
    expect_store_unavailable(&s, "ben@example.org", "tempfail-store", "store.sqlite");

    // Forged headers too many to remove: refused outright (not tempfailed, which would only
    // delay the same outcome), and the sending server is told why.
    let mut forged = String::new();
    for i in 0..1000 {
        forged.push_str(&format!("X-HelpDesk-Forged-{i:05}: yes\r\n"));
    }
    let message = format!("{forged}{}", String::from_utf8(request("cleo@example.org", "too-many")).unwrap());
    let e = s.rig.send(Some("cleo@example.org"), &[HELPDESK], message.as_bytes()).unwrap_err();
    assert!(e.contains("550") && e.contains("5.7.1") && e.contains("prefixed header"), "{e}");
    assert!(!lines_with(&s.log(), &["rejected", "prefixed header"]).is_empty(), "{}", s.log());
}
