//! The writers' privacy, end to end through a real Postfix: after a mix of mail (requests that
//! are answered, a follow-up, a WhisperBack report, a bounce, a reply the relay refuses), no log
//! line at info level or above, no file in the state directory and no triage header holds an
//! address, a display name, a Subject, a Message-ID or a word of a body (the statistics included).
//! The same with the shared store: nothing of it on the server's tables either. Needs root,
//! Postfix and PostgreSQL.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/postfix.rs"]
mod postfix;
#[path = "support/postgres.rs"]
mod postgres;

use daemon::Daemon;
use postfix::{PostfixRig, RigOptions, SinkMessage, free_port};
use postgres::Postgres;
use std::path::Path;
use std::time::{Duration, Instant};

const HELPDESK: &str = "support@tails.net";

/// Strings that identify the writers or quote their mail. Each is distinctive enough that
/// finding it anywhere can only mean it was copied there.
const SECRETS: &[&str] = &[
    "quixote.writer",
    "private-example.org",
    "Quixote Writer",
    "sancho",
    "windmills-subject",
    "Dulcinea",
    "rocinante-msgid",
    "barataria",
    "Tobosodiacritic",
    "quixote.bounce",
];

fn crlf(s: &str) -> Vec<u8> {
    s.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

/// Every message of the run: (envelope sender, message).
fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let whisperback =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/whisperback-sample.eml")).unwrap();
    vec![
        // A new request, answered; its Subject and body name a topic.
        (
            "quixote.writer@private-example.org",
            crlf(
                "From: Quixote Writer <quixote.writer@private-example.org>\nTo: support@tails.net\n\
                 Subject: windmills-subject nvidia black screen\n\
                 Message-ID: <rocinante-msgid.1@private-example.org>\n\n\
                 Dear Dulcinea, my nvidia laptop at barataria shows a black screen.\n",
            ),
        ),
        // An encoded-word Subject and display name, answered.
        (
            "Sancho@Private-Example.ORG",
            crlf(
                "From: =?utf-8?q?Sancho_Tobosodiacritic_=C3=A9?= <Sancho@Private-Example.ORG>\n\
                 To: support@tails.net\nSubject: =?utf-8?b?d2luZG1pbGxzLXN1YmplY3Qgw6k=?=\n\
                 Message-ID: <rocinante-msgid.2@private-example.org>\n\nbarataria realtek\n",
            ),
        ),
        // A follow-up in a thread: not answered.
        (
            "quixote.writer@private-example.org",
            crlf(
                "From: quixote.writer@private-example.org\nTo: support@tails.net\n\
                 Subject: Re: windmills-subject\nIn-Reply-To: <rocinante-msgid.1@private-example.org>\n\
                 Message-ID: <rocinante-msgid.3@private-example.org>\n\nDulcinea again\n",
            ),
        ),
        // A bounce about one of our replies: null sender, never answered.
        (
            "",
            crlf(
                "From: MAILER-DAEMON@private-example.org\nTo: support@tails.net\n\
                 Subject: Undelivered Mail Returned to Sender windmills-subject\n\
                 Message-ID: <rocinante-msgid.4@private-example.org>\n\n\
                 <quixote.bounce@private-example.org>: host barataria said: 550 unknown user\n",
            ),
        ),
        // A request whose reply the relay refuses (the relay's text quotes the address).
        (
            "quixote.bounce@private-example.org",
            crlf(
                "From: quixote.bounce@private-example.org\nTo: support@tails.net\n\
                 Subject: windmills-subject\nMessage-ID: <rocinante-msgid.5@private-example.org>\n\nsancho\n",
            ),
        ),
        ("devnull@tails.boum.org", whisperback),
    ]
}

fn find_secret(haystack: &[u8]) -> Option<&'static str> {
    let hay = String::from_utf8_lossy(haystack).to_lowercase();
    SECRETS.iter().copied().find(|s| hay.contains(&s.to_lowercase()))
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { files_under(&p, out) } else { out.push(p) }
    }
}

fn is_reply(m: &SinkMessage) -> bool {
    m.header("Auto-Submitted") == vec!["auto-replied"]
}

#[test]
fn no_address_subject_or_content_in_logs_state_or_headers() {
    scan(None);
}

#[test]
fn no_address_subject_or_content_on_the_shared_server() {
    scan(Some(&Postgres::start()));
}

/// Sends the mix through a rig and a daemon (on `db`'s shared store, if given) and scans what
/// they keep.
fn scan(db: Option<&Postgres>) {
    let milter_port = free_port();
    // The relay is the rig's smtpd with the milter; it refuses one recipient, quoting it.
    let rig = PostfixRig::start(RigOptions {
        milter: Some(format!("inet:127.0.0.1:{milter_port}")),
        extra_main_cf: vec![(
            "smtpd_recipient_restrictions".into(),
            "check_recipient_access inline:{ { quixote.bounce@private-example.org = 550 5.1.1 \
             <quixote.bounce@private-example.org>: no such user } }, permit_mynetworks, \
             reject_unauth_destination"
                .into(),
        )],
        ..Default::default()
    });
    let state = db.map(|db| db.state_toml("1s")).unwrap_or_default();
    let daemon = Daemon::start_with_env(
        &format!(
            "{state}[autoreply]\nrelay = \"smtp://127.0.0.1:{}\"\nretry_interval = \"1s\"",
            rig.smtpd_port()
        ),
        &[("HELPDESK_MILTER_LOG", "info")],
    );
    // start_with_env picks its own port: point the rig at it.
    rig.set_main_cf("smtpd_milters", &daemon.milter_address());
    let msgs = messages();
    for (sender, message) in &msgs {
        rig.send(Some(sender), &[HELPDESK], message).unwrap();
    }
    // Every message arrives, and the two answerable requests get their replies; the third is
    // refused by the relay and dropped.
    let all = rig.wait_for_messages(msgs.len() + 2, Duration::from_secs(60));
    let t0 = Instant::now();
    while !daemon.log().contains("dropped") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the refused reply was not dropped:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let replies: Vec<&SinkMessage> = all.iter().filter(|m| is_reply(m)).collect();
    assert_eq!(replies.len(), 2, "two replies");
    daemon.wait_log("triaged", msgs.len());

    // The log: info level, so every line is at info or above.
    let log = daemon.log();
    assert!(log.contains("triaged") && log.contains("reply queued"), "{log}");
    for line in log.lines() {
        assert_eq!(find_secret(line.as_bytes()), None, "the log line quotes a writer: {line}");
    }

    // Every file the daemon keeps: the state store, its secret, the outbox (empty once sent), the
    // statistics (written off the milter's path: wait until they count every message).
    let counted = daemon::stats_total(&daemon.wait_stats(msgs.len() as u64));
    assert_eq!(counted, msgs.len() as u64, "statistics:\n{}", daemon.log());
    let mut files = Vec::new();
    files_under(&daemon.state_dir(), &mut files);
    let kept: &[&str] = if db.is_some() { &["secret"] } else { &["store.sqlite", "secret"] };
    for name in kept {
        assert!(files.iter().any(|f| f.file_name().is_some_and(|n| n == *name)), "{name}: {files:?}");
    }
    for f in &files {
        assert_eq!(find_secret(&std::fs::read(f).unwrap()), None, "{} holds a writer's data", f.display());
    }
    if let Some(db) = db {
        // Every row of every table of the server: keyed hashes, times, counts, topic ids.
        let dump = db.dump_all();
        assert!(dump.contains("== writers") && dump.contains("== messages"), "{dump}");
        assert_eq!(find_secret(dump.as_bytes()), None, "the server holds a writer's data:\n{dump}");
    }

    // The triage headers of every delivered message: only our fixed words.
    let incoming: Vec<&SinkMessage> = all.iter().filter(|m| !is_reply(m)).collect();
    assert_eq!(incoming.len(), msgs.len());
    for m in incoming {
        let ours: Vec<(String, String)> = m
            .headers()
            .into_iter()
            .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-helpdesk-"))
            .collect();
        assert!(ours.iter().any(|(n, _)| n == "X-HelpDesk-Class"), "{ours:?}");
        for (name, value) in ours {
            assert_eq!(find_secret(value.as_bytes()), None, "{name}: {value}");
        }
    }
    // The check can fail: the messages themselves carry the secrets.
    assert!(all.iter().any(|m| find_secret(&m.raw).is_some()));
}
