//! `helpdesk-milter stats` after mail has flowed through a real Postfix and the daemon: the counts
//! per class and topic are those of the mail sent, `stats` reads them while the daemon runs (and
//! writes), in every format and as a chart, and the statistics hold nothing that identifies a
//! writer. Needs root and Postfix.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/postfix.rs"]
mod postfix;

use daemon::{BIN, Daemon, SilentRelay, stats_sums as sum, stats_total as total};
use postfix::{PostfixRig, RigOptions, free_port};
use std::process::Command;
use std::time::{Duration, Instant};

const HELPDESK: &str = "support@tails.net";

fn crlf(s: &str) -> Vec<u8> {
    s.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

/// A request from `who`, with `words` in its body.
fn request(who: &str, n: usize, words: &str) -> (String, Vec<u8>) {
    let sender = format!("{who}@writers-example.org");
    let msg = crlf(&format!(
        "From: {sender}\nTo: {HELPDESK}\nSubject: secret-subject-{n}\nMessage-ID: <secret-msgid-{n}@writers-example.org>\n\n\
         Hello, {words}. Regards.\n"
    ));
    (sender, msg)
}

/// The mail of the run and what `stats` must count: (envelope sender, recipients, message).
fn mail() -> Vec<(String, Vec<&'static str>, Vec<u8>)> {
    let whisperback =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/whisperback-sample.eml")).unwrap();
    let mut out = Vec::new();
    let mut add = |(s, m): (String, Vec<u8>)| out.push((s, vec![HELPDESK], m));
    // Six new requests: three about wifi-realtek, two about nvidia-black-screen (one of them
    // about both), one about nothing known.
    add(request("alice", 1, "my realtek card"));
    add(request("bob", 2, "the realtek wifi"));
    add(request("carol", 3, "realtek and a black screen"));
    add(request("dave", 4, "nvidia driver"));
    add(request("erin", 5, "a sound problem"));
    add(request("frank", 6, "realtek again"));
    // A follow-up in alice's thread.
    add((
        "alice@writers-example.org".into(),
        crlf(
            "From: alice@writers-example.org\nTo: support@tails.net\nSubject: Re: secret-subject-1\n\
             In-Reply-To: <secret-msgid-1@writers-example.org>\nMessage-ID: <secret-msgid-7@writers-example.org>\n\nthanks\n",
        ),
    ));
    // Two WhisperBack reports, a bounce, a spam, a team mail.
    add(("devnull@tails.boum.org".into(), whisperback.clone()));
    add(("devnull@tails.boum.org".into(), whisperback));
    add((
        String::new(),
        crlf(
            "From: MAILER-DAEMON@writers-example.org\nTo: support@tails.net\nSubject: Undelivered Mail\n\
             Message-ID: <secret-msgid-8@writers-example.org>\n\n<grace@writers-example.org>: unknown user\n",
        ),
    ));
    add((
        "spammer@writers-example.org".into(),
        crlf(
            "From: spammer@writers-example.org\nTo: support@tails.net\nSubject: secret-subject-9\n\
             X-Spam-Flag: YES\nMessage-ID: <secret-msgid-9@writers-example.org>\n\nbuy realtek\n",
        ),
    ));
    add((
        "sysadmin@tails.net".into(),
        crlf(
            "Authentication-Results: mx.tails.net; dkim=pass header.d=tails.net\nFrom: sysadmin@tails.net\nTo: support@tails.net\nSubject: secret-subject-10\n\
             Message-ID: <secret-msgid-10@tails.net>\n\nthe mirror is down\n",
        ),
    ));
    // Not for the Help Desk: passes untouched and is not counted.
    out.push((
        "heidi@writers-example.org".into(),
        vec!["someone@elsewhere-example.org"],
        crlf(
            "From: heidi@writers-example.org\nTo: someone@elsewhere-example.org\nSubject: secret-subject-11\n\
             Message-ID: <secret-msgid-11@writers-example.org>\n\nrealtek\n",
        ),
    ));
    out
}

const EXPECTED_CLASSES: &[(&str, u64)] =
    &[("support", 6), ("followup", 1), ("whisperback", 2), ("automated", 1), ("spam", 1), ("team", 1)];
const EXPECTED_TOPICS: &[(&str, u64)] = &[("wifi-realtek", 4), ("nvidia-black-screen", 2)];
const COUNTED: u64 = 12;

/// Strings that would identify a writer or quote their mail.
const SECRETS: &[&str] = &["writers-example", "alice", "secret-subject", "secret-msgid", "sysadmin", "grace"];

fn stats(daemon: &Daemon, args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("stats").arg("-c").arg(&daemon.config).args(args).output().unwrap()
}

#[test]
fn counts_after_mail_through_postfix_match_what_was_sent() {
    let milter_port = free_port();
    let rig = PostfixRig::start(RigOptions {
        milter: Some(format!("inet:127.0.0.1:{milter_port}")),
        ..Default::default()
    });
    let relay = SilentRelay::new();
    // Team mail is trusted on a verifier's DKIM pass here: the rig has no SASL.
    let daemon = Daemon::start_on(
        milter_port,
        &format!(
            "[helpdesk]\nteam_trust = [\"dkim\"]\ntrusted_authserv_ids = [\"mx.tails.net\"]\n[autoreply]\nrelay = \"{}\"",
            relay.url()
        ),
    );

    // No statistics yet: an empty report, not an error.
    let empty = daemon.stats(&[]);
    assert_eq!(total(&empty), 0);
    assert_eq!(empty["weeks"].as_array().unwrap().len(), 8, "the last 8 weeks by default");

    // `stats` reads while the daemon writes: run it over and over while the mail flows.
    let reader = {
        let config = daemon.config.clone();
        std::thread::spawn(move || {
            let mut runs = 0;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(4) {
                let out =
                    Command::new(BIN).args(["stats", "--format", "csv", "-c"]).arg(&config).output().unwrap();
                assert!(
                    out.status.success(),
                    "stats failed mid-run: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += 1;
            }
            runs
        })
    };
    let mail = mail();
    for (sender, rcpts, message) in &mail {
        rig.send(Some(sender), rcpts, message).unwrap();
    }
    rig.wait_for_messages(mail.len(), Duration::from_secs(60));
    daemon.wait_log("triaged", COUNTED as usize);
    let runs = reader.join().unwrap();
    assert!(runs > 1, "stats ran {runs} times while the daemon wrote");

    // The writer batches off the milter's path: wait for the last rows to land.
    let json = daemon.wait_stats(COUNTED);
    assert_eq!(total(&json), COUNTED, "{json:#}");
    assert_eq!(
        sum(&json, "classes"),
        EXPECTED_CLASSES.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
        "{json:#}"
    );
    assert_eq!(sum(&json, "topics"), EXPECTED_TOPICS.iter().map(|(t, n)| (t.to_string(), *n)).collect());
    assert_eq!(sum(&json, "autoreply")["queued"], 6, "one reply per new sender: {json:#}");
    // Every WhisperBack sample is encrypted.
    let encrypted: u64 =
        json["weeks"].as_array().unwrap().iter().map(|w| w["encrypted"].as_u64().unwrap()).sum();
    assert_eq!(encrypted, 2);

    // --topic restricts the counts to the messages about it.
    let about = daemon.stats(&["--topic", "nvidia-black-screen"]);
    assert_eq!(total(&about), 2);
    assert_eq!(sum(&about, "classes")["support"], 2);

    // The table and the CSV say the same.
    let table = String::from_utf8(stats(&daemon, &[]).stdout).unwrap();
    assert!(table.contains("wifi-realtek") && table.contains("whisperback"), "{table}");
    let csv = String::from_utf8(stats(&daemon, &["--format", "csv"]).stdout).unwrap();
    let csv_sum = |kind: &str, name: &str| -> u64 {
        csv.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f[1] == kind && f[2] == name)
            .map(|f| f[3].parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(csv_sum("class", "support"), 6, "{csv}");
    assert_eq!(csv_sum("topic", "wifi-realtek"), 4, "{csv}");

    // A week later (as if today were next week's Monday, with K = 1), the topics reported at least
    // twice this week are named frequent, since this week.
    let next_monday = date_u(&["-d", "next monday", "+%F"]);
    let later = daemon.stats(&["--today", &next_monday, "--frequent-weeks", "1", "--since", &this_week()]);
    let frequent: Vec<&str> =
        later["frequent"].as_array().unwrap().iter().map(|f| f["topic"].as_str().unwrap()).collect();
    if total(&later) == COUNTED {
        // (Unless the run straddled a week boundary.)
        assert_eq!(frequent, vec!["wifi-realtek", "nvidia-black-screen"], "{later:#}");
        assert_eq!(later["frequent"][0]["since"], this_week());
        assert_eq!(later["frequent"][0]["weekly_average"], 4.0);
    }

    // The chart.
    let svg = daemon.dir.path().join("stats.svg");
    let out = stats(&daemon, &["--plot", svg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("wifi-realtek (4)") && chart.contains("support (6)"));

    // Nothing in the statistics identifies a writer.
    // The store and its write-ahead log, where the newest rows are until a checkpoint.
    let mut store = std::fs::read(daemon.state_dir().join("store.sqlite")).unwrap();
    store.extend(std::fs::read(daemon.state_dir().join("store.sqlite-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&store).to_lowercase();
    for s in SECRETS {
        assert!(!text.contains(s), "store.sqlite holds {s:?}");
    }
    assert!(text.contains("wifi-realtek"), "the scan can fail: the store holds its rows in clear");

    // The counts outlive the daemon.
    let mut daemon = daemon;
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(total(&daemon.stats(&[])), COUNTED);
}

#[test]
fn bad_arguments_are_one_clear_line() {
    let daemon = Daemon::start("");
    for (args, says) in [
        (&["--since", "last tuesday"][..], "is neither a week"),
        (&["--weeks", "0"][..], "from 1 to 520"),
        (&["--topic", "Wi Fi"][..], "a topic id is"),
        (&["--today", "2026-13-01"][..], "not a date"),
        (&["--since", "2999-W01"][..], "has not begun"),
    ] {
        let out = stats(&daemon, args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && err.lines().count() == 1, "{args:?}: {err}");
    }
    // An unreadable statistics file says where and why.
    let store = daemon.state_dir().join("store.sqlite");
    std::fs::write(&store, b"not a database").unwrap();
    let out = stats(&daemon, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("store.sqlite"));
}

/// `date -u ARGS` (GNU date), for dates relative to today.
fn date_u(args: &[&str]) -> String {
    let out = Command::new("date").arg("-u").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn this_week() -> String {
    date_u(&["+%G-W%V"])
}

#[test]
fn an_unusable_statistics_file_loses_no_mail_and_no_count() {
    let milter_port = free_port();
    let rig = PostfixRig::start(RigOptions {
        milter: Some(format!("inet:127.0.0.1:{milter_port}")),
        ..Default::default()
    });
    let relay = SilentRelay::new();
    let mut daemon =
        Daemon::configure_on(milter_port, &format!("[autoreply]\nrelay = \"{}\"", relay.url()), &[]);
    let store = daemon.state_dir().join("store.sqlite");
    std::fs::create_dir_all(daemon.state_dir()).unwrap();
    std::fs::write(&store, vec![0x42; 8192]).unwrap();
    daemon.spawn();
    let (sender, message) = request("ivan", 12, "my realtek card");
    rig.send(Some(&sender), &[HELPDESK], &message).unwrap();
    let got = rig.wait_for_messages(1, Duration::from_secs(60));
    assert_eq!(got[0].header("X-HelpDesk-Class"), vec!["support"], "the mail is triaged and delivered");
    daemon.wait_log("statistics not written, kept in memory and retried", 1);
    assert!(daemon.log().contains("store.sqlite"), "the log names the file:\n{}", daemon.log());
    // Once the sysadmin moves the damaged file away, the count kept in memory is written.
    std::fs::remove_file(&store).unwrap();
    let json = daemon.wait_stats(1);
    assert_eq!(total(&json), 1, "{}", daemon.log());
    assert_eq!(sum(&json, "topics")["wifi-realtek"], 1);
    daemon.wait_log("statistics written again", 1);
}
