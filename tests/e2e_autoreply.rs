//! End to end: auto-replies through a real Postfix on loopback. Needs root and Postfix.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/mail_host.rs"]
mod mail_host;
#[path = "support/postfix.rs"]
mod postfix;

use daemon::Daemon;
use mail_host::rig_and_daemon;
use postfix::{PostfixRig, RigOptions, SinkMessage, free_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HELPDESK: &str = "support@tails.net";

fn crlf(s: &str) -> Vec<u8> {
    s.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

fn request(from: &str, subject: &str, body: &str) -> Vec<u8> {
    crlf(&format!(
        "From: {from}\nTo: support@tails.net\nSubject: {subject}\nMessage-ID: <{}.{}@example.org>\n\n{body}\n",
        subject.replace(' ', "-"),
        std::process::id()
    ))
}

fn is_reply(m: &SinkMessage) -> bool {
    m.header("Auto-Submitted") == vec!["auto-replied"]
}

fn replies(rig: &PostfixRig) -> Vec<SinkMessage> {
    rig.messages().into_iter().filter(is_reply).collect()
}

/// Waits until `n` replies arrived at the rig's sink.
fn wait_replies(rig: &PostfixRig, n: usize, daemon: &Daemon) -> Vec<SinkMessage> {
    let t0 = Instant::now();
    loop {
        let r = replies(rig);
        if r.len() >= n {
            return r;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{} replies, want {n}\n{}", r.len(), daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_new_request_gets_exactly_one_well_formed_reply_and_a_second_gets_none() {
    let (rig, daemon) = rig_and_daemon("");
    rig.send(
        Some("alice@example.org"),
        &[HELPDESK],
        &request("Alice <alice@example.org>", "help nvidia", "black screen"),
    )
    .unwrap();
    let r = wait_replies(&rig, 1, &daemon);
    let reply = &r[0];
    assert_eq!(reply.mail_from(), "<>", "null envelope sender");
    assert_eq!(reply.rcpts(), vec!["<alice@example.org>"], "exactly the envelope sender");
    assert_eq!(reply.header("Subject"), vec!["Test reply v1"]);
    assert_eq!(reply.header("Precedence"), vec!["bulk"]);
    assert_eq!(reply.header("X-Auto-Response-Suppress"), vec!["All"]);
    assert_eq!(reply.header("X-Loop"), vec![HELPDESK]);
    assert_eq!(reply.header("Content-Language"), vec!["en"]);
    assert_eq!(reply.header("In-Reply-To").len(), 1);
    assert_eq!(reply.header("References").len(), 1);
    assert_eq!(reply.header("To"), vec!["\"Alice\" <alice@example.org>"]);
    assert!(!reply.header("Message-ID").is_empty() && !reply.header("Date").is_empty());
    let body = String::from_utf8_lossy(reply.body()).replace("=\n", "");
    assert!(body.contains("Black screen with NVIDIA graphics"), "{body}");
    assert!(!body.contains("black screen\n"), "nothing quoted from the request");
    // The reply went through the milter and was not triaged as a request (it is not to us) ...
    assert!(reply.header("X-HelpDesk-Class").is_empty());
    // ... and Postfix queued it with a null sender.
    assert!(rig.maillog().contains("from=<>"), "{}", rig.maillog());

    // The incoming request carries the decision and the topic.
    let incoming: Vec<SinkMessage> = rig.messages().into_iter().filter(|m| !is_reply(m)).collect();
    assert_eq!(incoming[0].header("X-HelpDesk-Autoreply"), vec!["queued"]);
    assert_eq!(incoming[0].header("X-HelpDesk-Topic"), vec!["nvidia-black-screen"]);

    // A second request within the interval: delivered, not answered.
    rig.send(Some("alice@example.org"), &[HELPDESK], &request("alice@example.org", "again", "still broken"))
        .unwrap();
    let all = rig.wait_for_messages(3, Duration::from_secs(30));
    let second = all.iter().find(|m| m.header("Subject") == vec!["again"]).unwrap();
    assert_eq!(second.header("X-HelpDesk-Autoreply"), vec!["suppressed (interval)"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replies(&rig).len(), 1, "no second reply");
    // Nothing identifying in the log at info level.
    assert!(!daemon.log().contains("alice"), "{}", daemon.log());
}

#[test]
fn an_edit_of_the_reply_file_is_live_and_an_invalid_edit_is_refused() {
    let (rig, daemon) = rig_and_daemon("");
    let file = daemon.reply_file();
    let text = std::fs::read_to_string(&file).unwrap();

    // A valid edit, written the way editors and git do: new file, then rename over the old one.
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text.replace("Test reply v1", "Test reply v2")).unwrap();
    let t0 = Instant::now();
    std::fs::rename(&tmp, &file).unwrap();
    daemon.wait_log("reloaded (revision", 1);
    assert!(t0.elapsed() < Duration::from_secs(2), "live within 2 seconds: {:?}", t0.elapsed());
    rig.send(Some("bob@example.org"), &[HELPDESK], &request("bob@example.org", "q1", "hello")).unwrap();
    assert_eq!(wait_replies(&rig, 1, &daemon)[0].header("Subject"), vec!["Test reply v2"]);

    // An invalid edit in place (an unknown placeholder): refused, the v2 text stays.
    std::fs::write(
        &file,
        text.replace("Test reply v1", "Test reply v3").replace("{hot_topics}", "{hot_topic}"),
    )
    .unwrap();
    daemon.wait_log("reply file refused", 1);
    assert!(daemon.log().contains("reply.toml:"), "the refusal names file and line:\n{}", daemon.log());
    // The refusal names the revision that stays in use (issue 12, point 13).
    let v2 =
        helpdesk_milter::reply_file::ReplyFile::parse(&file, &text.replace("Test reply v1", "Test reply v2"))
            .unwrap()
            .revision;
    assert!(daemon.log().contains(&format!("revision {v2} stays in use")), "{}", daemon.log());
    rig.send(Some("carol@example.org"), &[HELPDESK], &request("carol@example.org", "q2", "hello")).unwrap();
    let r = wait_replies(&rig, 2, &daemon);
    assert!(r.iter().all(|m| m.header("Subject") != vec!["Test reply v3"]));
    assert_eq!(r.iter().filter(|m| m.header("Subject") == vec!["Test reply v2"]).count(), 2);
    // A valid version after the refused one says so.
    std::fs::write(&tmp, text.replace("Test reply v1", "Test reply v4")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    daemon.wait_log("a valid version replaces the refused one", 1);
}

/// An smtp-sink the test starts and stops: a relay that can be down.
struct Relay {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Relay {
    fn new(dir: &Path) -> Relay {
        let dir = dir.join("relay-sink");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Command::new("chown").arg("postfix").arg(&dir).status().unwrap().success());
        Relay { port: free_port(), dir, child: None }
    }

    fn start(&mut self) {
        let child = Command::new("smtp-sink")
            .args(["-u", "postfix", "-c", "-d"])
            .arg(self.dir.join("%Y%m%d%H%M%S."))
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("100")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn messages(&self) -> Vec<SinkMessage> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if e.path().is_file() {
                out.push(SinkMessage { path: e.path(), raw: std::fs::read(e.path()).unwrap() });
            }
        }
        out
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn with_the_relay_down_the_reply_waits_and_arrives_after_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let mut relay = Relay::new(work.path());
    let rig = PostfixRig::start(RigOptions {
        milter: None,
        default_action: "tempfail".into(),
        ..Default::default()
    });
    let milter_port = free_port();
    rig.set_main_cf("smtpd_milters", &format!("inet:127.0.0.1:{milter_port}"));
    let mut daemon = Daemon::start_on(
        milter_port,
        &format!("[autoreply]\nrelay = \"smtp://127.0.0.1:{}\"\nretry_interval = \"1s\"", relay.port),
    );
    rig.send(Some("dave@example.org"), &[HELPDESK], &request("dave@example.org", "q", "hello")).unwrap();
    daemon.wait_log("reply queued", 1);
    // The relay refuses connections: the reply is kept in the outbox and retried.
    let outbox = daemon.state_dir().join("outbox");
    let t0 = Instant::now();
    while !daemon.log().contains("127.0.0.1:") || !daemon.log().to_lowercase().contains("retry") {
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let queued = || std::fs::read_dir(&outbox).unwrap().flatten().filter(|e| e.path().is_file()).count();
    assert_eq!(queued(), 1);

    // The daemon restarts while the reply waits; then the relay comes back.
    daemon.restart();
    relay.start();
    let t0 = Instant::now();
    while relay.messages().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(30), "reply never arrived:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let got = relay.messages();
    assert_eq!(got.len(), 1, "exactly once");
    assert_eq!(got[0].mail_from(), "<>");
    assert_eq!(got[0].rcpts(), vec!["<dave@example.org>"]);
    assert!(
        String::from_utf8_lossy(&got[0].raw).contains("NOTIFY=NEVER"),
        "{}",
        String::from_utf8_lossy(&got[0].raw)
    );
    assert_eq!(queued(), 0, "the outbox is empty once sent");
}

#[test]
fn two_concurrent_messages_from_one_sender_get_one_reply() {
    let (rig, daemon) = rig_and_daemon("");
    std::thread::scope(|s| {
        for i in 0..2 {
            let rig = &rig;
            s.spawn(move || {
                rig.send(
                    Some("erin@example.org"),
                    &[HELPDESK],
                    &request("erin@example.org", &format!("c{i}"), "x"),
                )
                .unwrap()
            });
        }
    });
    rig.wait_for_messages(3, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replies(&rig).len(), 1, "{}", daemon.log());
    let decisions: Vec<String> = rig
        .messages()
        .iter()
        .filter(|m| !is_reply(m))
        .flat_map(|m| m.header("X-HelpDesk-Autoreply"))
        .collect();
    assert_eq!(decisions.iter().filter(|d| *d == "queued").count(), 1, "{decisions:?}");
    assert_eq!(decisions.iter().filter(|d| *d == "suppressed (interval)").count(), 1, "{decisions:?}");
}

/// The settings of etc/postfix/main.cf.snippet, with the daemon's test port for the example's.
fn snippet_settings(milter: &str) -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/postfix/main.cf.snippet")).unwrap();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.trim().to_string(), v.trim().replace("inet:127.0.0.1:8894", milter))
        })
        .collect()
}

#[test]
fn the_shipped_postfix_snippet_triages_and_carries_the_replies() {
    let milter_port = free_port();
    let settings = snippet_settings(&format!("inet:127.0.0.1:{milter_port}"));
    assert!(settings.iter().any(|(k, v)| k == "milter_default_action" && v == "accept"), "{settings:?}");
    let mut opts = RigOptions { milter: None, default_action: "accept".into(), ..Default::default() };
    opts.extra_main_cf = settings;
    let rig = PostfixRig::start(opts);
    let daemon = Daemon::start_on(
        milter_port,
        &format!("[autoreply]\nrelay = \"smtp://127.0.0.1:{}\"", rig.smtpd_port()),
    );
    rig.send(Some("frank@example.org"), &[HELPDESK], &request("frank@example.org", "snippet", "hello"))
        .unwrap();
    let r = wait_replies(&rig, 1, &daemon);
    assert_eq!(r[0].mail_from(), "<>");
    let incoming: Vec<SinkMessage> = rig.messages().into_iter().filter(|m| !is_reply(m)).collect();
    assert_eq!(incoming[0].header("X-HelpDesk-Class"), vec!["support"]);

    // With the daemon stopped, milter_default_action = accept still delivers, untriaged.
    drop(daemon);
    rig.send(Some("frank@example.org"), &[HELPDESK], &request("frank@example.org", "down", "hello")).unwrap();
    let all = rig.wait_for_messages(3, Duration::from_secs(30));
    let down = all.iter().find(|m| m.header("Subject") == vec!["down"]).unwrap();
    assert!(down.header("X-HelpDesk-Class").is_empty());
}
