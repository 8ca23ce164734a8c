//! The end-of-message decision: which header changes to make to one message.
//!
//! This is the one code path that both the milter's end-of-message callback and the `classify`
//! command run, so that `classify` shows exactly what the daemon would do.

use crate::address;
use crate::classify::{self, Class, Envelope, Signals};
use crate::config::Config;
use crate::message::MessageData;
use crate::policy::{self, Decision};
use crate::reply::{self, ReplyRequest};
use crate::reply_file::ReplyFile;
use crate::state::{ReplyState, Reservation, Topics};
use crate::tagging::{self, Tagging};
use mail_parser::{HeaderName, HeaderValue, Message};
use std::fmt;

/// What the end of message reads besides the message: the reply file in force, the reply
/// state, and the time.
pub struct Deps<'a> {
    /// None when auto-replies are off and no reply file is configured.
    pub reply_file: Option<&'a ReplyFile>,
    pub state: &'a ReplyState,
    /// Unix seconds.
    pub now: u64,
}

/// One change to the header of the incoming message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderChange {
    /// Delete the `index`-th (1-based, counted case-insensitively by name) instance of `name`.
    /// The name is kept as the MTA sent it, which need not be UTF-8.
    Delete { name: Vec<u8>, index: usize },
    /// Append a header at the end of the header.
    Add { name: String, value: String },
}

impl fmt::Display for HeaderChange {
    /// The `classify` output form: `-Name` for a removed header, `Name: value` for an added one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderChange::Delete { name, .. } => write!(f, "-{}", String::from_utf8_lossy(name)),
            HeaderChange::Add { name, value } => write!(f, "{name}: {value}"),
        }
    }
}

/// What the end of message decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triage {
    /// None when the message is not for a Help Desk address (it is left untouched).
    pub class: Option<Class>,
    pub signals: Signals,
    /// Header changes, in the order they are to be applied.
    pub changes: Vec<HeaderChange>,
    /// Ids of the reply file's topics recognised in a plaintext request.
    pub topics: Vec<String>,
    /// The auto-reply decision (None for mail not for the Help Desk).
    pub decision: Option<Decision>,
    /// The reply to send, with its reservation in the state, when the decision is `queued`.
    pub reply: Option<(ReplyRequest, Reservation)>,
    /// What the message asks of the tags of WhisperBack reports.
    pub tagging: Tagging,
}

impl Triage {
    pub fn removed(&self) -> usize {
        self.changes.iter().filter(|c| matches!(c, HeaderChange::Delete { .. })).count()
    }
}

/// Why no decision could be made; the caller applies the configured `on_error` policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriageError {
    /// More distinct forged prefix header names than can be tracked: they cannot all be removed.
    TooManyPrefixedHeaders,
}

impl fmt::Display for TriageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TriageError::TooManyPrefixedHeaders => {
                f.write_str("too many distinct triage-prefixed header names to remove them all")
            }
        }
    }
}

impl std::error::Error for TriageError {}

/// Decides the header changes for one message, with a state that decides at once (in memory):
/// what `classify` runs, and the tests. The milter runs the same three steps, [`assess`], the
/// state's decision and [`Assessed::finish`], asking the state asynchronously.
pub fn end_of_message(
    cfg: &Config,
    deps: &Deps<'_>,
    env: &Envelope,
    data: &MessageData,
) -> Result<Triage, TriageError> {
    let assessed = match assess(cfg, deps.reply_file, env, data)? {
        Assessment::NotOurs => return Ok(Triage::untouched()),
        Assessment::Ours(a) => a,
    };
    let state = assessed.pending.as_ref().map(|p| {
        let interval = cfg.autoreply.interval;
        deps.state.decide_with_topics(&p.canonical_sender, deps.now, interval, &p.topics, |view| {
            state_decision(cfg, view)
        })
    });
    Ok(assessed.finish(state))
}

/// The state rules' decision: the message rules passed, so only they remain.
pub fn state_decision(cfg: &Config, view: &crate::policy::StateView) -> Decision {
    policy::state_decision(&cfg.policy, view)
}

/// The end of message up to the state's decision.
pub enum Assessment {
    /// Not for a Help Desk address: left untouched.
    NotOurs,
    Ours(Box<Assessed>),
}

/// A message for the Help Desk, classified, its message rules applied.
pub struct Assessed {
    header_prefix: String,
    /// The Help Desk's settings, for the Message-ID given to a WhisperBack report.
    helpdesk: crate::config::HelpdeskConfig,
    /// The forged headers to remove: name and instance count.
    prefixed: Vec<(Vec<u8>, usize)>,
    class: Class,
    signals: Signals,
    topics: Vec<String>,
    /// The decision of the message rules, if they decided.
    decision: Option<Decision>,
    tagging: Tagging,
    /// When the message rules passed: what the state must decide about, and the reply to send
    /// if it reserves one.
    pub pending: Option<Pending>,
}

/// A reply the message rules allow: the state decides.
pub struct Pending {
    /// The key of the sender in the state (BATV and SRS undone).
    pub canonical_sender: String,
    /// The request's hot topics, and what a first reply would show.
    pub topics: Topics,
    pub request: ReplyRequest,
}

/// Classifies a message, finds its topics and applies the rules that depend on the message
/// alone. Pure.
pub fn assess(
    cfg: &Config,
    reply_file: Option<&ReplyFile>,
    env: &Envelope,
    data: &MessageData,
) -> Result<Assessment, TriageError> {
    if !env.recipients.iter().any(|r| cfg.is_helpdesk_address(r)) {
        return Ok(Assessment::NotOurs);
    }
    if data.prefixed_overflow() {
        return Err(TriageError::TooManyPrefixedHeaders);
    }
    let h = &cfg.helpdesk;
    let raw = data.to_rfc5322();
    let parsed = classify::parse(&raw);
    let signals = Signals::extract(h, env, parsed.as_ref(), data);
    let class = classify::classify(h, &signals);
    let text = if signals.encrypted { None } else { parsed.as_ref().and_then(|m| m.body_text(0)) };

    // Topics are recognised in plaintext requests only: ciphertext says nothing.
    let topics = match (reply_file, class) {
        (Some(file), Class::Support | Class::Followup) if !signals.encrypted => {
            let subject = signals.subject.as_deref().unwrap_or_default();
            file.match_topics(&format!("{subject}\n{}", text.as_deref().unwrap_or_default()))
        }
        _ => Vec::new(),
    };

    let tagging = tagging::tagging(h, reply_file, env, &signals);
    // Without a reply file there is nothing to send: as if replies were switched off. A tag is
    // no request.
    let decision = if reply_file.is_none() {
        Some(Decision::Suppressed(policy::Reason::Disabled))
    } else if matches!(tagging, Tagging::Tag { .. }) {
        Some(Decision::Suppressed(policy::Reason::Tag))
    } else {
        policy::message_rules(&cfg.policy, &signals, class).map(Decision::Suppressed)
    };
    let pending = decision.is_none().then(|| Pending {
        canonical_sender: address::canonical_sender(&env.sender),
        topics: state_topics(reply_file, &topics),
        // Only a new request gets here (the class rule): its topics lead the reply.
        request: reply_request(env, parsed.as_ref(), text.as_deref(), &topics),
    });
    Ok(Assessment::Ours(Box::new(Assessed {
        header_prefix: h.header_prefix.clone(),
        helpdesk: h.clone(),
        prefixed: data.prefixed_headers().to_vec(),
        class,
        signals,
        topics,
        decision,
        tagging,
        pending,
    })))
}

/// The request's matched topics that are hot in the reply file in force.
fn state_topics(reply_file: Option<&ReplyFile>, matched: &[String]) -> Topics {
    let hot = reply_file.map(|f| f.hot_topics.as_slice()).unwrap_or_default();
    Topics { hot_matched: matched.iter().filter(|t| hot.contains(t)).cloned().collect() }
}

impl Triage {
    /// The triage of mail that is not for the Help Desk: nothing to change.
    pub fn untouched() -> Triage {
        Triage {
            class: None,
            signals: Signals::default(),
            changes: Vec::new(),
            topics: Vec::new(),
            decision: None,
            reply: None,
            tagging: Tagging::None,
        }
    }
}

impl Assessed {
    /// The header changes, once the state decided (`state` is None when the message rules had).
    pub fn finish(mut self, state: Option<(Decision, Option<Reservation>)>) -> Triage {
        let mut reply = None;
        let decision = match (self.decision, state) {
            (Some(d), _) => d,
            (None, Some((d, reservation))) => {
                if let (Some(r), Some(mut p)) = (reservation, self.pending.take()) {
                    // One more reply leads with the new topics it is sent for.
                    if !r.first {
                        p.request.topics = r.topics.clone();
                    }
                    reply = Some((p.request, r));
                }
                d
            }
            (None, None) => Decision::Suppressed(policy::Reason::Class),
        };
        let changes = header_changes(&self, decision);
        Triage {
            class: Some(self.class),
            signals: self.signals,
            changes,
            topics: self.topics,
            decision: Some(decision),
            reply,
            tagging: self.tagging,
        }
    }
}

/// The forged headers removed, then ours added, in the order they are applied.
fn header_changes(a: &Assessed, decision: Decision) -> Vec<HeaderChange> {
    let mut changes = Vec::new();
    for (name, count) in &a.prefixed {
        // Highest index first, so that each deletion leaves the lower indexes in place.
        for index in (1..=*count).rev() {
            changes.push(HeaderChange::Delete { name: name.clone(), index });
        }
    }
    let p = &a.header_prefix;
    let mut add =
        |suffix: &str, value: String| changes.push(HeaderChange::Add { name: format!("{p}{suffix}"), value });
    add("Class", a.class.as_str().into());
    add("Priority", a.class.priority().as_str().into());
    if a.class == Class::Whisperback
        && let Some(id) = &a.signals.report_id
    {
        add("Report-Id", format!("wb:{id}"));
    }
    add("Encrypted", if a.signals.encrypted { "yes" } else { "no" }.into());
    if !a.signals.tags.is_empty() {
        add("Tags", a.signals.tags.join(", "));
    }
    if !a.topics.is_empty() {
        add("Topic", a.topics.join(", "));
    }
    if let Tagging::Tag { reports, topics } = &a.tagging {
        let reports: Vec<String> = reports.iter().map(|r| format!("wb:{r}")).collect();
        add("Tagged", format!("{} {}", reports.join(" "), topics.join(", ")));
    }
    add("Autoreply", decision.header_value());
    // A Message-ID derived from the report ID makes every reply to the report name it in clear,
    // even with an encrypted Subject (see tagging). WhisperBack sends none; one that a relay or
    // Postfix added is replaced (it names nothing that anyone replied to yet).
    if a.class == Class::Whisperback
        && let Some(id) = &a.signals.report_id
    {
        let value = tagging::report_message_id(&a.helpdesk, id);
        let bare = |v: &str| v.trim().trim_start_matches('<').trim_end_matches('>').to_ascii_lowercase();
        let ours = a.signals.message_ids.len() == 1 && bare(&a.signals.message_ids[0]) == bare(&value);
        if !ours {
            for index in (1..=a.signals.message_ids.len()).rev() {
                changes.push(HeaderChange::Delete { name: b"Message-ID".to_vec(), index });
            }
            changes.push(HeaderChange::Add { name: "Message-ID".into(), value });
        }
    }
    changes
}

/// IDs of a Message-ID-like header, without angle brackets; those unfit for a header left out.
fn ids(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|id| is_clean_id(id))
    .collect()
}

/// Whether a message ID can be written into the reply's In-Reply-To and References as it is:
/// mail-builder writes IDs raw, and a bare CR kept by the parser would end the header line for
/// some readers (header injection); white space or brackets make no valid ID either.
fn is_clean_id(id: &str) -> bool {
    !id.is_empty() && !id.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
}

/// What the reply needs from the incoming message, and the topics matched in it, which the reply
/// leads with. Nothing of its content is quoted.
pub fn reply_request(
    env: &Envelope,
    msg: Option<&Message<'_>>,
    text: Option<&str>,
    topics: &[String],
) -> ReplyRequest {
    let mut req = ReplyRequest {
        recipient: env.sender_exact.clone(),
        topics: topics.to_vec(),
        ..ReplyRequest::default()
    };
    let Some(msg) = msg else { return req };
    // The To: display name comes from a header whose address is the envelope sender (Pigeonhole).
    req.to_name = [HeaderName::Sender, HeaderName::ResentFrom, HeaderName::From].iter().find_map(|name| {
        msg.header(name.clone())?
            .as_address()?
            .iter()
            .find(|a| a.address().is_some_and(|x| address::normalize(x) == env.sender))?
            .name()
            .map(|n| n.replace(['\r', '\n'], " "))
    });
    req.message_id = msg.message_id().filter(|id| is_clean_id(id)).map(str::to_string);
    req.references = ids(msg.references());
    if req.references.is_empty() {
        req.references = ids(msg.in_reply_to());
        req.references.truncate(1);
    }
    if let Some(langs) = msg.header(HeaderName::ContentLanguage) {
        let raw = match langs {
            HeaderValue::Text(t) => t.to_string(),
            HeaderValue::TextList(l) => l.join(","),
            _ => String::new(),
        };
        req.languages.extend(raw.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()));
    }
    req.text_sample = text.map(|t| reply::sample(t).to_string()).unwrap_or_default();
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn run(sender: &str, rcpts: &[&str], raw: &str) -> Triage {
        let cfg = Config::defaults(Path::new("/x.toml"));
        let data = MessageData::from_rfc5322(raw.as_bytes(), &cfg.helpdesk.header_prefix, 1 << 18, 1 << 16);
        let state = ReplyState::in_memory();
        let deps = Deps { reply_file: None, state: &state, now: 1_000_000 };
        end_of_message(&cfg, &deps, &Envelope::new(sender, rcpts), &data).unwrap()
    }

    fn lines(t: &Triage) -> Vec<String> {
        t.changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn other_mail_is_untouched() {
        let t = run("a@example.org", &["bob@example.org"], "X-HelpDesk-Class: team\nSubject: x\n\nx");
        assert_eq!(t.class, None);
        assert!(t.changes.is_empty());
    }

    #[test]
    fn forged_headers_are_removed_before_ours_are_added() {
        let raw = "X-HelpDesk-Class: team\nSubject: [FT] help\nx-helpdesk-priority: high\nX-HELPDESK-CLASS: team\n\nx";
        let t = run("alice@example.org", &["other@example.org", "Support@Tails.net"], raw);
        assert_eq!(
            lines(&t),
            vec![
                "-X-HelpDesk-Class",
                "-X-HelpDesk-Class",
                "-x-helpdesk-priority",
                "X-HelpDesk-Class: support",
                "X-HelpDesk-Priority: normal",
                "X-HelpDesk-Encrypted: no",
                "X-HelpDesk-Tags: FT",
                "X-HelpDesk-Autoreply: suppressed (disabled)",
            ]
        );
        assert_eq!(t.changes[0], HeaderChange::Delete { name: b"X-HelpDesk-Class".to_vec(), index: 2 });
        assert_eq!(t.changes[1], HeaderChange::Delete { name: b"X-HelpDesk-Class".to_vec(), index: 1 });
        assert_eq!(t.removed(), 3);
    }

    #[test]
    fn whisperback_gets_its_report_id() {
        let raw = include_str!("../tests/data/whisperback-sample.eml");
        let t = run("devnull@tails.boum.org", &["support@tails.net"], raw);
        assert_eq!(
            lines(&t),
            vec![
                "X-HelpDesk-Class: whisperback",
                "X-HelpDesk-Priority: normal",
                "X-HelpDesk-Report-Id: wb:4ffd523ac6b83288ba219a6a55f4971b",
                "X-HelpDesk-Encrypted: yes",
                "X-HelpDesk-Autoreply: suppressed (disabled)",
                "Message-ID: <whisperback.4ffd523ac6b83288ba219a6a55f4971b@tails.net>",
            ]
        );
        // A Message-ID that a relay added is replaced: replies must name the report.
        let relayed = format!("Message-ID: <20261201.ABC@relay.example>\n{raw}");
        let t = run("devnull@tails.boum.org", &["support@tails.net"], &relayed);
        let l = lines(&t);
        assert_eq!(
            &l[l.len() - 2..],
            ["-Message-ID", "Message-ID: <whisperback.4ffd523ac6b83288ba219a6a55f4971b@tails.net>"]
        );
        // Already the report's own (a second pass through the milter): left as it is.
        let own = format!("Message-ID: <whisperback.4ffd523ac6b83288ba219a6a55f4971b@tails.net>\n{raw}");
        let t = run("devnull@tails.boum.org", &["support@tails.net"], &own);
        assert!(!lines(&t).iter().any(|l| l.contains("Message-ID")), "{:?}", lines(&t));
    }

    #[test]
    fn priorities_follow_the_class() {
        let cfg = Config::defaults(Path::new("/x.toml"));
        let data = MessageData::from_rfc5322(b"From: bob@tails.net\n\nx", "X-HelpDesk-", 1 << 18, 1 << 16);
        let state = ReplyState::in_memory();
        let deps = Deps { reply_file: None, state: &state, now: 1_000_000 };
        let env = Envelope::new("bob@tails.net", ["support@tails.net"]).with_sasl_login(Some("bob"));
        assert!(
            lines(&end_of_message(&cfg, &deps, &env, &data).unwrap())
                .contains(&"X-HelpDesk-Priority: high".to_string())
        );
        // Claiming the address is not enough (issue 12, point 5).
        assert!(
            lines(&run("bob@tails.net", &["support@tails.net"], "From: bob@tails.net\n\nx"))
                .contains(&"X-HelpDesk-Class: support".to_string())
        );
        assert!(
            lines(&run("", &["support@tails.net"], "From: x@y.org\n\nx"))
                .contains(&"X-HelpDesk-Priority: low".to_string())
        );
    }

    #[test]
    fn message_ids_with_a_bare_cr_or_white_space_are_not_carried_into_the_reply() {
        let env = Envelope::new("eve@example.org", ["support@tails.net"]);
        let raw = "From: eve@example.org\r\nMessage-ID: <a\rBcc: victim@example.net>\r\nReferences: <ok@x> <b\rc@x>\r\n <d e@x>\r\n\r\nhi";
        let msg = crate::classify::parse(raw.as_bytes());
        let req = reply_request(&env, msg.as_ref(), None, &[]);
        assert_eq!(req.message_id, None);
        assert_eq!(req.references, vec!["ok@x"]);
        let raw =
            "From: eve@example.org\r\nMessage-ID: <fine.1@example.org>\r\nIn-Reply-To: <x\ry@z>\r\n\r\nhi";
        let msg = crate::classify::parse(raw.as_bytes());
        let req = reply_request(&env, msg.as_ref(), None, &[]);
        assert_eq!(req.message_id.as_deref(), Some("fine.1@example.org"));
        assert!(req.references.is_empty());
    }

    #[test]
    fn a_wrapped_encrypted_message_is_encrypted_and_gets_no_topics() {
        // Issue 12, point 1: a list's footer around PGP/MIME.
        let cfg = Config::defaults(Path::new("/x.toml"));
        let file =
            ReplyFile::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/reply.toml"))).unwrap();
        let state = ReplyState::in_memory();
        let deps = Deps { reply_file: Some(&file), state: &state, now: 1_000_000 };
        let env = Envelope::new("alice@example.org", ["support@tails.net"]);
        let triage = |raw: &str| {
            let data = MessageData::from_rfc5322(raw.as_bytes(), "X-HelpDesk-", 1 << 18, 1 << 16);
            end_of_message(&cfg, &deps, &env, &data).unwrap()
        };
        let t = triage(crate::classify::tests::WRAPPED_PGP);
        assert!(lines(&t).contains(&"X-HelpDesk-Encrypted: yes".to_string()), "{:?}", lines(&t));
        assert!(t.topics.is_empty(), "{:?}", t.topics);
        // The same words in plaintext are recognised: the test can tell.
        let plain = "From: alice@example.org\nTo: support@tails.net\nSubject: x\n\nMy persistent storage does not unlock.\n";
        assert_eq!(triage(plain).topics, vec!["persistent-storage-unlock"]);
    }

    #[test]
    fn nothing_from_the_message_is_copied_into_headers() {
        let raw = "From: secret-person@example.org\nSubject: my secret [FT]\n\nsecret body";
        for c in run("secret-person@example.org", &["support@tails.net"], raw).changes {
            let s = c.to_string();
            assert!(!s.contains("secret"), "{s}");
        }
    }
}
