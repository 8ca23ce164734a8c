//! The optional Prometheus endpoint (`[metrics] listen`, issue 7), on the real daemon: off by
//! default; when on, valid Prometheus text with every series from the start and the exact counts
//! of what was sent over the milter protocol; reloads and refusals counted; the outbox gauges
//! kept current; no label that identifies anyone; and mail still flows when its port is taken.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/mta.rs"]
mod mta;

use daemon::{Daemon, SilentRelay, free_port};
use helpdesk_milter::classify::Class;
use helpdesk_milter::metrics::{LostReply, MilterError, StoreFailure};
use helpdesk_milter::policy::Reason;
use indymilter::ProtoOpts;
use indymilter::message::reply::Reply;
use mta::MtaConn;
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{PrometheusType, PrometheusValue};
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One metric family as served: its type, its HELP text and its samples by label set.
#[derive(Debug)]
struct Family {
    counter: bool,
    help: String,
    samples: BTreeMap<Vec<(String, String)>, f64>,
}

/// A scrape: the response's content type and body, and the families the body holds.
struct Scrape {
    content_type: String,
    body: String,
    families: BTreeMap<String, Family>,
}

impl Scrape {
    /// The value of `name` with `labels` (absent series panic: every one is registered at start).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let family = self.families.get(name).unwrap_or_else(|| panic!("no {name}:\n{}", self.body));
        *family.samples.get(&key).unwrap_or_else(|| panic!("no {name}{labels:?}:\n{}", self.body))
    }

    /// Every value of a labelled family, by its one label's value.
    fn by_label(&self, name: &str) -> BTreeMap<String, f64> {
        let family = self.families.get(name).unwrap_or_else(|| panic!("no {name}:\n{}", self.body));
        family
            .samples
            .iter()
            .map(|(labels, v)| {
                assert_eq!(labels.len(), 1, "{name} has one label: {labels:?}");
                (labels[0].1.clone(), *v)
            })
            .collect()
    }
}

const HELPDESK: &str = "support@tails.net";
const PREFIX: &str = "helpdesk_milter_";
/// The WhisperBack sample's report ID: never a label.
const REPORT_ID: &str = "4ffd523ac6b83288ba219a6a55f4971b";

/// GET `path` over plain HTTP/1.1: status code, content type, body.
fn http_get(port: u16, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).expect("the response is UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete HTTP response");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        lines
            .clone()
            .find_map(|l| {
                l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
            })
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    // hyper answers with a length, not chunks: the body is exactly that long.
    let length: usize = header("content-length").expect("a Content-Length").parse().unwrap();
    assert_eq!(body.len(), length, "truncated body");
    (status, content_type, body.to_string())
}

/// Scrapes /metrics and checks the body against the text exposition format twice: with a parser
/// of the format (openmetrics-parser's Prometheus grammar: escapes, label sets, one family per
/// name, no duplicate series), and line by line here (a HELP and a TYPE line before each family's
/// samples, every sample `name{labels} value` of a known family).
fn scrape(port: u16) -> Scrape {
    let (status, content_type, body) = http_get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    let parsed = parse_prometheus(&body).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}"));

    let mut families = BTreeMap::new();
    for (name, f) in &parsed.families {
        let counter = match f.family_type {
            PrometheusType::Counter => true,
            PrometheusType::Gauge => false,
            ref t => panic!("{name}: unexpected type {t:?}"),
        };
        let mut samples = BTreeMap::new();
        for s in f.iter_samples() {
            let labels: Vec<(String, String)> =
                s.get_labelset().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let value = match &s.value {
                PrometheusValue::Counter(c) => c.value.as_f64(),
                PrometheusValue::Gauge(g) => g.as_f64(),
                v => panic!("{name}: unexpected value {v:?}"),
            };
            assert!(samples.insert(labels, value).is_none(), "{name}: duplicate series");
        }
        families.insert(name.clone(), Family { counter, help: f.help.clone(), samples });
    }

    // Line by line: the parser accepts families without HELP or TYPE; these must have both.
    let (mut helped, mut typed) = (HashSet::new(), HashSet::new());
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or_else(|| panic!("empty HELP: {line}"));
            assert!(!text.trim().is_empty(), "empty HELP: {line}");
            assert!(helped.insert(name.to_string()), "second HELP: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE: {line}"));
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            assert!(typed.insert(name.to_string()), "second TYPE: {line}");
        } else {
            assert!(!line.starts_with('#'), "unexpected comment: {line}");
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
            assert!(value.is_finite() && value >= 0.0, "{line}");
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    assert!(labels.ends_with('}') && labels.contains("=\""), "bad labels: {line}");
                    name
                }
                None => series,
            };
            assert!(name.starts_with(PREFIX), "not ours: {line}");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "bad name: {line}");
            assert!(helped.contains(name) && typed.contains(name), "no HELP or TYPE before: {line}");
            assert!(families.contains_key(name), "parser missed: {line}");
        }
    }
    for (name, f) in &families {
        assert!(helped.contains(name) && typed.contains(name), "{name} lacks HELP or TYPE");
        assert!(!f.help.is_empty());
        assert_eq!(f.counter, name.ends_with("_total"), "{name}: counters, and only they, end in _total");
        assert!(!f.samples.is_empty(), "{name} has no sample");
    }
    Scrape { content_type, body, families }
}

/// Scrapes until `done` holds (the counters move right after the log line that the test waits
/// for, and the outbox gauges at the next scan of the outbox).
fn scrape_until(port: u16, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let t0 = Instant::now();
    loop {
        let s = scrape(port);
        if done(&s) {
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(25), "never {what}:\n{}", s.body);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The number of TCP sockets the process listens on, from /proc: its socket inodes that
/// /proc/net/tcp{,6} list in state LISTEN.
fn listening_sockets(pid: u32) -> usize {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| Some(l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_string()))
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9 && f[3] == "0A" && inodes.contains(f[9])
        })
        .count()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A unique tag per run, so that every sender is new to the daemon's state.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{}x{nanos}", std::process::id())
}

/// Sends one message as Postfix does; returns the values of the triage headers it got
/// (X-HelpDesk-Class and X-HelpDesk-Autoreply, empty when untouched) and the final reply.
fn send(
    port: u16,
    qid: &str,
    sender: &str,
    rcpt: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (String, String, Reply) {
    runtime().block_on(async {
        let mut c = MtaConn::tcp(("127.0.0.1", port), ProtoOpts::all()).await;
        let headers: Vec<(String, String)> =
            headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        c.envelope_and_header(qid, sender, rcpt, &headers).await;
        c.body(body).await;
        let (actions, last) = c.eom(qid).await;
        c.quit().await;
        let added = |name: &str| {
            actions
                .iter()
                .find_map(|a| match a {
                    Reply::AddHeader { name: n, value } if n.to_str() == Ok(name) => {
                        Some(value.to_string_lossy().trim().to_string())
                    }
                    _ => None,
                })
                .unwrap_or_default()
        };
        (added("X-HelpDesk-Class"), added("X-HelpDesk-Autoreply"), last)
    })
}

/// A support request from `sender`: the class and decision it got.
fn request(port: u16, qid: &str, sender: &str, subject: &str) -> (String, String) {
    let headers = [("From", sender), ("To", HELPDESK), ("Subject", subject)];
    let (class, decision, _) = send(port, qid, sender, HELPDESK, &headers, b"Tails does not start.\r\n");
    (class, decision)
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

/// The WhisperBack sample, split into header fields and body as Postfix passes them on.
fn whisperback() -> (Vec<(String, String)>, Vec<u8>) {
    let raw = include_bytes!("data/whisperback-sample.eml");
    let split = raw.windows(2).position(|w| w == b"\n\n").unwrap();
    let headers = std::str::from_utf8(&raw[..split])
        .unwrap()
        .lines()
        .map(|l| l.split_once(": ").map(|(k, v)| (k.to_string(), v.to_string())).unwrap())
        .collect();
    (headers, raw[split + 2..].to_vec())
}

/// Replaces a file by rename, so that the watcher never sees it half written.
fn replace(path: &std::path::Path, text: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn zeros<T>(all: impl IntoIterator<Item = T>, name: impl Fn(T) -> &'static str) -> BTreeMap<String, f64> {
    all.into_iter().map(|t| (name(t).to_string(), 0.0)).collect()
}

fn with(mut map: BTreeMap<String, f64>, counts: &[(&str, f64)]) -> BTreeMap<String, f64> {
    for (k, v) in counts {
        *map.get_mut(*k).unwrap_or_else(|| panic!("no label value {k}")) = *v;
    }
    map
}

fn m(name: &str) -> String {
    format!("{PREFIX}{name}")
}

#[test]
fn off_by_default() {
    let relay = SilentRelay::new();
    let d = Daemon::start(&format!("[autoreply]\nrelay = \"{}\"", relay.url()));
    d.wait_log("listening on", 1);
    let log = d.log();
    assert!(!log.contains("metrics served") && !log.contains("serve metrics"), "{log}");
    // The milter's socket is all it listens on.
    assert_eq!(listening_sockets(d.pid()), 1, "{}", d.log());
}

#[test]
fn counts_what_was_sent_in_valid_prometheus_text() {
    let relay = SilentRelay::new();
    let port = free_port();
    // A small header budget, so that a flood of forged triage fields is rejected (an error kind).
    let mut d = Daemon::start_on_with_milter(
        free_port(),
        "max_header_bytes = 1024",
        &format!(
            "[autoreply]\nrelay = \"{}\"\nretry_interval = \"1h\"\nsmtp_timeout = \"10m\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"",
            relay.url()
        ),
    );
    d.wait_log(&format!("metrics served on http://127.0.0.1:{port}/metrics"), 1);
    assert_eq!(listening_sockets(d.pid()), 2, "the milter and the metrics endpoint");

    // Before any mail: every series is there, at 0.
    let s = scrape(port);
    assert!(s.content_type.starts_with("text/plain"), "{}", s.content_type);
    let classes = zeros(Class::ALL, Class::as_str);
    let reasons = zeros(Reason::ALL, Reason::as_str);
    let failures = zeros(LostReply::ALL, LostReply::as_str);
    let kinds = zeros(MilterError::ALL, MilterError::as_str);
    assert_eq!(s.by_label(&m("messages_total")), classes);
    assert_eq!(s.by_label(&m("replies_suppressed_total")), reasons);
    assert_eq!(s.by_label(&m("replies_failed_total")), failures);
    assert_eq!(s.by_label(&m("errors_total")), kinds);
    assert_eq!(s.by_label(&m("store_failures_total")), zeros(StoreFailure::ALL, StoreFailure::as_str));
    assert_eq!(s.value(&m("store_up"), &[]), 1.0, "the embedded store opened");
    let plain = [
        "replies_queued_total",
        "replies_sent_total",
        "reply_file_reloads_total",
        "reply_file_refusals_total",
        "config_reloads_total",
        "config_refusals_total",
        "outbox_depth",
        "outbox_oldest_age_seconds",
    ];
    for name in plain {
        assert_eq!(s.value(&m(name), &[]), 0.0, "{name}");
    }
    assert_eq!(s.families.len(), 6 + plain.len(), "no other family:\n{}", s.body);

    // Mail of known classes and decisions.
    let tag = run_tag();
    let subject = format!("Metrics secret subject {tag}");
    let (alice, bob) = (format!("alice-{tag}@example.org"), format!("bob-{tag}@example.org"));
    let milter = d.port;
    let outcome = |r: (String, String, Reply)| (r.0, r.1);
    let t_first = Instant::now();
    assert_eq!(request(milter, "MQ1", &alice, &subject), pair("support", "queued"));
    assert_eq!(request(milter, "MQ2", &bob, &subject), pair("support", "queued"));
    assert_eq!(request(milter, "MQ3", &alice, "Another question"), pair("support", "suppressed (interval)"));
    let bounce = send(
        milter,
        "MQ4",
        "",
        HELPDESK,
        &[
            ("From", "MAILER-DAEMON@example.org (Mail Delivery System)"),
            ("To", HELPDESK),
            ("Subject", "Undelivered Mail Returned to Sender"),
        ],
        b"This is the mail system.\r\n",
    );
    assert_eq!(outcome(bounce), pair("automated", "suppressed (null-sender)"));
    let (wb_headers, wb_body) = whisperback();
    let wb_headers: Vec<(&str, &str)> = wb_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let wb = send(milter, "MQ5", "devnull@tails.boum.org", HELPDESK, &wb_headers, &wb_body);
    assert_eq!(outcome(wb), pair("whisperback", "suppressed (class)"));
    // Not for the Help Desk: untouched, not counted.
    let other = format!("carol-{tag}@example.org");
    let untouched =
        send(milter, "MQ6", &alice, &other, &[("To", other.as_str()), ("Subject", &subject)], b"x\r\n");
    assert_eq!(outcome(untouched), (String::new(), String::new()));
    // More forged X-HelpDesk- fields than can be removed: rejected.
    let forged: Vec<String> = (0..2000).map(|i| format!("X-HelpDesk-Forged-{i}")).collect();
    let forged: Vec<(&str, &str)> = forged.iter().map(|n| (n.as_str(), "x")).collect();
    let (_, _, last) = send(milter, "MQ7", &bob, HELPDESK, &forged, b"x\r\n");
    assert!(matches!(last, Reply::ReplyCode { .. }), "rejected: {last:?}");

    // The two replies are written by the worker and wait in the outbox: the relay never answers.
    let s = scrape_until(port, "two replies in the outbox", |s| {
        s.value(&m("replies_queued_total"), &[]) == 2.0 && s.value(&m("outbox_depth"), &[]) == 2.0
    });
    assert_eq!(
        s.by_label(&m("messages_total")),
        with(classes.clone(), &[("support", 3.0), ("automated", 1.0), ("whisperback", 1.0)])
    );
    assert_eq!(
        s.by_label(&m("replies_suppressed_total")),
        with(reasons.clone(), &[("interval", 1.0), ("null-sender", 1.0), ("class", 1.0)])
    );
    assert_eq!(s.by_label(&m("replies_failed_total")), failures);
    assert_eq!(s.by_label(&m("errors_total")), with(kinds.clone(), &[("forged-headers", 1.0)]));
    assert_eq!(s.value(&m("replies_sent_total"), &[]), 0.0);
    let age = s.value(&m("outbox_oldest_age_seconds"), &[]);
    assert!(age <= t_first.elapsed().as_secs_f64() + 1.0, "age {age}");

    // Nothing that identifies anyone: no address, Subject, queue ID or report ID, anywhere.
    for (_, v) in s.families.values().flat_map(|f| f.samples.keys().flatten()) {
        assert!(!v.contains('@') && !v.contains(&tag), "identifying label value {v:?}");
    }
    for needle in [tag.as_str(), "example.org", "tails.net", "MQ1", REPORT_ID, "Metrics secret"] {
        assert!(!s.body.contains(needle), "{needle:?} in the metrics:\n{}", s.body);
    }

    // A new reply file is counted once, a broken one refused.
    let reply = d.reply_file();
    let v2 = std::fs::read_to_string(&reply).unwrap().replace("Test reply v1", "Test reply v2");
    replace(&reply, &v2);
    d.wait_log("reloaded (revision", 1);
    scrape_until(port, "one reply-file reload", |s| s.value(&m("reply_file_reloads_total"), &[]) == 1.0);
    // SIGHUP with the file unchanged: the configuration reloads, but no new version is counted
    // (issue 12, point 13; SIGHUP counted every install before).
    d.signal("HUP");
    let s = scrape_until(port, "a configuration reload", |s| s.value(&m("config_reloads_total"), &[]) == 1.0);
    assert_eq!(s.value(&m("reply_file_reloads_total"), &[]), 1.0, "an unchanged file is no new version");
    assert_eq!(d.log().matches("reloaded (revision").count(), 1, "{}", d.log());
    replace(&reply, "default_language = [\n");
    d.wait_log("reply file refused", 1);
    let s = scrape_until(port, "one refusal", |s| s.value(&m("reply_file_refusals_total"), &[]) == 1.0);
    assert_eq!(s.value(&m("reply_file_reloads_total"), &[]), 1.0);

    // SIGHUP: the configuration reloads; the reply file, still broken, is refused again.
    d.signal("HUP");
    d.wait_log("reply file refused", 2);
    let s = scrape_until(port, "a second configuration reload", |s| {
        s.value(&m("config_reloads_total"), &[]) == 2.0
            && s.value(&m("reply_file_refusals_total"), &[]) == 2.0
    });
    assert_eq!(s.value(&m("reply_file_reloads_total"), &[]), 1.0);
    assert_eq!(s.value(&m("config_refusals_total"), &[]), 0.0);
    // A broken configuration is refused and counted.
    let mut config = std::fs::read_to_string(&d.config).unwrap();
    config.push_str("\n[no-such-table\n");
    std::fs::write(&d.config, config).unwrap();
    d.signal("HUP");
    d.wait_log("configuration not reloaded", 1);
    let s =
        scrape_until(port, "one configuration refusal", |s| s.value(&m("config_refusals_total"), &[]) == 1.0);
    assert_eq!(s.value(&m("config_reloads_total"), &[]), 2.0);

    // With nothing happening, the oldest entry's age still moves (the periodic scan).
    let before = s.value(&m("outbox_oldest_age_seconds"), &[]);
    let s = scrape_until(port, "the outbox age moving", |s| {
        s.value(&m("outbox_oldest_age_seconds"), &[]) > before
    });
    assert_eq!(s.value(&m("outbox_depth"), &[]), 2.0);
    assert_eq!(s.value(&m("replies_queued_total"), &[]), 2.0);
    assert!(s.value(&m("outbox_oldest_age_seconds"), &[]) <= t_first.elapsed().as_secs_f64() + 1.0);
    // The messages are counted once, whatever happened since.
    assert_eq!(s.value(&m("messages_total"), &[("class", "support")]), 3.0);
    assert_eq!(d.stop(), Some(0), "{}", d.log());
}

#[test]
fn a_port_in_use_leaves_mail_flowing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let relay = SilentRelay::new();
    let d = Daemon::start(&format!(
        "[autoreply]\nrelay = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"",
        relay.url()
    ));
    d.wait_log(&format!("cannot serve metrics on 127.0.0.1:{port}: "), 1);
    assert!(!d.log().contains("metrics served"), "{}", d.log());
    let sender = format!("dave-{}@example.org", run_tag());
    assert_eq!(request(d.port, "MQ8", &sender, "hello"), pair("support", "queued"));
    assert_eq!(listening_sockets(d.pid()), 1, "only the milter");
}
