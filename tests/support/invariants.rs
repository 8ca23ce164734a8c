//! The invariants of the five fuzz targets, shared by the libFuzzer targets (fuzz/fuzz_targets,
//! through #[path]) and the property tests (tests/properties.rs), so that both check exactly the
//! same things. Each `check_*` function panics with a message naming the broken invariant.
//!
//! Only the library and its own dependencies (toml, sha2, tempfile) are used here, so that the
//! fuzz crate can include this file as it is.
#![allow(dead_code)]

use helpdesk_milter::classify::{Class, Envelope, Signals};
use helpdesk_milter::commands;
use helpdesk_milter::config::Config;
use helpdesk_milter::diagnostic::Diagnostics;
use helpdesk_milter::message::MessageData;
use helpdesk_milter::outbox::{self, Outbox};
use helpdesk_milter::policy::{self, Decision, PolicyConfig, Reason, StateView};
use helpdesk_milter::reply;
use helpdesk_milter::reply_file::{ReplyFile, normalize_for_matching};
use helpdesk_milter::state::ReplyState;
use helpdesk_milter::tagging;
use helpdesk_milter::triage::{self, Deps, HeaderChange, Triage, TriageError};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

/// A fixed "now" (unix seconds), so that runs are reproducible.
pub const T0: u64 = 1_776_157_961;

/// Postfix passes the body in chunks of at most this many bytes.
pub const MILTER_CHUNK: usize = 65535;

/// The example configuration and the test reply file, as shipped.
pub const ETC_CONFIG: &str = include_str!("../../etc/helpdesk-milter.toml");
pub const ETC_REPLY: &str = include_str!("../../etc/reply.toml");
pub const TEST_REPLY: &str = include_str!("../data/reply.toml");

/// Configurations the classify target picks from: the shipped one; a small and unusual one
/// (tiny limits so that truncation and the prefixed-name overflow are reachable, another
/// prefix, two addresses, an alias, DKIM-verified team mail, a cap of one reply an hour); and
/// one with auto-replies off.
const SMALL_CONFIG: &str = r#"
[milter]
max_header_bytes = 1024
max_body_bytes = 64
[helpdesk]
addresses = ["support@tails.net", "Help-Desk@Example.ORG"]
aliases = ["old-support@boum.org"]
header_prefix = "X-Triage-"
subject_tags = ["FT", "ft2", "Ü"]
team_require_dkim = true
trusted_authserv_ids = ["mx.tails.net"]
spam_headers = ["X-Spam-Flag: YES", "X-Spam: yes"]
[autoreply]
require_addressed = false
max_per_hour = 1
max_per_domain_per_hour = 1
interval = "1m"
allow_short_interval = true
system_addresses = ["root@mail.tails.net"]
"#;
const OFF_CONFIG: &str = "[autoreply]\nenabled = false\n";

pub struct Fixtures {
    pub configs: Vec<Config>,
    pub reply_file: ReplyFile,
}

pub static FIXTURES: LazyLock<Fixtures> = LazyLock::new(|| {
    let path = Path::new("/etc/helpdesk-milter/helpdesk-milter.toml");
    let configs = [ETC_CONFIG, SMALL_CONFIG, OFF_CONFIG]
        .iter()
        .map(|t| Config::parse(path, t).unwrap_or_else(|e| panic!("fixture config: {e}")))
        .collect();
    let reply_file = ReplyFile::parse(Path::new("/etc/helpdesk-milter/reply.toml"), TEST_REPLY)
        .unwrap_or_else(|e| panic!("fixture reply file: {e}"));
    Fixtures { configs, reply_file }
});

// ---------------------------------------------------------------------------------------------
// classify

/// One message with its envelope, as the milter would receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifyCase {
    /// Index into `FIXTURES.configs` (taken modulo their number).
    pub config: usize,
    pub with_reply_file: bool,
    /// MAIL FROM as the MTA passes it; None: derived from the message as `classify` does.
    pub sender: Option<String>,
    /// RCPT TO as the MTA passes them; empty: the first Help Desk address.
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
    /// Body chunk size (at least 1).
    pub chunk: usize,
    pub now: u64,
    /// The sender was answered a minute ago.
    pub answered: bool,
    /// Replies already queued this hour to other senders (half of them of the sender's domain).
    pub prior: u8,
}

impl ClassifyCase {
    pub fn new(message: Vec<u8>) -> Self {
        ClassifyCase {
            config: 0,
            with_reply_file: true,
            sender: None,
            recipients: Vec::new(),
            message,
            chunk: MILTER_CHUNK,
            now: T0,
            answered: false,
            prior: 0,
        }
    }

    /// Reads a fuzz input: an optional first line `#!env` with space-separated settings
    /// (`from=ADDR to=ADDR cfg=N chunk=N now=N prior=N noreply answered`; `%XX` escapes any byte
    /// in a value; `to=H0`, `to=H1` name the configuration's Help Desk addresses), then the
    /// message. Without that line the input is all message, with the default envelope.
    pub fn from_fuzz_input(data: &[u8]) -> Self {
        let Some(rest) = data.strip_prefix(b"#!env") else { return ClassifyCase::new(data.to_vec()) };
        let (line, message) = match rest.iter().position(|&b| b == b'\n') {
            Some(p) => (&rest[..p], &rest[p + 1..]),
            None => (rest, &[][..]),
        };
        let mut case = ClassifyCase::new(message.to_vec());
        for token in line.split(|&b| b == b' ' || b == b'\t').filter(|t| !t.is_empty()) {
            let (key, value) = match token.iter().position(|&b| b == b'=') {
                Some(p) => (&token[..p], percent_decode(&token[p + 1..])),
                None => (token, String::new()),
            };
            let number = || value.parse::<u64>().ok();
            match key {
                b"from" => case.sender = Some(value),
                b"to" => case.recipients.push(value),
                b"cfg" => case.config = number().unwrap_or(0) as usize,
                b"chunk" => case.chunk = number().unwrap_or(MILTER_CHUNK as u64).clamp(1, 1 << 20) as usize,
                b"now" => case.now = number().unwrap_or(T0),
                b"prior" => case.prior = number().unwrap_or(0).min(255) as u8,
                b"noreply" => case.with_reply_file = false,
                b"answered" => case.answered = true,
                _ => {}
            }
        }
        case
    }

    pub fn config(&self) -> &'static Config {
        let configs = &FIXTURES.configs;
        &configs[self.config % configs.len()]
    }

    /// The envelope the milter would see.
    pub fn envelope(&self) -> Envelope {
        let cfg = self.config();
        let rcpts: Vec<String> = self
            .recipients
            .iter()
            .map(|r| match r.as_str() {
                "H0" | "H1" => {
                    let a = &cfg.helpdesk.addresses;
                    let i = usize::from(r == "H1") % a.len();
                    // Any case and angle brackets: the MTA passes the address as written.
                    if i == 1 { format!("<{}>", a[i].to_uppercase()) } else { a[i].clone() }
                }
                other => other.to_string(),
            })
            .collect();
        let data = commands::read_message(cfg, &self.message[..]).expect("reading from memory");
        commands::default_envelope(cfg, &data, self.sender.as_deref(), &rcpts)
    }
}

fn percent_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let hex = v.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (v[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A header field as the MTA passes it: name and value.
pub type Field = (Vec<u8>, Vec<u8>);

/// Splits a message as Postfix passes it to a milter: header fields (name without the colon and
/// trailing blanks, value without the first space, folds joined by `\n`, cut at a NUL since the
/// protocol carries C strings) until an empty line or a line that is not a field, then the body.
pub fn split_message(raw: &[u8]) -> (Vec<Field>, &[u8]) {
    let mut headers: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let end = raw[pos..].iter().position(|&b| b == b'\n').map_or(raw.len(), |p| pos + p);
        let next = (end + 1).min(raw.len());
        let line = &raw[pos..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return (headers, &raw[next..]);
        }
        if matches!(line[0], b' ' | b'\t')
            && let Some((_, value)) = headers.last_mut()
        {
            value.push(b'\n');
            value.extend_from_slice(cut_at_nul(line));
            pos = next;
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { break };
        let name = line[..colon].trim_ascii_end();
        if name.is_empty() || name.iter().any(|&b| b == 0 || b.is_ascii_whitespace()) {
            break;
        }
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        headers.push((name.to_vec(), cut_at_nul(value).to_vec()));
        pos = next;
    }
    (headers, &raw[pos..])
}

fn cut_at_nul(v: &[u8]) -> &[u8] {
    v.iter().position(|&b| b == 0).map_or(v, |p| &v[..p])
}

/// Fills a MessageData as the milter's callbacks do: header by header, then the body in chunks
/// until the data wants no more (the milter then answers Skip).
pub fn feed(cfg: &Config, headers: &[Field], body: &[u8], chunk: usize) -> MessageData {
    let m = &cfg.milter;
    let mut data = MessageData::new(&cfg.helpdesk.header_prefix, m.max_header_bytes, m.max_body_bytes);
    for (name, value) in headers {
        data.add_header(name, value);
    }
    for c in body.chunks(chunk.max(1)) {
        if !data.add_body(c) {
            break;
        }
    }
    data
}

/// Runs one end of message with a fresh in-memory state prepared as the case says.
pub fn run_classify(case: &ClassifyCase) -> Result<Triage, TriageError> {
    let cfg = case.config();
    let env = case.envelope();
    let (headers, body) = split_message(&case.message);
    let data = feed(cfg, &headers, body, case.chunk);
    let state = ReplyState::in_memory();
    prepare_state(&state, cfg, &env, case);
    let reply_file = case.with_reply_file.then_some(&FIXTURES.reply_file);
    let deps = Deps { reply_file, state: &state, now: case.now };
    triage::end_of_message(cfg, &deps, &env, &data)
}

fn prepare_state(state: &ReplyState, cfg: &Config, env: &Envelope, case: &ClassifyCase) {
    let interval = cfg.autoreply.interval;
    let then = case.now.saturating_sub(60);
    let domain = env.sender.rsplit_once('@').map_or("example.org", |(_, d)| d);
    for i in 0..case.prior {
        let other =
            if i % 2 == 0 { format!("other{i}@{domain}") } else { format!("other{i}@elsewhere.example") };
        state.decide_and_reserve(&other, then, interval, |_| Decision::Queued);
    }
    if case.answered {
        state.decide_and_reserve(
            &helpdesk_milter::address::canonical_sender(&env.sender),
            then,
            interval,
            |_| Decision::Queued,
        );
    }
}

/// The triage with the reservation's keys left out: they are HMACs under a random per-state
/// secret, so two fresh states give two keys for the same sender.
fn comparable(r: &Result<Triage, TriageError>) -> Result<Triage, TriageError> {
    r.clone().map(|mut t| {
        if let Some((_, res)) = t.reply.as_mut() {
            res.key = [0; 32];
            res.domain = [0; 32];
        }
        t
    })
}

/// The suffixes of the headers the triage adds.
const ADDED: [&str; 8] =
    ["Class", "Priority", "Report-Id", "Encrypted", "Tags", "Topic", "Tagged", "Autoreply"];

/// Checks every invariant of one end of message; returns the triage for callers that look further.
pub fn check_classify(case: &ClassifyCase) -> Result<Triage, TriageError> {
    let cfg = case.config();
    let env = case.envelope();
    let first = run_classify(case);
    // Deterministic: the same input with a fresh state gives the same triage.
    let second = run_classify(case);
    assert_eq!(comparable(&first), comparable(&second), "end_of_message is not deterministic");

    let prefix = cfg.helpdesk.header_prefix.to_ascii_lowercase();
    let (fed, _) = split_message(&case.message);
    let prefixed = |name: &[u8]| name.to_ascii_lowercase().starts_with(prefix.as_bytes());

    if !env.recipients.iter().any(|r| cfg.is_helpdesk_address(r)) {
        let t = first.as_ref().expect("mail not for the Help Desk never fails");
        assert!(
            t.class.is_none() && t.changes.is_empty() && t.decision.is_none() && t.reply.is_none(),
            "mail not for the Help Desk must be untouched: {t:?}"
        );
        return first;
    }

    let t = match &first {
        Ok(t) => t,
        Err(TriageError::TooManyPrefixedHeaders) => {
            // Allowed only when the forged names really are more than can be tracked.
            let mut distinct: Vec<Vec<u8>> =
                fed.iter().filter(|(n, _)| prefixed(n)).map(|(n, _)| n.to_ascii_lowercase()).collect();
            distinct.sort();
            distinct.dedup();
            let bytes: usize = distinct.iter().map(Vec::len).sum();
            assert!(
                bytes > cfg.milter.max_header_bytes,
                "TooManyPrefixedHeaders with only {bytes} bytes of distinct prefixed names"
            );
            return first;
        }
    };

    let class = t.class.expect("mail for the Help Desk has a class");
    let decision = t.decision.expect("mail for the Help Desk has an auto-reply decision");

    // A WhisperBack report gets the Message-ID that names its report ID (see tagging); any other
    // Message-ID of it is replaced, and no other message's Message-ID is touched.
    let report_message_id = match (class, &t.signals.report_id) {
        (Class::Whisperback, Some(id)) => Some(tagging::report_message_id(&cfg.helpdesk, id)),
        _ => None,
    };
    let replaced = |n: &[u8]| report_message_id.is_some() && n.eq_ignore_ascii_case(b"Message-ID");

    // Apply the changes as the MTA does, to the fields it passed: every prefixed field is gone,
    // every other one is kept in order, and no deletion misses.
    let mut fields: Vec<Field> = fed.clone();
    let mut added: Vec<(String, String)> = Vec::new();
    for change in &t.changes {
        match change {
            HeaderChange::Delete { name, index } => {
                assert!(added.is_empty(), "a deletion after an addition could remove our own header");
                assert!(prefixed(name) || replaced(name), "deletes a header without the prefix: {change:?}");
                let at = fields
                    .iter()
                    .enumerate()
                    .filter(|(_, (n, _))| n.eq_ignore_ascii_case(name))
                    .nth(index.saturating_sub(1))
                    .map(|(i, _)| i);
                let at = at.unwrap_or_else(|| panic!("deletes an instance that is not there: {change:?}"));
                assert!(*index >= 1, "indexes are 1-based: {change:?}");
                fields.remove(at);
            }
            HeaderChange::Add { name, value } if name == "Message-ID" => {
                assert_eq!(Some(value), report_message_id.as_ref(), "only a report's Message-ID is written");
            }
            HeaderChange::Add { name, value } => added.push((name.clone(), value.clone())),
        }
    }
    let ours = report_message_id.as_ref().is_some_and(|id| {
        let ids: Vec<_> = fed.iter().filter(|(n, _)| n.eq_ignore_ascii_case(b"Message-ID")).collect();
        ids.len() == 1 && String::from_utf8_lossy(&ids[0].1).trim().eq_ignore_ascii_case(id)
    });
    let kept: Vec<_> = fed.iter().filter(|(n, _)| !prefixed(n) && (ours || !replaced(n))).cloned().collect();
    assert_eq!(fields, kept, "after the changes: every prefixed field gone, every other one kept");

    // Every added header carries the prefix and a one-line value from a closed vocabulary:
    // nothing the writer wrote (address, Subject, body) is copied.
    let topic_ids: Vec<&str> = FIXTURES.reply_file.topics.iter().map(|t| t.id.as_str()).collect();
    let mut suffixes = Vec::new();
    for (name, value) in &added {
        let suffix =
            name.strip_prefix(&cfg.helpdesk.header_prefix).unwrap_or_else(|| panic!("{name}: no prefix"));
        assert!(ADDED.contains(&suffix), "unexpected header {name}");
        assert!(!value.contains(['\r', '\n', '\0']), "{name}: CR, LF or NUL in {value:?}");
        let list = |v: &str| v.split(", ").map(str::to_string).collect::<Vec<_>>();
        let ok = match suffix {
            "Class" => value == class.as_str(),
            "Priority" => value == class.priority().as_str(),
            "Encrypted" => value == if t.signals.encrypted { "yes" } else { "no" },
            "Autoreply" => *value == decision.header_value(),
            "Report-Id" => value
                .strip_prefix("wb:")
                .is_some_and(|id| (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())),
            "Tags" => list(value).iter().all(|tag| cfg.helpdesk.subject_tags.contains(tag)),
            "Topic" => list(value).iter().all(|id| topic_ids.contains(&id.as_str())),
            "Tagged" => value.split_once(' ').is_some_and(|(reports, topics)| {
                reports.split(' ').all(|r| r.starts_with("wb:"))
                    && list(topics).iter().all(|id| topic_ids.contains(&id.as_str()))
            }),
            _ => false,
        };
        assert!(ok, "{name}: {value:?} is not a value the triage writes");
        assert!(!suffixes.contains(&suffix), "{name} added twice");
        suffixes.push(suffix);
    }
    for required in ["Class", "Priority", "Encrypted", "Autoreply"] {
        assert!(suffixes.contains(&required), "{required} not added");
    }

    // A reply exactly when the decision is queued; a queued reply passed every message rule.
    assert_eq!(
        t.reply.is_some(),
        decision == Decision::Queued,
        "reply {:?} with decision {decision:?}",
        t.reply
    );
    if !case.with_reply_file {
        assert_eq!(decision, Decision::Suppressed(Reason::Disabled), "no reply file: nothing can be sent");
    }
    if let Some((request, reservation)) = &t.reply {
        assert_eq!(class, Class::Support, "only new requests are answered");
        assert!(!env.sender.is_empty(), "a null sender is never answered");
        assert_eq!(policy::message_rules(&cfg.policy, &t.signals, class), None);
        assert_eq!(request.recipient, env.sender_exact, "the reply goes to the envelope sender only");
        assert_eq!(request.topics, t.topics, "the reply leads with the topics matched in the request");
        assert_eq!(reservation.expiry, case.now.saturating_add(cfg.autoreply.interval.as_secs()));
        check_reply_message(cfg, request);
    }
    first
}

/// The reply built for a request: its header fields are exactly the ones we write (nothing from
/// the request can add a field), and it goes to the request's recipient.
fn check_reply_message(cfg: &Config, request: &reply::ReplyRequest) {
    let r = reply::build(&cfg.autoreply, &FIXTURES.reply_file, request, T0);
    assert_eq!(r.recipient, request.recipient);
    let text = r.message;
    let end = text.windows(4).position(|w| w == b"\r\n\r\n").expect("the reply has a header and a body");
    let mut names: Vec<String> = Vec::new();
    for line in text[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        let colon = line.iter().position(|&b| b == b':').expect("a header line is a field");
        names.push(String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase());
    }
    const ALLOWED: &[&str] = &[
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "auto-submitted",
        "precedence",
        "x-auto-response-suppress",
        "x-loop",
        "content-language",
        "x-hot-topics-revision",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    ];
    for n in &names {
        assert!(ALLOWED.contains(&n.as_str()), "the reply has an unexpected field {n:?}: {names:?}");
    }
    for once in ["from", "to", "subject", "auto-submitted", "message-id"] {
        assert_eq!(names.iter().filter(|n| *n == once).count(), 1, "{once} once in {names:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// policy

/// The reply rules of doc/reply-rules.md, written from its tables (not from src/policy.rs), in
/// the order in which the first reason is recorded.
pub fn expected_decision(cfg: &PolicyConfig, s: &Signals, class: Class, view: &StateView) -> Decision {
    let ours =
        |a: &str| cfg.own_addresses.iter().any(|o| o == a) || cfg.system_addresses.iter().any(|o| o == a);
    let looped = s.x_loop.iter().any(|v| {
        let v = v.trim().to_lowercase();
        v == "yes" || v == "true" || (!cfg.loop_token.is_empty() && v.contains(&cfg.loop_token))
    });
    let rules = [
        (!cfg.enabled, Reason::Disabled),
        (s.null_sender, Reason::NullSender),
        (s.undeliverable_sender, Reason::InvalidSender),
        (s.auto_submitted, Reason::AutoSubmitted),
        (s.precedence_bulk, Reason::Precedence),
        (s.list_headers, Reason::List),
        (s.auto_response_suppress, Reason::AutoResponseSuppress),
        (looped, Reason::Loop),
        (s.role_sender, Reason::RoleSender),
        (ours(&s.sender) || s.from.as_deref().is_some_and(ours), Reason::OwnAddress),
        (cfg.require_addressed && !s.addressed, Reason::NotAddressed),
        (s.spam, Reason::Spam),
        (s.autoresponder_headers || s.report, Reason::Bulk),
        (s.delivery_failure, Reason::DeliveryFailure),
        (s.abuse_report, Reason::AbuseReport),
        (s.out_of_office, Reason::OutOfOffice),
        (s.challenge, Reason::Challenge),
        (class != Class::Support, Reason::Class),
        (view.unavailable, Reason::Store),
        (view.answered_recently && !(cfg.new_topic_replies && view.new_topic), Reason::Interval),
        (
            view.replies_last_hour >= cfg.max_per_hour
                || view.domain_replies_last_hour >= cfg.max_per_domain_per_hour,
            Reason::Cap,
        ),
    ];
    // Within the interval, a reply is one more for a new hot topic.
    let queued = if view.answered_recently { Decision::QueuedNewTopic } else { Decision::Queued };
    rules.iter().find(|(hit, _)| *hit).map_or(queued, |(_, r)| Decision::Suppressed(*r))
}

/// Checks `policy::decide` on one input: the rules' decision and reason; message rules before
/// state rules; a suppressed message stays suppressed whatever else suppresses it too.
pub fn check_policy(cfg: &PolicyConfig, s: &Signals, class: Class, view: &StateView) {
    let d = policy::decide(cfg, s, class, view);
    assert_eq!(d, expected_decision(cfg, s, class, view), "decide disagrees with the rules");
    let split = policy::message_rules(cfg, s, class).or_else(|| policy::state_rules(cfg, view));
    let queued = if view.answered_recently { Decision::QueuedNewTopic } else { Decision::Queued };
    assert_eq!(d, split.map_or(queued, Decision::Suppressed));
    match d {
        Decision::Queued => assert_eq!(d.header_value(), "queued"),
        Decision::QueuedNewTopic => {
            assert_eq!(d.header_value(), "queued (new-topic)");
            assert!(cfg.new_topic_replies && view.new_topic && class == Class::Support);
            assert!(view.replies_last_hour < cfg.max_per_hour && !view.unavailable);
        }
        Decision::Suppressed(r) => assert_eq!(d.header_value(), format!("suppressed ({})", r.as_str())),
    }
    if d == Decision::Queued {
        assert!(cfg.enabled && !s.null_sender && class == Class::Support && !s.spam);
        assert!(view.replies_last_hour < cfg.max_per_hour && !view.answered_recently && !view.unavailable);
    }
    // Monotonic: one more reason to suppress never turns a suppressed decision into a reply.
    if !d.is_queued() {
        let flags: [fn(&mut Signals); 14] = [
            |s| s.undeliverable_sender = true,
            |s| s.delivery_failure = true,
            |s| s.abuse_report = true,
            |s| s.out_of_office = true,
            |s| s.challenge = true,
            |s| s.auto_submitted = true,
            |s| s.precedence_bulk = true,
            |s| s.list_headers = true,
            |s| s.auto_response_suppress = true,
            |s| s.role_sender = true,
            |s| s.spam = true,
            |s| s.autoresponder_headers = true,
            |s| s.report = true,
            |s| s.x_loop.push("yes".into()),
        ];
        for f in flags {
            let mut more = s.clone();
            f(&mut more);
            assert!(!policy::decide(cfg, &more, class, view).is_queued(), "a further signal queued a reply");
        }
        let busier = StateView {
            replies_last_hour: view.replies_last_hour.saturating_add(1),
            domain_replies_last_hour: view.domain_replies_last_hour.saturating_add(1),
            ..*view
        };
        assert_ne!(
            policy::decide(cfg, s, class, &busier),
            Decision::Queued,
            "more replies this hour queued one"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// reply file

/// Writes a reply file back as TOML, topics and languages in their order.
pub fn reply_file_to_toml(r: &ReplyFile) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let list = |v: &[String]| format!("[{}]", v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "));
    let mut out =
        format!("default_language = {}\nhot_topics = {}\n", q(&r.default_language), list(&r.hot_topics));
    for t in &r.topics {
        out += &format!(
            "\n[topics.{}]\ntitle = {}\nlink = {}\nkeywords = {}\n",
            q(&t.id),
            q(&t.title),
            q(&t.link),
            list(&t.keywords)
        );
        if let Some(text) = &t.text {
            out += &format!("text = {}\n", q(text));
        }
        // Every language of the topic as a section: title, text and keywords.
        let mut langs: Vec<&String> = t
            .translations
            .keys()
            .chain(t.text_translations.keys())
            .chain(t.language_keywords.keys())
            .collect();
        langs.sort();
        langs.dedup();
        for lang in langs {
            out += &format!("[topics.{}.translations.{}]\n", q(&t.id), q(lang));
            if let Some(title) = t.translations.get(lang) {
                out += &format!("title = {}\n", q(title));
            }
            if let Some(text) = t.text_translations.get(lang) {
                out += &format!("text = {}\n", q(text));
            }
            if let Some(keywords) = t.language_keywords.get(lang) {
                out += &format!("keywords = {}\n", list(keywords));
            }
        }
    }
    for (tag, l) in &r.languages {
        out += &format!("\n[languages.{}]\nsubject = {}\nbody = {}\n", q(tag), q(&l.subject), q(&l.body));
    }
    out
}

pub const REPLY_PATH: &str = "/etc/helpdesk-milter/reply.toml";

/// Checks `ReplyFile::parse` on any text; returns the parsed file when valid.
pub fn check_reply_file(text: &str) -> Option<ReplyFile> {
    let path = Path::new(REPLY_PATH);
    let r = parse_checked(path, text, ReplyFile::parse)?;
    assert!(r.languages.contains_key(&r.default_language), "the default language has a section");
    // Rendering works in every language, and in one that does not exist.
    for tag in r.languages.keys().map(String::as_str).chain(["", "xx-unknown", "DE"]) {
        let out = r.render(tag);
        assert!(r.languages.contains_key(&out.language), "rendered in {:?}", out.language);
        assert!(
            !out.subject.chars().any(|c| c.is_control()),
            "a control character in the subject {:?}",
            out.subject
        );
        assert!(!out.subject.trim().is_empty(), "empty subject");
        assert!(!out.body.contains("\r\n"), "CRLF in the body");
    }
    // Matching is deterministic, in file order, and every keyword finds its own topic.
    let ids: Vec<&str> = r.topics.iter().map(|t| t.id.as_str()).collect();
    let matched = r.match_topics(text);
    assert_eq!(matched, r.match_topics(text), "match_topics is not deterministic");
    let positions: Vec<usize> =
        matched.iter().map(|m| ids.iter().position(|i| i == m).expect("a matched id is a topic")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "topics not in file order: {matched:?}");
    for t in &r.topics {
        for k in t.keywords.iter().chain(t.language_keywords.values().flatten()) {
            assert!(!normalize_for_matching(k).is_empty());
            assert!(r.match_topics(k).contains(&t.id), "keyword {k:?} does not find its topic {}", t.id);
        }
    }
    // A reply that leads with topics: in every language, each topic once at the most, and as
    // the plain reply when it leads with none or with topics the file does not have.
    let all: Vec<String> = r.topics.iter().map(|t| t.id.clone()).collect();
    for tag in r.languages.keys() {
        let plain = r.render(tag);
        assert_eq!(r.render_leading(tag, &[]), plain);
        assert_eq!(r.render_leading(tag, &["no-such-topic".to_string()]), plain);
        let led = r.render_leading(tag, &all);
        assert_eq!((&led.language, &led.subject), (&plain.language, &plain.subject));
        assert!(!led.body.contains("\r\n"), "CRLF in the body");
    }
    // Round trip: written back as TOML and parsed again, the same file.
    let again_text = reply_file_to_toml(&r);
    let mut again = ReplyFile::parse(path, &again_text)
        .unwrap_or_else(|e| panic!("the written-back file is invalid: {e}\n{again_text}"));
    again.revision.clone_from(&r.revision);
    assert_eq!(again, r, "round trip through TOML changed the file:\n{again_text}");
    Some(r)
}

/// Parses twice (deterministic); an error has diagnostics, each pointing into the text.
fn parse_checked<T: PartialEq + std::fmt::Debug>(
    path: &Path,
    text: &str,
    parse: impl Fn(&Path, &str) -> Result<T, Diagnostics>,
) -> Option<T> {
    let parsed = parse(path, text);
    assert_eq!(parsed, parse(path, text), "parse is not deterministic");
    match parsed {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(!e.0.is_empty(), "an error without a diagnostic");
            check_diagnostics(&e.0, text, path);
            None
        }
    }
}

/// Every diagnostic points into the text and says something.
pub fn check_diagnostics(d: &[helpdesk_milter::diagnostic::Diagnostic], text: &str, path: &Path) {
    let lines = text.split('\n').count();
    for d in d {
        assert_eq!(d.file, path);
        assert!(!d.message.trim().is_empty(), "empty diagnostic");
        assert!(d.line >= 1 && d.column >= 1 && d.line <= lines, "{d} is outside the text ({lines} lines)");
    }
}

// ---------------------------------------------------------------------------------------------
// config

pub const CONFIG_PATH: &str = "/etc/helpdesk-milter/helpdesk-milter.toml";

/// Checks `Config::parse` on any text; returns the configuration when valid.
pub fn check_config(text: &str) -> Option<Config> {
    let c = parse_checked(Path::new(CONFIG_PATH), text, Config::parse)?;
    let (same, kept) = c.for_reload(c.clone());
    assert!(kept.is_empty() && same == c, "a configuration differs from itself: {kept:?}");
    // The checks the validator promises.
    assert!(!c.helpdesk.addresses.is_empty(), "no Help Desk address");
    for a in &c.helpdesk.addresses {
        assert!(c.is_helpdesk_address(a), "{a:?} is not recognised");
        assert!(c.is_helpdesk_address(&format!(" <{}> ", a.to_ascii_uppercase())), "{a:?} in capitals");
        assert!(
            a.rsplit_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty()),
            "{a:?} is not an address"
        );
        assert!(c.policy.own_addresses.contains(a), "{a:?} is not among the policy's own addresses");
    }
    let p = &c.helpdesk.header_prefix;
    assert!(!p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "prefix {p:?}");
    assert!(
        c.milter.max_header_bytes >= 1024 && c.milter.max_connections >= 1 && c.state.max_entries >= 1000
    );
    assert!(c.milter.socket_mode <= 0o777);
    let min = if c.autoreply.interval < Duration::from_secs(86400) { 60 } else { 86400 };
    assert!(c.autoreply.interval.as_secs() >= min);
    assert!(c.autoreply.max_per_hour >= 1 && c.autoreply.max_per_domain_per_hour >= 1);
    assert_eq!(c.policy.loop_token, c.autoreply.from_address);
    assert!(c.policy.own_addresses.contains(&c.autoreply.from_address));
    assert_eq!(c.policy.enabled, c.autoreply.enabled);
    assert!(["error", "warn", "info", "debug", "trace"].contains(&c.log_level.as_str()));
    for tag in &c.helpdesk.subject_tags {
        assert!(!tag.is_empty() && !tag.contains(['[', ']', ',']) && !tag.chars().any(char::is_control));
    }
    Some(c)
}

// ---------------------------------------------------------------------------------------------
// outbox

/// A scratch directory in memory when there is one: the outbox fsyncs every write.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::Builder::new().prefix("hm-inv-").tempdir_in(shm).expect("a temp dir in /dev/shm")
    } else {
        tempfile::tempdir().expect("a temp dir")
    }
}

const ENTRY_ID: &str = "0123456789abcdef0123456789abcdef";

/// What the header of an entry file claims, read independently of src/outbox.rs: message
/// length and checksum, and the id.
fn claimed(bytes: &[u8]) -> Option<(u64, String, String)> {
    let rest = bytes.strip_prefix(b"# helpdesk-milter outbox entry\n")?;
    let end = rest.windows(2).position(|w| w == b"\n\n")?;
    let table: toml::Table = std::str::from_utf8(&rest[..=end]).ok()?.parse().ok()?;
    let len = u64::try_from(table.get("message_len")?.as_integer()?).ok()?;
    let sha = table.get("message_sha256")?.as_str()?.to_string();
    let id = table.get("id")?.as_str()?.to_string();
    Some((len, sha, id))
}

/// Checks the outbox reader on any file content: never sendable unless its length and checksum
/// match; what is not sendable is moved to corrupt/, not lost and not left in the queue.
pub fn check_outbox_bytes(dir: &Path, bytes: &[u8]) {
    let decoded = outbox::decode(bytes);
    assert_eq!(decoded, outbox::decode(bytes), "decode is not deterministic");
    if let Ok(e) = &decoded {
        let (len, sha, id) = claimed(bytes).expect("a decoded entry has a readable header");
        assert_eq!(e.message.len() as u64, len, "length mismatch accepted");
        assert_eq!(hex_sha256(&e.message), sha, "checksum mismatch accepted");
        assert_eq!(e.id, id);
        assert!(bytes.ends_with(&e.message), "the message is the end of the file");
    }
    // Through the real directory scan.
    let ob = Outbox::open(&dir.join("outbox")).expect("outbox");
    let file = ob.dir().join(format!("{ENTRY_ID}.reply"));
    std::fs::write(&file, bytes).expect("write an entry file");
    let entries = ob.entries();
    let sendable = decoded.as_ref().is_ok_and(|e| e.id == ENTRY_ID);
    if sendable {
        assert_eq!(entries, vec![decoded.clone().unwrap()], "a valid entry is returned as it is");
        ob.remove(ENTRY_ID).expect("remove");
    } else {
        assert!(entries.is_empty(), "an invalid entry file was returned as sendable");
        assert!(!file.exists(), "an invalid entry file stays in the queue");
        let corrupt = ob.dir().join("corrupt");
        let kept: Vec<_> = std::fs::read_dir(&corrupt).expect("corrupt/").filter_map(Result::ok).collect();
        assert_eq!(kept.len(), 1, "the invalid file is kept in corrupt/");
        assert_eq!(std::fs::read(kept[0].path()).expect("read"), bytes, "quarantine keeps the bytes");
        std::fs::remove_dir_all(&corrupt).expect("clean corrupt/");
    }
}

fn hex_sha256(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks that an entry written by `Outbox::enqueue` reads back identical (or is refused up front).
pub fn check_outbox_round_trip(dir: &Path, recipient: &str, message: &[u8], now: u64) {
    let ob = Outbox::open(&dir.join("outbox")).expect("outbox");
    let id = match ob.enqueue(recipient, message, UNIX_EPOCH + Duration::from_secs(now)) {
        Ok(id) => id,
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "enqueue failed: {e}");
            assert!(
                recipient.is_empty() || recipient.chars().any(char::is_control) || message.len() > 10 << 20
            );
            return;
        }
    };
    let bytes = std::fs::read(ob.dir().join(format!("{id}.reply"))).expect("the entry file");
    let e = outbox::decode(&bytes).expect("an enqueued entry decodes");
    assert_eq!(
        (e.id.as_str(), e.recipient.as_str(), e.created, e.attempts, e.next_attempt, e.message.as_slice()),
        (id.as_str(), recipient, now, 0, now, message),
        "an enqueued entry reads back different"
    );
    assert_eq!(ob.entries(), vec![e], "the scan returns the entry");
    ob.remove(&id).expect("remove");
}
