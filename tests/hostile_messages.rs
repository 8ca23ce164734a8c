//! Hostile messages (issue 6, requirement 2): a 1 MiB header line, 10,000 header fields, NUL and
//! 8-bit bytes, invalid UTF-8 and broken RFC 2047 words, unterminated MIME boundaries, multiparts
//! nested 1,000 deep, a 100 MiB body, CR/LF injection aimed at the auto-reply, a Subject of
//! 100,000 characters (generators in tests/support/hostile.rs).
//!
//! Two levels: the real daemon driven over the milter protocol as Postfix drives it (fast, no
//! Postfix), and end to end through a real Postfix whose limits are raised so that it passes the
//! messages on unchanged, compared byte for byte with what the same Postfix delivers without the
//! milter. Needs root and Postfix for the second level.
//!
//! The large body is 100 MiB at both levels: through Postfix that case takes about 7 seconds
//! here (2 vCPUs), well under the minute that would call for a smaller default.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/hostile.rs"]
mod hostile;
#[path = "support/mta.rs"]
mod mta;
#[path = "support/postfix.rs"]
mod postfix;

use daemon::status_kib;
use daemon::{Daemon, SilentRelay, free_port};
use hostile::{Case, HELPDESK, cases, reset_peak_rss, split_like_postfix};
use indymilter::ProtoOpts;
use indymilter::message::reply::Reply;
use mta::MtaConn;
use postfix::{PostfixRig, RigOptions, SinkMessage};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
/// Memory the daemon may add over its idle RSS for one hostile message: generous, since the
/// daemon keeps at most max_header_bytes + max_body_bytes (320 KiB) of a message.
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// The reply file's Subject (tests/data/reply.toml): the reply never takes the request's.
const REPLY_SUBJECT: &str = "Test reply v1";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A unique tag per test run, so that every sender is new to the daemon's state.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// A daemon whose replies wait in its outbox: the relay is a port nobody listens on.
fn daemon_with_outbox() -> (Daemon, SilentRelay) {
    let relay = SilentRelay::new();
    let daemon = Daemon::start(&format!("[autoreply]\nrelay = \"{}\"\nretry_interval = \"1h\"", relay.url()));
    (daemon, relay)
}

/// What the daemon answered to one message.
struct Outcome {
    actions: Vec<Reply>,
    last: Reply,
}

/// Sends one raw message as Postfix's milter client does: header fields one by one, the body in
/// chunks of at most 65535 bytes (until the daemon says Skip, if `offered` has SKIP).
async fn drive(port: u16, offered: ProtoOpts, sender: &str, raw: &[u8]) -> Outcome {
    let mut c = MtaConn::tcp(("127.0.0.1", port), offered).await;
    c.envelope("HOSTILE1", sender, HELPDESK).await;
    let (headers, body) = split_like_postfix(raw);
    for (name, value) in &headers {
        c.header_bytes(name, value).await;
    }
    c.eoh().await;
    c.body(body).await;
    let (actions, last) = c.eom("HOSTILE1").await;
    c.quit().await;
    Outcome { actions, last }
}

fn added(o: &Outcome) -> Vec<(String, String)> {
    o.actions
        .iter()
        .filter_map(|r| match r {
            Reply::AddHeader { name, value } => Some((
                String::from_utf8_lossy(name.as_bytes()).into_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

/// The daemon accepted the message with its triage headers, each a single clean line, and
/// deleted every forged prefixed header instance.
fn assert_triaged(case: &str, o: &Outcome, forged: usize, decision: &str) {
    assert_eq!(o.last, Reply::Accept, "{case}: final reply");
    let added = added(o);
    for (name, value) in &o
        .actions
        .iter()
        .filter_map(|r| match r {
            Reply::AddHeader { name, value } => Some((name.as_bytes(), value.as_bytes())),
            _ => None,
        })
        .collect::<Vec<_>>()
    {
        assert!(name.starts_with(b"X-HelpDesk-"), "{case}: added {name:?}");
        assert!(
            value.iter().all(|&b| (b' '..=b'~').contains(&b)),
            "{case}: the value of {} is not one line of printable ASCII: {value:?}",
            String::from_utf8_lossy(name)
        );
    }
    let value = |n: &str| added.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(value("X-HelpDesk-Class"), Some("support"), "{case}: {added:?}");
    assert_eq!(value("X-HelpDesk-Priority"), Some("normal"), "{case}: {added:?}");
    assert_eq!(value("X-HelpDesk-Autoreply"), Some(decision), "{case}: {added:?}");
    let deleted: Vec<&Reply> = o.actions.iter().filter(|r| matches!(r, Reply::ChangeHeader { .. })).collect();
    assert_eq!(deleted.len(), forged, "{case}: one deletion per forged instance");
    for d in deleted {
        let Reply::ChangeHeader { name, index, value } = d else { unreachable!() };
        assert!(name.as_bytes().to_ascii_lowercase().starts_with(b"x-helpdesk-"), "{case}: {name:?}");
        assert!(*index >= 1 && value.as_bytes().is_empty(), "{case}: {d:?}");
    }
}

/// A reply as built by the daemon (from its outbox or as delivered): one recipient, the
/// sender; a header that is clean CRLF lines; one To: naming only the sender; one Subject: the
/// reply file's; no Cc, Bcc or Resent-* field.
fn assert_clean_reply(case: &Case, recipient: &str, message: &[u8]) {
    let name = case.name;
    assert_eq!(recipient, case.sender, "{name}: the reply goes to the envelope sender only");
    let head_end = message.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 2).unwrap_or_else(|| {
        // Delivered copies are stored with LF line ends by smtp-sink.
        message.windows(2).position(|w| w == b"\n\n").map(|i| i + 1).expect("a header")
    });
    let head = &message[..head_end];
    let crlf = head.windows(2).any(|w| w == b"\r\n");
    let lines: Vec<&[u8]> = if crlf {
        // Every CR and LF of the header belongs to a CRLF pair: no bare one can end a line for
        // some reader and not for another.
        for (i, &b) in head.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(head.get(i + 1), Some(&b'\n'), "{name}: bare CR in the reply header"),
                b'\n' => assert_eq!(head[i - 1], b'\r', "{name}: bare LF in the reply header"),
                _ => {}
            }
        }
        head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).collect()
    } else {
        assert!(!head.contains(&b'\r'), "{name}: CR in the reply header");
        head.split(|&b| b == b'\n').collect()
    };
    let mut fields: Vec<String> = Vec::new();
    for line in lines.into_iter().filter(|l| !l.is_empty()) {
        assert!(!line.contains(&0), "{name}: NUL in the reply header");
        if matches!(line[0], b' ' | b'\t') {
            continue;
        }
        let colon = line.iter().position(|&b| b == b':').unwrap_or_else(|| {
            panic!(
                "{name}: a reply header line that is neither a field nor a fold: {:?}",
                String::from_utf8_lossy(line)
            )
        });
        fields.push(String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase());
    }
    let count = |f: &str| fields.iter().filter(|x| *x == f).count();
    assert_eq!(count("to"), 1, "{name}: {fields:?}");
    assert_eq!(count("subject"), 1, "{name}: {fields:?}");
    for f in &fields {
        assert!(
            !matches!(f.as_str(), "cc" | "bcc") && !f.starts_with("resent-"),
            "{name}: injected field {f} in the reply"
        );
    }
    let parsed = mail_parser::MessageParser::new().parse(message).expect("the reply parses");
    assert_eq!(parsed.subject(), Some(REPLY_SUBJECT), "{name}");
    let to: Vec<String> = parsed
        .to()
        .map(|a| a.iter().filter_map(|a| a.address()).map(str::to_string).collect())
        .unwrap_or_default();
    assert_eq!(to, vec![case.sender.clone()], "{name}: the reply's To: names the sender only");
    assert!(parsed.cc().is_none() && parsed.bcc().is_none(), "{name}");
}

/// Waits until the daemon's outbox holds `n` replies and returns (recipient, message) of each.
fn outbox_replies(daemon: &Daemon, n: usize) -> Vec<(String, Vec<u8>)> {
    let dir: PathBuf = daemon.state_dir().join("outbox");
    let t0 = Instant::now();
    loop {
        let entries = helpdesk_milter::outbox::Outbox::open(&dir).map(|o| o.entries()).unwrap_or_default();
        if entries.len() >= n {
            return entries.into_iter().map(|e| (e.recipient, e.message)).collect();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{} of {n} replies queued:\n{}",
            entries.len(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_alive_and_quiet(daemon: &Daemon) {
    assert!(
        std::path::Path::new(&format!("/proc/{}", daemon.pid())).exists(),
        "daemon gone:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("internal error"), "{log}");
    assert!(!log.contains("example.org") && !log.contains("victim"), "an address in the log:\n{log}");
}

fn normal_request(sender: &str) -> Vec<u8> {
    format!(
        "From: {sender}\r\nTo: support@tails.net\r\nSubject: after the storm\r\nMessage-ID: <calm.{sender}>\r\n\r\nhello\r\n"
    )
    .into_bytes()
}

#[test]
fn protocol_every_hostile_case_is_triaged_and_its_reply_is_clean() {
    let (daemon, _relay) = daemon_with_outbox();
    let tag = run_tag();
    let cases = cases(&tag, 100 * MIB);
    let rt = runtime();
    for case in &cases {
        // Postfix offers every protocol option, Skip included.
        let o = rt.block_on(drive(daemon.port, ProtoOpts::all(), &case.sender, &case.message));
        assert_triaged(case.name, &o, case.forged, "queued");
    }
    // Afterwards the daemon still serves an ordinary message.
    let calm = format!("calm-{tag}@example.org");
    let o = rt.block_on(drive(daemon.port, ProtoOpts::all(), &calm, &normal_request(&calm)));
    assert_triaged("normal", &o, 0, "queued");

    let replies = outbox_replies(&daemon, cases.len() + 1);
    assert_eq!(replies.len(), cases.len() + 1, "one reply per sender");
    for case in &cases {
        let mine: Vec<&(String, Vec<u8>)> = replies.iter().filter(|(r, _)| *r == case.sender).collect();
        assert_eq!(mine.len(), 1, "{}: one reply", case.name);
        assert_clean_reply(case, &mine[0].0, &mine[0].1);
    }
    assert_alive_and_quiet(&daemon);
}

#[test]
fn protocol_memory_stays_bounded_on_a_100_mib_body_and_1000_nested_multiparts() {
    let (daemon, _relay) = daemon_with_outbox();
    let pid = daemon.pid();
    let tag = run_tag();
    let rt = runtime();
    let warm = format!("warm-{tag}@example.org");
    rt.block_on(drive(daemon.port, ProtoOpts::all(), &warm, &normal_request(&warm)));
    let idle = status_kib(pid, "VmRSS");
    assert!(idle > 0, "no VmRSS for the daemon (pid {pid})");
    for case in cases(&tag, 100 * MIB).iter().filter(|c| matches!(c.name, "big-body" | "nested-1000")) {
        reset_peak_rss(pid);
        // Skip is not offered: every byte of the body goes through the daemon.
        let o =
            rt.block_on(drive(daemon.port, ProtoOpts::all() - ProtoOpts::SKIP, &case.sender, &case.message));
        assert_triaged(case.name, &o, case.forged, "queued");
        let peak = status_kib(pid, "VmHWM");
        assert!(peak > 0, "no VmHWM for the daemon (pid {pid})");
        eprintln!(
            "{}: idle RSS {idle} KiB, peak {peak} KiB, added {} KiB ({} bytes sent)",
            case.name,
            peak.saturating_sub(idle),
            case.message.len()
        );
        assert!(
            peak.saturating_sub(idle) < RSS_BOUND_KIB,
            "{}: peak RSS {peak} KiB over idle {idle} KiB",
            case.name
        );
    }
    assert_alive_and_quiet(&daemon);
}

#[test]
fn protocol_a_header_over_the_protocol_frame_limit_costs_its_connection_only() {
    // The daemon (as libmilter) refuses a milter frame over 1 MiB - 1 and drops the connection; the MTA then
    // applies its milter_default_action. Postfix never sends such a frame: with a milter its
    // cleanup cuts every header field at 60,000 bytes (see the Postfix test below).
    let (daemon, _relay) = daemon_with_outbox();
    let tag = run_tag();
    let sender = format!("huge-header-{tag}@example.org");
    let mut raw = format!("From: {sender}\r\nTo: support@tails.net\r\nSubject: x\r\nX-Huge: ").into_bytes();
    raw.resize(raw.len() + 2 * MIB, b'a');
    raw.extend_from_slice(b"\r\n\r\nhello\r\n");
    let rt = runtime();
    // The client panics on the dropped connection (its message shows in the test output).
    let failed = rt.block_on(async {
        let port = daemon.port;
        tokio::spawn(async move { drive(port, ProtoOpts::all(), &sender, &raw).await }).await.is_err()
    });
    assert!(failed, "the daemon took a frame over 1 MiB");
    let calm = format!("calm-{tag}@example.org");
    let o = rt.block_on(drive(daemon.port, ProtoOpts::all(), &calm, &normal_request(&calm)));
    assert_triaged("normal", &o, 0, "queued");
    assert_alive_and_quiet(&daemon);
}

/// The daemon's own header names, lowercased.
const OURS: [&str; 7] = [
    "x-helpdesk-class",
    "x-helpdesk-priority",
    "x-helpdesk-report-id",
    "x-helpdesk-encrypted",
    "x-helpdesk-tags",
    "x-helpdesk-topic",
    "x-helpdesk-autoreply",
];

/// Postfix limits raised so that it passes every case on unchanged (postconf(5)).
fn raised_limits() -> Vec<(String, String)> {
    [
        // 100 MiB of body plus headers (default 10 MB).
        ("message_size_limit", "262144000"),
        // The 1 MiB header line kept whole without the milter (default 100 KiB per header: the
        // excess is discarded). With a milter, Postfix's cleanup cuts every header field at
        // 60,000 bytes whatever this says (KLUDGE_HEADER_LIMIT, for libmilter's 64 KiB frames):
        // see comparable_fields.
        ("header_size_limit", "4194304"),
        // That cut lowers the limit for the rest of the cleanup process's life, milter or not:
        // one message per process keeps the deliveries without the milter uncut.
        ("max_use", "1"),
        // The smtp client breaks lines over 998 bytes with CRLF SPACE by default.
        ("smtp_line_length_limit", "0"),
        // Postfix refuses mail nested deeper than 100 by default.
        ("mime_nesting_limit", "2000"),
        // No 8-bit to quoted-printable conversion on the way to the sink.
        ("disable_mime_output_conversion", "yes"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn is_reply(m: &SinkMessage) -> bool {
    m.header("Auto-Submitted") == vec!["auto-replied"]
}

/// Waits for the next message at the sink that is not a reply and not in `seen`.
fn next_delivery(rig: &PostfixRig, seen: &mut HashSet<PathBuf>, what: &str) -> SinkMessage {
    let t0 = Instant::now();
    loop {
        if let Some(m) = rig.messages().into_iter().find(|m| !seen.contains(&m.path) && !is_reply(m)) {
            seen.insert(m.path.clone());
            return m;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "{what}: not delivered; maillog:\n{}",
            rig.maillog()
        );
        // Each poll reads every dump, the 100 MiB ones included.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Header fields as raw bytes (folds included), without Received and our prefixed fields.
fn comparable_header(m: &SinkMessage) -> Vec<Vec<u8>> {
    let msg = m.message();
    let head = &msg[..msg.len() - m.body().len()];
    let mut fields: Vec<Vec<u8>> = Vec::new();
    for line in head.split_inclusive(|&b| b == b'\n') {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(last) = fields.last_mut() {
                last.extend_from_slice(line);
            }
        } else {
            fields.push(line.to_vec());
        }
    }
    fields
        .into_iter()
        .filter(|f| {
            let lower = f.to_ascii_lowercase();
            !lower.starts_with(b"received:") && !lower.starts_with(b"x-helpdesk-") && lower != b"\n"
        })
        .collect()
}

/// Postfix's cleanup cuts a header field at this many bytes when a milter is configured
/// (cleanup_message.c, KLUDGE_HEADER_LIMIT), whatever header_size_limit says.
const POSTFIX_MILTER_HEADER_CUT: usize = 60_000;

/// Whether the header fields delivered through the milter are those delivered without it, but
/// for Postfix's own cut of a field longer than POSTFIX_MILTER_HEADER_CUT (these fields have no
/// folds, so the cut falls at the limit exactly).
fn comparable_fields(milter: &[Vec<u8>], plain: &[Vec<u8>]) -> bool {
    milter.len() == plain.len()
        && milter.iter().zip(plain).all(|(m, p)| {
            m == p
                || (p.len() > POSTFIX_MILTER_HEADER_CUT
                    && m.len() == POSTFIX_MILTER_HEADER_CUT + 1
                    && m[..POSTFIX_MILTER_HEADER_CUT] == p[..POSTFIX_MILTER_HEADER_CUT])
        })
}

/// The first field that differs between two headers, shortened, for a failure message.
fn first_difference(a: &[Vec<u8>], b: &[Vec<u8>]) -> String {
    let short = |f: Option<&Vec<u8>>| {
        f.map_or_else(
            || "(none)".to_string(),
            |f| format!("{:?}", String::from_utf8_lossy(&f[..f.len().min(120)])),
        )
    };
    let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    format!(
        "field {i}: with the milter {}, without {} ({} and {} fields)",
        short(a.get(i)),
        short(b.get(i)),
        a.len(),
        b.len()
    )
}

#[test]
fn postfix_every_hostile_case_is_delivered_intact_classified_and_answered_once() {
    let milter_port = free_port();
    let rig = PostfixRig::start(RigOptions {
        milter: Some(format!("inet:127.0.0.1:{milter_port}")),
        default_action: "tempfail".into(),
        extra_main_cf: raised_limits(),
    });
    // Replies go back through the milter smtpd, as on the mail host.
    let daemon = Daemon::start_on(
        milter_port,
        &format!("[autoreply]\nrelay = \"smtp://127.0.0.1:{}\"\nretry_interval = \"1s\"", rig.smtpd_port()),
    );
    let cases = cases(&run_tag(), 100 * MIB);
    let mut seen = HashSet::new();
    for case in &cases {
        let t0 = Instant::now();
        rig.send(Some(&case.sender), &[HELPDESK], &case.message)
            .unwrap_or_else(|e| panic!("{}: refused through the milter: {e}\n{}", case.name, daemon.log()));
        let triaged = next_delivery(&rig, &mut seen, case.name);
        let milter_time = t0.elapsed();
        let t1 = Instant::now();
        rig.send_to(rig.reinject_port(), Some(&case.sender), &[HELPDESK], &case.message)
            .unwrap_or_else(|e| panic!("{}: refused without the milter: {e}", case.name));
        let plain = next_delivery(&rig, &mut seen, case.name);
        eprintln!(
            "postfix {}: {} bytes, through the milter {} ms, without {} ms",
            case.name,
            case.message.len(),
            milter_time.as_millis(),
            t1.elapsed().as_millis()
        );
        assert_eq!(triaged.header("X-HelpDesk-Class"), vec!["support"], "{}", case.name);
        assert_eq!(triaged.header("X-HelpDesk-Priority"), vec!["normal"], "{}", case.name);
        assert_eq!(triaged.header("X-HelpDesk-Autoreply"), vec!["queued"], "{}", case.name);
        assert!(
            triaged.body() == plain.body(),
            "{}: the body differs from the delivery without the milter",
            case.name
        );
        let (a, b) = (comparable_header(&triaged), comparable_header(&plain));
        assert!(
            comparable_fields(&a, &b),
            "{}: the header differs from the delivery without the milter: {}",
            case.name,
            first_difference(&a, &b)
        );
        if case.name == "long-header-line" {
            // Without the milter the raised limits deliver the 1 MiB line whole; with it, Postfix
            // cut it (so the milter protocol's 1 MiB frame limit is out of reach through Postfix).
            assert_eq!(plain.header("X-Long")[0].len(), MIB - "X-Long: \r\n".len());
            assert_eq!(triaged.header("X-Long")[0].len(), POSTFIX_MILTER_HEADER_CUT - "X-Long: ".len());
        }
        let mut prefixed: Vec<String> = triaged
            .headers()
            .into_iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .filter(|n| n.starts_with("x-helpdesk-"))
            .collect();
        let all = prefixed.len();
        prefixed.sort();
        prefixed.dedup();
        assert!(
            all == prefixed.len() && prefixed.iter().all(|n| OURS.contains(&n.as_str())),
            "{}: a forged field survived: {prefixed:?}",
            case.name
        );
        // Without the milter the forged fields arrive, so the case did carry them.
        assert!(!plain.header("X-HelpDesk-Class").is_empty(), "{}", case.name);
    }

    // One reply per sender, each clean.
    let t0 = Instant::now();
    let replies = loop {
        let r: Vec<SinkMessage> = rig.messages().into_iter().filter(is_reply).collect();
        if r.len() >= cases.len() {
            break r;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{} replies of {}:\n{}",
            r.len(),
            cases.len(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        rig.messages().into_iter().filter(is_reply).count(),
        cases.len(),
        "no more than one reply per sender"
    );
    for case in &cases {
        let mine: Vec<&SinkMessage> =
            replies.iter().filter(|m| m.rcpts().contains(&format!("<{}>", case.sender))).collect();
        assert_eq!(mine.len(), 1, "{}: one reply", case.name);
        let reply = mine[0];
        assert_eq!(reply.rcpts(), vec![format!("<{}>", case.sender)], "{}: one recipient", case.name);
        assert_eq!(reply.mail_from(), "<>", "{}", case.name);
        assert_clean_reply(case, &case.sender, reply.message());
    }
    assert_alive_and_quiet(&daemon);
}

#[test]
fn the_classify_command_shows_the_same_triage_for_every_hostile_case() {
    // `classify` runs the daemon's end-of-message code on a whole message file (mail-parser
    // splits the header instead of Postfix): no crash, the same class and decision.
    let (daemon, _relay) = daemon_with_outbox();
    for case in cases(&run_tag(), 12 * MIB) {
        let out = daemon.classify(&case.message, &case.sender, &[HELPDESK]);
        assert!(out.contains(&"X-HelpDesk-Class: support".to_string()), "{}: {out:?}", case.name);
        assert!(out.contains(&"X-HelpDesk-Autoreply: queued".to_string()), "{}: {out:?}", case.name);
        assert!(
            out.iter()
                .all(|l| l.starts_with("X-HelpDesk-") || l.to_ascii_lowercase().starts_with("-x-helpdesk-")),
            "{}: {out:?}",
            case.name
        );
        assert!(
            out.iter().filter(|l| l.starts_with('-')).count() >= 3,
            "{}: forged fields removed: {out:?}",
            case.name
        );
    }
}
