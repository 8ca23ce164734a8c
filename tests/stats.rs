//! `helpdesk-milter stats` after mail has flowed through a real Postfix and the daemon: the counts
//! per class and topic, of messages and of people, are those of the mail sent (three messages and
//! a follow-up from one person are one person), `stats` reads them while the daemon runs (and
//! writes), in every format (the GitLab paragraph included) and as a chart, it suggests the
//! reply-file changes the counts call for, and neither the statistics nor any output hold what
//! identifies a writer. Needs root and Postfix.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/postfix.rs"]
mod postfix;

use daemon::{
    BIN, Daemon, SilentRelay, assert_paragraph, stats_people, stats_sums as sum, stats_total as total,
};
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
    add(follow_up("alice", 1, 7, "thanks"));
    // One person, three requests and a follow-up about wifi-realtek: one person.
    add(request("judith", 21, "my realtek card"));
    add(request("judith", 22, "the realtek card still"));
    add(request("judith", 23, "realtek, again"));
    add(follow_up("judith", 21, 24, "realtek: no luck"));
    // A request about mac, which is not a hot topic.
    add(request("kimberly", 25, "my macbook"));
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

/// A follow-up from `who` to their message `to`.
fn follow_up(who: &str, to: usize, n: usize, words: &str) -> (String, Vec<u8>) {
    let sender = format!("{who}@writers-example.org");
    let msg = crlf(&format!(
        "From: {sender}\nTo: {HELPDESK}\nSubject: Re: secret-subject-{to}\n\
         In-Reply-To: <secret-msgid-{to}@writers-example.org>\nMessage-ID: <secret-msgid-{n}@writers-example.org>\n\n{words}\n"
    ));
    (sender, msg)
}

const EXPECTED_CLASSES: &[(&str, u64)] =
    &[("support", 10), ("followup", 2), ("whisperback", 2), ("automated", 1), ("spam", 1), ("team", 1)];
const EXPECTED_TOPICS: &[(&str, u64)] = &[("wifi-realtek", 8), ("nvidia-black-screen", 2), ("mac", 1)];
const COUNTED: u64 = 17;
/// The people: eight support writers (alice to frank, judith, kimberly), the WhisperBack report
/// (sent twice, one report ID), the spammer and the team member; the bounce has no sender.
const PEOPLE: u64 = 11;
const PEOPLE_CLASSES: &[(&str, u64)] =
    &[("support", 8), ("followup", 2), ("whisperback", 1), ("spam", 1), ("team", 1)];
const PEOPLE_TOPICS: &[(&str, u64)] = &[("wifi-realtek", 5), ("nvidia-black-screen", 2), ("mac", 1)];

/// Strings that would identify a writer or quote their mail.
const SECRETS: &[&str] = &[
    "writers-example",
    "alice",
    "judith",
    "kimberly",
    "secret-subject",
    "secret-msgid",
    "sysadmin",
    "grace",
];

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

    // No statistics yet: an empty report, not an error. The daemon binds its socket before it
    // creates the store: wait for its log line, written once the store is there.
    daemon.wait_log("listening on", 1);
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
    assert_eq!(sum(&json, "classes"), expected(EXPECTED_CLASSES), "{json:#}");
    assert_eq!(sum(&json, "topics"), expected(EXPECTED_TOPICS));
    assert_eq!(sum(&json, "autoreply")["queued"], 8, "one reply per new sender: {json:#}");
    // Every WhisperBack sample is encrypted.
    let encrypted: u64 =
        json["weeks"].as_array().unwrap().iter().map(|w| w["encrypted"].as_u64().unwrap()).sum();
    assert_eq!(encrypted, 2);
    // Unless the run straddled a week boundary, every count is in one week.
    let one_week = json["weeks"].as_array().unwrap().iter().filter(|w| w["total"] != 0).count() == 1;
    if one_week {
        people_are_counted_once(&daemon, &json);
    }

    // --topic restricts the counts to the messages about it.
    let about = daemon.stats(&["--topic", "nvidia-black-screen"]);
    assert_eq!(total(&about), 2);
    assert_eq!(sum(&about, "classes")["support"], 2);

    let mut outputs = formats(&daemon, one_week);
    if one_week {
        outputs.push(markdown_and_suggestions(&daemon));
    }

    // Nothing in the statistics or in what `stats` prints identifies a writer.
    // The store and its write-ahead log, where the newest rows are until a checkpoint.
    let mut store = std::fs::read(daemon.state_dir().join("store.sqlite")).unwrap();
    store.extend(std::fs::read(daemon.state_dir().join("store.sqlite-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&store).to_lowercase();
    for s in SECRETS {
        assert!(!text.contains(s), "store.sqlite holds {s:?}");
        for out in &outputs {
            assert!(!out.to_lowercase().contains(s), "stats prints {s:?}:\n{out}");
        }
    }
    assert!(text.contains("wifi-realtek"), "the scan can fail: the store holds its rows in clear");

    // The counts outlive the daemon.
    let mut daemon = daemon;
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(total(&daemon.stats(&[])), COUNTED);
}

fn expected(counts: &[(&str, u64)]) -> std::collections::BTreeMap<String, u64> {
    counts.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// People, not messages: judith's three requests and follow-up are one person at all, in each of
/// her two classes and about wifi-realtek; the report sent twice is one person.
fn people_are_counted_once(daemon: &Daemon, json: &serde_json::Value) {
    let people = stats_people(json);
    assert_eq!(people.total, PEOPLE, "{json:#}");
    assert_eq!(people.classes, expected(PEOPLE_CLASSES), "{json:#}");
    assert_eq!(people.topics, expected(PEOPLE_TOPICS), "{json:#}");
    // About wifi-realtek: eight messages, five people (judith once), all private requests.
    let wifi = daemon.stats(&["--topic", "wifi-realtek"]);
    assert_eq!((total(&wifi), stats_people(&wifi).total), (8, 5), "{wifi:#}");
    let table = stdout(daemon, &["--topic", "wifi-realtek"]);
    assert!(table.starts_with("People about wifi-realtek per ISO week"), "{table}");
    assert!(
        table.lines().any(|l| l.split_whitespace().skip(1).collect::<Vec<_>>() == ["5", "0", "5"]),
        "5 people: 0 WhisperBack reports, 5 private requests:\n{table}"
    );
}

fn stdout(daemon: &Daemon, args: &[&str]) -> String {
    let out = stats(daemon, args);
    assert!(out.status.success(), "stats {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The table, the CSV and the chart say the same, in people by default, in messages if asked.
/// Returns what they printed.
fn formats(daemon: &Daemon, one_week: bool) -> Vec<String> {
    let table = stdout(daemon, &[]);
    assert!(table.starts_with("People per ISO week") && table.contains("wifi-realtek"), "{table}");
    let csv_sum = |csv: &str, kind: &str, name: &str| -> u64 {
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f[1] == kind && f[2] == name)
            .map(|f| f[3].parse::<u64>().unwrap())
            .sum()
    };
    let csv = stdout(daemon, &["--format", "csv"]);
    assert!(csv.starts_with("week,kind,name,people\n"), "{csv}");
    let messages = stdout(daemon, &["--format", "csv", "--count", "messages"]);
    assert!(messages.starts_with("week,kind,name,messages\n"), "{messages}");
    assert_eq!(csv_sum(&messages, "class", "support"), 10, "{messages}");
    assert_eq!(csv_sum(&messages, "topic", "wifi-realtek"), 8, "{messages}");
    if one_week {
        assert_eq!(csv_sum(&csv, "class", "support"), 8, "{csv}");
        assert_eq!(csv_sum(&csv, "topic", "wifi-realtek"), 5, "{csv}");
    }

    // A week later (as if today were next week's Monday, with K = 1), the topics at least two
    // people wrote about this week are named frequent, since this week.
    let next_monday = date_u(&["-d", "next monday", "+%F"]);
    let later = daemon.stats(&["--today", &next_monday, "--frequent-weeks", "1", "--since", &this_week()]);
    let frequent: Vec<&str> =
        later["frequent"].as_array().unwrap().iter().map(|f| f["topic"].as_str().unwrap()).collect();
    if one_week {
        assert_eq!(frequent, vec!["wifi-realtek", "nvidia-black-screen"], "{later:#}");
        assert_eq!(later["frequent"][0]["since"], this_week());
        assert_eq!(later["frequent"][0]["weekly_average"], 5.0, "people, not messages");
        assert_eq!(
            (later["frequent"][0]["people"].as_u64(), later["frequent"][0]["reports"].as_u64()),
            (Some(5), Some(8))
        );
    }

    // The chart: people per topic, the threshold, the frequent topics named.
    let svg = daemon.dir.path().join("stats.svg");
    let args = ["--plot", svg.to_str().unwrap(), "--today", &next_monday, "--frequent-weeks", "1"];
    stdout(daemon, &args);
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("People writing about each topic, per week"));
    assert!(chart.contains("frequent threshold") && chart.contains("mac"), "{chart}");
    if one_week {
        assert!(
            chart.contains("wifi-realtek (frequent)") && chart.contains("about 5 a week since"),
            "{chart}"
        );
    }
    vec![table, csv, messages, later.to_string(), chart]
}

/// The GitLab paragraph and the suggested changes to the reply file. Returns what they printed.
fn markdown_and_suggestions(daemon: &Daemon) -> String {
    let week = this_week();
    let next_monday = date_u(&["-d", "next monday", "+%F"]);
    // This week is not over: not frequent yet, the people of the weeks shown.
    let now = stdout(daemon, &["--topic", "wifi-realtek", "--format", "markdown"]);
    assert!(now.starts_with("Reported by 5 people in the last 8 weeks ("), "{now}");
    assert!(now.contains(", the last one so far): "), "{now}");
    assert_paragraph(&now, 5, &[]);
    // Next Monday, with K = 1: frequent since this week.
    let later = stdout(
        daemon,
        &[
            "--topic",
            "wifi-realtek",
            "--format",
            "markdown",
            "--today",
            &next_monday,
            "--frequent-weeks",
            "1",
        ],
    );
    assert_eq!(
        later,
        format!(
            "Reported by about 5 people a week since {week} (5 people in 1 week, to {week}: 0 WhisperBack reports, 5 private requests).\n"
        )
    );

    // A new installation: nothing to add, too early to drop anything.
    let json = daemon.stats(&[]);
    assert_eq!(json["suggestions"], serde_json::json!([]), "{json:#}");
    // Next Monday with N = 1: mac is frequent and not hot.
    let later = daemon.stats(&["--today", &next_monday, "--frequent-weeks", "1", "--frequent-min", "1"]);
    assert_eq!(later["suggestions"][0]["topic"], "mac", "{later:#}");
    assert_eq!(later["suggestions"][0]["change"], "add");
    // Four complete weeks later, no one wrote about the hot topics.
    let month = date_u(&["-d", "next monday + 4 weeks", "+%F"]);
    let table = stdout(daemon, &["--today", &month]);
    for topic in ["nvidia-black-screen", "wifi-realtek"] {
        assert!(
            table.lines().any(|l| l.starts_with("  drop?")
                && l.contains(topic)
                && l.contains("no one wrote about it")),
            "{table}"
        );
    }
    // A reply file that cannot be read: one line says so, the rest of the report is there.
    let elsewhere = daemon.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::copy(&daemon.config, elsewhere.join("helpdesk-milter.toml")).unwrap();
    let out =
        Command::new(BIN).args(["stats", "-c"]).arg(elsewhere.join("helpdesk-milter.toml")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("People per ISO week"), "{text}");
    let line: Vec<&str> = text.lines().filter(|l| l.starts_with("Suggested changes")).collect();
    assert!(
        line.len() == 1
            && line[0].contains("the reply file cannot be read")
            && line[0].contains("reply.toml"),
        "{text}"
    );
    [now, later.to_string(), table, text.into_owned()].join("\n")
}

#[test]
fn bad_arguments_are_one_clear_line() {
    let daemon = Daemon::start("");
    for (args, says) in [
        (&["--since", "last tuesday"][..], "is neither a week"),
        (&["--weeks", "0"][..], "from 1 to 520"),
        (&["--topic", "Wi Fi"][..], "a topic id is"),
        (&["--topic", "wifi-realtec"][..], "has no such topic, and nothing was ever counted about it"),
        (&["--today", "2026-13-01"][..], "not a date"),
        (&["--since", "2999-W01"][..], "has not begun"),
    ] {
        let out = stats(&daemon, args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && err.lines().count() == 1, "{args:?}: {err}");
    }
    // --format markdown is the paragraph of a topic.
    let out = stats(&daemon, &["--format", "markdown"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give the topic with --topic ID"));
    // Without --config and no configuration in /etc (a source tree, say): what to pass.
    if !std::path::Path::new("/etc/helpdesk-milter/helpdesk-milter.toml").exists() {
        let out = Command::new(BIN).arg("stats").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.lines().count() == 1, "{err}");
        assert!(err.contains("--config etc/helpdesk-milter.toml"), "{err}");
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
