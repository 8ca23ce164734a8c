//! The reply policy: whether a message gets the standard reply, and if not, why.
//!
//! A pure function of the message's signals and a view of the state (who was answered, how many
//! replies went out this hour), so that every rule is unit-tested on plain data. The rules, their
//! sources and their tests are the table of `doc/reply-rules.md`: every suppress rule is
//! evaluated and the first reason in its order is recorded.

use crate::classify::{Class, Signals};
pub use crate::config::PolicyConfig;
use std::fmt;

/// Why no reply is sent. The words appear in `X-HelpDesk-Autoreply: suppressed (<reason>)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Auto-replies are switched off.
    Disabled,
    /// MAIL FROM:<>: never answer a bounce.
    NullSender,
    /// The envelope sender is no deliverable Internet address (no domain, a single-label domain,
    /// an address literal, a malformed address): through the local relay a reply could reach a
    /// user of the mail host.
    InvalidSender,
    /// An `Auto-Submitted` other than `no`.
    AutoSubmitted,
    /// `Precedence: bulk|list|junk|auto_reply`.
    Precedence,
    /// A mailing-list header.
    List,
    /// `X-Auto-Response-Suppress: All|AutoReply|OOF`.
    AutoResponseSuppress,
    /// Our own loop marker, or `X-Loop: yes`.
    Loop,
    /// mailer-daemon, noreply and other role senders.
    RoleSender,
    /// From our own address or a system address.
    OwnAddress,
    /// The Help Desk address is not in To/Cc/Bcc/Resent-*.
    NotAddressed,
    /// An upstream spam verdict.
    Spam,
    /// Other responders' and bulk senders' markers, delivery reports.
    Bulk,
    /// A delivery failure or delay notice that is not `multipart/report`.
    DeliveryFailure,
    /// An abuse report (ARF or X-ARF without `multipart/report`, SpamCop).
    AbuseReport,
    /// An out-of-office or vacation notice without `Auto-Submitted`.
    OutOfOffice,
    /// A challenge-response system's confirmation request.
    Challenge,
    /// Not a new support request (WhisperBack, follow-up, team, automated, spam).
    Class,
    /// This sender was answered within the interval.
    Interval,
    /// The global or per-domain cap on replies per hour is reached.
    Cap,
    /// The state store cannot be used: no reply rather than a possible duplicate.
    Store,
    /// A trusted member's message that tags a WhisperBack report: not a request.
    Tag,
}

impl Reason {
    pub const ALL: [Reason; 22] = [
        Reason::Disabled,
        Reason::NullSender,
        Reason::InvalidSender,
        Reason::AutoSubmitted,
        Reason::Precedence,
        Reason::List,
        Reason::AutoResponseSuppress,
        Reason::Loop,
        Reason::RoleSender,
        Reason::OwnAddress,
        Reason::NotAddressed,
        Reason::Spam,
        Reason::Bulk,
        Reason::DeliveryFailure,
        Reason::AbuseReport,
        Reason::OutOfOffice,
        Reason::Challenge,
        Reason::Class,
        Reason::Interval,
        Reason::Cap,
        Reason::Store,
        Reason::Tag,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Disabled => "disabled",
            Reason::NullSender => "null-sender",
            Reason::InvalidSender => "invalid-sender",
            Reason::AutoSubmitted => "auto-submitted",
            Reason::Precedence => "precedence",
            Reason::List => "list",
            Reason::AutoResponseSuppress => "auto-response-suppress",
            Reason::Loop => "loop",
            Reason::RoleSender => "role-sender",
            Reason::OwnAddress => "own-address",
            Reason::NotAddressed => "not-addressed",
            Reason::Spam => "spam",
            Reason::Bulk => "bulk",
            Reason::DeliveryFailure => "delivery-failure",
            Reason::AbuseReport => "abuse-report",
            Reason::OutOfOffice => "out-of-office",
            Reason::Challenge => "challenge",
            Reason::Class => "class",
            Reason::Interval => "interval",
            Reason::Cap => "cap",
            Reason::Store => "store",
            Reason::Tag => "tag",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decision, as it appears in `X-HelpDesk-Autoreply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Queued,
    /// One more reply within the interval, for a hot topic that no earlier reply pointed the
    /// sender to.
    QueuedNewTopic,
    Suppressed(Reason),
}

impl Decision {
    pub fn header_value(self) -> String {
        match self {
            Decision::Queued => "queued".into(),
            Decision::QueuedNewTopic => "queued (new-topic)".into(),
            Decision::Suppressed(r) => format!("suppressed ({r})"),
        }
    }

    /// Whether a reply is sent.
    pub fn is_queued(self) -> bool {
        matches!(self, Decision::Queued | Decision::QueuedNewTopic)
    }
}

/// What the state says about this sender and this hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateView {
    /// The sender got a reply less than an interval ago.
    pub answered_recently: bool,
    /// Replies queued in the last hour, all senders.
    pub replies_last_hour: u32,
    /// Replies queued in the last hour to the sender's domain.
    pub domain_replies_last_hour: u32,
    /// The store cannot be used.
    pub unavailable: bool,
    /// The request matches a hot topic that no reply of the interval pointed the sender to.
    pub new_topic: bool,
}

/// The rules that depend on the message alone, in the order their reasons are recorded.
pub fn message_rules(cfg: &PolicyConfig, s: &Signals, class: Class) -> Option<Reason> {
    let own = |a: &str| cfg.own_addresses.iter().chain(&cfg.system_addresses).any(|o| o == a);
    let from_own = s.from.as_deref().is_some_and(own);
    let checks = [
        (!cfg.enabled, Reason::Disabled),
        (s.null_sender, Reason::NullSender),
        (s.undeliverable_sender, Reason::InvalidSender),
        (s.auto_submitted, Reason::AutoSubmitted),
        (s.precedence_bulk, Reason::Precedence),
        (s.list_headers, Reason::List),
        (s.auto_response_suppress, Reason::AutoResponseSuppress),
        (s.x_loop.iter().any(|v| is_loop(&cfg.loop_token, v)), Reason::Loop),
        (s.role_sender, Reason::RoleSender),
        (own(&s.sender) || from_own, Reason::OwnAddress),
        (cfg.require_addressed && !s.addressed, Reason::NotAddressed),
        (s.spam, Reason::Spam),
        (s.autoresponder_headers || s.report, Reason::Bulk),
        (s.delivery_failure, Reason::DeliveryFailure),
        (s.abuse_report, Reason::AbuseReport),
        (s.out_of_office, Reason::OutOfOffice),
        (s.challenge, Reason::Challenge),
        (class != Class::Support, Reason::Class),
    ];
    checks.into_iter().find_map(|(hit, reason)| hit.then_some(reason))
}

/// An `X-Loop` value that marks a loop: ours (it contains our token) or a generic yes/true.
fn is_loop(token: &str, value: &str) -> bool {
    let v = value.trim().to_lowercase();
    v == "yes" || v == "true" || (!token.is_empty() && v.contains(token))
}

/// The rules that depend on the state.
pub fn state_rules(cfg: &PolicyConfig, view: &StateView) -> Option<Reason> {
    if view.unavailable {
        Some(Reason::Store)
    } else if view.answered_recently && !(cfg.new_topic_replies && view.new_topic) {
        Some(Reason::Interval)
    } else if view.replies_last_hour >= cfg.max_per_hour
        || view.domain_replies_last_hour >= cfg.max_per_domain_per_hour
    {
        Some(Reason::Cap)
    } else {
        None
    }
}

/// The decision of the state rules: a reply within the interval is one for a new topic.
pub fn state_decision(cfg: &PolicyConfig, view: &StateView) -> Decision {
    match state_rules(cfg, view) {
        Some(r) => Decision::Suppressed(r),
        None if view.answered_recently => Decision::QueuedNewTopic,
        None => Decision::Queued,
    }
}

/// The whole decision.
pub fn decide(cfg: &PolicyConfig, s: &Signals, class: Class, view: &StateView) -> Decision {
    match message_rules(cfg, s, class) {
        Some(r) => Decision::Suppressed(r),
        None => state_decision(cfg, view),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PolicyConfig {
        PolicyConfig {
            enabled: true,
            loop_token: "support@tails.net".into(),
            own_addresses: vec!["support@tails.net".into(), "tails-support-private@boum.org".into()],
            system_addresses: vec!["root@mail.tails.net".into()],
            require_addressed: true,
            max_per_hour: 100,
            max_per_domain_per_hour: 10,
            new_topic_replies: true,
        }
    }

    /// A plain new request: every rule passes.
    fn request() -> Signals {
        Signals {
            sender: "alice@example.org".into(),
            from: Some("alice@example.org".into()),
            addressed: true,
            ..Signals::default()
        }
    }

    fn decide_msg(s: &Signals, class: Class) -> Decision {
        decide(&cfg(), s, class, &StateView::default())
    }

    #[test]
    fn one_more_reply_for_a_new_hot_topic_within_the_interval() {
        let c = cfg();
        let s = request();
        let answered = StateView { answered_recently: true, ..StateView::default() };
        assert_eq!(decide(&c, &s, Class::Support, &answered), Decision::Suppressed(Reason::Interval));
        let new = StateView { new_topic: true, ..answered };
        assert_eq!(decide(&c, &s, Class::Support, &new), Decision::QueuedNewTopic);
        assert_eq!(Decision::QueuedNewTopic.header_value(), "queued (new-topic)");
        // The caps still apply, follow-ups never get one, and the switch turns it off.
        let capped = StateView { replies_last_hour: 100, ..new };
        assert_eq!(decide(&c, &s, Class::Support, &capped), Decision::Suppressed(Reason::Cap));
        assert_eq!(decide(&c, &s, Class::Followup, &new), Decision::Suppressed(Reason::Class));
        let off = PolicyConfig { new_topic_replies: false, ..cfg() };
        assert_eq!(decide(&off, &s, Class::Support, &new), Decision::Suppressed(Reason::Interval));
        // A first reply is a first reply, new topic or not.
        let first = StateView { new_topic: true, ..StateView::default() };
        assert_eq!(decide(&c, &s, Class::Support, &first), Decision::Queued);
    }

    #[test]
    fn a_plain_request_is_queued() {
        assert_eq!(decide_msg(&request(), Class::Support), Decision::Queued);
        assert_eq!(Decision::Queued.header_value(), "queued");
    }

    #[test]
    fn each_rule_suppresses_with_its_reason() {
        type Change = Box<dyn Fn(&mut Signals, &mut PolicyConfig)>;
        let cases: Vec<(Change, Reason)> = vec![
            (Box::new(|_, c| c.enabled = false), Reason::Disabled),
            (
                Box::new(|s, _| {
                    s.null_sender = true;
                    s.sender.clear()
                }),
                Reason::NullSender,
            ),
            (Box::new(|s, _| s.auto_submitted = true), Reason::AutoSubmitted),
            (Box::new(|s, _| s.precedence_bulk = true), Reason::Precedence),
            (Box::new(|s, _| s.list_headers = true), Reason::List),
            (Box::new(|s, _| s.auto_response_suppress = true), Reason::AutoResponseSuppress),
            (Box::new(|s, _| s.x_loop = vec!["Support@Tails.net".into()]), Reason::Loop),
            (Box::new(|s, _| s.x_loop = vec!["yes".into()]), Reason::Loop),
            (Box::new(|s, _| s.role_sender = true), Reason::RoleSender),
            (Box::new(|s, _| s.sender = "support@tails.net".into()), Reason::OwnAddress),
            (Box::new(|s, _| s.from = Some("tails-support-private@boum.org".into())), Reason::OwnAddress),
            (Box::new(|s, _| s.sender = "root@mail.tails.net".into()), Reason::OwnAddress),
            (Box::new(|s, _| s.addressed = false), Reason::NotAddressed),
            (Box::new(|s, _| s.spam = true), Reason::Spam),
            (Box::new(|s, _| s.autoresponder_headers = true), Reason::Bulk),
            (Box::new(|s, _| s.report = true), Reason::Bulk),
            (Box::new(|s, _| s.undeliverable_sender = true), Reason::InvalidSender),
            (Box::new(|s, _| s.delivery_failure = true), Reason::DeliveryFailure),
            (Box::new(|s, _| s.abuse_report = true), Reason::AbuseReport),
            (Box::new(|s, _| s.out_of_office = true), Reason::OutOfOffice),
            (Box::new(|s, _| s.challenge = true), Reason::Challenge),
        ];
        for (i, (change, reason)) in cases.iter().enumerate() {
            let (mut s, mut c) = (request(), cfg());
            change(&mut s, &mut c);
            assert_eq!(
                decide(&c, &s, Class::Support, &StateView::default()),
                Decision::Suppressed(*reason),
                "case {i}"
            );
        }
    }

    #[test]
    fn only_support_mail_is_answered() {
        for class in Class::ALL {
            let expected =
                if class == Class::Support { Decision::Queued } else { Decision::Suppressed(Reason::Class) };
            assert_eq!(decide_msg(&request(), class), expected, "{class}");
        }
    }

    #[test]
    fn not_addressed_is_configurable() {
        let mut c = cfg();
        c.require_addressed = false;
        let s = Signals { addressed: false, ..request() };
        assert_eq!(decide(&c, &s, Class::Support, &StateView::default()), Decision::Queued);
    }

    #[test]
    fn first_reason_in_order_is_recorded() {
        let s = Signals { null_sender: true, auto_submitted: true, list_headers: true, ..request() };
        assert_eq!(decide_msg(&s, Class::Automated), Decision::Suppressed(Reason::NullSender));
        assert_eq!(Decision::Suppressed(Reason::NullSender).header_value(), "suppressed (null-sender)");
    }

    #[test]
    fn state_rules() {
        let s = request();
        let c = cfg();
        let view = |f: fn(&mut StateView)| {
            let mut v = StateView::default();
            f(&mut v);
            decide(&c, &s, Class::Support, &v)
        };
        assert_eq!(view(|v| v.answered_recently = true), Decision::Suppressed(Reason::Interval));
        assert_eq!(view(|v| v.replies_last_hour = 100), Decision::Suppressed(Reason::Cap));
        assert_eq!(view(|v| v.replies_last_hour = 99), Decision::Queued);
        assert_eq!(view(|v| v.domain_replies_last_hour = 10), Decision::Suppressed(Reason::Cap));
        assert_eq!(view(|v| v.unavailable = true), Decision::Suppressed(Reason::Store));
        // A message rule wins over the state: nothing to reserve for a bounce.
        let bounce = Signals { null_sender: true, ..request() };
        assert_eq!(
            decide(&c, &bounce, Class::Support, &StateView { answered_recently: true, ..Default::default() }),
            Decision::Suppressed(Reason::NullSender)
        );
    }

    #[test]
    fn every_reason_is_listed_once_with_a_distinct_word() {
        let words: std::collections::HashSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(words.len(), Reason::ALL.len());
        // Each rule's reason: the ALL list is what the metrics register at 0.
        for r in [
            Reason::InvalidSender,
            Reason::DeliveryFailure,
            Reason::AbuseReport,
            Reason::OutOfOffice,
            Reason::Challenge,
        ] {
            assert!(Reason::ALL.contains(&r), "{r}");
        }
    }

    #[test]
    fn loop_marker_matching() {
        assert!(is_loop("support@tails.net", " SUPPORT@tails.net "));
        assert!(is_loop("support@tails.net", "True"));
        assert!(!is_loop("support@tails.net", "other@example.org"));
        assert!(!is_loop("", "anything"));
    }
}
