//! The classifier: what kind of mail a message is, from its envelope, headers and the first bytes
//! of its body. Pure functions, no I/O.
//!
//! [`Signals::extract`] reads every fact the decisions need out of a parsed message (unfolded,
//! decoded, every instance of a header checked); [`classify`] then picks one class, first match wins.
//!
//! - [`parse`]: mail-parser, set up once, and the header readers the rules share;
//! - [`structure`]: what the MIME tree shows (encryption, delivery and feedback reports);
//! - [`markers`]: the headers and Subjects of machine-made mail;
//! - [`signals`]: every fact about one message, read once.

mod markers;
mod parse;
mod signals;
mod structure;

pub use parse::{auto_submitted_keyword, parse};
pub use signals::{Signals, subject_tags, whisperback_report_id};

use crate::address;
use crate::config::HelpdeskConfig;
use std::fmt;

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
pub(crate) mod tests;
