//! Several mail hosts, one Help Desk: two daemons behind two real Postfix rigs share one private
//! PostgreSQL server (tests/support/postgres.rs). One reply per person per interval whichever
//! host the mail reaches, even at the same moment; caps across hosts and restarts; one set of
//! statistics; a host with another secret refused; a server killed or frozen mid-run holds no
//! mail, and is used again once back. Needs root, Postfix and PostgreSQL.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/postfix.rs"]
mod postfix;
#[path = "support/postgres.rs"]
mod postgres;

use daemon::Daemon;
use postfix::{PostfixRig, RigOptions, SinkMessage, free_port};
use postgres::Postgres;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const HELPDESK: &str = "support@tails.net";

/// One mail host: its Postfix and its daemon, which submits its replies back through it.
struct Host {
    rig: PostfixRig,
    daemon: Daemon,
}

/// A host on `db`. With `secret_of`, it gets that host's secret first, as the sysadmin copies
/// it; without, it makes its own.
fn host(db: &Postgres, secret_of: Option<&Host>, autoreply: &str) -> Host {
    let milter_port = free_port();
    // tempfail: a milter that failed or hung would be a visible refusal, not mail passing.
    let rig = PostfixRig::start(RigOptions {
        milter: Some(format!("inet:127.0.0.1:{milter_port}")),
        default_action: "tempfail".into(),
        ..Default::default()
    });
    let extra = format!(
        "{}[autoreply]\nrelay = \"smtp://127.0.0.1:{}\"\nretry_interval = \"1s\"\n{autoreply}\n",
        db.state_toml("250ms"),
        rig.smtpd_port()
    );
    let mut daemon = Daemon::configure_on(milter_port, &extra, &[("HELPDESK_MILTER_LOG", "info")]);
    if let Some(other) = secret_of {
        let dir = daemon.state_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(other.daemon.state_dir().join("secret"), dir.join("secret")).unwrap();
        std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    daemon.spawn();
    // Connected in the background at start (or refused): then the first message does not wait.
    let t0 = Instant::now();
    while !["is in use", "refuses this host"].iter().any(|l| daemon.log().contains(l)) {
        assert!(t0.elapsed() < Duration::from_secs(20), "no connection:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(25));
    }
    Host { rig, daemon }
}

fn request(from: &str, subject: &str) -> Vec<u8> {
    format!("From: {from}\r\nTo: {HELPDESK}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.org>\r\n\r\nhello\r\n")
        .into_bytes()
}

fn is_reply(m: &SinkMessage) -> bool {
    m.header("Auto-Submitted") == vec!["auto-replied"]
}

impl Host {
    fn send(&self, from: &str, subject: &str) {
        self.rig.send(Some(from), &[HELPDESK], &request(from, subject)).unwrap();
    }

    /// The `X-HelpDesk-Autoreply` of the delivered message with `subject`.
    fn decision(&self, subject: &str) -> String {
        let t0 = Instant::now();
        loop {
            let found = self.rig.messages().into_iter().find(|m| m.header("Subject") == vec![subject]);
            if let Some(m) = found {
                return m.header("X-HelpDesk-Autoreply").join(",");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{subject} not delivered:\n{}",
                self.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn replies_to(&self, who: &str) -> usize {
        let rcpt = format!("<{who}>");
        self.rig.messages().iter().filter(|m| is_reply(m) && m.rcpts() == vec![rcpt.clone()]).count()
    }
}

/// Waits until the replies to `who` at both hosts' sinks reach `n`; a moment more, to see that
/// no other follows; returns them.
fn replies(hosts: [&Host; 2], who: &str, n: usize) -> usize {
    let count = || hosts.iter().map(|h| h.replies_to(who)).sum::<usize>();
    let t0 = Instant::now();
    while count() < n {
        assert!(t0.elapsed() < Duration::from_secs(30), "{} replies to {who}, want {n}", count());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    count()
}

#[test]
fn two_hosts_answer_each_person_once_and_count_together() {
    let db = Postgres::start();
    let a = host(&db, None, "");
    let b = host(&db, Some(&a), "");
    a.send("alice@example.org", "alice-1");
    assert_eq!(a.decision("alice-1"), "queued");
    b.send("alice@example.org", "alice-2");
    assert_eq!(b.decision("alice-2"), "suppressed (interval)");
    assert_eq!(replies([&a, &b], "alice@example.org", 1), 1, "one reply, from host A");

    // The same person through both hosts at the same moment: one reply.
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        for (h, subject) in [(&a, "bob-a"), (&b, "bob-b")] {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                h.send("bob@example.org", subject);
            });
        }
    });
    let mut both = [a.decision("bob-a"), b.decision("bob-b")];
    both.sort();
    assert_eq!(both, ["queued", "suppressed (interval)"]);
    assert_eq!(replies([&a, &b], "bob@example.org", 1), 1);

    // `stats` on either host shows the whole Help Desk: the four messages of both.
    for h in [&a, &b] {
        let json = h.daemon.wait_stats(4);
        assert_eq!(daemon::stats_total(&json), 4, "{json}");
    }
    // The hosts keep their secret and outbox; the state is on the server.
    for h in [&a, &b] {
        assert!(!h.daemon.state_dir().join("store.sqlite").exists());
        assert!(h.daemon.state_dir().join("secret").exists());
    }
    assert!(a.daemon.log().contains("is in use"), "{}", a.daemon.log());
}

#[test]
fn caps_hold_across_hosts_and_a_restart() {
    let db = Postgres::start();
    let caps = "max_per_hour = 3\nmax_per_domain_per_hour = 1\n";
    let mut a = host(&db, None, caps);
    let mut b = host(&db, Some(&a), caps);
    a.send("d1@same.org", "d1");
    assert_eq!(a.decision("d1"), "queued");
    b.send("d2@same.org", "d2");
    assert_eq!(b.decision("d2"), "suppressed (cap)", "the domain's reply of host A counts on B");
    b.send("e@other.org", "e");
    assert_eq!(b.decision("e"), "queued");
    a.daemon.restart();
    a.send("f@third.org", "f");
    assert_eq!(a.decision("f"), "queued");
    a.send("g@fourth.org", "g");
    assert_eq!(a.decision("g"), "suppressed (cap)", "three replies this hour, on both hosts");
    b.daemon.restart();
    b.send("h@fifth.org", "h");
    assert_eq!(b.decision("h"), "suppressed (cap)", "and after a restart");
}

#[test]
fn a_host_with_another_secret_is_refused_and_its_mail_flows() {
    let db = Postgres::start();
    let a = host(&db, None, "");
    a.send("ann@example.org", "ann-1");
    assert_eq!(a.decision("ann-1"), "queued");
    // B was started without the copy of A's secret: it made its own.
    let b = host(&db, None, "");
    b.send("ben@example.org", "ben-1");
    assert_eq!(b.decision("ben-1"), "suppressed (store)");
    let log = b.daemon.log();
    assert!(log.contains("refuses this host") && log.contains("copy the file `secret`"), "{log}");
    assert_eq!(log.matches("refuses this host").count(), 1, "said once:\n{log}");
}

/// Sends requests from fresh senders through `h` until one is answered: the store is back.
fn until_queued(h: &Host, tag: &str) -> usize {
    for i in 0..40 {
        let subject = format!("{tag}-{i}");
        h.send(&format!("{tag}{i}@example.org"), &subject);
        if h.decision(&subject) == "queued" {
            return i + 1;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the shared store was not used again:\n{}", h.daemon.log());
}

#[test]
fn a_killed_server_holds_no_mail_and_is_used_again_without_a_restart() {
    let mut db = Postgres::start();
    let a = host(&db, None, "");
    a.send("early@example.org", "early");
    assert_eq!(a.decision("early"), "queued");
    db.kill();
    for i in 0..3 {
        let subject = format!("down-{i}");
        a.send(&format!("down{i}@example.org"), &subject);
        assert_eq!(a.decision(&subject), "suppressed (store)", "delivered and triaged, no reply");
    }
    let log = a.daemon.log();
    assert_eq!(log.matches("cannot be used").count(), 1, "one warning for the outage:\n{log}");
    db.start_again();
    let sent = until_queued(&a, "back");
    assert!(a.daemon.log().contains("is in use"));
    // The counts of the outage were kept and written once the server was back.
    let total = 1 + 3 + sent as u64;
    assert_eq!(daemon::stats_total(&a.daemon.wait_stats(total)), total, "{}", a.daemon.log());
}

#[test]
fn a_frozen_server_holds_no_mail() {
    let mut db = Postgres::start();
    let a = host(&db, None, "");
    a.send("early@example.org", "early");
    assert_eq!(a.decision("early"), "queued");
    db.pause();
    // Each message is delivered while the server still answers nothing: none waited for it
    // past the timeout (the rig would have refused it, tempfail, had the milter hung).
    for i in 0..4 {
        let subject = format!("frozen-{i}");
        a.send(&format!("frozen{i}@example.org"), &subject);
        assert_eq!(a.decision(&subject), "suppressed (store)");
    }
    db.resume();
    until_queued(&a, "thawed");
    // No reservation was left by the calls the milter gave up on: those senders are answered.
    a.send("frozen0@example.org", "frozen-again");
    assert_eq!(a.decision("frozen-again"), "queued");
}
