//! The classifier: what kind of mail a message is, from its envelope, headers and the first bytes
//! of its body. Pure functions, no I/O.
//!
//! [`Signals::extract`] reads every fact the decisions need out of a parsed message (unfolded,
//! decoded, every instance of a header checked); [`classify`] then picks one class, first match wins.

use crate::address::{self, is_role_sender, matches_any};
use crate::auth_results;
use crate::config::HelpdeskConfig;
use crate::message::MessageData;
use crate::policy;
use mail_parser::{HeaderName, HeaderValue, Message, MessageParser, MimeHeaders, PartType};
use std::fmt;
use std::sync::LazyLock;

/// The SMTP envelope of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The MAIL FROM address, normalised; empty for the null sender `<>`.
    pub sender: String,
    /// The MAIL FROM address exactly as given (without angle brackets): replies go there.
    pub sender_exact: String,
    /// The RCPT TO addresses, normalised.
    pub recipients: Vec<String>,
    /// The SASL login of an authenticated submission on this host (Postfix's `{auth_authen}`),
    /// if any. A trust signal for team mail; never logged or stored.
    pub sasl_login: Option<String>,
}

impl Envelope {
    pub fn new(sender: &str, recipients: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let exact = sender.trim();
        let exact = exact.strip_prefix('<').unwrap_or(exact);
        let exact = exact.strip_suffix('>').unwrap_or(exact);
        Self {
            sender: address::normalize(sender),
            sender_exact: exact.trim().to_string(),
            recipients: recipients.into_iter().map(|r| address::normalize(r.as_ref())).collect(),
            sasl_login: None,
        }
    }

    /// The same envelope, submitted by the SASL login `login` (ignored when empty).
    pub fn with_sasl_login(mut self, login: Option<&str>) -> Self {
        self.sasl_login = login.map(str::trim).filter(|l| !l.is_empty()).map(str::to_string);
        self
    }
}

/// The class of a message: one per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    Whisperback,
    Spam,
    Automated,
    Team,
    Followup,
    Support,
}

impl Class {
    pub const ALL: [Class; 6] =
        [Class::Whisperback, Class::Spam, Class::Automated, Class::Team, Class::Followup, Class::Support];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Whisperback => "whisperback",
            Class::Spam => "spam",
            Class::Automated => "automated",
            Class::Team => "team",
            Class::Followup => "followup",
            Class::Support => "support",
        }
    }

    /// Mail from other teams comes first; machines and spam last.
    pub fn priority(self) -> Priority {
        match self {
            Class::Team => Priority::High,
            Class::Automated | Class::Spam => Priority::Low,
            _ => Priority::Normal,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    High,
    Normal,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// Why a message looks machine-made; the first one found is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutomatedSign {
    NullSender,
    Report,
    AutoSubmitted,
    Precedence,
    ListHeaders,
    AutoresponderHeaders,
    DeliveryFailure,
    AbuseReport,
    OutOfOffice,
    Challenge,
    RoleSender,
}

/// Every fact about a message that the decisions use. Nothing here is logged or stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signals {
    pub null_sender: bool,
    /// Normalised envelope sender (empty when null).
    pub sender: String,
    /// Normalised addr-spec of the first From: address, if any.
    pub from: Option<String>,
    /// Decoded Subject, if any.
    pub subject: Option<String>,
    /// Top-level `multipart/report` (DSN, MDN, ARF).
    pub report: bool,
    /// Some `Auto-Submitted` instance is not exactly `no` (empty or unparseable counts as auto).
    pub auto_submitted: bool,
    /// Some `Precedence` instance is bulk, list, junk or auto_reply.
    pub precedence_bulk: bool,
    /// A mailing-list header (RFC 2369/2919) is present.
    pub list_headers: bool,
    /// Another responder's or a bulk sender's marker (X-Autoreply, Feedback-ID, ...).
    pub autoresponder_headers: bool,
    /// A delivery failure or delay notice without `multipart/report`: a delivery-status or
    /// rfc822-headers part anywhere, or the Subject of a known MTA's or gateway's notice.
    pub delivery_failure: bool,
    /// An abuse report: an ARF feedback-report part anywhere, X-ARF, or a SpamCop report.
    pub abuse_report: bool,
    /// An out-of-office or vacation notice without `Auto-Submitted` (X-Apple-Action, known
    /// Subjects of Outlook, Lotus Notes and others).
    pub out_of_office: bool,
    /// A challenge-response system's request to confirm the message.
    pub challenge: bool,
    /// The envelope sender or the From: address is a role address (mailer-daemon, noreply, ...),
    /// BATV and SRS wrapping undone.
    pub role_sender: bool,
    /// The envelope sender is not null and not a deliverable Internet address (no domain, a
    /// single-label domain, an address literal, a malformed local part): never answered.
    pub undeliverable_sender: bool,
    /// An upstream scanner's spam verdict.
    pub spam: bool,
    /// In-Reply-To or References is present.
    pub in_thread: bool,
    /// PGP/MIME (`multipart/encrypted`) or S/MIME enveloped data at any depth of the MIME tree,
    /// or an inline PGP message in a text part, within the bounded prefix.
    pub encrypted: bool,
    /// The envelope sender is a WhisperBack sender.
    pub whisperback_sender: bool,
    /// The hex ID of a `Bug report: <id>` Subject, lowercased.
    pub report_id: Option<String>,
    /// The envelope sender or From: address matches `team_senders`.
    pub team_sender: bool,
    /// The From: address matches `team_senders` and a trusted verifier passed DKIM for its domain.
    pub team_dkim_verified: bool,
    /// The message came in as a SASL-authenticated submission on this host.
    pub sasl_authenticated: bool,
    /// Subject tags found, in configuration order.
    pub tags: Vec<String>,
    /// `X-Auto-Response-Suppress` asks for no auto-reply (All, AutoReply or OOF).
    pub auto_response_suppress: bool,
    /// Every `X-Loop` value, unfolded.
    pub x_loop: Vec<String>,
    /// A Help Desk address or alias is in To, Cc, Bcc, Resent-To, Resent-Cc or Resent-Bcc.
    pub addressed: bool,
    /// Whether the header or body limit cut the message short.
    pub truncated: bool,
}

/// Headers of the mailing-list standards (RFC 2369, 2919, 8058) and a common older one.
const LIST_HEADERS: &[&str] = &[
    "List-Id",
    "List-Help",
    "List-Subscribe",
    "List-Unsubscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "List-Unsubscribe-Post",
    "X-Mailing-List",
];

/// Markers of other autoresponders and bulk senders (autoreply-rules.md F11).
const AUTORESPONDER_HEADERS: &[&str] = &["X-Autoreply", "X-Autorespond", "X-Autogenerated", "Feedback-ID"];

const PGP_INLINE: &str = "-----BEGIN PGP MESSAGE-----";

/// Parses the kept part of a message. mail-parser never panics and returns None only when
/// there is nothing to parse; the empty message stands in then.
pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    PARSER.parse(raw)
}

/// mail-parser's default field parsers, except that Received fields are kept raw: nothing reads
/// them, and their tokenizer was the parser's largest cost in the milter's profile. Built once.
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    [
        HeaderName::ListArchive,
        HeaderName::ListHelp,
        HeaderName::ListId,
        HeaderName::ListOwner,
        HeaderName::ListPost,
        HeaderName::ListSubscribe,
        HeaderName::ListUnsubscribe,
    ]
    .into_iter()
    .fold(MessageParser::new(), |p, h| p.header_address(h))
    .with_mime_headers()
    .with_date_headers()
    .with_address_headers()
    .with_message_ids()
    .header_id(HeaderName::ReturnPath)
    .header_text(HeaderName::Subject)
    .header_text(HeaderName::Comments)
    .header_comma_separated(HeaderName::Keywords)
    .header_comma_separated(HeaderName::ContentLanguage)
    .header_raw(HeaderName::Received)
});

/// Removes CRLF folds and trims, for header values that mail-parser leaves raw.
fn unfold(v: &str) -> String {
    v.replace("\r\n", "").replace('\n', "").trim().to_string()
}

/// Text of every instance of a header, unfolded.
fn texts(msg: &Message<'_>, name: &str) -> Vec<String> {
    msg.headers()
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(|h| match &h.value {
            HeaderValue::Text(t) => unfold(t),
            HeaderValue::TextList(l) => unfold(&l.join(",")),
            HeaderValue::Empty => String::new(),
            // A header mail-parser gave a structured value: the rules read its raw text.
            _ => msg
                .raw_message()
                .get(h.offset_start as usize..h.offset_end as usize)
                .map_or_else(String::new, |raw| unfold(&String::from_utf8_lossy(raw))),
        })
        .collect()
}

fn present(msg: &Message<'_>, name: &str) -> bool {
    msg.headers().iter().any(|h| h.name.as_str().eq_ignore_ascii_case(name))
}

/// The keyword of an Auto-Submitted value (RFC 3834 §5): the first token, comments removed,
/// lowercased. Only comments, white space or `;` parameters may follow it; anything else makes
/// the value unparseable, returned as an empty keyword (which counts as automated).
pub fn auto_submitted_keyword(value: &str) -> String {
    let mut keyword = String::new();
    let mut depth = 0usize;
    let mut ended = false;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            ';' => break,
            c if c.is_whitespace() => ended |= !keyword.is_empty(),
            _ if ended => return String::new(),
            c => keyword.push(c),
        }
    }
    keyword.to_ascii_lowercase()
}

/// The ID in a WhisperBack Subject, `Bug report: <1-32 hex digits>`, anything before it allowed
/// (spam tags, `Re:`), nothing but white space after it.
pub fn whisperback_report_id(subject: &str) -> Option<String> {
    const MARK: &str = "bug report: ";
    let lower = subject.to_ascii_lowercase();
    let start = lower.rfind(MARK)? + MARK.len();
    let id = lower[start..].trim_end();
    (!id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
}

/// Subject tags such as `[FT]`, anywhere in the Subject, any case, in configuration order.
pub fn subject_tags(cfg_tags: &[String], subject: &str) -> Vec<String> {
    let lower = subject.to_lowercase();
    cfg_tags.iter().filter(|t| lower.contains(&format!("[{}]", t.to_lowercase()))).cloned().collect()
}

/// What the MIME tree of the kept prefix shows, from every part's type (mail-parser lists the
/// parts of nested multiparts flat; an attached message's own parts are its own).
#[derive(Debug, Default)]
struct Structure {
    encrypted: bool,
    delivery_report: bool,
    feedback_report: bool,
}

fn structure(msg: &Message<'_>) -> Structure {
    let mut st = Structure::default();
    for part in &msg.parts {
        if let PartType::Text(t) = &part.body
            && t.contains(PGP_INLINE)
        {
            st.encrypted = true;
        }
        let Some(ct) = part.content_type() else { continue };
        let main = ct.ctype().to_ascii_lowercase();
        let sub = ct.subtype().unwrap_or_default().to_ascii_lowercase();
        match (main.as_str(), sub.as_str()) {
            ("multipart", "encrypted") => st.encrypted = true,
            // RFC 8551: enveloped (and authenticated-enveloped) data is encrypted; signed-data
            // and certs-only are not.
            ("application", "pkcs7-mime" | "x-pkcs7-mime")
                if ct.attribute("smime-type").is_some_and(|t| {
                    t.eq_ignore_ascii_case("enveloped-data") || t.eq_ignore_ascii_case("authenveloped-data")
                }) =>
            {
                st.encrypted = true
            }
            // RFC 3464 and 6533 delivery status, RFC 6522 returned headers: the parts of a DSN,
            // also when a gateway sends them without multipart/report (corpus: flufl-bounce).
            ("message", "delivery-status" | "global-delivery-status") | ("text", "rfc822-headers") => {
                st.delivery_report = true
            }
            // RFC 5965 (ARF) feedback report.
            ("message", "feedback-report") => st.feedback_report = true,
            _ => {}
        }
    }
    st
}

/// A Subject as the rules compare it: white space runs as one space, trimmed, lowercased.
fn subject_key(subject: &str) -> String {
    subject.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Whole Subjects of delivery failure and delay notices whose text is fixed, each seen in the
/// corpus (tests/corpus.rs; the MTA or gateway named where known).
const FAILURE_SUBJECTS: &[&str] = &[
    "undelivered mail returned to sender", // Postfix
    "failure notice",                      // qmail
    "delivery failure",                    // flufl-bounce simple_36
    "delivery failure notification",       // Symantec AntiVirus for SMTP Gateways
    "mail delivery warning",               // flufl-bounce simple_35
    "mail delivery failure",
    "mail delivery failed",
    "mail delivery problem",
    "message delivery failure",
    "permanent delivery failure",
    "delivery notification: delivery has failed", // Lotus Domino
    "returned mail - error during delivery",      // flufl-bounce bounce_02
    "mail system error - returned mail",
    "undeliverable mail",
    "undelivered mail",
    "mail could not be delivered",
    "mail not delivered",
    "delayed mail (still being retried)",
    "warning: message has not yet been delivered",
];

/// Beginnings of delivery failure Subjects that go on with a variable part.
const FAILURE_SUBJECT_PREFIXES: &[&str] = &[
    "mail delivery failed: returning message to sender", // Exim
    "delivery status notification",                      // Exchange, Gmail
    "undeliverable:",                                    // Exchange
    "undeliverable mail:",
    "returned mail:",            // Sendmail
    "delivery failure:",         // Lotus Notes: "DELIVERY FAILURE: User x not listed ..."
    "non remis :",               // French Exchange
    "unzustellbar:",             // German Exchange
    "non recapitabile:",         // Italian Exchange
    "no se puede entregar:",     // Spanish Exchange
    "delivery report (failure)", // corpus: flufl-bounce
    "message delayed (",         // corpus: flufl-bounce
];

fn is_failure_subject(key: &str) -> bool {
    FAILURE_SUBJECTS.contains(&key)
        || FAILURE_SUBJECT_PREFIXES.iter().any(|p| key.starts_with(p))
        // An old Exchange appends its verdict (corpus: flufl-bounce simple_20).
        || key.contains(": non remis")
}

/// Beginnings of the Subjects of out-of-office replies (Outlook and Exchange, in their languages;
/// corpus: bounced tt_1234210666, Latvian).
const OUT_OF_OFFICE_PREFIXES: &[&str] = &[
    "automatic reply:",
    "out of office autoreply:",
    "out of office:",
    "autoreply:",
    "auto-reply:",
    "automatische antwort:",
    "réponse automatique :",
    "réponse automatique:",
    "respuesta automática:",
    "risposta automatica:",
    "resposta automática:",
    "automatisch antwoord:",
    "autosvar:",
    "automaattinen vastaus:",
    "arpus biroja atrasanas automatiska atbilde:",
];

fn is_out_of_office_subject(key: &str) -> bool {
    OUT_OF_OFFICE_PREFIXES.iter().any(|p| key.starts_with(p))
        // Lotus Notes: "AUTO: Jane Doe is out of the office (returning 01/02/2026)".
        || (key.starts_with("auto:") && key.contains("out of the office"))
}

/// Subjects of challenge-response systems asking the sender to confirm (TMDA's and the common
/// commercial ones' wording).
const CHALLENGE_SUBJECT_PREFIXES: &[&str] =
    &["please confirm your message", "confirm your message", "sender verification required"];

/// Whether a Help Desk address or alias is among the recipients named in the header (F9).
fn is_addressed(cfg: &HelpdeskConfig, msg: &Message<'_>) -> bool {
    const FIELDS: [HeaderName<'static>; 6] = [
        HeaderName::To,
        HeaderName::Cc,
        HeaderName::Bcc,
        HeaderName::ResentTo,
        HeaderName::ResentCc,
        HeaderName::ResentBcc,
    ];
    let ours = |a: &str| {
        let a = address::normalize(a);
        cfg.addresses.contains(&a) || cfg.aliases.contains(&a)
    };
    msg.headers().iter().filter(|h| FIELDS.contains(&h.name)).any(|h| match &h.value {
        HeaderValue::Address(addr) => addr.iter().any(|a| a.address().is_some_and(ours)),
        _ => false,
    })
}

impl Signals {
    /// Reads the signals out of a parsed message (None: nothing parseable) and its envelope.
    pub fn extract(
        cfg: &HelpdeskConfig,
        env: &Envelope,
        msg: Option<&Message<'_>>,
        data: &MessageData,
    ) -> Signals {
        let mut s = Signals {
            null_sender: env.sender.is_empty(),
            sender: env.sender.clone(),
            truncated: data.headers_truncated() || data.body_truncated(),
            ..Signals::default()
        };
        s.whisperback_sender = !s.null_sender && matches_any(&cfg.whisperback_senders, &env.sender);
        s.undeliverable_sender = !s.null_sender && !address::is_deliverable(&env.sender);
        s.sasl_authenticated = env.sasl_login.is_some();
        // Role addresses behind BATV (prvs=TAG=noreply@) and SRS (SRS0=...=MAILER-DAEMON@).
        let is_role = |a: &str| is_role_sender(&cfg.role_senders, &policy::canonical_sender(a));
        s.role_sender = !s.null_sender && is_role(&env.sender);
        s.team_sender = !s.null_sender && matches_any(&cfg.team_senders, &env.sender);
        for m in &cfg.spam_headers {
            if data
                .raw_values(&m.name)
                .any(|v| unfold(&String::from_utf8_lossy(v)).eq_ignore_ascii_case(&m.value))
            {
                s.spam = true;
            }
        }
        let Some(msg) = msg else { return s };

        s.from = msg
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(address::normalize)
            .filter(|a| !a.is_empty());
        s.subject = msg.subject().map(str::to_string);
        if let Some(from) = &s.from {
            s.role_sender |= is_role(from);
            if matches_any(&cfg.team_senders, from) {
                s.team_sender = true;
                if let Some((_, domain)) = address::split(from) {
                    s.team_dkim_verified = data
                        .raw_values("Authentication-Results")
                        .filter_map(|v| auth_results::parse(&String::from_utf8_lossy(v)))
                        .filter(|r| cfg.trusted_authserv_ids.contains(&r.authserv_id))
                        .any(|r| r.dkim_pass_domains.iter().any(|d| d == domain));
                }
            }
        }

        s.report = msg.root_part().content_type().is_some_and(|c| {
            c.ctype().eq_ignore_ascii_case("multipart")
                && c.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report"))
        });
        let st = structure(msg);
        s.encrypted = st.encrypted;
        let subject = s.subject.as_deref().map(subject_key).unwrap_or_default();
        s.delivery_failure = st.delivery_report || is_failure_subject(&subject);
        // X-ARF (x-arf.org): `X-ARF: YES` on the report; SpamCop's reports' Subject prefix.
        s.abuse_report = st.feedback_report
            || texts(msg, "X-ARF").iter().any(|v| v.eq_ignore_ascii_case("yes"))
            || subject.starts_with("[spamcop (");
        // iCloud's vacation replies carry X-Apple-Action: VACATION.
        s.out_of_office = texts(msg, "X-Apple-Action").iter().any(|v| v.eq_ignore_ascii_case("vacation"))
            || is_out_of_office_subject(&subject);
        // Not X-Delivery-Agent: TMDA: TMDA puts it on all its users' mail (corpus: SpamAssassin
        // ham, exmh-workers), not only on its confirmation requests.
        s.challenge = CHALLENGE_SUBJECT_PREFIXES.iter().any(|p| subject.starts_with(p));

        s.auto_submitted =
            texts(msg, HeaderName::AutoSubmitted.as_str()).iter().any(|v| auto_submitted_keyword(v) != "no");
        s.precedence_bulk = texts(msg, "Precedence")
            .iter()
            .any(|v| matches!(v.to_ascii_lowercase().as_str(), "bulk" | "list" | "junk" | "auto_reply"));
        s.list_headers = LIST_HEADERS.iter().any(|h| present(msg, h));
        s.autoresponder_headers = AUTORESPONDER_HEADERS.iter().any(|h| present(msg, h))
            || texts(msg, "X-FC-MachineGenerated").iter().any(|v| v.eq_ignore_ascii_case("true"));
        s.in_thread =
            ["In-Reply-To", "References"].iter().any(|h| texts(msg, h).iter().any(|v| !v.is_empty()));

        s.auto_response_suppress = texts(msg, "X-Auto-Response-Suppress").iter().any(|v| {
            v.split(',')
                .any(|t| ["all", "autoreply", "oof"].contains(&t.trim().to_ascii_lowercase().as_str()))
        });
        s.x_loop = texts(msg, "X-Loop");
        s.addressed = is_addressed(cfg, msg);

        if let Some(subject) = &s.subject {
            s.report_id = whisperback_report_id(subject);
            s.tags = subject_tags(&cfg.subject_tags, subject);
        }
        s
    }

    /// Whether the message is from a team member, proven by a signal of `team_trust`: a
    /// SASL-authenticated submission on this host, or a trusted verifier's DKIM pass for the
    /// From: domain. A message that only claims a team address is not. (Issue 13's tagging by
    /// trusted Help Desk members relies on this same function.)
    pub fn trusted_team(&self, cfg: &HelpdeskConfig) -> bool {
        self.team_sender
            && ((cfg.team_trust.sasl && self.sasl_authenticated)
                || (cfg.team_trust.dkim && self.team_dkim_verified))
    }

    /// The first sign that the message is machine-made, if any.
    pub fn automated_sign(&self) -> Option<AutomatedSign> {
        [
            (self.null_sender, AutomatedSign::NullSender),
            (self.report, AutomatedSign::Report),
            (self.auto_submitted, AutomatedSign::AutoSubmitted),
            (self.precedence_bulk, AutomatedSign::Precedence),
            (self.list_headers, AutomatedSign::ListHeaders),
            (self.autoresponder_headers, AutomatedSign::AutoresponderHeaders),
            (self.delivery_failure, AutomatedSign::DeliveryFailure),
            (self.abuse_report, AutomatedSign::AbuseReport),
            (self.out_of_office, AutomatedSign::OutOfOffice),
            (self.challenge, AutomatedSign::Challenge),
            (self.role_sender, AutomatedSign::RoleSender),
        ]
        .into_iter()
        .find_map(|(hit, sign)| hit.then_some(sign))
    }
}

/// The class of a message, first match wins: whisperback, spam, automated, team, followup, support.
pub fn classify(cfg: &HelpdeskConfig, s: &Signals) -> Class {
    if s.whisperback_sender && s.report_id.is_some() {
        Class::Whisperback
    } else if s.spam {
        Class::Spam
    } else if s.automated_sign().is_some() {
        Class::Automated
    } else if s.trusted_team(cfg) {
        Class::Team
    } else if s.in_thread {
        Class::Followup
    } else {
        Class::Support
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn cfg() -> HelpdeskConfig {
        Config::defaults(Path::new("/x.toml")).helpdesk
    }

    fn signals_with(cfg: &HelpdeskConfig, sender: &str, raw: &str) -> Signals {
        let data = MessageData::from_rfc5322(raw.as_bytes(), &cfg.header_prefix, 256 * 1024, 64 * 1024);
        let kept = data.to_rfc5322();
        let msg = parse(&kept);
        Signals::extract(cfg, &Envelope::new(sender, ["support@tails.net"]), msg.as_ref(), &data)
    }

    fn class_of(sender: &str, raw: &str) -> Class {
        let c = cfg();
        classify(&c, &signals_with(&c, sender, raw))
    }

    const PLAIN: &str = "From: Alice <alice@example.org>\nTo: support@tails.net\nSubject: Tails does not start\nMessage-ID: <1@example.org>\n\nHello, my laptop...\n";

    #[test]
    fn whisperback_sample_is_whisperback_with_its_id() {
        let raw = include_str!("../tests/data/whisperback-sample.eml");
        let c = cfg();
        let s = signals_with(&c, "devnull@tails.boum.org", raw);
        assert_eq!(classify(&c, &s), Class::Whisperback);
        assert_eq!(s.report_id.as_deref(), Some("4ffd523ac6b83288ba219a6a55f4971b"));
        assert!(s.encrypted);
    }

    #[test]
    fn whisperback_needs_both_sender_and_subject() {
        let subj = "From: devnull@tails.boum.org\nSubject: Bug report: 72e11dad9c9faf4d5a990800a3349dd\n\nx";
        assert_eq!(class_of("alice@example.org", subj), Class::Support);
        assert_eq!(
            class_of("devnull@tails.boum.org", "From: devnull@tails.boum.org\nSubject: hello\n\nx"),
            Class::Support
        );
        assert_eq!(class_of("DevNull@Tails.Boum.Org", subj), Class::Whisperback);
    }

    #[test]
    fn report_id_tolerates_prefixes_and_rejects_junk() {
        assert_eq!(whisperback_report_id("[SPAM] Bug report: 4ffd5"), Some("4ffd5".into()));
        assert_eq!(whisperback_report_id("Bug report: ABCDEF "), Some("abcdef".into()));
        assert_eq!(whisperback_report_id("Bug report: 0"), Some("0".into()));
        assert_eq!(whisperback_report_id("Bug report: "), None);
        assert_eq!(whisperback_report_id("Bug report: xyz"), None);
        assert_eq!(whisperback_report_id("Bug report: 4ffd5 please"), None);
        assert_eq!(whisperback_report_id(&format!("Bug report: {}", "a".repeat(33))), None);
        assert_eq!(whisperback_report_id(&format!("Bug report: {}", "a".repeat(32))), Some("a".repeat(32)));
    }

    #[test]
    fn spam_verdict_comes_before_everything_but_whisperback() {
        let raw = "From: alice@example.org\nX-Spam-Flag: yes\nPrecedence: bulk\n\nbuy";
        assert_eq!(class_of("alice@example.org", raw), Class::Spam);
        assert_eq!(class_of("alice@example.org", "X-Spam-Flag: NO\n\nx"), Class::Support);
        // A verdict folded onto a continuation line still counts.
        assert_eq!(class_of("alice@example.org", "X-Spam-Flag:\n YES\n\nx"), Class::Spam);
    }

    #[test]
    fn automated_signs() {
        let cases = [
            ("", PLAIN, AutomatedSign::NullSender),
            (
                "a@example.org",
                "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n",
                AutomatedSign::Report,
            ),
            ("a@example.org", "Auto-Submitted: auto-replied\n\nx", AutomatedSign::AutoSubmitted),
            (
                "a@example.org",
                "Auto-Submitted: no\nAuto-Submitted: auto-generated\n\nx",
                AutomatedSign::AutoSubmitted,
            ),
            ("a@example.org", "Auto-Submitted: no (but really yes)x\n\nx", AutomatedSign::AutoSubmitted),
            ("a@example.org", "Auto-Submitted: notify\n\nx", AutomatedSign::AutoSubmitted),
            ("a@example.org", "Auto-Submitted:\n auto-notified\n\nx", AutomatedSign::AutoSubmitted),
            ("a@example.org", "Auto-Submitted: \n\nx", AutomatedSign::AutoSubmitted),
            ("a@example.org", "Precedence: BULK\n\nx", AutomatedSign::Precedence),
            ("a@example.org", "Precedence: first-class\nPrecedence: list\n\nx", AutomatedSign::Precedence),
            ("a@example.org", "List-Id: <tails-dev.boum.org>\n\nx", AutomatedSign::ListHeaders),
            ("a@example.org", "list-unsubscribe: <mailto:x@y>\n\nx", AutomatedSign::ListHeaders),
            ("a@example.org", "X-Autoreply: yes\n\nx", AutomatedSign::AutoresponderHeaders),
            ("a@example.org", "X-FC-MachineGenerated: true\n\nx", AutomatedSign::AutoresponderHeaders),
            ("MAILER-DAEMON@mx.example", "Subject: x\n\nx", AutomatedSign::RoleSender),
            ("a@example.org", "From: No-Reply@github.example\n\nx", AutomatedSign::RoleSender),
        ];
        let c = cfg();
        for (sender, raw, sign) in cases {
            let s = signals_with(&c, sender, raw);
            assert_eq!(s.automated_sign(), Some(sign), "{raw:?}");
            assert_eq!(classify(&c, &s), Class::Automated, "{raw:?}");
        }
        for raw in ["Auto-Submitted: no\n\nx", "Auto-Submitted: No ; comment\n\nx", "Precedence: normal\n\nx"]
        {
            assert_eq!(signals_with(&c, "a@example.org", raw).automated_sign(), None, "{raw:?}");
        }
    }

    #[test]
    fn auto_submitted_keyword_parsing() {
        assert_eq!(auto_submitted_keyword("no"), "no");
        assert_eq!(auto_submitted_keyword(" (c) No (c)"), "no");
        assert_eq!(auto_submitted_keyword("auto-replied; owner-email=x"), "auto-replied");
        assert_eq!(auto_submitted_keyword("no-thanks"), "no-thanks");
        assert_eq!(auto_submitted_keyword(""), "");
        assert_eq!(auto_submitted_keyword("no (c)x"), "");
        assert_eq!(auto_submitted_keyword("no x"), "");
    }

    fn signals_sasl(cfg: &HelpdeskConfig, sender: &str, login: Option<&str>, raw: &str) -> Signals {
        let data = MessageData::from_rfc5322(raw.as_bytes(), &cfg.header_prefix, 256 * 1024, 64 * 1024);
        let kept = data.to_rfc5322();
        let msg = parse(&kept);
        let env = Envelope::new(sender, ["support@tails.net"]).with_sasl_login(login);
        Signals::extract(cfg, &env, msg.as_ref(), &data)
    }

    #[test]
    fn a_team_address_alone_is_not_team() {
        // Issue 12, point 5: anyone can write From: someone@tails.net.
        assert_eq!(class_of("bob@tails.net", "From: bob@tails.net\nSubject: [FT] hi\n\nx"), Class::Support);
        assert_eq!(class_of("bob@gmail.example", "From: Bob <Bob@Tails.NET>\n\nx"), Class::Support);
        let c = cfg();
        let forged =
            "Authentication-Results: evil.example; dkim=pass header.d=tails.net\nFrom: bob@tails.net\n\nx";
        assert!(!signals_with(&c, "bob@tails.net", forged).trusted_team(&c));
    }

    #[test]
    fn a_login_on_this_host_makes_team_mail() {
        let c = cfg();
        let raw = "From: bob@tails.net\nSubject: [FT] hi\n\nx";
        let s = signals_sasl(&c, "bob@tails.net", Some("bob"), raw);
        assert!(s.sasl_authenticated && s.trusted_team(&c));
        assert_eq!(classify(&c, &s), Class::Team);
        // The envelope sender alone may be the team address.
        let s = signals_sasl(&c, "bob@tails.net", Some("bob"), "From: Bob <bob@example.org>\n\nx");
        assert_eq!(classify(&c, &s), Class::Team);
        // A login does not make anybody a team member.
        let s = signals_sasl(&c, "eve@example.org", Some("eve"), "From: eve@example.org\n\nx");
        assert_eq!(classify(&c, &s), Class::Support);
        assert!(!signals_sasl(&c, "bob@tails.net", Some("  "), raw).sasl_authenticated);
        // Without "sasl" in team_trust, a login proves nothing.
        let mut dkim_only = cfg();
        dkim_only.team_trust = crate::config::TeamTrust { sasl: false, dkim: true };
        dkim_only.trusted_authserv_ids = vec!["mx.tails.net".into()];
        assert_eq!(
            classify(&dkim_only, &signals_sasl(&dkim_only, "bob@tails.net", Some("bob"), raw)),
            Class::Support
        );
    }

    #[test]
    fn a_trusted_dkim_pass_makes_team_mail() {
        let mut c = cfg();
        c.team_trust = crate::config::TeamTrust { sasl: false, dkim: true };
        c.trusted_authserv_ids = vec!["mx.tails.net".into()];
        let verified =
            "Authentication-Results: mx.tails.net; dkim=pass header.d=tails.net\nFrom: bob@tails.net\n\nx";
        let foreign =
            "Authentication-Results: evil.example; dkim=pass header.d=tails.net\nFrom: bob@tails.net\n\nx";
        let other_domain =
            "Authentication-Results: mx.tails.net; dkim=pass header.d=evil.example\nFrom: bob@tails.net\n\nx";
        assert_eq!(classify(&c, &signals_with(&c, "bob@tails.net", verified)), Class::Team);
        assert_eq!(classify(&c, &signals_with(&c, "bob@tails.net", foreign)), Class::Support);
        assert_eq!(classify(&c, &signals_with(&c, "bob@tails.net", other_domain)), Class::Support);
        assert_eq!(
            class_of("bob@tails.net.evil.example", "From: bob@tails.net.evil.example\n\nx"),
            Class::Support
        );
    }

    #[test]
    fn followup_and_support() {
        assert_eq!(class_of("alice@example.org", PLAIN), Class::Support);
        let reply = "From: alice@example.org\nSubject: Re: x\nIn-Reply-To: <1@tails.net>\n\nthanks";
        assert_eq!(class_of("alice@example.org", reply), Class::Followup);
        let refs = "From: alice@example.org\nreferences:\n <1@tails.net>\n\nthanks";
        assert_eq!(class_of("alice@example.org", refs), Class::Followup);
        assert_eq!(class_of("alice@example.org", "In-Reply-To: \n\nthanks"), Class::Support);
    }

    #[test]
    fn encryption_detection() {
        let c = cfg();
        let pgp_mime =
            "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\n\n--b\n";
        assert!(signals_with(&c, "a@x.org", pgp_mime).encrypted);
        let inline =
            "Content-Type: text/plain\n\n-----BEGIN PGP MESSAGE-----\nhQIMA\n-----END PGP MESSAGE-----\n";
        assert!(signals_with(&c, "a@x.org", inline).encrypted);
        let qp = "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n=2D----BEGIN PGP MESSAGE-----\n";
        assert!(signals_with(&c, "a@x.org", qp).encrypted);
        // An inline PGP message in any text part, not only the first.
        let later = "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhi\n--b\nContent-Type: text/plain\n\n-----BEGIN PGP MESSAGE-----\n--b--\n";
        assert!(signals_with(&c, "a@x.org", later).encrypted);
        assert!(!signals_with(&c, "a@x.org", PLAIN).encrypted);
    }

    /// A PGP/MIME message as a list or a disclaimer gateway forwards it: wrapped in
    /// multipart/mixed, with a plain-text footer.
    pub(crate) const WRAPPED_PGP: &str = "From: alice@example.org\nSubject: Tor Browser does not start\nContent-Type: multipart/mixed; boundary=outer\n\n--outer\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=inner\n\n--inner\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--inner\nContent-Type: application/octet-stream\n\n-----BEGIN PGP MESSAGE-----\nhQIMA tor browser persistent storage\n-----END PGP MESSAGE-----\n--inner--\n--outer\nContent-Type: text/plain\n\nThis message was scanned. Tor Browser, persistent storage, upgrade.\n--outer--\n";

    #[test]
    fn encryption_at_any_depth() {
        // Issue 12, point 1.
        let c = cfg();
        assert!(signals_with(&c, "alice@example.org", WRAPPED_PGP).encrypted);
        let smime = |t: &str| {
            format!(
                "Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: application/{t}\nContent-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\n--o\nContent-Type: text/plain\n\nfooter\n--o--\n"
            )
        };
        for t in [
            "pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
            "x-pkcs7-mime; smime-type=\"Enveloped-Data\"",
            "pkcs7-mime; smime-type=authEnveloped-data",
        ] {
            assert!(signals_with(&c, "a@x.org", &smime(t)).encrypted, "{t}");
        }
        let top = "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\n\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\n";
        assert!(signals_with(&c, "a@x.org", top).encrypted);
        // Signed is not encrypted.
        assert!(!signals_with(&c, "a@x.org", &smime("pkcs7-mime; smime-type=signed-data")).encrypted);
        assert!(!signals_with(&c, "a@x.org", &smime("pkcs7-signature")).encrypted);
        // Only what the milter keeps counts: a part past the body limit is not seen.
        let data = MessageData::from_rfc5322(WRAPPED_PGP.as_bytes(), &c.header_prefix, 256 * 1024, 20);
        let kept = data.to_rfc5322();
        let s = Signals::extract(
            &c,
            &Envelope::new("a@x.org", ["support@tails.net"]),
            parse(&kept).as_ref(),
            &data,
        );
        assert!(!s.encrypted && s.truncated);
    }

    #[test]
    fn delivery_failures_without_a_report() {
        // Issue 12, point 3: old gateways and antivirus appliances.
        let c = cfg();
        let status = "From: gateway@example.org\nSubject: Your message\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nnot delivered\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.1\n--b--\n";
        let headers = "From: gateway@example.org\nSubject: x\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nsorry\n--b\nContent-Type: text/rfc822-headers\n\nFrom: a@b\n--b--\n";
        for raw in [status, headers] {
            let s = signals_with(&c, "gateway@example.org", raw);
            assert!(s.delivery_failure, "{raw}");
            assert_eq!(s.automated_sign(), Some(AutomatedSign::DeliveryFailure));
        }
        for subject in [
            "Returned Mail - Error During Delivery",
            "Delivery  failure notification",
            "DELIVERY FAILURE: User x (x@example.org) not listed in Domino Directory",
            "Undeliverable: Tails does not boot",
            "Mail delivery failed: returning message to sender",
            "=?utf-8?B?RGVsaXZlcnkgZmFpbHVyZSBub3RpZmljYXRpb24=?=",
            "RE: Your message to GPC-talk awaits moderator approval : non remis",
        ] {
            let s =
                signals_with(&c, "gw@example.org", &format!("From: gw@example.org\nSubject: {subject}\n\nx"));
            assert!(s.delivery_failure, "{subject}");
            assert_eq!(classify(&c, &s), Class::Automated, "{subject}");
        }
        // A person who forwards a bounce, or writes about delivery, is not a bounce.
        for subject in [
            "Fwd: Undelivered Mail Returned to Sender",
            "Mail delivery fails with Thunderbird",
            "failure notice?",
        ] {
            let s = signals_with(
                &c,
                "alice@example.org",
                &format!("From: alice@example.org\nSubject: {subject}\n\nx"),
            );
            assert!(!s.delivery_failure, "{subject}");
        }
    }

    #[test]
    fn abuse_reports_out_of_office_and_challenges() {
        let c = cfg();
        let arf = "From: abuse@isp.example\nSubject: complaint\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nabuse\n--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n--b--\n";
        let cases = [
            ("abuse-desk@isp.example", arf, AutomatedSign::AbuseReport),
            (
                "abuse-desk@isp.example",
                "X-ARF: YES\nSubject: abuse report about 192.0.2.1\n\nx",
                AutomatedSign::AbuseReport,
            ),
            (
                "reports@spamcop.example",
                "Subject: [SpamCop (https://example/) id:123]x\n\nx",
                AutomatedSign::AbuseReport,
            ),
            (
                "jane@corp.example",
                "X-Apple-Action: VACATION\nSubject: Re: hi\n\naway",
                AutomatedSign::OutOfOffice,
            ),
            (
                "jane@corp.example",
                "Subject: AUTO: Jane Doe is out of the office (returning 02/01/2026)\n\naway",
                AutomatedSign::OutOfOffice,
            ),
            (
                "jane@corp.example",
                "Subject: Automatic reply: Tails does not boot\n\naway",
                AutomatedSign::OutOfOffice,
            ),
            (
                "jane@corp.example",
                "Subject: Réponse automatique : question\n\naway",
                AutomatedSign::OutOfOffice,
            ),
            ("jane@corp.example", "Subject: Please confirm your message\n\nclick", AutomatedSign::Challenge),
        ];
        for (sender, raw, sign) in cases {
            let s = signals_with(&c, sender, raw);
            assert_eq!(s.automated_sign(), Some(sign), "{raw}");
        }
        // People who mention these in their words stay people.
        for raw in [
            "Subject: Tails at the office\n\nI will be out of office next week, please answer soon.",
            "Subject: Auto: my car has no Wi-Fi\n\nx",
            "Subject: How do I report abuse?\n\nx",
            "Subject: Re: Automatic reply: x\n\nx",
        ] {
            let s = signals_with(&c, "alice@example.org", raw);
            assert_eq!(s.automated_sign(), None, "{raw}");
        }
    }

    #[test]
    fn role_senders_behind_batv_and_srs() {
        let c = cfg();
        for sender in [
            "prvs=1234abcd=noreply@example.org",
            "SRS0=HHH=TT=example.org=MAILER-DAEMON@forwarder.example",
            "SRS1=XXX=fwd1.example==HHH=TT=example.org=postmaster@fwd2.example",
        ] {
            let s = signals_with(&c, sender, "From: Somebody <somebody@example.org>\n\nx");
            assert!(s.role_sender, "{sender}");
        }
        let s = signals_with(&c, "alice@example.org", "From: prvs=1234abcd=no-reply@example.org\n\nx");
        assert!(s.role_sender);
        assert!(!signals_with(&c, "prvs=1234abcd=alice@example.org", PLAIN).role_sender);
    }

    #[test]
    fn undeliverable_envelope_senders() {
        // Issue 12, point 2.
        let c = cfg();
        for sender in ["root", "root@localhost", "alice@", "alice@[192.0.2.1]", "a b@example.org"] {
            assert!(signals_with(&c, sender, PLAIN).undeliverable_sender, "{sender}");
        }
        assert!(!signals_with(&c, "alice@example.org", PLAIN).undeliverable_sender);
        assert!(!signals_with(&c, "", PLAIN).undeliverable_sender, "the null sender has its own rule");
    }

    #[test]
    fn encoded_subject_is_decoded_for_tags_and_ids() {
        let c = cfg();
        let s = signals_with(&c, "a@x.org", "Subject: =?utf-8?q?Re=3A_=5Bft=5D_caf=C3=A9?=\n\nx");
        assert_eq!(s.subject.as_deref(), Some("Re: [ft] café"));
        assert_eq!(s.tags, vec!["FT"]);
        let s = signals_with(&c, "a@x.org", "Subject: Re:\n [FT]\n\tthing\n\nx");
        assert_eq!(s.tags, vec!["FT"]);
        assert!(signals_with(&c, "a@x.org", "Subject: FT stuff\n\nx").tags.is_empty());
    }

    #[test]
    fn missing_headers_and_empty_input_are_support() {
        assert_eq!(class_of("alice@example.org", ""), Class::Support);
        assert_eq!(class_of("alice@example.org", "\n\nonly body"), Class::Support);
        assert_eq!(class_of("alice@example.org", "garbage without colon\n"), Class::Support);
    }
}
