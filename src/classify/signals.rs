//! Every fact about one message that the decisions use, read once from its envelope and its
//! parsed prefix.

use super::markers::*;
use super::parse::{auto_submitted_keyword, present, texts, unfold};
use super::structure::structure;
use super::{AutomatedSign, Envelope};
use crate::address::{self, is_role_sender, matches_any};
use crate::auth_results;
use crate::config::HelpdeskConfig;
use crate::message::MessageData;
use mail_parser::{HeaderName, HeaderValue, Message, MimeHeaders};

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
    /// An abuse report: an ARF feedback-report part anywhere, X-ARF, a SpamCop report, or a
    /// Hotmail feedback loop report.
    pub abuse_report: bool,
    /// An out-of-office or vacation notice without `Auto-Submitted` (X-Apple-Action, known
    /// Subjects of Outlook, Lotus Notes and others).
    pub out_of_office: bool,
    /// A challenge-response system's request to confirm the message (its Subject, or a header
    /// only such a request carries).
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
    /// The Message-ID fields of the message, unfolded (WhisperBack sends none; a relay or
    /// Postfix may add one).
    pub message_ids: Vec<String>,
    /// The message IDs of In-Reply-To and References, without angle brackets.
    pub references: Vec<String>,
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

/// A role address (mailer-daemon, noreply, ...), also behind BATV (prvs=TAG=noreply@) and SRS
/// (SRS0=...=MAILER-DAEMON@) wrapping.
fn is_role(cfg: &HelpdeskConfig, addr: &str) -> bool {
    is_role_sender(&cfg.role_senders, &address::canonical_sender(addr))
}

/// Whether a Help Desk address or alias is among the recipients named in the header (doc/reply-rules.md, `not-addressed`).
fn is_addressed(cfg: &HelpdeskConfig, msg: &Message<'_>) -> bool {
    const FIELDS: [HeaderName<'static>; 6] = [
        HeaderName::To,
        HeaderName::Cc,
        HeaderName::Bcc,
        HeaderName::ResentTo,
        HeaderName::ResentCc,
        HeaderName::ResentBcc,
    ];
    let ours = |a: &str| cfg.is_address(a) || cfg.aliases.contains(&address::normalize(a));
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
        let mut s = Signals::of_envelope(cfg, env, data);
        if let Some(msg) = msg {
            s.read_sender(cfg, msg, data);
            s.read_machine_marks(msg);
            s.read_reply_marks(cfg, msg);
        }
        s
    }

    /// What the envelope and the raw header fields tell, before any parsing.
    fn of_envelope(cfg: &HelpdeskConfig, env: &Envelope, data: &MessageData) -> Signals {
        let null_sender = env.sender.is_empty();
        let spam = cfg.spam_headers.iter().any(|m| {
            data.raw_values(&m.name)
                .any(|v| unfold(&String::from_utf8_lossy(v)).eq_ignore_ascii_case(&m.value))
        });
        Signals {
            null_sender,
            sender: env.sender.clone(),
            truncated: data.headers_truncated() || data.body_truncated(),
            whisperback_sender: !null_sender && matches_any(&cfg.whisperback_senders, &env.sender),
            undeliverable_sender: !null_sender && !address::is_deliverable(&env.sender),
            sasl_authenticated: env.sasl_login.is_some(),
            role_sender: !null_sender && is_role(cfg, &env.sender),
            team_sender: !null_sender && matches_any(&cfg.team_senders, &env.sender),
            spam,
            ..Signals::default()
        }
    }

    /// The From: address and Subject, and who the sender is: a role, a team member.
    fn read_sender(&mut self, cfg: &HelpdeskConfig, msg: &Message<'_>, data: &MessageData) {
        self.from = msg
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(address::normalize)
            .filter(|a| !a.is_empty());
        self.subject = msg.subject().map(str::to_string);
        let Some(from) = &self.from else { return };
        self.role_sender |= is_role(cfg, from);
        if matches_any(&cfg.team_senders, from) {
            self.team_sender = true;
            if let Some((_, domain)) = address::split(from) {
                self.team_dkim_verified = data
                    .raw_values("Authentication-Results")
                    .filter_map(|v| auth_results::parse(&String::from_utf8_lossy(v)))
                    .filter(|r| cfg.trusted_authserv_ids.contains(&r.authserv_id))
                    .any(|r| r.dkim_pass_domains.iter().any(|d| d == domain));
            }
        }
    }

    /// The marks of machine-made mail: reports, notices, bulk and list headers, encryption.
    fn read_machine_marks(&mut self, msg: &Message<'_>) {
        self.report = msg.root_part().content_type().is_some_and(|c| {
            c.ctype().eq_ignore_ascii_case("multipart")
                && c.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report"))
        });
        let st = structure(msg);
        self.encrypted = st.encrypted;
        let subject = self.subject.as_deref().map(subject_key).unwrap_or_default();
        self.delivery_failure = st.delivery_report || is_failure_subject(&subject);
        // X-ARF (x-arf.org): `X-ARF: YES` on the report; SpamCop's reports' Subject prefix;
        // Hotmail's reports by their sender and Subject together.
        self.abuse_report = st.feedback_report
            || texts(msg, "X-ARF").iter().any(|v| v.eq_ignore_ascii_case("yes"))
            || subject.starts_with("[spamcop (")
            || (self.from.as_deref() == Some(HOTMAIL_FEEDBACK_FROM)
                && subject.starts_with(HOTMAIL_FEEDBACK_SUBJECT_PREFIX));
        // iCloud's vacation replies carry X-Apple-Action: VACATION.
        self.out_of_office = texts(msg, "X-Apple-Action").iter().any(|v| v.eq_ignore_ascii_case("vacation"))
            || is_out_of_office_subject(&subject);
        // Not X-Delivery-Agent: TMDA: TMDA puts it on all its users' mail (corpus: SpamAssassin
        // ham, exmh-workers), not only on its confirmation requests.
        self.challenge = CHALLENGE_SUBJECT_PREFIXES.iter().any(|p| subject.starts_with(p))
            || CHALLENGE_HEADERS.iter().any(|h| present(msg, h));
        self.auto_submitted =
            texts(msg, HeaderName::AutoSubmitted.as_str()).iter().any(|v| auto_submitted_keyword(v) != "no");
        self.precedence_bulk = texts(msg, "Precedence")
            .iter()
            .any(|v| matches!(v.to_ascii_lowercase().as_str(), "bulk" | "list" | "junk" | "auto_reply"));
        self.list_headers = LIST_HEADERS.iter().any(|h| present(msg, h));
        self.autoresponder_headers = AUTORESPONDER_HEADERS.iter().any(|h| present(msg, h))
            || texts(msg, "X-FC-MachineGenerated").iter().any(|v| v.eq_ignore_ascii_case("true"));
    }

    /// What the reply rules and the triage headers read: the thread, the requests not to be
    /// answered, the recipients named, the WhisperBack ID and the Subject tags.
    fn read_reply_marks(&mut self, cfg: &HelpdeskConfig, msg: &Message<'_>) {
        self.in_thread =
            ["In-Reply-To", "References"].iter().any(|h| texts(msg, h).iter().any(|v| !v.is_empty()));
        self.auto_response_suppress = texts(msg, "X-Auto-Response-Suppress").iter().any(|v| {
            v.split(',')
                .any(|t| ["all", "autoreply", "oof"].contains(&t.trim().to_ascii_lowercase().as_str()))
        });
        self.x_loop = texts(msg, "X-Loop");
        self.message_ids = texts(msg, "Message-ID");
        for v in [msg.in_reply_to(), msg.references()] {
            match v {
                HeaderValue::Text(t) => self.references.push(t.to_string()),
                HeaderValue::TextList(l) => self.references.extend(l.iter().map(|t| t.to_string())),
                _ => {}
            }
        }
        self.addressed = is_addressed(cfg, msg);
        if let Some(subject) = &self.subject {
            self.report_id = whisperback_report_id(subject);
            self.tags = subject_tags(&cfg.subject_tags, subject);
        }
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

    /// Whether the message comes from a trusted Help Desk member, who may tag WhisperBack
    /// reports: a SASL-authenticated submission on this host, or a team sender with a trusted
    /// verifier's DKIM pass for its From: domain.
    pub fn trusted_member(&self, _cfg: &HelpdeskConfig) -> bool {
        self.sasl_authenticated || (self.team_sender && self.team_dkim_verified)
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
